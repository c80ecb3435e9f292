//! inotify open watches: a wake-up the moment a watched file is opened. Watching the
//! dynamic loader and the executable directories turns (almost) every exec into a wake-up,
//! with no privilege: inotify tells no pid, but the process poll that follows finds the
//! new process while it still lives.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// One inotify instance with `IN_OPEN` watches, each file or directory watched once.
pub struct OpenWatch {
    fd: OwnedFd,
    /// (device, inode) of what is watched: the same loader reached by several paths
    /// (symlinks, `/proc/<pid>/root/...` of containers sharing an image) is watched once.
    watched: HashSet<(u64, u64)>,
}

impl OpenWatch {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall with constant flags; the result is checked below.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OpenWatch {
            // SAFETY: `fd` is a new descriptor owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            watched: HashSet::new(),
        })
    }

    /// Watches `path` (symlinks followed) for opens. Ok(false) when it was already watched.
    pub fn add(&mut self, path: &Path) -> io::Result<bool> {
        let meta = std::fs::metadata(path)?;
        if !self.watched.insert((meta.dev(), meta.ino())) {
            return Ok(false);
        }
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the fd is open and `c_path` is NUL-terminated for the call's duration.
        let wd =
            unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c_path.as_ptr(), libc::IN_OPEN) };
        if wd < 0 {
            self.watched.remove(&(meta.dev(), meta.ino()));
            return Err(io::Error::last_os_error());
        }
        Ok(true)
    }

    pub fn len(&self) -> usize {
        self.watched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Sleeps up to `timeout`; returns true (early) when a watched file was opened. Pending
    /// events are drained: many opens between two waits are one wake-up.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd, count 1; the kernel writes only `revents`.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            return if error.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(error)
            };
        }
        if ready == 0 {
            return Ok(false);
        }
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: `buf` is writable for its full length; the fd is non-blocking.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_wakes_the_wait_and_silence_times_out() {
        let dir = std::env::temp_dir().join(format!("pf-inotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("loader");
        std::fs::write(&file, b"x").expect("write");
        let mut watch = OpenWatch::new().expect("inotify");
        assert!(watch.add(&file).expect("watch"));
        assert!(!watch.add(&file).expect("watch again"), "watched once");
        assert!(!watch.wait(Duration::from_millis(20)).expect("wait"));
        std::fs::File::open(&file).expect("open");
        std::fs::File::open(&file).expect("open");
        assert!(watch.wait(Duration::from_secs(5)).expect("wait"));
        // Both opens were drained by the first wake-up.
        assert!(!watch.wait(Duration::from_millis(20)).expect("wait"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
