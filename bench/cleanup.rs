//! What the bench leaves behind when it is interrupted: the aggregator processes and the
//! PostgreSQL clusters it started are registered here, and SIGINT, SIGTERM or SIGHUP (a
//! `timeout`, a Ctrl-C, a closed terminal) kills the first and stops and deletes the
//! second before the bench exits. A SIGKILL runs nothing of the bench: the clusters' own
//! watcher (`scripts/pg.sh start --watch PID --remove`) stops and deletes them then.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static CLUSTERS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Starts the thread that cleans up on a terminating signal.
pub(crate) fn install() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    use tokio::signal::unix::{signal, SignalKind};
    let mut signals = runtime.block_on(async {
        Ok::<_, std::io::Error>([
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ])
    })?;
    std::thread::Builder::new()
        .name("cleanup".into())
        .spawn(move || {
            runtime.block_on(async {
                let [a, b, c] = &mut signals;
                tokio::select! {
                    _ = a.recv() => {}
                    _ = b.recv() => {}
                    _ = c.recv() => {}
                }
            });
            eprintln!("procflow-bench: interrupted: stopping what it started");
            clean_up();
            std::process::exit(130);
        })?;
    Ok(())
}

fn clean_up() {
    let children = CHILDREN.lock().map(|c| c.clone()).unwrap_or_default();
    for pid in children {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let clusters = CLUSTERS.lock().map(|c| c.clone()).unwrap_or_default();
    for dir in clusters {
        let _ = Command::new(crate::pgstore::script())
            .arg("stop")
            .arg(&dir)
            .status();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

pub(crate) fn child_started(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.push(pid);
    }
}

pub(crate) fn child_ended(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.retain(|p| *p != pid);
    }
}

pub(crate) fn cluster_started(dir: &Path) {
    if let Ok(mut c) = CLUSTERS.lock() {
        c.push(dir.to_owned());
    }
}

pub(crate) fn cluster_ended(dir: &Path) {
    if let Ok(mut c) = CLUSTERS.lock() {
        c.retain(|d| d != dir);
    }
}
