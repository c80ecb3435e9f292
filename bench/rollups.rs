//! `rollups` (only when named): `procflow investigate talkers` and `new` run as a user runs
//! them (a separate process each, over gRPC, against an aggregator running on the store)
//! over 30 days of rollups of 1,000 pods, bench-generated and stored through the store's own
//! rollup path (hours, and each day folded from its hours), on SQLite and on PostgreSQL (a
//! server of scripts/pg.sh); beside it the server's share (the Investigator called in this
//! process); bytes on disk per pod-hour and per edge row and a year's estimate; then the
//! same questions over one day of 10 M raw records (SQLite).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use procflow::aggregator::investigate::{Investigator, Question};
use procflow::aggregator::rollups::store_hour;
use procflow::aggregator::store::{self, EventQuery, OpenOptions, Retention, Store, StoreSpec};
use procflow::investigate::rollup::{Carry, EdgeRow, HourStarts, PodAddress, PodHour, HOUR};
use procflow::investigate::{Edge, EdgeOrder, NewExecutable, NewListener};
use procflow::model::{
    now_ns, CollectorIdentity, Direction, Event, FlowRecord, Protocol, Record, Scope,
};

use crate::pipeline::Aggregator;
use crate::{procflow_bin, Report};

const DAY: u64 = 24 * HOUR;
const SAMPLES: usize = 7;

fn pod_name(i: usize) -> String {
    format!("svc{}-{}", i / 10, i % 10)
}

fn edge(pod: usize, peer: &str, port: u16, direction: Direction, scope: Scope, hour: u64) -> Edge {
    Edge {
        pod_name: pod_name(pod),
        pod_namespace: "bench".into(),
        comm: b"app".to_vec(),
        exe: Some(b"/usr/local/bin/app".to_vec()),
        direction,
        scope,
        protocol: Protocol::Tcp,
        peer_addr: peer.parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
        port,
        peer_pod_name: None,
        peer_pod_namespace: None,
        connections: 40,
        bytes_sent: 4_000_000,
        bytes_received: 9_000_000,
        first_seen: hour + 1,
        last_seen: hour + HOUR - 1,
        pids: vec![7],
        unattributed: false,
    }
}

/// One pod's hour: nine edge rows (a database, two services, three internet peers, two
/// clients, and a connection to the database carried from the hour before), its new
/// connections and process starts; the first hour of a day also its two executables and
/// its listening port. On the last day five pods talk to a peer they never talked to.
fn pod_hour(pod: usize, hour: u64, last_day: bool) -> PodHour {
    let db = format!("10.1.{}.{}", pod / 250, pod % 250 + 1);
    let mut edges: Vec<EdgeRow> = [
        (db.as_str(), 5432, Direction::Outbound, Scope::EastWest),
        ("10.2.0.1", 8080, Direction::Outbound, Scope::EastWest),
        ("10.2.0.2", 8080, Direction::Outbound, Scope::EastWest),
        ("203.0.113.1", 443, Direction::Outbound, Scope::NorthSouth),
        ("203.0.113.2", 443, Direction::Outbound, Scope::NorthSouth),
        ("203.0.113.3", 443, Direction::Outbound, Scope::NorthSouth),
        ("10.3.0.1", 8080, Direction::Inbound, Scope::EastWest),
        ("10.3.0.2", 8080, Direction::Inbound, Scope::EastWest),
    ]
    .iter()
    .map(|&(peer, port, direction, scope)| EdgeRow {
        edge: edge(pod, peer, port, direction, scope, hour),
        prev_hour: None,
        sent_delta: 4_000_000,
        received_delta: 9_000_000,
    })
    .collect();
    edges.push(EdgeRow {
        edge: Edge {
            connections: 1,
            ..edge(pod, &db, 5432, Direction::Outbound, Scope::EastWest, hour)
        },
        prev_hour: Some(hour - HOUR),
        sent_delta: 100_000,
        received_delta: 300_000,
    });
    if last_day && pod % 200 == 0 {
        edges.push(EdgeRow {
            edge: edge(
                pod,
                "198.51.100.9",
                4444,
                Direction::Outbound,
                Scope::NorthSouth,
                hour,
            ),
            prev_hour: None,
            sent_delta: 0,
            received_delta: 0,
        });
    }
    let first_hour = hour % DAY == 0;
    let executables = ["/usr/local/bin/app", "/bin/sh"]
        .iter()
        .enumerate()
        .filter(|_| first_hour)
        .map(|(i, exe)| {
            let comm = exe.rsplit('/').next().unwrap_or(exe).as_bytes();
            NewExecutable {
                pod_name: pod_name(pod),
                pod_namespace: "bench".into(),
                comm: comm.to_vec(),
                exe: Some(exe.as_bytes().to_vec()),
                first_seen: hour + 1 + i as u64,
                process: procflow::fixtures::process(7 + i as u32, comm),
            }
        })
        .collect();
    let listeners = (first_hour)
        .then(|| NewListener {
            pod_name: pod_name(pod),
            pod_namespace: "bench".into(),
            protocol: Protocol::Tcp,
            local_addr: std::net::Ipv4Addr::UNSPECIFIED.into(),
            port: 8080,
            comm: b"app".to_vec(),
            exe: Some(b"/usr/local/bin/app".to_vec()),
            first_seen: hour + 3,
        })
        .into_iter()
        .collect();
    PodHour {
        pod_namespace: "bench".into(),
        pod_name: pod_name(pod),
        edges,
        executables,
        listeners,
        processes: if first_hour { 3 } else { 0 },
        starts: vec![HourStarts {
            hour,
            counts: [120, 0, 200, 0, 0, if first_hour { 3 } else { 0 }],
        }],
        ..PodHour::default()
    }
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len().max(1)) - 1;
    values.get(i).copied().unwrap_or(f64::NAN)
}

fn retention() -> Retention {
    Retention {
        max_age: Duration::from_secs(14 * 86_400),
        max_bytes: u64::MAX,
        rollups: store::ROLLUP_RETENTION,
    }
}

fn question(since: u64, until: u64) -> Question {
    Question {
        query: EventQuery {
            since,
            until,
            ..EventQuery::default()
        },
        ..Question::default()
    }
}

/// p95 (ms) of `talkers` over `[since, until]` and of `new` over its last day against the
/// days before, in this process; a fresh Investigator each time (no kept baseline).
fn measure(store: &Arc<dyn Store>, since: u64, until: u64) -> anyhow::Result<(f64, f64, u64)> {
    let (mut talkers, mut new) = (Vec::new(), Vec::new());
    let mut flows = 0;
    for _ in 0..SAMPLES {
        let investigator = Investigator::new(store.clone());
        let started = Instant::now();
        let answer =
            investigator.talkers(&question(since, until), EdgeOrder::Bytes, 100, &mut |_| {})?;
        talkers.push(started.elapsed().as_secs_f64() * 1e3);
        flows = answer.flows;
        let investigator = Investigator::new(store.clone());
        let started = Instant::now();
        investigator.new_activity(&question(until + 1 - DAY, until), since, 100)?;
        new.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok((
        percentile(&mut talkers, 0.95),
        percentile(&mut new, 0.95),
        flows,
    ))
}

pub fn scenario_rollups(report: &mut Report, pods: usize, days: u64) -> anyhow::Result<()> {
    let now = now_ns();
    // Thirty days of hours ending 15 days ago: all past the raw retention (14 days).
    let end = now - now % HOUR - 15 * DAY;
    let start = end - days * DAY;
    let dir = tempfile::tempdir()?;
    let server = crate::pgstore::Server::start();
    let mut backends = vec![("SQLite", StoreSpec::Sqlite(None), None)];
    match &server {
        Ok(server) => backends.push((
            "PostgreSQL",
            StoreSpec::Postgres(server.url.clone()),
            std::fs::read_to_string(server.password_file())
                .ok()
                .map(|p| p.trim().to_owned()),
        )),
        Err(e) => report.skip("rollups", format!("PostgreSQL: {e:#}")),
    }
    for (name, spec, password) in backends {
        let options = OpenOptions {
            spec,
            data_dir: dir.path().to_path_buf(),
            retention: retention(),
            postgres: store::PgOptions {
                password,
                ..store::PgOptions::default()
            },
        };
        let store = store::open(&options)?;
        let rollups = store
            .rollups()
            .ok_or_else(|| anyhow::anyhow!("{name} keeps no rollups"))?;
        let addresses: Vec<PodAddress> = (0..pods)
            .map(|i| PodAddress {
                pod_namespace: "bench".into(),
                pod_name: pod_name(i),
                ip: format!("10.9.{}.{}", i / 250, i % 250 + 1)
                    .parse()
                    .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            })
            .collect();
        let (mut pod_hours, mut edge_rows) = (0u64, 0u64);
        let started = Instant::now();
        let mut hour = start;
        while hour < end {
            let last_day = hour >= end - DAY;
            let hours: Vec<PodHour> = (0..pods).map(|p| pod_hour(p, hour, last_day)).collect();
            pod_hours += hours.len() as u64;
            edge_rows += hours.iter().map(|h| h.edges.len() as u64).sum::<u64>();
            store_hour(rollups, hour, &hours, &addresses, &Carry::new())?;
            hour += HOUR;
        }
        let write_secs = started.elapsed().as_secs_f64();
        let bytes = match name {
            "SQLite" => {
                std::fs::metadata(store::sqlite_path(dir.path()))?.len()
                    + std::fs::metadata(dir.path().join("procflow.db-wal"))
                        .map(|m| m.len())
                        .unwrap_or(0)
            }
            _ => server
                .as_ref()
                .map_err(|e| anyhow::anyhow!("{e:#}"))?
                .value(
                "SELECT pg_total_relation_size('rollups') + pg_total_relation_size('rollup_hours') \
                 + pg_total_relation_size('rollup_days') + pg_total_relation_size('rollup_days_built')",
            )? as u64,
        };
        let (talkers, new, flows) = measure(&store, start, end - 1)?;
        let scenario = "rollups";
        report.add(
            scenario,
            &format!("{name}: talkers over {days} days of rollups, {pods} pods, in-process p95 ({SAMPLES} runs, {flows} connections)"),
            talkers,
            "ms",
            None,
        );
        report.add(
            scenario,
            &format!(
                "{name}: new (last day against the {} before) over rollups, in-process p95",
                days - 1
            ),
            new,
            "ms",
            None,
        );
        drop(store);
        // As a user runs them: the CLI against an aggregator serving the store.
        let (store_args, wait): (Vec<String>, Box<dyn Fn() -> anyhow::Result<f64>>) = match name {
            "SQLite" => {
                let db = store::sqlite_path(dir.path());
                let built = move || -> anyhow::Result<f64> {
                    Ok(rusqlite::Connection::open(&db)?.query_row(
                        "SELECT COALESCE(max(hour), 0) FROM rollup_hours",
                        [],
                        |r| r.get::<_, i64>(0),
                    )? as f64)
                };
                (
                    vec![format!(
                        "--store=sqlite:{}",
                        store::sqlite_path(dir.path()).display()
                    )],
                    Box::new(built),
                )
            }
            _ => {
                let server = server.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
                (
                    vec![
                        format!("--store={}", server.url),
                        format!("--store-password-file={}", server.password_file().display()),
                    ],
                    Box::new(|| server.value("SELECT COALESCE(max(hour), 0) FROM rollup_hours")),
                )
            }
        };
        let mut args: Vec<&str> = store_args.iter().map(String::as_str).collect();
        args.extend(["--retention", "14d"]);
        let aggregator = Aggregator::start(&args)?;
        // The aggregator rolls up the (empty) hours since the generated ones first.
        let caught_up = Instant::now();
        while wait()? < (now - now % HOUR - 2 * HOUR) as f64 {
            anyhow::ensure!(
                caught_up.elapsed() < Duration::from_secs(600),
                "{name}: the aggregator did not catch up with its rollups"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let load = crate::pgstore::load_average();
        let ago = |t: u64| format!("{}h", (now - t).div_ceil(HOUR));
        let cli = |question: &[String]| -> anyhow::Result<f64> {
            let mut times = Vec::new();
            for _ in 0..SAMPLES {
                let started = Instant::now();
                let status = Command::new(procflow_bin())
                    .args(["investigate"])
                    .args(question)
                    .args(["--aggregator", &aggregator.url(), "--limit", "100"])
                    .stdout(Stdio::null())
                    .status()?;
                anyhow::ensure!(
                    status.success(),
                    "procflow investigate {question:?}: {status}"
                );
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
            Ok(percentile(&mut times, 0.95))
        };
        let talkers = cli(&["talkers".into(), "--since".into(), ago(start)])?;
        // The window: from the last generated day on (the 15 days after it are empty);
        // the baseline: the days before it.
        let new = cli(&[
            "new".into(),
            "--since".into(),
            ago(end - DAY),
            "--baseline".into(),
            format!("{}h", (days - 1) * 24),
        ])?;
        aggregator.stop();
        report.add(
            scenario,
            &format!("{name}: `procflow investigate talkers --since {}` (30 days of rollups, {pods} pods), whole process, p95 ({SAMPLES} runs)", ago(start)),
            talkers,
            "ms",
            Some(("<=500 ms", talkers <= 500.0)),
        );
        report.add(
            scenario,
            &format!(
                "{name}: `procflow investigate new --since {} --baseline {}h`, whole process, p95",
                ago(end - DAY),
                (days - 1) * 24
            ),
            new,
            "ms",
            Some(("<=500 ms", new <= 500.0)),
        );
        report.add(
            scenario,
            &format!("{name}: load average before the CLI answers"),
            load,
            "",
            None,
        );
        report.add(
            scenario,
            &format!(
                "{name}: bytes on disk per pod-hour ({pod_hours} pod-hours, {edge_rows} edge rows)"
            ),
            bytes as f64 / pod_hours as f64,
            "B",
            None,
        );
        report.add(
            scenario,
            &format!("{name}: bytes on disk per edge row"),
            bytes as f64 / edge_rows as f64,
            "B",
            None,
        );
        report.add(
            scenario,
            &format!("{name}: a year of rollups for {pods} pods at this shape"),
            bytes as f64 / days as f64 * 365.0 / (1u64 << 30) as f64,
            "GiB",
            None,
        );
        report.add(
            scenario,
            &format!("{name}: pod-hours stored per second"),
            pod_hours as f64 / write_secs,
            "/s",
            None,
        );
    }
    drop(server);
    raw_day(report)
}

/// One day of 10 M raw flow records (1,000 pods, SQLite), then the same questions over it
/// (raw records: inside the retention).
fn raw_day(report: &mut Report) -> anyhow::Result<()> {
    const RECORDS: u64 = 10_000_000;
    const BATCH: u64 = 10_000;
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(store::SqliteStore::open(dir.path(), retention())?);
    let now = now_ns();
    let start = now - now % HOUR - 2 * DAY;
    let sources: Vec<Arc<CollectorIdentity>> = (0..1000)
        .map(|i| {
            Arc::new(CollectorIdentity {
                collector_id: format!("c{i}"),
                pod_name: pod_name(i),
                pod_namespace: "bench".into(),
                pod_ip: format!("10.9.{}.{}", i / 250, i % 250 + 1),
                ..CollectorIdentity::default()
            })
        })
        .collect();
    let template: FlowRecord = serde_json::from_value(serde_json::json!({
        "kind": "flow", "cookie": "1", "protocol": "TCP", "family": "IPV4",
        "local_addr": "10.0.0.5", "local_port": 40000, "remote_addr": "203.0.113.1",
        "remote_port": 443, "direction": "OUTBOUND", "scope": "NORTH_SOUTH", "phase": "END",
        "state": "CLOSE", "preexisting": false, "bytes_sent": 1000, "bytes_received": 3000,
        "segs_out": null, "segs_in": null, "retransmits": null, "total_retrans": null,
        "rtt_us": null, "first_seen": 1, "last_seen": 2, "ended_at": 2,
        "uid": 1000, "inode": 9, "pid": 7, "process_start_time": 70,
        "attribution": "FD", "end_reason": "UNSPECIFIED", "reset": false, "cgroup_id": null
    }))?;
    let mut pending = Vec::new();
    for b in 0..RECORDS / BATCH {
        let source = &sources[(b % 1000) as usize];
        let at = start + b * (DAY / (RECORDS / BATCH));
        let events = (0..BATCH)
            .map(|i| {
                let cookie = b * BATCH + i;
                Event {
                    source: source.clone(),
                    received_at: at,
                    record: Record::Flow(FlowRecord {
                        cookie,
                        remote_addr: Some(
                            format!("203.0.113.{}", cookie % 200 + 1)
                                .parse()
                                .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
                        ),
                        first_seen: at,
                        last_seen: at,
                        ended_at: Some(at),
                        ..template.clone()
                    }),
                }
            })
            .collect();
        pending.push(store.append(source.collector_id.clone(), b, events));
        if pending.len() >= 8 {
            for rx in pending.drain(..) {
                rx.blocking_recv()??;
            }
        }
    }
    for rx in pending {
        rx.blocking_recv()??;
    }
    let load = crate::pgstore::load_average();
    let (talkers, new, flows) = measure(&store, start, start + DAY - 1)?;
    report.add(
        "rollups",
        &format!("SQLite: talkers over one day of raw records, p95 ({flows} records)"),
        talkers,
        "ms",
        Some(("<=1000 ms", talkers <= 1000.0)),
    );
    report.add(
        "rollups",
        "SQLite: new over one day of raw records, p95",
        new,
        "ms",
        Some(("<=1000 ms", new <= 1000.0)),
    );
    report.add(
        "rollups",
        "raw: load average before the answers",
        load,
        "",
        None,
    );
    // The same day once its hours are rolled up (what an hour-aligned window, the
    // console's, then reads).
    let started = Instant::now();
    let hours =
        procflow::aggregator::rollups::RollupBuilder::new(store.clone()).catch_up(now_ns())?;
    report.add(
        "rollups",
        &format!("SQLite: rolling up the 10 M records ({hours} hours built), in-process"),
        started.elapsed().as_secs_f64(),
        "s",
        None,
    );
    let (talkers, new, _) = measure(&store, start, start + DAY - 1)?;
    report.add(
        "rollups",
        "SQLite: talkers over the same day from its rollups, in-process p95",
        talkers,
        "ms",
        None,
    );
    report.add(
        "rollups",
        "SQLite: new over the same day from its rollups, in-process p95",
        new,
        "ms",
        None,
    );
    Ok(())
}
