//! `procflow collector --once` as a user times it: the whole command (start-up, process
//! scan, attribution, dump, JSON, exit), output to `/dev/null`, beside `ss -tin` and
//! `ss -tinp` in the same namespace, rounds interleaved so the VM's drift hits each alike;
//! and one run to a file, every line parsed, to check that every socket is written.

use std::process::{Command, Stdio};

use anyhow::Context;
use procflow::model::Record;

use crate::{best_of_each, procflow_bin, run_quiet, Report};

/// Rounds of each comparison; each command keeps its best.
const ROUNDS: usize = 3;

/// Adds the `--once` rows to `scenario`, run in the calling thread's network namespace,
/// which holds `sockets` sockets.
pub fn measure(report: &mut Report, scenario: &str, sockets: usize) -> anyhow::Result<()> {
    let bin = procflow_bin();
    let bin = bin.to_str().context("procflow path")?;
    let once = |processes: bool| {
        let flags = if processes { "" } else { " --no-processes" };
        format!("'{bin}' collector --once --output stdout{flags} > /dev/null")
    };
    let (without, with) = (once(false), once(true));
    let [once_bare, ss] = best_of_each(
        ROUNDS,
        [&mut || run_quiet("sh", &["-c", &without]), &mut || {
            run_quiet("sh", &["-c", "ss -tin > /dev/null"])
        }],
    )?;
    let [once_procs, ss_p] = best_of_each(
        2,
        [&mut || run_quiet("sh", &["-c", &with]), &mut || {
            run_quiet("sh", &["-c", "ss -tinp > /dev/null"])
        }],
    )?;
    // Every socket written: one run kept and parsed (not timed).
    let out = Command::new(bin)
        .args([
            "collector",
            "--once",
            "--output",
            "stdout",
            "--no-processes",
        ])
        .stderr(Stdio::null())
        .output()?;
    anyhow::ensure!(out.status.success(), "collector --once failed");
    let mut written = 0usize;
    for line in out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        if matches!(serde_json::from_slice(line)?, Record::Flow(_)) {
            written += 1;
        }
    }
    report.add(
        scenario,
        "collector --once, flows written (every socket of the namespace)",
        written as f64,
        "sockets",
        Some(("every socket", written >= sockets)),
    );
    report.add(
        scenario,
        "collector --once --no-processes > /dev/null (whole command)",
        once_bare * 1e3,
        "ms",
        Some(("<=0.35x ss -tin", once_bare <= ss * 0.35)),
    );
    report.add(
        scenario,
        "ss -tin > /dev/null (same rounds)",
        ss * 1e3,
        "ms",
        None,
    );
    report.add(
        scenario,
        "collector --once > /dev/null, processes + attribution (whole command)",
        once_procs * 1e3,
        "ms",
        Some(("<=0.1x ss -tinp", once_procs <= ss_p * 0.1)),
    );
    report.add(
        scenario,
        "ss -tinp > /dev/null (same rounds)",
        ss_p * 1e3,
        "ms",
        None,
    );
    Ok(())
}
