//! Real PostgreSQL servers for the tests, from `scripts/pg.sh` (Debian's server, installed
//! when missing): the one `make test` started (PROCFLOW_TEST_PG_URL), else one this test
//! process starts on first use and that stops when the process exits; and private servers
//! a test can stop and start (database down, at start and mid-stream).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg.sh")
}

/// A server started by this process; stopped (and its directory removed) on drop.
pub struct PgServer {
    dir: tempfile::TempDir,
    pub url: String,
    pub password: String,
}

impl PgServer {
    pub fn start() -> PgServer {
        PgServer::start_with(&[])
    }

    /// A server started with more of `scripts/pg.sh start`'s options (`--tls CERT KEY`).
    pub fn start_with(options: &[&str]) -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("procflow-pg.")
            .tempdir()
            .expect("tempdir");
        let status = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .args(["--watch", &std::process::id().to_string(), "--remove"])
            .args(options)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("scripts/pg.sh");
        assert!(status.success(), "scripts/pg.sh start failed");
        let read = |name: &str| {
            std::fs::read_to_string(dir.path().join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .trim()
                .to_owned()
        };
        PgServer {
            url: read("url"),
            password: read("password"),
            dir,
        }
    }

    /// Stops the server (fast shutdown: open connections are cut).
    pub fn stop(&self) {
        let status = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .status()
            .expect("scripts/pg.sh");
        assert!(status.success(), "scripts/pg.sh stop failed");
    }

    /// Starts the stopped server again, on the same port.
    pub fn restart(&self) {
        let status = Command::new(script())
            .arg("restart")
            .arg(self.dir.path())
            .status()
            .expect("scripts/pg.sh");
        assert!(status.success(), "scripts/pg.sh restart failed");
    }

    /// The file holding the superuser's password (for --store-password-file).
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    /// A fresh database on this server; its URL.
    pub fn database(&self) -> String {
        new_database(&self.url, &self.password)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("postgresql installed")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .collect();
    versions.sort();
    versions.pop().expect("a postgresql version")
}

/// The shared server: `make test`'s, or one of this process's own.
pub struct Shared {
    pub url: String,
    pub password: String,
    _own: Option<PgServer>,
}

pub fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let from_env = std::env::var("PROCFLOW_TEST_PG_URL").ok().zip(
            std::env::var("PROCFLOW_TEST_PG_PASSWORD_FILE")
                .ok()
                .and_then(|f| std::fs::read_to_string(f).ok()),
        );
        match from_env {
            Some((url, password)) => Shared {
                url,
                password: password.trim().to_owned(),
                _own: None,
            },
            None => {
                // Never dropped (a static): the --watch of pg.sh stops it when we exit.
                let own = PgServer::start();
                Shared {
                    url: own.url.clone(),
                    password: own.password.clone(),
                    _own: Some(own),
                }
            }
        }
    })
}

/// A fresh database on the shared server; its URL.
pub fn fresh_database() -> String {
    let s = shared();
    new_database(&s.url, &s.password)
}

fn new_database(url: &str, password: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "t{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        fastrand::u32(..)
    );
    psql(url, password, &format!("CREATE DATABASE {name}"));
    let (base, _) = url.rsplit_once('/').expect("url with a database");
    format!("{base}/{name}")
}

/// Runs one statement with psql; its output (unaligned, tuples only).
pub fn psql(url: &str, password: &str, sql: &str) -> String {
    let out = Command::new(pg_bin().join("psql"))
        .args(["-qAtX", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .env("PGPASSWORD", password)
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
