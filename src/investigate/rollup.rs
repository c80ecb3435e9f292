//! Hourly rollups: what the answers need of one pod's hour, kept after its raw records are
//! gone. [`HourBuilder`] folds an hour's events into one [`PodHour`] per pod; [`Merger`]
//! folds the pod-hours of a window back into the [`Activity`] the raw records would give.
//!
//! A socket counts once per window, with its last counters in the window, however many hours
//! it spans. So each hour's edge rows are split by the hour the socket was last seen before
//! (`prev_hour`, from the [`Carry`]): a window counts a row's sockets and their counters
//! when that hour is before the window (or there is none), and only the growth since
//! (`*_delta`) otherwise. Counters only grow over a socket's life, so the sum is the
//! socket's last counters in the window.

use std::collections::HashMap as StdHashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::entities::{PodDirectory, ProcessNames};
use super::novelty::{image_of, Activity, Period};
use super::sockets::{edge_of, EdgeKey};
use super::{Edge, FlowFilter, HashMap, HashSet, NewExecutable, NewListener};
use crate::model::{CollectorIdentity, Direction, Event, Protocol, Record, Scope, Severity};

pub const HOUR: u64 = 3_600_000_000_000;

/// The start of the hour holding `t` (ns).
pub fn hour_of(t: u64) -> u64 {
    t - t % HOUR
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
    last: Option<Arc<CollectorIdentity>>,
}

impl Default for HourBuilder {
    fn default() -> Self {
        HourBuilder {
            period: Period::new(FlowFilter::default()),
            alerts: HashMap::default(),
            pods: HashSet::default(),
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
        let mut rows: HashMap<EdgeKey<Option<u64>>, EdgeRow> = HashMap::default();
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

// === Reading ===

/// Folds the pod-hours of a window (in hour order) into its [`Activity`].
pub struct Merger {
    since: u64,
    filter: FlowFilter,
    edges: HashMap<EdgeId, Edge>,
    executables: Vec<NewExecutable>,
    listeners: Vec<NewListener>,
    flows: u64,
    processes: u64,
    truncated: bool,
}

#[derive(PartialEq, Eq, Hash)]
struct EdgeId {
    pod_namespace: String,
    pod_name: String,
    comm: Vec<u8>,
    exe: Option<Vec<u8>>,
    unattributed: bool,
    direction: Direction,
    scope: Scope,
    protocol: Protocol,
    peer_addr: IpAddr,
    port: u16,
}

impl Merger {
    /// A window starting in the hour of `since` (rollups answer whole hours).
    pub fn new(since: u64, filter: FlowFilter) -> Merger {
        Merger {
            since: hour_of(since),
            filter,
            edges: HashMap::default(),
            executables: Vec::new(),
            listeners: Vec::new(),
            flows: 0,
            processes: 0,
            truncated: false,
        }
    }

    pub fn add(&mut self, hour: PodHour) {
        for row in hour.edges {
            if !self.filter.admits_edge(&row.edge) {
                continue;
            }
            // The socket's first hour in the window counts it, with its counters then;
            // its later hours add what they grew.
            let first = row.prev_hour.is_none_or(|p| p < self.since);
            let e = row.edge;
            let id = EdgeId {
                pod_namespace: e.pod_namespace.clone(),
                pod_name: e.pod_name.clone(),
                comm: e.comm.clone(),
                exe: e.exe.clone(),
                unattributed: e.unattributed,
                direction: e.direction,
                scope: e.scope,
                protocol: e.protocol,
                peer_addr: e.peer_addr,
                port: e.port,
            };
            let (connections, sent, received) = if first {
                (e.connections, e.bytes_sent, e.bytes_received)
            } else {
                (0, row.sent_delta, row.received_delta)
            };
            self.flows += connections;
            match self.edges.get_mut(&id) {
                Some(known) => {
                    known.connections += connections;
                    known.bytes_sent += sent;
                    known.bytes_received += received;
                    known.first_seen = known.first_seen.min(e.first_seen);
                    known.last_seen = known.last_seen.max(e.last_seen);
                    for pid in e.pids {
                        known.add_pid(pid);
                    }
                }
                None => {
                    self.edges.insert(
                        id,
                        Edge {
                            connections,
                            bytes_sent: sent,
                            bytes_received: received,
                            ..e
                        },
                    );
                }
            }
        }
        self.executables.extend(hour.executables);
        self.listeners.extend(hour.listeners);
        self.processes += hour.processes;
        self.truncated |= hour.truncated;
    }

    /// The window's activity, its east-west peers named by `pods`.
    pub fn finish(self, pods: &PodDirectory) -> Activity {
        let mut edges: Vec<Edge> = self.edges.into_values().collect();
        for e in &mut edges {
            if let Some((name, ns)) = pods.get(&e.peer_addr) {
                e.peer_pod_name = Some(name.clone());
                e.peer_pod_namespace = Some(ns.clone());
            }
            e.pids.sort_unstable();
        }
        let mut executables = self.executables;
        executables.sort_by_key(|x| x.first_seen);
        let mut seen = HashSet::default();
        executables.retain(|x| {
            seen.insert((
                x.pod_namespace.clone(),
                x.pod_name.clone(),
                image_of(&x.comm, &x.exe),
            ))
        });
        let mut listeners = self.listeners;
        listeners.sort_by_key(|l| l.first_seen);
        let mut seen = HashSet::default();
        listeners.retain(|l| {
            seen.insert((
                l.pod_namespace.clone(),
                l.pod_name.clone(),
                l.protocol,
                l.port,
            ))
        });
        Activity {
            edges,
            flows: self.flows,
            executables,
            listeners,
            processes: self.processes,
            truncated: self.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::investigate::test_support::{flow, identity, process};
    use crate::model::FlowPhase;

    fn event(source: &Arc<CollectorIdentity>, at: u64, record: Record) -> Event {
        Event {
            source: source.clone(),
            received_at: at,
            record,
        }
    }

    /// Raw and rollup activity over [since, until] of `events` (hour-aligned window).
    fn both(events: &[Event], since: u64, until: u64) -> (Activity, Activity) {
        let mut names = ProcessNames::default();
        for e in events {
            if let Record::Process(p) = &e.record {
                names.add(&e.source, p);
            }
        }
        let pods = PodDirectory::default();
        let mut raw = Period::new(FlowFilter::default());
        for e in events
            .iter()
            .filter(|e| (since..=until).contains(&e.received_at))
        {
            raw.add(e);
        }
        let raw = raw.activity(&names, &pods);
        let mut carry = Carry::new();
        let mut merger = Merger::new(since, FlowFilter::default());
        let last = events.iter().map(|e| e.received_at).max().unwrap_or(0);
        let mut hour = hour_of(events[0].received_at);
        while hour <= last {
            let mut builder = HourBuilder::default();
            for e in events.iter().filter(|e| hour_of(e.received_at) == hour) {
                builder.add(e);
            }
            let (rows, _) = builder.finish(hour, &names, &mut carry, 0);
            if hour >= since && hour <= until {
                for row in rows {
                    merger.add(row);
                }
            }
            hour += HOUR;
        }
        let mut rolled = merger.finish(&pods);
        rolled.edges.sort_by_key(|e| (e.port, e.exe.clone()));
        let mut raw = raw;
        raw.edges.sort_by_key(|e| (e.port, e.exe.clone()));
        (raw, rolled)
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
        let mut at = |h: u64, cookie: u64, phase: FlowPhase, sent: u64| {
            events.push(event(
                &web,
                h * HOUR + 100 + cookie,
                Record::Flow(flow(cookie, "203.0.113.7", 443, phase, sent)),
            ));
        };
        at(0, 1, FlowPhase::Start, 0);
        at(0, 1, FlowPhase::Update, 100);
        at(1, 1, FlowPhase::Update, 300);
        at(1, 2, FlowPhase::End, 40);
        at(2, 3, FlowPhase::Update, 500);
        at(3, 1, FlowPhase::End, 900);
        at(3, 3, FlowPhase::End, 0);
        for (from, to) in [(0, 0), (0, 3), (1, 1), (1, 2), (2, 3), (3, 3), (1, 3)] {
            let (raw, rolled) = both(&events, from * HOUR, (to + 1) * HOUR - 1);
            assert_eq!(raw.edges, rolled.edges, "hours {from}..={to}");
            assert_eq!(raw.flows, rolled.flows, "hours {from}..={to}");
            assert_eq!(raw.executables, rolled.executables, "hours {from}..={to}");
        }
        let (raw, _) = both(&events, 0, 4 * HOUR - 1);
        assert_eq!(raw.flows, 3);
        assert_eq!(raw.edges[0].bytes_sent, 900 + 40 + 500);
    }
}
