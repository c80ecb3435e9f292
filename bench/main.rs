//! procflow-bench: drives real sockets and processes, runs the collector as a separate
//! process, and measures fidelity, speed and footprint beside the standard tools.
//!
//! `procflow-bench default --json FILE` runs the suite; `smoke` runs every scenario at tiny
//! sizes. Scenarios: poll, churn, lifetime, quiet, spawn, idle, pipeline, streams, hostile,
//! rules, http, console, audit, and when named pgstore and replica-kill. Workloads stay on
//! loopback, are bounded in count and time, and child processes are ended by pid.
//! The collector is `procflow collector` beside this binary (`PROCFLOW_BIN` another one);
//! the idle scenario runs the sidecar's `procflow-collector` (`PROCFLOW_COLLECTOR_BIN`).

mod audit;
mod churn;
mod cleanup;
mod console;
mod detect;
mod hostile;
mod http;
mod idle;
mod lifetime;
mod once;
mod pgstore;
mod pipeline;
mod poll;
mod rawday;
mod replicakill;
mod rollups;
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

use idle::scenario_idle;
use poll::{
    best_of_each, enter_pod_netns, own_rss_kib, run_quiet, scenario_poll, status_kib, worker_hold,
};
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
/// `transport` (the pipeline's transport figure alone), `pgstore` (sustained ingest into
/// PostgreSQL, a server of scripts/pg.sh), `replica-kill` (two replicas on PostgreSQL, one
/// SIGKILLed mid-stream), `rollups` (investigation over 30 days of rollups and one day of
/// raw records), `raw-day` (the same over one day of raw records, over gRPC, both stores) and `detect` (attack and benign scenarios, as root: it creates a user and
/// network namespaces) run only when named.
const SCENARIOS: [&str; 19] = [
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
    "rollups",
    "raw-day",
    "audit",
    "replica-kill",
    "detect",
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
    cleanup::install()?;
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
        if let Err(e) = lifetime::scenario_lifetime(&mut report, sizes.lifetime_secs, None) {
            report.skip("lifetime", format!("{e:#}"));
        }
        // The same in a pod as Fargate runs one: a microVM whose kernel's hash is its own.
        let own = Some(lifetime::POD_HASH_BUCKETS);
        if let Err(e) = lifetime::scenario_lifetime(&mut report, sizes.lifetime_secs, own) {
            report.skip("lifetime-pod", format!("{e:#}"));
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
    if only.iter().any(|o| o == "replica-kill") {
        if let Err(e) = replicakill::scenario_replica_kill(&mut report) {
            report.skip("replica-kill", format!("{e:#}"));
        }
    }
    if only.iter().any(|o| o == "pgstore") {
        if let Err(e) =
            pgstore::scenario_pgstore(&mut report, Duration::from_secs(sizes.sustain_secs))
        {
            report.skip("pgstore", format!("{e:#}"));
        }
    }
    if only.iter().any(|o| o == "raw-day") {
        if let Err(e) = rawday::scenario_raw_day(&mut report) {
            report.skip("raw-day", format!("{e:#}"));
        }
    }
    if only.iter().any(|o| o == "rollups") {
        if let Err(e) = rollups::scenario_rollups(&mut report, 1000, 30) {
            report.skip("rollups", format!("{e:#}"));
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
    if only.iter().any(|o| o == "detect") {
        if let Err(e) = detect::scenario_detect(&mut report) {
            report.skip("detect", format!("{e:#}"));
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

/// The command a sidecar runs: `procflow-collector` beside this bench (or
/// `PROCFLOW_COLLECTOR_BIN`), and the words before the flags (none). With `PROCFLOW_BIN` set
/// alone, that binary's `collector` subcommand, so an older build compares as it ran.
fn sidecar_command() -> (std::path::PathBuf, Option<&'static str>) {
    if let Some(p) = std::env::var_os("PROCFLOW_COLLECTOR_BIN") {
        return (p.into(), None);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("procflow-collector")))
        .filter(|p| p.exists());
    match beside {
        Some(p) if std::env::var_os("PROCFLOW_BIN").is_none() => (p, None),
        _ => (procflow_bin(), Some("collector")),
    }
}

/// The collector as a sidecar runs it ([`sidecar_command`]), on this host.
fn start_sidecar(extra: &[&str]) -> anyhow::Result<CollectorProc> {
    let (bin, subcommand) = sidecar_command();
    let mut command = Command::new(bin);
    command.args(subcommand).args(extra);
    launch_collector(command, false)
}

/// The collector as in the idle pod of the target ([`sidecar_command`]): its own pid and network namespaces
/// (/proc remounted) with about 20 processes and 50 sockets: 17 sleeping processes and an
/// app process holding 25 loopback connections (50 sockets and its listener), fed by one
/// more sleeper. The collector is the namespace's first process, as the pause container
/// would be.
fn start_collector_in_pod(extra: &[&str]) -> anyhow::Result<CollectorProc> {
    let (bin, subcommand) = sidecar_command();
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
        .arg(bin)
        .arg(std::env::current_exe()?)
        .arg(IDLE_POD_CONNECTIONS.to_string())
        .args(subcommand)
        .args(extra);
    launch_collector(command, true)
}

/// Held loopback connections of the idle pod's app (two sockets each).
const IDLE_POD_CONNECTIONS: usize = 25;

/// `$0` the collector, `$1` this bench (its `worker-hold` is the app), `$2` the connections;
/// the rest are the collector's arguments.
const IDLE_POD_SCRIPT: &str = r#"bench=$1; connections=$2; shift 2
ip link set lo up || exit 1
for i in $(seq 17); do sleep 3600 & done
sleep 3600 | "$bench" worker-hold "$connections" 127.0.0.1 >/dev/null &
exec "$0" "$@""#;

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
    // `PF_BENCH_COLLECTOR_LOG=FILE`: the collector's log kept (appended), e.g. with
    // `RUST_LOG=procflow::tick=trace` to see each tick of a scenario.
    let mut kept_log = match std::env::var_os("PF_BENCH_COLLECTOR_LOG") {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("PF_BENCH_COLLECTOR_LOG {}", path.to_string_lossy()))?,
        ),
        None => None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("collector running") {
                let _ = tx.send(());
            }
            if let Some(log) = kept_log.as_mut() {
                let _ = writeln!(log, "{line}");
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
        peak_rss_kib_of(self.pid)
    }

    fn rss_kib(&self) -> u64 {
        status_kib(self.pid, "VmRSS:")
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
