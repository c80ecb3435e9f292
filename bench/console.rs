//! The web console's figures: server time per page over a store of 10 M records (SQLite,
//! 30 days of 50 pods in 5 namespaces), the first page's weight, and how long a new alert
//! takes to appear on an open alerts page after its process started.
//!
//! The store is written directly through `SqliteStore` (the ingest path has its own
//! figures); the aggregator then runs as a separate process on it with `--ui-listen`, and
//! every page is fetched over HTTP as a signed-in browser would, its server time read from
//! the `Server-Timing` header the console sets. The live figure runs a collector on this
//! host against the same aggregator and long-polls `/alerts/live` exactly as the page's htmx
//! does.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use procflow::aggregator::store::{Retention, SqliteStore, Store};
use procflow::model::{
    AlertRecord, Attribution, CollectorIdentity, Direction, EndReason, Event, Family, FlowPhase,
    FlowRecord, Heartbeat, ProcessPhase, ProcessRecord, Protocol, Record, Scope, Severity,
    Unavailable,
};

use crate::{procflow_bin, Report};

const HOUR_NS: u64 = 3_600_000_000_000;
const NAMESPACES: usize = 5;
const PODS_PER_NAMESPACE: usize = 10;
/// Days of data: 30, fewer for a small store (so each pod-hour keeps a realistic batch).
fn days_for(records: u64) -> u64 {
    (records / (NAMESPACES * PODS_PER_NAMESPACE) as u64 / 24 / 200).clamp(1, 30)
}
const CREDENTIAL: &str = "bench-console-credential";

pub fn scenario_console(report: &mut Report, records: u64, samples: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let days = days_for(records);
    let written = fill_store(dir.path(), records, days)?;
    report.add(
        "console",
        &format!("records in the store ({days} days, 50 pods in 5 namespaces)"),
        written as f64,
        "records",
        None,
    );
    let bytes = std::fs::metadata(dir.path().join("procflow.db")).map_or(0, |m| m.len());
    report.add(
        "console",
        "store size",
        bytes as f64 / (1 << 20) as f64,
        "MiB",
        None,
    );
    // The closed hours rolled up, as a running aggregator keeps them (its rollups thread
    // would otherwise build them while the pages are measured).
    let started = Instant::now();
    let hours = {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), retention())?);
        procflow::aggregator::rollups::RollupBuilder::new(store)
            .catch_up(procflow::model::now_ns())?
    };
    report.add(
        "console",
        &format!("rolling up the store's closed hours ({hours} hours), in-process"),
        started.elapsed().as_secs_f64(),
        "s",
        None,
    );

    let rules = tempfile::tempdir()?;
    std::fs::write(rules.path().join("bench.yaml"), MARKER_RULE)?;
    let token = dir.path().join("token");
    std::fs::write(&token, CREDENTIAL)?;
    let grpc = free_port()?;
    let ui = free_port()?;
    let mut aggregator = Command::new(procflow_bin())
        .args(["aggregator", "--listen", &format!("127.0.0.1:{grpc}")])
        .args([
            "--ui-listen",
            &format!("127.0.0.1:{ui}"),
            "--retention",
            "400d",
        ])
        .arg("--token-file")
        .arg(&token)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--rules")
        .arg(rules.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = measure(report, grpc, ui, &token, samples, days);
    let _ = Command::new("kill")
        .args(["-TERM", &aggregator.id().to_string()])
        .status();
    let _ = aggregator.wait();
    result
}

fn measure(
    report: &mut Report,
    grpc: u16,
    ui: u16,
    token: &std::path::Path,
    samples: usize,
    days: u64,
) -> anyhow::Result<()> {
    let ready = Instant::now();
    while TcpStream::connect(("127.0.0.1", ui)).is_err() {
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(30),
            "console did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let session = sign_in(ui)?;
    let pod = pod_name(0, 1);
    let pages: Vec<(&str, String)> = vec![
        ("overview", "/?last=24h".into()),
        ("alerts", "/alerts?last=24h".into()),
        (
            "alert group",
            format!(
                "/alerts/group?last=24h&rule=BENCH-SHELL&ns=ns-0&workload={}",
                workload(1)
            ),
        ),
        (
            "alert",
            format!("/alert?last=24h&id=bench-alert-0-1-{}", days - 1),
        ),
        ("pod", format!("/pod?last=24h&ns=ns-0&pod={pod}")),
        (
            "process tree",
            format!("/process?last=24h&ns=ns-0&pod={pod}&pid=100"),
        ),
        ("endpoint", "/endpoint?last=24h&ip=198.51.100.7".into()),
        ("service map", "/map?last=24h".into()),
        (
            "search (argv, first page)",
            "/search?last=24h&kind=process&argv=curl".into(),
        ),
        ("rules", "/rules?last=24h".into()),
        ("overview, last 7 days", "/?last=7d".into()),
    ];
    crate::machine_speed(report, "before the console pages");
    // Cold: a baseline nobody asked for yet (the console summarizes the default one, 24 h
    // against 45 days, at start and every hour; another baseline is summarized on first use
    // and kept for the hour).
    for (name, path) in [
        (
            "overview, cold (30-day baseline not yet summarized)",
            "/?last=24h&baseline=30d",
        ),
        (
            "endpoint, cold (30-day baseline not yet summarized)",
            "/endpoint?last=24h&baseline=30d&ip=198.51.100.7",
        ),
    ] {
        let response = get(ui, path, Some(&session))?;
        anyhow::ensure!(response.status == 200, "{path}: HTTP {}", response.status);
        let ms = response.server_ms.context("no Server-Timing header")?;
        report.add(
            "console",
            &format!("{name}: server time, first load"),
            ms,
            "ms",
            Some(("<=300 ms", ms <= 300.0)),
        );
    }
    for (name, path) in &pages {
        let mut server = Vec::with_capacity(samples);
        let mut wall = Vec::with_capacity(samples);
        for _ in 0..samples {
            let started = Instant::now();
            let response = get(ui, path, Some(&session))?;
            wall.push(started.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(response.status == 200, "{path}: HTTP {}", response.status);
            server.push(response.server_ms.context("no Server-Timing header")?);
        }
        let p95 = percentile(&mut server, 0.95);
        report.add(
            "console",
            &format!("{name}: server time p95 ({samples} loads, 24 h scope unless said)"),
            p95,
            "ms",
            Some(("<=300 ms", p95 <= 300.0)),
        );
        report.add(
            "console",
            &format!("{name}: wall time p50 at the client"),
            percentile(&mut wall, 0.5),
            "ms",
            None,
        );
    }

    // First page weight: the overview's HTML and every file it references, uncompressed.
    let overview = get(ui, "/?last=24h", Some(&session))?;
    let mut weight = overview.body.len();
    let html = String::from_utf8_lossy(&overview.body).into_owned();
    for asset in html.split('"').filter(|s| s.starts_with("/static/")) {
        let file = get(ui, asset, None)?;
        anyhow::ensure!(file.status == 200, "{asset}: HTTP {}", file.status);
        weight += file.body.len();
    }
    report.add(
        "console",
        "first page weight (overview HTML + its CSS and JS, uncompressed)",
        weight as f64 / 1024.0,
        "KiB",
        Some(("<=400 KB", weight <= 400_000)),
    );

    alert_on_open_page(report, grpc, ui, token, &session, samples.min(10))
}

const MARKER_RULE: &str = "rules:\n- id: BENCH-CONSOLE-MARKER\n  name: bench console marker\n  severity: high\n  kinds: [process]\n  condition: proc.comm == \"pf-console-mark\" and proc.phase != \"EXIT\"\n  output: 'marker {proc.pid}'\n  group_by: [proc.pid]\n";

/// A marker process starts while a long poll on `/alerts/live` waits (what the open alerts
/// page's htmx does); measured: process start to the answer that shows its alert.
fn alert_on_open_page(
    report: &mut Report,
    grpc: u16,
    ui: u16,
    token: &std::path::Path,
    session: &str,
    samples: usize,
) -> anyhow::Result<()> {
    let mut collector = Command::new(procflow_bin())
        .args([
            "collector",
            "--output",
            "grpc",
            "--aggregator",
            &format!("http://127.0.0.1:{grpc}"),
        ])
        .arg("--token-file")
        .arg(token)
        .env("POD_NAMESPACE", "ns-0")
        .env("POD_NAME", "bench-live")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(3));
    let work = tempfile::tempdir()?;
    let marker = work.path().join("pf-console-mark");
    std::fs::copy("/usr/bin/sleep", &marker)?;
    let mut latencies = Vec::new();
    let mut missed = 0;
    for _ in 0..samples {
        // The page as it is now; then its long polls, one after the other as htmx makes
        // them (another alert on this host may answer one first), until the marker shows.
        let page = get(ui, "/alerts?last=1h", Some(session))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let session = session.to_owned();
        let poll = std::thread::spawn(move || {
            let mut html = String::from_utf8_lossy(&page.body).into_owned();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let after = html
                    .split("after=")
                    .nth(1)
                    .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                    .unwrap_or("0")
                    .to_owned();
                let Ok(answer) = get(
                    ui,
                    &format!("/alerts/live?last=1h&after={after}"),
                    Some(&session),
                ) else {
                    break;
                };
                html = String::from_utf8_lossy(&answer.body).into_owned();
                if html.contains("bench console marker") {
                    let _ = tx.send(Instant::now());
                    return;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        let spawned = Instant::now();
        let mut child = Command::new(&marker).arg("3").spawn()?;
        let outcome = rx.recv_timeout(Duration::from_secs(30));
        let _ = child.kill();
        let _ = child.wait();
        let _ = poll.join();
        match outcome {
            Ok(at) => latencies.push(at.duration_since(spawned).as_secs_f64() * 1e3),
            Err(_) => missed += 1,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &collector.id().to_string()])
        .status();
    let _ = collector.wait();
    if !latencies.is_empty() {
        let p50 = percentile(&mut latencies, 0.5);
        let max = percentile(&mut latencies, 1.0);
        report.add(
            "console",
            "new alert on the open alerts page, p50 (process start -> page answer)",
            p50,
            "ms",
            None,
        );
        report.add(
            "console",
            "new alert on the open alerts page, max",
            max,
            "ms",
            Some(("<=2000 ms", max <= 2000.0 && missed == 0)),
        );
    }
    report.add(
        "console",
        "marker alerts that never reached the open page",
        missed as f64,
        "alerts",
        Some(("0", missed == 0)),
    );
    Ok(())
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len().max(1)) - 1;
    values.get(i).copied().unwrap_or(f64::NAN)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct HttpResponse {
    status: u16,
    server_ms: Option<f64>,
    set_cookie: Option<String>,
    body: Vec<u8>,
}

fn request(port: u16, head: &str, body: &[u8]) -> anyhow::Result<HttpResponse> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = headers
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        headers
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
            .map(|l| l[name.len() + 1..].trim().to_owned())
    };
    let server_ms =
        header("server-timing").and_then(|v| v.split("dur=").nth(1).and_then(|d| d.parse().ok()));
    Ok(HttpResponse {
        status,
        server_ms,
        set_cookie: header("set-cookie"),
        body: raw[split + 4..].to_vec(),
    })
}

fn get(port: u16, path: &str, session: Option<&str>) -> anyhow::Result<HttpResponse> {
    let cookie = session.map_or(String::new(), |s| {
        format!("Cookie: procflow_session={s}\r\n")
    });
    request(
        port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{cookie}Connection: close\r\n\r\n"
        ),
        b"",
    )
}

fn sign_in(port: u16) -> anyhow::Result<String> {
    let body = format!("credential={CREDENTIAL}&next=%2F");
    let response = request(
        port,
        &format!(
            "POST /signin HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ),
        body.as_bytes(),
    )?;
    let cookie = response.set_cookie.context("sign-in set no cookie")?;
    cookie
        .strip_prefix("procflow_session=")
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
        .context("no session in the cookie")
}

// === The store: 30 days of 50 pods ===

fn workload(i: usize) -> String {
    format!("api{i}")
}

fn pod_name(_ns: usize, i: usize) -> String {
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
        pid,
        start_time: start,
        ppid,
        parent_start_time: Some(1),
        phase: ProcessPhase::Start,
        comm: comm.as_bytes().to_vec(),
        exe: Some(format!("/usr/bin/{comm}").into_bytes()),
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        cwd: None,
        uid: 1000,
        gid: 1000,
        euid: 1000,
        egid: 1000,
        tty: None,
        session_id: 1,
        pgid: 1,
        container_id: None,
        pod_uid: None,
        exit_time: None,
        ancestors: Vec::new(),
        exe_unavailable: Unavailable::Unspecified,
        cwd_unavailable: Unavailable::Unspecified,
        exe_deleted: false,
        seen_at_exit_only: false,
        preexisting: false,
        stdio_is_socket: Some(false),
        stdio_socket_inodes: Vec::new(),
        forked_no_exec: false,
        exe_replaced: None,
        stdin_pipe: None,
        stdout_pipe: None,
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
    FlowRecord {
        cookie,
        protocol: Protocol::Tcp,
        family: Family::Ipv4,
        local_addr: std::net::IpAddr::from([10, 1, 0, 1]),
        local_port: if direction == Direction::Inbound {
            8080
        } else {
            40_000 + (cookie % 20_000) as u16
        },
        remote_addr: Some(peer),
        remote_port: Some(if direction == Direction::Inbound {
            50_000 + (cookie % 10_000) as u16
        } else {
            port
        }),
        direction,
        scope,
        phase,
        state: if phase == FlowPhase::End {
            "CLOSE".into()
        } else {
            "ESTABLISHED".into()
        },
        preexisting: false,
        bytes_sent: Some(if phase == FlowPhase::End { bytes } else { 0 }),
        bytes_received: Some(if phase == FlowPhase::End {
            bytes / 3
        } else {
            0
        }),
        segs_out: None,
        segs_in: None,
        retransmits: None,
        total_retrans: None,
        rtt_us: None,
        first_seen: at,
        last_seen: at,
        ended_at: (phase == FlowPhase::End).then_some(at),
        uid: Some(1000),
        inode: Some(cookie),
        pid: Some(pid),
        process_start_time: Some(start),
        attribution: Attribution::Fd,
        end_reason: if phase == FlowPhase::End {
            EndReason::DestroyEvent
        } else {
            EndReason::Unspecified
        },
        reset: false,
        peer_scrubbed: false,
        cgroup_id: None,
    }
}

/// Writes about `records` records: each pod-hour one batch of a heartbeat, a few process
/// starts and flows (START and END) to external, east-west and inbound peers; a daily alert
/// per pod. Returns the number written.
fn retention() -> Retention {
    Retention {
        max_age: Duration::from_secs(400 * 86_400),
        max_bytes: u64::MAX,
        rollups: procflow::aggregator::store::ROLLUP_RETENTION,
    }
}

fn fill_store(dir: &std::path::Path, records: u64, days: u64) -> anyhow::Result<u64> {
    let store = SqliteStore::open(dir, retention())?;
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
