//! The collector: one engine thread ties the sources together — destroy events, the change
//! trigger, dumps into the flow table, process polling — and hands records to the pipeline.
//! Ticks are cheap (a few µs when nothing changed); dumps happen on change, on the periodic
//! safety-net interval, and after a destroy-stream overflow.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::Receiver;

use crate::attribution::{NoAttribution, OwnerLookup};
use crate::config::parse_duration;
use crate::flows::{ClusterCidrs, FlowConfig};
use crate::model::{now_ns, Heartbeat, Record};
use crate::pipeline::queue::Outlet;
use crate::pipeline::{record_queue, RecordTx};
use crate::procs::{exec_watch::ExecWatch, ProcessConfig, ProcessMonitor};
use crate::telemetry::collector::ExecWakeup;
use crate::telemetry::InternalEvent;

mod budget;
mod error;
mod once;
mod sockets;

pub use error::EngineError;

pub use sockets::SocketMonitor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Stdout,
    Grpc,
    Both,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Where records go: JSON lines on stdout, gRPC to the aggregator, or both.
    #[arg(long, env = "PROCFLOW_OUTPUT", value_enum, default_value = "stdout")]
    pub output: Output,
    /// Take one snapshot of every current socket (START, preexisting) and exit.
    #[arg(long, env = "PROCFLOW_ONCE")]
    pub once: bool,
    /// Safety-net dump period; dumps also happen whenever the trigger sees a change.
    #[arg(long, env = "PROCFLOW_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// The safety-net dump period once no socket has changed for a few seconds: each dump
    /// walks the kernel's whole connection hash (shared by every namespace on the node),
    /// the largest cost of an idle collector.
    #[arg(long, env = "PROCFLOW_IDLE_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub idle_poll_interval: Duration,
    /// How often the cheap change checks (/proc/net/sockstat, /proc/net/snmp, /proc/loadavg) run while anything happens.
    #[arg(long, env = "PROCFLOW_TRIGGER_INTERVAL", default_value = "5ms", value_parser = parse_duration)]
    pub trigger_interval: Duration,
    /// While sockets open (the checks saw a new one within the last 200 ms), they run this
    /// often: a connection of a few ms is attributed only if a dump and a read of its
    /// owner's fd table come within its life.
    #[arg(long, env = "PROCFLOW_CHURN_INTERVAL", default_value = "1ms", value_parser = parse_duration)]
    pub churn_interval: Duration,
    /// The share of a core, in percent, that dumps triggered by socket churn may take
    /// (with the reads of the new sockets' owners). Every dump walks the kernel's whole
    /// connection hash; a connection of a few ms is attributed by fd only if a dump comes
    /// within its life, so the share is what a churn's short connections are owned for.
    /// At 30, a pod churning 800 connections/s keeps every connection of 10–50 ms (its
    /// collector then takes about a third of a core; 20 took 30 %, and missed 3–6 %).
    #[arg(long, env = "PROCFLOW_CHURN_CPU", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub churn_cpu: u32,
    /// The checks back off to this interval while nothing changes, for 5 s (a connection
    /// opened after a short quiet spell is seen within this long).
    #[arg(long, env = "PROCFLOW_IDLE_INTERVAL", default_value = "40ms", value_parser = parse_duration)]
    pub idle_interval: Duration,
    /// After 5 s without any change the checks back off further, to this interval. Only a
    /// connection that a long-running process opens after such a quiet spell waits this
    /// long to be seen alive (a new process wakes the collector at once through its exec);
    /// its destroy event reports it in any case. Wake-ups are most of an idle pod's cost.
    #[arg(long, env = "PROCFLOW_DEEP_IDLE_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub deep_idle_interval: Duration,
    /// A flow's counters are re-reported (UPDATE) at most this often, and only if they moved.
    #[arg(long, env = "PROCFLOW_ACTIVE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub active_timeout: Duration,
    /// A flow's counters are also re-reported as soon as they moved this many bytes (both
    /// ways) since its last record, so a volume rule sees a large transfer while it runs;
    /// while a flow is a quarter of the way there, dumps stay at --poll-interval. 0: never.
    #[arg(long, env = "PROCFLOW_ACTIVE_BYTES", default_value = "16777216")]
    pub active_bytes: u64,
    /// How long a socket may be missing from dumps before it ends without its destroy event.
    #[arg(long, env = "PROCFLOW_VANISH_GRACE", default_value = "1s", value_parser = parse_duration)]
    pub vanish_grace: Duration,
    /// Peers inside these CIDRs are EAST_WEST, others NORTH_SOUTH (loopback and the pod's own addresses are LOCAL).
    #[arg(long, env = "PROCFLOW_CLUSTER_CIDRS", default_value = crate::flows::classify::DEFAULT_CLUSTER_CIDRS)]
    pub cluster_cidrs: ClusterCidrs,
    /// Records buffered between the sources and the outputs. When it is full the sources wait
    /// for room; records are dropped (and counted) only while the outputs cannot buffer
    /// either (the exporter's memory buffer full and no --spool-dir).
    #[arg(long, env = "PROCFLOW_QUEUE_CAPACITY", default_value_t = 4096)]
    pub queue_capacity: usize,
    /// Destroy events buffered between the reader thread and the engine.
    #[arg(long, env = "PROCFLOW_DESTROY_QUEUE_CAPACITY", default_value_t = 16384)]
    pub destroy_queue_capacity: usize,
    /// Receive buffer asked for the destroy-event socket, in bytes. Unprivileged, the kernel
    /// grants at most 2 x net.core.rmem_max; a burst beyond it is an overflow (counted, then
    /// a full dump ends the missed flows as RECOVERED).
    #[arg(long, env = "PROCFLOW_DESTROY_RCVBUF", default_value_t = crate::sockdiag::destroy::DEFAULT_RCVBUF)]
    pub destroy_rcvbuf: usize,
    /// Do not wake on execs (inotify opens of the loaders and bin directories); processes
    /// are then found by the timed checks alone.
    #[arg(long, env = "PROCFLOW_NO_EXEC_WAKEUPS")]
    pub no_exec_wakeups: bool,
    /// The tick an exec wakes waits this long: the watched open comes early in the exec,
    /// before the new image's argv, credentials and name are in place; and an exec storm
    /// then costs a bounded share of a core.
    #[arg(long, env = "PROCFLOW_EXEC_SETTLE", default_value = "1ms", value_parser = parse_duration)]
    pub exec_settle: Duration,
    /// Do not watch processes (and attribute no socket to one).
    #[arg(long, env = "PROCFLOW_NO_PROCESSES")]
    pub no_processes: bool,
    /// Full /proc sweep (exits, execs of older processes) at least this often; new pids are read at once.
    #[arg(long, env = "PROCFLOW_PROCESS_SWEEP_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub process_sweep_interval: Duration,
    /// Exited processes kept for lineage, at most.
    #[arg(long, env = "PROCFLOW_TOMBSTONE_MAX", default_value_t = 10_000)]
    pub tombstone_max: usize,
    /// Exited processes kept for lineage, at most this long.
    #[arg(long, env = "PROCFLOW_TOMBSTONE_AGE", default_value = "10m", value_parser = parse_duration)]
    pub tombstone_age: Duration,
    /// How often the collector reports its own counters (heartbeat record).
    #[arg(long, env = "PROCFLOW_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// /proc of the pid namespace to watch.
    #[arg(long, env = "PROCFLOW_PROC_ROOT", default_value = "/proc")]
    pub proc_root: std::path::PathBuf,
    #[command(flatten)]
    pub pipeline: crate::pipeline::PipelineArgs,
    /// Serve /metrics, /healthz and /readyz here (e.g. 0.0.0.0:9464 for kubelet probes).
    #[arg(long, env = "PROCFLOW_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Stop after this long (for tests and benchmarks); runs until SIGINT/SIGTERM otherwise.
    #[arg(long, env = "PROCFLOW_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// Everything the engine needs, validated.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub poll_interval: Duration,
    pub idle_poll_interval: Duration,
    pub trigger_interval: Duration,
    pub churn_interval: Duration,
    pub churn_cpu_percent: u32,
    pub idle_interval: Duration,
    pub deep_idle_interval: Duration,
    pub flows: FlowConfig,
    pub cluster_cidrs: ClusterCidrs,
    pub destroy_queue_capacity: usize,
    pub destroy_rcvbuf: usize,
    pub processes: Option<ProcessConfig>,
    pub exec_wakeups: bool,
    pub exec_settle: Duration,
    pub heartbeat_interval: Duration,
}

impl From<&Args> for EngineConfig {
    fn from(a: &Args) -> Self {
        EngineConfig {
            poll_interval: a.poll_interval,
            idle_poll_interval: a.idle_poll_interval.max(a.poll_interval),
            trigger_interval: a.trigger_interval,
            churn_interval: a.churn_interval.min(a.trigger_interval),
            churn_cpu_percent: a.churn_cpu,
            idle_interval: a.idle_interval.max(a.trigger_interval),
            deep_idle_interval: a
                .deep_idle_interval
                .max(a.idle_interval)
                .max(a.trigger_interval),
            flows: FlowConfig {
                active_timeout: a.active_timeout,
                active_bytes: a.active_bytes,
                vanish_grace: a.vanish_grace,
                ..FlowConfig::default()
            },
            cluster_cidrs: a.cluster_cidrs.clone(),
            destroy_queue_capacity: a.destroy_queue_capacity,
            destroy_rcvbuf: a.destroy_rcvbuf,
            processes: (!a.no_processes).then(|| ProcessConfig {
                proc_root: a.proc_root.clone(),
                sweep_interval: a.process_sweep_interval,
                tombstone_max: a.tombstone_max,
                tombstone_age: a.tombstone_age,
                ..ProcessConfig::default()
            }),
            exec_wakeups: !a.no_exec_wakeups,
            exec_settle: a.exec_settle,
            heartbeat_interval: a.heartbeat_interval,
        }
    }
}

/// Quiet this long and the engine slows down: the safety-net dumps to `idle_poll_interval`
/// (no socket changed), the checks to `deep_idle_interval` (no record at all).
pub(crate) const QUIET_AFTER: Duration = Duration::from_secs(5);

/// How long the engine keeps ticking fast after the last sign of activity.
const ACTIVE_HOLD: Duration = Duration::from_secs(1);

/// How often processes are polled while the checks run at the churn interval (the default
/// trigger interval: processes are looked at as often as without churn).
const CHURN_PROCESS_POLL: Duration = Duration::from_millis(5);

/// At most this often the pages of code a busy spell mapped are let go when the engine goes
/// idle (see [`crate::sys::code_pages::release_code_pages`]).
const CODE_RELEASE_EVERY: Duration = Duration::from_secs(60);

/// Once the engine is idle after a busy spell (start-up included), unmaps the executable's
/// pages: only the idle loop's few are mapped again, and the idle pod's resident set is
/// what the idle collector uses.
fn release_busy_code(released: &mut Option<Instant>, last_activity: Instant) {
    if released.is_some_and(|t| t > last_activity || t.elapsed() < CODE_RELEASE_EVERY) {
        return;
    }
    *released = Some(Instant::now());
    match crate::sys::code_pages::release_code_pages() {
        Ok(bytes) => tracing::debug!(bytes, "idle: code pages of the busy spell let go"),
        Err(error) => tracing::debug!(%error, "idle: code pages not let go"),
    }
}

/// Runs the engine loop after the [`snapshot`] until `stop` is set: ticks every
/// `trigger_interval`, pushes records into `tx`. On stop, ends live flows and returns.
pub fn run_engine(
    mut sockets: SocketMonitor,
    mut procs: Option<ProcessMonitor>,
    config: &EngineConfig,
    tx: RecordTx,
    stop: &AtomicBool,
) {
    let mut out = Vec::with_capacity(1024);
    let mut no_attribution = NoAttribution;
    let mut last_heartbeat = Instant::now();
    let mut interval = config.trigger_interval;
    let mut last_activity = Instant::now();
    let mut exec_watch = exec_watch(config, procs.is_some());
    let mut last_process_poll: Option<Instant> = None;
    let mut exec_woke = false;
    let mut code_released: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = now_ns();
        // Processes first: a socket's new owner must be known before the socket is attributed.
        // The churn pace is the sockets' alone: processes are polled every 5 ms then, or at
        // once after an exec (a new socket's owner started since is read by the attribution
        // pass itself).
        let process_poll_due = exec_woke
            || interval > config.churn_interval
            || procs
                .as_ref()
                .and_then(ProcessMonitor::tick_wanted_within)
                .is_some()
            || last_process_poll.is_none_or(|t| t.elapsed() >= CHURN_PROCESS_POLL);
        let lookup: &mut dyn OwnerLookup = match procs.as_mut() {
            Some(p) => {
                if process_poll_due {
                    p.poll(now, &mut out);
                    last_process_poll = Some(Instant::now());
                }
                p
            }
            None => &mut no_attribution,
        };
        sockets.tick(lookup, &mut out);
        // Wake-ups dominate an idle collector's cost: tick fast while things happen and for a
        // second after, then back off towards the idle interval. While sockets open, faster
        // still: a connection of a few ms is seen alive only by a check within its life.
        if !out.is_empty() {
            last_activity = Instant::now();
        }
        let quiet = last_activity.elapsed();
        interval = if sockets.churning() {
            last_activity = Instant::now();
            config.churn_interval
        } else if quiet < ACTIVE_HOLD {
            config.trigger_interval
        } else if quiet < QUIET_AFTER {
            (interval * 2).min(config.idle_interval)
        } else {
            release_busy_code(&mut code_released, last_activity);
            (interval * 2).min(config.deep_idle_interval)
        };
        if last_heartbeat.elapsed() >= config.heartbeat_interval {
            last_heartbeat = Instant::now();
            out.push(Record::Heartbeat(Heartbeat {
                interval_ns: interval_ns(config),
                ..heartbeat(&sockets, procs.as_ref(), &tx)
            }));
        }
        tx.send_all(&mut out);
        let Some(watch) = exec_watch.as_mut() else {
            std::thread::sleep(interval);
            continue;
        };
        if let Some(p) = procs.as_mut() {
            for root in p.take_new_container_roots() {
                watch.add_root(&root);
            }
        }
        // An exec wakes one tick; the START it finds (if the exec was in this pod) keeps the
        // engine busy, while an exec elsewhere that shares the watched files costs a few
        // ticks: the process side follows a wake-up for some ms to find which known process
        // exec'd (the wake-up comes before the exec completes).
        let wait = procs
            .as_ref()
            .and_then(ProcessMonitor::tick_wanted_within)
            .map_or(interval, |w| interval.min(w.max(config.trigger_interval)));
        exec_woke = watch.wait(wait);
        if exec_woke {
            ExecWakeup.emit();
            if let Some(p) = procs.as_mut() {
                p.exec_woken();
            }
            std::thread::sleep(config.exec_settle);
        }
    }
    // A last sweep reports the exits since the previous one.
    if let Some(p) = procs.as_mut() {
        p.sweep(now_ns(), &mut out);
    }
    sockets.shutdown(&mut out);
    // The goodbye: the aggregator expects the stream to end after this one, and raises no
    // silenced-collector alert.
    out.push(Record::Heartbeat(Heartbeat {
        interval_ns: interval_ns(config),
        stopping: true,
        ..heartbeat(&sockets, procs.as_ref(), &tx)
    }));
    tx.send_all(&mut out);
}

fn interval_ns(config: &EngineConfig) -> u64 {
    u64::try_from(config.heartbeat_interval.as_nanos()).unwrap_or(u64::MAX)
}

/// The exec wake-ups, when asked for and processes are watched (inotify may be unavailable:
/// then the timed checks alone find processes).
fn exec_watch(config: &EngineConfig, processes: bool) -> Option<ExecWatch> {
    if !(config.exec_wakeups && processes) {
        return None;
    }
    match ExecWatch::new() {
        Ok(watch) => {
            tracing::info!(watches = watch.len(), "waking on execs");
            Some(watch)
        }
        Err(error) => {
            tracing::warn!(%error, "no exec wake-ups (inotify unavailable); polling only");
            None
        }
    }
}

/// Every current process and socket, as START records (`preexisting` for sockets).
pub fn snapshot(
    sockets: &mut SocketMonitor,
    procs: Option<&mut ProcessMonitor>,
    out: &mut Vec<Record>,
) {
    match procs {
        Some(p) => {
            p.sweep(now_ns(), out);
            sockets.dump(p, out);
        }
        None => sockets.dump(&mut NoAttribution, out),
    }
}

/// The collector's own counters: every loss has one.
pub fn heartbeat(
    sockets: &SocketMonitor,
    procs: Option<&ProcessMonitor>,
    tx: &RecordTx,
) -> Heartbeat {
    let f = sockets.table().stats();
    let d = sockets.destroy_stats();
    let mut counters = vec![
        ("flows_started".to_owned(), f.started),
        ("flows_updated".to_owned(), f.updated),
        ("flows_ended_destroy_event".to_owned(), f.ended_destroy),
        ("flows_ended_vanished".to_owned(), f.ended_vanished),
        ("flows_ended_recovered".to_owned(), f.ended_recovered),
        ("flows_destroy_only".to_owned(), f.destroy_only),
        (
            "flows_destroy_only_without_peer".to_owned(),
            f.destroy_only_without_peer,
        ),
        ("flows_duplicate_ends".to_owned(), f.duplicate_ends),
        ("listeners_started".to_owned(), f.listeners_started),
        (
            "destroy_overflows".to_owned(),
            d.overflows.load(Ordering::Relaxed),
        ),
        (
            "destroy_events_lost".to_owned(),
            d.events_lost.load(Ordering::Relaxed),
        ),
        (
            "destroy_queue_dropped".to_owned(),
            d.queue_dropped.load(Ordering::Relaxed),
        ),
        ("flows_reattributed".to_owned(), f.reattributed),
        ("flows_fin_by_timewait".to_owned(), f.fin_by_timewait),
        ("flows_inferred_from_peer".to_owned(), f.inferred_from_peer),
        (
            "queue_sent".to_owned(),
            tx.stats().sent.load(Ordering::Relaxed),
        ),
        (
            "queue_dropped".to_owned(),
            tx.stats().dropped.load(Ordering::Relaxed),
        ),
    ];
    if let Some(p) = procs {
        let s = p.stats();
        counters.extend([
            ("processes_started".to_owned(), s.started),
            ("processes_exec".to_owned(), s.execs),
            ("processes_exited".to_owned(), s.exits),
            ("proc_raced_exit".to_owned(), s.raced_exit),
            ("proc_permission_denied".to_owned(), s.permission_denied),
            ("pids_unseen".to_owned(), s.pids_unseen),
            ("proc_argv_unsettled".to_owned(), s.argv_unsettled),
            ("proc_image_rereads".to_owned(), s.image_rereads),
            ("proc_exec_checks".to_owned(), s.exec_checks),
            (
                "proc_execs_found_by_check".to_owned(),
                s.execs_found_by_check,
            ),
            ("proc_exe_unverified".to_owned(), s.exe_unverified),
        ]);
    }
    counters.extend(crate::pipeline::exporter::EXPORT_STATS.counters());
    let (rss_bytes, cpu_time_ns) = own_usage();
    Heartbeat {
        time: now_ns(),
        counters,
        flows_tracked: sockets.table().len() as u64,
        processes_tracked: procs.map_or(0, |p| p.len() as u64),
        rss_bytes,
        cpu_time_ns,
        features: Vec::new(),
        interval_ns: 0,
        stopping: false,
    }
}

/// Resident memory and CPU time of this process, from /proc/self.
fn own_usage() -> (u64, u64) {
    let me = procfs::process::Process::myself().ok();
    let stat = me.as_ref().and_then(|p| p.stat().ok());
    let page = procfs::page_size();
    let ticks = procfs::ticks_per_second().max(1);
    stat.map_or((0, 0), |s| {
        (s.rss * page, (s.utime + s.stime) * (1_000_000_000 / ticks))
    })
}

/// `procflow collector`.
pub fn run(args: Args) -> anyhow::Result<()> {
    // First: the app's processes may share this uid (for fd attribution). From here on they
    // can read neither this process's memory, environment, fds nor root, nor ptrace it.
    crate::sys::protect::set_undumpable().context("prctl(PR_SET_DUMPABLE, 0)")?;
    if std::env::var_os("PROCFLOW_TOKEN").is_some() {
        anyhow::bail!(
            "PROCFLOW_TOKEN is set: the collector takes its credential from --token-file only, \
             since the app's processes could read its environment before it protects itself"
        );
    }
    let config = EngineConfig::from(&args);
    let (tx, rx) = record_queue(args.queue_capacity);
    if args.once {
        let outputs = start_outputs(&args, rx)?;
        let taken = once::take_snapshot(&config, &tx);
        drop(tx);
        // What was taken is written out even when the snapshot failed part way.
        outputs.join()?;
        let counts = taken.context("taking the snapshot")?;
        tracing::debug!(?counts, "snapshot written");
        return Ok(());
    }
    let mut sockets = SocketMonitor::new(&config)?;
    let mut procs = match &config.processes {
        Some(pc) => Some(ProcessMonitor::new(pc.clone()).context("reading /proc")?),
        None => None,
    };
    let outputs = start_outputs(&args, rx)?;
    let ready = crate::telemetry::start_health_endpoint(args.metrics_listen)?;
    let stop = Arc::new(AtomicBool::new(false));
    spawn_signal_watcher(stop.clone(), args.duration, tx.outlet().clone())?;
    // Ready (and saying so) once every current socket and process is known.
    let mut out = Vec::new();
    snapshot(&mut sockets, procs.as_mut(), &mut out);
    // A first heartbeat at once: the aggregator learns the interval it is to expect.
    out.push(Record::Heartbeat(Heartbeat {
        interval_ns: interval_ns(&config),
        ..heartbeat(&sockets, procs.as_ref(), &tx)
    }));
    tx.send_all(&mut out);
    ready.store(true, Ordering::Relaxed);
    tracing::info!(poll_interval = ?config.poll_interval, trigger_interval = ?config.trigger_interval, output = ?args.output, "collector running");
    run_engine(sockets, procs, &config, tx, &stop);
    outputs.join()?;
    tracing::info!("collector stopped");
    Ok(())
}

/// The output threads; joining waits until they have drained everything.
struct Outputs {
    threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
    /// Each thread says here that it ended (a one-shot command must not wait a poll
    /// interval for that).
    ended: Receiver<()>,
}

/// How long shutdown waits for the outputs to drain. The exporter gives up on an unreachable
/// aggregator after its own drain timeout (spooling what it holds); without a spool, a full
/// memory buffer holds the batcher back, and only this bound ends the wait.
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(15);

impl Outputs {
    fn join(self) -> anyhow::Result<()> {
        let deadline = Instant::now() + OUTPUT_DRAIN_LIMIT;
        for _ in 0..self.threads.len() {
            if self.ended.recv_deadline(deadline).is_err() {
                tracing::error!(
                    limit = ?OUTPUT_DRAIN_LIMIT,
                    "outputs did not drain (aggregator unreachable, memory buffer full, no --spool-dir): exiting; unacknowledged batches are lost"
                );
                return Ok(());
            }
        }
        for handle in self.threads {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("an output thread panicked"))??;
        }
        Ok(())
    }
}

fn start_outputs(args: &Args, rx: crate::pipeline::RecordRx) -> anyhow::Result<Outputs> {
    let (ended_tx, ended) = crossbeam_channel::unbounded();
    let spawn = |name: &str, f: Box<dyn FnOnce() -> anyhow::Result<()> + Send>| {
        let ended_tx = ended_tx.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // Said also when the thread unwinds: the guard's drop sends it.
                struct Ended(crossbeam_channel::Sender<()>);
                impl Drop for Ended {
                    fn drop(&mut self) {
                        let _ = self.0.send(());
                    }
                }
                let _ended = Ended(ended_tx);
                f()
            })
    };
    let mut threads = Vec::new();
    let grpc_rx = match args.output {
        Output::Stdout => {
            threads.push(spawn(
                "stdout",
                Box::new(move || {
                    crate::pipeline::stdout::write_json_lines(&rx, std::io::stdout().lock())?;
                    Ok(())
                }),
            )?);
            None
        }
        Output::Grpc => Some(rx),
        Output::Both => {
            // A tee: JSON lines here, every record forwarded to the gRPC side's own queue.
            let (grpc_tx, grpc_rx) = record_queue(args.queue_capacity);
            threads.push(spawn(
                "stdout",
                Box::new(move || {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    for record in rx.rx.iter() {
                        serde_json::to_writer(&mut out, &record)?;
                        std::io::Write::write_all(&mut out, b"\n")?;
                        if rx.rx.is_empty() {
                            std::io::Write::flush(&mut out)?;
                        }
                        grpc_tx.send(record);
                    }
                    std::io::Write::flush(&mut out)?;
                    Ok(())
                }),
            )?);
            Some(grpc_rx)
        }
    };
    if let Some(rx) = grpc_rx {
        let exporter_config = args.pipeline.exporter_config();
        // An unreadable or empty credential stops the collector here, with its reason,
        // rather than looping on refused connections.
        exporter_config
            .token
            .read()
            .context("reading the aggregator credential")?;
        let batcher_config = args.pipeline.batcher_config();
        let identity = crate::pipeline::batcher::identity_from_env();
        tracing::info!(collector_id = %identity.collector_id, aggregator = %exporter_config.endpoint, "exporting over gRPC");
        let outlet = rx.outlet();
        let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(16);
        threads.push(spawn(
            "batcher",
            Box::new(move || {
                crate::pipeline::batcher::run(batcher_config, identity, rx, batch_tx);
                Ok(())
            }),
        )?);
        threads.push(spawn(
            "exporter",
            Box::new(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                Ok(runtime.block_on(crate::pipeline::exporter::run_with_outlet(
                    exporter_config,
                    batch_rx,
                    outlet,
                ))?)
            }),
        )?);
    }
    Ok(Outputs { threads, ended })
}

/// Sets `stop` on SIGINT/SIGTERM, or after `duration`. An engine still waiting for room in
/// the record queue [`OUTPUT_DRAIN_LIMIT`] later (an output that stopped draining) is let go:
/// its last records are dropped and counted.
fn spawn_signal_watcher(
    stop: Arc<AtomicBool>,
    duration: Option<Duration>,
    outlet: Outlet,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(s) => s,
                        Err(error) => {
                            tracing::error!(%error, "cannot watch SIGTERM");
                            return;
                        }
                    };
                let timeout = async {
                    match duration {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                    _ = timeout => {}
                }
                stop.store(true, Ordering::Relaxed);
                tokio::time::sleep(OUTPUT_DRAIN_LIMIT).await;
                outlet.abandon();
            });
        })?;
    Ok(())
}
