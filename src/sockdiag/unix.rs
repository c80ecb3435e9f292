//! The other end of an AF_UNIX socket, asked of the kernel by inode: one request, one
//! reply, on a sock_diag socket of its own (opened when first needed; rare: only a
//! process whose stdin and stdout are one AF_UNIX socket asks).

use std::io;
use std::os::fd::AsFd;

use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

use super::msg::{self, NLMSG_ERROR, SOCK_DIAG_BY_FAMILY};

/// A reply is built inside our `recv`: a wait this long means it was lost.
const RECV_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// A sock_diag socket for AF_UNIX peer questions.
pub struct UnixPeers {
    socket: Socket,
    buf: Vec<u8>,
    seq: u32,
}

impl UnixPeers {
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        crate::sys::net::set_receive_timeout(socket.as_fd(), RECV_TIMEOUT)?;
        Ok(UnixPeers {
            socket,
            buf: Vec::with_capacity(8 * 1024),
            seq: 0,
        })
    }

    /// The inode of the socket at the other end of the AF_UNIX socket `inode` (of this
    /// network namespace). `Ok(None)`: no such socket, or not connected.
    pub fn peer(&mut self, inode: u64) -> io::Result<Option<u64>> {
        let Ok(ino) = u32::try_from(inode) else {
            return Ok(None); // the kernel numbers sockets' inodes in 32 bits
        };
        self.seq = self.seq.wrapping_add(1);
        self.socket
            .send(&msg::unix_peer_request(ino, self.seq), 0)?;
        loop {
            self.buf.clear();
            let len = match self.socket.recv(&mut self.buf, 0) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for message in msg::messages(&self.buf[..len]).flatten() {
                if message.seq != self.seq {
                    continue; // a late reply to an earlier question that timed out
                }
                if message.kind == SOCK_DIAG_BY_FAMILY {
                    return Ok(msg::parse_unix_peer(message.payload)
                        .ok()
                        .filter(|(asked, _)| *asked == inode)
                        .and_then(|(_, peer)| peer));
                }
                if message.kind == NLMSG_ERROR {
                    return match msg::error_code(message.payload).map(|e| -e) {
                        Ok(0) => continue,
                        Ok(libc::ENOENT) => Ok(None),
                        Ok(errno) => Err(io::Error::from_raw_os_error(errno)),
                        Err(_) => Err(io::Error::from_raw_os_error(libc::EPROTO)),
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn inode(fd: &impl AsFd) -> u64 {
        use std::os::fd::AsRawFd as _;
        std::fs::metadata(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
            .expect("fd")
            .ino()
    }

    #[test]
    fn the_kernel_names_a_socketpairs_other_end() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let mut peers = UnixPeers::open().expect("sock_diag");
        assert_eq!(peers.peer(inode(&a)).expect("asked"), Some(inode(&b)));
        assert_eq!(peers.peer(inode(&b)).expect("asked"), Some(inode(&a)));
        let lone = std::os::unix::net::UnixDatagram::unbound().expect("socket");
        assert_eq!(peers.peer(inode(&lone)).expect("asked"), None);
        drop((a, b));
    }
}
