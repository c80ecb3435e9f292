//! Owners inferred from peers: for a connection no dump saw alive (or whose owner no fd
//! table showed), the process that alone held sockets to the same peer shortly before.
//!
//! Every outbound flow attributed by fd teaches the table which process talks to its peer
//! (address and port). A second process seen talking to that peer within the memory makes
//! the peer ambiguous: nothing is inferred from it until the memory forgets both. The
//! result is labelled [`Attribution::InferredFromPeer`], never `FD`. What it cannot see: a
//! process that never had a connection to the peer attributed by fd (its connections are
//! then given to the one that had) — the bench's `lifetime` scenario counts wrong pids.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use super::{FlowStats, FlowTable, HashMap};
use crate::flows::classify::canonical;
use crate::flows::entry::{nanos, Entry};
use crate::model::{Attribution, Direction, UnixNanos};

/// How long a peer's owner is remembered after its last connection attributed by fd.
pub const PEER_MEMORY: Duration = Duration::from_secs(30);

/// Peers remembered at most (the oldest forgotten first).
const PEERS_MAX: usize = 4096;

/// The one process known to talk to a peer, or `None` when several did.
#[derive(Debug, Clone, Copy)]
struct PeerOwner {
    owner: Option<(u32, UnixNanos, u32)>,
    last: UnixNanos,
}

#[derive(Debug, Default)]
pub(super) struct PeerMemory {
    peers: HashMap<SocketAddr, PeerOwner>,
    /// (when noted, peer): entries older than the memory leave from the front.
    order: VecDeque<(UnixNanos, SocketAddr)>,
}

impl PeerMemory {
    /// `pid` (started at `start_time`, of `uid`) held a socket to `peer` at `at`.
    fn note(&mut self, peer: SocketAddr, owner: (u32, UnixNanos, u32), at: UnixNanos) {
        self.forget_before(at.saturating_sub(nanos(PEER_MEMORY)));
        let known = self.peers.entry(peer).or_insert(PeerOwner {
            owner: Some(owner),
            last: at,
        });
        if known
            .owner
            .is_some_and(|(pid, start, _)| (pid, start) != (owner.0, owner.1))
        {
            known.owner = None; // two processes talk to this peer
        }
        known.last = known.last.max(at);
        self.order.push_back((at, peer));
        if self.peers.len() > PEERS_MAX {
            if let Some((_, oldest)) = self.order.pop_front() {
                self.peers.remove(&oldest);
            }
        }
    }

    /// The one process that talked to `peer` within the memory before `at`, if its uid is
    /// `uid` (when the socket's uid is known).
    fn owner(&self, peer: SocketAddr, at: UnixNanos, uid: Option<u32>) -> Option<(u32, UnixNanos)> {
        let known = self.peers.get(&peer)?;
        if at.saturating_sub(known.last) > nanos(PEER_MEMORY) {
            return None;
        }
        let (pid, start, owner_uid) = known.owner?;
        uid.is_none_or(|u| u == owner_uid).then_some((pid, start))
    }

    fn forget_before(&mut self, horizon: UnixNanos) {
        while let Some(&(at, peer)) = self.order.front() {
            if at >= horizon {
                break;
            }
            self.order.pop_front();
            if self.peers.get(&peer).is_some_and(|p| p.last < horizon) {
                self.peers.remove(&peer);
            }
        }
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.peers.allocation_size()
            + self.order.capacity() * std::mem::size_of::<(UnixNanos, SocketAddr)>()
    }
}

/// The peer a flow's owner can be learnt from or inferred by: an outbound (or not inbound)
/// connection whose peer the kernel did not scrub.
fn peer_of(e: &Entry) -> Option<SocketAddr> {
    let remote = e.remote();
    (e.direction != Direction::Inbound && e.remote_port != 0 && !remote.is_unspecified())
        .then(|| SocketAddr::new(canonical(remote), e.remote_port))
}

/// An announced flow attributed by fd teaches who talks to its peer. (A function of the
/// table's fields, so that it runs while an entry of the table is borrowed.)
pub(super) fn learn(peers: &mut PeerMemory, e: &Entry, at: UnixNanos) {
    if e.attribution != Attribution::Fd {
        return;
    }
    if let Some(peer) = peer_of(e) {
        peers.note(peer, (e.pid, e.start_time, e.uid), at);
    }
}

/// Names the owner of an unattributed flow from its peer, labelled as inferred. `uid` is the
/// socket's, when a dump showed it (a destroy event carries none).
pub(super) fn infer(
    peers: &PeerMemory,
    stats: &mut FlowStats,
    e: &mut Entry,
    uid: Option<u32>,
    at: UnixNanos,
) {
    if e.attribution != Attribution::None {
        return;
    }
    let Some(peer) = peer_of(e) else {
        return;
    };
    if let Some((pid, start_time)) = peers.owner(peer, at, uid) {
        e.pid = pid;
        e.start_time = start_time;
        e.attribution = Attribution::InferredFromPeer;
        stats.inferred_from_peer += 1;
    }
}

impl FlowTable {
    /// [`infer`] for an entry out of the table.
    pub(super) fn infer_from_peer(&mut self, e: &mut Entry, uid: Option<u32>, at: UnixNanos) {
        infer(&self.peers, &mut self.stats, e, uid, at);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{flows, table, tcp_socket};
    use super::PEER_MEMORY;
    use crate::attribution::{Owner, OwnerLookup};
    use crate::model::{Attribution, FlowPhase, Record, UnixNanos};
    use crate::sockdiag::msg::{self, SocketInfo};

    /// Owners by inode: inode − 1000 is the cookie, and cookies name their process here.
    struct ByCookie(Vec<(u64, u32)>);

    impl OwnerLookup for ByCookie {
        fn refresh(&mut self, _new: &[u64], _now: UnixNanos, _out: &mut Vec<Record>) {}

        fn owner(&mut self, inode: u64, _uid: Option<u32>, _listener: Option<Owner>) -> Owner {
            self.0
                .iter()
                .find(|(cookie, _)| cookie + 1000 == inode)
                .map_or(Owner::NONE, |&(_, pid)| Owner {
                    pid: Some(pid),
                    start_time: Some(u64::from(pid) * 10),
                    attribution: Attribution::Fd,
                })
        }
    }

    const SERVER: &str = "10.0.0.9:443";

    fn client(cookie: u64, port: u16) -> SocketInfo {
        let local = format!("10.0.0.1:{port}");
        tcp_socket(cookie, &local, SERVER, msg::TCP_ESTABLISHED, 1, 1, 1)
    }

    /// The END of a socket only its destroy event showed, after the given clients' sockets
    /// to the same server were dumped and owned by fd: its (attribution, pid).
    fn destroy_only_after(owned: &[(u64, u32)], gap: u64) -> (Attribution, Option<u32>) {
        let mut t = table();
        let mut out = Vec::new();
        let mut lookup = ByCookie(owned.to_vec());
        let dumped: Vec<SocketInfo> = owned
            .iter()
            .map(|&(c, _)| client(c, 40_000 + c as u16))
            .collect();
        t.apply_dump(&dumped, true, 10, &mut lookup, &mut out);
        out.clear();
        let mut unseen = client(99, 41_000);
        unseen.inode = 0;
        t.apply_destroy(&unseen, 10 + gap, &mut out);
        let end = flows(&out)
            .into_iter()
            .find(|f| f.phase == FlowPhase::End && f.cookie == 99)
            .cloned()
            .expect("an END");
        (end.attribution, end.pid)
    }

    #[test]
    fn the_one_process_that_talked_to_a_peer_is_inferred_and_labelled() {
        assert_eq!(
            destroy_only_after(&[(1, 42), (2, 42)], 1_000),
            (Attribution::InferredFromPeer, Some(42))
        );
    }

    #[test]
    fn two_processes_talking_to_a_peer_leave_it_unattributed() {
        assert_eq!(
            destroy_only_after(&[(1, 42), (2, 43)], 1_000),
            (Attribution::None, None)
        );
    }

    #[test]
    fn an_owner_is_forgotten_after_the_peer_memory() {
        let past = u64::try_from(PEER_MEMORY.as_nanos()).expect("ns") + 1;
        assert_eq!(
            destroy_only_after(&[(1, 42)], past),
            (Attribution::None, None)
        );
    }

    /// A reset before any dump scrubs the peer: nothing to infer from.
    #[test]
    fn a_scrubbed_peer_infers_nothing() {
        let mut t = table();
        let mut out = Vec::new();
        let mut lookup = ByCookie(vec![(1, 42)]);
        t.apply_dump(&[client(1, 40_001)], true, 10, &mut lookup, &mut out);
        out.clear();
        let mut reset = tcp_socket(99, "0.0.0.0:41000", "10.0.0.9:0", msg::TCP_CLOSE, 0, 0, 0);
        reset.inode = 0;
        t.apply_destroy(&reset, 20, &mut out);
        let end = flows(&out)[0];
        assert_eq!((end.attribution, end.pid), (Attribution::None, None));
    }
}
