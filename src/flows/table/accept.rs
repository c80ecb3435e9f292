//! Accepted sockets whose START waits for their owner: named for a lookup by 4-tuple and
//! cookie, and announced once a lookup finds them with their inode (their fd exists).

use std::net::SocketAddr;

use super::{FlowTable, SCRATCH_KEPT};
use crate::attribution::OwnerLookup;
use crate::flows::entry::Entry;
use crate::model::{Family, Record, UnixNanos};
use crate::sockdiag::msg::SocketInfo;

impl FlowTable {
    /// Accepted sockets whose START still waits for their owner: seen in an accept queue (no
    /// inode yet) or found only through their listener. The accept gives them an fd but
    /// changes no socket count, so no dump would come before the periodic one, which a
    /// connection of a few hundred ms does not live to see. The caller looks each up by
    /// 4-tuple and cookie ([`FlowTable::apply_lookups`]), a cost that does not grow with the
    /// table. Fills `into` with (cookie, family, local, remote).
    pub fn awaiting_owner(&mut self, into: &mut Vec<(u64, Family, SocketAddr, SocketAddr)>) {
        into.clear();
        let flows = &self.flows;
        self.awaiting_owner
            .retain(|c| flows.get(c).is_some_and(|e| !e.announced));
        self.awaiting_owner.sort_unstable();
        self.awaiting_owner.dedup();
        into.extend(self.awaiting_owner.iter().map(|c| {
            let e = &self.flows[c];
            (
                *c,
                e.family,
                SocketAddr::new(e.local(), e.local_port),
                SocketAddr::new(e.remote(), e.remote_port),
            )
        }));
        if self.awaiting_owner.is_empty() {
            self.awaiting_owner.shrink_to(SCRATCH_KEPT);
        }
    }

    /// Applies sockets looked up one by one (see [`FlowTable::awaiting_owner`]): those that
    /// have their inode now are attributed and announced. Nothing is concluded from the
    /// sockets not given.
    pub fn apply_lookups(
        &mut self,
        found: &[SocketInfo],
        now: UnixNanos,
        lookup: &mut dyn OwnerLookup,
        out: &mut Vec<Record>,
    ) {
        self.new_flows.clear();
        self.new_inodes.clear();
        for s in found {
            let Some(e) = self.flows.get_mut(&s.cookie) else {
                continue;
            };
            if e.announced || s.inode == 0 {
                continue;
            }
            e.last_seen = now;
            e.state = s.state;
            queue_found(e, s, &mut self.new_flows, &mut self.new_inodes);
        }
        if !self.new_inodes.is_empty() {
            lookup.refresh(&self.new_inodes, now, out);
        }
        self.announce_new_flows(found, now, lookup, out);
        self.release_scratch();
    }
}

/// An unannounced flow's socket has its inode now (its fd exists): the entry keeps it and
/// the uid, and the flow is queued for attribution and its START.
pub(super) fn queue_found(
    e: &mut Entry,
    s: &SocketInfo,
    new_flows: &mut Vec<u64>,
    new_inodes: &mut Vec<u64>,
) {
    e.inode = u32::try_from(s.inode).unwrap_or(0);
    e.uid = s.uid;
    new_flows.push(s.cookie);
    new_inodes.push(s.inode);
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{flows, table, tcp_socket};
    use crate::attribution::{Owner, OwnerLookup};
    use crate::model::{Attribution, Family, FlowPhase, Record, UnixNanos};
    use crate::sockdiag::msg::{self, SocketInfo};

    /// A server whose accepted socket enters its fd table only after `visible_from` lookups
    /// of it: the window between the kernel giving the socket its inode and `accept`
    /// installing the fd.
    struct LateFd {
        server: Owner,
        accepted_inode: u64,
        lookups: u32,
        visible_from: u32,
    }

    impl OwnerLookup for LateFd {
        fn refresh(&mut self, _new: &[u64], _now: UnixNanos, _out: &mut Vec<Record>) {}

        fn owner(&mut self, inode: u64, _uid: Option<u32>, listener: Option<Owner>) -> Owner {
            if inode != self.accepted_inode {
                return self.server; // the listener itself
            }
            self.lookups += 1;
            if self.lookups >= self.visible_from {
                self.server
            } else {
                listener.map_or(Owner::NONE, |l| Owner {
                    attribution: Attribution::Listener,
                    ..l
                })
            }
        }
    }

    #[test]
    fn an_accepted_socket_found_late_in_its_fd_table_is_attributed_again() {
        let mut t = table();
        let mut out = Vec::new();
        let listener = tcp_socket(1, "127.0.0.1:80", "0.0.0.0:0", msg::TCP_LISTEN, 0, 0, 0);
        let accepted = tcp_socket(
            2,
            "127.0.0.1:80",
            "127.0.0.1:5555",
            msg::TCP_ESTABLISHED,
            0,
            5,
            1,
        );
        let mut lookup = LateFd {
            server: Owner {
                pid: Some(42),
                start_time: Some(7),
                attribution: Attribution::Fd,
            },
            accepted_inode: accepted.inode,
            lookups: 0,
            visible_from: 2,
        };
        t.apply_dump(
            std::slice::from_ref(&listener),
            true,
            10,
            &mut lookup,
            &mut out,
        );
        t.apply_dump(
            &[listener.clone(), accepted.clone()],
            true,
            20,
            &mut lookup,
            &mut out,
        );
        let start = |out: &Vec<Record>| {
            flows(out)
                .into_iter()
                .find(|f| f.phase == FlowPhase::Start)
                .cloned()
        };
        assert_eq!(
            start(&out),
            None,
            "found by its listener alone: START held back"
        );
        t.apply_dump(
            &[listener.clone(), accepted.clone()],
            true,
            30,
            &mut lookup,
            &mut out,
        );
        assert_eq!(
            start(&out).map(|f| (f.attribution, f.pid)),
            Some((Attribution::Fd, Some(42))),
            "the START carries the owner found at the next dump"
        );
        assert_eq!(t.stats().reattributed, 1);
        t.apply_destroy(&accepted, 40, &mut out);
        let end = flows(&out)
            .into_iter()
            .find(|f| f.phase == FlowPhase::End)
            .cloned();
        assert_eq!(
            end.map(|f| (f.attribution, f.pid, f.process_start_time)),
            Some((Attribution::Fd, Some(42), Some(7)))
        );
    }

    /// Dumped in the accept queue (no inode), the socket's START waits; the accept changes no
    /// socket count, so no dump comes soon. The table names it for a lookup by 4-tuple and
    /// cookie, and the looked-up socket, now with its inode, is announced attributed.
    #[test]
    fn a_socket_dumped_in_the_accept_queue_is_announced_after_its_lookup() {
        let mut t = table();
        let mut out = Vec::new();
        let listener = tcp_socket(1, "127.0.0.1:80", "0.0.0.0:0", msg::TCP_LISTEN, 0, 0, 0);
        let mut queued = tcp_socket(
            2,
            "127.0.0.1:80",
            "127.0.0.1:5555",
            msg::TCP_ESTABLISHED,
            0,
            5,
            1,
        );
        let inode = queued.inode;
        queued.inode = 0;
        let mut lookup = LateFd {
            server: Owner {
                pid: Some(42),
                start_time: Some(7),
                attribution: Attribution::Fd,
            },
            accepted_inode: inode,
            lookups: 0,
            visible_from: 1,
        };
        t.apply_dump(&[listener, queued.clone()], true, 10, &mut lookup, &mut out);
        assert!(flows(&out).is_empty(), "no inode yet: START held back");
        let mut awaiting = Vec::new();
        t.awaiting_owner(&mut awaiting);
        assert_eq!(
            awaiting,
            vec![(2, Family::Ipv4, queued.local, queued.remote)],
            "the queued socket is named for a lookup"
        );
        // The lookup found nothing new yet (still queued): still awaited.
        t.apply_lookups(std::slice::from_ref(&queued), 12, &mut lookup, &mut out);
        t.awaiting_owner(&mut awaiting);
        assert_eq!(awaiting.len(), 1);
        let accepted = SocketInfo { inode, ..queued };
        t.apply_lookups(std::slice::from_ref(&accepted), 15, &mut lookup, &mut out);
        let starts: Vec<_> = flows(&out)
            .into_iter()
            .filter(|f| f.phase == FlowPhase::Start)
            .map(|f| (f.attribution, f.pid, f.inode))
            .collect();
        assert_eq!(starts, vec![(Attribution::Fd, Some(42), Some(inode))]);
        t.awaiting_owner(&mut awaiting);
        assert!(awaiting.is_empty(), "announced: no longer awaited");
    }
}
