//! A window against its baseline, per workload: what is new (edges, executables,
//! listening ports) and which edges grew significantly.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::entities::{PodDirectory, ProcessNames};
use super::rollup::{hour_of, start_series, HourStarts, STARTS};
use super::sockets::{talkers_of, Rank, Sockets};
use super::{
    Edge, EdgeOrder, FlowFilter, HashMap, HashSet, NewActivity, NewExecutable, NewListener,
    Talkers, HOUR_NS, MAX_SOCKETS,
};
use crate::model::workload_of;
use crate::model::{
    CollectorIdentity, Direction, Event, FlowPhase, ListenerRecord, ProcessPhase, ProcessRecord,
    Protocol, Record, UnixNanos,
};

/// Collects, for one window, what "new" compares: edges, executables and listeners per
/// workload.
pub struct Period {
    pub sockets: Sockets,
    pub(super) processes: Vec<(Arc<CollectorIdentity>, ProcessRecord, UnixNanos)>,
    listeners: Vec<(Arc<CollectorIdentity>, ListenerRecord, UnixNanos)>,
    /// New connections and process starts per hour.
    starts: std::collections::BTreeMap<u64, [u64; STARTS]>,
    /// Process or listener records beyond the bound were left out.
    records_truncated: bool,
}

impl Period {
    pub fn new(filter: FlowFilter) -> Period {
        Period {
            sockets: Sockets::new(filter),
            processes: Vec::new(),
            listeners: Vec::new(),
            starts: std::collections::BTreeMap::new(),
            records_truncated: false,
        }
    }

    /// Something of the period was left out at the bound.
    pub fn truncated(&self) -> bool {
        self.sockets.truncated || self.records_truncated
    }

    /// Adds one event of the period; false once the bound is reached.
    pub fn add(&mut self, e: &Event) -> bool {
        if let Some(series) = start_series(&e.record) {
            self.starts.entry(hour_of(e.received_at)).or_default()[series] += 1;
        }
        match &e.record {
            Record::Flow(f) => self.sockets.add(&e.source, f),
            Record::Process(p) if p.phase != ProcessPhase::Exit => {
                if self.processes.len() >= MAX_SOCKETS {
                    self.records_truncated = true;
                    return false;
                }
                self.processes
                    .push((e.source.clone(), p.clone(), e.received_at));
                true
            }
            Record::Listener(l) if l.phase == FlowPhase::Start => {
                if self.listeners.len() >= MAX_SOCKETS {
                    self.records_truncated = true;
                    return false;
                }
                self.listeners
                    .push((e.source.clone(), l.clone(), e.received_at));
                true
            }
            _ => true,
        }
    }
}

/// What the questions need of one window, from raw records ([`Period::activity`]) or from
/// rollups alike: its edges, and the first record of each executable and listening port
/// per pod, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    pub edges: Vec<Edge>,
    /// Sockets the edges hold.
    pub flows: u64,
    pub executables: Vec<NewExecutable>,
    pub listeners: Vec<NewListener>,
    /// Process records (exits aside).
    pub processes: u64,
    pub truncated: bool,
    /// New connections and process starts per hour.
    pub starts: Vec<HourStarts>,
}

impl Period {
    /// The first process of each executable and the first listener of each port per pod,
    /// oldest first.
    pub(super) fn firsts(&self, names: &ProcessNames) -> (Vec<NewExecutable>, Vec<NewListener>) {
        let mut seen = HashSet::default();
        let mut executables: Vec<NewExecutable> = self
            .processes
            .iter()
            .filter(|(source, p, _)| {
                seen.insert((
                    source.pod_namespace.clone(),
                    source.pod_name.clone(),
                    image_of(&p.comm, &p.exe),
                ))
            })
            .map(|(source, p, received_at)| NewExecutable {
                pod_name: source.pod_name.clone(),
                pod_namespace: source.pod_namespace.clone(),
                comm: p.comm.clone(),
                exe: p.exe.clone(),
                first_seen: *received_at,
                process: p.clone(),
            })
            .collect();
        executables.sort_by_key(|x| x.first_seen);
        let mut seen = HashSet::default();
        let mut listeners: Vec<NewListener> = self
            .listeners
            .iter()
            .filter(|(source, l, _)| {
                seen.insert((
                    source.pod_namespace.clone(),
                    source.pod_name.clone(),
                    l.protocol,
                    l.local_port,
                ))
            })
            .map(|(source, l, received_at)| {
                let name = l
                    .pid
                    .zip(l.process_start_time)
                    .and_then(|(pid, start)| names.get(&source.collector_id, pid, start));
                NewListener {
                    pod_name: source.pod_name.clone(),
                    pod_namespace: source.pod_namespace.clone(),
                    protocol: l.protocol,
                    local_addr: l.local_addr,
                    port: l.local_port,
                    comm: name.map(|n| n.comm.clone()).unwrap_or_default(),
                    exe: name.and_then(|n| n.exe.clone()),
                    first_seen: *received_at,
                }
            })
            .collect();
        listeners.sort_by_key(|l| l.first_seen);
        (executables, listeners)
    }

    /// The period's activity: its sockets grouped into edges, the first process of each
    /// executable and the first listener of each port per pod.
    pub fn activity(&self, names: &ProcessNames, pods: &PodDirectory) -> Activity {
        let (executables, listeners) = self.firsts(names);
        Activity {
            edges: self.sockets.edges(names, pods),
            flows: self.sockets.len() as u64,
            executables,
            listeners,
            processes: self.processes.len() as u64,
            truncated: self.truncated(),
            starts: self
                .starts
                .iter()
                .map(|(&hour, &counts)| HourStarts { hour, counts })
                .collect(),
        }
    }
}

type WorkloadKey = (String, String);

fn workload_key(pod_namespace: &str, pod_name: &str) -> WorkloadKey {
    (pod_namespace.to_owned(), workload_of(pod_name).to_owned())
}

pub(super) fn image_of(comm: &[u8], exe: &Option<Vec<u8>>) -> Vec<u8> {
    exe.clone().unwrap_or_else(|| comm.to_vec())
}

/// A workload's key borrowed, to look it up without allocating. Hashes as the owned key
/// does: `&str` as `String`.
#[derive(Hash)]
struct WorkloadRef<'a>((&'a str, &'a str));

impl hashbrown::Equivalent<WorkloadKey> for WorkloadRef<'_> {
    fn equivalent(&self, key: &WorkloadKey) -> bool {
        self.0 == (key.0.as_str(), key.1.as_str())
    }
}

/// A baseline's edge within its workload: its image by its id in the baseline, direction,
/// peer and port. A day's baseline holds a million edges of a few thousand workloads and
/// images: keyed by their strings, building it was most of a `new` answer's time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EdgeKey {
    image: u32,
    direction: Direction,
    peer_addr: IpAddr,
    port: u16,
}

/// Hashed as one or two words, not field by field.
impl std::hash::Hash for EdgeKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let rest = u64::from(self.image) << 32 | u64::from(self.port) << 8 | self.direction as u64;
        match self.peer_addr {
            IpAddr::V4(a) => h.write_u128(u128::from(u32::from(a)) << 64 | u128::from(rest)),
            IpAddr::V6(a) => {
                h.write_u128(u128::from(a));
                h.write_u64(rest | 1 << 7);
            }
        }
    }
}

fn image_key(x: &NewExecutable) -> (WorkloadKey, Vec<u8>) {
    (
        workload_key(&x.pod_namespace, &x.pod_name),
        image_of(&x.comm, &x.exe),
    )
}

fn listener_key(l: &NewListener) -> (WorkloadKey, Protocol, u16) {
    (
        workload_key(&l.pod_namespace, &l.pod_name),
        l.protocol,
        l.port,
    )
}

/// What "new" and "increased" need from a baseline period, per workload: its edges with
/// their bytes, its executables and its listening ports. Small (one entry per distinct
/// edge, not per socket), so a baseline wholly in the past can be kept and reused.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    /// Ids of the workloads and images its edges name.
    workloads: hashbrown::HashMap<WorkloadKey, u32, foldhash::fast::RandomState>,
    names: hashbrown::HashMap<Vec<u8>, u32, foldhash::fast::RandomState>,
    /// Per workload id, its edges: a table each, sized from what is merged into it (one
    /// table of a day's million edges was most of a first `new`'s baseline, in page faults
    /// on its fresh memory; a workload's table takes the memory its pods' merge just freed).
    edges: Vec<HashMap<EdgeKey, u64>>,
    images: HashSet<(WorkloadKey, Vec<u8>)>,
    ports: HashSet<(WorkloadKey, Protocol, u16)>,
    flows: u64,
    processes: u64,
    truncated: bool,
    /// The baseline of the rest of the period, kept apart ([`Baseline::atop`]); its
    /// totals are in this one's.
    under: Option<Arc<Baseline>>,
}

impl Baseline {
    pub fn of(period: &Activity) -> Baseline {
        let mut baseline = Baseline::default();
        for e in &period.edges {
            let workload = baseline.workload(&e.pod_namespace, &e.pod_name);
            let image = baseline.image(e.exe.as_deref().unwrap_or(&e.comm));
            baseline.edge(
                (workload, image),
                (e.direction, e.peer_addr, e.port),
                e.bytes_sent + e.bytes_received,
            );
        }
        baseline.rest(period);
        baseline
    }

    /// Makes room for `edges` more edges of `workload` (sized at once: a day's baseline
    /// holds a million edges, and growing the tables step by step rehashed every key again
    /// and again).
    pub(in crate::investigate) fn reserve(&mut self, workload: u32, edges: usize) {
        if let Some(table) = self.edges.get_mut(workload as usize) {
            table.reserve(edges);
        }
    }

    /// The id of the workload of `pod_name`.
    pub(in crate::investigate) fn workload(&mut self, namespace: &str, pod_name: &str) -> u32 {
        let workload = workload_of(pod_name);
        if let Some(&id) = self.workloads.get(&WorkloadRef((namespace, workload))) {
            return id;
        }
        let id = self.workloads.len() as u32;
        self.workloads
            .insert((namespace.to_owned(), workload.to_owned()), id);
        self.edges.push(HashMap::default());
        id
    }

    /// The id of an image (an exe, or a comm without one).
    pub(in crate::investigate) fn image(&mut self, image: &[u8]) -> u32 {
        if let Some(&id) = self.names.get(image) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.insert(image.to_vec(), id);
        id
    }

    /// Adds `bytes` of an edge of a workload's image (ids from this baseline).
    pub(in crate::investigate) fn edge(
        &mut self,
        (workload, image): (u32, u32),
        (direction, peer_addr, port): (Direction, IpAddr, u16),
        bytes: u64,
    ) {
        let key = EdgeKey {
            image,
            direction,
            peer_addr,
            port,
        };
        if let Some(table) = self.edges.get_mut(workload as usize) {
            *table.entry(key).or_default() += bytes;
        }
    }

    /// Takes the period's executables, listening ports and totals (its edges aside).
    pub(in crate::investigate) fn rest(&mut self, period: &Activity) {
        self.images = period.executables.iter().map(image_key).collect();
        self.ports = period.listeners.iter().map(listener_key).collect();
        self.flows = period.flows;
        self.processes = period.processes;
        self.truncated = period.truncated;
    }

    /// This baseline of a part of a period over `under`, the baseline of the rest of it
    /// (built apart, shared): they answer together as the baseline of the whole period
    /// would (an edge's bytes add up, executables and listening ports are either's).
    pub fn atop(mut self, under: Arc<Baseline>) -> Baseline {
        self.flows += under.flows;
        self.processes += under.processes;
        self.truncated |= under.truncated;
        self.under = Some(under);
        self
    }

    /// The bytes of the window's `e` in the baseline (per workload), if it was there.
    fn bytes_of(&self, e: &Edge) -> Option<u64> {
        let own = self.own_bytes_of(e);
        match self.under.as_ref().and_then(|u| u.bytes_of(e)) {
            Some(under) => Some(own.unwrap_or(0) + under),
            None => own,
        }
    }

    fn has_image(&self, key: &(WorkloadKey, Vec<u8>)) -> bool {
        self.images.contains(key) || self.under.as_ref().is_some_and(|u| u.has_image(key))
    }

    fn has_port(&self, key: &(WorkloadKey, Protocol, u16)) -> bool {
        self.ports.contains(key) || self.under.as_ref().is_some_and(|u| u.has_port(key))
    }

    fn own_bytes_of(&self, e: &Edge) -> Option<u64> {
        let workload = *self
            .workloads
            .get(&WorkloadRef((&e.pod_namespace, workload_of(&e.pod_name))))?;
        let image = *self.names.get(e.exe.as_deref().unwrap_or(&e.comm))?;
        self.edges
            .get(workload as usize)?
            .get(&EdgeKey {
                image,
                direction: e.direction,
                peer_addr: e.peer_addr,
                port: e.port,
            })
            .copied()
    }
}

#[cfg(test)]
impl Baseline {
    /// What it holds, edges by their strings: baselines built apart, compared.
    #[allow(clippy::type_complexity)]
    pub(crate) fn summary(
        &self,
    ) -> (
        std::collections::HashMap<(WorkloadKey, Vec<u8>, Direction, IpAddr, u16), u64>,
        HashSet<(WorkloadKey, Vec<u8>)>,
        HashSet<(WorkloadKey, Protocol, u16)>,
        (u64, u64, bool),
    ) {
        fn by_id<K>(
            ids: &hashbrown::HashMap<K, u32, foldhash::fast::RandomState>,
        ) -> std::collections::HashMap<u32, &K> {
            ids.iter().map(|(k, &id)| (id, k)).collect()
        }
        let (workloads, names) = (by_id(&self.workloads), by_id(&self.names));
        let (mut edges, mut images, mut ports, _) = match &self.under {
            Some(under) => under.summary(),
            None => Default::default(),
        };
        let own = self.edges.iter().enumerate().flat_map(|(workload, edges)| {
            edges
                .iter()
                .map(move |(k, &bytes)| (workload as u32, k, bytes))
        });
        let own = own.map(|(workload, k, bytes)| {
            let workload: &WorkloadKey = workloads[&workload];
            let image: &Vec<u8> = names[&k.image];
            (
                (
                    workload.clone(),
                    image.clone(),
                    k.direction,
                    k.peer_addr,
                    k.port,
                ),
                bytes,
            )
        });
        for (key, bytes) in own {
            *edges.entry(key).or_default() += bytes;
        }
        images.extend(self.images.iter().cloned());
        ports.extend(self.ports.iter().cloned());
        (
            edges,
            images,
            ports,
            (self.flows, self.processes, self.truncated),
        )
    }
}

/// What `window` holds that `baseline` does not, per workload: peers (by executable,
/// direction, address and port), executables and listening ports.
/// An edge's place among equals: its figures, then its whole identity ([`Rank`]).
fn identity(e: &Edge) -> Rank<'_> {
    Rank::of_edge(e, EdgeOrder::Bytes)
}

pub fn new_activity(baseline: &Baseline, window: &Activity, limit: usize) -> NewActivity {
    let mut edges: Vec<Edge> = window
        .edges
        .iter()
        .filter(|e| baseline.bytes_of(e).is_none())
        .cloned()
        .collect();
    // Ties (the sockets of one dump share a first sight) broken by the edge's identity:
    // which edges make the cut must not hang on the order the merge produced them in.
    edges.sort_by(|a, b| {
        a.first_seen
            .cmp(&b.first_seen)
            .then_with(|| identity(a).cmp(&identity(b)))
    });
    edges.truncate(limit);

    let mut seen = HashSet::default();
    let mut executables: Vec<NewExecutable> = window
        .executables
        .iter()
        .filter(|x| {
            let key = image_key(x);
            !baseline.has_image(&key) && seen.insert(key)
        })
        .cloned()
        .collect();
    executables.truncate(limit);

    let mut seen = HashSet::default();
    let mut listeners: Vec<NewListener> = window
        .listeners
        .iter()
        .filter(|l| {
            let key = listener_key(l);
            !baseline.has_port(&key) && seen.insert(key)
        })
        .cloned()
        .collect();
    listeners.truncate(limit);

    NewActivity {
        edges,
        executables,
        listeners,
        baseline_flows: baseline.flows,
        baseline_processes: baseline.processes,
        truncated: baseline.truncated || window.truncated,
    }
}

/// An edge that moved significantly more in the window than in its baseline, per hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Increase {
    /// The window's edge (its bytes are the window's).
    pub edge: Edge,
    /// Bytes per hour, sent and received together.
    pub baseline_per_hour: f64,
    pub window_per_hour: f64,
}

/// A window against its baseline: who talked, what is new, what grew.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Comparison {
    pub talkers: Talkers,
    pub new: NewActivity,
    pub increased: Vec<Increase>,
    /// The window's new connections and process starts per hour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub starts: Vec<HourStarts>,
}

/// "Significantly increased", as in Detective's "changed significantly": at least this many
/// times the baseline's hourly rate, and at least [`MIN_INCREASE_BYTES`] above what that rate
/// predicts for the window (so a few kilobytes more on a quiet edge is not news).
pub const INCREASE_FACTOR: f64 = 3.0;
pub const MIN_INCREASE_BYTES: f64 = 1024.0 * 1024.0;

/// The window's talkers, what it holds that the baseline does not, and the edges (compared
/// per workload, like "new") whose hourly volume grew significantly. `spans` are the
/// baseline's and the window's lengths in ns.
pub fn compare(
    baseline: &Baseline,
    window: &Activity,
    limit: usize,
    spans: (u64, u64),
) -> Comparison {
    let new = new_activity(baseline, window, limit);
    let edges = &window.edges;
    let hours = |span: u64| (span as f64 / HOUR_NS).max(1.0);
    let (baseline_hours, window_hours) = (hours(spans.0), hours(spans.1));
    let mut increased: Vec<Increase> = edges
        .iter()
        .filter_map(|edge| {
            let before = baseline.bytes_of(edge)? as f64 / baseline_hours;
            let bytes = (edge.bytes_sent + edge.bytes_received) as f64;
            let now = bytes / window_hours;
            let significant = now >= before * INCREASE_FACTOR
                && bytes - before * window_hours >= MIN_INCREASE_BYTES;
            significant.then(|| Increase {
                edge: edge.clone(),
                baseline_per_hour: before,
                window_per_hour: now,
            })
        })
        .collect();
    increased.sort_by(|a, b| {
        let excess = |i: &Increase| i.window_per_hour - i.baseline_per_hour;
        excess(b)
            .total_cmp(&excess(a))
            .then_with(|| identity(&a.edge).cmp(&identity(&b.edge)))
    });
    increased.truncate(limit);
    let talkers = talkers_of(
        edges,
        window.flows,
        window.truncated,
        EdgeOrder::Bytes,
        limit,
    );
    Comparison {
        talkers,
        new,
        increased,
        starts: window.starts.clone(),
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::investigate::test_support::{event, flow, identity, process};
    use crate::model::{Attribution, Family};

    /// One pod's curl talking to 203.0.113.7:443, one connection of 20 bytes.
    fn curl_edge() -> Edge {
        Edge {
            pod_name: "web-6d8f9c7b5-x2k4q".into(),
            pod_namespace: "shop".into(),
            comm: b"curl".to_vec(),
            exe: None,
            direction: Direction::Outbound,
            scope: crate::model::Scope::NorthSouth,
            protocol: Protocol::Tcp,
            peer_addr: "203.0.113.7".parse().expect("ip"),
            port: 443,
            peer_pod_name: None,
            peer_pod_namespace: None,
            connections: 1,
            bytes_sent: 10,
            bytes_received: 10,
            first_seen: 1,
            last_seen: 1,
            pids: Vec::new(),
            unattributed: false,
        }
    }

    #[test]
    fn a_baseline_finds_an_edge_by_workload_image_peer_and_port() {
        let mut edge = curl_edge();
        for exe in [None, Some(b"/usr/bin/curl".to_vec())] {
            edge.exe = exe;
            // Two pods of the workload, one edge each: one baseline edge of their sum.
            let baseline = Baseline::of(&Activity {
                edges: vec![
                    edge.clone(),
                    Edge {
                        pod_name: "web-6d8f9c7b5-q8w2z".into(),
                        bytes_sent: 5,
                        ..edge.clone()
                    },
                ],
                ..Activity::default()
            });
            assert_eq!(baseline.bytes_of(&edge), Some(35), "{:?}", edge.exe);
            let another_pod = Edge {
                pod_name: "web-6d8f9c7b5-zz9q2".into(),
                ..edge.clone()
            };
            assert_eq!(baseline.bytes_of(&another_pod), Some(35), "same workload");
            let misses = [
                Edge {
                    port: 444,
                    ..edge.clone()
                },
                Edge {
                    pod_name: "api-6d8f9c7b5-x2k4q".into(),
                    ..edge.clone()
                },
                Edge {
                    pod_namespace: "other".into(),
                    ..edge.clone()
                },
                Edge {
                    comm: b"wget".to_vec(),
                    exe: edge.exe.as_ref().map(|_| b"/usr/bin/wget".to_vec()),
                    ..edge.clone()
                },
                Edge {
                    direction: Direction::Inbound,
                    ..edge.clone()
                },
                Edge {
                    peer_addr: "203.0.113.8".parse().expect("ip"),
                    ..edge.clone()
                },
            ];
            for miss in misses {
                assert_eq!(baseline.bytes_of(&miss), None, "{miss:?}");
            }
        }
        // The image is the exe, or the comm without one.
        let by_comm = Baseline::of(&Activity {
            edges: vec![Edge {
                comm: b"/usr/bin/curl".to_vec(),
                exe: None,
                ..edge.clone()
            }],
            ..Activity::default()
        });
        assert_eq!(by_comm.bytes_of(&edge), Some(20));
    }

    #[test]
    fn new_edges_tied_on_first_sight_make_the_cut_whatever_the_merge_order() {
        let edge = |port: u16| Edge {
            port,
            first_seen: 5,
            ..curl_edge()
        };
        let baseline = Baseline::of(&Activity::default());
        let cut = |edges: Vec<Edge>| {
            let window = Activity {
                edges,
                ..Activity::default()
            };
            new_activity(&baseline, &window, 1).edges
        };
        assert_eq!(
            cut(vec![edge(443), edge(80)]),
            cut(vec![edge(80), edge(443)])
        );
    }

    #[test]
    fn new_activity_compares_workloads_not_pods() {
        let old_pod = identity("c1", "web-6d8f9c7b5-x2k4q", "10.0.0.5");
        let new_pod = identity("c2", "web-6d8f9c7b5-q8w2z", "10.0.0.6");
        let mut names = ProcessNames::default();
        names.add(&old_pod, &process(7, 70, 1, 10, "/usr/bin/curl"));
        names.add(&new_pod, &process(7, 70, 1, 10, "/usr/bin/curl"));
        let mut baseline = Period::new(FlowFilter::default());
        baseline.add(&event(
            &old_pod,
            100,
            Record::Flow(flow(1, "203.0.113.7", 443, FlowPhase::End, 10)),
        ));
        baseline.add(&event(
            &old_pod,
            100,
            Record::Process(process(7, 70, 1, 10, "/usr/bin/curl")),
        ));
        let mut window = Period::new(FlowFilter::default());
        // The replacement pod repeats what the old one did: nothing new.
        window.add(&event(
            &new_pod,
            200,
            Record::Flow(flow(2, "203.0.113.7", 443, FlowPhase::End, 10)),
        ));
        window.add(&event(
            &new_pod,
            200,
            Record::Process(process(7, 70, 1, 10, "/usr/bin/curl")),
        ));
        // ... and something it never did.
        window.add(&event(
            &new_pod,
            300,
            Record::Flow(flow(3, "198.51.100.1", 4444, FlowPhase::End, 10)),
        ));
        window.add(&event(
            &new_pod,
            300,
            Record::Process(process(8, 80, 7, 70, "/tmp/x")),
        ));
        let mut listener = crate::model::ListenerRecord {
            cookie: 11,
            protocol: Protocol::Tcp,
            family: Family::Ipv4,
            local_addr: "0.0.0.0".parse().expect("ip"),
            local_port: 2222,
            phase: FlowPhase::Start,
            preexisting: false,
            first_seen: 300,
            ended_at: None,
            uid: Some(1000),
            inode: Some(11),
            pid: Some(7),
            process_start_time: Some(70),
            attribution: Attribution::Fd,
            backlog: Some(128),
            packet: None,
        };
        window.add(&event(&new_pod, 310, Record::Listener(listener.clone())));
        listener.phase = FlowPhase::End;
        window.add(&event(&new_pod, 320, Record::Listener(listener)));

        let pods = PodDirectory::default();
        let baseline = Baseline::of(&baseline.activity(&names, &pods));
        let new = new_activity(&baseline, &window.activity(&names, &pods), 10);
        assert_eq!(new.edges.len(), 1);
        assert_eq!(
            (new.edges[0].port, new.edges[0].pod_name.as_str()),
            (4444, "web-6d8f9c7b5-q8w2z")
        );
        assert_eq!(new.executables.len(), 1);
        assert_eq!(new.executables[0].exe.as_deref(), Some(&b"/tmp/x"[..]));
        assert_eq!(
            new.listeners.len(),
            1,
            "a listener's END is not a second listener"
        );
        assert_eq!(new.listeners[0].port, 2222);
        assert_eq!(new.listeners[0].exe.as_deref(), Some(&b"/usr/bin/curl"[..]));
        assert_eq!((new.baseline_flows, new.baseline_processes), (1, 1));
    }

    #[test]
    fn an_edge_counts_as_increased_only_well_above_its_baseline_rate() {
        let pod = identity("c1", "web-0", "10.0.0.5");
        let names = ProcessNames::default();
        let pods = PodDirectory::default();
        let mb = 1024 * 1024;
        let mut baseline = Period::new(FlowFilter::default());
        let mut window = Period::new(FlowFilter::default());
        // Baseline: 10 hours; each edge moved 10 MiB (1 MiB an hour).
        for (cookie, port) in [(1, 443), (2, 5432), (3, 9000)] {
            baseline.add(&event(
                &pod,
                100,
                Record::Flow(flow(cookie, "203.0.113.7", port, FlowPhase::End, 10 * mb)),
            ));
        }
        // Window: 1 hour. Port 443 at 8 MiB/h (x8: increased), 5432 at 2 MiB/h (x2: not),
        // 9000 gone, 8080 new (new, not increased).
        let mut add = |cookie: u64, port: u16, sent: u64| {
            window.add(&event(
                &pod,
                200,
                Record::Flow(flow(cookie, "203.0.113.7", port, FlowPhase::End, sent)),
            ));
        };
        add(11, 443, 8 * mb);
        add(12, 5432, 2 * mb);
        add(13, 8080, 50 * mb);
        let hour = 3_600_000_000_000;
        let baseline = Baseline::of(&baseline.activity(&names, &pods));
        let window = window.activity(&names, &pods);
        let answer = compare(&baseline, &window, 10, (10 * hour, hour));
        let increased: Vec<u16> = answer.increased.iter().map(|i| i.edge.port).collect();
        assert_eq!(increased, vec![443]);
        // Each flow sends `sent` and receives half of it.
        assert!((answer.increased[0].baseline_per_hour - 1.5 * mb as f64).abs() < 1.0);
        assert!((answer.increased[0].window_per_hour - 12.0 * mb as f64).abs() < 1.0);
        assert_eq!(answer.new.edges.len(), 1);
        assert_eq!(answer.new.edges[0].port, 8080);
        assert_eq!(answer.talkers.edges[0].port, 8080, "talkers by bytes");
    }
}
