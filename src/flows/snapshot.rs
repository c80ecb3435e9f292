//! One snapshot of every socket, for `procflow collector --once`: each socket of a dump
//! becomes its START record as the dump hands it over, so records go out while the kernel
//! still dumps and nothing holds the whole dump (the flow table, which must remember every
//! socket for the next dump, is not built at all).
//!
//! Directions are the flow table's: a TCP socket whose local address a listener has came
//! from `accept`. The kernel dumps each table's listening hash before its connections, and
//! the IPv4 tables before the IPv6 ones, so a connection's listener has always been seen by
//! the time the connection comes (an IPv4 connection is accepted only by an IPv4
//! listener). A socket still in an accept queue (no fd, so no inode) is reported as it
//! stands, with its listener's owner, as the flow table reports one that never got its fd.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::attribution::{Owner, OwnerLookup};
use crate::flows::classify::{canonical, Scoper};
use crate::flows::entry::{flow_record, is_listener, listener_record, Entry, ListenerEntry};
use crate::model::{FlowPhase, Protocol, Record, UnixNanos};
use crate::sockdiag::msg::SocketInfo;

/// The listeners of the dump so far, by local port.
type Listeners = HashMap<(Protocol, u16), Vec<(IpAddr, Owner)>>;

/// Turns one dump into START records (every socket `preexisting`), batch by batch.
pub struct Snapshot {
    scoper: Scoper,
    now: UnixNanos,
    listeners: Listeners,
    /// Records emitted: flows and listeners.
    pub flows: u64,
    pub listener_count: u64,
}

impl Snapshot {
    /// A snapshot taken at `now`, scoped by `scoper`.
    pub fn new(scoper: Scoper, now: UnixNanos) -> Snapshot {
        Snapshot {
            scoper,
            now,
            listeners: HashMap::new(),
            flows: 0,
            listener_count: 0,
        }
    }

    /// Emits the START of each socket of `sockets` (one datagram's worth, in dump order),
    /// attributed through `lookup`, whose index must already hold the owners it can find
    /// (`refresh` is not called: a snapshot knows no inode before it sees it).
    pub fn take(
        &mut self,
        sockets: &[SocketInfo],
        lookup: &mut dyn OwnerLookup,
        emit: &mut dyn FnMut(Record),
    ) {
        let now = self.now;
        for s in sockets {
            if is_listener(s) {
                let owner = lookup.owner(s.inode, Some(s.uid), None);
                self.listeners
                    .entry((s.protocol, s.local.port()))
                    .or_default()
                    .push((canonical(s.local.ip()), owner));
                let listener = ListenerEntry {
                    local: s.local,
                    protocol: s.protocol,
                    family: s.family,
                    generation: 0,
                    missing_since: 0,
                    owner,
                };
                self.listener_count += 1;
                emit(Record::Listener(listener_record(
                    s.cookie,
                    &listener,
                    FlowPhase::Start,
                    true,
                    now,
                    None,
                    Some(s.uid),
                    Some(s.inode),
                )));
                continue;
            }
            // What is left of a closed connection, reported under its own cookie without
            // counters: the flow table does not report these either.
            if s.timewait {
                continue;
            }
            let listener = self.listener_owner_for(s.protocol, s.local);
            let mut entry = Entry::new(s, listener.is_some(), &mut self.scoper, now, 0, true);
            let owner = if s.inode == 0 && s.protocol == Protocol::Tcp {
                // In an accept queue: no fd yet, so only its listener can name an owner.
                listener.map_or(Owner::NONE, Owner::through_listener)
            } else {
                lookup.owner(s.inode, Some(s.uid), listener)
            };
            entry.set_owner(owner);
            entry.announced = true;
            self.flows += 1;
            emit(Record::Flow(flow_record(
                s.cookie,
                &entry,
                FlowPhase::Start,
                now,
                None,
            )));
        }
    }

    /// The owner of the listener (of this dump) a TCP socket with this local address was
    /// accepted from.
    fn listener_owner_for(&self, protocol: Protocol, local: SocketAddr) -> Option<Owner> {
        if protocol != Protocol::Tcp {
            return None;
        }
        let ip = canonical(local.ip());
        self.listeners
            .get(&(protocol, local.port()))?
            .iter()
            .find(|(l, _)| l.is_unspecified() || *l == ip)
            .map(|(_, owner)| *owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::NoAttribution;
    use crate::flows::{FlowConfig, FlowTable};
    use crate::sockdiag::Dumper;
    use std::net::{TcpListener, TcpStream};

    /// The snapshot of a real dump says what the flow table's first dump says of the same
    /// sockets: same records, in any order.
    #[test]
    fn a_snapshot_reports_what_the_flow_tables_first_dump_reports() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let clients: Vec<TcpStream> = (0..20)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        // Half of them accepted; the other half wait in the accept queue (no inode).
        let accepted: Vec<TcpStream> = (0..10)
            .map(|_| listener.accept().expect("accept").0)
            .collect();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        udp.connect(addr).expect("udp connect");
        let mut dumper = Dumper::open().expect("sock_diag");
        let mut sockets = Vec::new();
        dumper.dump_all(&mut sockets).expect("dump");

        let now = 7;
        let mut table = FlowTable::new(FlowConfig::default(), Scoper::default());
        let mut from_table = Vec::new();
        table.apply_dump(&sockets, true, now, &mut NoAttribution, &mut from_table);
        // The flow table holds accept-queue sockets back until they get their fd; ended as
        // they stand, they are announced as the snapshot reports them.
        let mut late = Vec::new();
        table.shutdown(now, &mut late);
        from_table.extend(late.into_iter().filter(|r| match r {
            Record::Flow(f) => f.phase == FlowPhase::Start,
            _ => false,
        }));

        let mut snapshot = Snapshot::new(Scoper::default(), now);
        let mut from_snapshot = Vec::new();
        for batch in sockets.chunks(7) {
            snapshot.take(batch, &mut NoAttribution, &mut |r| from_snapshot.push(r));
        }
        let key = |r: &Record| match r {
            Record::Flow(f) => (0, f.cookie),
            Record::Listener(l) => (1, l.cookie),
            _ => (2, 0),
        };
        from_table.sort_by_key(key);
        from_snapshot.sort_by_key(key);
        assert_eq!(from_snapshot.len(), from_table.len());
        // Both ends of the 20 connections (10 of the server's ends still queued).
        let ours = from_snapshot
            .iter()
            .filter(|r| match r {
                Record::Flow(f) => {
                    f.protocol == Protocol::Tcp
                        && (f.local_port == addr.port() || f.remote_port == Some(addr.port()))
                }
                _ => false,
            })
            .count();
        assert_eq!(ours, 40);
        for (a, b) in from_snapshot.iter().zip(&from_table) {
            assert_eq!(a, b);
        }
        drop((clients, accepted, udp));
    }
}
