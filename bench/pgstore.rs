//! `pgstore` (only when named): sustained ingest through the collector's real path into an
//! aggregator process with the managed rules, stored in PostgreSQL (a throwaway server from
//! scripts/pg.sh, fsync on, on this machine) and, beside it, in SQLite; records stored /
//! sent, and bytes on disk per stored record.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::pipeline::{drive, exporter_config, Aggregator};
use crate::Report;

/// A PostgreSQL server of scripts/pg.sh, stopped on drop.
pub(crate) struct Server {
    dir: tempfile::TempDir,
    pub(crate) url: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg.sh")
}

impl Server {
    pub(crate) fn start() -> anyhow::Result<Server> {
        let dir = tempfile::Builder::new().prefix("procflow-pg.").tempdir()?;
        let status = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .args(["--watch", &std::process::id().to_string(), "--fsync"])
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
        let out = Command::new("psql")
            .args(["-qAtX", &self.url, "-c", sql])
            .env(
                "PGPASSWORD",
                std::fs::read_to_string(self.password_file())?.trim(),
            )
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

pub fn scenario_pgstore(report: &mut Report, sustain: Duration) -> anyhow::Result<()> {
    let server = Server::start()?;
    let password = server.password_file();
    let agg = Aggregator::start(&[
        "--store",
        &server.url,
        "--store-password-file",
        password.to_str().unwrap_or_default(),
    ])?;
    let load = load_average();
    let (n, secs, _) = drive(exporter_config(&agg.url()), u64::MAX, sustain)?;
    agg.stop();
    let stored =
        server.value("SELECT COALESCE(sum(count), 0) FROM segments WHERE kind = 'flow'")?;
    let bytes = server.value(
        "SELECT (SELECT COALESCE(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits \
         WHERE inhparent = 'segments'::regclass) + pg_total_relation_size('batches')",
    )?;
    let rate = n as f64 / secs;
    let name = format!("into PostgreSQL + rules, sustained {}s", sustain.as_secs());
    report.add(
        "pgstore",
        &name,
        rate,
        "rec/s",
        Some((">=200k/s", rate >= 200_000.0)),
    );
    report.add(
        "pgstore",
        "PostgreSQL: records stored / sent (must be 1)",
        stored / n as f64,
        "ratio",
        Some(("==1", stored as u64 == n)),
    );
    report.add(
        "pgstore",
        "PostgreSQL: bytes on disk per stored record (segments + dedupe)",
        bytes / stored.max(1.0),
        "B",
        None,
    );
    report.add("pgstore", "load average at start", load, "", None);
    drop(server);

    let agg = Aggregator::start(&[])?;
    let (n, secs, _) = drive(exporter_config(&agg.url()), u64::MAX, sustain)?;
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
        "pgstore",
        &format!(
            "into SQLite + rules, sustained {}s (beside)",
            sustain.as_secs()
        ),
        rate,
        "rec/s",
        None,
    );
    report.add(
        "pgstore",
        "SQLite: records stored / sent (must be 1)",
        stored as f64 / n as f64,
        "ratio",
        Some(("==1", stored as u64 == n)),
    );
    report.add(
        "pgstore",
        "SQLite: bytes on disk per stored record (file + WAL)",
        bytes as f64 / stored.max(1) as f64,
        "B",
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
