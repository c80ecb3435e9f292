//! A day's pod-hours folded into one pod-day each: what a window holding the whole day
//! would make of its 24 hours, in one row per edge instead of 24.
//!
//! An hour's rows are split by the hour their sockets were last seen before (`prev_hour`).
//! A day keeps that split for sockets coming from before the day (a window starting after
//! that hour counts only their growth), and folds every row whose previous hour is inside
//! the day into one row per edge with `prev_hour` = the day's start: a window holding the
//! whole day starts at or before it, so it counts those rows' growth alone, as it would
//! have hour by hour.

use std::net::IpAddr;

use super::{EdgeRow, HourStarts, PodAddress, PodHour};
use crate::investigate::novelty::image_of;
use crate::investigate::{HashMap, HashSet, MAX_EDGE_PIDS};
use crate::model::{Direction, Protocol, Scope, Severity};

type RowKey = (
    Vec<u8>,
    Option<Vec<u8>>,
    bool,
    Direction,
    Scope,
    Protocol,
    IpAddr,
    u16,
    Option<u64>,
);

#[derive(Default)]
struct PodDay {
    rows: HashMap<RowKey, EdgeRow>,
    /// Rows in the order they first came (answers do not depend on it; stored bytes do).
    order: Vec<RowKey>,
    day: PodHour,
    images: HashMap<Vec<u8>, usize>,
    ports: HashMap<(Protocol, u16), usize>,
    alerts: HashMap<(String, Severity), usize>,
}

/// The pod-days of the day starting at `day` from its pod-hours (in hour order), one per
/// pod, ordered by namespace and pod.
pub fn fold_day(day: u64, hours: impl IntoIterator<Item = PodHour>) -> Vec<PodHour> {
    let mut pods: HashMap<(String, String), PodDay> = HashMap::default();
    for hour in hours {
        let pod = pods
            .entry((hour.pod_namespace.clone(), hour.pod_name.clone()))
            .or_insert_with(|| PodDay {
                day: PodHour {
                    pod_namespace: hour.pod_namespace.clone(),
                    pod_name: hour.pod_name.clone(),
                    ..PodHour::default()
                },
                ..PodDay::default()
            });
        pod.add(day, hour);
    }
    let mut out: Vec<PodHour> = pods.into_values().map(PodDay::finish).collect();
    out.sort_by(|a, b| (&a.pod_namespace, &a.pod_name).cmp(&(&b.pod_namespace, &b.pod_name)));
    out
}

impl PodDay {
    fn add(&mut self, day: u64, hour: PodHour) {
        for row in hour.edges {
            // Sockets seen earlier in the day: only their growth counts in a whole day.
            let inside = row.prev_hour.is_some_and(|p| p >= day);
            let prev_hour = if inside { Some(day) } else { row.prev_hour };
            let e = &row.edge;
            let key = (
                e.comm.clone(),
                e.exe.clone(),
                e.unattributed,
                e.direction,
                e.scope,
                e.protocol,
                e.peer_addr,
                e.port,
                prev_hour,
            );
            if !self.rows.contains_key(&key) {
                self.order.push(key.clone());
            }
            let folded = self.rows.entry(key).or_insert_with(|| EdgeRow {
                edge: crate::investigate::Edge {
                    connections: 0,
                    bytes_sent: 0,
                    bytes_received: 0,
                    pids: Vec::new(),
                    ..row.edge.clone()
                },
                prev_hour,
                sent_delta: 0,
                received_delta: 0,
            });
            let f = &mut folded.edge;
            if inside {
                f.bytes_sent += row.sent_delta;
                f.bytes_received += row.received_delta;
            } else {
                f.connections += e.connections;
                f.bytes_sent += e.bytes_sent;
                f.bytes_received += e.bytes_received;
            }
            folded.sent_delta += row.sent_delta;
            folded.received_delta += row.received_delta;
            f.first_seen = f.first_seen.min(e.first_seen);
            f.last_seen = f.last_seen.max(e.last_seen);
            for &pid in &e.pids {
                if f.pids.len() < MAX_EDGE_PIDS && !f.pids.contains(&pid) {
                    f.pids.push(pid);
                }
            }
        }
        let d = &mut self.day;
        for x in hour.executables {
            keep_earliest(
                &mut self.images,
                &mut d.executables,
                image_of(&x.comm, &x.exe),
                x,
                |x| x.first_seen,
            );
        }
        for l in hour.listeners {
            keep_earliest(
                &mut self.ports,
                &mut d.listeners,
                (l.protocol, l.port),
                l,
                |l| l.first_seen,
            );
        }
        for a in hour.alerts {
            match self.alerts.get(&(a.rule_id.clone(), a.severity)) {
                Some(&i) => d.alerts[i].count += a.count,
                None => {
                    self.alerts
                        .insert((a.rule_id.clone(), a.severity), d.alerts.len());
                    d.alerts.push(a);
                }
            }
        }
        d.processes += hour.processes;
        d.truncated |= hour.truncated;
        d.starts.extend(hour.starts);
    }

    fn finish(mut self) -> PodHour {
        let mut rows = self.rows;
        self.day.edges = self
            .order
            .iter()
            .filter_map(|k| rows.remove(k))
            .map(|mut r| {
                r.edge.pids.sort_unstable();
                r
            })
            .collect();
        self.day.alerts.sort_by(|a, b| a.rule_id.cmp(&b.rule_id));
        self.day.starts.sort_by_key(|s: &HourStarts| s.hour);
        self.day
    }
}

/// Keeps in `kept` the earliest item of each key (the first to come among equals).
fn keep_earliest<K: std::hash::Hash + Eq, T>(
    index: &mut HashMap<K, usize>,
    kept: &mut Vec<T>,
    key: K,
    item: T,
    at: impl Fn(&T) -> u64,
) {
    match index.get(&key) {
        Some(&i) if at(&kept[i]) <= at(&item) => {}
        Some(&i) => kept[i] = item,
        None => {
            index.insert(key, kept.len());
            kept.push(item);
        }
    }
}

/// The pods seen in a day from its hours' (in hour order): each once, in the order they
/// first came, so a window naming peers from them names each address as the hours would.
pub fn fold_pods(hours: impl IntoIterator<Item = Vec<PodAddress>>) -> Vec<PodAddress> {
    let mut seen = HashSet::default();
    let mut out = Vec::new();
    for hour in hours {
        for p in hour {
            if seen.insert(p.clone()) {
                out.push(p);
            }
        }
    }
    out
}
