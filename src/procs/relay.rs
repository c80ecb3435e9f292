//! A process relayed to a connection through a socketpair: the shape of socat's `EXEC:`
//! (and of any script written like it, renamed or not): the relay connects, makes a
//! socketpair, and gives a child one end as stdin, stdout and stderr; it holds the other
//! end beside the connection and copies bytes between them. The child's own stdio then
//! shows an AF_UNIX socket, not the connection.
//!
//! What tells it, with fd access (same uid or CAP_SYS_PTRACE; without it nothing here is
//! readable): stdin and stdout are one AF_UNIX socket (Node, npm and systemd give each
//! stdio fd its own socketpair, or a journal stream on stdout alone); the kernel names
//! that socket's other end (`unix_diag`, no capability needed); an ancestor of the process
//! (a few generations up: `SYSTEM:` puts a `sh -c` in between) holds that other end; and
//! that ancestor holds an internet socket with a remote peer in its own network
//! namespace's tables. Asked only for processes whose stdin and stdout are one AF_UNIX
//! socket, which is rare.
//!
//! Not seen: a relay through pipes (socat's `,pipes` option), through two socketpairs
//! (one per direction), or one whose socketpair end was passed to an unrelated process.

use std::ffi::CStr;
use std::path::Path;

use crate::procs::image::NET_TABLE_LINES;
use crate::procs::parse;
use crate::sockdiag::unix::UnixPeers;
use crate::sys::proc::{for_each_fd_link, PidDir};

/// Generations of ancestors searched for the holder of the other end.
const DEPTH: usize = 4;

/// Sockets of one process considered (a process with more is judged by its first ones).
const SOCKETS_MAX: usize = 65_536;

/// The relay check's state: the sock_diag socket, opened when first needed.
#[derive(Default)]
pub(crate) struct Relays {
    peers: Option<UnixPeers>,
    /// Opening it failed (a kernel without unix_diag): not tried again.
    unavailable: bool,
}

impl Relays {
    /// The inode of the connection that the AF_UNIX socket `inode` (a process's stdin and
    /// stdout) is relayed to: the connected internet socket of the ancestor holding its
    /// other end. `ppid` is the process's parent. `None` when there is none or it cannot
    /// be told.
    pub(crate) fn connection(&mut self, proc_root: &Path, ppid: u32, inode: u64) -> Option<u64> {
        let peer = self.peer(inode)?;
        let mut pid = ppid;
        let mut sockets = Vec::new();
        for _ in 0..DEPTH {
            if pid == 0 {
                return None;
            }
            let dir = PidDir::open(proc_root, pid).ok()?;
            sockets.clear();
            for_each_fd_link(&proc_root.join(pid.to_string()).join("fd"), |link| {
                if sockets.len() < SOCKETS_MAX {
                    sockets.extend(parse::socket_inode(link));
                }
            })
            .ok()?;
            if sockets.contains(&peer) {
                sockets.sort_unstable();
                return connected(&dir, &sockets);
            }
            pid = parent(&dir)?;
        }
        None
    }

    fn peer(&mut self, inode: u64) -> Option<u64> {
        if self.peers.is_none() && !self.unavailable {
            match UnixPeers::open() {
                Ok(peers) => self.peers = Some(peers),
                Err(error) => {
                    tracing::info!(%error, "AF_UNIX peers cannot be asked; socketpair relays are not judged");
                    self.unavailable = true;
                }
            }
        }
        match self.peers.as_mut()?.peer(inode) {
            Ok(peer) => peer,
            Err(error) => {
                tracing::debug!(%error, inode, "asking an AF_UNIX socket's peer failed");
                None
            }
        }
    }
}

/// The first of `sockets` (sorted) that is an internet socket with a remote peer, by the
/// tables of the holder's own network namespace.
fn connected(dir: &PidDir, sockets: &[u64]) -> Option<u64> {
    use std::io::BufRead as _;
    const TABLES: [&CStr; 4] = [c"net/tcp", c"net/tcp6", c"net/udp", c"net/udp6"];
    TABLES.into_iter().find_map(|table| {
        let file = dir.open_file(table).ok()?;
        std::io::BufReader::with_capacity(16 * 1024, file)
            .split(b'\n')
            .take(NET_TABLE_LINES)
            .map_while(Result::ok)
            .filter_map(|line| parse::inet_line(&line))
            .find(|&(inode, peer)| peer && sockets.binary_search(&inode).is_ok())
            .map(|(inode, _)| inode)
    })
}

fn parent(dir: &PidDir) -> Option<u32> {
    let mut buf = Vec::new();
    dir.read(c"stat", &mut buf, 4096).ok()?;
    parse::parse_stat(&buf).map(|s| s.ppid)
}
