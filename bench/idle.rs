//! The idle scenario: an idle host and an idle pod at default intervals, the collector's
//! CPU and memory, as a sidecar runs it (`procflow-collector`; `PROCFLOW_BIN` alone: that
//! binary's `procflow collector`).

use super::*;

/// Start-up work is not idle cost: measured from this long after the collector is ready.
const IDLE_SETTLE: Duration = Duration::from_secs(3);

pub(crate) fn scenario_idle(report: &mut Report, secs: u64) -> anyhow::Result<()> {
    // The profile the target is for: an idle pod (own pid and network namespaces).
    let (cpu, rss, settled, records) =
        idle_cost(start_collector_in_pod(&["--output", "stdout"])?, secs)?;
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
    report.add(
        "idle pod",
        "collector RSS at the end (after start-up's code pages are let go)",
        settled,
        "MiB",
        None,
    );
    // For reference: the same collector watching this whole host.
    let processes = std::fs::read_dir("/proc")?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        })
        .count();
    let (cpu, rss, _, _) = idle_cost(start_sidecar(&["--output", "stdout"])?, secs)?;
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

/// CPU (% of one core), peak RSS and RSS at the end (MiB) of a collector left alone for
/// `secs`, after the start-up (first sweep and dump, a second of fast ticks) has settled;
/// and its records.
fn idle_cost(collector: CollectorProc, secs: u64) -> anyhow::Result<(f64, f64, f64, Vec<Record>)> {
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
    let settled = collector.rss_kib() as f64 / 1024.0;
    let records = collector.stop()?;
    Ok((cpu, rss, settled, records))
}
