//! Rollups: what the answers need of one pod's hour or day, kept after its raw records are
//! gone. [`HourBuilder`] folds an hour's events into one [`PodHour`] per pod; `day` folds a
//! day's pod-hours into one per pod (the grain a month's question reads); [`Merger`] folds
//! the pod-hours and pod-days of a window back into the [`Activity`] the raw records would
//! give.
//!
//! A socket counts once per window, with its last counters in the window, however many hours
//! it spans. So each hour's edge rows are split by the hour the socket was last seen before
//! (`prev_hour`, from the [`Carry`]): a window counts a row's sockets and their counters
//! when that hour is before the window (or there is none), and only the growth since
//! (`*_delta`) otherwise. Counters only grow over a socket's life, so the sum is the
//! socket's last counters in the window.

mod day;
mod merge;

use std::collections::HashMap as StdHashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::entities::{PodDirectory, ProcessNames};
use super::novelty::Period;
use super::sockets::{edge_of, EdgeKey};
use super::{Edge, FlowFilter, HashMap, HashSet, NewExecutable, NewListener};
use crate::model::{
    CollectorIdentity, Direction, Event, FlowPhase, ProcessPhase, Record, Scope, Severity,
};

pub use day::{fold_day, fold_pods};
pub use merge::{Kept, Merger, PodRef, RowRef};

pub const HOUR: u64 = 3_600_000_000_000;
pub const DAY: u64 = 24 * HOUR;

/// The start of the hour holding `t` (ns).
pub fn hour_of(t: u64) -> u64 {
    t - t % HOUR
}

/// The start of the UTC day holding `t` (ns).
pub fn day_of(t: u64) -> u64 {
    t - t % DAY
}

/// What the activity chart counts per hour: new connections by network scope and direction
/// (north-south out, north-south in, east-west, local, other), then process starts.
pub const STARTS: usize = 6;

/// At most this many rows are sized for at once when an hour's sockets are folded: a row per
/// socket is the most there can be, and past this the table grows as it needs.
const MAX_ROWS_RESERVED: usize = 1 << 20;

/// One hour's counts of new connections and process starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct HourStarts {
    pub hour: u64,
    pub counts: [u64; STARTS],
}

/// Which series of [`HourStarts`] a new connection counts in.
pub fn flow_series(scope: Scope, direction: Direction) -> usize {
    match (scope, direction) {
        (Scope::NorthSouth, Direction::Outbound) => 0,
        (Scope::NorthSouth, _) => 1,
        (Scope::EastWest, _) => 2,
        (Scope::Local, _) => 3,
        _ => 4,
    }
}

/// The series a record counts in, if any: a flow's START, a process record other than an
/// exit.
pub fn start_series(record: &Record) -> Option<usize> {
    match record {
        Record::Flow(f) if f.phase == FlowPhase::Start => Some(flow_series(f.scope, f.direction)),
        Record::Process(p) if p.phase != ProcessPhase::Exit => Some(STARTS - 1),
        _ => None,
    }
}

/// One edge's sockets of one hour that were last seen before in the same hour
/// `prev_hour` (None: first seen in this hour, or no longer carried).
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeRow {
    /// Its sockets (`connections`) with their last counters in the hour; no peer pod.
    pub edge: Edge,
    pub prev_hour: Option<u64>,
    /// What the sockets' counters grew in this hour past their largest before it.
    pub sent_delta: u64,
    pub received_delta: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertCount {
    pub rule_id: String,
    pub severity: Severity,
    pub count: u64,
}

/// One pod's hour.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodHour {
    pub pod_namespace: String,
    pub pod_name: String,
    pub edges: Vec<EdgeRow>,
    /// The first process record of each executable in the hour.
    pub executables: Vec<NewExecutable>,
    /// The first START of each listening port in the hour.
    pub listeners: Vec<NewListener>,
    pub alerts: Vec<AlertCount>,
    /// Process records (exits aside).
    pub processes: u64,
    pub truncated: bool,
    /// New connections and process starts per hour (one entry for an hour, 24 for a day).
    pub starts: Vec<HourStarts>,
}

/// A socket still open at the end of the last hour built: the hour it was last seen in and
/// its largest counters so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Carried {
    pub hour: u64,
    pub sent: u64,
    pub received: u64,
}

/// The sockets carried from hour to hour, by (collector id, cookie).
pub type Carry = StdHashMap<(String, u64), Carried>;

/// A pod seen in an hour, with its address (names east-west peers).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodAddress {
    pub pod_namespace: String,
    pub pod_name: String,
    pub ip: IpAddr,
}

// === Building ===

/// Folds one hour's events (any kinds; flows, processes, listeners and alerts count).
pub struct HourBuilder {
    period: Period,
    alerts: HashMap<(String, String, String, Severity), u64>,
    pods: HashSet<PodAddress>,
    /// By pod and hour (the raw tail a window reads after the last hour built spans hours).
    starts: HashMap<(String, String, u64), [u64; STARTS]>,
    last: Option<Arc<CollectorIdentity>>,
}

impl Default for HourBuilder {
    fn default() -> Self {
        HourBuilder {
            period: Period::new(FlowFilter::default()),
            alerts: HashMap::default(),
            pods: HashSet::default(),
            starts: HashMap::default(),
            last: None,
        }
    }
}

impl HourBuilder {
    /// Adds one event; false once a bound is reached (the hour is then marked truncated).
    pub fn add(&mut self, e: &Event) -> bool {
        if !self
            .last
            .as_ref()
            .is_some_and(|last| Arc::ptr_eq(last, &e.source))
        {
            if let Ok(ip) = e.source.pod_ip.parse::<IpAddr>() {
                self.pods.insert(PodAddress {
                    pod_namespace: e.source.pod_namespace.clone(),
                    pod_name: e.source.pod_name.clone(),
                    ip,
                });
            }
            self.last = Some(e.source.clone());
        }
        if let Some(series) = start_series(&e.record) {
            let key = (
                e.source.pod_namespace.clone(),
                e.source.pod_name.clone(),
                hour_of(e.received_at),
            );
            self.starts.entry(key).or_default()[series] += 1;
        }
        if let Record::Alert(a) = &e.record {
            *self
                .alerts
                .entry((
                    a.pod_namespace.clone(),
                    a.pod_name.clone(),
                    a.rule_id.clone(),
                    a.severity,
                ))
                .or_default() += 1;
            return true;
        }
        self.period.add(e)
    }

    /// Leaves out the sockets still open at the end of what was added that `forget` names
    /// (by collector id and cookie): a window's raw head leaves to the rollups the sockets
    /// they count from a later hour.
    pub fn forget_open(&mut self, forget: impl FnMut(&str, u64) -> bool) {
        self.period.sockets.forget_open(forget);
    }

    /// The hour's pod-hours (`hour` is its start) and the pods seen; `carry` goes from the
    /// previous hour's open sockets to this one's. Sockets last seen before
    /// `expire_before` are no longer carried (their raw records are gone too).
    pub fn finish(
        self,
        hour: u64,
        names: &ProcessNames,
        carry: &mut Carry,
        expire_before: u64,
    ) -> (Vec<PodHour>, Vec<PodAddress>) {
        let no_peers = PodDirectory::default();
        // Sized at once for a row per socket (at most; bounded): an hour's rows are
        // hundreds of thousands, and growing the table rehashed their string keys again and
        // again.
        let mut rows: HashMap<EdgeKey<Option<u64>>, EdgeRow> = HashMap::with_capacity_and_hasher(
            self.period.sockets.len().min(MAX_ROWS_RESERVED),
            Default::default(),
        );
        self.period.sockets.each(|source, cookie, s| {
            let id = (source.collector_id.clone(), cookie);
            let before = carry.get(&id).copied();
            let (key, name) = EdgeKey::of(source, s, names, before.map(|b| b.hour));
            let row = rows.entry(key).or_insert_with(|| EdgeRow {
                edge: edge_of(source, s, name, &no_peers),
                prev_hour: before.map(|b| b.hour),
                sent_delta: 0,
                received_delta: 0,
            });
            row.edge.absorb(s);
            let (sent, received) = before.map_or((0, 0), |b| (b.sent, b.received));
            row.sent_delta += s.bytes_sent.saturating_sub(sent);
            row.received_delta += s.bytes_received.saturating_sub(received);
            if s.ended {
                carry.remove(&id);
            } else {
                carry.insert(
                    id,
                    Carried {
                        hour,
                        sent: sent.max(s.bytes_sent),
                        received: received.max(s.bytes_received),
                    },
                );
            }
        });
        carry.retain(|_, c| c.hour >= expire_before);

        let mut pods: HashMap<(String, String), PodHour> = HashMap::default();
        for row in rows.into_values() {
            let mut row = row;
            row.edge.pids.sort_unstable();
            pod_hour(&mut pods, &row.edge.pod_namespace, &row.edge.pod_name)
                .edges
                .push(row);
        }
        let (executables, listeners) = self.period.firsts(names);
        for x in executables {
            pod_hour(&mut pods, &x.pod_namespace, &x.pod_name)
                .executables
                .push(x);
        }
        for l in listeners {
            pod_hour(&mut pods, &l.pod_namespace, &l.pod_name)
                .listeners
                .push(l);
        }
        for (source, _, _) in &self.period.processes {
            pod_hour(&mut pods, &source.pod_namespace, &source.pod_name).processes += 1;
        }
        for ((ns, name, hour), counts) in self.starts {
            pod_hour(&mut pods, &ns, &name)
                .starts
                .push(HourStarts { hour, counts });
        }
        for ((ns, name, rule_id, severity), count) in self.alerts {
            pod_hour(&mut pods, &ns, &name).alerts.push(AlertCount {
                rule_id,
                severity,
                count,
            });
        }
        let truncated = self.period.truncated();
        let mut out: Vec<PodHour> = pods.into_values().collect();
        for p in &mut out {
            p.truncated = truncated;
            p.alerts.sort_by(|a, b| a.rule_id.cmp(&b.rule_id));
            p.starts.sort_by_key(|s| s.hour);
        }
        out.sort_by(|a, b| (&a.pod_namespace, &a.pod_name).cmp(&(&b.pod_namespace, &b.pod_name)));
        let mut addresses: Vec<PodAddress> = self.pods.into_iter().collect();
        addresses.sort_by(|a, b| {
            (&a.pod_namespace, &a.pod_name, a.ip).cmp(&(&b.pod_namespace, &b.pod_name, b.ip))
        });
        (out, addresses)
    }
}

fn pod_hour<'m>(
    pods: &'m mut HashMap<(String, String), PodHour>,
    ns: &str,
    name: &str,
) -> &'m mut PodHour {
    pods.entry((ns.to_owned(), name.to_owned()))
        .or_insert_with(|| PodHour {
            pod_namespace: ns.to_owned(),
            pod_name: name.to_owned(),
            ..PodHour::default()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::investigate::test_support::{flow, identity, process};
    use crate::investigate::{Activity, Baseline, EdgeOrder};
    use crate::model::FlowPhase;

    fn event(source: &Arc<CollectorIdentity>, at: u64, record: Record) -> Event {
        Event {
            source: source.clone(),
            received_at: at,
            record,
        }
    }

    fn names_of(events: &[Event]) -> ProcessNames {
        let mut names = ProcessNames::default();
        for e in events {
            if let Record::Process(p) = &e.record {
                names.add(&e.source, p);
            }
        }
        names
    }

    /// The pod-hours of `events`, by hour, from the start of their first day to the end of
    /// their last.
    fn hours_of(events: &[Event], names: &ProcessNames) -> Vec<(u64, Vec<PodHour>)> {
        let mut carry = Carry::new();
        let last = events.iter().map(|e| e.received_at).max().unwrap_or(0);
        let mut hours = Vec::new();
        let mut hour = day_of(events[0].received_at);
        while hour <= last || hour % DAY != 0 {
            let mut builder = HourBuilder::default();
            for e in events.iter().filter(|e| hour_of(e.received_at) == hour) {
                builder.add(e);
            }
            hours.push((hour, builder.finish(hour, names, &mut carry, 0).0));
            hour += HOUR;
        }
        hours
    }

    /// Raw and rollup activity over [since, until] of `events` (hour-aligned window); with
    /// `days`, the whole days of the window read from their pod-days.
    fn both(events: &[Event], since: u64, until: u64, days: bool) -> (Activity, Activity) {
        let names = names_of(events);
        let pods = PodDirectory::default();
        let mut raw = Period::new(FlowFilter::default());
        for e in events
            .iter()
            .filter(|e| (since..=until).contains(&e.received_at))
        {
            raw.add(e);
        }
        let raw = raw.activity(&names, &pods);
        let hours = hours_of(events, &names);
        let mut merger = Merger::new(since, FlowFilter::default(), true);
        let mut i = 0;
        while i < hours.len() {
            let (hour, _) = hours[i];
            let whole_day = hour % DAY == 0 && hour >= since && hour + DAY - 1 <= until;
            if days && whole_day {
                let day: Vec<PodHour> = hours[i..i + 24]
                    .iter()
                    .flat_map(|(_, rows)| rows.clone())
                    .collect();
                for row in fold_day(hour, day) {
                    merger.add(row);
                }
                i += 24;
                continue;
            }
            if hour >= since && hour <= until {
                for row in hours[i].1.clone() {
                    merger.add(row);
                }
            }
            i += 1;
        }
        let mut rolled = merger
            .finish(&pods, |_| Err(()), |_| Err(()))
            .expect("decoded");
        rolled.edges.sort_by_key(|e| (e.port, e.exe.clone()));
        let mut raw = raw;
        raw.edges.sort_by_key(|e| (e.port, e.exe.clone()));
        (raw, rolled)
    }

    /// The flow record of `cookie` at hour `h` (plus a little), to 203.0.113.7:`port`.
    fn at(
        events: &mut Vec<Event>,
        web: &Arc<CollectorIdentity>,
        (h, cookie, port): (u64, u64, u16),
        phase: FlowPhase,
        sent: u64,
    ) {
        events.push(event(
            web,
            h * HOUR + 100 + cookie,
            Record::Flow(flow(cookie, "203.0.113.7", port, phase, sent)),
        ));
    }

    fn same(events: &[Event], from: u64, to: u64, days: bool) {
        let (raw, rolled) = both(events, from * HOUR, (to + 1) * HOUR - 1, days);
        assert_eq!(raw.edges, rolled.edges, "hours {from}..={to}");
        assert_eq!(raw.flows, rolled.flows, "hours {from}..={to}");
        assert_eq!(raw.executables, rolled.executables, "hours {from}..={to}");
        assert_eq!(raw.processes, rolled.processes, "hours {from}..={to}");
    }

    #[test]
    fn a_socket_spanning_hours_counts_once_with_its_last_counters_in_every_window() {
        let web = identity("c1", "web-0", "10.0.0.5");
        let mut events = vec![event(
            &web,
            10,
            Record::Process(process(7, 70, 1, 10, "/usr/bin/curl")),
        )];
        // Socket 1 lives through hours 0..=3 (no record in hour 2), growing; socket 2 is
        // born and ends in hour 1; socket 3 ends in hour 3 with its counters zeroed by a
        // reset after an update in hour 2.
        for (h, cookie, phase, sent) in [
            (0, 1, FlowPhase::Start, 0),
            (0, 1, FlowPhase::Update, 100),
            (1, 1, FlowPhase::Update, 300),
            (1, 2, FlowPhase::End, 40),
            (2, 3, FlowPhase::Update, 500),
            (3, 1, FlowPhase::End, 900),
            (3, 3, FlowPhase::End, 0),
        ] {
            at(&mut events, &web, (h, cookie, 443), phase, sent);
        }
        for (from, to) in [(0, 0), (0, 3), (1, 1), (1, 2), (2, 3), (3, 3), (1, 3)] {
            same(&events, from, to, false);
        }
        let (raw, _) = both(&events, 0, 4 * HOUR - 1, false);
        assert_eq!(raw.flows, 3);
        assert_eq!(raw.edges[0].bytes_sent, 900 + 40 + 500);
    }

    #[test]
    fn a_day_folded_answers_as_its_hours_did() {
        let web = identity("c1", "web-0", "10.0.0.5");
        let mut events = vec![
            event(
                &web,
                10,
                Record::Process(process(7, 70, 1, 10, "/usr/bin/curl")),
            ),
            event(
                &web,
                30 * HOUR,
                Record::Process(process(8, 80, 1, 10, "/tmp/x")),
            ),
        ];
        // Socket 1 lives from hour 22 into day 1 (hour 30); socket 2 is born and ends in
        // hour 24; socket 3 lives from hour 26 into day 2 (hour 50, no record in 41..=46);
        // socket 4 updates in hour 30 and ends zeroed by a reset in 31; socket 5 lives
        // within day 1 over several hours.
        for (h, cookie, phase, sent) in [
            (22, 1, FlowPhase::Start, 0),
            (23, 1, FlowPhase::Update, 100),
            (25, 1, FlowPhase::Update, 300),
            (30, 1, FlowPhase::End, 900),
            (24, 2, FlowPhase::End, 40),
            (26, 3, FlowPhase::Start, 10),
            (40, 3, FlowPhase::Update, 2_000),
            (47, 3, FlowPhase::Update, 3_000),
            (48, 3, FlowPhase::Update, 3_500),
            (50, 3, FlowPhase::End, 4_000),
            (30, 4, FlowPhase::Update, 700),
            (31, 4, FlowPhase::End, 0),
            (27, 5, FlowPhase::Start, 1),
            (28, 5, FlowPhase::Update, 20),
            (33, 5, FlowPhase::End, 50),
        ] {
            at(
                &mut events,
                &web,
                (h, cookie, 443 + (cookie % 2) as u16),
                phase,
                sent,
            );
        }
        for (from, to) in [
            (22, 47),
            (24, 47),
            (23, 48),
            (24, 50),
            (0, 71),
            (24, 71),
            (47, 71),
            (25, 47),
        ] {
            same(&events, from, to, true);
        }
        let (raw, _) = both(&events, 24 * HOUR, 48 * HOUR - 1, true);
        assert_eq!(raw.flows, 5);
    }

    #[test]
    fn a_baseline_straight_from_the_merger_is_the_baseline_of_its_activity() {
        // Two pods of one workload, each running curl: the same peer from both (one baseline
        // edge of both pods' bytes), and a socket born before the window (counted with its
        // last counters in it).
        let web = identity("c1", "web-6d8f9c7b5-x2k4q", "10.0.0.5");
        let other = identity("c2", "web-6d8f9c7b5-q8w2z", "10.0.0.6");
        let mut events: Vec<Event> = [&web, &other]
            .into_iter()
            .map(|pod| {
                event(
                    pod,
                    10,
                    Record::Process(process(7, 70, 1, 10, "/usr/bin/curl")),
                )
            })
            .collect();
        for (pod, h, cookie, port, phase, sent) in [
            (&web, 0, 1, 443, FlowPhase::Start, 10),
            (&web, 1, 1, 443, FlowPhase::Update, 30),
            (&web, 2, 1, 443, FlowPhase::End, 70),
            (&other, 1, 2, 443, FlowPhase::End, 5),
            (&other, 2, 3, 5432, FlowPhase::End, 9),
            (&web, 2, 4, 8080, FlowPhase::End, 11),
        ] {
            at(&mut events, pod, (h, cookie, port), phase, sent);
        }
        let names = names_of(&events);
        let hours = hours_of(&events, &names);
        let merged = || {
            let mut merger = Merger::new(HOUR, FlowFilter::default(), true);
            for (hour, rows) in &hours {
                if (HOUR..3 * HOUR).contains(hour) {
                    for row in rows.clone() {
                        merger.add(row);
                    }
                }
            }
            merger
        };
        let activity = merged()
            .finish(&PodDirectory::default(), |_| Err(()), |_| Err(()))
            .expect("decoded");
        let direct = merged()
            .baseline(|_| Err(()), |_| Err(()))
            .expect("decoded");
        let want = Baseline::of(&activity);
        assert_eq!(direct.summary(), want.summary());
        let mut edges: Vec<(String, Vec<u8>, u16, u64)> = direct
            .summary()
            .0
            .into_iter()
            .map(|(k, bytes)| (k.0 .1, k.1, k.4, bytes))
            .collect();
        edges.sort();
        // Sent, and half of it received: cookie 1's 70 and cookie 2's 5 on 443.
        let curl = || b"/usr/bin/curl".to_vec();
        assert_eq!(
            edges,
            vec![
                ("web".into(), curl(), 443, 105 + 7),
                ("web".into(), curl(), 5432, 9 + 4),
                ("web".into(), curl(), 8080, 11 + 5),
            ]
        );
        // The first `limit` talkers are the first of all of them, ties included (two
        // edges of one connection each).
        let pods = PodDirectory::default();
        for order in [EdgeOrder::Bytes, EdgeOrder::Connections, EdgeOrder::Recent] {
            let all = merged().talkers(&pods, order, 100);
            assert_eq!(all.edges.len(), 4, "{order:?}");
            for limit in 0..all.edges.len() {
                let some = merged().talkers(&pods, order, limit);
                assert_eq!(some.edges, all.edges[..limit], "{order:?}, {limit}");
                assert_eq!(some.total_edges, all.total_edges);
            }
        }
    }
}
