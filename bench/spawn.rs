//! spawn: processes the collector must see alive, with their own image. Three workloads,
//! each against a collector watching this host:
//! - fork-exec chains of known lifetimes (`sh -c 'sh -c "sleep T; true"; true'`, 200/s):
//!   processes seen with their parent, per lifetime;
//! - `sh -c` chains whose children exec the same shell (60/s, children living 10–90 ms):
//!   processes whose START or EXEC carries their own argv and parent, and records that pair
//!   one image's name with another's executable;
//! - shim-style exec chains (`sh` waiting on its stdin, then `exec sleep` or `exec env
//!   sleep`): from the moment the bench releases a shim the collector has known for 100 ms
//!   to the first record with the new image on the collector's stdout.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use procflow::model::{ProcessPhase, ProcessRecord, Record};

use crate::score::{self, ratio, TruthProc};
use crate::{start_collector, ticks_per_sec, Report, Sizes};

pub(crate) fn scenario_spawn(report: &mut Report, sizes: &Sizes) -> anyhow::Result<()> {
    lifetimes(report, sizes)?;
    shell_chains(report, sizes.spawn_secs)?;
    shims(report, sizes.spawn_secs)
}

// === fork-exec chains of known lifetimes ===

fn lifetimes(report: &mut Report, sizes: &Sizes) -> anyhow::Result<()> {
    let scenario = format!("spawn {}/s", sizes.spawn_rate);
    let collector = start_collector(&["--output", "stdout", "--queue-capacity", "65536"])?;
    let me = std::process::id();
    let total = sizes.spawn_rate * sizes.spawn_secs;
    let cpu0 = collector.cpu_ticks();
    let start = Instant::now();
    let mut waiters = Vec::new();
    for i in 0..total {
        let at = start + Duration::from_micros(i * 1_000_000 / sizes.spawn_rate);
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // Lifetimes log-uniform from 1 ms to 1 s; depth 3: sh -> sh -> sleep.
        let secs = 10f64.powf(-3.0 + 3.0 * fastrand::f64());
        let mut child = Command::new("sh")
            .args(["-c", &format!("sh -c 'sleep {secs:.4}; true'; true")])
            .stdout(Stdio::null())
            .spawn()?;
        let started = Instant::now();
        let pid = child.id();
        // A waiting thread per child: the lifetime measured is the child's own, not the
        // spawn loop's pace (a stalled loop once made 5 ms processes look 150 ms long).
        waiters.push(std::thread::spawn(move || {
            child.wait().ok()?;
            Some(TruthProc {
                pid,
                ppid: me,
                lifetime_ms: started.elapsed().as_millis() as u64,
                requested_ms: secs * 1e3,
            })
        }));
    }
    let truth: Vec<TruthProc> = waiters
        .into_iter()
        .filter_map(|w| w.join().ok().flatten())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let cpu =
        (collector.cpu_ticks() - cpu0) as f64 / ticks_per_sec() / start.elapsed().as_secs_f64();
    let records = collector.stop()?;
    report.add(&scenario, "collector CPU", cpu * 100.0, "% core", None);
    if std::env::var_os("PF_BENCH_DEBUG").is_some() {
        for t in &truth {
            let mine: Vec<_> = records
                .iter()
                .filter(|r| matches!(r, Record::Process(p) if p.pid == t.pid))
                .collect();
            let seen = mine.iter().any(|r| {
                matches!(r, Record::Process(p) if p.ppid == t.ppid
                    && matches!(p.phase, ProcessPhase::Start | ProcessPhase::Exec))
            });
            if !seen {
                eprintln!("missed {t:?}: {mine:?}");
            }
        }
        if let Some(Record::Heartbeat(h)) = records
            .iter()
            .rev()
            .find(|r| matches!(r, Record::Heartbeat(_)))
        {
            eprintln!("collector's last heartbeat: {:?}", h.counters);
        }
    }
    for (label, n, seen) in score::score_processes(&truth, &records) {
        let rate = ratio(seen, n);
        let target = match label.as_str() {
            "5-50ms" => Some((">=99%", rate >= 99.0)),
            "50-500ms" | ">=500ms" => Some(("100%", seen == n)),
            _ => None,
        };
        report.add(
            &scenario,
            &format!("processes seen with parent, lifetime {label}"),
            rate,
            "%",
            target,
        );
        report.add(
            &scenario,
            &format!("processes spawned, lifetime {label}"),
            n as f64,
            "procs",
            None,
        );
    }
    Ok(())
}

// === sh -c chains whose children exec the same shell ===

/// Chains started per second.
const CHAIN_RATE: u64 = 60;

/// One process of a chain as it really was.
#[derive(Debug, Clone)]
struct ChainProc {
    pid: u32,
    ppid: u32,
    argv: Vec<Vec<u8>>,
    /// What it certainly lived: the sleep its chain waited for.
    floor_ms: u64,
}

/// The images a chain's processes may show: the shell, sleep, and the bench's own fork
/// before its exec (named like the thread that forked it).
struct Images {
    sh: Vec<u8>,
    sleep: Vec<u8>,
    bench: Vec<u8>,
}

impl Images {
    fn here() -> anyhow::Result<Images> {
        let real = |p: &str| -> anyhow::Result<Vec<u8>> {
            let path = std::fs::canonicalize(p)?;
            Ok(path.into_os_string().into_encoded_bytes())
        };
        Ok(Images {
            sh: real("/bin/sh")?,
            sleep: real("/bin/sleep")?,
            bench: std::env::current_exe()?
                .into_os_string()
                .into_encoded_bytes(),
        })
    }

    /// Whether the record pairs a name with the executable of another image.
    fn mixed(&self, p: &ProcessRecord) -> bool {
        match p.exe.as_deref() {
            None => false,
            Some(exe) if exe == self.sh => p.comm != b"sh",
            Some(exe) if exe == self.sleep => p.comm != b"sleep",
            Some(exe) if exe == self.bench => p.comm == b"sh" || p.comm == b"sleep",
            Some(_) => true,
        }
    }
}

/// Per process: whether a START or EXEC carries its own argv and parent; and how many
/// records of these processes mix two images. Returns (≥ 50 ms: n, own), (≥ 5 ms: n, own),
/// mixed records.
fn score_chains(
    truth: &[ChainProc],
    records: &[Record],
    images: &Images,
) -> ((u64, u64), (u64, u64), u64) {
    let ours: HashSet<u32> = truth.iter().map(|t| t.pid).collect();
    let mut by_pid: HashMap<u32, Vec<&ProcessRecord>> = HashMap::new();
    let mut mixed = 0;
    for r in records {
        if let Record::Process(p) = r {
            if ours.contains(&p.pid) {
                by_pid.entry(p.pid).or_default().push(p);
                mixed += u64::from(images.mixed(p));
            }
        }
    }
    let (mut long, mut short) = ((0, 0), (0, 0));
    for t in truth {
        let own = by_pid.get(&t.pid).is_some_and(|rs| {
            rs.iter().any(|p| {
                matches!(p.phase, ProcessPhase::Start | ProcessPhase::Exec)
                    && p.ppid == t.ppid
                    && p.argv == t.argv
            })
        });
        if std::env::var_os("PF_BENCH_DEBUG").is_some() && !own && t.floor_ms >= 5 {
            let seen: Vec<_> = by_pid
                .get(&t.pid)
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p.phase,
                        p.ppid,
                        String::from_utf8_lossy(&p.argv.join(&b' ')).into_owned(),
                    )
                })
                .collect();
            eprintln!("not own: {t:?}: {seen:?}");
        }
        for (bucket, min) in [(&mut long, 50), (&mut short, 5)] {
            if t.floor_ms >= min {
                bucket.0 += 1;
                bucket.1 += u64::from(own);
            }
        }
    }
    (long, short, mixed)
}

fn shell_chains(report: &mut Report, secs: u64) -> anyhow::Result<()> {
    let scenario = format!("spawn sh -c chains {CHAIN_RATE}/s");
    let images = Images::here()?;
    let collector = start_collector(&["--output", "stdout", "--queue-capacity", "65536"])?;
    let me = std::process::id();
    let total = CHAIN_RATE * secs;
    let cpu0 = collector.cpu_ticks();
    let start = Instant::now();
    let mut waiters = Vec::new();
    for i in 0..total {
        let at = start + Duration::from_micros(i * 1_000_000 / CHAIN_RATE);
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // The shape: the inner shell is forked by the outer one and execs /bin/sh
        // again (its name and executable stay), then forks a sleep living 10–90 ms.
        let ms = 10 + fastrand::u64(0..=80);
        let sleep = format!("0.{ms:03}");
        let inner = format!("echo b{i}; sleep {sleep} & echo $$ $!; wait");
        let outer = format!("echo a{i}; sh -c '{inner}'; true");
        let child = Command::new("sh")
            .args(["-c", &outer])
            .stdout(Stdio::piped())
            .spawn()?;
        waiters.push(std::thread::spawn(move || -> Option<[ChainProc; 3]> {
            let outer_pid = child.id();
            let out = child.wait_with_output().ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let pids: Vec<u32> = text
                .lines()
                .last()?
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            let [inner_pid, sleep_pid] = pids[..] else {
                return None;
            };
            let words = |w: &[&str]| w.iter().map(|s| s.as_bytes().to_vec()).collect();
            Some([
                ChainProc {
                    pid: outer_pid,
                    ppid: me,
                    argv: words(&["sh", "-c", &outer]),
                    floor_ms: ms,
                },
                ChainProc {
                    pid: inner_pid,
                    ppid: outer_pid,
                    argv: words(&["sh", "-c", &inner]),
                    floor_ms: ms,
                },
                ChainProc {
                    pid: sleep_pid,
                    ppid: inner_pid,
                    argv: words(&["sleep", &sleep]),
                    floor_ms: ms,
                },
            ])
        }));
    }
    let truth: Vec<ChainProc> = waiters
        .into_iter()
        .filter_map(|w| w.join().ok().flatten())
        .flatten()
        .collect();
    let cpu =
        (collector.cpu_ticks() - cpu0) as f64 / ticks_per_sec() / start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let records = collector.stop()?;
    let (long, short, mixed) = score_chains(&truth, &records, &images);
    report.add(&scenario, "collector CPU", cpu * 100.0, "% core", None);
    let rate = ratio(long.1, long.0);
    report.add(
        &scenario,
        "processes with own argv and parent, living >=50ms",
        rate,
        "%",
        Some(("100%", long.1 == long.0)),
    );
    report.add(
        &scenario,
        "processes living >=50ms",
        long.0 as f64,
        "procs",
        None,
    );
    let rate = ratio(short.1, short.0);
    report.add(
        &scenario,
        "processes with own argv and parent, living >=5ms",
        rate,
        "%",
        Some((">=99%", rate >= 99.0)),
    );
    report.add(
        &scenario,
        "processes living >=5ms",
        short.0 as f64,
        "procs",
        None,
    );
    report.add(
        &scenario,
        "records with a mixed comm/exe",
        mixed as f64,
        "records",
        Some(("0", mixed == 0)),
    );
    Ok(())
}

// === shim-style exec chains: exec latency ===

/// Shims released per second.
const SHIM_RATE: u64 = 20;
/// How long the collector has known a shim before it is released: past the age at which
/// new processes are re-read on every tick.
const SHIM_KNOWN: Duration = Duration::from_millis(100);

/// Process records as they appear on the collector's stdout: (when read, pid, comm).
type Seen = Arc<Mutex<Vec<(Instant, u32, Vec<u8>)>>>;

/// Follows the collector's output file as it grows, until `stop`.
fn follow(path: std::path::PathBuf, seen: Seen, stop: Arc<std::sync::atomic::AtomicBool>) {
    let Ok(file) = std::fs::File::open(path) else {
        return;
    };
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => std::thread::sleep(Duration::from_millis(1)),
            Ok(_) if line.ends_with('\n') => {
                if let Ok(Record::Process(p)) = serde_json::from_str(&line) {
                    if let Ok(mut seen) = seen.lock() {
                        seen.push((Instant::now(), p.pid, p.comm));
                    }
                }
            }
            // A line still being written: read the rest on the next pass.
            Ok(_) => {
                let mut rest = std::mem::take(&mut line);
                while !rest.ends_with('\n') && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut more = String::new();
                    if reader.read_line(&mut more).unwrap_or(0) == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    rest.push_str(&more);
                }
                if let Ok(Record::Process(p)) = serde_json::from_str(&rest) {
                    if let Ok(mut seen) = seen.lock() {
                        seen.push((Instant::now(), p.pid, p.comm));
                    }
                }
            }
            Err(_) => return,
        }
    }
}

/// The first time a record of `pid` named `comm` was read, after `after`.
fn first_seen(seen: &Seen, pid: u32, comm: &[u8], deadline: Instant) -> Option<Instant> {
    loop {
        if let Ok(seen) = seen.lock() {
            if let Some((at, _, _)) = seen.iter().find(|(_, p, c)| *p == pid && c == comm) {
                return Some(*at);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One shim: started, known to the collector for `SHIM_KNOWN`, released; the latency from
/// the release to the first record of its new image (`None`: never seen).
fn one_shim(seen: &Seen, through_env: bool) -> anyhow::Result<Option<Duration>> {
    let exec = if through_env {
        "exec env sleep 0.2"
    } else {
        "exec sleep 0.2"
    };
    let mut child = Command::new("sh")
        .args(["-c", &format!("read go; {exec}")])
        .stdin(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let known = first_seen(seen, pid, b"sh", Instant::now() + Duration::from_secs(5));
    let mut latency = None;
    if known.is_some() {
        std::thread::sleep(SHIM_KNOWN);
        let released = Instant::now();
        writeln!(
            child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?,
            "go"
        )?;
        latency = first_seen(seen, pid, b"sleep", released + Duration::from_secs(5))
            .map(|at| at.saturating_duration_since(released));
    }
    drop(child.stdin.take());
    child.wait()?;
    Ok(known.and(latency))
}

fn shims(report: &mut Report, secs: u64) -> anyhow::Result<()> {
    let scenario = "spawn shim exec";
    let collector = start_collector(&["--output", "stdout"])?;
    let seen: Seen = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = {
        let (path, seen, stop) = (collector.out_path.clone(), seen.clone(), stop.clone());
        std::thread::spawn(move || follow(path, seen, stop))
    };
    let total = SHIM_RATE * secs;
    let start = Instant::now();
    let mut shims = Vec::new();
    for i in 0..total {
        let at = start + Duration::from_micros(i * 1_000_000 / SHIM_RATE);
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let seen = seen.clone();
        shims.push(std::thread::spawn(move || one_shim(&seen, i % 2 == 1)));
    }
    let mut latencies = Vec::new();
    let mut missed = 0u64;
    for shim in shims {
        match shim.join() {
            Ok(Ok(Some(latency))) => latencies.push(latency),
            Ok(Ok(None)) => missed += 1,
            Ok(Err(e)) => return Err(e),
            Err(_) => anyhow::bail!("a shim thread panicked"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = follower.join();
    collector.stop()?;
    latencies.sort_unstable();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    let p99 = pct(0.99);
    report.add(scenario, "shims released", total as f64, "shims", None);
    report.add(
        scenario,
        "shims whose new image never reached the records",
        missed as f64,
        "shims",
        Some(("0", missed == 0)),
    );
    report.add(
        scenario,
        "exec reflected in records, p50",
        pct(0.5),
        "ms",
        None,
    );
    report.add(
        scenario,
        "exec reflected in records, p99",
        p99,
        "ms",
        Some(("<=20 ms", p99 <= 20.0)),
    );
    report.add(
        scenario,
        "exec reflected in records, max",
        pct(1.0),
        "ms",
        None,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        pid: u32,
        ppid: u32,
        phase: ProcessPhase,
        comm: &str,
        exe: &str,
        argv: &[&str],
    ) -> Record {
        Record::Process(ProcessRecord {
            start_time: 0,
            ppid,
            phase,
            exe: Some(exe.into()),
            argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            uid: 0,
            gid: 0,
            euid: 0,
            egid: 0,
            ..procflow::fixtures::process(pid, comm.as_bytes())
        })
    }

    #[test]
    fn chains_score_own_images_and_mixed_records() {
        let images = Images {
            sh: b"/usr/bin/dash".to_vec(),
            sleep: b"/usr/bin/sleep".to_vec(),
            bench: b"/bench".to_vec(),
        };
        let argv = |w: &[&str]| w.iter().map(|s| s.as_bytes().to_vec()).collect();
        let truth = vec![
            ChainProc {
                pid: 10,
                ppid: 1,
                argv: argv(&["sh", "-c", "outer"]),
                floor_ms: 60,
            },
            ChainProc {
                pid: 11,
                ppid: 10,
                argv: argv(&["sh", "-c", "inner"]),
                floor_ms: 60,
            },
            ChainProc {
                pid: 12,
                ppid: 11,
                argv: argv(&["sleep", "0.010"]),
                floor_ms: 10,
            },
        ];
        let records = vec![
            record(
                10,
                1,
                ProcessPhase::Start,
                "bench-thread",
                "/bench",
                &["bench"],
            ),
            record(
                10,
                1,
                ProcessPhase::Exec,
                "sh",
                "/usr/bin/dash",
                &["sh", "-c", "outer"],
            ),
            // The fork read before its exec: its parent's image, then its own.
            record(
                11,
                10,
                ProcessPhase::Start,
                "sh",
                "/usr/bin/dash",
                &["sh", "-c", "outer"],
            ),
            record(
                11,
                10,
                ProcessPhase::Exec,
                "sh",
                "/usr/bin/dash",
                &["sh", "-c", "inner"],
            ),
            // Seen only with its parent's arguments, and once with a mixed image.
            record(
                12,
                11,
                ProcessPhase::Start,
                "sh",
                "/usr/bin/dash",
                &["sh", "-c", "inner"],
            ),
            record(
                12,
                11,
                ProcessPhase::Exit,
                "sh",
                "/usr/bin/sleep",
                &["sleep", "0.010"],
            ),
        ];
        let (long, short, mixed) = score_chains(&truth, &records, &images);
        assert_eq!(long, (2, 2));
        assert_eq!(short, (3, 2));
        assert_eq!(mixed, 1);
    }
}
