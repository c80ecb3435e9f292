//! Investigation over stored events, in the style of a behavior graph: the entities are
//! workloads (pods), processes (by executable) and remote endpoints; the edges are their
//! connections over a window. Answers "who talked to whom", "what is loud", "what is new"
//! and "which process tree did this".
//!
//! Pure code over events: `aggregator::investigate::Investigator` feeds it from the store
//! for both of its faces (the gRPC service and the web console); `wire` carries the answers.

pub mod api;

// Answers hash every socket of a window (hundreds of thousands) several times: foldhash,
// not SipHash (the keys are the store's own records, already past the ingest checks).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::workload_of;
use crate::model::{
    escaped_bytes, escaped_bytes_opt, Ancestor, Attribution, CollectorIdentity, Direction, Event,
    FlowPhase, FlowRecord, ListenerRecord, ProcessPhase, ProcessRecord, Protocol, Record, Scope,
    UnixNanos,
};

/// Distinct sockets one answer may hold in memory; beyond it the answer is marked truncated.
pub const MAX_SOCKETS: usize = 2_000_000;
/// Processes one tree may hold.
pub const MAX_TREE_NODES: usize = 10_000;
const MAX_EDGE_PIDS: usize = 16;

/// One executable of one pod talking to one peer on one port, over a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    pub pod_name: String,
    pub pod_namespace: String,
    #[serde(with = "escaped_bytes")]
    pub comm: Vec<u8>,
    #[serde(with = "escaped_bytes_opt", default)]
    pub exe: Option<Vec<u8>>,
    pub direction: Direction,
    pub scope: Scope,
    pub protocol: Protocol,
    pub peer_addr: IpAddr,
    /// The peer's port for outbound flows, the local (service) port for inbound ones.
    pub port: u16,
    pub peer_pod_name: Option<String>,
    pub peer_pod_namespace: Option<String>,
    pub connections: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub first_seen: UnixNanos,
    pub last_seen: UnixNanos,
    pub pids: Vec<u32>,
    /// No socket of the edge was tied to a process.
    pub unattributed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EdgeOrder {
    #[default]
    Bytes,
    Connections,
    Recent,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Talkers {
    pub edges: Vec<Edge>,
    pub flows: u64,
    pub total_edges: u64,
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewExecutable {
    pub pod_name: String,
    pub pod_namespace: String,
    #[serde(with = "escaped_bytes")]
    pub comm: Vec<u8>,
    #[serde(with = "escaped_bytes_opt", default)]
    pub exe: Option<Vec<u8>>,
    pub first_seen: UnixNanos,
    pub process: ProcessRecord,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewListener {
    pub pod_name: String,
    pub pod_namespace: String,
    pub protocol: Protocol,
    pub local_addr: IpAddr,
    pub port: u16,
    #[serde(with = "escaped_bytes")]
    pub comm: Vec<u8>,
    #[serde(with = "escaped_bytes_opt", default)]
    pub exe: Option<Vec<u8>>,
    pub first_seen: UnixNanos,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NewActivity {
    pub edges: Vec<Edge>,
    pub executables: Vec<NewExecutable>,
    pub listeners: Vec<NewListener>,
    pub baseline_flows: u64,
    pub baseline_processes: u64,
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeNode {
    pub process: ProcessRecord,
    pub depth: u32,
    pub flows: Vec<FlowRecord>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcessTree {
    pub ancestors: Vec<Ancestor>,
    pub nodes: Vec<TreeNode>,
    pub truncated: bool,
}

/// Which flows a question looks at (pods, namespaces and time are the store's filter).
#[derive(Debug, Clone, Default)]
pub struct FlowFilter {
    pub scopes: Vec<Scope>,
    pub directions: Vec<Direction>,
}

impl FlowFilter {
    fn admits(&self, f: &FlowRecord) -> bool {
        (self.scopes.is_empty() || self.scopes.contains(&f.scope))
            && (self.directions.is_empty() || self.directions.contains(&f.direction))
    }
}

// === Entities ===

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ProcessName {
    comm: Vec<u8>,
    exe: Option<Vec<u8>>,
}

/// Process names by collector and (pid, start time), from process records; the latest image
/// wins, so a process that exec'd is named by what it became.
#[derive(Default)]
pub struct ProcessNames {
    by_collector: HashMap<String, HashMap<(u32, UnixNanos), ProcessName>>,
}

/// An EXIT record may come without what the process showed alive (exe, argv and ancestors
/// are read while it runs): the live value stays.
fn keep_if_exit_lacks<T: Default + PartialEq>(update: &ProcessRecord, field: &mut T, live: T) {
    if update.phase == ProcessPhase::Exit && *field == T::default() {
        *field = live;
    }
}

impl ProcessNames {
    pub fn add(&mut self, source: &CollectorIdentity, p: &ProcessRecord) {
        let names = self
            .by_collector
            .entry(source.collector_id.clone())
            .or_default();
        let key = (p.pid, p.start_time);
        let mut name = ProcessName {
            comm: p.comm.clone(),
            exe: p.exe.clone(),
        };
        if let Some(live) = names.remove(&key) {
            keep_if_exit_lacks(p, &mut name.exe, live.exe);
        }
        names.insert(key, name);
    }

    fn get(&self, collector_id: &str, pid: u32, start_time: UnixNanos) -> Option<&ProcessName> {
        self.by_collector.get(collector_id)?.get(&(pid, start_time))
    }
}

/// Pods by IP, from the identities of the collectors that reported, so an east-west peer is
/// named by its pod.
#[derive(Default)]
pub struct PodDirectory {
    by_ip: HashMap<IpAddr, (String, String)>,
    last: Option<Arc<CollectorIdentity>>,
}

impl PodDirectory {
    /// [`PodDirectory::note`], once per run of events sharing one identity (a segment's).
    pub fn note_source(&mut self, source: &Arc<CollectorIdentity>) {
        if self
            .last
            .as_ref()
            .is_some_and(|last| Arc::ptr_eq(last, source))
        {
            return;
        }
        self.note(source);
        self.last = Some(source.clone());
    }

    pub fn note(&mut self, source: &CollectorIdentity) {
        if let Ok(ip) = source.pod_ip.parse::<IpAddr>() {
            if !ip.is_loopback() && !ip.is_unspecified() {
                self.by_ip
                    .entry(ip)
                    .or_insert_with(|| (source.pod_name.clone(), source.pod_namespace.clone()));
            }
        }
    }

    fn get(&self, ip: &IpAddr) -> Option<&(String, String)> {
        self.by_ip.get(ip)
    }
}

// === Sockets ===

/// What an edge needs from one socket: its last counters in the window.
struct SocketSummary {
    process: Option<(u32, UnixNanos)>,
    by_fd: bool,
    direction: Direction,
    scope: Scope,
    protocol: Protocol,
    peer_addr: IpAddr,
    port: u16,
    bytes_sent: u64,
    bytes_received: u64,
    first_seen: UnixNanos,
    last_seen: UnixNanos,
}

/// The sockets of a window, one summary per (collector, cookie), whatever number of
/// START/UPDATE/END records each has.
#[derive(Default)]
pub struct Sockets {
    filter: FlowFilter,
    /// Per collector (its first identity names its pod), the sockets by cookie.
    collectors: Vec<(Arc<CollectorIdentity>, HashMap<u64, SocketSummary>)>,
    index: HashMap<String, usize>,
    /// The last source seen: a store scan hands over a segment's events with one shared
    /// identity, so most records find their collector without hashing its id.
    last: Option<(Arc<CollectorIdentity>, usize)>,
    count: usize,
    pub truncated: bool,
}

impl Sockets {
    pub fn new(filter: FlowFilter) -> Sockets {
        Sockets {
            filter,
            ..Sockets::default()
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn collector(&mut self, source: &Arc<CollectorIdentity>) -> usize {
        if let Some((last, i)) = &self.last {
            if Arc::ptr_eq(last, source) {
                return *i;
            }
        }
        let i = match self.index.get(&source.collector_id) {
            Some(&i) => i,
            None => {
                self.collectors.push((source.clone(), HashMap::default()));
                self.index
                    .insert(source.collector_id.clone(), self.collectors.len() - 1);
                self.collectors.len() - 1
            }
        };
        self.last = Some((source.clone(), i));
        i
    }

    /// Adds one flow record; false once the bound is reached (the caller stops scanning).
    pub fn add(&mut self, source: &Arc<CollectorIdentity>, f: &FlowRecord) -> bool {
        // An unconnected UDP socket has no peer: it talked to no one we can name.
        let (Some(peer_addr), Some(remote_port)) = (f.remote_addr, f.remote_port) else {
            return true;
        };
        if !self.filter.admits(f) {
            return true;
        }
        let collector = self.collector(source);
        let sockets = &mut self.collectors[collector].1;
        let process = f.pid.zip(f.process_start_time);
        let last_seen = f.ended_at.unwrap_or(f.last_seen).max(f.last_seen);
        if let Some(known) = sockets.get_mut(&f.cookie) {
            // Counters only grow over a socket's life, except that a reset zeroes them in
            // the kernel before the END: keep the largest.
            known.bytes_sent = known.bytes_sent.max(f.bytes_sent.unwrap_or(0));
            known.bytes_received = known.bytes_received.max(f.bytes_received.unwrap_or(0));
            known.first_seen = known.first_seen.min(f.first_seen);
            known.last_seen = known.last_seen.max(last_seen);
            // A later record may carry a better owner: the collector attributes again a
            // socket it first announced without its fd owner.
            let by_fd = f.attribution == Attribution::Fd;
            if process.is_some() && (known.process.is_none() || (by_fd && !known.by_fd)) {
                known.process = process;
                known.by_fd = by_fd;
            }
            if known.direction == Direction::Unknown {
                known.direction = f.direction;
            }
            return true;
        }
        if self.count >= MAX_SOCKETS {
            self.truncated = true;
            return false;
        }
        let port = if f.direction == Direction::Inbound {
            f.local_port
        } else {
            remote_port
        };
        sockets.insert(
            f.cookie,
            SocketSummary {
                process,
                by_fd: f.attribution == Attribution::Fd,
                direction: f.direction,
                scope: f.scope,
                protocol: f.protocol,
                peer_addr,
                port,
                bytes_sent: f.bytes_sent.unwrap_or(0),
                bytes_received: f.bytes_received.unwrap_or(0),
                first_seen: f.first_seen,
                last_seen,
            },
        );
        self.count += 1;
        true
    }

    /// The sockets grouped into edges (unordered).
    pub fn edges(&self, names: &ProcessNames, pods: &PodDirectory) -> Vec<Edge> {
        #[derive(PartialEq, Eq, Hash)]
        struct Key<'a> {
            pod_name: &'a str,
            pod_namespace: &'a str,
            name: Option<&'a ProcessName>,
            direction: Direction,
            scope: Scope,
            protocol: Protocol,
            peer_addr: IpAddr,
            port: u16,
        }
        let mut edges: HashMap<Key, Edge> = HashMap::default();
        for (source, sockets) in &self.collectors {
            for s in sockets.values() {
                let name = s
                    .process
                    .and_then(|(pid, start)| names.get(&source.collector_id, pid, start));
                let key = Key {
                    pod_name: &source.pod_name,
                    pod_namespace: &source.pod_namespace,
                    name,
                    direction: s.direction,
                    scope: s.scope,
                    protocol: s.protocol,
                    peer_addr: s.peer_addr,
                    port: s.port,
                };
                let edge = edges.entry(key).or_insert_with(|| {
                    let peer = pods.get(&s.peer_addr);
                    Edge {
                        pod_name: source.pod_name.clone(),
                        pod_namespace: source.pod_namespace.clone(),
                        comm: name.map(|n| n.comm.clone()).unwrap_or_default(),
                        exe: name.and_then(|n| n.exe.clone()),
                        direction: s.direction,
                        scope: s.scope,
                        protocol: s.protocol,
                        peer_addr: s.peer_addr,
                        port: s.port,
                        peer_pod_name: peer.map(|p| p.0.clone()),
                        peer_pod_namespace: peer.map(|p| p.1.clone()),
                        connections: 0,
                        bytes_sent: 0,
                        bytes_received: 0,
                        first_seen: s.first_seen,
                        last_seen: s.last_seen,
                        pids: Vec::new(),
                        unattributed: name.is_none(),
                    }
                });
                edge.connections += 1;
                edge.bytes_sent += s.bytes_sent;
                edge.bytes_received += s.bytes_received;
                edge.first_seen = edge.first_seen.min(s.first_seen);
                edge.last_seen = edge.last_seen.max(s.last_seen);
                if let Some((pid, _)) = s.process {
                    if edge.pids.len() < MAX_EDGE_PIDS && !edge.pids.contains(&pid) {
                        edge.pids.push(pid);
                    }
                }
            }
        }
        let mut out: Vec<Edge> = edges.into_values().collect();
        for e in &mut out {
            e.pids.sort_unstable();
        }
        out
    }
}

/// Who talked to whom, the top `limit` edges by `order`.
pub fn talkers(
    sockets: &Sockets,
    names: &ProcessNames,
    pods: &PodDirectory,
    order: EdgeOrder,
    limit: usize,
) -> Talkers {
    talkers_of(sockets.edges(names, pods), sockets, order, limit)
}

/// [`talkers`] from the sockets' edges, already grouped.
fn talkers_of(mut edges: Vec<Edge>, sockets: &Sockets, order: EdgeOrder, limit: usize) -> Talkers {
    let total_edges = edges.len() as u64;
    sort_edges(&mut edges, order);
    edges.truncate(limit);
    Talkers {
        edges,
        flows: sockets.len() as u64,
        total_edges,
        truncated: sockets.truncated,
    }
}

fn sort_edges(edges: &mut [Edge], order: EdgeOrder) {
    // Ties broken by the edge's identity so answers are stable.
    let identity = |e: &Edge| {
        (
            e.pod_namespace.clone(),
            e.pod_name.clone(),
            e.peer_addr,
            e.port,
        )
    };
    match order {
        EdgeOrder::Bytes => edges.sort_by(|a, b| {
            (b.bytes_sent + b.bytes_received)
                .cmp(&(a.bytes_sent + a.bytes_received))
                .then_with(|| identity(a).cmp(&identity(b)))
        }),
        EdgeOrder::Connections => edges.sort_by(|a, b| {
            b.connections
                .cmp(&a.connections)
                .then_with(|| identity(a).cmp(&identity(b)))
        }),
        EdgeOrder::Recent => edges.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| identity(a).cmp(&identity(b)))
        }),
    }
}

// === What is new ===

/// Collects, for one window, what "new" compares: edges, executables and listeners per
/// workload.
pub struct Period {
    pub sockets: Sockets,
    processes: Vec<(Arc<CollectorIdentity>, ProcessRecord, UnixNanos)>,
    listeners: Vec<(Arc<CollectorIdentity>, ListenerRecord, UnixNanos)>,
    /// Process or listener records beyond the bound were left out.
    records_truncated: bool,
}

impl Period {
    pub fn new(filter: FlowFilter) -> Period {
        Period {
            sockets: Sockets::new(filter),
            processes: Vec::new(),
            listeners: Vec::new(),
            records_truncated: false,
        }
    }

    /// Something of the period was left out at the bound.
    pub fn truncated(&self) -> bool {
        self.sockets.truncated || self.records_truncated
    }

    /// Adds one event of the period; false once the bound is reached.
    pub fn add(&mut self, e: &Event) -> bool {
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

type WorkloadKey = (String, String);

fn workload_key(pod_namespace: &str, pod_name: &str) -> WorkloadKey {
    (pod_namespace.to_owned(), workload_of(pod_name).to_owned())
}

fn workload_of_source(source: &CollectorIdentity) -> WorkloadKey {
    workload_key(&source.pod_namespace, &source.pod_name)
}

fn image_of(comm: &[u8], exe: &Option<Vec<u8>>) -> Vec<u8> {
    exe.clone().unwrap_or_else(|| comm.to_vec())
}

type EdgeKey = (WorkloadKey, Vec<u8>, Direction, IpAddr, u16);

fn edge_key(e: &Edge) -> EdgeKey {
    (
        workload_key(&e.pod_namespace, &e.pod_name),
        image_of(&e.comm, &e.exe),
        e.direction,
        e.peer_addr,
        e.port,
    )
}

fn listener_key(source: &CollectorIdentity, l: &ListenerRecord) -> (WorkloadKey, Protocol, u16) {
    (workload_of_source(source), l.protocol, l.local_port)
}

/// What "new" and "increased" need from a baseline period, per workload: its edges with
/// their bytes, its executables and its listening ports. Small (one entry per distinct
/// edge, not per socket), so a baseline wholly in the past can be kept and reused.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    edges: HashMap<EdgeKey, u64>,
    images: HashSet<(WorkloadKey, Vec<u8>)>,
    ports: HashSet<(WorkloadKey, Protocol, u16)>,
    flows: u64,
    processes: u64,
    truncated: bool,
}

impl Baseline {
    pub fn of(period: &Period, names: &ProcessNames, pods: &PodDirectory) -> Baseline {
        let mut edges: HashMap<EdgeKey, u64> = HashMap::default();
        for e in period.sockets.edges(names, pods) {
            *edges.entry(edge_key(&e)).or_default() += e.bytes_sent + e.bytes_received;
        }
        Baseline {
            edges,
            images: period
                .processes
                .iter()
                .map(|(source, p, _)| (workload_of_source(source), image_of(&p.comm, &p.exe)))
                .collect(),
            ports: period
                .listeners
                .iter()
                .map(|(source, l, _)| listener_key(source, l))
                .collect(),
            flows: period.sockets.len() as u64,
            processes: period.processes.len() as u64,
            truncated: period.truncated(),
        }
    }
}

/// What `window` holds that `baseline` does not, per workload: peers (by executable,
/// direction, address and port), executables and listening ports.
pub fn new_activity(
    baseline: &Baseline,
    window: &Period,
    names: &ProcessNames,
    pods: &PodDirectory,
    limit: usize,
) -> NewActivity {
    new_activity_of(
        baseline,
        &window.sockets.edges(names, pods),
        window,
        names,
        limit,
    )
}

/// [`new_activity`] from the window's edges, already grouped.
fn new_activity_of(
    baseline: &Baseline,
    window_edges: &[Edge],
    window: &Period,
    names: &ProcessNames,
    limit: usize,
) -> NewActivity {
    let mut edges: Vec<Edge> = window_edges
        .iter()
        .filter(|e| !baseline.edges.contains_key(&edge_key(e)))
        .cloned()
        .collect();
    edges.sort_by_key(|e| e.first_seen);
    edges.truncate(limit);

    let known_images = &baseline.images;
    let mut seen_images = HashSet::default();
    let mut executables = Vec::new();
    for (source, p, received_at) in &window.processes {
        let key = (workload_of_source(source), image_of(&p.comm, &p.exe));
        if known_images.contains(&key) || !seen_images.insert(key) {
            continue;
        }
        executables.push(NewExecutable {
            pod_name: source.pod_name.clone(),
            pod_namespace: source.pod_namespace.clone(),
            comm: p.comm.clone(),
            exe: p.exe.clone(),
            first_seen: *received_at,
            process: p.clone(),
        });
    }
    executables.truncate(limit);

    let known_ports = &baseline.ports;
    let mut seen_ports = HashSet::default();
    let mut listeners = Vec::new();
    for (source, l, received_at) in &window.listeners {
        let key = listener_key(source, l);
        if known_ports.contains(&key) || !seen_ports.insert(key) {
            continue;
        }
        let name = l
            .pid
            .zip(l.process_start_time)
            .and_then(|(pid, start)| names.get(&source.collector_id, pid, start));
        listeners.push(NewListener {
            pod_name: source.pod_name.clone(),
            pod_namespace: source.pod_namespace.clone(),
            protocol: l.protocol,
            local_addr: l.local_addr,
            port: l.local_port,
            comm: name.map(|n| n.comm.clone()).unwrap_or_default(),
            exe: name.and_then(|n| n.exe.clone()),
            first_seen: *received_at,
        });
    }
    listeners.truncate(limit);

    NewActivity {
        edges,
        executables,
        listeners,
        baseline_flows: baseline.flows,
        baseline_processes: baseline.processes,
        truncated: baseline.truncated || window.truncated(),
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
}

/// "Significantly increased", as in Detective's "changed significantly": at least this many
/// times the baseline's hourly rate, and at least [`MIN_INCREASE_BYTES`] above what that rate
/// predicts for the window (so a few kilobytes more on a quiet edge is not news).
pub const INCREASE_FACTOR: f64 = 3.0;
pub const MIN_INCREASE_BYTES: f64 = 1024.0 * 1024.0;
const HOUR_NS: f64 = 3_600e9;

/// The window's talkers, what it holds that the baseline does not, and the edges (compared
/// per workload, like "new") whose hourly volume grew significantly. `spans` are the
/// baseline's and the window's lengths in ns.
pub fn compare(
    baseline: &Baseline,
    window: &Period,
    names: &ProcessNames,
    pods: &PodDirectory,
    limit: usize,
    spans: (u64, u64),
) -> Comparison {
    // The window's sockets grouped once, for all three answers.
    let edges = window.sockets.edges(names, pods);
    let new = new_activity_of(baseline, &edges, window, names, limit);
    let hours = |span: u64| (span as f64 / HOUR_NS).max(1.0);
    let (baseline_hours, window_hours) = (hours(spans.0), hours(spans.1));
    let mut increased: Vec<Increase> = edges
        .iter()
        .filter_map(|edge| {
            let before = *baseline.edges.get(&edge_key(edge))? as f64 / baseline_hours;
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
        excess(b).total_cmp(&excess(a))
    });
    increased.truncate(limit);
    let talkers = talkers_of(edges, &window.sockets, EdgeOrder::Bytes, limit);
    Comparison {
        talkers,
        new,
        increased,
    }
}

// === Which process tree did this ===

/// Every process record of one pod, to build trees from.
#[derive(Default)]
pub struct PodProcesses {
    /// The latest record per (pid, start time); EXIT keeps the last readable exe.
    latest: HashMap<(u32, UnixNanos), ProcessRecord>,
    children: HashMap<(u32, UnixNanos), Vec<(u32, UnixNanos)>>,
}

impl PodProcesses {
    pub fn add(&mut self, p: &ProcessRecord) {
        let key = (p.pid, p.start_time);
        match self.latest.get_mut(&key) {
            Some(known) => {
                let live = std::mem::replace(known, p.clone());
                keep_if_exit_lacks(p, &mut known.exe, live.exe);
                keep_if_exit_lacks(p, &mut known.argv, live.argv);
                keep_if_exit_lacks(p, &mut known.ancestors, live.ancestors);
            }
            None => {
                self.latest.insert(key, p.clone());
                if let Some(parent_start) = p.parent_start_time {
                    self.children
                        .entry((p.ppid, parent_start))
                        .or_default()
                        .push(key);
                }
            }
        }
    }

    /// The process (the latest with this pid when `start_time` is absent) and its
    /// descendants in pre-order, without flows.
    pub fn tree(&self, pid: u32, start_time: Option<UnixNanos>) -> Option<ProcessTree> {
        let root = match start_time {
            Some(start) => (pid, start),
            None => *self
                .latest
                .keys()
                .filter(|(p, _)| *p == pid)
                .max_by_key(|(_, start)| *start)?,
        };
        let process = self.latest.get(&root)?;
        let mut tree = ProcessTree {
            ancestors: process.ancestors.clone(),
            nodes: Vec::new(),
            truncated: false,
        };
        let mut stack = vec![(root, 0u32)];
        let mut visited = HashSet::default();
        while let Some((key, depth)) = stack.pop() {
            if !visited.insert(key) {
                continue;
            }
            if tree.nodes.len() >= MAX_TREE_NODES {
                tree.truncated = true;
                break;
            }
            let Some(p) = self.latest.get(&key) else {
                continue;
            };
            tree.nodes.push(TreeNode {
                process: p.clone(),
                depth,
                flows: Vec::new(),
            });
            let mut children = self.children.get(&key).cloned().unwrap_or_default();
            // Oldest child first in the output: the stack pops the last pushed.
            children.sort_by_key(|(pid, start)| std::cmp::Reverse((*start, *pid)));
            stack.extend(children.into_iter().map(|c| (c, depth + 1)));
        }
        Some(tree)
    }
}

/// Attaches flows to the processes of a tree: the last record of each socket, or the last
/// one that names its owner by fd (a socket first announced without it may get it later).
pub struct TreeFlows {
    tree: ProcessTree,
    members: HashSet<(u32, UnixNanos)>,
    last: HashMap<u64, FlowRecord>,
}

impl TreeFlows {
    pub fn new(tree: ProcessTree) -> TreeFlows {
        let members = tree
            .nodes
            .iter()
            .map(|n| (n.process.pid, n.process.start_time))
            .collect();
        TreeFlows {
            tree,
            members,
            last: HashMap::default(),
        }
    }

    pub fn add(&mut self, f: &FlowRecord) {
        let by_fd = f.attribution == Attribution::Fd;
        match self.last.get_mut(&f.cookie) {
            Some(known) if by_fd || known.attribution != Attribution::Fd => *known = f.clone(),
            Some(_) => {}
            None => {
                let member = f
                    .pid
                    .zip(f.process_start_time)
                    .is_some_and(|key| self.members.contains(&key));
                if member {
                    self.last.insert(f.cookie, f.clone());
                }
            }
        }
    }

    pub fn finish(mut self) -> ProcessTree {
        let node_of: HashMap<(u32, UnixNanos), usize> = self
            .tree
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| ((n.process.pid, n.process.start_time), i))
            .collect();
        let mut flows: Vec<FlowRecord> = self.last.into_values().collect();
        flows.sort_by_key(|f| (f.first_seen, f.cookie));
        for f in flows {
            let node = f
                .pid
                .zip(f.process_start_time)
                .and_then(|key| node_of.get(&key));
            if let Some(&node) = node {
                self.tree.nodes[node].flows.push(f);
            }
        }
        self.tree
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attribution, Family, FlowRecord};

    fn identity(collector_id: &str, pod: &str, pod_ip: &str) -> Arc<CollectorIdentity> {
        Arc::new(CollectorIdentity {
            collector_id: collector_id.into(),
            pod_name: pod.into(),
            pod_namespace: "shop".into(),
            pod_ip: pod_ip.into(),
            ..CollectorIdentity::default()
        })
    }

    fn flow(cookie: u64, peer: &str, port: u16, phase: FlowPhase, sent: u64) -> FlowRecord {
        FlowRecord {
            remote_addr: Some(peer.parse().expect("ip")),
            remote_port: Some(port),
            phase,
            bytes_sent: Some(sent),
            bytes_received: Some(sent / 2),
            first_seen: 1_000 + cookie,
            last_seen: 2_000 + cookie,
            ..crate::fixtures::flow(cookie)
        }
    }

    fn process(pid: u32, start: u64, ppid: u32, parent_start: u64, exe: &str) -> ProcessRecord {
        ProcessRecord {
            start_time: start,
            ppid,
            parent_start_time: Some(parent_start),
            exe: Some(exe.as_bytes().to_vec()),
            argv: vec![exe.as_bytes().to_vec()],
            session_id: 1,
            pgid: 1,
            ..crate::fixtures::process(pid, exe.rsplit('/').next().unwrap_or(exe).as_bytes())
        }
    }

    fn event(source: &Arc<CollectorIdentity>, received_at: u64, record: Record) -> Event {
        Event {
            source: source.clone(),
            received_at,
            record,
        }
    }

    #[test]
    fn a_socket_counts_once_with_its_last_counters_and_edges_group_by_executable_and_peer() {
        let web = identity("c1", "web-6d8f9c7b5-abcde", "10.0.0.5");
        let db = identity("c2", "db-0", "10.0.0.9");
        let mut names = ProcessNames::default();
        names.add(&web, &process(7, 70, 1, 10, "/usr/bin/curl"));
        let mut pods = PodDirectory::default();
        pods.note(&web);
        pods.note(&db);
        let mut sockets = Sockets::new(FlowFilter::default());
        // Socket 1: START, UPDATE, END — one connection, END's counters.
        for (phase, sent) in [
            (FlowPhase::Start, 0),
            (FlowPhase::Update, 600),
            (FlowPhase::End, 1000),
        ] {
            assert!(sockets.add(&web, &flow(1, "203.0.113.7", 443, phase, sent)));
        }
        // Socket 2: same process and peer.
        sockets.add(&web, &flow(2, "203.0.113.7", 443, FlowPhase::End, 50));
        // Socket 3: a reset zeroed the END's counters; the last dumped ones stand.
        sockets.add(&web, &flow(3, "10.0.0.9", 5432, FlowPhase::Update, 300));
        sockets.add(&web, &flow(3, "10.0.0.9", 5432, FlowPhase::End, 0));
        // Socket 4: unattributed, same peer as 1 and 2: its own edge.
        let mut anonymous = flow(4, "203.0.113.7", 443, FlowPhase::End, 5);
        anonymous.pid = None;
        anonymous.process_start_time = None;
        sockets.add(&web, &anonymous);
        // An unconnected UDP socket has no peer: not an edge.
        let mut unconnected = flow(5, "203.0.113.7", 53, FlowPhase::End, 0);
        unconnected.remote_addr = None;
        unconnected.remote_port = None;
        sockets.add(&web, &unconnected);
        assert_eq!(sockets.len(), 4);

        let answer = talkers(&sockets, &names, &pods, EdgeOrder::Bytes, 10);
        assert_eq!((answer.flows, answer.total_edges), (4, 3));
        let top = &answer.edges[0];
        assert_eq!(top.exe.as_deref(), Some(&b"/usr/bin/curl"[..]));
        assert_eq!(
            (top.connections, top.bytes_sent, top.bytes_received),
            (2, 1050, 525)
        );
        assert_eq!((top.first_seen, top.last_seen), (1_001, 2_002));
        assert_eq!(top.pids, vec![7]);
        let to_db = &answer.edges[1];
        assert_eq!(to_db.bytes_sent, 300);
        assert_eq!(
            (
                to_db.peer_pod_namespace.as_deref(),
                to_db.peer_pod_name.as_deref()
            ),
            (Some("shop"), Some("db-0")),
            "an east-west peer is named by its pod"
        );
        assert!(answer.edges[2].unattributed && answer.edges[2].comm.is_empty());

        let by_count = talkers(&sockets, &names, &pods, EdgeOrder::Connections, 1);
        assert_eq!(by_count.edges.len(), 1);
        assert_eq!(by_count.edges[0].connections, 2);
    }

    #[test]
    fn inbound_edges_are_keyed_by_the_service_port_and_filters_apply() {
        let web = identity("c1", "web-0", "10.0.0.5");
        let mut sockets = Sockets::new(FlowFilter {
            scopes: vec![Scope::EastWest],
            directions: vec![],
        });
        for cookie in 1..=3 {
            let mut f = flow(
                cookie,
                "10.0.0.20",
                50_000 + cookie as u16,
                FlowPhase::End,
                10,
            );
            f.direction = Direction::Inbound;
            f.scope = Scope::EastWest;
            f.local_port = 8080;
            sockets.add(&web, &f);
        }
        sockets.add(&web, &flow(9, "203.0.113.7", 443, FlowPhase::End, 10));
        let edges = sockets.edges(&ProcessNames::default(), &PodDirectory::default());
        assert_eq!(
            edges.len(),
            1,
            "three clients' ephemeral ports make one edge"
        );
        assert_eq!((edges[0].port, edges[0].connections), (8080, 3));
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
        };
        window.add(&event(&new_pod, 310, Record::Listener(listener.clone())));
        listener.phase = FlowPhase::End;
        window.add(&event(&new_pod, 320, Record::Listener(listener)));

        let pods = PodDirectory::default();
        let baseline = Baseline::of(&baseline, &names, &pods);
        let new = new_activity(&baseline, &window, &names, &pods, 10);
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
        let baseline = Baseline::of(&baseline, &names, &pods);
        let answer = compare(&baseline, &window, &names, &pods, 10, (10 * hour, hour));
        let increased: Vec<u16> = answer.increased.iter().map(|i| i.edge.port).collect();
        assert_eq!(increased, vec![443]);
        // Each flow sends `sent` and receives half of it.
        assert!((answer.increased[0].baseline_per_hour - 1.5 * mb as f64).abs() < 1.0);
        assert!((answer.increased[0].window_per_hour - 12.0 * mb as f64).abs() < 1.0);
        assert_eq!(answer.new.edges.len(), 1);
        assert_eq!(answer.new.edges[0].port, 8080);
        assert_eq!(answer.talkers.edges[0].port, 8080, "talkers by bytes");
    }

    #[test]
    fn a_tree_holds_descendants_in_pre_order_with_their_flows_even_after_exit() {
        let mut pod = PodProcesses::default();
        let mut sh = process(10, 100, 1, 1, "/bin/sh");
        sh.ancestors = vec![Ancestor {
            pid: 1,
            start_time: 1,
            comm: b"init".to_vec(),
            exe: None,
            argv: Vec::new(),
            exited: false,
            uid: Some(0),
        }];
        pod.add(&sh);
        pod.add(&process(11, 110, 10, 100, "/bin/sh"));
        pod.add(&process(12, 120, 11, 110, "/usr/bin/curl"));
        pod.add(&process(13, 130, 10, 100, "/bin/true"));
        // Pid 11 reused later by an unrelated process: not part of the tree.
        pod.add(&process(11, 999, 1, 1, "/usr/bin/other"));
        // curl exits; its exit record carries no exe, the tree keeps the one it had.
        let mut exit = process(12, 120, 11, 110, "/usr/bin/curl");
        exit.phase = ProcessPhase::Exit;
        exit.exe = None;
        exit.exit_time = Some(500);
        pod.add(&exit);

        let tree = pod.tree(10, None).expect("tree");
        let order: Vec<(u32, u32)> = tree
            .nodes
            .iter()
            .map(|n| (n.process.pid, n.depth))
            .collect();
        assert_eq!(order, vec![(10, 0), (11, 1), (12, 2), (13, 1)]);
        assert_eq!(tree.ancestors.len(), 1);
        let curl = &tree.nodes[2].process;
        assert_eq!(curl.phase, ProcessPhase::Exit);
        assert_eq!(curl.exe.as_deref(), Some(&b"/usr/bin/curl"[..]));

        let mut flows = TreeFlows::new(tree);
        let mut f = flow(1, "203.0.113.7", 443, FlowPhase::Start, 0);
        f.pid = Some(12);
        f.process_start_time = Some(120);
        flows.add(&f);
        f.phase = FlowPhase::End;
        f.bytes_sent = Some(99);
        flows.add(&f);
        let mut stranger = f.clone();
        stranger.cookie = 2;
        stranger.process_start_time = Some(121);
        flows.add(&stranger);
        let tree = flows.finish();
        assert_eq!(
            tree.nodes[2].flows.len(),
            1,
            "one entry per socket, the last record"
        );
        assert_eq!(tree.nodes[2].flows[0].bytes_sent, Some(99));
        assert!(tree.nodes.iter().map(|n| n.flows.len()).sum::<usize>() == 1);

        // The latest pid 11 is the unrelated one; the start time picks the right one.
        assert_eq!(pod.tree(11, None).expect("tree").nodes.len(), 1);
        assert_eq!(pod.tree(11, Some(110)).expect("tree").nodes.len(), 2);
        assert!(pod.tree(77, None).is_none());
    }
}
