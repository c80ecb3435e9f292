//! The flow table, keyed by socket cookie: what it holds and its lifetime, with one module
//! per job.
//!
//! Dumps bring sockets alive (START, with uid and inode for attribution), refresh their
//! counters (UPDATE at the active timeout, only when they moved) and, when a socket is gone
//! from a complete dump for longer than a grace period, end it (END, `VANISHED` or
//! `RECOVERED` after a destroy-stream overflow): [`dump`]. Destroy events end sockets with
//! the kernel's final counters (END, `DESTROY_EVENT`): [`destroy`]. Accepted sockets wait for
//! their owner through lookups by 4-tuple: [`accept`]. Listeners decide direction and
//! attribute what no fd table shows: [`listeners`]. A cookie, once ended, is remembered for a
//! while so that a late second signal cannot produce a second END.
//!
//! Counters are payload bytes: `tcpi_bytes_sent − tcpi_bytes_retrans` for data written, and
//! `tcpi_bytes_received` minus the one sequence number a received FIN takes (see
//! `flows::fin`). A connection reset by `SO_LINGER 0` or a failed connect has its counters
//! zeroed before the destroy event: the last dumped values are kept and `reset` is set.

mod accept;
mod destroy;
mod dump;
mod listeners;
mod peers;

pub use peers::PEER_MEMORY;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::flows::classify::Scoper;
use crate::flows::cookie_order::CookieOrder;
use crate::flows::entry::{flow_record, listener_record, Entry, ListenerEntry};
use crate::model::{EndReason, FlowPhase, Protocol, Record, UnixNanos};
use crate::sockdiag::msg::SocketInfo;

#[derive(Debug, Clone)]
pub struct FlowConfig {
    /// An UPDATE is emitted at most this often per flow, and only if its counters moved.
    pub active_timeout: Duration,
    /// An UPDATE is also emitted as soon as a flow's byte counters (both ways) moved this
    /// much since its last record, so a large transfer is seen while it runs (0: never).
    pub active_bytes: u64,
    /// How long a socket may be missing from complete dumps before it ends as vanished
    /// (its destroy event may still be on its way).
    pub vanish_grace: Duration,
    /// How long an ended cookie is remembered to suppress a second END.
    pub ended_memory: Duration,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            active_timeout: Duration::from_secs(30),
            active_bytes: 16 << 20,
            vanish_grace: Duration::from_secs(1),
            ended_memory: Duration::from_secs(30),
        }
    }
}

/// Counters of what the table did; every loss or guess is here.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlowStats {
    pub started: u64,
    pub updated: u64,
    /// Of the UPDATEs, those sent early because the counters moved `active_bytes`.
    pub updated_early: u64,
    pub ended_destroy: u64,
    pub ended_vanished: u64,
    pub ended_recovered: u64,
    pub ended_shutdown: u64,
    /// Sockets known only from their destroy event (born and gone between two dumps).
    pub destroy_only: u64,
    /// Of those, the ones whose peer the kernel had already zeroed (reset before any dump).
    pub destroy_only_without_peer: u64,
    /// Second end signals for an already ended cookie (ignored).
    pub duplicate_ends: u64,
    pub listeners_started: u64,
    pub listeners_ended: u64,
    /// Accepted sockets first found only through their listener and found in an fd table
    /// by a later dump, before their START.
    pub reattributed: u64,
    /// ENDs whose received FIN only a TIME_WAIT successor showed (see
    /// [`FlowTable::apply_destroy_with`]).
    pub fin_by_timewait: u64,
    /// Flows no fd table showed, given the one process that talked to their peer
    /// (`INFERRED_FROM_PEER`).
    pub inferred_from_peer: u64,
}

/// hashbrown's map with the standard library's hasher (the std map is this map): the same
/// behaviour, and it reports its own allocation for [`FlowTable::heap_bytes`].
type HashMap<K, V> = hashbrown::HashMap<K, V, std::hash::RandomState>;

pub struct FlowTable {
    config: FlowConfig,
    scoper: Scoper,
    /// Kept in cookie order: a dump meets its sockets in that order (see [`CookieOrder`]).
    flows: hashbrown::HashMap<u64, Entry, CookieOrder>,
    listeners: HashMap<u64, ListenerEntry>,
    ended: HashMap<u64, UnixNanos>,
    ended_order: VecDeque<(UnixNanos, u64)>,
    generation: u32,
    /// When the current dump was taken.
    dump_now: UnixNanos,
    /// Sockets of the current dump that [`FlowTable::finish_dump`] must look at: new ones,
    /// unannounced flows, unknown listeners.
    unknown: Vec<SocketInfo>,
    /// The first dump has been applied: later sockets are not preexisting.
    primed: bool,
    last_overflow: UnixNanos,
    stats: FlowStats,
    new_flows: Vec<u64>,
    new_listeners: Vec<u64>,
    new_inodes: Vec<u64>,
    /// Cookies of accepted sockets whose START waits for their owner (may hold stale or
    /// repeated cookies; [`FlowTable::awaiting_owner`] prunes them).
    awaiting_owner: Vec<u64>,
    /// Listeners closed recently: a connection they accepted often outlives them (a server
    /// shutting down), and is first seen only then; it is still inbound.
    closed_listeners: VecDeque<(UnixNanos, Protocol, SocketAddr)>,
    /// The last dump found a flow a quarter of the way to an early UPDATE (see
    /// [`FlowTable::transferring`]).
    transferring: bool,
    /// Who talks to which peer, for flows no fd table showed (see [`peers`]).
    peers: peers::PeerMemory,
}

/// Entries the per-dump lists of new sockets keep between dumps.
const SCRATCH_KEPT: usize = 1024;

impl FlowTable {
    pub fn new(config: FlowConfig, scoper: Scoper) -> Self {
        FlowTable {
            config,
            scoper,
            flows: hashbrown::HashMap::default(),
            listeners: HashMap::default(),
            ended: HashMap::default(),
            ended_order: VecDeque::new(),
            generation: 0,
            dump_now: 0,
            unknown: Vec::new(),
            primed: false,
            last_overflow: 0,
            stats: FlowStats::default(),
            new_flows: Vec::new(),
            new_listeners: Vec::new(),
            new_inodes: Vec::new(),
            awaiting_owner: Vec::new(),
            closed_listeners: VecDeque::new(),
            transferring: false,
            peers: peers::PeerMemory::default(),
        }
    }

    /// What one tracked flow costs in the table's map before the map's slack: key and entry.
    pub const ENTRY_BYTES: usize = std::mem::size_of::<(u64, Entry)>();

    /// The heap the table holds, from its own capacities (no entry owns heap memory): its
    /// maps' allocations (buckets and control bytes) and its queues. What the allocator
    /// adds around them is not counted.
    pub fn heap_bytes(&self) -> usize {
        fn vec<T>(capacity: usize) -> usize {
            capacity * std::mem::size_of::<T>()
        }
        self.flows.allocation_size()
            + self.listeners.allocation_size()
            + self.ended.allocation_size()
            + vec::<(UnixNanos, u64)>(self.ended_order.capacity())
            + vec::<u64>(
                self.new_flows.capacity()
                    + self.new_listeners.capacity()
                    + self.new_inodes.capacity()
                    + self.awaiting_owner.capacity(),
            )
            + vec::<(UnixNanos, Protocol, SocketAddr)>(self.closed_listeners.capacity())
            + vec::<SocketInfo>(self.unknown.capacity())
            + self.peers.heap_bytes()
    }

    /// A large transfer is under way: the last dump found a flow whose counters moved a
    /// quarter of `active_bytes` since its last record. The engine then keeps dumping at
    /// its active period, so the early UPDATE comes within about a second of the bytes.
    pub fn transferring(&self) -> bool {
        self.transferring
    }

    pub fn stats(&self) -> FlowStats {
        self.stats
    }

    /// Sockets currently tracked (flows and listeners).
    pub fn len(&self) -> usize {
        self.flows.len() + self.listeners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records that the destroy stream lost events at `now`: flows that go missing around
    /// it end as `RECOVERED`.
    pub fn note_overflow(&mut self, now: UnixNanos) {
        self.last_overflow = now;
    }

    /// Ends every live socket (collector shutdown).
    pub fn shutdown(&mut self, now: UnixNanos, out: &mut Vec<Record>) {
        let flows: Vec<(u64, Entry)> = self.flows.drain().collect();
        for (cookie, mut e) in flows {
            self.announce_late(cookie, &mut e, out);
            self.stats.ended_shutdown += 1;
            out.push(Record::Flow(flow_record(
                cookie,
                &e,
                FlowPhase::End,
                now,
                Some((EndReason::Shutdown, now)),
            )));
        }
        for (cookie, l) in self.listeners.drain() {
            self.stats.listeners_ended += 1;
            out.push(Record::Listener(listener_record(
                cookie,
                &l,
                FlowPhase::End,
                false,
                now,
                Some(now),
                None,
                None,
            )));
        }
    }

    pub(super) fn remember_ended(&mut self, cookie: u64, at: UnixNanos) {
        self.ended.insert(cookie, at);
        self.ended_order.push_back((at, cookie));
    }
}

#[cfg(test)]
mod fixtures;

#[cfg(test)]
mod tests {
    use super::fixtures::{table, tcp_socket};
    use super::FlowTable;
    use crate::attribution::NoAttribution;

    #[test]
    fn heap_bytes_follow_the_tracked_sockets() {
        let mut t = table();
        let mut out = Vec::new();
        let empty = t.heap_bytes();
        let sockets: Vec<_> = (0..10_000u32)
            .map(|i| {
                let remote = format!("10.1.{}.{}:{}", i / 250, i % 250, 1024 + i % 60_000);
                tcp_socket(u64::from(i) + 1, "10.0.0.1:443", &remote, 1, 1, 1, 1)
            })
            .collect();
        t.apply_dump(&sockets, true, 10, &mut NoAttribution, &mut out);
        assert_eq!(t.len(), 10_000);
        let per_socket = (t.heap_bytes() - empty) / 10_000;
        let entry = FlowTable::ENTRY_BYTES;
        // At least one bucket per socket; at most a half-empty table plus the side queues.
        assert!(per_socket > entry, "{per_socket} <= {entry}");
        assert!(per_socket < 3 * entry, "{per_socket} >= 3 x {entry}");
    }

    #[test]
    fn entry_stays_compact() {
        // At 100k sockets the map holds 131,072 buckets (1.31 per socket), each a cookie,
        // an entry and a control byte: 144 bytes keep that under the 200-byte budget.
        let entry = FlowTable::ENTRY_BYTES;
        assert!(entry <= 144, "{entry} bytes per map bucket");
    }
}
