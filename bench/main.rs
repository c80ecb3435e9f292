//! procflow-bench: drives real sockets and processes, runs the collector as a separate
//! process, and measures fidelity, speed and footprint beside the standard tools.
//!
//! `procflow-bench default --json FILE` runs the suite; `smoke` runs every scenario at tiny
//! sizes. Scenarios: poll, churn, lifetime, quiet, spawn, idle, pipeline, streams, hostile,
//! rules, http, console, audit. Workloads stay on loopback, are bounded in count and time, and child processes
//! are ended by pid.

mod audit;
mod churn;
mod console;
mod hostile;
mod http;
mod lifetime;
mod once;
mod pgstore;
mod pipeline;
mod rules;
mod score;
mod spawn;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use procflow::attribution::NoAttribution;
use procflow::flows::{FlowConfig, FlowTable, Scoper};
use procflow::model::Record;
use procflow::procs::{ProcessConfig, ProcessMonitor};
use procflow::sockdiag::{msg, Dumper};
use serde::Serialize;

use score::ratio;

#[derive(Debug, Serialize)]
struct Metric {
    scenario: String,
    metric: String,
    value: f64,
    unit: String,
    target: Option<String>,
    met: Option<bool>,
}

#[derive(Debug, Serialize, Default)]
struct Report {
    kernel: String,
    cpus: usize,
    suite: String,
    metrics: Vec<Metric>,
    not_measured: Vec<(String, String)>,
}

impl Report {
    fn add(
        &mut self,
        scenario: &str,
        metric: &str,
        value: f64,
        unit: &str,
        target: Option<(&str, bool)>,
    ) {
        // Progress on stderr: a full run takes minutes and the table comes at the end.
        eprintln!("  {scenario}: {metric} = {value:.3} {unit}");
        self.metrics.push(Metric {
            scenario: scenario.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            target: target.map(|(t, _)| t.to_owned()),
            met: target.map(|(_, m)| m),
        });
    }

    fn skip(&mut self, scenario: &str, why: impl Into<String>) {
        self.not_measured.push((scenario.into(), why.into()));
    }
}

struct Sizes {
    poll_conns: Vec<usize>,
    /// Idle processes beside the first poll size (the attribution and process-scan figures
    /// are for 5,000 processes).
    poll_processes: usize,
    churn_rate: u64,
    churn_secs: u64,
    /// Seconds of the lifetime scenario's workload.
    lifetime_secs: u64,
    /// Connections made after a quiet spell of ≥ 10 s each, in a pod and on the host (0: not run).
    quiet_spells: usize,
    udp_rate: u64,
    spawn_rate: u64,
    spawn_secs: u64,
    idle_secs: u64,
    transport_records: u64,
    sustain_secs: u64,
    streams: usize,
    stream_batches: u64,
    stream_batch_records: u64,
    /// Seconds per phase of the hostile-client scenario (four phases), and its idle streams.
    hostile_secs: u64,
    hostile_idle_streams: usize,
    rule_records: usize,
    alert_samples: usize,
    http_secs: f64,
    console_records: u64,
    console_samples: usize,
    /// Audit events through the webhook, and execs joined with their trees.
    audit_events: u64,
    audit_execs: usize,
}

/// `procflow-bench [default|smoke] [SCENARIO...] [--json FILE]`: the suite picks the sizes
/// (default when omitted), scenario names pick a subset.
/// `transport` (the pipeline's transport figure alone) and `pgstore` (sustained ingest into
/// PostgreSQL, a server of scripts/pg.sh) run only when named.
const SCENARIOS: [&str; 15] = [
    "poll",
    "churn",
    "lifetime",
    "quiet",
    "spawn",
    "idle",
    "pipeline",
    "transport",
    "streams",
    "hostile",
    "rules",
    "http",
    "console",
    "pgstore",
    "audit",
];

/// How fast this shared VM runs right now: nanoseconds per step of a dependent xor-multiply
/// chain (4 cycles of latency: 1.3 ns on a dedicated 3 GHz core). The VM's speed moves by
/// 2× within an hour, so rate figures are read next to this one (see also
/// scripts/cpu-speed.c).
pub(crate) fn machine_speed(report: &mut Report, when: &str) {
    const STEPS: u64 = 100_000_000;
    let started = Instant::now();
    let mut chain = std::hint::black_box(1u64);
    for i in 0..STEPS {
        chain = (chain ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    std::hint::black_box(chain);
    let ns = started.elapsed().as_nanos() as f64 / STEPS as f64;
    report.add(
        "machine",
        &format!("xor-multiply step, {when} (1.3 ns at 3 GHz; lower is faster)"),
        ns,
        "ns",
        None,
    );
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker-hold") {
        return worker_hold(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("worker-lifetime-server") {
        return lifetime::worker_server();
    }
    if args.first().map(String::as_str) == Some("worker-lifetime-client") {
        return lifetime::worker_client(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("worker-http") {
        return http::worker_http();
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: procflow-bench [default|smoke] [{}...] [--json FILE] [--markdown FILE]",
            SCENARIOS.join("|")
        );
        return Ok(());
    }
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let markdown = args
        .iter()
        .position(|a| a == "--markdown")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let mut words = args.iter().take_while(|a| !a.starts_with("--")).peekable();
    let suite = match words.peek() {
        Some(w) if !SCENARIOS.contains(&w.as_str()) => words.next().cloned().unwrap_or_default(),
        _ => "default".into(),
    };
    let only: Vec<String> = words.cloned().collect();
    if let Some(unknown) = only.iter().find(|o| !SCENARIOS.contains(&o.as_str())) {
        anyhow::bail!(
            "unknown scenario {unknown:?}: choose from {}",
            SCENARIOS.join(", ")
        );
    }
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let sizes = match suite.as_str() {
        "smoke" => Sizes {
            poll_conns: vec![200],
            poll_processes: 20,
            churn_rate: 100,
            churn_secs: 1,
            lifetime_secs: 1,
            quiet_spells: 0,
            udp_rate: 20,
            spawn_rate: 20,
            spawn_secs: 1,
            idle_secs: 2,
            transport_records: 20_000,
            sustain_secs: 1,
            streams: 20,
            stream_batches: 2,
            stream_batch_records: 10,
            hostile_secs: 2,
            hostile_idle_streams: 20,
            rule_records: 10_000,
            alert_samples: 1,
            http_secs: 0.5,
            console_records: 20_000,
            console_samples: 2,
            audit_events: 4_000,
            audit_execs: 30,
        },
        "default" => Sizes {
            poll_conns: vec![10_000, 50_000],
            poll_processes: 5_000,
            churn_rate: 2_000,
            churn_secs: 10,
            lifetime_secs: 10,
            quiet_spells: 5,
            udp_rate: 500,
            spawn_rate: 200,
            spawn_secs: 10,
            idle_secs: 20,
            transport_records: 3_000_000,
            sustain_secs: 60,
            streams: 1000,
            stream_batches: 5,
            stream_batch_records: 100,
            hostile_secs: 20,
            hostile_idle_streams: 1000,
            rule_records: 2_000_000,
            alert_samples: 10,
            http_secs: 5.0,
            console_records: 10_000_000,
            console_samples: 20,
            audit_events: 200_000,
            audit_execs: 300,
        },
        other => anyhow::bail!(
            "unknown suite or scenario {other:?}: usage: procflow-bench [default|smoke] [{}...] [--json FILE] [--markdown FILE]",
            SCENARIOS.join("|")
        ),
    };
    let mut report = Report {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        suite: suite.clone(),
        ..Report::default()
    };
    machine_speed(&mut report, "start of run");
    // Idle, spawn and churn first, on a quiet node: the socket scenarios leave up to 120,000
    // TIME_WAIT sockets in the host's connection hash for a minute, which every dump walks
    // (tens of ms), and the engine's one thread does not poll processes meanwhile. A pod
    // has such a hash only if it made those connections itself (see BENCHMARKS.md).
    if wanted("idle") {
        if let Err(e) = scenario_idle(&mut report, sizes.idle_secs) {
            report.skip("idle", format!("{e:#}"));
        }
    }
    if wanted("spawn") {
        if let Err(e) = spawn::scenario_spawn(&mut report, &sizes) {
            report.skip("spawn", format!("{e:#}"));
        }
    }
    if wanted("churn") {
        if let Err(e) = churn::scenario_churn(&mut report, &sizes) {
            report.skip("churn", format!("{e:#}"));
        }
    }
    if wanted("lifetime") {
        if let Err(e) = lifetime::scenario_lifetime(&mut report, sizes.lifetime_secs) {
            report.skip("lifetime", format!("{e:#}"));
        }
    }
    if wanted("quiet") && sizes.quiet_spells > 0 {
        if let Err(e) = lifetime::scenario_quiet(&mut report, sizes.quiet_spells) {
            report.skip("quiet", format!("{e:#}"));
        }
    }
    for (i, n) in sizes
        .poll_conns
        .iter()
        .enumerate()
        .filter(|_| wanted("poll"))
    {
        let processes = if i == 0 { sizes.poll_processes } else { 0 };
        if let Err(e) = scenario_poll(&mut report, *n, processes) {
            report.skip(&format!("poll {n}"), format!("{e:#}"));
        }
    }
    if wanted("pipeline") {
        if let Err(e) = pipeline::scenario_pipeline(
            &mut report,
            sizes.transport_records,
            Duration::from_secs(sizes.sustain_secs),
        ) {
            report.skip("pipeline", format!("{e:#}"));
        }
    }
    if only.iter().any(|o| o == "transport") {
        if let Err(e) = pipeline::scenario_transport(&mut report, sizes.transport_records) {
            report.skip("transport", format!("{e:#}"));
        }
    }
    if only.iter().any(|o| o == "pgstore") {
        if let Err(e) =
            pgstore::scenario_pgstore(&mut report, Duration::from_secs(sizes.sustain_secs))
        {
            report.skip("pgstore", format!("{e:#}"));
        }
    }
    if wanted("streams") {
        // The same streams twice: unidentified loopback writers, then one verified pod
        // identity per stream; the ratio is what identity verification costs ingest.
        let run = |report: &mut Report, identities| {
            pipeline::scenario_streams(
                report,
                sizes.streams,
                sizes.stream_batches,
                sizes.stream_batch_records,
                identities,
            )
        };
        // Two rounds, alternating, so a machine that slows down mid-run weighs on both.
        let mut rounds = || -> anyhow::Result<(f64, f64)> {
            let (mut plain, mut verified) = (0.0, 0.0);
            for _ in 0..2 {
                plain += run(&mut report, false)?;
                verified += run(&mut report, true)?;
            }
            Ok((plain, verified))
        };
        match rounds() {
            Ok((plain, verified)) => {
                let kept = verified / plain;
                report.add(
                    &format!("streams {}, projected tokens", sizes.streams),
                    "throughput with identities / without (two rounds)",
                    kept,
                    "ratio",
                    Some((">=0.95", kept >= 0.95)),
                );
            }
            Err(e) => report.skip("streams", format!("{e:#}")),
        }
    }
    if wanted("hostile") {
        if let Err(e) =
            hostile::scenario_hostile(&mut report, sizes.hostile_secs, sizes.hostile_idle_streams)
        {
            report.skip("hostile", format!("{e:#}"));
        }
    }
    if wanted("rules") {
        if let Err(e) = rules::scenario_rules(&mut report, sizes.rule_records, sizes.alert_samples)
        {
            report.skip("rules", format!("{e:#}"));
        }
    }
    if wanted("http") {
        if let Err(e) = http::scenario_http(&mut report, sizes.http_secs) {
            report.skip("http", format!("{e:#}"));
        }
    }
    if wanted("console") {
        if let Err(e) =
            console::scenario_console(&mut report, sizes.console_records, sizes.console_samples)
        {
            report.skip("console", format!("{e:#}"));
        }
    }
    if wanted("audit") {
        if let Err(e) = audit::scenario_audit(&mut report, sizes.audit_events, sizes.audit_execs) {
            report.skip("audit", format!("{e:#}"));
        }
    }
    machine_speed(&mut report, "end of run");
    print_table(&report);
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {path}"))?;
    }
    if let Some(path) = markdown {
        std::fs::write(&path, markdown_table(&report))
            .with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

/// The report as a Markdown table (BENCHMARKS.md holds the latest).
fn markdown_table(r: &Report) -> String {
    let mut out = format!(
        "`procflow-bench {}` — kernel {}, {} CPUs\n\n| scenario | metric | value | unit | target | met |\n|---|---|---:|---|---|---|\n",
        r.suite, r.kernel, r.cpus
    );
    for m in &r.metrics {
        let met = match m.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let value = if m.value.fract() == 0.0 {
            format!("{}", m.value)
        } else if m.value.abs() >= 100.0 {
            format!("{:.1}", m.value)
        } else {
            format!("{:.3}", m.value)
        };
        out.push_str(&format!(
            "| {} | {} | {value} | {} | {} | {met} |\n",
            m.scenario,
            m.metric,
            m.unit,
            m.target.clone().unwrap_or_default()
        ));
    }
    for (s, why) in &r.not_measured {
        out.push_str(&format!("| {s} | not measured: {why} | | | | |\n"));
    }
    out
}

fn print_table(r: &Report) {
    println!(
        "procflow-bench {} — kernel {}, {} CPUs",
        r.suite, r.kernel, r.cpus
    );
    println!(
        "{:<14} {:<44} {:>14} {:<8} {:<18} met",
        "scenario", "metric", "value", "unit", "target"
    );
    for m in &r.metrics {
        let met = match m.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!(
            "{:<14} {:<44} {:>14.3} {:<8} {:<18} {}",
            m.scenario,
            m.metric,
            m.value,
            m.unit,
            m.target.clone().unwrap_or_default(),
            met
        );
    }
    for (s, why) in &r.not_measured {
        println!("{s:<14} not measured: {why}");
    }
}

// === collector as a separate process ===

fn procflow_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("PROCFLOW_BIN") {
        return p.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("procflow")))
        .unwrap_or_else(|| "procflow".into())
}

struct CollectorProc {
    child: Child,
    /// The collector itself (the child, or the child's child when wrapped by `unshare`).
    pid: u32,
    out_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn start_collector(extra: &[&str]) -> anyhow::Result<CollectorProc> {
    let mut command = Command::new(procflow_bin());
    command.arg("collector").args(extra);
    launch_collector(command, false)
}

/// The collector as in the idle pod of the target: its own pid and network namespaces
/// (/proc remounted) with about 20 processes and 50 sockets: 17 sleeping processes and an
/// app process holding 25 loopback connections (50 sockets and its listener), fed by one
/// more sleeper. The collector is the namespace's first process, as the pause container
/// would be.
fn start_collector_in_pod(extra: &[&str]) -> anyhow::Result<CollectorProc> {
    let mut command = Command::new("unshare");
    command
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--net",
            "--kill-child",
            "--",
            "sh",
            "-c",
            IDLE_POD_SCRIPT,
        ])
        .arg(procflow_bin())
        .arg(std::env::current_exe()?)
        .arg(IDLE_POD_CONNECTIONS.to_string())
        .args(extra);
    launch_collector(command, true)
}

/// Held loopback connections of the idle pod's app (two sockets each).
const IDLE_POD_CONNECTIONS: usize = 25;

/// `$0` the collector, `$1` this bench (its `worker-hold` is the app), `$2` the connections;
/// the rest are the collector's flags.
const IDLE_POD_SCRIPT: &str = r#"bench=$1; connections=$2; shift 2
ip link set lo up || exit 1
for i in $(seq 17); do sleep 3600 & done
sleep 3600 | "$bench" worker-hold "$connections" 127.0.0.1 >/dev/null &
exec "$0" collector "$@""#;

fn launch_collector(mut command: Command, wrapped: bool) -> anyhow::Result<CollectorProc> {
    let dir = tempfile::tempdir()?;
    let out_path = dir.path().join("records.jsonl");
    let out = std::fs::File::create(&out_path)?;
    let mut child = command
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the collector (build it: cargo build --release --bins)")?;
    let stderr = child.stderr.take().context("stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("collector running") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .context("collector did not start")?;
    std::thread::sleep(Duration::from_millis(300));
    let pid = if wrapped {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))?;
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .context("the collector inside the namespace")?
    } else {
        child.id()
    };
    Ok(CollectorProc {
        child,
        pid,
        out_path,
        _dir: dir,
    })
}

impl CollectorProc {
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    }

    /// CPU time of all its live threads in nanoseconds, from the scheduler's own clock
    /// (`/proc/PID/task/*/schedstat`); the tick-sampled `utime + stime` is too coarse for an
    /// idle process. `None` where the kernel does not expose it.
    fn cpu_runtime_ns(&self) -> Option<u64> {
        let mut total = 0;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid)).ok()? {
            let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(total)
    }

    fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    fn stop(mut self) -> anyhow::Result<Vec<Record>> {
        // The collector itself: `unshare` does not forward SIGTERM, and the namespace ends
        // with its first process.
        Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        self.child.wait()?;
        let text = std::fs::read_to_string(&self.out_path)?;
        let mut records = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let record = serde_json::from_str(line)
                .with_context(|| format!("collector output line {}: {line}", i + 1))?;
            records.push(record);
        }
        Ok(records)
    }
}

fn ticks_per_sec() -> f64 {
    procfs::ticks_per_second() as f64
}

// === poll: one full poll at N sockets against the kernel's cost and the standard tools ===

/// Worker process: holds `n` loopback connections to a listener of its own until stdin closes.
fn worker_hold(args: &[String]) -> anyhow::Result<()> {
    let n: usize = args.first().context("count")?.parse()?;
    let ip: std::net::Ipv4Addr = args.get(1).context("ip")?.parse()?;
    let listener = TcpListener::bind((ip, 0))?;
    let addr = listener.local_addr()?;
    let acceptor = std::thread::spawn(move || {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => break,
            }
        }
        held
    });
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(TcpStream::connect(addr)?);
    }
    let servers = acceptor
        .join()
        .map_err(|_| anyhow::anyhow!("acceptor panicked"))?;
    println!("ready {}", clients.len() + servers.len());
    std::io::stdout().flush()?;
    let mut sink = [0u8; 1];
    let _ = std::io::stdin().read(&mut sink);
    Ok(())
}

/// Idle processes this run started, ended (by pid) when dropped.
struct Idlers(Vec<Child>);

impl Idlers {
    fn spawn(n: usize) -> anyhow::Result<Idlers> {
        let mut idlers = Idlers(Vec::with_capacity(n));
        for _ in 0..n {
            idlers.0.push(
                Command::new("sleep")
                    .arg("600")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting an idle process")?,
            );
        }
        Ok(idlers)
    }
}

impl Drop for Idlers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// A pod's network namespace for the calling thread: a new one with loopback up.
fn enter_pod_netns() -> anyhow::Result<procflow::sys::ns::NetnsGuard> {
    let entered = procflow::sys::ns::NetnsGuard::enter_new().context("unshare(CLONE_NEWNET)")?;
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()?;
    anyhow::ensure!(up.success(), "ip link set lo up: {up}");
    Ok(entered)
}

fn scenario_poll(report: &mut Report, conns: usize, processes: usize) -> anyhow::Result<()> {
    let scenario = if processes > 0 {
        format!("poll {}k+{processes}p", conns * 2 / 1000)
    } else {
        format!("poll {}k", conns * 2 / 1000)
    };
    // A pod's own network namespace: the host's holds sockets of processes outside this pid
    // namespace (here a supervisor's listener), which no fd table shows and which would make
    // every full pass read every table.
    let _netns = enter_pod_netns()
        .inspect_err(|e| eprintln!("  poll: in the host's network namespace ({e:#})"))
        .ok();
    let _idlers = Idlers::spawn(processes)?;
    // Each worker holds ≤ 9,000 connections (18,000 fds): under the 20,000-fd limit.
    let per_worker = 9_000usize;
    let mut workers = Vec::new();
    let mut remaining = conns;
    let mut i = 0u8;
    while remaining > 0 {
        let n = remaining.min(per_worker);
        let mut child = Command::new(std::env::current_exe()?)
            .args(["worker-hold", &n.to_string(), &format!("127.0.1.{}", i + 1)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("worker stdout")?).read_line(&mut line)?;
        anyhow::ensure!(line.starts_with("ready"), "worker failed: {line}");
        workers.push(child);
        remaining -= n;
        i += 1;
    }
    let sockets = conns * 2;
    let result = (|| -> anyhow::Result<()> {
        // procflow: dump + parse + flow-table diff (steady state: the table already knows them).
        let mut dumper = Dumper::open()?;
        let mut table = FlowTable::new(FlowConfig::default(), Scoper::default());
        let mut buf = Vec::new();
        let rss_before = own_rss_kib();
        dumper.dump_all(&mut buf)?;
        let mut out = Vec::new();
        table.apply_dump(&buf, true, 1, &mut NoAttribution, &mut out);
        let rss_after = own_rss_kib();
        let records_bytes = out.capacity() * std::mem::size_of::<Record>() / 1024;
        drop(out);
        let mut now = 2;
        // The four are timed in turn, round after round, and each keeps its best: the VM's
        // speed drifts within seconds, and timing them one after the other made the ratios
        // follow the drift (once procflow below the kernel's own minimal dump).
        let (mut minimal, mut ours, mut ss, mut proc_net) =
            (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..POLL_ROUNDS {
            // The kernel's own cost: dump every table and only count messages.
            minimal = minimal.min(timed(|| minimal_dump().map(|_| ()))?);
            // As the collector polls: the table takes each datagram's sockets as they come.
            ours = ours.min(timed(|| {
                now += 1;
                table.begin_dump(now);
                dumper.dump_all_with(|batch| table.observe(batch))?;
                let mut out = Vec::new();
                table.finish_dump(true, &mut NoAttribution, &mut out);
                Ok(())
            })?);
            ss = ss.min(timed(|| run_quiet("sh", &["-c", "ss -tin > /dev/null"]))?);
            proc_net = proc_net.min(timed(|| {
                let mut sink = Vec::new();
                for f in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
                    std::fs::File::open(f)?.read_to_end(&mut sink)?;
                }
                Ok(())
            })?);
        }
        // The table's share of a poll: the first dump, held in memory, applied again (every
        // socket known, steady state), without the kernel's part.
        let diff = best_of(3, || {
            now += 1;
            let mut out = Vec::new();
            table.apply_dump(&buf, true, now, &mut NoAttribution, &mut out);
            Ok(())
        })?;
        // One full attribution pass (every socket's owner unknown, as after a start or a lost
        // index) by a collector whose process table is current, vs ss -tinp (which walks every
        // fd table). The pass reads the biggest tables first and stops once every socket is
        // found, so it reads every table only when some socket's owner is unreadable.
        let inodes: Vec<u64> = buf.iter().map(|s| s.inode).filter(|i| *i != 0).collect();
        let mut attributed = 0usize;
        let mut attribution = f64::MAX;
        let mut tables_read = 0;
        // Best of three, as ss -tinp below: the first pass also creates the kernel's
        // dentries of every fd it reads, which ss then finds made.
        for _ in 0..3 {
            let mut monitor = ProcessMonitor::new(ProcessConfig::default())?;
            monitor.sweep(procflow::model::now_ns(), &mut Vec::new());
            let t = Instant::now();
            monitor.refresh_inodes(&inodes, procflow::model::now_ns(), &mut Vec::new());
            attributed = inodes
                .iter()
                .filter(|i| {
                    procflow::attribution::OwnerLookup::owner(&mut monitor, **i, None, None)
                        .attribution
                        == procflow::model::Attribution::Fd
                })
                .count();
            attribution = attribution.min(t.elapsed().as_secs_f64());
            tables_read = monitor.fd_tables_read();
        }
        // The pass a dump triggers when a process that holds sockets opens one more, all
        // other processes unchanged: the owner is looked for first and the pass stops there.
        let mut monitor = ProcessMonitor::new(ProcessConfig::default())?;
        monitor.sweep(procflow::model::now_ns(), &mut Vec::new());
        monitor.refresh_inodes(&inodes, procflow::model::now_ns(), &mut Vec::new());
        let mut held = Vec::new();
        let one_new = best_of(3, || {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
            let inode = std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
            held.push(socket);
            monitor.refresh_inodes(&[inode], procflow::model::now_ns(), &mut Vec::new());
            Ok(())
        })?;
        let host_processes = monitor.len();
        let ss_p = best_of(3, || run_quiet("sh", &["-c", "ss -tinp > /dev/null"]))?;
        // The floor under any full pass: every fd table walked (open, getdents, a readlink
        // per fd), nothing kept. A pass costs this plus its bookkeeping.
        let bare_walk = best_of(2, || {
            let mut links = 0usize;
            for entry in std::fs::read_dir("/proc")? {
                let name = entry?.file_name();
                if name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
                    let dir = std::path::Path::new("/proc").join(name).join("fd");
                    let _ = procflow::sys::proc::for_each_fd_link(&dir, |_| links += 1);
                }
            }
            std::hint::black_box(links);
            Ok(())
        })?;
        // The floor under any pass that finds every socket: the tables that hold them walked.
        let holders_walk = best_of(2, || {
            let mut links = 0usize;
            for worker in &workers {
                let dir = format!("/proc/{}/fd", worker.id());
                procflow::sys::proc::for_each_fd_link(std::path::Path::new(&dir), |_| links += 1)?;
            }
            std::hint::black_box(links);
            Ok(())
        })?;
        // Processes: the first sight of every process (all details: status, cmdline, cgroup,
        // exe, cwd, stdio, lineage) and the steady-state sweep that finds exits and execs.
        let first_sight = best_of(2, || {
            let mut monitor = ProcessMonitor::new(ProcessConfig::default())?;
            monitor.sweep(procflow::model::now_ns(), &mut Vec::new());
            Ok(())
        })?;
        let mut warm = ProcessMonitor::new(ProcessConfig::default())?;
        warm.sweep(procflow::model::now_ns(), &mut Vec::new());
        let process_scan = best_of(3, || {
            warm.sweep(procflow::model::now_ns(), &mut Vec::new());
            Ok(())
        })?;
        let ps = best_of(3, || {
            run_quiet("sh", &["-c", "ps -e -o pid,ppid,lstart,args > /dev/null"])
        })?;
        report.add(
            &scenario,
            "processes on the host",
            host_processes as f64,
            "procs",
            None,
        );
        report.add(
            &scenario,
            "full attribution pass (every socket's owner unknown)",
            attribution * 1e3,
            "ms",
            Some(("10x faster than ss -tinp", attribution * 10.0 <= ss_p)),
        );
        report.add(
            &scenario,
            "fd tables that pass read",
            tables_read as f64,
            "tables",
            None,
        );
        report.add(
            &scenario,
            "bare walk of every fd table (floor of a full pass)",
            bare_walk * 1e3,
            "ms",
            None,
        );
        report.add(
            &scenario,
            "bare walk of the socket holders' fd tables (floor of any pass)",
            holders_walk * 1e3,
            "ms",
            None,
        );
        report.add(
            &scenario,
            "attribution pass, one new socket",
            one_new * 1e3,
            "ms",
            Some(("<1% of a full pass", one_new < attribution * 0.01)),
        );
        report.add(
            &scenario,
            "sockets attributed by fd in that pass",
            attributed as f64 / inodes.len().max(1) as f64 * 100.0,
            "%",
            None,
        );
        report.add(&scenario, "ss -tinp > /dev/null", ss_p * 1e3, "ms", None);
        report.add(
            &scenario,
            "process sweep, steady state (procflow)",
            process_scan * 1e3,
            "ms",
            Some(("2.5x faster than ps", process_scan * 2.5 <= ps)),
        );
        report.add(
            &scenario,
            "process first sight, all details + lineage",
            first_sight * 1e3,
            "ms",
            None,
        );
        report.add(
            &scenario,
            "ps -e -o pid,ppid,lstart,args",
            ps * 1e3,
            "ms",
            None,
        );
        report.add(
            &scenario,
            "sockets in the namespace",
            buf.len() as f64,
            "sockets",
            None,
        );
        report.add(
            &scenario,
            "minimal netlink dump (kernel cost)",
            minimal * 1e3,
            "ms",
            None,
        );
        report.add(
            &scenario,
            "procflow poll (dump+parse+diff)",
            ours * 1e3,
            "ms",
            Some(("<=1.5x minimal", ours <= minimal * 1.5)),
        );
        report.add(
            &scenario,
            "flow-table diff alone (a held dump applied again)",
            diff * 1e3,
            "ms",
            None,
        );
        report.add(
            &scenario,
            "ss -tin > /dev/null",
            ss * 1e3,
            "ms",
            Some(("procflow >=5x faster", ss >= ours * 5.0)),
        );
        report.add(
            &scenario,
            "read /proc/net/tcp{,6} (no counters)",
            proc_net * 1e3,
            "ms",
            Some(("procflow faster", ours < proc_net)),
        );
        let table_kib = rss_after.saturating_sub(rss_before).saturating_sub(
            records_bytes as u64
                + (buf.capacity() * std::mem::size_of::<msg::SocketInfo>() / 1024) as u64,
        );
        let per_socket = table_kib as f64 * 1024.0 / sockets.max(1) as f64;
        // The table's own count of what it holds: exact, where the RSS delta moves with
        // what the allocator kept from earlier scenarios (0 B to 223 B in full runs).
        let accounted = table.heap_bytes() as f64 / table.len().max(1) as f64;
        report.add(
            &scenario,
            "flow table memory per socket (its maps and queues)",
            accounted,
            "bytes",
            // The issue's figure is at 100k sockets; smaller tables carry more of the map's
            // power-of-two slack per socket and are reported without a target.
            (sockets >= 100_000).then_some(("<=200 at 100k", accounted <= 200.0)),
        );
        once::measure(report, &scenario, buf.len())?;
        report.add(
            &scenario,
            "flow table entry with its key (before the map's slack)",
            FlowTable::ENTRY_BYTES as f64,
            "bytes",
            None,
        );
        report.add(
            &scenario,
            "flow table memory per socket (RSS delta, allocator-dependent)",
            per_socket,
            "bytes",
            None,
        );
        Ok(())
    })();
    for mut w in workers {
        drop(w.stdin.take());
        let _ = w.wait();
    }
    result
}

fn minimal_dump() -> anyhow::Result<usize> {
    use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut count = 0;
    for (family, protocol) in procflow::sockdiag::dump::TABLES {
        socket.send(
            &msg::dump_request(family, protocol, msg::TCP_STATES_TRACKED, 1),
            0,
        )?;
        'dump: loop {
            buf.clear();
            let n = socket.recv(&mut buf, 0)?;
            for m in msg::messages(&buf[..n]).flatten() {
                if m.kind == msg::NLMSG_DONE || m.kind == msg::NLMSG_ERROR {
                    break 'dump;
                }
                count += 1;
            }
        }
    }
    Ok(count)
}

fn best_of(n: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..n {
        best = best.min(timed(&mut f)?);
    }
    Ok(best)
}

/// Runs each of `commands` once per round, `rounds` times, in turn; the best time of each.
/// Interleaved, so the VM's speed drift hits each alike.
pub(crate) fn best_of_each<const N: usize>(
    rounds: usize,
    mut commands: [&mut dyn FnMut() -> anyhow::Result<()>; N],
) -> anyhow::Result<[f64; N]> {
    let mut best = [f64::MAX; N];
    for _ in 0..rounds {
        for (command, best) in commands.iter_mut().zip(best.iter_mut()) {
            *best = best.min(timed(command)?);
        }
    }
    Ok(best)
}

/// Rounds of the poll comparison (procflow, the minimal dump, `ss -tin`, /proc/net/tcp).
const POLL_ROUNDS: usize = 4;

/// Seconds one call of `f` took.
fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

pub(crate) fn run_quiet(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "{cmd} {args:?} failed");
    Ok(())
}

fn own_rss_kib() -> u64 {
    status_kib(std::process::id(), "VmRSS:")
}

/// A `kB` line of /proc/PID/status (VmRSS, VmHWM); 0 when unreadable.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

// === idle: an idle host at default intervals ===

/// Start-up work is not idle cost: measured from this long after the collector is ready.
const IDLE_SETTLE: Duration = Duration::from_secs(3);

fn scenario_idle(report: &mut Report, secs: u64) -> anyhow::Result<()> {
    // The profile the target is for: an idle pod (own pid and network namespaces).
    let (cpu, rss, records) = idle_cost(start_collector_in_pod(&["--output", "stdout"])?, secs)?;
    // What the pod held, as the collector saw it (the target's pod: about 20 and 50).
    let processes: std::collections::HashSet<u32> = records
        .iter()
        .filter_map(|r| match r {
            Record::Process(p) => Some(p.pid),
            _ => None,
        })
        .collect();
    let sockets: std::collections::HashSet<u64> = records
        .iter()
        .filter_map(|r| match r {
            Record::Flow(f) => Some(f.cookie),
            Record::Listener(l) => Some(l.cookie),
            _ => None,
        })
        .collect();
    report.add(
        "idle pod",
        "processes in the pod",
        processes.len() as f64,
        "procs",
        None,
    );
    report.add(
        "idle pod",
        "sockets in the pod",
        sockets.len() as f64,
        "sockets",
        None,
    );
    report.add(
        "idle pod",
        "collector CPU (own pid+net ns)",
        cpu,
        "% core",
        Some(("<=0.5%", cpu <= 0.5)),
    );
    report.add(
        "idle pod",
        "collector peak RSS",
        rss,
        "MiB",
        Some(("<=16 MiB", rss <= 16.0)),
    );
    // For reference: the same collector watching this whole host.
    let processes = std::fs::read_dir("/proc")?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        })
        .count();
    let (cpu, rss, _) = idle_cost(start_collector(&["--output", "stdout"])?, secs)?;
    report.add(
        "idle host",
        "processes on the host",
        processes as f64,
        "procs",
        None,
    );
    report.add("idle host", "collector CPU", cpu, "% core", None);
    report.add("idle host", "collector peak RSS", rss, "MiB", None);
    Ok(())
}

/// CPU (% of one core) and peak RSS (MiB) of a collector left alone for `secs`, after
/// the start-up (first sweep and dump, a second of fast ticks) has settled; and its records.
fn idle_cost(collector: CollectorProc, secs: u64) -> anyhow::Result<(f64, f64, Vec<Record>)> {
    std::thread::sleep(IDLE_SETTLE);
    let (ticks0, runtime0) = (collector.cpu_ticks(), collector.cpu_runtime_ns());
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = match (runtime0, collector.cpu_runtime_ns()) {
        (Some(before), Some(after)) if after >= before => {
            (after - before) as f64 / 1e9 / elapsed * 100.0
        }
        _ => (collector.cpu_ticks() - ticks0) as f64 / ticks_per_sec() / elapsed * 100.0,
    };
    let rss = collector.peak_rss_kib() as f64 / 1024.0;
    let records = collector.stop()?;
    Ok((cpu, rss, records))
}

/// A typical flow END record for the pipeline scenarios.
fn sample_flow_record() -> Record {
    use procflow::model::*;
    Record::Flow(FlowRecord {
        cookie: 42,
        protocol: Protocol::Tcp,
        family: Family::Ipv4,
        local_addr: "10.0.0.5"
            .parse()
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        local_port: 43512,
        remote_addr: "10.0.3.9".parse().ok(),
        remote_port: Some(5432),
        direction: Direction::Outbound,
        scope: Scope::EastWest,
        phase: FlowPhase::End,
        state: "CLOSE".into(),
        preexisting: false,
        bytes_sent: Some(1234),
        bytes_received: Some(56789),
        segs_out: Some(10),
        segs_in: Some(12),
        retransmits: Some(0),
        total_retrans: Some(0),
        rtt_us: Some(120),
        first_seen: 1,
        last_seen: 2,
        ended_at: Some(3),
        uid: Some(1000),
        inode: Some(9999),
        pid: Some(77),
        process_start_time: Some(5),
        attribution: Attribution::Fd,
        end_reason: EndReason::DestroyEvent,
        reset: false,
        peer_scrubbed: false,
        cgroup_id: None,
    })
}

/// CPU seconds (user + system) of a process from /proc/PID/stat.
fn cpu_secs_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    ticks as f64 / ticks_per_sec()
}

fn own_cpu_secs() -> f64 {
    cpu_secs_of(std::process::id())
}

fn peak_rss_kib_of(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}
