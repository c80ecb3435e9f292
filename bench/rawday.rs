//! `raw-day` (only when named): `investigate talkers` over one day of 10 M raw flow records
//! and `new` (its last hour against the 23 before), asked over gRPC of an aggregator
//! process as `procflow investigate talkers --since 24h` and `new --since 1h --baseline 23h`
//! ask (windows from now, open-ended: not hour-aligned), on SQLite and on PostgreSQL (a server of
//! scripts/pg.sh). The day: 1,000 pods, each socket a START, four UPDATEs and an END
//! (1.67 M sockets, under the per-question bound of 2 M), in segments of 100 records (a
//! pod's batch), spread over the last 24 hours, and a heartbeat a minute from every pod
//! (1.44 M segments of one). Written through the store's own append path before the
//! aggregator starts; the aggregator's first minutes (rolling up the day's closed hours
//! with the `RollupBuilder` a live aggregator runs each minute, so the same hours are
//! built, carries kept, and the current hour left raw) are waited out before asking.

use std::sync::Arc;
use std::time::{Duration, Instant};

use procflow::aggregator::store::{self, OpenOptions, Retention, Store, StoreSpec};
use procflow::model::{now_ns, CollectorIdentity, Event, FlowPhase, Heartbeat, Record};
use procflow::proto::v1 as pb;

use crate::pipeline::Aggregator;
use crate::Report;

const PODS: u64 = 1_000;
const PER_SOCKET: u64 = 6;
const SEGMENT: u64 = 100;
const SAMPLES: usize = 7;
const HOUR: u64 = 3_600_000_000_000;
const DAY: u64 = 24 * HOUR;

/// Flow records of the day: `PF_BENCH_RAW_RECORDS`, 10 M.
fn records() -> u64 {
    std::env::var("PF_BENCH_RAW_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n >= PODS * SEGMENT)
        .unwrap_or(10_000_000)
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len().max(1)) - 1;
    values.get(i).copied().unwrap_or(f64::NAN)
}

fn source(pod: u64) -> Arc<CollectorIdentity> {
    Arc::new(CollectorIdentity {
        collector_id: format!("uid-{pod}/c"),
        pod_name: format!("svc{}-{}", pod / 10, pod % 10),
        pod_namespace: "bench".into(),
        pod_ip: format!("10.9.{}.{}", pod / 250, pod % 250 + 1),
        ..CollectorIdentity::default()
    })
}

/// Record `n` of pod `pod`: socket `n / PER_SOCKET`'s START, UPDATEs or END.
fn flow(pod: u64, n: u64, at: u64) -> Record {
    let socket = n / PER_SOCKET;
    let step = n % PER_SOCKET;
    let mut f = procflow::fixtures::flow(socket);
    let peer = (socket.wrapping_mul(0x9e37_79b9) >> 7) % 300;
    f.remote_addr = Some(std::net::IpAddr::from([
        10,
        (2 + peer / 250) as u8,
        (pod % 250) as u8,
        (peer % 250 + 1) as u8,
    ]));
    f.remote_port = Some([443, 5432, 6379, 8080][(socket % 4) as usize]);
    f.pid = Some(100 + (socket % 8) as u32);
    f.process_start_time = Some(70);
    f.phase = match step {
        0 => FlowPhase::Start,
        s if s == PER_SOCKET - 1 => FlowPhase::End,
        _ => FlowPhase::Update,
    };
    f.bytes_sent = Some(1_000 * (step + 1));
    f.bytes_received = Some(3_000 * (step + 1));
    f.first_seen = at;
    f.last_seen = at;
    if f.phase == FlowPhase::End {
        f.ended_at = Some(at);
    }
    Record::Flow(f)
}

type Pending = std::collections::VecDeque<
    tokio::sync::oneshot::Receiver<Result<store::Appended, store::StoreError>>,
>;

/// Waits for the oldest appends until at most `keep` are in flight.
fn settle(pending: &mut Pending, keep: usize) -> anyhow::Result<()> {
    while pending.len() > keep {
        if let Some(rx) = pending.pop_front() {
            rx.blocking_recv()??;
        }
    }
    Ok(())
}

/// Writes the day ending at `end` into `store`.
fn fill(store: &dyn Store, end: u64) -> anyhow::Result<()> {
    let start = end - DAY;
    let sources: Vec<_> = (0..PODS).map(source).collect();
    let per_pod = records() / PODS;
    let segments_per_pod = per_pod / SEGMENT;
    let mut pending = Pending::new();
    // Segment k of every pod, in time order: a pod's sockets run across the day.
    for k in 0..segments_per_pod {
        let at = start + 1 + k * (DAY - 2) / segments_per_pod;
        for (pod, src) in sources.iter().enumerate() {
            let pod = pod as u64;
            let events = (0..SEGMENT)
                .map(|i| Event {
                    source: src.clone(),
                    received_at: at + pod,
                    record: flow(pod, k * SEGMENT + i, at),
                })
                .collect();
            pending.push_back(store.append(src.collector_id.clone(), k + 1, events));
            settle(&mut pending, 64)?;
        }
    }
    // A heartbeat a minute from every pod: one batch a minute with all of them.
    for minute in 0..24 * 60u64 {
        let at = start + 1 + minute * 60_000_000_000;
        let events = sources
            .iter()
            .enumerate()
            .map(|(pod, src)| Event {
                source: src.clone(),
                received_at: at + pod as u64,
                record: Record::Heartbeat(Heartbeat {
                    time: at,
                    ..Heartbeat::default()
                }),
            })
            .collect();
        pending.push_back(store.append("heartbeats".into(), minute + 1, events));
        settle(&mut pending, 64)?;
    }
    settle(&mut pending, 0)
}

/// Waits until `pid` has used under 5 % of a core over two seconds (done rolling up), up to
/// ten minutes.
pub(crate) fn wait_idle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut before = crate::cpu_secs_of(pid);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        let now = crate::cpu_secs_of(pid);
        if now - before < 0.1 {
            return;
        }
        before = now;
    }
}

/// The aggregator's grace before it rolls up an hour (`aggregator::rollups`).
const GRACE: u64 = 120_000_000_000;

/// Waits, up to ten minutes, until the aggregator on PostgreSQL has rolled up every hour
/// it would now (the last built is the one before the last closed a grace ago): on
/// PostgreSQL [`wait_idle`] alone returned while the aggregator waited on the server
/// before its first hour, and the asks then read the whole day raw (12-29 s, load 3-5).
fn wait_rolled_up(url: &str, password_file: &std::path::Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let last: u64 = crate::pgstore::value_at(
            url,
            password_file,
            "SELECT COALESCE(max(hour), 0) FROM rollup_hours",
        )?;
        if last + 2 * HOUR + GRACE > now_ns() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(())
}

/// The window `procflow investigate --since AGO` sends: from `ago` before now, open-ended
/// (so not hour-aligned, and its end in the hour not rolled up yet).
fn window(ago: u64) -> Option<pb::Window> {
    Some(pb::Window {
        filter: Some(pb::Filter::default()),
        since: now_ns() - ago,
        until: 0,
    })
}

/// p95 (ms) of talkers over the day (`--since 24h`), the first `new` (`--since 1h
/// --baseline 23h`) and the p95 of the others (the aggregator keeps a past baseline an
/// hour); sockets counted, and whether truncated.
fn ask(url: &str) -> anyhow::Result<(f64, f64, f64, u64, bool)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
            .connect()
            .await?;
        let mut client = pb::investigate_client::InvestigateClient::new(channel)
            .max_decoding_message_size(64 << 20);
        let (mut talkers, mut new) = (Vec::new(), Vec::new());
        let (mut flows, mut truncated) = (0, false);
        for _ in 0..SAMPLES {
            let started = Instant::now();
            let reply = client
                .talkers(pb::TalkersRequest {
                    window: window(DAY),
                    order: pb::EdgeOrder::Bytes as i32,
                    limit: 20,
                })
                .await?
                .into_inner();
            talkers.push(started.elapsed().as_secs_f64() * 1e3);
            (flows, truncated) = (reply.flows, reply.truncated);
            let started = Instant::now();
            let window = window(HOUR);
            let baseline_since = window.as_ref().map_or(0, |w| w.since) - (DAY - HOUR);
            client
                .new_activity(pb::NewActivityRequest {
                    window,
                    baseline_since,
                    limit: 20,
                })
                .await?;
            new.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let first_new = new.remove(0);
        Ok((
            percentile(&mut talkers, 0.95),
            first_new,
            percentile(&mut new, 0.95),
            flows,
            truncated,
        ))
    })
}

/// Asks to time as a user runs them: whole `procflow investigate` commands.
const CLI_SAMPLES: usize = 5;

/// `procflow investigate talkers --since 24h` and `new --since 1h --baseline 23h`, each the
/// whole command (start-up, connection, answer, printed output read to its end), asked
/// after [`ask`] (so `new` finds the built hours' baseline kept, as a user asking again
/// does): the p95 of each, in ms.
fn ask_cli(url: &str) -> anyhow::Result<(f64, f64)> {
    let run = |args: &[&str]| -> anyhow::Result<f64> {
        let started = Instant::now();
        let out = std::process::Command::new(crate::procflow_bin())
            .args(["investigate"])
            .args(args)
            .args(["--aggregator", url])
            .output()?;
        let took = started.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(
            out.status.success() && !out.stdout.is_empty(),
            "procflow investigate {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(took)
    };
    let (mut talkers, mut new) = (Vec::new(), Vec::new());
    for _ in 0..CLI_SAMPLES {
        talkers.push(run(&["talkers", "--since", "24h"])?);
        new.push(run(&["new", "--since", "1h", "--baseline", "23h"])?);
    }
    Ok((percentile(&mut talkers, 0.95), percentile(&mut new, 0.95)))
}

pub fn scenario_raw_day(report: &mut Report) -> anyhow::Result<()> {
    let now = now_ns();
    // The day ends a little before now: every record is inside the raw retention.
    let end = now - now % 1_000_000_000 - 60_000_000_000;
    let retention = Retention {
        max_age: Duration::from_secs(14 * 86_400),
        max_bytes: u64::MAX,
        rollups: store::ROLLUP_RETENTION,
    };
    let dir = tempfile::tempdir()?;
    // `PF_BENCH_RAW_KEEP=DIR`: the day written there once and asked again on later
    // runs, to profile a change without writing and rolling up the day each time (that day
    // ends when it was written: not a figure to report).
    let kept = std::env::var_os("PF_BENCH_RAW_KEEP").map(std::path::PathBuf::from);
    let db = kept
        .clone()
        .unwrap_or_else(|| dir.path().to_path_buf())
        .join("raw.db");
    let reuse = kept.is_some() && db.exists();
    // With `PF_BENCH_RAW_KEEP`, PostgreSQL's day is kept the same way: in a cluster of
    // scripts/pg.sh in DIR/pg, left running (stop and remove it yourself), where a later
    // run finds it (its statements can then be explained on the kept day).
    let kept_pg = kept.as_ref().map(|k| k.join("pg"));
    let reuse_pg = kept_pg.as_ref().is_some_and(|d| d.join("url").exists());
    let server = match &kept_pg {
        Some(dir) => kept_cluster(dir, reuse_pg).map(|url| (url, dir.join("password"), None)),
        None => {
            crate::pgstore::Server::start().map(|s| (s.url.clone(), s.password_file(), Some(s)))
        }
    };
    let mut backends = vec![("SQLite", StoreSpec::Sqlite(Some(db.clone())), None)];
    match &server {
        Ok((url, password_file, _)) => backends.push((
            "PostgreSQL",
            StoreSpec::Postgres(url.clone()),
            Some(password_file.clone()),
        )),
        Err(e) => report.skip("raw-day", format!("PostgreSQL: {e:#}")),
    }
    // `PF_BENCH_RAW_ONLY=SQLite` (or PostgreSQL): one backend.
    if let Ok(only) = std::env::var("PF_BENCH_RAW_ONLY") {
        backends.retain(|(name, _, _)| *name == only);
    }
    for (name, spec, password_file) in backends {
        let options = OpenOptions {
            spec: spec.clone(),
            data_dir: dir.path().to_path_buf(),
            retention,
            postgres: store::PgOptions {
                password: password_file
                    .as_ref()
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .map(|p| p.trim().to_owned()),
                ..store::PgOptions::default()
            },
        };
        let started = Instant::now();
        if !(reuse && name == "SQLite" || reuse_pg && name == "PostgreSQL") {
            let store = store::open(&options)?;
            fill(store.as_ref(), end)?;
        }
        let fill_secs = started.elapsed().as_secs_f64();
        let spec = spec.to_string();
        let mut args = vec!["--store", &spec];
        let password = password_file
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned());
        if let Some(p) = &password {
            args.extend(["--store-password-file", p]);
        }
        let agg = Aggregator::start(&args)?;
        if let (StoreSpec::Postgres(url), Some(password_file)) = (&options.spec, &password_file) {
            wait_rolled_up(url, password_file)?;
        }
        wait_idle(agg.pid());
        let load = crate::pgstore::load_average();
        let answers = ask(&agg.url()).and_then(|grpc| Ok((grpc, ask_cli(&agg.url())?)));
        agg.stop();
        let ((talkers, first_new, new, flows, truncated), (cli_talkers, cli_new)) = answers?;
        let scenario = "raw-day";
        report.add(
            scenario,
            &format!(
                "{name}: talkers --since 24h over one day of {} raw flow records, gRPC, p95 of {SAMPLES} ({flows} sockets{})",
                records(),
                if truncated { ", TRUNCATED" } else { "" }
            ),
            talkers,
            "ms",
            Some(("<=1000 ms", talkers <= 1000.0 && !truncated)),
        );
        report.add(
            scenario,
            &format!("{name}: new --since 1h --baseline 23h, first ask"),
            first_new,
            "ms",
            Some(("<=1000 ms", first_new <= 1000.0)),
        );
        report.add(
            scenario,
            &format!(
                "{name}: new, p95 of the {} asks after it (baseline kept)",
                SAMPLES - 1
            ),
            new,
            "ms",
            Some(("<=1000 ms", new <= 1000.0)),
        );
        for (what, ms) in [
            ("talkers --since 24h", cli_talkers),
            ("new --since 1h --baseline 23h, asked again", cli_new),
        ] {
            report.add(
                scenario,
                &format!(
                    "{name}: `procflow investigate {what}`, whole command, p95 of {CLI_SAMPLES}"
                ),
                ms,
                "ms",
                Some(("<=1000 ms", ms <= 1000.0)),
            );
        }
        report.add(
            scenario,
            &format!("{name}: load average before the answers"),
            load,
            "",
            None,
        );
        report.add(
            scenario,
            &format!("{name}: seconds to write the day (store append path)"),
            fill_secs,
            "s",
            None,
        );
    }
    drop(server);
    Ok(())
}

/// The URL of the kept cluster in `dir`: started again when `reuse` (it may have been
/// stopped), else made there (scripts/pg.sh, fsync on as the bench's own).
fn kept_cluster(dir: &std::path::Path, reuse: bool) -> anyhow::Result<String> {
    let mut command = std::process::Command::new(crate::pgstore::script());
    if reuse {
        command.arg("restart").arg(dir);
    } else {
        command.arg("start").arg(dir).arg("--fsync");
    }
    let status = command.stdout(std::process::Stdio::null()).status()?;
    anyhow::ensure!(status.success(), "scripts/pg.sh on {}", dir.display());
    Ok(std::fs::read_to_string(dir.join("url"))?.trim().to_owned())
}
