//! Pure scoring: ground truth against what the collector reported. No I/O, unit-tested with
//! synthetic captures whose scores are known.

use std::collections::HashMap;

use procflow::model::{FlowPhase, ProcessPhase, Record};

/// One connection the bench made: both ends' local ports and the payload each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruthConn {
    pub client_port: u16,
    pub server_port: u16,
    pub up: u64,
    pub down: u64,
    pub lifetime_ms: u64,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct FlowScore {
    /// Sockets (two per connection) expected.
    pub sockets: u64,
    /// Sockets with exactly one END.
    pub one_end: u64,
    /// ENDs beyond the number of connections a port pair carried (must be 0).
    pub duplicate_ends: u64,
    /// Socket cookies with more than one END in the collector's output (must be 0).
    pub duplicate_cookie_ends: u64,
    /// Of the ENDs, those carrying the exact payload both ways.
    pub exact_bytes: u64,
    /// ENDs whose peer the kernel had zeroed (reset before any dump).
    pub without_peer: u64,
    /// Sockets with a START (seen alive in a dump), and of those attributed by fd to a pid.
    pub started: u64,
    pub attributed_fd: u64,
    /// (lifetime bucket label, sockets, attributed by fd).
    pub attribution_by_lifetime: Vec<(String, u64, u64)>,
}

pub const LIFETIME_BUCKETS_MS: [(u64, u64, &str); 5] = [
    (0, 1, "<1ms"),
    (1, 10, "1-10ms"),
    (10, 50, "10-50ms"),
    (50, 200, "50-200ms"),
    (200, u64::MAX, ">=200ms"),
];

fn bucket(ms: u64) -> usize {
    LIFETIME_BUCKETS_MS
        .iter()
        .position(|(lo, hi, _)| ms >= *lo && ms < *hi)
        .unwrap_or(0)
}

/// Matches TCP flow records on loopback against the connections made. `local_port` +
/// `remote_port` identify each end; over a long run ports are reused, so each port pair holds
/// a multiset of connections and ENDs are matched by count and by exact byte pairs.
pub fn score_flows(truth: &[TruthConn], records: &[Record]) -> FlowScore {
    type Key = (u16, u16);
    let mut ends: HashMap<Key, Vec<&procflow::model::FlowRecord>> = HashMap::new();
    let mut starts: HashMap<Key, (u64, u64)> = HashMap::new();
    let mut ends_per_cookie: HashMap<u64, u64> = HashMap::new();
    for r in records {
        let Record::Flow(f) = r else { continue };
        if f.protocol != procflow::model::Protocol::Tcp {
            continue;
        }
        if f.phase == FlowPhase::End {
            *ends_per_cookie.entry(f.cookie).or_default() += 1;
        }
        let Some(remote) = f.remote_port else {
            continue;
        };
        let key = (f.local_port, remote);
        match f.phase {
            FlowPhase::End => ends.entry(key).or_default().push(f),
            FlowPhase::Start => {
                let e = starts.entry(key).or_default();
                e.0 += 1;
                if f.attribution == procflow::model::Attribution::Fd && f.pid.is_some() {
                    e.1 += 1;
                }
            }
            FlowPhase::Update => {}
        }
    }
    let without_peer = records
        .iter()
        .filter(|r| {
            matches!(r, Record::Flow(f) if f.protocol == procflow::model::Protocol::Tcp
                && f.phase == FlowPhase::End
                && f.remote_port.is_none_or(|p| p == 0))
        })
        .count() as u64;
    let mut score = FlowScore {
        without_peer,
        duplicate_cookie_ends: ends_per_cookie.values().filter(|n| **n > 1).count() as u64,
        attribution_by_lifetime: LIFETIME_BUCKETS_MS
            .iter()
            .map(|(_, _, l)| (l.to_string(), 0, 0))
            .collect(),
        ..FlowScore::default()
    };
    let mut expected: HashMap<Key, Vec<(u64, u64, u64)>> = HashMap::new();
    for t in truth {
        expected
            .entry((t.client_port, t.server_port))
            .or_default()
            .push((t.up, t.down, t.lifetime_ms));
        expected
            .entry((t.server_port, t.client_port))
            .or_default()
            .push((t.down, t.up, t.lifetime_ms));
    }
    for (key, conns) in &expected {
        let n = conns.len() as u64;
        score.sockets += n;
        let got = ends.get(key).map(Vec::as_slice).unwrap_or(&[]);
        score.one_end += n.min(got.len() as u64);
        score.duplicate_ends += (got.len() as u64).saturating_sub(n);
        if got.len() as u64 > n && std::env::var_os("PF_BENCH_DEBUG").is_some() {
            eprintln!("more ENDs than connections on {key:?}: expected {conns:?}, ENDs:");
            for f in got {
                eprintln!("  {f:?}");
            }
        }
        let mut unmatched: Vec<(Option<u64>, Option<u64>)> = got
            .iter()
            .map(|f| (f.bytes_sent, f.bytes_received))
            .collect();
        for (sent, received, _) in conns {
            if let Some(i) = unmatched
                .iter()
                .position(|e| *e == (Some(*sent), Some(*received)))
            {
                unmatched.swap_remove(i);
                score.exact_bytes += 1;
            }
        }
        if !unmatched.is_empty() && std::env::var_os("PF_BENCH_DEBUG").is_some() {
            eprintln!("inexact bytes on {key:?}: expected {conns:?}, unmatched ENDs {unmatched:?}");
            let inexact = got
                .iter()
                .filter(|f| unmatched.contains(&(f.bytes_sent, f.bytes_received)));
            for f in inexact {
                eprintln!("  {f:?}");
            }
        }
        // Attribution by lifetime: with reuse, the pair's STARTs are shared among its connections.
        let (started, fd) = starts.get(key).copied().unwrap_or((0, 0));
        score.started += started.min(n);
        score.attributed_fd += fd.min(n);
        let mut fd_left = fd.min(n);
        let mut sorted: Vec<u64> = conns.iter().map(|c| c.2).collect();
        sorted.sort_unstable_by(|a, b| b.cmp(a)); // credit the longest-lived first
        for ms in sorted {
            let b = bucket(ms);
            score.attribution_by_lifetime[b].1 += 1;
            if fd_left > 0 {
                fd_left -= 1;
                score.attribution_by_lifetime[b].2 += 1;
            }
        }
    }
    score
}

/// A process the bench started: pid and how long it lived.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TruthProc {
    pub pid: u32,
    pub ppid: u32,
    pub lifetime_ms: u64,
    /// The sleep the chain was given: a floor under its lifetime that no scheduling delay
    /// of the measuring thread can inflate.
    pub requested_ms: f64,
}

impl TruthProc {
    /// The lifetime a process is scored by: what it certainly lived. The waiting thread's
    /// measure can only be longer than the truth, and under load it was much longer (a
    /// chain asked to sleep 1 ms measured 50 ms), which put short processes in the
    /// ≥ 50 ms bucket; the sleep asked for is a floor nothing inflates.
    pub fn floor_ms(&self) -> u64 {
        (self.requested_ms as u64).min(self.lifetime_ms)
    }
}

pub const PROC_BUCKETS_MS: [(u64, u64, &str); 4] = [
    (0, 5, "1-5ms"),
    (5, 50, "5-50ms"),
    (50, 500, "50-500ms"),
    (500, u64::MAX, ">=500ms"),
];

/// Per lifetime bucket: (label, processes, seen with START and the right parent).
pub fn score_processes(truth: &[TruthProc], records: &[Record]) -> Vec<(String, u64, u64)> {
    let mut seen: HashMap<u32, u32> = HashMap::new();
    for r in records {
        if let Record::Process(p) = r {
            if matches!(p.phase, ProcessPhase::Start | ProcessPhase::Exec) {
                seen.insert(p.pid, p.ppid);
            }
        }
    }
    let mut out: Vec<(String, u64, u64)> = PROC_BUCKETS_MS
        .iter()
        .map(|(_, _, l)| (l.to_string(), 0, 0))
        .collect();
    for t in truth {
        let b = PROC_BUCKETS_MS
            .iter()
            .position(|(lo, hi, _)| t.floor_ms() >= *lo && t.floor_ms() < *hi)
            .unwrap_or(0);
        out[b].1 += 1;
        if seen.get(&t.pid) == Some(&t.ppid) {
            out[b].2 += 1;
        }
    }
    out
}

pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    part as f64 / whole as f64 * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use procflow::model::*;

    fn flow(
        local: u16,
        remote: u16,
        phase: FlowPhase,
        sent: u64,
        received: u64,
        fd: bool,
    ) -> Record {
        Record::Flow(FlowRecord {
            cookie: 1,
            protocol: Protocol::Tcp,
            family: Family::Ipv4,
            local_addr: "127.0.0.1".parse().expect("ip"),
            local_port: local,
            remote_addr: Some("127.0.0.1".parse().expect("ip")),
            remote_port: Some(remote),
            direction: Direction::Outbound,
            scope: Scope::Local,
            phase,
            state: "CLOSE".into(),
            preexisting: false,
            bytes_sent: Some(sent),
            bytes_received: Some(received),
            segs_out: None,
            segs_in: None,
            retransmits: None,
            total_retrans: None,
            rtt_us: None,
            first_seen: 0,
            last_seen: 0,
            ended_at: None,
            uid: None,
            inode: None,
            pid: fd.then_some(7),
            process_start_time: None,
            attribution: if fd {
                Attribution::Fd
            } else {
                Attribution::None
            },
            end_reason: EndReason::DestroyEvent,
            reset: false,
            peer_scrubbed: false,
            cgroup_id: None,
        })
    }

    #[test]
    fn known_capture_gives_known_flow_score() {
        let truth = [
            TruthConn {
                client_port: 1000,
                server_port: 80,
                up: 10,
                down: 20,
                lifetime_ms: 0,
            },
            TruthConn {
                client_port: 1001,
                server_port: 80,
                up: 5,
                down: 6,
                lifetime_ms: 300,
            },
        ];
        let records = vec![
            flow(1000, 80, FlowPhase::End, 10, 20, false),
            flow(80, 1000, FlowPhase::End, 20, 10, false),
            flow(1001, 80, FlowPhase::Start, 0, 0, true),
            flow(1001, 80, FlowPhase::End, 5, 6, true),
            flow(80, 1001, FlowPhase::End, 6, 999, false), // wrong bytes
            flow(80, 1001, FlowPhase::End, 6, 5, false),   // and a duplicate
        ];
        let s = score_flows(&truth, &records);
        assert_eq!(
            (s.sockets, s.one_end, s.duplicate_ends, s.exact_bytes),
            (4, 4, 1, 4)
        );
        assert_eq!((s.started, s.attributed_fd), (1, 1));
        assert_eq!(s.attribution_by_lifetime[4], (">=200ms".to_string(), 2, 1));
        assert_eq!(s.duplicate_cookie_ends, 1, "every fixture END has cookie 1");
    }

    #[test]
    fn reused_port_pairs_are_matched_by_count_and_bytes() {
        let truth = [
            TruthConn {
                client_port: 2000,
                server_port: 80,
                up: 1,
                down: 2,
                lifetime_ms: 5,
            },
            TruthConn {
                client_port: 2000,
                server_port: 80,
                up: 3,
                down: 4,
                lifetime_ms: 5,
            },
        ];
        let records = vec![
            flow(2000, 80, FlowPhase::End, 3, 4, false),
            flow(2000, 80, FlowPhase::End, 1, 2, false),
            flow(80, 2000, FlowPhase::End, 2, 1, false),
            flow(80, 2000, FlowPhase::End, 4, 3, false),
        ];
        let s = score_flows(&truth, &records);
        assert_eq!(
            (s.sockets, s.one_end, s.duplicate_ends, s.exact_bytes),
            (4, 4, 0, 4)
        );
    }

    #[test]
    fn process_buckets() {
        let truth = [
            // Measured 80 ms by a late waiting thread, asked to sleep 2 ms: scored 1-5 ms.
            TruthProc {
                pid: 10,
                ppid: 1,
                lifetime_ms: 80,
                requested_ms: 2.0,
            },
            TruthProc {
                pid: 11,
                ppid: 1,
                lifetime_ms: 100,
                requested_ms: 100.0,
            },
            TruthProc {
                pid: 12,
                ppid: 1,
                lifetime_ms: 100,
                requested_ms: 100.0,
            },
        ];
        let mk = |pid, ppid| {
            Record::Process(ProcessRecord {
                start_time: 0,
                ppid,
                comm: vec![],
                argv: vec![],
                uid: 0,
                gid: 0,
                euid: 0,
                egid: 0,
                ..procflow::fixtures::process(pid, b"")
            })
        };
        let got = score_processes(&truth, &[mk(11, 1), mk(12, 99)]);
        assert_eq!(got[0], ("1-5ms".to_string(), 1, 0));
        assert_eq!(
            got[2],
            ("50-500ms".to_string(), 2, 1),
            "wrong parent does not count"
        );
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(1, 4), 25.0);
        assert_eq!(ratio(3, 0), 0.0);
    }
}
