//! The stored form of one pod's hour or day: a compact encoding read without allocating per
//! row. A month's question reads tens of thousands of these; the protobuf form they replace
//! decoded every edge into owned strings (about 40 µs a pod-hour).
//!
//! ```text
//! 0x00 0x02                    magic: no protobuf message starts with 0x00 (field 0)
//! strings                      n, then n × (len, bytes): executables' names, rule ids
//! edges                        n, then per row: comm (string index), exe (0: none, else
//!                              index + 1), flags (direction | scope << 4 | protocol << 8 |
//!                              unattributed << 12), peer (4 or 16, then its bytes), port,
//!                              connections, bytes sent, received, sent delta, received
//!                              delta, first and last seen (zigzag ns from the period's
//!                              start), previous hour (0: none, else 1 + zigzag hours before
//!                              the start), pids (n, then each)
//! executables                  n, then: image (string index), first seen (zigzag), the
//!                              answer's protobuf (len, bytes), decoded only for a window's first
//! listeners                    n, then: protocol, port, first seen (zigzag), protobuf
//! alerts                       n, then: rule (string index), severity, count
//! processes, truncated         varint, byte
//! starts                       n, then: hour (hours from the start), 6 counts
//! ```
//! Every number is a LEB128 varint. Rows written before this encoding (protobuf) are still
//! read (`codec`).

use std::net::IpAddr;

use prost::Message;

use super::codec::{self, corrupt, SEVERITIES};
use crate::aggregator::store::{RollupSegment, StoreError};
use crate::investigate::rollup::{
    AlertCount, EdgeRow, HourStarts, Kept, Merger, PodHour, RowRef, HOUR, STARTS,
};
use crate::investigate::{Edge, NewExecutable, NewListener};
use crate::model::{Direction, Protocol, Scope, Severity};
use crate::proto::v1 as pb;
use crate::wire::{self, Limits};

const MAGIC: [u8; 2] = [0x00, 0x02];

const DIRECTIONS: [Direction; 4] = [
    Direction::Unknown,
    Direction::Inbound,
    Direction::Outbound,
    Direction::Listen,
];
const SCOPES: [Scope; 4] = [
    Scope::Unspecified,
    Scope::Local,
    Scope::EastWest,
    Scope::NorthSouth,
];
// Every protocol a listener may have: `index_of` would store an unknown one as TCP.
const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Packet];

fn index_of<T: PartialEq>(all: &[T], v: &T) -> u64 {
    all.iter().position(|x| x == v).unwrap_or(0) as u64
}

// === Writing ===

#[derive(Default)]
struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    fn signed(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.out.extend_from_slice(b);
    }
}

/// Interns the strings of one period in order of first use, by hash: a workload names its
/// own processes (comm by prctl, exe by path), so a period may hold millions of distinct
/// ones, and a search of the table per row would be quadratic.
#[derive(Default)]
struct Strings {
    ids: std::collections::HashMap<Vec<u8>, u64>,
    order: Vec<Vec<u8>>,
}

impl Strings {
    fn id(&mut self, s: &[u8]) -> u64 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.order.len() as u64;
        self.order.push(s.to_vec());
        self.ids.insert(s.to_vec(), id);
        id
    }
}

fn image(comm: &[u8], exe: &Option<Vec<u8>>) -> Vec<u8> {
    exe.clone().unwrap_or_else(|| comm.to_vec())
}

/// The stored form of `p`, a period starting at `start` (ns).
pub fn encode(p: &PodHour, start: u64) -> Vec<u8> {
    let since = |t: u64| t as i64 - start as i64;
    let mut strings = Strings::default();
    let mut w = Writer::default();
    // The body after the string table, written first: the table is known at its end.
    w.varint(p.edges.len() as u64);
    for r in &p.edges {
        let e = &r.edge;
        w.varint(strings.id(&e.comm));
        w.varint(e.exe.as_ref().map_or(0, |x| strings.id(x) + 1));
        w.varint(
            index_of(&DIRECTIONS, &e.direction)
                | index_of(&SCOPES, &e.scope) << 4
                | index_of(&PROTOCOLS, &e.protocol) << 8
                | u64::from(e.unattributed) << 12,
        );
        match e.peer_addr {
            IpAddr::V4(a) => {
                w.out.push(4);
                w.out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                w.out.push(6);
                w.out.extend_from_slice(&a.octets());
            }
        }
        w.varint(u64::from(e.port));
        for v in [
            e.connections,
            e.bytes_sent,
            e.bytes_received,
            r.sent_delta,
            r.received_delta,
        ] {
            w.varint(v);
        }
        w.signed(since(e.first_seen));
        w.signed(since(e.last_seen));
        match r.prev_hour {
            None => w.varint(0),
            Some(prev) => {
                let hours = (start as i64 - prev as i64) / HOUR as i64;
                w.varint(1 + ((hours << 1) ^ (hours >> 63)) as u64);
            }
        }
        w.varint(e.pids.len() as u64);
        for &pid in &e.pids {
            w.varint(u64::from(pid));
        }
    }
    w.varint(p.executables.len() as u64);
    for x in &p.executables {
        w.varint(strings.id(&image(&x.comm, &x.exe)));
        w.signed(since(x.first_seen));
        w.bytes(&wire::new_executable_to_proto(x).encode_to_vec());
    }
    w.varint(p.listeners.len() as u64);
    for l in &p.listeners {
        w.varint(index_of(&PROTOCOLS, &l.protocol));
        w.varint(u64::from(l.port));
        w.signed(since(l.first_seen));
        w.bytes(&wire::new_listener_to_proto(l).encode_to_vec());
    }
    w.varint(p.alerts.len() as u64);
    for a in &p.alerts {
        w.varint(strings.id(a.rule_id.as_bytes()));
        w.varint(index_of(&SEVERITIES, &a.severity));
        w.varint(a.count);
    }
    w.varint(p.processes);
    w.out.push(u8::from(p.truncated));
    w.varint(p.starts.len() as u64);
    for s in &p.starts {
        w.varint(s.hour.saturating_sub(start) / HOUR);
        for c in s.counts {
            w.varint(c);
        }
    }
    let mut head = Writer::default();
    head.out.extend_from_slice(&MAGIC);
    head.varint(strings.order.len() as u64);
    for s in &strings.order {
        head.bytes(s);
    }
    head.out.extend_from_slice(&w.out);
    head.out
}

// === Reading ===

struct Reader<'a> {
    rest: &'a [u8],
}

type Bad = &'static str;

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, Bad> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.rest.split_first().ok_or("truncated")?;
            self.rest = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long")
    }

    fn signed(&mut self) -> Result<i64, Bad> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        if n > self.rest.len() {
            return Err("truncated");
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn bytes(&mut self) -> Result<&'a [u8], Bad> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| "length")?)
    }

    /// A count of items each at least one byte long: never more than the bytes left.
    fn count(&mut self) -> Result<usize, Bad> {
        let n = self.varint()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.rest.len())
            .ok_or("count beyond the body")
    }

    fn small(&mut self) -> Result<u16, Bad> {
        u16::try_from(self.varint()?).map_err(|_| "number out of range")
    }
}

fn pick<T: Copy>(all: &[T], i: u64) -> Result<T, Bad> {
    all.get(i as usize).copied().ok_or("unknown enum value")
}

fn at(start: u64, delta: i64) -> u64 {
    (start as i64).wrapping_add(delta) as u64
}

/// The visitor of a body's parts (merging borrows; full decoding owns).
trait Visit<'a> {
    fn edge(&mut self, row: &RowRef);
    fn wants_firsts(&self) -> bool;
    fn executable(&mut self, image: &'a [u8], first_seen: u64, proto: &'a [u8]);
    fn listener(&mut self, protocol: Protocol, port: u16, first_seen: u64, proto: &'a [u8]);
    fn alert(&mut self, rule: &'a [u8], severity: Severity, count: u64);
    fn totals(&mut self, processes: u64, truncated: bool, starts: &[HourStarts]);
}

fn walk<'a>(body: &'a [u8], start: u64, v: &mut dyn Visit<'a>) -> Result<(), Bad> {
    let mut r = Reader {
        rest: body.strip_prefix(&MAGIC).ok_or("not a compact rollup")?,
    };
    let n = r.count()?;
    let mut strings = Vec::with_capacity(n);
    for _ in 0..n {
        strings.push(r.bytes()?);
    }
    let string = |i: u64| strings.get(i as usize).copied().ok_or("unknown string");
    let mut pids = Vec::new();
    for _ in 0..r.count()? {
        let comm = string(r.varint()?)?;
        let exe = match r.varint()? {
            0 => None,
            i => Some(string(i - 1)?),
        };
        let flags = r.varint()?;
        let direction = pick(&DIRECTIONS, flags & 0xf)?;
        let scope = pick(&SCOPES, flags >> 4 & 0xf)?;
        let protocol = pick(&PROTOCOLS, flags >> 8 & 0xf)?;
        let peer_addr = match r.take(1)? {
            [4] => IpAddr::from(<[u8; 4]>::try_from(r.take(4)?).map_err(|_| "address")?),
            [6] => IpAddr::from(<[u8; 16]>::try_from(r.take(16)?).map_err(|_| "address")?),
            _ => return Err("unknown address family"),
        };
        let port = r.small()?;
        let mut counters = [0u64; 5];
        for c in &mut counters {
            *c = r.varint()?;
        }
        let first_seen = at(start, r.signed()?);
        let last_seen = at(start, r.signed()?);
        let prev_hour = match r.varint()? {
            0 => None,
            z => {
                let z = z - 1;
                let hours = (z >> 1) as i64 ^ -((z & 1) as i64);
                Some(at(start, -hours.wrapping_mul(HOUR as i64)))
            }
        };
        pids.clear();
        for _ in 0..r.count()? {
            pids.push(u32::try_from(r.varint()?).map_err(|_| "pid")?);
        }
        v.edge(&RowRef {
            comm,
            exe,
            unattributed: flags >> 12 & 1 == 1,
            direction,
            scope,
            protocol,
            peer_addr,
            port,
            connections: counters[0],
            bytes_sent: counters[1],
            bytes_received: counters[2],
            sent_delta: counters[3],
            received_delta: counters[4],
            first_seen,
            last_seen,
            prev_hour,
            pids: &pids,
        });
    }
    let firsts = v.wants_firsts();
    for _ in 0..r.count()? {
        let image = string(r.varint()?)?;
        let first_seen = at(start, r.signed()?);
        let proto = r.bytes()?;
        if firsts {
            v.executable(image, first_seen, proto);
        }
    }
    for _ in 0..r.count()? {
        let protocol = pick(&PROTOCOLS, r.varint()?)?;
        let port = r.small()?;
        let first_seen = at(start, r.signed()?);
        let proto = r.bytes()?;
        if firsts {
            v.listener(protocol, port, first_seen, proto);
        }
    }
    for _ in 0..r.count()? {
        let rule = string(r.varint()?)?;
        let severity = pick(&SEVERITIES, r.varint()?)?;
        v.alert(rule, severity, r.varint()?);
    }
    let processes = r.varint()?;
    let truncated = r.take(1)?[0] != 0;
    let n = r.count()?;
    let mut starts = Vec::with_capacity(n.min(24));
    for _ in 0..n {
        let hour = start.saturating_add(r.varint()?.min(366 * 24) * HOUR);
        let mut counts = [0u64; STARTS];
        for c in &mut counts {
            *c = r.varint()?;
        }
        starts.push(HourStarts { hour, counts });
    }
    v.totals(processes, truncated, &starts);
    if !r.rest.is_empty() {
        return Err("bytes after the end");
    }
    Ok(())
}

fn what(s: &RollupSegment) -> String {
    format!("rollup of {}/{} at {}", s.namespace, s.pod, s.hour)
}

struct Merging<'m> {
    merger: &'m mut Merger,
    pod: crate::investigate::rollup::PodRef,
}

impl<'a> Visit<'a> for Merging<'_> {
    fn edge(&mut self, row: &RowRef) {
        self.merger.edge(self.pod, row);
    }
    fn wants_firsts(&self) -> bool {
        self.merger.wants_firsts()
    }
    fn executable(&mut self, image: &'a [u8], first_seen: u64, proto: &'a [u8]) {
        self.merger.executable(self.pod, image, first_seen, || {
            Kept::Encoded(proto.to_vec())
        });
    }
    fn listener(&mut self, protocol: Protocol, port: u16, first_seen: u64, proto: &'a [u8]) {
        self.merger
            .listener(self.pod, protocol, port, first_seen, || {
                Kept::Encoded(proto.to_vec())
            });
    }
    fn alert(&mut self, _: &'a [u8], _: Severity, _: u64) {}
    fn totals(&mut self, processes: u64, truncated: bool, starts: &[HourStarts]) {
        self.merger.totals(processes, truncated, starts);
    }
}

/// Folds one stored pod-period into `merger` (rows of either encoding).
pub fn merge(s: &RollupSegment, merger: &mut Merger) -> Result<(), StoreError> {
    if !s.body.starts_with(&MAGIC) {
        merger.add(codec::decode_pod_hour(s)?);
        return Ok(());
    }
    let pod = merger.pod(&s.namespace, &s.pod);
    walk(&s.body, s.hour, &mut Merging { merger, pod }).map_err(|e| corrupt(&what(s), e))
}

/// An executable kept encoded by [`merge`], decoded.
pub fn decode_executable(bytes: &[u8]) -> Result<NewExecutable, StoreError> {
    pb::NewExecutable::decode(bytes)
        .map_err(|e| corrupt("rollup executable", e))
        .and_then(|x| {
            wire::new_executable_from_proto(x, &Limits::default())
                .map_err(|e| corrupt("rollup executable", e))
        })
}

/// A listener kept encoded by [`merge`], decoded.
pub fn decode_listener(bytes: &[u8]) -> Result<NewListener, StoreError> {
    pb::NewListener::decode(bytes)
        .map_err(|e| corrupt("rollup listener", e))
        .and_then(|l| wire::new_listener_from_proto(l).map_err(|e| corrupt("rollup listener", e)))
}

struct Owning {
    period: PodHour,
    error: Option<StoreError>,
}

impl<'a> Visit<'a> for Owning {
    fn edge(&mut self, r: &RowRef) {
        self.period.edges.push(EdgeRow {
            edge: Edge {
                pod_name: self.period.pod_name.clone(),
                pod_namespace: self.period.pod_namespace.clone(),
                comm: r.comm.to_vec(),
                exe: r.exe.map(<[u8]>::to_vec),
                direction: r.direction,
                scope: r.scope,
                protocol: r.protocol,
                peer_addr: r.peer_addr,
                port: r.port,
                peer_pod_name: None,
                peer_pod_namespace: None,
                connections: r.connections,
                bytes_sent: r.bytes_sent,
                bytes_received: r.bytes_received,
                first_seen: r.first_seen,
                last_seen: r.last_seen,
                pids: r.pids.to_vec(),
                unattributed: r.unattributed,
            },
            prev_hour: r.prev_hour,
            sent_delta: r.sent_delta,
            received_delta: r.received_delta,
        });
    }
    fn wants_firsts(&self) -> bool {
        true
    }
    fn executable(&mut self, _: &'a [u8], _: u64, proto: &'a [u8]) {
        match decode_executable(proto) {
            Ok(x) => self.period.executables.push(x),
            Err(e) => self.error = Some(e),
        }
    }
    fn listener(&mut self, _: Protocol, _: u16, _: u64, proto: &'a [u8]) {
        match decode_listener(proto) {
            Ok(l) => self.period.listeners.push(l),
            Err(e) => self.error = Some(e),
        }
    }
    fn alert(&mut self, rule: &'a [u8], severity: Severity, count: u64) {
        self.period.alerts.push(AlertCount {
            rule_id: String::from_utf8_lossy(rule).into_owned(),
            severity,
            count,
        });
    }
    fn totals(&mut self, processes: u64, truncated: bool, starts: &[HourStarts]) {
        self.period.processes = processes;
        self.period.truncated = truncated;
        self.period.starts = starts.to_vec();
    }
}

/// One stored pod-period, decoded (rows of either encoding).
pub fn decode(s: &RollupSegment) -> Result<PodHour, StoreError> {
    if !s.body.starts_with(&MAGIC) {
        return codec::decode_pod_hour(s);
    }
    let mut owning = Owning {
        period: PodHour {
            pod_namespace: s.namespace.clone(),
            pod_name: s.pod.clone(),
            ..PodHour::default()
        },
        error: None,
    };
    walk(&s.body, s.hour, &mut owning).map_err(|e| corrupt(&what(s), e))?;
    match owning.error {
        Some(e) => Err(e),
        None => Ok(owning.period),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::investigate::{FlowFilter, PodDirectory};

    fn period(start: u64) -> PodHour {
        let edge = |peer: &str, port: u16, exe: Option<&[u8]>| Edge {
            pod_name: "web-0".into(),
            pod_namespace: "shop".into(),
            comm: b"curl".to_vec(),
            exe: exe.map(<[u8]>::to_vec),
            direction: Direction::Outbound,
            scope: Scope::NorthSouth,
            protocol: Protocol::Tcp,
            peer_addr: peer.parse().expect("ip"),
            port,
            peer_pod_name: None,
            peer_pod_namespace: None,
            connections: 3,
            bytes_sent: 1 << 40,
            bytes_received: 7,
            // A socket born before the period.
            first_seen: start - 5 * HOUR,
            last_seen: start + 10,
            pids: vec![7, 4_000_000],
            unattributed: exe.is_none(),
        };
        PodHour {
            pod_namespace: "shop".into(),
            pod_name: "web-0".into(),
            edges: vec![
                EdgeRow {
                    edge: edge("203.0.113.7", 443, Some(b"/usr/bin/curl")),
                    prev_hour: Some(start - 3 * HOUR),
                    sent_delta: 11,
                    received_delta: 0,
                },
                EdgeRow {
                    edge: edge("2001:db8::1", 8443, None),
                    prev_hour: None,
                    sent_delta: 0,
                    received_delta: 5,
                },
                EdgeRow {
                    edge: edge("203.0.113.7", 443, Some(b"/usr/bin/curl")),
                    prev_hour: Some(start),
                    sent_delta: 1,
                    received_delta: 2,
                },
            ],
            executables: vec![NewExecutable {
                pod_name: "web-0".into(),
                pod_namespace: "shop".into(),
                comm: b"x".to_vec(),
                exe: Some(b"/tmp/x".to_vec()),
                first_seen: start + 3,
                process: crate::fixtures::process(9, b"x"),
            }],
            listeners: vec![NewListener {
                pod_name: "web-0".into(),
                pod_namespace: "shop".into(),
                protocol: Protocol::Udp,
                local_addr: "0.0.0.0".parse().expect("ip"),
                port: 5353,
                comm: b"x".to_vec(),
                exe: None,
                first_seen: start + 4,
            }],
            alerts: vec![AlertCount {
                rule_id: "PF-SHELL".into(),
                severity: Severity::High,
                count: 2,
            }],
            processes: 4,
            truncated: true,
            starts: vec![HourStarts {
                hour: start + HOUR,
                counts: [1, 2, 3, 4, 5, 6],
            }],
        }
    }

    fn segment(p: &PodHour, start: u64, body: Vec<u8>) -> RollupSegment {
        RollupSegment {
            hour: start,
            namespace: p.pod_namespace.clone(),
            pod: p.pod_name.clone(),
            body,
        }
    }

    #[test]
    fn a_period_reads_back_as_written_and_merges_as_its_decoded_form() {
        let start = 1_000 * HOUR;
        let p = period(start);
        let s = segment(&p, start, encode(&p, start));
        assert_eq!(decode(&s).expect("decoded"), p);
        let fold = |add: &dyn Fn(&mut Merger)| {
            let mut merger = Merger::new(start - 4 * HOUR, FlowFilter::default(), true);
            add(&mut merger);
            let mut a = merger
                .finish(&PodDirectory::default(), decode_executable, decode_listener)
                .expect("finished");
            a.edges.sort_by_key(|e| e.port);
            a
        };
        let borrowed = fold(&|m| merge(&s, m).expect("merged"));
        let owned = fold(&|m| m.add(p.clone()));
        assert_eq!(borrowed, owned);
        assert_eq!(borrowed.executables.len(), 1);
        assert_eq!(borrowed.starts, p.starts);
    }

    #[test]
    fn a_packet_socket_stays_a_packet_socket_across_rollups_and_the_raw_tail() {
        // A packet socket is a listener of protocol PACKET on port 0: stored as TCP, the
        // rolled-up hour's and the raw tail's sightings of it were two "new" listeners.
        let start = 1_000 * HOUR;
        let mut p = period(start);
        p.listeners[0].protocol = Protocol::Packet;
        p.listeners[0].port = 0;
        let s = segment(&p, start, encode(&p, start));
        assert_eq!(decode(&s).expect("decoded"), p);
        let mut tail = p.clone();
        tail.edges.clear();
        tail.executables.clear();
        tail.listeners[0].first_seen = start + HOUR + 1;
        let mut merger = Merger::new(start, FlowFilter::default(), true);
        merge(&s, &mut merger).expect("merged");
        merger.add(tail);
        let a = merger
            .finish(&PodDirectory::default(), decode_executable, decode_listener)
            .expect("finished");
        assert_eq!(a.listeners.len(), 1, "{:?}", a.listeners);
        assert_eq!(a.listeners[0].protocol, Protocol::Packet);
        assert_eq!(a.listeners[0].first_seen, start + 4);
    }

    #[test]
    fn rows_stored_as_protobuf_are_still_read() {
        let start = 1_000 * HOUR;
        let mut p = period(start);
        p.starts.clear();
        let s = segment(&p, start, codec::encode_pod_hour(&p));
        assert_eq!(decode(&s).expect("decoded"), p);
        let mut merger = Merger::new(start, FlowFilter::default(), true);
        merge(&s, &mut merger).expect("merged");
        let pods = PodDirectory::default();
        let a = merger
            .finish(&pods, decode_executable, decode_listener)
            .expect("finished");
        assert_eq!(a.flows, 3 + 3, "the first-seen row and the one from before");
    }

    #[test]
    fn damaged_bodies_are_refused_not_panicked_on() {
        let start = 1_000 * HOUR;
        let p = period(start);
        let body = encode(&p, start);
        for cut in 2..body.len() {
            let s = segment(&p, start, body[..cut].to_vec());
            assert!(decode(&s).is_err(), "cut at {cut}");
            let mut merger = Merger::new(start, FlowFilter::default(), true);
            assert!(merge(&s, &mut merger).is_err(), "cut at {cut}");
        }
        // Every byte flipped in turn: an error or some answer, never a panic.
        for i in 2..body.len() {
            let mut bad = body.clone();
            bad[i] ^= 0xff;
            let _ = decode(&segment(&p, start, bad));
        }
        let mut long = body;
        long.push(0);
        assert!(
            decode(&segment(&p, start, long)).is_err(),
            "bytes after the end"
        );
    }
}
