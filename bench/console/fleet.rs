//! The console bench's fleet: 30 days of 50 pods in 5 namespaces, each pod-hour one batch
//! of a heartbeat, a few process starts and flows (START and END) to external, east-west
//! and inbound peers, and a daily alert per pod; written straight through a store's append
//! path (SQLite or PostgreSQL alike; the ingest path has its own figures).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use procflow::aggregator::store::{Retention, Store};
use procflow::fixtures;
use procflow::model::{
    AlertRecord, CollectorIdentity, Direction, EndReason, Event, FlowPhase, FlowRecord, Heartbeat,
    ProcessRecord, Record, Scope, Severity,
};

const HOUR_NS: u64 = 3_600_000_000_000;
pub(crate) const NAMESPACES: usize = 5;
pub(crate) const PODS_PER_NAMESPACE: usize = 10;
pub(crate) fn workload(i: usize) -> String {
    format!("api{i}")
}

pub(crate) fn pod_name(_ns: usize, i: usize) -> String {
    format!("{}-6d8f9c7b5-x2k4q", workload(i))
}

fn identity(ns: usize, i: usize) -> Arc<CollectorIdentity> {
    Arc::new(CollectorIdentity {
        collector_id: format!("c-{ns}-{i}"),
        pod_name: pod_name(ns, i),
        pod_namespace: format!("ns-{ns}"),
        pod_ip: format!("10.1.{ns}.{i}"),
        node_name: "bench-node".into(),
        ..CollectorIdentity::default()
    })
}

pub(crate) fn process(pid: u32, start: u64, ppid: u32, comm: &str, argv: &[&str]) -> ProcessRecord {
    ProcessRecord {
        start_time: start,
        ppid,
        parent_start_time: Some(1),
        exe: Some(format!("/usr/bin/{comm}").into_bytes()),
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        session_id: 1,
        pgid: 1,
        stdio_is_socket: Some(false),
        ..fixtures::process(pid, comm.as_bytes())
    }
}

#[allow(clippy::too_many_arguments)]
fn flow(
    cookie: u64,
    at: u64,
    phase: FlowPhase,
    peer: std::net::IpAddr,
    port: u16,
    direction: Direction,
    scope: Scope,
    bytes: u64,
    pid: u32,
    start: u64,
) -> FlowRecord {
    let end = phase == FlowPhase::End;
    let inbound = direction == Direction::Inbound;
    FlowRecord {
        local_addr: std::net::IpAddr::from([10, 1, 0, 1]),
        local_port: if inbound {
            8080
        } else {
            40_000 + (cookie % 20_000) as u16
        },
        remote_addr: Some(peer),
        remote_port: Some(if inbound {
            50_000 + (cookie % 10_000) as u16
        } else {
            port
        }),
        direction,
        scope,
        phase,
        state: if end { "CLOSE" } else { "ESTABLISHED" }.into(),
        bytes_sent: Some(if end { bytes } else { 0 }),
        bytes_received: Some(if end { bytes / 3 } else { 0 }),
        first_seen: at,
        last_seen: at,
        ended_at: end.then_some(at),
        pid: Some(pid),
        process_start_time: Some(start),
        end_reason: if end {
            EndReason::DestroyEvent
        } else {
            EndReason::Unspecified
        },
        ..fixtures::flow(cookie)
    }
}

/// Four hundred days of raw records: the whole fleet stays raw beside its rollups.
pub(crate) fn retention() -> Retention {
    Retention {
        max_age: Duration::from_secs(400 * 86_400),
        max_bytes: u64::MAX,
        rollups: procflow::aggregator::store::ROLLUP_RETENTION,
    }
}

/// Writes about `records` records over `days` ending now into `store`; returns the number
/// written.
pub(crate) fn fill_store(store: &dyn Store, records: u64, days: u64) -> anyhow::Result<u64> {
    let pods = NAMESPACES * PODS_PER_NAMESPACE;
    let hours = days * 24;
    let per_batch = (records / (pods as u64 * hours)).max(8) as usize;
    let now = procflow::model::now_ns();
    let first_hour = (now / HOUR_NS + 1 - hours) * HOUR_NS;
    let main_start = first_hour - HOUR_NS;
    let mut rng = fastrand::Rng::with_seed(24);
    let mut written = 0u64;
    let mut pending = Vec::new();
    let mut cookie = 0u64;
    let rules_source = Arc::new(CollectorIdentity {
        collector_id: "procflow-rules".into(),
        ..CollectorIdentity::default()
    });
    for h in 0..hours {
        let hour = first_hour + h * HOUR_NS;
        for ns in 0..NAMESPACES {
            for i in 0..PODS_PER_NAMESPACE {
                let source = identity(ns, i);
                let mut events = Vec::with_capacity(per_batch);
                let at = hour + rng.u64(0..HOUR_NS);
                let mut push = |record: Record| {
                    events.push(Event {
                        source: source.clone(),
                        received_at: at,
                        record,
                    })
                };
                push(Record::Heartbeat(Heartbeat {
                    time: at,
                    counters: Vec::new(),
                    flows_tracked: 100,
                    processes_tracked: 10,
                    rss_bytes: 13 << 20,
                    cpu_time_ns: 0,
                    features: Vec::new(),
                    ..Heartbeat::default()
                }));
                if h == 0 {
                    push(Record::Process(process(
                        100,
                        main_start,
                        1,
                        "api",
                        &["api", "--port", "8080"],
                    )));
                }
                for k in 0..3u32 {
                    let pid = 1_000 + (h as u32 * 3 + k) % 30_000;
                    push(Record::Process(process(
                        pid,
                        at + u64::from(k),
                        100,
                        "curl",
                        &["curl", "-s", "https://example.com/health"],
                    )));
                }
                while events.len() + 2 <= per_batch {
                    cookie += 1;
                    let (peer, port, direction, scope) = match rng.u8(0..10) {
                        0..=4 => (
                            std::net::IpAddr::from([198, 51, 100, rng.u8(1..40)]),
                            443,
                            Direction::Outbound,
                            Scope::NorthSouth,
                        ),
                        5..=7 => {
                            let j = rng.usize(0..PODS_PER_NAMESPACE);
                            (
                                std::net::IpAddr::from([10, 1, ns as u8, j as u8]),
                                8080,
                                Direction::Outbound,
                                Scope::EastWest,
                            )
                        }
                        _ => (
                            std::net::IpAddr::from([10, 2, 0, rng.u8(1..200)]),
                            8080,
                            Direction::Inbound,
                            Scope::EastWest,
                        ),
                    };
                    let bytes = rng.u64(100..200_000);
                    for phase in [FlowPhase::Start, FlowPhase::End] {
                        events.push(Event {
                            source: source.clone(),
                            received_at: at,
                            record: Record::Flow(flow(
                                cookie, at, phase, peer, port, direction, scope, bytes, 100,
                                main_start,
                            )),
                        });
                    }
                }
                written += events.len() as u64;
                pending.push(store.append(source.collector_id.clone(), h, events));
                if h % 24 == 23 {
                    let day = h / 24;
                    let alert = AlertRecord {
                        id: format!("bench-alert-{ns}-{i}-{day}"),
                        rule_id: "BENCH-SHELL".into(),
                        rule_name: "bench shell".into(),
                        severity: if i % 3 == 0 {
                            Severity::High
                        } else {
                            Severity::Medium
                        },
                        tags: vec!["T1059".into()],
                        time: at,
                        first_seen: at,
                        last_seen: at,
                        count: 1,
                        output: "bench alert".into(),
                        pod_name: source.pod_name.clone(),
                        pod_namespace: source.pod_namespace.clone(),
                        node_name: "bench-node".into(),
                        container_id: None,
                        process: Some(Box::new(process(100, main_start, 1, "api", &["api"]))),
                        flows: Vec::new(),
                        evidence: vec!["bench".into()],
                        exec: None,
                    };
                    let alert_source = Arc::new(CollectorIdentity {
                        pod_name: source.pod_name.clone(),
                        pod_namespace: source.pod_namespace.clone(),
                        ..(*rules_source).clone()
                    });
                    pending.push(store.append(
                        "procflow-rules".into(),
                        (h * 1_000) + (ns * PODS_PER_NAMESPACE + i) as u64,
                        vec![Event {
                            source: alert_source,
                            received_at: at,
                            record: Record::Alert(alert),
                        }],
                    ));
                    written += 1;
                }
                if pending.len() >= 512 {
                    for reply in pending.drain(..) {
                        reply.blocking_recv().context("store writer")??;
                    }
                }
            }
        }
    }
    for reply in pending.drain(..) {
        reply.blocking_recv().context("store writer")??;
    }
    Ok(written)
}
