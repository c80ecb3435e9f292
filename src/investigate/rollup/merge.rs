//! Folding the pod-hours and pod-days of a window into its [`Activity`]. A month's question
//! reads tens of thousands of them, each with its edge rows: names are interned (each
//! string of a stored row looked up once, every edge keyed by small ids), rows are handed
//! over borrowed from the stored bytes ([`RowRef`]), and a window's executables and
//! listening ports stay encoded until the first of each is known.

use std::collections::hash_map::Entry;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use hashbrown::hash_table::{Entry as TableEntry, HashTable};

use super::{hour_of, EdgeRow, HourStarts, PodHour, STARTS};
use crate::investigate::entities::PodDirectory;
use crate::investigate::novelty::{Activity, Baseline};
use crate::investigate::sockets::{top, Rank};
use crate::investigate::{
    Edge, EdgeOrder, FlowFilter, HashMap, NewExecutable, NewListener, Talkers, MAX_EDGE_PIDS,
};
use crate::model::{Direction, Protocol, Scope};

/// One edge row as stored, its strings borrowed: the sockets of one edge in one pod's
/// period that were last seen before in the hour `prev_hour` (see `rollup`).
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    pub comm: &'a [u8],
    pub exe: Option<&'a [u8]>,
    pub unattributed: bool,
    pub direction: Direction,
    pub scope: Scope,
    pub protocol: Protocol,
    pub peer_addr: IpAddr,
    pub port: u16,
    pub connections: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub sent_delta: u64,
    pub received_delta: u64,
    pub first_seen: u64,
    pub last_seen: u64,
    pub prev_hour: Option<u64>,
    pub pids: &'a [u32],
}

/// A pod, interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PodRef {
    namespace: u32,
    name: u32,
}

/// A first executable or listener as kept until the window's end: decoded already (raw
/// tail, old rows) or still in its stored encoding.
pub enum Kept<T> {
    Value(T),
    Encoded(Vec<u8>),
}

/// Byte strings by small id.
#[derive(Default)]
struct Interner {
    ids: HashMap<Box<[u8]>, u32>,
    names: Vec<Box<[u8]>>,
    /// The last string looked up in each place (a row's comm, its exe), by address: a
    /// row's strings are one stored table, and consecutive edge rows mostly name the same
    /// executable (one slot for both missed twice a row, comm and exe in turn).
    last: [Option<(usize, usize, u32)>; 2],
}

const NO_STRING: u32 = u32::MAX;

impl Interner {
    fn id(&mut self, s: &[u8]) -> u32 {
        match self.ids.get(s) {
            Some(&id) => id,
            None => {
                let id = self.names.len() as u32;
                self.names.push(s.into());
                self.ids.insert(s.into(), id);
                id
            }
        }
    }

    /// [`Interner::id`] remembering the last string by address: only for strings that
    /// live as long as the row they came from ([`Merger::pod`] forgets it at each row, as
    /// another row's bytes may later sit at the same address).
    fn id_in_row(&mut self, s: &[u8], place: usize) -> u32 {
        let at = (s.as_ptr() as usize, s.len());
        if let Some((ptr, len, id)) = self.last[place] {
            if (ptr, len) == at {
                return id;
            }
        }
        let id = self.id(s);
        self.last[place] = Some((at.0, at.1, id));
        id
    }

    fn bytes(&self, id: u32) -> &[u8] {
        self.names.get(id as usize).map_or(&[], |b| b)
    }

    fn string(&self, id: u32) -> String {
        String::from_utf8_lossy(self.bytes(id)).into_owned()
    }
}

/// An edge within its pod.
#[derive(Clone, Copy, PartialEq, Eq)]
struct EdgeId {
    comm: u32,
    exe: u32,
    unattributed: bool,
    direction: Direction,
    scope: Scope,
    protocol: Protocol,
    peer_addr: IpAddr,
    port: u16,
}

/// Hashed as two or three words, not field by field: a day's merge hashes a million edges,
/// each again whenever its pod's table grows.
impl Hash for EdgeId {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let flags = u64::from(self.unattributed)
            | (self.direction as u64) << 2
            | (self.scope as u64) << 4
            | (self.protocol as u64) << 6;
        h.write_u64(u64::from(self.comm) << 32 | u64::from(self.exe));
        let port = u64::from(self.port) << 32 | flags << 48;
        match self.peer_addr {
            IpAddr::V4(a) => h.write_u64(u64::from(u32::from(a)) | port),
            IpAddr::V6(a) => {
                h.write_u128(u128::from(a));
                h.write_u64(port | 1 << 63);
            }
        }
    }
}

/// No heap of its own (its pids past the first few are in the merger's `spilled`): a day's
/// million edges are made and dropped without a call to the allocator each.
#[derive(Clone, Copy)]
struct EdgeSum {
    connections: u64,
    bytes_sent: u64,
    bytes_received: u64,
    first_seen: u64,
    last_seen: u64,
    pids: Pids,
}

// Dropping a day's tables is one free each, not a walk over their million edges.
const _: () = assert!(!std::mem::needs_drop::<EdgeSum>());

/// Pids kept inline; an edge with more keeps the rest in its merger's `spilled`.
const INLINE_PIDS: usize = 4;

/// An edge's first [`MAX_EDGE_PIDS`] distinct pids, in the order they came: the first
/// [`INLINE_PIDS`] here, the others in `spilled[more - 1]` of the merger.
#[derive(Clone, Copy, Default)]
struct Pids {
    inline: [u32; INLINE_PIDS],
    len: u8,
    more: u32,
}

impl Pids {
    fn add(&mut self, pid: u32, spilled: &mut Vec<Vec<u32>>) {
        let len = usize::from(self.len);
        if self.inline[..len].contains(&pid) {
            return;
        }
        if len < INLINE_PIDS {
            self.inline[len] = pid;
            self.len += 1;
            return;
        }
        if self.more == 0 {
            spilled.push(Vec::new());
            self.more = spilled.len() as u32;
        }
        if let Some(more) = spilled.get_mut(self.more as usize - 1) {
            if more.len() < MAX_EDGE_PIDS - INLINE_PIDS && !more.contains(&pid) {
                more.push(pid);
            }
        }
    }

    /// Puts `first` (pids that came before those kept) ahead of those kept: the first
    /// [`MAX_EDGE_PIDS`] distinct of both, as if they had come in that order.
    fn put_first(&mut self, first: &[u32], spilled: &mut Vec<Vec<u32>>) {
        if first.is_empty() {
            return;
        }
        let mut all = [0; MAX_EDGE_PIDS];
        let mut n = 0;
        for pid in first.iter().copied().chain(self.iter(spilled)) {
            if n == MAX_EDGE_PIDS {
                break;
            }
            if !all[..n].contains(&pid) {
                all[n] = pid;
                n += 1;
            }
        }
        // Kept again in that order (in the spilled vector this edge has, if any).
        if let Some(more) = spilled.get_mut((self.more as usize).wrapping_sub(1)) {
            more.clear();
        }
        *self = Pids {
            more: self.more,
            ..Pids::default()
        };
        for &pid in &all[..n] {
            self.add(pid, spilled);
        }
    }

    fn iter<'a>(&'a self, spilled: &'a [Vec<u32>]) -> impl Iterator<Item = u32> + 'a {
        let more = match self.more {
            0 => &[][..],
            i => spilled.get(i as usize - 1).map_or(&[][..], Vec::as_slice),
        };
        self.inline[..usize::from(self.len)]
            .iter()
            .chain(more)
            .copied()
    }
}

/// One pod's edges: their ids and sums in the order first seen, found through a table of
/// their indices. A pod's ~900 edges of a day come over rows it cannot be sized from (a
/// steady pod's 22 hours are 22 rows of each edge): a table of the 96-byte entries
/// themselves, growing, moved each again and again into fresh pages (a quarter of a day's
/// merge); growing this one moves 4 bytes an edge, and the entries grow in one vector.
struct PodEdges {
    pod: PodRef,
    edges: Vec<(EdgeId, EdgeSum)>,
    /// Indices into `edges` by their id's hash. It covers all of `edges` or, after
    /// [`Merger::absorb`] took the pod in and re-keyed its edges, none of them (rebuilt if
    /// the pod gets more rows).
    index: HashTable<u32>,
}

impl PodEdges {
    fn new(pod: PodRef) -> PodEdges {
        PodEdges {
            pod,
            edges: Vec::new(),
            index: HashTable::new(),
        }
    }

    /// The sum of edge `id` (made by `new` if it is not there yet), and whether it is new.
    fn sum(
        &mut self,
        id: EdgeId,
        hasher: &EdgeHasher,
        new: impl FnOnce() -> EdgeSum,
    ) -> (&mut EdgeSum, bool) {
        if self.index.len() != self.edges.len() {
            self.reindex(hasher);
        }
        let edges = &mut self.edges;
        let at = |k: &u32| &edges[*k as usize].0;
        let (k, made) = match self.index.entry(
            hasher.hash_one(id),
            |k| *at(k) == id,
            |k| hasher.hash_one(at(k)),
        ) {
            TableEntry::Occupied(o) => (*o.get() as usize, false),
            TableEntry::Vacant(v) => {
                v.insert(edges.len() as u32);
                edges.push((id, new()));
                (edges.len() - 1, true)
            }
        };
        (&mut edges[k].1, made)
    }

    fn reindex(&mut self, hasher: &EdgeHasher) {
        let edges = &self.edges;
        let hash = |k: &u32| hasher.hash_one(edges[*k as usize].0);
        self.index.clear();
        self.index.reserve(edges.len(), hash);
        for (k, (id, _)) in edges.iter().enumerate() {
            self.index
                .insert_unique(hasher.hash_one(id), k as u32, hash);
        }
    }
}

type EdgeHasher = foldhash::fast::RandomState;

/// The first of something in the window: when, in which order it came, and what it was.
struct First<T> {
    at: u64,
    order: usize,
    kept: Kept<T>,
}

/// Folds the pod-periods of a window (in time order) into its [`Activity`].
pub struct Merger {
    since: u64,
    filter: FlowFilter,
    firsts: bool,
    strings: Interner,
    /// Per pod, its edges: a day holds a million, and a pod's few thousand stay in cache
    /// while its rows are merged and when the table grows (one big table was most of a
    /// day's answer, in rehashing).
    edges: Vec<PodEdges>,
    hasher: EdgeHasher,
    /// The pids of edges with more than [`INLINE_PIDS`] ([`Pids`]).
    spilled: Vec<Vec<u32>>,
    pod_edges: HashMap<PodRef, usize>,
    /// The pod of the last row and its index in `edges`.
    last_pod: Option<(PodRef, usize)>,
    executables: HashMap<(PodRef, u32), First<NewExecutable>>,
    listeners: HashMap<(PodRef, Protocol, u16), First<NewListener>>,
    order: usize,
    flows: u64,
    processes: u64,
    starts: BTreeMap<u64, [u64; STARTS]>,
    truncated: bool,
}

impl Merger {
    /// A window starting in the hour of `since` (rollups answer whole hours); `firsts`:
    /// whether the answer needs the window's executables and listening ports (talkers do
    /// not).
    pub fn new(since: u64, filter: FlowFilter, firsts: bool) -> Merger {
        Merger {
            since: hour_of(since),
            filter,
            firsts,
            strings: Interner::default(),
            edges: Vec::new(),
            hasher: EdgeHasher::default(),
            spilled: Vec::new(),
            pod_edges: HashMap::default(),
            last_pod: None,
            executables: HashMap::default(),
            listeners: HashMap::default(),
            order: 0,
            flows: 0,
            processes: 0,
            starts: BTreeMap::new(),
            truncated: false,
        }
    }

    /// A merger for the same window that merges apart and is then [absorbed] (the other half
    /// of the pods, on another thread).
    ///
    /// [absorbed]: Merger::absorb
    pub fn apart(&self) -> Merger {
        Merger::new(self.since, self.filter.clone(), self.firsts)
    }

    /// Which of two halves of the pods `namespace/name` is in (fixed: a pod's rows always
    /// go to the same merger, so each edge is in one of them).
    pub fn half_of(namespace: &str, name: &str) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (namespace, name).hash(&mut h);
        (h.finish() & 1) as usize
    }

    /// Marks what comes next as the `seq`-th piece of the window (a pod-period, in the
    /// order a single merger would have had them): firsts of the same instant from mergers
    /// apart keep the order they would have had in one.
    pub fn piece(&mut self, seq: usize) {
        self.order = seq << 32;
    }

    /// Takes in `other`'s pods, merged apart (the same window, [`Merger::apart`]): after
    /// it this merger answers as if it had merged every row itself. A pod merged by both
    /// adds up, but its pids may then differ from one merger's (the first kept of each
    /// edge's): route a pod's rows to one merger ([`Merger::half_of`]).
    pub fn absorb(&mut self, other: Merger) {
        let ids: Vec<u32> = other
            .strings
            .names
            .iter()
            .map(|s| self.strings.id(s))
            .collect();
        let id = |i: u32| ids.get(i as usize).copied().unwrap_or(NO_STRING);
        let pod_of = |p: PodRef| PodRef {
            namespace: id(p.namespace),
            name: id(p.name),
        };
        let mut their_spilled = other.spilled;
        for mut theirs in other.edges {
            for (e, _) in &mut theirs.edges {
                (e.comm, e.exe) = (id(e.comm), id(e.exe));
            }
            let pod = pod_of(theirs.pod);
            let Some(&i) = self.pod_edges.get(&pod) else {
                // A pod this merger has not seen (each half merges its own pods): taken as
                // it is, its pids renumbered; its index is rebuilt if it gets more rows.
                for (_, sum) in &mut theirs.edges {
                    take_spilled(&mut sum.pids, &mut their_spilled, &mut self.spilled);
                }
                theirs.pod = pod;
                theirs.index = HashTable::new();
                self.pod_edges.insert(pod, self.edges.len());
                self.edges.push(theirs);
                continue;
            };
            let (mine, spilled) = (&mut self.edges[i], &mut self.spilled);
            for (e, sum) in theirs.edges {
                let (known, made) = mine.sum(e, &self.hasher, || sum);
                if made {
                    take_spilled(&mut known.pids, &mut their_spilled, spilled);
                    continue;
                }
                known.connections = known.connections.saturating_add(sum.connections);
                known.bytes_sent = known.bytes_sent.saturating_add(sum.bytes_sent);
                known.bytes_received = known.bytes_received.saturating_add(sum.bytes_received);
                known.first_seen = known.first_seen.min(sum.first_seen);
                known.last_seen = known.last_seen.max(sum.last_seen);
                for pid in sum.pids.iter(&their_spilled) {
                    known.pids.add(pid, spilled);
                }
            }
        }
        self.last_pod = None;
        for ((pod, image), first) in other.executables {
            keep_earlier(&mut self.executables, (pod_of(pod), id(image)), first);
        }
        for ((pod, protocol, port), first) in other.listeners {
            keep_earlier(&mut self.listeners, (pod_of(pod), protocol, port), first);
        }
        self.order = self.order.max(other.order);
        self.flows += other.flows;
        self.processes += other.processes;
        for (hour, counts) in other.starts {
            let totals = self.starts.entry(hour).or_default();
            for (total, n) in totals.iter_mut().zip(counts) {
                *total += n;
            }
        }
        self.truncated |= other.truncated;
    }

    /// Whether executables and listeners are wanted (a reader may skip them otherwise).
    pub fn wants_firsts(&self) -> bool {
        self.firsts
    }

    /// The pod of the row whose parts come next.
    pub fn pod(&mut self, namespace: &str, name: &str) -> PodRef {
        self.strings.last = [None; 2];
        PodRef {
            namespace: self.strings.id(namespace.as_bytes()),
            name: self.strings.id(name.as_bytes()),
        }
    }

    /// Adds one edge row of `pod` (the last one [`Merger::pod`] gave).
    pub fn edge(&mut self, pod: PodRef, row: &RowRef) {
        self.fold(pod, row, false);
    }

    /// Adds an edge row; `before`: it came before every row added so far (its pids first).
    fn fold(&mut self, pod: PodRef, row: &RowRef, before: bool) {
        if !self.filter.admits_edge(row.scope, row.direction) {
            return;
        }
        // The socket's first period in the window counts it, with its counters then; its
        // later periods add what they grew.
        let first = row.prev_hour.is_none_or(|p| p < self.since);
        let (connections, sent, received) = if first {
            (row.connections, row.bytes_sent, row.bytes_received)
        } else {
            (0, row.sent_delta, row.received_delta)
        };
        self.flows += connections;
        let id = EdgeId {
            comm: self.strings.id_in_row(row.comm, 0),
            exe: row
                .exe
                .map_or(NO_STRING, |exe| self.strings.id_in_row(exe, 1)),
            unattributed: row.unattributed,
            direction: row.direction,
            scope: row.scope,
            protocol: row.protocol,
            peer_addr: row.peer_addr,
            port: row.port,
        };
        let i = self.pod_index(pod);
        let (edges, spilled) = (&mut self.edges[i], &mut self.spilled);
        let (sum, _) = edges.sum(id, &self.hasher, || EdgeSum {
            connections: 0,
            bytes_sent: 0,
            bytes_received: 0,
            first_seen: row.first_seen,
            last_seen: row.last_seen,
            pids: Pids::default(),
        });
        // Saturating: a collector's counters near u64::MAX must not wrap an edge to a small
        // figure and hide it from a ranking by bytes.
        sum.connections = sum.connections.saturating_add(connections);
        sum.bytes_sent = sum.bytes_sent.saturating_add(sent);
        sum.bytes_received = sum.bytes_received.saturating_add(received);
        sum.first_seen = sum.first_seen.min(row.first_seen);
        sum.last_seen = sum.last_seen.max(row.last_seen);
        if before {
            sum.pids.put_first(row.pids, spilled);
        } else {
            for &pid in row.pids {
                sum.pids.add(pid, spilled);
            }
        }
    }

    /// The index in `edges` of `pod`'s: the last row's pod's without a lookup.
    fn pod_index(&mut self, pod: PodRef) -> usize {
        match self.last_pod {
            Some((last, i)) if last == pod => i,
            _ => {
                let next = self.edges.len();
                let i = *self.pod_edges.entry(pod).or_insert(next);
                if i == next {
                    self.edges.push(PodEdges::new(pod));
                }
                self.last_pod = Some((pod, i));
                i
            }
        }
    }

    /// An executable first seen in one of `pod`'s periods at `first_seen` (`image` is its
    /// exe, or its comm without one); `kept` is called only when it is the first so far.
    pub fn executable(
        &mut self,
        pod: PodRef,
        image: &[u8],
        first_seen: u64,
        kept: impl FnOnce() -> Kept<NewExecutable>,
    ) {
        let key = (pod, self.strings.id(image));
        self.order += 1;
        keep_first(&mut self.executables, key, first_seen, self.order, kept);
    }

    /// A listening port first seen in one of `pod`'s periods at `first_seen`.
    pub fn listener(
        &mut self,
        pod: PodRef,
        protocol: Protocol,
        port: u16,
        first_seen: u64,
        kept: impl FnOnce() -> Kept<NewListener>,
    ) {
        self.order += 1;
        keep_first(
            &mut self.listeners,
            (pod, protocol, port),
            first_seen,
            self.order,
            kept,
        );
    }

    /// A period's process records, bound and hourly counts.
    pub fn totals(&mut self, processes: u64, truncated: bool, starts: &[HourStarts]) {
        self.processes += processes;
        self.truncated |= truncated;
        for s in starts {
            let counts = self.starts.entry(s.hour).or_default();
            for (total, n) in counts.iter_mut().zip(s.counts) {
                *total += n;
            }
        }
    }

    /// Adds a decoded pod-period (the raw tail's hours, rows stored before the compact
    /// encoding).
    pub fn add(&mut self, period: PodHour) {
        self.add_period(period, false);
    }

    /// Adds a decoded pod-period that came before every row added so far (the raw head,
    /// read while the rows merged): what depends on the order (an edge's first pids) is
    /// what it would have been with the period added first. Periods added this way go in
    /// last to first; their firsts are earlier than any row's (a head's instants are before
    /// the window's first whole hour).
    pub fn add_before(&mut self, period: PodHour) {
        self.add_period(period, true);
    }

    fn add_period(&mut self, period: PodHour, before: bool) {
        let pod = self.pod(&period.pod_namespace, &period.pod_name);
        let n = period.edges.len();
        for i in 0..n {
            let EdgeRow {
                edge,
                prev_hour,
                sent_delta,
                received_delta,
            } = &period.edges[if before { n - 1 - i } else { i }];
            self.fold(
                pod,
                &RowRef {
                    comm: &edge.comm,
                    exe: edge.exe.as_deref(),
                    unattributed: edge.unattributed,
                    direction: edge.direction,
                    scope: edge.scope,
                    protocol: edge.protocol,
                    peer_addr: edge.peer_addr,
                    port: edge.port,
                    connections: edge.connections,
                    bytes_sent: edge.bytes_sent,
                    bytes_received: edge.bytes_received,
                    sent_delta: *sent_delta,
                    received_delta: *received_delta,
                    first_seen: edge.first_seen,
                    last_seen: edge.last_seen,
                    prev_hour: *prev_hour,
                    pids: &edge.pids,
                },
                before,
            );
        }
        if self.firsts {
            for x in period.executables {
                let image = x.exe.clone().unwrap_or_else(|| x.comm.clone());
                self.executable(pod, &image, x.first_seen, || Kept::Value(x));
            }
            for l in period.listeners {
                self.listener(pod, l.protocol, l.port, l.first_seen, || Kept::Value(l));
            }
        }
        self.totals(period.processes, period.truncated, &period.starts);
    }

    /// Who talked to whom in the window, the first `limit` edges by `order`: ranked on the
    /// interned edges, only those kept built (a day holds a million edges; an answer 20).
    pub fn talkers(self, pods: &PodDirectory, order: EdgeOrder, limit: usize) -> Talkers {
        let strings = &self.strings;
        let all = || {
            self.edges
                .iter()
                .flat_map(|p| p.edges.iter().map(|(id, sum)| (p.pod, id, sum)))
        };
        // The order's figure leads the rank: only edges at least the `limit`-th largest
        // figure can be kept, so only those are ranked (a day holds a million edges; its
        // figures alone are a small array to select in, the edges a large one).
        let figure = |sum: &EdgeSum| match order {
            EdgeOrder::Bytes => sum.bytes_sent + sum.bytes_received,
            EdgeOrder::Connections => sum.connections,
            EdgeOrder::Recent => sum.last_seen,
        };
        let mut figures: Vec<u64> = all().map(|(_, _, sum)| figure(sum)).collect();
        let total_edges = figures.len() as u64;
        let least = match limit {
            0 => u64::MAX,
            _ if figures.len() <= limit => 0,
            _ => *figures.select_nth_unstable_by(limit - 1, |a, b| b.cmp(a)).1,
        };
        drop(figures);
        let mut ranked: Vec<(PodRef, &EdgeId, &EdgeSum)> =
            all().filter(|(_, _, sum)| figure(sum) >= least).collect();
        top(&mut ranked, limit, |(pod, id, sum)| {
            Rank::new(
                order,
                (
                    sum.bytes_sent + sum.bytes_received,
                    sum.connections,
                    sum.last_seen,
                ),
                (strings.bytes(pod.namespace), strings.bytes(pod.name)),
                (
                    strings.bytes(id.comm),
                    (id.exe != NO_STRING).then(|| strings.bytes(id.exe)),
                ),
                (
                    id.direction,
                    id.scope,
                    id.protocol,
                    id.peer_addr,
                    id.port,
                    id.unattributed,
                ),
            )
        });
        Talkers {
            edges: ranked
                .into_iter()
                .map(|(pod, id, sum)| {
                    let pids = sum.pids.iter(&self.spilled).collect();
                    edge_of(strings, pods, (pod, id), sum, pids)
                })
                .collect(),
            flows: self.flows,
            total_edges,
            truncated: self.truncated,
        }
    }

    /// The window's activity, its east-west peers named by `pods`; executables and
    /// listeners still encoded are decoded by `executable` and `listener`.
    pub fn finish<E>(
        self,
        pods: &PodDirectory,
        executable: impl Fn(&[u8]) -> Result<NewExecutable, E>,
        listener: impl Fn(&[u8]) -> Result<NewListener, E>,
    ) -> Result<Activity, E> {
        let (strings, spilled) = (&self.strings, &self.spilled);
        let edges: Vec<Edge> = self
            .edges
            .into_iter()
            .flat_map(|PodEdges { pod, edges, .. }| {
                edges.into_iter().map(move |(id, sum)| {
                    let pids = sum.pids.iter(spilled).collect();
                    edge_of(strings, pods, (pod, &id), &sum, pids)
                })
            })
            .collect();
        Ok(Activity {
            edges,
            flows: self.flows,
            executables: in_order(self.executables.into_values(), executable)?,
            listeners: in_order(self.listeners.into_values(), listener)?,
            processes: self.processes,
            starts: self
                .starts
                .into_iter()
                .map(|(hour, counts)| HourStarts { hour, counts })
                .collect(),
            truncated: self.truncated,
        })
    }

    /// The window as a baseline: its edges summed per workload straight from the interned
    /// ones, none built (a day's baseline holds a million edges: building each with its
    /// strings, then its key, was most of a `new` answer). Executables and listeners still
    /// encoded are decoded by `executable` and `listener`.
    pub fn baseline<E>(
        self,
        executable: impl Fn(&[u8]) -> Result<NewExecutable, E>,
        listener: impl Fn(&[u8]) -> Result<NewListener, E>,
    ) -> Result<Baseline, E> {
        let strings = &self.strings;
        let mut baseline = Baseline::default();
        let workload = |baseline: &mut Baseline, pod: &PodRef| {
            baseline.workload(
                &String::from_utf8_lossy(strings.bytes(pod.namespace)),
                &String::from_utf8_lossy(strings.bytes(pod.name)),
            )
        };
        // Each workload's table sized at once for its pods' edges, then filled pod by pod,
        // each pod's table dropped once taken: the next workload's table takes its memory.
        let workloads: Vec<u32> = self
            .edges
            .iter()
            .map(|p| workload(&mut baseline, &p.pod))
            .collect();
        let mut sizes = vec![0; workloads.iter().max().map_or(0, |&w| w as usize + 1)];
        for (&w, p) in workloads.iter().zip(&self.edges) {
            sizes[w as usize] += p.edges.len();
        }
        for (w, size) in sizes.into_iter().enumerate() {
            baseline.reserve(w as u32, size);
        }
        // The baseline's image id of each of the merger's strings, once known.
        let mut images = vec![NO_STRING; strings.names.len()];
        for (p, workload) in self.edges.into_iter().zip(workloads) {
            for (id, sum) in p.edges {
                let name = if id.exe == NO_STRING { id.comm } else { id.exe };
                let image = match images.get(name as usize) {
                    Some(&known) if known != NO_STRING => known,
                    _ => {
                        let image = baseline.image(strings.bytes(name));
                        if let Some(slot) = images.get_mut(name as usize) {
                            *slot = image;
                        }
                        image
                    }
                };
                baseline.edge(
                    (workload, image),
                    (id.direction, id.peer_addr, id.port),
                    sum.bytes_sent + sum.bytes_received,
                );
            }
        }
        baseline.rest(&Activity {
            edges: Vec::new(),
            flows: self.flows,
            executables: in_order(self.executables.into_values(), executable)?,
            listeners: in_order(self.listeners.into_values(), listener)?,
            processes: self.processes,
            truncated: self.truncated,
            starts: Vec::new(),
        });
        Ok(baseline)
    }
}

/// Moves the pids `pids` keeps in `theirs` (another merger's `spilled`) into `mine`.
fn take_spilled(pids: &mut Pids, theirs: &mut [Vec<u32>], mine: &mut Vec<Vec<u32>>) {
    if pids.more != 0 {
        let more = theirs
            .get_mut(pids.more as usize - 1)
            .map(std::mem::take)
            .unwrap_or_default();
        mine.push(more);
        pids.more = mine.len() as u32;
    }
}

/// The answer's form of an interned edge with its `pids`, its peer named by `pods`.
fn edge_of(
    strings: &Interner,
    pods: &PodDirectory,
    (pod, id): (PodRef, &EdgeId),
    sum: &EdgeSum,
    mut pids: Vec<u32>,
) -> Edge {
    let peer = pods.get(&id.peer_addr);
    pids.sort_unstable();
    Edge {
        pod_name: strings.string(pod.name),
        pod_namespace: strings.string(pod.namespace),
        comm: strings.bytes(id.comm).to_vec(),
        exe: (id.exe != NO_STRING).then(|| strings.bytes(id.exe).to_vec()),
        direction: id.direction,
        scope: id.scope,
        protocol: id.protocol,
        peer_addr: id.peer_addr,
        port: id.port,
        peer_pod_name: peer.map(|p| p.0.clone()),
        peer_pod_namespace: peer.map(|p| p.1.clone()),
        connections: sum.connections,
        bytes_sent: sum.bytes_sent,
        bytes_received: sum.bytes_received,
        first_seen: sum.first_seen,
        last_seen: sum.last_seen,
        pids,
        unattributed: id.unattributed,
    }
}

/// Keeps the earliest of `key` (the first to come among equals).
fn keep_first<K: std::hash::Hash + Eq, T>(
    map: &mut HashMap<K, First<T>>,
    key: K,
    at: u64,
    order: usize,
    kept: impl FnOnce() -> Kept<T>,
) {
    match map.get_mut(&key) {
        Some(known) if known.at <= at => {}
        Some(known) => {
            *known = First {
                at,
                order,
                kept: kept(),
            }
        }
        None => {
            map.insert(
                key,
                First {
                    at,
                    order,
                    kept: kept(),
                },
            );
        }
    }
}

/// Keeps the earlier of `first` and what `map` holds of `key` (by instant, then order).
fn keep_earlier<K: std::hash::Hash + Eq, T>(
    map: &mut HashMap<K, First<T>>,
    key: K,
    first: First<T>,
) {
    match map.entry(key) {
        Entry::Occupied(mut o) => {
            if (first.at, first.order) < (o.get().at, o.get().order) {
                o.insert(first);
            }
        }
        Entry::Vacant(v) => {
            v.insert(first);
        }
    }
}

/// The firsts oldest first (ties in the order they came), decoded.
fn in_order<T, E>(
    firsts: impl Iterator<Item = First<T>>,
    decode: impl Fn(&[u8]) -> Result<T, E>,
) -> Result<Vec<T>, E> {
    let mut firsts: Vec<First<T>> = firsts.collect();
    firsts.sort_by_key(|f| (f.at, f.order));
    firsts
        .into_iter()
        .map(|f| match f.kept {
            Kept::Value(v) => Ok(v),
            Kept::Encoded(bytes) => decode(&bytes),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pids: &[u32]) -> RowRef<'_> {
        RowRef {
            comm: b"curl",
            exe: None,
            unattributed: false,
            direction: Direction::Outbound,
            scope: Scope::NorthSouth,
            protocol: Protocol::Tcp,
            peer_addr: IpAddr::from([203, 0, 113, 7]),
            port: 443,
            connections: 1,
            bytes_sent: 10,
            bytes_received: 5,
            sent_delta: 0,
            received_delta: 0,
            first_seen: 1,
            last_seen: 2,
            prev_hour: None,
            pids,
        }
    }

    #[test]
    fn an_edge_keeps_its_first_pids_past_those_held_inline() {
        // Seven rows of one edge naming 21 distinct pids (100 again in each): the first
        // `MAX_EDGE_PIDS` in the order they came, whether one merger took every row or two
        // took them apart and one absorbed the other.
        let rows: Vec<Vec<u32>> = (0..7)
            .map(|i| vec![100 + 3 * i, 101 + 3 * i, 102 + 3 * i, 100])
            .collect();
        let pods = PodDirectory::default();
        let mut one = Merger::new(0, FlowFilter::default(), false);
        let pod = one.pod("shop", "web-0");
        for pids in &rows {
            one.edge(pod, &row(pids));
        }
        let one = one.talkers(&pods, EdgeOrder::Bytes, 10);
        let first: Vec<u32> = (100..100 + MAX_EDGE_PIDS as u32).collect();
        assert_eq!(one.edges.len(), 1);
        assert_eq!(one.edges[0].pids, first);
        assert_eq!(one.edges[0].connections, 7);
        for split in [1, 2, 5] {
            let mut a = Merger::new(0, FlowFilter::default(), false);
            let mut b = a.apart();
            let (pa, pb) = (a.pod("shop", "web-0"), b.pod("shop", "web-0"));
            rows[..split].iter().for_each(|pids| a.edge(pa, &row(pids)));
            rows[split..].iter().for_each(|pids| b.edge(pb, &row(pids)));
            a.absorb(b);
            assert_eq!(
                a.talkers(&pods, EdgeOrder::Bytes, 10).edges,
                one.edges,
                "{split}"
            );
        }
    }

    /// A period of pod `shop/web-0` with one edge row to port `port` naming `pids`.
    fn period(port: u16, pids: &[u32]) -> PodHour {
        let r = row(pids);
        PodHour {
            pod_namespace: "shop".into(),
            pod_name: "web-0".into(),
            edges: vec![EdgeRow {
                edge: Edge {
                    pod_name: "web-0".into(),
                    pod_namespace: "shop".into(),
                    comm: r.comm.to_vec(),
                    exe: None,
                    direction: r.direction,
                    scope: r.scope,
                    protocol: r.protocol,
                    peer_addr: r.peer_addr,
                    port,
                    peer_pod_name: None,
                    peer_pod_namespace: None,
                    connections: 1,
                    bytes_sent: 10,
                    bytes_received: 5,
                    first_seen: 1,
                    last_seen: 2,
                    pids: pids.to_vec(),
                    unattributed: false,
                },
                prev_hour: None,
                sent_delta: 0,
                received_delta: 0,
            }],
            ..PodHour::default()
        }
    }

    #[test]
    fn periods_added_before_the_rows_answer_as_if_added_first() {
        // A head of two periods and rows whose pids together pass `MAX_EDGE_PIDS`, on an
        // edge the rows have (443) and one they do not (80): the head added after the
        // rows, last period first, keeps the pids one merger in time order keeps.
        let head = [
            period(443, &[1, 2, 3]),
            period(443, &[4, 5, 1, 6]),
            period(80, &[7]),
        ];
        let rows: Vec<PodHour> = (0..4)
            .map(|i| period(443, &[10 + 3 * i, 11 + 3 * i, 12 + 3 * i, 5]))
            .collect();
        let pods = PodDirectory::default();
        let mut one = Merger::new(0, FlowFilter::default(), false);
        head.iter().chain(&rows).for_each(|p| one.add(p.clone()));
        let one = one.talkers(&pods, EdgeOrder::Bytes, 10);
        let mut pids: Vec<u32> = [1, 2, 3, 4, 5, 6].into();
        pids.extend(10..20);
        assert_eq!(one.edges[0].pids, pids);
        let mut later = Merger::new(0, FlowFilter::default(), false);
        rows.iter().for_each(|p| later.add(p.clone()));
        head.iter().rev().for_each(|p| later.add_before(p.clone()));
        let later = later.talkers(&pods, EdgeOrder::Bytes, 10);
        assert_eq!(later.edges, one.edges);
        assert_eq!(later.flows, one.flows);
    }

    #[test]
    fn a_pod_taken_from_the_other_half_still_finds_its_edges() {
        // Two pods, each merged by one half; the second half's pod, taken in by the first,
        // then gets rows of an edge it has and of a new one: the answer one merger of every
        // row gives (its edges re-keyed into the first half's strings and found again).
        let row_to = |port: u16, pids: &'static [u32]| RowRef {
            port,
            exe: Some(&b"/usr/bin/curl"[..]),
            ..row(pids)
        };
        let rows = [
            ("web-0", row_to(443, &[1])),
            ("api-0", row_to(80, &[2])),
            ("api-0", row_to(443, &[3])),
            ("api-0", row_to(80, &[4, 5, 6, 7, 8])),
            ("api-0", row_to(8080, &[9])),
        ];
        let pods = PodDirectory::default();
        let mut one = Merger::new(0, FlowFilter::default(), false);
        for (name, r) in &rows {
            let pod = one.pod("shop", name);
            one.edge(pod, r);
        }
        let one = one.talkers(&pods, EdgeOrder::Bytes, 10);
        assert_eq!(one.edges.len(), 4);
        let mut a = Merger::new(0, FlowFilter::default(), false);
        let mut b = a.apart();
        let pod = a.pod("shop", "web-0");
        a.edge(pod, &rows[0].1);
        for (name, r) in &rows[1..3] {
            let pod = b.pod("shop", name);
            b.edge(pod, r);
        }
        a.absorb(b);
        for (name, r) in &rows[3..] {
            let pod = a.pod("shop", name);
            a.edge(pod, r);
        }
        let mut two = a.talkers(&pods, EdgeOrder::Bytes, 10);
        let mut one = one.edges;
        for edges in [&mut two.edges, &mut one] {
            edges.sort_by(|x, y| (&x.pod_name, x.port).cmp(&(&y.pod_name, y.port)));
        }
        assert_eq!(two.edges, one);
        assert_eq!(two.edges[0].pids, [2, 4, 5, 6, 7, 8]);
    }
}
