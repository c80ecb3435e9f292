//! The web console's figures: server time per page over a store of 10 M records (30 days
//! of 50 pods in 5 namespaces, with their rollups), on SQLite and on PostgreSQL (a server
//! of scripts/pg.sh); the first page's weight, and how long a new alert takes to appear on
//! an open alerts page after its process started.
//!
//! The store is written directly through the store's append path (`fleet`; the ingest path
//! has its own figures) and its closed hours rolled up; the aggregator then runs as a
//! separate process on it with `--ui-listen`, and every page is fetched over HTTP as a
//! signed-in browser would, its server time read from the `Server-Timing` header the
//! console sets. The live figure (SQLite) runs a collector on this host against the same
//! aggregator and long-polls `/alerts/live` exactly as the page's htmx does.

mod fleet;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use procflow::aggregator::store::{self, OpenOptions, PgOptions, StoreSpec};

pub(crate) use fleet::process;
use fleet::{pod_name, workload, NAMESPACES, PODS_PER_NAMESPACE};

use crate::{procflow_bin, Report};

/// Days of data: 30, fewer for a small store (so each pod-hour keeps a realistic batch).
fn days_for(records: u64) -> u64 {
    (records / (NAMESPACES * PODS_PER_NAMESPACE) as u64 / 24 / 200).clamp(1, 30)
}
const CREDENTIAL: &str = "bench-console-credential";

/// The same fleet and pages on SQLite, then on PostgreSQL; `PF_BENCH_CONSOLE_ONLY=SQLite`
/// (or `PostgreSQL`) runs one.
pub fn scenario_console(report: &mut Report, records: u64, samples: usize) -> anyhow::Result<()> {
    let only = std::env::var("PF_BENCH_CONSOLE_ONLY").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if wanted("SQLite") {
        let dir = tempfile::tempdir()?;
        let spec = StoreSpec::Sqlite(Some(dir.path().join("procflow.db")));
        let backend = Backend {
            scenario: "console",
            sqlite: true,
            options: options(spec, dir.path(), None),
            args: Vec::new(),
        };
        run(report, &backend, dir.path(), records, samples, || {
            Ok(std::fs::metadata(dir.path().join("procflow.db")).map_or(0, |m| m.len()) as f64)
        })?;
    }
    if wanted("PostgreSQL") {
        let dir = tempfile::tempdir()?;
        let server = crate::pgstore::Server::start()?;
        let password = server.password_file();
        let backend = Backend {
            scenario: "console, PostgreSQL",
            sqlite: false,
            options: options(
                StoreSpec::Postgres(server.url.clone()),
                dir.path(),
                Some(&password),
            ),
            args: vec![
                "--store".into(),
                server.url.clone(),
                "--store-password-file".into(),
                password.to_string_lossy().into_owned(),
            ],
        };
        run(report, &backend, dir.path(), records, samples, || {
            server.value("SELECT pg_database_size(current_database())")
        })?;
    }
    Ok(())
}

/// Where one run keeps the fleet: how the bench opens the store and what the aggregator is
/// told; its figures go under `scenario`.
struct Backend {
    scenario: &'static str,
    sqlite: bool,
    options: OpenOptions,
    args: Vec<String>,
}

fn options(spec: StoreSpec, dir: &Path, password_file: Option<&Path>) -> OpenOptions {
    OpenOptions {
        spec,
        data_dir: dir.to_path_buf(),
        retention: fleet::retention(),
        postgres: PgOptions {
            password: password_file
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|p| p.trim().to_owned()),
            ..PgOptions::default()
        },
    }
}

/// Writes the fleet, rolls its closed hours up, serves it and measures the pages (and on
/// SQLite the first page's weight and the live alert); `size` gives the store's bytes.
fn run(
    report: &mut Report,
    backend: &Backend,
    dir: &Path,
    records: u64,
    samples: usize,
    size: impl Fn() -> anyhow::Result<f64>,
) -> anyhow::Result<()> {
    let scenario = backend.scenario;
    let days = days_for(records);
    let store = store::open(&backend.options)?;
    let started = Instant::now();
    let written = fleet::fill_store(&*store, records, days)?;
    let fill_secs = started.elapsed().as_secs_f64();
    report.add(
        scenario,
        &format!("records in the store ({days} days, 50 pods in 5 namespaces)"),
        written as f64,
        "records",
        None,
    );
    report.add(
        scenario,
        "seconds to write them (store append path)",
        fill_secs,
        "s",
        None,
    );
    report.add(
        scenario,
        "store size",
        size()? / (1 << 20) as f64,
        "MiB",
        None,
    );
    // The closed hours rolled up, as a running aggregator keeps them (its rollups thread
    // would otherwise build them while the pages are measured).
    let started = Instant::now();
    let hours = procflow::aggregator::rollups::RollupBuilder::new(store.clone())
        .catch_up(procflow::model::now_ns())?;
    drop(store);
    report.add(
        scenario,
        &format!("rolling up the store's closed hours ({hours} hours), in-process"),
        started.elapsed().as_secs_f64(),
        "s",
        None,
    );

    let rules = tempfile::tempdir()?;
    std::fs::write(rules.path().join("bench.yaml"), MARKER_RULE)?;
    let token = dir.join("token");
    std::fs::write(&token, CREDENTIAL)?;
    let grpc = free_port()?;
    let ui = free_port()?;
    let aggregator = Command::new(procflow_bin())
        .args(["aggregator", "--listen", &format!("127.0.0.1:{grpc}")])
        .args([
            "--ui-listen",
            &format!("127.0.0.1:{ui}"),
            "--retention",
            "400d",
        ])
        .args(&backend.args)
        .arg("--token-file")
        .arg(&token)
        .arg("--data-dir")
        .arg(dir)
        .arg("--rules")
        .arg(rules.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = aggregator.id();
    crate::cleanup::child_started(pid);
    let result = measure(report, backend, ui, pid, samples, days).and_then(|session| {
        if backend.sqlite {
            first_page_weight(report, ui, &session)?;
            alert_on_open_page(report, grpc, ui, &token, &session, samples.min(10))
        } else {
            Ok(())
        }
    });
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let mut aggregator = aggregator;
    let _ = aggregator.wait();
    crate::cleanup::child_ended(pid);
    result
}

/// Waits for the console, signs in, waits until the aggregator is idle (its start-up
/// warm-up done, as a running one's is), then loads each page `samples` times; returns the
/// session.
fn measure(
    report: &mut Report,
    backend: &Backend,
    ui: u16,
    pid: u32,
    samples: usize,
    days: u64,
) -> anyhow::Result<String> {
    let scenario = backend.scenario;
    let ready = Instant::now();
    while TcpStream::connect(("127.0.0.1", ui)).is_err() {
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(30),
            "console did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let session = sign_in(ui)?;
    crate::rawday::wait_idle(pid);
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
        ("overview, last 30 days", "/?last=30d".into()),
    ];
    crate::machine_speed(report, &format!("before the {scenario} pages"));
    report.add(
        scenario,
        "load average before the pages",
        crate::pgstore::load_average(),
        "",
        None,
    );
    if let Some(secs) = std::env::var("PF_BENCH_DEBUG")
        .ok()
        .map(|s| s.parse().unwrap_or(10))
    {
        // Time to attach a profiler to the aggregator before the cold loads.
        eprintln!("console: aggregator {pid} idle; cold loads in {secs} s");
        std::thread::sleep(Duration::from_secs(secs));
    }
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
        let started = Instant::now();
        let response = get(ui, path, Some(&session))?;
        let wall = started.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(response.status == 200, "{path}: HTTP {}", response.status);
        let ms = response.server_ms.context("no Server-Timing header")?;
        report.add(
            scenario,
            &format!("{name}: server time, first load"),
            ms,
            "ms",
            Some(("<=300 ms", ms <= 300.0)),
        );
        report.add(
            scenario,
            &format!("{name}: whole request at the client"),
            wall,
            "ms",
            None,
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
            scenario,
            &format!("{name}: server time p95 ({samples} loads, 24 h scope unless said)"),
            p95,
            "ms",
            Some(("<=300 ms", p95 <= 300.0)),
        );
        report.add(
            scenario,
            &format!("{name}: whole request at the client, p50"),
            percentile(&mut wall, 0.5),
            "ms",
            None,
        );
        report.add(
            scenario,
            &format!("{name}: whole request at the client, p95"),
            percentile(&mut wall, 0.95),
            "ms",
            None,
        );
    }
    Ok(session)
}

/// First page weight: the overview's HTML and every file it references, uncompressed.
fn first_page_weight(report: &mut Report, ui: u16, session: &str) -> anyhow::Result<()> {
    let overview = get(ui, "/?last=24h", Some(session))?;
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
    Ok(())
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
