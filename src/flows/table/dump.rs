//! The dump lifecycle: a dump's sockets observed batch by batch and concluded (new
//! listeners and flows attributed and announced, UPDATEs of flows whose counters moved,
//! absences ended once past the grace period), and the ENDs of sockets that vanished.

use std::net::SocketAddr;

use super::accept::queue_found;
use super::peers;
use super::{FlowTable, HashMap, SCRATCH_KEPT};
use crate::attribution::{Owner, OwnerLookup};
use crate::flows::entry::{
    flow_record, is_listener, listener_record, nanos, Entry, ListenerEntry, Tick,
};
use crate::model::{Attribution, EndReason, FlowPhase, Protocol, Record, UnixNanos};
use crate::sockdiag::msg::SocketInfo;
use crate::telemetry::collector::FlowEndedWithoutEvent;
use crate::telemetry::InternalEvent;

/// How many later dumps look again for an accepted socket's fd.
const FD_RETRIES: u8 = 2;

impl FlowTable {
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
        self.finish_dump_probed(complete, lookup, &mut |_| true, out);
    }

    /// [`FlowTable::finish_dump`], with `still_held` telling whether a TCP socket of the
    /// dump still has an fd (a lookup of that one socket): the owners' search stops looking
    /// for those that closed since.
    pub fn finish_dump_probed(
        &mut self,
        complete: bool,
        lookup: &mut dyn OwnerLookup,
        still_held: &mut dyn FnMut(&SocketInfo) -> bool,
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
            // Asked only of the few sockets a pass could not find in the likeliest tables.
            let mut by_inode: Option<HashMap<u64, &SocketInfo>> = None;
            let mut probe = |inode: u64| {
                let by_inode = by_inode.get_or_insert_with(|| {
                    sockets
                        .iter()
                        // Connections only: a lookup of a listener in a SO_REUSEPORT group
                        // finds one member of the group, by hash, and not the others.
                        .filter(|s| s.inode != 0 && s.protocol == Protocol::Tcp && !is_listener(s))
                        .map(|s| (s.inode, s))
                        .collect()
                });
                by_inode.get(&inode).is_none_or(|s| still_held(s))
            };
            lookup.refresh_probed(&self.new_inodes, &mut probe, now, out);
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
        let active_bytes = self.config.active_bytes;
        let mut transferring = false;
        let mut gone = Vec::new();
        for (cookie, e) in &mut self.flows {
            if e.generation == generation {
                let early = active_bytes > 0 && e.unreported_bytes() >= active_bytes;
                transferring |= active_bytes > 0 && e.unreported_bytes() >= active_bytes / 4;
                if e.dirty && (early || e.last_emit.elapsed(now) >= active_timeout) {
                    e.dirty = false;
                    e.last_emit = Tick::at(now);
                    e.mark_reported();
                    self.stats.updated += 1;
                    self.stats.updated_early += u64::from(early);
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
        self.transferring = transferring;
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
    pub(super) fn announce_new_flows(
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
                peers::learn(&mut self.peers, e, now);
                peers::infer(&self.peers, &mut self.stats, e, Some(s.uid), now);
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

    /// The per-dump lists keep a small capacity for the next dump; a burst of new sockets
    /// (the first dump above all) would otherwise keep its peak for good.
    pub(super) fn release_scratch(&mut self) {
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
                FlowEndedWithoutEvent.emit();
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

    pub(super) fn new_entry(&mut self, s: &SocketInfo, now: UnixNanos, generation: u32) -> Entry {
        let accepted = s.protocol == Protocol::Tcp
            && (self.listener_owner_for(s.protocol, s.local).is_some()
                || self.was_listening(s.protocol, s.local, now));
        Entry::new(s, accepted, &mut self.scoper, now, generation, !self.primed)
    }

    /// Emits the START a socket never got because it ended while still in an accept queue.
    pub(super) fn announce_late(&mut self, cookie: u64, e: &mut Entry, out: &mut Vec<Record>) {
        if e.announced {
            return;
        }
        if let Some(listener) =
            self.listener_owner_for(e.protocol, SocketAddr::new(e.local(), e.local_port))
        {
            e.set_owner(Owner::through_listener(listener));
        }
        self.infer_from_peer(e, Some(e.uid), e.last_seen);
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixtures::{flows, table, tcp_socket};
    use super::super::{FlowConfig, FlowTable};
    use crate::attribution::NoAttribution;
    use crate::flows::classify::Scoper;
    use crate::model::{Direction, EndReason, FlowPhase, UnixNanos};
    use crate::sockdiag::msg;

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

    #[test]
    fn a_large_transfer_is_reported_early_and_keeps_dumps_active() {
        let mib = 1u64 << 20;
        let mut t = FlowTable::new(
            FlowConfig {
                active_bytes: 16 * mib,
                ..FlowConfig::default()
            },
            Scoper::default(),
        );
        let mut out = Vec::new();
        let sec = 1_000_000_000;
        let mut dump = |bytes: u64, at| {
            let s = tcp_socket(
                3,
                "10.0.0.5:1",
                "203.0.113.7:443",
                msg::TCP_ESTABLISHED,
                bytes,
                1,
                1,
            );
            t.apply_dump(&[s], true, at, &mut NoAttribution, &mut out);
            t.transferring()
        };
        assert!(!dump(0, 0));
        assert!(!dump(3 * mib, sec), "under a quarter of the way");
        assert!(
            dump(7 * mib, 2 * sec),
            "a quarter of the way: dumps stay active"
        );
        assert!(dump(17 * mib, 3 * sec), "early UPDATE at 17 MiB");
        assert!(!dump(18 * mib, 4 * sec), "1 MiB since the last record");
        let seen: Vec<(FlowPhase, Option<u64>)> = flows(&out)
            .iter()
            .map(|f| (f.phase, f.bytes_sent))
            .collect();
        assert_eq!(
            seen,
            vec![
                (FlowPhase::Start, Some(0)),
                (FlowPhase::Update, Some(17 * mib))
            ]
        );
        assert_eq!(t.stats().updated_early, 1);
    }

    /// After a dump, only connections are asked about: a lookup of a listener in a
    /// SO_REUSEPORT group finds one member, by hash, and would call the others closed.
    #[test]
    fn the_owners_search_asks_about_connections_not_listeners() {
        use crate::attribution::{Owner, OwnerLookup};
        use crate::model::Record;
        struct AsksAll(Vec<u64>);
        impl OwnerLookup for AsksAll {
            fn refresh(&mut self, _: &[u64], _: UnixNanos, _: &mut Vec<Record>) {}
            fn refresh_probed(
                &mut self,
                new_inodes: &[u64],
                still_held: &mut dyn FnMut(u64) -> bool,
                _: UnixNanos,
                _: &mut Vec<Record>,
            ) {
                for &inode in new_inodes {
                    if still_held(inode) {
                        continue;
                    }
                    self.0.push(inode);
                }
            }
            fn owner(&mut self, _: u64, _: Option<u32>, _: Option<Owner>) -> Owner {
                Owner::NONE
            }
        }
        let mut t = table();
        let mut out = Vec::new();
        let listener = tcp_socket(1, "127.0.0.1:80", "0.0.0.0:0", msg::TCP_LISTEN, 0, 0, 0);
        let conn = tcp_socket(
            2,
            "127.0.0.1:80",
            "127.0.0.1:5555",
            msg::TCP_ESTABLISHED,
            0,
            0,
            0,
        );
        let mut lookup = AsksAll(Vec::new());
        let mut asked = Vec::new();
        t.begin_dump(10_000);
        t.observe(&[listener.clone(), conn.clone()]);
        t.finish_dump_probed(
            true,
            &mut lookup,
            &mut |s| {
                asked.push(s.inode);
                false
            },
            &mut out,
        );
        assert_eq!(asked, [conn.inode], "only the connection is looked up");
        assert_eq!(lookup.0, [conn.inode], "the listener reads as held");
    }
}
