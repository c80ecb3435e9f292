//! The benchmark must not rot: a smoke run of every scenario at tiny sizes produces a
//! well-formed report (every scenario measured).

use std::process::Command;

#[test]
fn smoke_run_produces_a_well_formed_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_procflow-bench"))
        .args(["smoke", "--json"])
        .arg(&json)
        .env("PROCFLOW_BIN", env!("CARGO_BIN_EXE_procflow"))
        .env(
            "PROCFLOW_COLLECTOR_BIN",
            env!("CARGO_BIN_EXE_procflow-collector"),
        )
        .output()
        .expect("run procflow-bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("procflow-bench smoke"), "{table}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
    assert!(report["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    let metrics = report["metrics"].as_array().expect("metrics");
    let skipped = report["not_measured"].as_array().expect("not_measured");
    assert!(skipped.is_empty(), "every scenario runs: {skipped:?}");
    for scenario in [
        "poll", "churn", "lifetime", "spawn", "idle", "pipeline", "streams", "hostile", "rules",
        "http", "console",
    ] {
        let measured = metrics.iter().any(|m| {
            m["scenario"]
                .as_str()
                .is_some_and(|s| s.starts_with(scenario))
        });
        assert!(measured, "scenario {scenario} was not measured");
    }
    for m in metrics {
        assert!(m["value"].as_f64().is_some_and(f64::is_finite), "{m}");
        if m["target"].is_string() {
            assert!(
                m["met"].is_boolean(),
                "a figure with a target says whether it is met: {m}"
            );
        }
    }
}
