//! Moving the calling thread into a new network namespace and back: the bench's "pod".

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// The calling thread in a network namespace of its own (needs CAP_SYS_ADMIN). Processes it
/// starts meanwhile are born there. On drop the thread returns to the namespace it left.
#[derive(Debug)]
pub struct NetnsGuard {
    before: OwnedFd,
}

impl NetnsGuard {
    pub fn enter_new() -> io::Result<NetnsGuard> {
        let before = OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/net")?);
        // SAFETY: unshare takes no pointers and changes only this thread's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NetnsGuard { before })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        // SAFETY: `before` is an open namespace fd owned by self for the whole call.
        let rc = unsafe { libc::setns(self.before.as_fd().as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            tracing::error!(error = %io::Error::last_os_error(), "could not return to the previous network namespace");
        }
    }
}
