//! Sockets → edges: one summary per socket (its last counters), grouped by pod,
//! executable, direction, scope, peer and port; "who talked to whom".

use std::net::IpAddr;
use std::sync::Arc;

use super::entities::{PodDirectory, ProcessName, ProcessNames};
use super::{Edge, EdgeOrder, FlowFilter, HashMap, Talkers, MAX_EDGE_PIDS, MAX_SOCKETS};
use crate::model::{
    Attribution, CollectorIdentity, Direction, FlowPhase, FlowRecord, Protocol, Scope, UnixNanos,
};

/// What an edge needs from one socket: its last counters in the window.
pub(super) struct SocketSummary {
    pub(super) process: Option<(u32, UnixNanos)>,
    by_fd: bool,
    pub(super) direction: Direction,
    pub(super) scope: Scope,
    pub(super) protocol: Protocol,
    pub(super) peer_addr: IpAddr,
    pub(super) port: u16,
    pub(super) bytes_sent: u64,
    pub(super) bytes_received: u64,
    pub(super) first_seen: UnixNanos,
    pub(super) last_seen: UnixNanos,
    /// An END was seen: the socket is gone (rollups stop carrying it).
    pub(super) ended: bool,
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
            known.ended |= f.phase == FlowPhase::End;
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
                ended: f.phase == FlowPhase::End,
            },
        );
        self.count += 1;
        true
    }

    /// Forgets the open sockets (no END seen) that `forget` names by collector id and
    /// cookie.
    pub(super) fn forget_open(&mut self, mut forget: impl FnMut(&str, u64) -> bool) {
        for (source, sockets) in &mut self.collectors {
            let before = sockets.len();
            sockets.retain(|cookie, s| s.ended || !forget(&source.collector_id, *cookie));
            self.count -= before - sockets.len();
        }
    }

    /// Visits every socket: its collector, cookie and summary.
    pub(super) fn each<'a>(
        &'a self,
        mut visit: impl FnMut(&'a Arc<CollectorIdentity>, u64, &'a SocketSummary),
    ) {
        for (source, sockets) in &self.collectors {
            for (cookie, s) in sockets {
                visit(source, *cookie, s);
            }
        }
    }

    /// The sockets grouped into edges (unordered).
    pub fn edges(&self, names: &ProcessNames, pods: &PodDirectory) -> Vec<Edge> {
        let mut edges: HashMap<EdgeKey<()>, Edge> = HashMap::default();
        for (source, sockets) in &self.collectors {
            for s in sockets.values() {
                let (key, name) = EdgeKey::of(source, s, names, ());
                edges
                    .entry(key)
                    .or_insert_with(|| edge_of(source, s, name, pods))
                    .absorb(s);
            }
        }
        let mut out: Vec<Edge> = edges.into_values().collect();
        for e in &mut out {
            e.pids.sort_unstable();
        }
        out
    }
}

/// What groups sockets into one edge: pod, executable, direction, scope, protocol, peer and
/// port, and `extra` (the rollups' previous hour).
#[derive(PartialEq, Eq, Hash)]
pub(super) struct EdgeKey<'a, X> {
    pod_name: &'a str,
    pod_namespace: &'a str,
    name: Option<&'a ProcessName>,
    direction: Direction,
    scope: Scope,
    protocol: Protocol,
    peer_addr: IpAddr,
    port: u16,
    extra: X,
}

impl<'a, X> EdgeKey<'a, X> {
    /// The key of `source`'s socket `s`, and its process's name.
    pub(super) fn of(
        source: &'a CollectorIdentity,
        s: &SocketSummary,
        names: &'a ProcessNames,
        extra: X,
    ) -> (Self, Option<&'a ProcessName>) {
        let name = s
            .process
            .and_then(|(pid, start)| names.get(&source.collector_id, pid, start));
        let key = EdgeKey {
            pod_name: &source.pod_name,
            pod_namespace: &source.pod_namespace,
            name,
            direction: s.direction,
            scope: s.scope,
            protocol: s.protocol,
            peer_addr: s.peer_addr,
            port: s.port,
            extra,
        };
        (key, name)
    }
}

/// An edge of `source`'s pod holding no socket yet, named like `s` (its peer named by
/// `pods`).
pub(super) fn edge_of(
    source: &CollectorIdentity,
    s: &SocketSummary,
    name: Option<&ProcessName>,
    pods: &PodDirectory,
) -> Edge {
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
}

impl Edge {
    /// Counts one socket into the edge.
    pub(super) fn absorb(&mut self, s: &SocketSummary) {
        // Saturating: counters near u64::MAX from a hostile collector must not wrap the edge
        // to a small figure and hide it from a ranking by bytes.
        self.connections = self.connections.saturating_add(1);
        self.bytes_sent = self.bytes_sent.saturating_add(s.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_add(s.bytes_received);
        self.first_seen = self.first_seen.min(s.first_seen);
        self.last_seen = self.last_seen.max(s.last_seen);
        if let Some((pid, _)) = s.process {
            self.add_pid(pid);
        }
    }

    pub(super) fn add_pid(&mut self, pid: u32) {
        if self.pids.len() < MAX_EDGE_PIDS && !self.pids.contains(&pid) {
            self.pids.push(pid);
        }
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
    talkers_of(
        &sockets.edges(names, pods),
        sockets.len() as u64,
        sockets.truncated,
        order,
        limit,
    )
}

/// [`talkers`] from the sockets' edges, already grouped.
pub(super) fn talkers_of(
    edges: &[Edge],
    flows: u64,
    truncated: bool,
    order: EdgeOrder,
    limit: usize,
) -> Talkers {
    // Ranked by reference, only the top cloned: a day's window has a million edges and
    // an answer shows a few.
    let mut kept: Vec<&Edge> = edges.iter().collect();
    top(&mut kept, limit, |e| Rank::of_edge(e, order));
    Talkers {
        edges: kept.into_iter().cloned().collect(),
        flows,
        total_edges: edges.len() as u64,
        truncated,
    }
}

/// Where an edge stands in an answer: the order's figure (largest first), ties broken by
/// the edge's whole identity so answers are stable (and the same from raw records and from
/// rollups, which group in another order). Borrowed: a day's answer ranks a million edges,
/// most of them tied on bytes.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Rank<'a> {
    figure: std::cmp::Reverse<u64>,
    pod_namespace: &'a [u8],
    pod_name: &'a [u8],
    peer_addr: IpAddr,
    port: u16,
    exe: Option<&'a [u8]>,
    comm: &'a [u8],
    direction: u8,
    scope: u8,
    protocol: u8,
    unattributed: bool,
}

impl<'a> Rank<'a> {
    /// The rank of an edge `order` sorts by `(bytes, connections, last_seen)`, its
    /// identity given by `edge` (whose counters are not read).
    pub(super) fn new(
        order: EdgeOrder,
        (bytes, connections, last_seen): (u64, u64, u64),
        (pod_namespace, pod_name): (&'a [u8], &'a [u8]),
        (comm, exe): (&'a [u8], Option<&'a [u8]>),
        edge: (Direction, Scope, Protocol, IpAddr, u16, bool),
    ) -> Rank<'a> {
        let (direction, scope, protocol, peer_addr, port, unattributed) = edge;
        Rank {
            figure: std::cmp::Reverse(match order {
                EdgeOrder::Bytes => bytes,
                EdgeOrder::Connections => connections,
                EdgeOrder::Recent => last_seen,
            }),
            pod_namespace,
            pod_name,
            peer_addr,
            port,
            exe,
            comm,
            direction: direction as u8,
            scope: scope as u8,
            protocol: protocol as u8,
            unattributed,
        }
    }

    pub(super) fn of_edge(e: &'a Edge, order: EdgeOrder) -> Rank<'a> {
        Rank::new(
            order,
            (e.bytes_sent + e.bytes_received, e.connections, e.last_seen),
            (e.pod_namespace.as_bytes(), e.pod_name.as_bytes()),
            (&e.comm, e.exe.as_deref()),
            (
                e.direction,
                e.scope,
                e.protocol,
                e.peer_addr,
                e.port,
                e.unattributed,
            ),
        )
    }
}

/// Keeps the first `limit` of `items` by `rank`, in order: a selection, then a sort of
/// what is kept (an answer keeps 20 of a million edges).
pub(super) fn top<T>(items: &mut Vec<T>, limit: usize, rank: impl Fn(&T) -> Rank<'_>) {
    if limit == 0 {
        items.clear();
        return;
    }
    if items.len() > limit {
        items.select_nth_unstable_by(limit - 1, |a, b| rank(a).cmp(&rank(b)));
        items.truncate(limit);
    }
    items.sort_unstable_by(|a, b| rank(a).cmp(&rank(b)));
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::investigate::test_support::{flow, identity, process};
    use crate::model::FlowPhase;

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
}
