//! The flow table, keyed by socket cookie.
//!
//! Dumps bring sockets alive (START, with uid and inode for attribution), refresh their
//! counters (UPDATE at the active timeout, only when they moved) and, when a socket is gone
//! from a complete dump for longer than a grace period, end it (END, `VANISHED` or
//! `RECOVERED` after a destroy-stream overflow). Destroy events end sockets with the kernel's
//! final counters (END, `DESTROY_EVENT`). A cookie, once ended, is remembered for a while so
//! that a late second signal cannot produce a second END.
//!
//! Counters are payload bytes: `tcpi_bytes_sent − tcpi_bytes_retrans` for data written, and
//! `tcpi_bytes_received` minus the one sequence number a received FIN takes (see
//! [`fin_received`]). A connection reset by `SO_LINGER 0` or a failed connect has its counters
//! zeroed before the destroy event: the last dumped values are kept and `reset` is set.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::attribution::{Owner, OwnerLookup};
use crate::flows::classify::{canonical, Scoper};
use crate::flows::cookie_order::CookieOrder;
use crate::flows::entry::{
    flow_record, is_listener, listener_record, nanos, Counters, Entry, ListenerEntry, Tick,
};
use crate::model::{
    Attribution, Direction, EndReason, Family, FlowPhase, Protocol, Record, Scope, UnixNanos,
};
use crate::sockdiag::msg::{self, SocketInfo};
use crate::telemetry;

#[derive(Debug, Clone)]
pub struct FlowConfig {
    /// An UPDATE is emitted at most this often per flow, and only if its counters moved.
    pub active_timeout: Duration,
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
}

/// How many later dumps look again for an accepted socket's fd.
const FD_RETRIES: u8 = 2;

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
}

/// Entries the per-dump lists of new sockets keep between dumps.
const SCRATCH_KEPT: usize = 1024;

/// How long, and how many, closed listeners still decide direction.
const CLOSED_LISTENER_MEMORY: Duration = Duration::from_secs(120);
const CLOSED_LISTENER_MAX: usize = 4096;

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

    /// Applies one dump of all tables. `complete` is false when the kernel flagged the dump
    /// as interrupted: then nothing is concluded from absences.
    pub fn apply_dump(
        &mut self,
        sockets: &[SocketInfo],
        complete: bool,
        now: UnixNanos,
        lookup: &mut dyn OwnerLookup,
        out: &mut Vec<Record>,
    ) {
        self.begin_dump(now);
        self.observe(sockets);
        self.finish_dump(complete, lookup, out);
    }

    /// Starts a dump taken at `now`, whose sockets [`FlowTable::observe`] then gets batch by
    /// batch (a datagram's worth, still in cache) and [`FlowTable::finish_dump`] concludes.
    pub fn begin_dump(&mut self, now: UnixNanos) {
        self.generation = self.generation.wrapping_add(1);
        self.dump_now = now;
        self.unknown.clear();
    }

    /// Takes a batch of the current dump's sockets. Announced flows and known listeners are
    /// refreshed in place; every other socket is kept for [`FlowTable::finish_dump`], which
    /// sees the dump's listeners all known before it gives a new flow its direction.
    pub fn observe(&mut self, sockets: &[SocketInfo]) {
        let (generation, now) = (self.generation, self.dump_now);
        for s in sockets {
            if is_listener(s) {
                if let Some(l) = self.listeners.get_mut(&s.cookie) {
                    l.generation = generation;
                    l.missing_since = 0;
                } else {
                    self.unknown.push(s.clone());
                }
                continue;
            }
            // TIME_WAIT minisockets are what is left of sockets already reported (under a
            // cookie of their own and without counters): reporting them would duplicate
            // connections.
            if s.timewait {
                continue;
            }
            match self.flows.get_mut(&s.cookie) {
                Some(e) if e.announced => {
                    e.generation = generation;
                    e.missing = false;
                    e.last_seen = now;
                    e.refresh_from(s);
                }
                _ => self.unknown.push(s.clone()),
            }
        }
    }

    /// Concludes the dump: new listeners, new flows (attributed and announced), updates of
    /// flows whose counters moved, and absences (only when the dump was `complete`).
    pub fn finish_dump(
        &mut self,
        complete: bool,
        lookup: &mut dyn OwnerLookup,
        out: &mut Vec<Record>,
    ) {
        let (generation, now) = (self.generation, self.dump_now);
        self.new_flows.clear();
        self.new_listeners.clear();
        self.new_inodes.clear();
        let sockets = std::mem::take(&mut self.unknown);

        // Listeners first: they decide the direction of the flows in the same dump.
        for s in sockets.iter().filter(|s| is_listener(s)) {
            if let Some(l) = self.listeners.get_mut(&s.cookie) {
                l.generation = generation;
                l.missing_since = 0;
            } else if !self.ended.contains_key(&s.cookie) {
                self.listeners.insert(
                    s.cookie,
                    ListenerEntry {
                        local: s.local,
                        protocol: s.protocol,
                        family: s.family,
                        generation,
                        missing_since: 0,
                        owner: Owner::NONE,
                    },
                );
                self.new_listeners.push(s.cookie);
                if s.inode != 0 {
                    self.new_inodes.push(s.inode);
                }
            }
        }

        let grace = nanos(self.config.vanish_grace);
        for s in sockets.iter().filter(|s| !is_listener(s)) {
            if let Some(e) = self.flows.get_mut(&s.cookie) {
                e.generation = generation;
                e.missing = false;
                e.last_seen = now;
                e.refresh_from(s);
                if !e.announced {
                    if s.inode != 0 {
                        queue_found(e, s, &mut self.new_flows, &mut self.new_inodes);
                    } else if now.saturating_sub(e.first_seen) >= grace {
                        self.new_flows.push(s.cookie); // never accepted: announce unattributed
                    }
                }
                continue;
            }
            if self.ended.contains_key(&s.cookie) {
                continue;
            }
            let entry = self.new_entry(s, now, generation);
            self.flows.insert(s.cookie, entry);
            let in_accept_queue = s.inode == 0 && s.protocol == Protocol::Tcp;
            if in_accept_queue {
                self.awaiting_owner.push(s.cookie);
            } else {
                self.new_flows.push(s.cookie);
                if s.inode != 0 {
                    self.new_inodes.push(s.inode);
                }
            }
        }

        if !self.new_inodes.is_empty() {
            lookup.refresh(&self.new_inodes, now, out);
        }
        for i in 0..self.new_listeners.len() {
            let cookie = self.new_listeners[i];
            let Some((inode, uid)) = sockets
                .iter()
                .find(|s| s.cookie == cookie)
                .map(|s| (s.inode, s.uid))
            else {
                continue;
            };
            let owner = lookup.owner(inode, Some(uid), None);
            if let Some(l) = self.listeners.get_mut(&cookie) {
                l.owner = owner;
                self.stats.listeners_started += 1;
                out.push(Record::Listener(listener_record(
                    cookie,
                    l,
                    FlowPhase::Start,
                    !self.primed,
                    now,
                    None,
                    Some(uid),
                    Some(inode),
                )));
            }
        }
        self.announce_new_flows(&sockets, now, lookup, out);
        // One walk of the table: updates for the flows seen whose counters moved (at most
        // one per active timeout), and, after a complete dump, absences noted and ended
        // once past the grace period.
        let active_timeout = nanos(self.config.active_timeout);
        let mut gone = Vec::new();
        for (cookie, e) in &mut self.flows {
            if e.generation == generation {
                if e.dirty && e.last_emit.elapsed(now) >= active_timeout {
                    e.dirty = false;
                    e.last_emit = Tick::at(now);
                    self.stats.updated += 1;
                    out.push(Record::Flow(flow_record(
                        *cookie,
                        e,
                        FlowPhase::Update,
                        now,
                        None,
                    )));
                }
                continue;
            }
            if complete && !e.missing {
                e.missing = true;
                e.missing_since = Tick::at(now);
            }
            if e.missing && e.missing_since.elapsed(now) >= grace {
                gone.push(*cookie);
            }
        }
        if complete {
            for l in self.listeners.values_mut() {
                if l.generation != generation && l.missing_since == 0 {
                    l.missing_since = now;
                }
            }
        }
        self.primed = true;
        self.release_scratch();
        let mut sockets = sockets;
        sockets.clear();
        sockets.shrink_to(SCRATCH_KEPT);
        self.unknown = sockets;
        self.end_vanished(gone, now, out);
        self.expire_listeners_and_ended(now, out);
    }

    /// Emits START for `new_flows` (found among `sockets`), attributed. One found only
    /// through its listener waits for another look (`FD_RETRIES`).
    fn announce_new_flows(
        &mut self,
        sockets: &[SocketInfo],
        now: UnixNanos,
        lookup: &mut dyn OwnerLookup,
        out: &mut Vec<Record>,
    ) {
        if self.new_flows.is_empty() {
            return;
        }
        let by_cookie: HashMap<u64, &SocketInfo> = sockets.iter().map(|s| (s.cookie, s)).collect();
        for i in 0..self.new_flows.len() {
            let cookie = self.new_flows[i];
            let Some(s) = by_cookie.get(&cookie) else {
                continue;
            };
            let listener_owner = self.listener_owner_for(s.protocol, s.local);
            let owner = lookup.owner(s.inode, Some(s.uid), listener_owner);
            if let Some(e) = self.flows.get_mut(&cookie) {
                // Found through its listener alone: look in the fd tables again at the next
                // dumps before announcing (an END first announces it as it stands).
                if owner.attribution == Attribution::Listener
                    && s.inode != 0
                    && e.fd_retries < FD_RETRIES
                {
                    e.fd_retries += 1;
                    self.awaiting_owner.push(cookie);
                    continue;
                }
                if e.fd_retries > 0 && owner.attribution == Attribution::Fd {
                    self.stats.reattributed += 1;
                }
                e.pid = owner.pid.unwrap_or(0);
                e.start_time = owner.start_time.unwrap_or(0);
                e.attribution = owner.attribution;
                e.announced = true;
                e.last_emit = Tick::at(now);
                e.dirty = false;
                self.stats.started += 1;
                out.push(Record::Flow(flow_record(
                    cookie,
                    e,
                    FlowPhase::Start,
                    now,
                    None,
                )));
            }
        }
    }

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

    /// The per-dump lists keep a small capacity for the next dump; a burst of new sockets
    /// (the first dump above all) would otherwise keep its peak for good.
    fn release_scratch(&mut self) {
        for list in [
            &mut self.new_flows,
            &mut self.new_listeners,
            &mut self.new_inodes,
        ] {
            list.clear();
            list.shrink_to(SCRATCH_KEPT);
        }
    }

    /// Ends sockets missing for longer than the grace period, and forgets old ended cookies.
    pub fn expire(&mut self, now: UnixNanos, out: &mut Vec<Record>) {
        let grace = nanos(self.config.vanish_grace);
        let gone: Vec<u64> = self
            .flows
            .iter()
            .filter(|(_, e)| e.missing && e.missing_since.elapsed(now) >= grace)
            .map(|(c, _)| *c)
            .collect();
        self.end_vanished(gone, now, out);
        self.expire_listeners_and_ended(now, out);
    }

    /// Ends the flows of `gone`, missing past the grace period: lost in an overflow of the
    /// destroy stream (`RECOVERED`) or gone without an event (`VANISHED`).
    fn end_vanished(&mut self, gone: Vec<u64>, now: UnixNanos, out: &mut Vec<Record>) {
        let grace = nanos(self.config.vanish_grace);
        for cookie in gone {
            if let Some(mut e) = self.flows.remove(&cookie) {
                self.announce_late(cookie, &mut e, out);
                let missing_since = now
                    .saturating_sub(e.missing_since.elapsed(now))
                    .max(e.last_seen);
                // An overflow since shortly before it went missing means its event was lost.
                let reason =
                    if self.last_overflow != 0 && self.last_overflow + grace >= missing_since {
                        self.stats.ended_recovered += 1;
                        EndReason::Recovered
                    } else {
                        self.stats.ended_vanished += 1;
                        EndReason::Vanished
                    };
                metrics::counter!(telemetry::FLOWS_ENDED_WITHOUT_EVENT).increment(1);
                out.push(Record::Flow(flow_record(
                    cookie,
                    &e,
                    FlowPhase::End,
                    now,
                    Some((reason, missing_since)),
                )));
                self.remember_ended(cookie, now);
            }
        }
    }

    /// Ends listeners missing past the grace period, and forgets old ended cookies.
    fn expire_listeners_and_ended(&mut self, now: UnixNanos, out: &mut Vec<Record>) {
        let grace = nanos(self.config.vanish_grace);
        let gone: Vec<u64> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.missing_since != 0 && now.saturating_sub(l.missing_since) >= grace)
            .map(|(c, _)| *c)
            .collect();
        for cookie in gone {
            if let Some(l) = self.listeners.remove(&cookie) {
                self.remember_closed_listener(&l, now);
                self.stats.listeners_ended += 1;
                out.push(Record::Listener(listener_record(
                    cookie,
                    &l,
                    FlowPhase::End,
                    false,
                    now,
                    Some(l.missing_since),
                    None,
                    None,
                )));
                self.remember_ended(cookie, now);
            }
        }
        let memory = nanos(self.config.ended_memory);
        while let Some(&(at, cookie)) = self.ended_order.front() {
            if now.saturating_sub(at) < memory {
                break;
            }
            self.ended_order.pop_front();
            if self.ended.get(&cookie) == Some(&at) {
                self.ended.remove(&cookie);
            }
        }
    }

    /// Applies a destroy event: the socket's END with the kernel's final counters.
    pub fn apply_destroy(&mut self, s: &SocketInfo, at: UnixNanos, out: &mut Vec<Record>) {
        self.apply_destroy_with(s, at, &mut |_| false, out);
    }

    /// [`Self::apply_destroy`], asking `prove_fin` about a socket whose received FIN is in
    /// doubt (see [`fin_in_doubt`]): only a FIN leaves a TIME_WAIT minisocket behind, which
    /// the caller can look up by 4-tuple. It is asked for no other socket.
    pub fn apply_destroy_with(
        &mut self,
        s: &SocketInfo,
        at: UnixNanos,
        prove_fin: &mut dyn FnMut(&SocketInfo) -> bool,
        out: &mut Vec<Record>,
    ) {
        if let Some(l) = self.listeners.remove(&s.cookie) {
            self.remember_closed_listener(&l, at);
            self.stats.listeners_ended += 1;
            out.push(Record::Listener(listener_record(
                s.cookie,
                &l,
                FlowPhase::End,
                false,
                at,
                Some(at),
                None,
                None,
            )));
            self.remember_ended(s.cookie, at);
            return;
        }
        if self.ended.contains_key(&s.cookie) {
            self.stats.duplicate_ends += 1;
            return;
        }
        if is_listener(s) {
            return; // a listener we never saw alive: nothing to end
        }
        let mut scrubbed = false;
        let mut entry = match self.flows.remove(&s.cookie) {
            Some(mut e) => {
                self.announce_late(s.cookie, &mut e, out);
                e
            }
            None => {
                // Born and gone between two dumps: only what the event carries.
                self.stats.destroy_only += 1;
                let mut e = self.new_entry(s, at, self.generation);
                e.preexisting = false;
                // An abortive close clears the peer's port (and the local address) before
                // the event; a connected TCP socket never has port 0.
                let peer_gone = s.remote.port() == 0 || s.remote.ip().is_unspecified();
                if peer_gone && s.protocol == Protocol::Tcp {
                    self.stats.destroy_only_without_peer += 1;
                    scrubbed = true;
                    e.direction = Direction::Unknown;
                    e.scope = Scope::Unspecified;
                }
                e.set_tcp(None);
                if let Some(owner) = self.listener_owner_for(s.protocol, s.local) {
                    if e.direction == Direction::Inbound {
                        e.pid = owner.pid.unwrap_or(0);
                        e.start_time = owner.start_time.unwrap_or(0);
                        e.attribution = Attribution::Listener;
                    }
                }
                e
            }
        };
        let mut reset = false;
        if let Some(info) = &s.tcp {
            // Zeroed counters are a reset or a failed connect (any connection sent a SYN).
            reset = info.is_zeroed();
            // A reset socket keeps its last dumped counters, if any.
            if !(reset && entry.has_counters) {
                let mut counters = Counters::from_info(info);
                let inferred = fin_received(entry.tcp(), &counters, entry.state);
                let proved =
                    !inferred && fin_in_doubt(entry.tcp(), &counters, entry.state) && prove_fin(s);
                if proved {
                    self.stats.fin_by_timewait += 1;
                }
                let fin = inferred || proved;
                counters.bytes_received_seq =
                    counters.bytes_received_seq.saturating_sub(u64::from(fin));
                // Stored as payload from here on (state CLOSE means "already adjusted").
                entry.set_tcp(Some(counters));
                entry.state = msg::TCP_CLOSE;
            }
        }
        entry.last_seen = at;
        self.stats.ended_destroy += 1;
        let mut record = flow_record(
            s.cookie,
            &entry,
            FlowPhase::End,
            at,
            Some((EndReason::DestroyEvent, at)),
        );
        record.reset = reset;
        // A socket seen alive keeps the peer its dumps showed; only one no dump saw lost it.
        record.peer_scrubbed = scrubbed;
        if entry.protocol == Protocol::Tcp {
            record.state = msg::tcp_state_name(s.state).into();
        }
        out.push(Record::Flow(record));
        self.remember_ended(s.cookie, at);
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

    fn new_entry(&mut self, s: &SocketInfo, now: UnixNanos, generation: u32) -> Entry {
        let accepted = s.protocol == Protocol::Tcp
            && (self.listener_owner_for(s.protocol, s.local).is_some()
                || self.was_listening(s.protocol, s.local, now));
        Entry::new(s, accepted, &mut self.scoper, now, generation, !self.primed)
    }

    /// Emits the START a socket never got because it ended while still in an accept queue.
    fn announce_late(&mut self, cookie: u64, e: &mut Entry, out: &mut Vec<Record>) {
        if e.announced {
            return;
        }
        if let Some(listener) =
            self.listener_owner_for(e.protocol, SocketAddr::new(e.local(), e.local_port))
        {
            e.set_owner(Owner::through_listener(listener));
        }
        e.announced = true;
        self.stats.started += 1;
        out.push(Record::Flow(flow_record(
            cookie,
            e,
            FlowPhase::Start,
            e.first_seen,
            None,
        )));
    }

    /// The owner of the listener a socket with this local address was accepted from.
    fn listener_owner_for(&self, protocol: Protocol, local: SocketAddr) -> Option<Owner> {
        if protocol != Protocol::Tcp {
            return None;
        }
        let ip = canonical(local.ip());
        self.listeners
            .values()
            .find(|l| {
                l.protocol == protocol
                    && l.local.port() == local.port()
                    && (l.local.ip().is_unspecified() || canonical(l.local.ip()) == ip)
            })
            .map(|l| l.owner)
    }

    fn remember_closed_listener(&mut self, l: &ListenerEntry, at: UnixNanos) {
        if self.closed_listeners.len() >= CLOSED_LISTENER_MAX {
            self.closed_listeners.pop_front();
        }
        self.closed_listeners.push_back((at, l.protocol, l.local));
    }

    /// Whether a listener on this address closed within [`CLOSED_LISTENER_MEMORY`].
    fn was_listening(&mut self, protocol: Protocol, local: SocketAddr, now: UnixNanos) -> bool {
        let horizon = now.saturating_sub(nanos(CLOSED_LISTENER_MEMORY));
        while self
            .closed_listeners
            .front()
            .is_some_and(|(at, _, _)| *at < horizon)
        {
            self.closed_listeners.pop_front();
        }
        let ip = canonical(local.ip());
        self.closed_listeners.iter().any(|(_, p, l)| {
            *p == protocol
                && l.port() == local.port()
                && (l.ip().is_unspecified() || canonical(l.ip()) == ip)
        })
    }

    fn remember_ended(&mut self, cookie: u64, at: UnixNanos) {
        self.ended.insert(cookie, at);
        self.ended_order.push_back((at, cookie));
    }
}

/// Whether the final `bytes_received` of a closing TCP socket includes a received FIN's
/// sequence number. A state past CLOSE_WAIT says so; otherwise the counters since the last
/// dump do: no new data segment means any advance is the FIN; new data with a graceful close
/// is taken to carry a FIN (an abortive close without one then over-counts by one byte).
fn fin_received(last: Option<&Counters>, now: &Counters, last_state: u8) -> bool {
    const CLOSE_WAIT: u8 = 8;
    const LAST_ACK: u8 = 9;
    const CLOSING: u8 = 11;
    if matches!(
        last_state,
        CLOSE_WAIT | LAST_ACK | CLOSING | msg::TCP_TIME_WAIT
    ) {
        return true;
    }
    match last {
        // No data since the last dump: any advance is the FIN. (A FIN that landed between
        // the dump's state read and its counter read is missed here: one byte too many.)
        Some(last) if now.data_segs_in == last.data_segs_in => {
            now.bytes_received_seq > last.bytes_received_seq
        }
        // No data ever arrived: anything received is the FIN.
        _ if now.data_segs_in == 0 => now.bytes_received_seq > 0,
        _ => true,
    }
}

/// Whether a received FIN may hide in counters that [`fin_received`] found without one: the
/// last dump saw FIN_WAIT1/2 and nothing moved since. A dump reads the state before it takes
/// the socket lock and the counters under it, so a FIN processed in between is counted while
/// the state does not show it; a reset or the orphan timeout ends such a socket without one.
fn fin_in_doubt(last: Option<&Counters>, now: &Counters, last_state: u8) -> bool {
    matches!(last_state, msg::TCP_FIN_WAIT1 | msg::TCP_FIN_WAIT2)
        && last.is_some_and(|last| {
            now.data_segs_in == last.data_segs_in
                && now.bytes_received_seq == last.bytes_received_seq
        })
}

/// An unannounced flow's socket has its inode now (its fd exists): the entry keeps it and
/// the uid, and the flow is queued for attribution and its START.
fn queue_found(e: &mut Entry, s: &SocketInfo, new_flows: &mut Vec<u64>, new_inodes: &mut Vec<u64>) {
    e.inode = u32::try_from(s.inode).unwrap_or(0);
    e.uid = s.uid;
    new_flows.push(s.cookie);
    new_inodes.push(s.inode);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::NoAttribution;
    use crate::model::FlowRecord;
    use crate::sockdiag::msg::TcpInfo;

    fn tcp_socket(
        cookie: u64,
        local: &str,
        remote: &str,
        state: u8,
        sent: u64,
        received: u64,
        data_in: u32,
    ) -> SocketInfo {
        SocketInfo {
            cookie,
            protocol: Protocol::Tcp,
            family: Family::Ipv4,
            state,
            local: local.parse().expect("addr"),
            remote: remote.parse().expect("addr"),
            rqueue: 0,
            wqueue: 0,
            uid: 1000,
            inode: cookie + 1000,
            tcp: Some(TcpInfo {
                len: 232,
                state,
                bytes_sent: Some(sent),
                bytes_retrans: Some(0),
                bytes_received: Some(received),
                bytes_acked: Some(sent + 1),
                segs_out: Some(3),
                segs_in: Some(3),
                data_segs_in: Some(data_in),
                ..TcpInfo::default()
            }),
            cgroup_id: None,
            timewait: false,
        }
    }

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
    fn timewait_minisockets_are_not_new_connections() {
        let mut t = table();
        let mut out = Vec::new();
        let mut tw = tcp_socket(9, "10.0.0.1:9090", "10.0.0.2:5000", 5, 0, 0, 0);
        tw.tcp = None;
        tw.inode = 0;
        tw.timewait = true;
        t.apply_dump(&[tw], true, 10, &mut NoAttribution, &mut out);
        t.apply_dump(&[], true, 20, &mut NoAttribution, &mut out);
        assert!(flows(&out).is_empty(), "{out:?}");
    }

    fn flows(out: &[Record]) -> Vec<&FlowRecord> {
        out.iter()
            .filter_map(|r| match r {
                Record::Flow(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    fn table() -> FlowTable {
        FlowTable::new(FlowConfig::default(), Scoper::default())
    }

    #[test]
    fn start_then_destroy_gives_one_start_one_end_with_payload_bytes() {
        let mut t = table();
        let mut out = Vec::new();
        let listener = tcp_socket(1, "127.0.0.1:80", "0.0.0.0:0", msg::TCP_LISTEN, 0, 0, 0);
        t.apply_dump(
            std::slice::from_ref(&listener),
            true,
            10,
            &mut NoAttribution,
            &mut out,
        );
        out.clear();
        let s = tcp_socket(
            2,
            "127.0.0.1:80",
            "127.0.0.1:5555",
            msg::TCP_ESTABLISHED,
            333,
            1000,
            1,
        );
        t.apply_dump(
            &[listener, s.clone()],
            true,
            20,
            &mut NoAttribution,
            &mut out,
        );
        let started = flows(&out);
        assert_eq!(started.len(), 1);
        assert_eq!(
            (
                started[0].phase,
                started[0].direction,
                started[0].preexisting
            ),
            (FlowPhase::Start, Direction::Inbound, false)
        );
        out.clear();
        // Final: the peer's FIN took one sequence number, no new data segment.
        let fin = tcp_socket(
            2,
            "127.0.0.1:80",
            "127.0.0.1:5555",
            msg::TCP_CLOSE,
            333,
            1001,
            1,
        );
        t.apply_destroy(&fin, 30, &mut out);
        t.apply_destroy(&fin, 31, &mut out); // a duplicate signal
        let ended = flows(&out);
        assert_eq!(ended.len(), 1, "exactly one END");
        assert_eq!(
            (ended[0].bytes_sent, ended[0].bytes_received),
            (Some(333), Some(1000))
        );
        assert_eq!(ended[0].end_reason, EndReason::DestroyEvent);
        assert_eq!(t.stats().duplicate_ends, 1);
    }

    /// A dump taken batch by batch: a connection whose listener comes in a later datagram
    /// is still inbound; a known flow's moved counters, seen in the first batch, give one
    /// UPDATE at its active timeout; a flow absent from the whole dump goes missing and
    /// ends (no grace here), and one seen in any batch does not.
    #[test]
    fn a_dump_in_batches_is_one_dump() {
        let mut t = FlowTable::new(
            FlowConfig {
                active_timeout: Duration::from_micros(5),
                // Missing from one complete dump is enough: noted and ended in one walk.
                vanish_grace: Duration::ZERO,
                ..FlowConfig::default()
            },
            Scoper::default(),
        );
        let mut out = Vec::new();
        let est = msg::TCP_ESTABLISHED;
        let kept = tcp_socket(10, "127.0.0.1:7000", "127.0.0.1:9", est, 1, 0, 0);
        let dropped = tcp_socket(11, "127.0.0.1:7001", "127.0.0.1:9", est, 1, 0, 0);
        t.apply_dump(
            &[kept.clone(), dropped.clone()],
            true,
            10_000,
            &mut NoAttribution,
            &mut out,
        );
        assert_eq!(flows(&out).len(), 2);
        out.clear();

        let accepted = tcp_socket(2, "127.0.0.1:80", "127.0.0.1:5555", est, 0, 0, 0);
        let listener = tcp_socket(1, "127.0.0.1:80", "0.0.0.0:0", msg::TCP_LISTEN, 0, 0, 0);
        let moved = tcp_socket(10, "127.0.0.1:7000", "127.0.0.1:9", est, 500, 0, 0);
        t.begin_dump(20_000);
        t.observe(&[moved, accepted.clone()]);
        t.observe(&[listener.clone(), dropped]);
        t.finish_dump(true, &mut NoAttribution, &mut out);
        let records = flows(&out);
        let started: Vec<_> = records
            .iter()
            .filter(|f| f.phase == FlowPhase::Start)
            .map(|f| (f.cookie, f.direction))
            .collect();
        assert_eq!(started, [(2, Direction::Inbound)]);
        let updated: Vec<_> = records
            .iter()
            .filter(|f| f.phase == FlowPhase::Update)
            .map(|f| (f.cookie, f.bytes_sent))
            .collect();
        assert_eq!(updated, [(10, Some(500))]);
        out.clear();

        t.begin_dump(30_000);
        t.observe(std::slice::from_ref(&kept));
        t.observe(&[]);
        t.observe(&[listener, accepted]);
        t.finish_dump(true, &mut NoAttribution, &mut out);
        let ended: Vec<_> = flows(&out)
            .iter()
            .filter(|f| f.phase == FlowPhase::End)
            .map(|f| (f.cookie, f.end_reason))
            .collect();
        assert_eq!(ended, [(11, EndReason::Vanished)]);
    }

    #[test]
    fn zeroed_counters_keep_the_last_dump_and_mark_reset() {
        let mut t = table();
        let mut out = Vec::new();
        let s = tcp_socket(
            5,
            "10.0.0.2:40000",
            "203.0.113.9:443",
            msg::TCP_ESTABLISHED,
            500,
            700,
            2,
        );
        t.apply_dump(&[], true, 1, &mut NoAttribution, &mut out);
        t.apply_dump(&[s], true, 2, &mut NoAttribution, &mut out);
        out.clear();
        // As the kernel reports it: the local address and the peer's port cleared.
        let mut zeroed = tcp_socket(5, "0.0.0.0:40000", "203.0.113.9:0", msg::TCP_CLOSE, 0, 0, 0);
        if let Some(info) = zeroed.tcp.as_mut() {
            info.bytes_acked = Some(0);
            info.segs_in = Some(0);
            info.segs_out = Some(0);
        }
        t.apply_destroy(&zeroed, 3, &mut out);
        let end = flows(&out)[0];
        assert!(end.reset);
        assert_eq!((end.bytes_sent, end.bytes_received), (Some(500), Some(700)));
        assert_eq!(end.remote_addr, Some("203.0.113.9".parse().expect("ip")));
        assert!(!end.peer_scrubbed, "the dumped peer is kept");
        assert_eq!(
            (end.scope, end.direction),
            (Scope::NorthSouth, Direction::Outbound)
        );
        // Reset before any dump saw it: the record says its peer is unknown.
        out.clear();
        zeroed.cookie = 6;
        t.apply_destroy(&zeroed, 4, &mut out);
        let unseen = flows(&out)[0];
        assert!(unseen.peer_scrubbed && unseen.reset);
        assert_eq!(unseen.direction, Direction::Unknown);
    }

    #[test]
    fn vanished_sockets_end_after_the_grace_period_once() {
        let mut t = table();
        let mut out = Vec::new();
        let s = tcp_socket(
            7,
            "127.0.0.1:1",
            "127.0.0.1:2",
            msg::TCP_ESTABLISHED,
            1,
            1,
            1,
        );
        t.apply_dump(
            std::slice::from_ref(&s),
            true,
            1,
            &mut NoAttribution,
            &mut out,
        );
        out.clear();
        let sec = 1_000_000_000;
        t.apply_dump(&[], false, 2, &mut NoAttribution, &mut out); // interrupted: no inference
        t.apply_dump(&[], true, 3, &mut NoAttribution, &mut out);
        assert!(flows(&out).is_empty(), "still within grace");
        t.expire(3 + sec, &mut out);
        t.apply_destroy(&s, 4 + sec, &mut out); // late event
        let ended = flows(&out);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].end_reason, EndReason::Vanished);
    }

    #[test]
    fn destroy_only_sockets_get_an_end_alone() {
        let mut t = table();
        let mut out = Vec::new();
        t.apply_dump(&[], true, 1, &mut NoAttribution, &mut out);
        let s = tcp_socket(
            9,
            "127.0.0.1:3000",
            "127.0.0.1:4000",
            msg::TCP_CLOSE,
            10,
            21,
            1,
        );
        t.apply_destroy(&s, 2, &mut out);
        let f = flows(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].phase, FlowPhase::End);
        assert_eq!(t.stats().destroy_only, 1);
    }

    #[test]
    fn updates_only_when_counters_move_after_the_active_timeout() {
        let mut t = FlowTable::new(
            FlowConfig {
                active_timeout: Duration::from_micros(100),
                ..FlowConfig::default()
            },
            Scoper::default(),
        );
        let mut out = Vec::new();
        let us = 1_000;
        let sent = |bytes| {
            tcp_socket(
                3,
                "127.0.0.1:1",
                "127.0.0.1:2",
                msg::TCP_ESTABLISHED,
                bytes,
                1,
                1,
            )
        };
        let mut dump = |bytes, at| {
            t.apply_dump(&[sent(bytes)], true, at, &mut NoAttribution, &mut out);
        };
        dump(1, 0);
        dump(1, 500 * us); // timeout passed, nothing moved
        dump(50, 550 * us); // moved: update
        dump(60, 600 * us); // moved, but 50 us after the last record
        dump(60, 640 * us);
        dump(60, 660 * us); // 110 us: the held change goes out
        dump(60, 900 * us);
        let seen: Vec<(FlowPhase, UnixNanos, Option<u64>)> = flows(&out)
            .iter()
            .map(|f| (f.phase, f.last_seen, f.bytes_sent))
            .collect();
        assert_eq!(
            seen,
            vec![
                (FlowPhase::Start, 0, Some(1)),
                (FlowPhase::Update, 550 * us, Some(50)),
                (FlowPhase::Update, 660 * us, Some(60)),
            ]
        );
    }

    /// The last dump saw FIN_WAIT2 with the peer's FIN already counted (it read the state
    /// just before the FIN and the counters just after): only a TIME_WAIT successor says so.
    #[test]
    fn a_fin_counted_behind_a_fin_wait_state_is_taken_off_when_proved() {
        let (local, remote) = ("127.0.0.1:40000", "127.0.0.1:80");
        // The END's bytes received, the FINs proved, and whether the proof was asked for.
        let end = |destroyed: &SocketInfo, proved: bool| {
            let mut t = table();
            let mut out = Vec::new();
            let racy = tcp_socket(5, local, remote, msg::TCP_FIN_WAIT2, 10, 101, 2);
            t.apply_dump(&[racy], true, 10, &mut NoAttribution, &mut out);
            let mut asked = false;
            t.apply_destroy_with(
                destroyed,
                20,
                &mut |_| {
                    asked = true;
                    proved
                },
                &mut out,
            );
            let ends: Vec<Option<u64>> = flows(&out)
                .iter()
                .filter(|f| f.phase == FlowPhase::End)
                .map(|f| f.bytes_received)
                .collect();
            (ends, t.stats().fin_by_timewait, asked)
        };
        let destroyed = tcp_socket(5, local, remote, msg::TCP_CLOSE, 10, 101, 2);
        assert_eq!(
            end(&destroyed, false),
            (vec![Some(101)], 0, true),
            "in doubt; not proved: no FIN"
        );
        assert_eq!(
            end(&destroyed, true),
            (vec![Some(100)], 1, true),
            "a TIME_WAIT successor proves it"
        );
        // Data or a FIN after that dump is no doubt: the counters moved, nobody is asked.
        let moved = tcp_socket(5, local, remote, msg::TCP_CLOSE, 10, 102, 2);
        assert!(!end(&moved, true).2);
    }

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

    #[test]
    fn a_connection_first_seen_after_its_listener_closed_is_inbound() {
        let mut t = table();
        let mut out = Vec::new();
        let listener = tcp_socket(1, "0.0.0.0:9090", "0.0.0.0:0", msg::TCP_LISTEN, 0, 0, 0);
        t.apply_dump(
            std::slice::from_ref(&listener),
            true,
            10,
            &mut NoAttribution,
            &mut out,
        );
        t.apply_destroy(&listener, 20, &mut out);
        out.clear();
        let accepted = tcp_socket(2, "10.0.0.1:9090", "10.0.0.2:40000", 5, 50, 100, 1);
        let dialed = tcp_socket(3, "10.0.0.1:40001", "10.0.0.2:9090", 1, 50, 100, 1);
        t.apply_dump(&[accepted, dialed], true, 30, &mut NoAttribution, &mut out);
        let directions: Vec<(u16, Direction)> = flows(&out)
            .iter()
            .map(|f| (f.local_port, f.direction))
            .collect();
        assert!(
            directions.contains(&(9090, Direction::Inbound)),
            "{directions:?}"
        );
        assert!(
            directions.contains(&(40001, Direction::Outbound)),
            "{directions:?}"
        );
    }

    #[test]
    fn fin_inference() {
        let last = Counters {
            bytes_sent: 0,
            bytes_received_seq: 100,
            segs_out: 0,
            segs_in: 0,
            data_segs_in: 2,
            total_retrans: 0,
            rtt_us: 0,
            retransmits: 0,
        };
        let same = Counters {
            bytes_received_seq: 100,
            ..last
        };
        let plus_fin = Counters {
            bytes_received_seq: 101,
            ..last
        };
        assert!(!fin_received(Some(&last), &same, msg::TCP_ESTABLISHED));
        assert!(fin_received(Some(&last), &plus_fin, msg::TCP_ESTABLISHED));
        // Our FIN acked, none from the peer (an orphan leaving FIN_WAIT2): no FIN counted.
        let acked_only = Counters {
            segs_in: last.segs_in + 1,
            ..last
        };
        assert!(!fin_received(Some(&last), &acked_only, 5)); // FIN_WAIT2
        let only_fin = Counters {
            bytes_received_seq: 1,
            data_segs_in: 0,
            ..last
        };
        assert!(fin_received(None, &only_fin, msg::TCP_ESTABLISHED));
    }

    #[test]
    fn entry_stays_compact() {
        // At 100k sockets the map holds 131,072 buckets (1.31 per socket), each a cookie,
        // an entry and a control byte: 144 bytes keep that under the 200-byte budget.
        let entry = FlowTable::ENTRY_BYTES;
        assert!(entry <= 144, "{entry} bytes per map bucket");
    }
}
