//! `pgstore` (only when named): sustained ingest through the collector's real path into
//! **two** aggregator processes (replicas, with the managed rules) on one PostgreSQL (a
//! throwaway server from scripts/pg.sh, fsync on, on this machine), the collectors split
//! across them, each with a gRPC connection of its own; then, beside it, the same
//! collectors into one aggregator on SQLite. Records stored / sent, and bytes on disk per
//! stored record: heap, TOAST (segment bodies are compressed there) and indexes apart.
//! The records vary as a pod's do (ports, a few hundred peers, counters, times, a few
//! owners; START, UPDATE and END of each socket), so their bytes are not those of one
//! record repeated (2,048 copies of one record compress about forty times).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use procflow::model::{FlowPhase, Record};

use crate::pipeline::{drive_as, exporter_config, Aggregator};
use crate::Report;

/// A PostgreSQL server of scripts/pg.sh: stopped and deleted on drop, on SIGINT/SIGTERM
/// (`cleanup`), and by its watcher when the bench dies of anything else.
pub(crate) struct Server {
    dir: tempfile::TempDir,
    pub(crate) url: String,
}

pub(crate) fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg.sh")
}

impl Server {
    pub(crate) fn start() -> anyhow::Result<Server> {
        let dir = tempfile::Builder::new().prefix("procflow-pg.").tempdir()?;
        crate::cleanup::cluster_started(dir.path());
        let status = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .args([
                "--watch",
                &std::process::id().to_string(),
                "--remove",
                "--fsync",
            ])
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "scripts/pg.sh start failed");
        let url = std::fs::read_to_string(dir.path().join("url"))?
            .trim()
            .to_owned();
        Ok(Server { dir, url })
    }

    pub(crate) fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    /// One value from `sql`.
    pub(crate) fn value(&self, sql: &str) -> anyhow::Result<f64> {
        value_at(&self.url, &self.password_file(), sql)
    }
}

/// One value from `sql` on the server at `url`.
pub(crate) fn value_at<T: std::str::FromStr>(
    url: &str,
    password_file: &Path,
    sql: &str,
) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let out = Command::new("psql")
        .args(["-qAtX", url, "-c", sql])
        .env("PGPASSWORD", std::fs::read_to_string(password_file)?.trim())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
        crate::cleanup::cluster_ended(self.dir.path());
    }
}

/// Collectors streaming at once (split across the replicas): `PF_BENCH_PG_SENDERS`, 4.
fn senders() -> usize {
    std::env::var("PF_BENCH_PG_SENDERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(4)
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Record `n` of a pod: socket `n / 3`'s START, UPDATE or END.
fn pod_flow(base: u64, n: u64) -> Record {
    let socket = n / 3;
    let h = splitmix(socket);
    let mut f = procflow::fixtures::flow(socket);
    f.local_port = 32_768 + (h % 28_000) as u16;
    let peer = (h >> 16) % 400;
    f.remote_addr = Some(std::net::IpAddr::from([
        10,
        1 + (peer / 250) as u8,
        ((peer * 7) % 250) as u8,
        (peer % 250 + 1) as u8,
    ]));
    f.remote_port = Some([443, 5432, 6379, 8080, 53][(h >> 24) as usize % 5]);
    let pid = 100 + (h >> 32) as u32 % 20;
    f.pid = Some(pid);
    f.process_start_time = Some(u64::from(pid) * 1_000_003);
    f.inode = Some(1_000_000 + socket);
    f.first_seen = base + socket * 1_000;
    f.phase = [FlowPhase::Start, FlowPhase::Update, FlowPhase::End][(n % 3) as usize];
    let progress = n % 3 + 1;
    f.bytes_sent = Some((h >> 8) % 200_000 * progress);
    f.bytes_received = Some((h >> 20) % 2_000_000 * progress);
    f.segs_out = Some((h >> 40) % 2_000 * progress);
    f.segs_in = Some((h >> 44) % 3_000 * progress);
    f.rtt_us = Some(50 + ((h >> 48) % 5_000) as u32);
    f.retransmits = Some(0);
    f.total_retrans = Some(((h >> 56) % 3) as u32);
    f.last_seen = f.first_seen + progress * (h % 2_000_000_000);
    if f.phase == FlowPhase::End {
        f.state = "CLOSE".into();
        f.ended_at = Some(f.last_seen);
    }
    Record::Flow(f)
}

/// `senders` collectors streaming for `sustain`, collector `i` to `urls[i % len]`; returns
/// (records sent, seconds of the longest).
fn drive_split(urls: &[String], sustain: Duration, tag: &str) -> anyhow::Result<(u64, f64)> {
    let base = procflow::model::now_ns();
    let run = format!("bench-{tag}-{base}");
    let threads: Vec<_> = (0..senders())
        .map(|i| {
            let (url, collector) = (urls[i % urls.len()].clone(), format!("{run}-{i}"));
            std::thread::spawn(move || {
                drive_as(
                    exporter_config(&url),
                    u64::MAX,
                    sustain,
                    collector,
                    move |n| pod_flow(base, n),
                )
            })
        })
        .collect();
    let (mut sent, mut secs) = (0, 0f64);
    for t in threads {
        let (n, s, _) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
        sent += n;
        secs = secs.max(s);
    }
    Ok((sent, secs))
}

pub fn scenario_pgstore(report: &mut Report, sustain: Duration) -> anyhow::Result<()> {
    let server = Server::start()?;
    let password = server.password_file();
    let args = [
        "--store",
        &server.url,
        "--store-password-file",
        password.to_str().unwrap_or_default(),
    ];
    let replicas = [Aggregator::start(&args)?, Aggregator::start(&args)?];
    let load = load_average();
    let urls: Vec<String> = replicas.iter().map(Aggregator::url).collect();
    let (n, secs) = drive_split(&urls, sustain, "pg")?;
    for replica in replicas {
        replica.stop();
    }
    let load_after = load_average();
    let stored =
        server.value("SELECT COALESCE(sum(count), 0) FROM segments WHERE kind = 'flow'")?;
    // Every daily partition of `segments`, whole: heap, TOAST (with its index) and indexes.
    let partitions = "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                      WHERE i.inhparent = 'segments'::regclass";
    let total = server.value(&format!(
        "SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0) {partitions}"
    ))?;
    let toast = server.value(&format!(
        "SELECT COALESCE(sum(pg_total_relation_size(c.reltoastrelid)), 0) {partitions} \
         AND c.reltoastrelid <> 0"
    ))?;
    let indexes = server.value(&format!(
        "SELECT COALESCE(sum(pg_indexes_size(c.oid)), 0) {partitions}"
    ))?;
    let dedupe = server.value("SELECT pg_total_relation_size('batches')")?;
    // Segment bodies before compression (from the TOAST pointers: nothing decompressed).
    let encoded = server.value("SELECT COALESCE(sum(octet_length(body)), 0) FROM segments")?;
    let rate = n as f64 / secs;
    let per = |bytes: f64| bytes / stored.max(1.0);
    let scenario = "pgstore";
    report.add(
        scenario,
        &format!(
            "PostgreSQL + rules, two replicas, {} collectors, sustained {}s",
            senders(),
            sustain.as_secs()
        ),
        rate,
        "rec/s",
        Some((">=200k/s", rate >= 200_000.0)),
    );
    report.add(
        scenario,
        &format!("PostgreSQL: records stored / sent (must be 1; {n} sent)"),
        stored / n as f64,
        "ratio",
        Some(("==1", stored as u64 == n)),
    );
    report.add(
        scenario,
        "PostgreSQL: bytes on disk per stored record, all (partitions whole + dedupe)",
        per(total + dedupe),
        "B",
        None,
    );
    report.add(
        scenario,
        "PostgreSQL: of which segment heap",
        per(total - toast - indexes),
        "B",
        None,
    );
    report.add(
        scenario,
        "PostgreSQL: of which TOAST (compressed bodies)",
        per(toast),
        "B",
        None,
    );
    report.add(
        scenario,
        "PostgreSQL: of which indexes",
        per(indexes),
        "B",
        None,
    );
    report.add(
        scenario,
        "PostgreSQL: of which dedupe rows (batches)",
        per(dedupe),
        "B",
        None,
    );
    report.add(
        scenario,
        "PostgreSQL: encoded record before compression",
        per(encoded),
        "B",
        None,
    );
    report.add(scenario, "load average at start", load, "", None);
    report.add(scenario, "load average at end", load_after, "", None);
    drop(server);

    let agg = Aggregator::start(&[])?;
    let (n, secs) = drive_split(&[agg.url()], sustain, "sqlite")?;
    let dir = agg.stop();
    let db = dir.path().join("procflow.db");
    let stored: i64 = rusqlite::Connection::open(&db)?.query_row(
        "SELECT COALESCE(SUM(count), 0) FROM segments WHERE kind = 'flow'",
        [],
        |r| r.get(0),
    )?;
    let bytes: u64 = ["procflow.db", "procflow.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();
    let rate = n as f64 / secs;
    report.add(
        scenario,
        &format!(
            "SQLite + rules, one aggregator, {} collectors, sustained {}s (beside)",
            senders(),
            sustain.as_secs()
        ),
        rate,
        "rec/s",
        None,
    );
    report.add(
        scenario,
        &format!("SQLite: records stored / sent (must be 1; {n} sent)"),
        stored as f64 / n as f64,
        "ratio",
        Some(("==1", stored as u64 == n)),
    );
    report.add(
        scenario,
        "SQLite: bytes on disk per stored record (file + WAL, indexes included)",
        bytes as f64 / stored.max(1) as f64,
        "B",
        None,
    );
    report.add(
        scenario,
        "SQLite: load average at end",
        load_average(),
        "",
        None,
    );
    Ok(())
}

/// The one-minute load average (the machine is shared: figures are read beside it).
pub(crate) fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}
