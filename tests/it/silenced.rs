//! A silenced collector is evidence: a real collector streams to a real aggregator; killed
//! with SIGKILL it raises an alert for its pod within two heartbeat intervals, with the last
//! records it sent; stopped (SIGSTOP) it raises one when its heartbeats stop; stopped with
//! SIGTERM — a clean drain, as when the pod is deleted — it raises none.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use procflow::model::{now_ns, Event, Record};

use crate::pipeline::Aggregator;
use crate::util::procflow_bin;

const INTERVAL_SECS: u64 = 2;

/// A collector of this host streaming to `url` as pod `pod`, heartbeats every
/// [`INTERVAL_SECS`].
fn collector(url: &str, pod: &str) -> Child {
    Command::new(procflow_bin())
        .args(["collector", "--output", "grpc", "--aggregator", url])
        .args(["--heartbeat-interval", &format!("{INTERVAL_SECS}s")])
        .args(["--batch-interval", "50ms", "--duration", "60s"])
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", "silence")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("collector")
}

fn events(agg: &Aggregator, kind: &str) -> Vec<Event> {
    agg.query(kind)
}

fn silenced_alerts(agg: &Aggregator, pod: &str) -> Vec<procflow::model::AlertRecord> {
    events(agg, "alert")
        .into_iter()
        .filter_map(|e| match e.record {
            Record::Alert(a) if a.rule_id == "PF-COLLECTOR-SILENCED" && a.pod_name == pod => {
                Some(a)
            }
            _ => None,
        })
        .collect()
}

/// Waits until the collector of `pod` has reported (its first heartbeat is stored).
fn wait_reporting(agg: &Aggregator, pod: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !events(agg, "heartbeat")
        .iter()
        .any(|e| e.source.pod_name == pod)
    {
        assert!(
            Instant::now() < deadline,
            "the collector of {pod} never reported"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // And a little of what it sees (processes of this host) with it.
    std::thread::sleep(Duration::from_millis(500));
}

fn signal(child: &Child, signal: &str) {
    crate::util::sh(&["kill", &format!("-{signal}"), &child.id().to_string()]);
}

#[test]
fn a_killed_collector_raises_an_alert_within_two_heartbeat_intervals() {
    let agg = Aggregator::start(&["--no-managed-rules"]);
    let mut victim = collector(&agg.url(), "killed-pod");
    wait_reporting(&agg, "killed-pod");
    let killed_at = now_ns();
    signal(&victim, "KILL");
    let _ = victim.wait();

    let deadline = Instant::now() + Duration::from_secs(20);
    let alert = loop {
        if let Some(a) = silenced_alerts(&agg, "killed-pod").pop() {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no silenced-collector alert after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let after = Duration::from_nanos(alert.time.saturating_sub(killed_at));
    eprintln!("silenced-collector alert {after:?} after SIGKILL");
    assert!(
        after <= Duration::from_secs(2 * INTERVAL_SECS),
        "raised {after:?} after the kill, over two heartbeat intervals"
    );
    assert_eq!(alert.pod_namespace, "silence");
    assert!(alert.output.contains("went silent"), "{}", alert.output);
    assert!(
        alert.process.is_some()
            && alert
                .evidence
                .iter()
                .any(|e| e.starts_with("last records:")),
        "the alert carries the last records it sent: {:?}",
        alert.evidence
    );
}

#[test]
fn a_stopped_collector_raises_an_alert_when_its_heartbeats_stop() {
    let agg = Aggregator::start(&["--no-managed-rules"]);
    let mut victim = collector(&agg.url(), "frozen-pod");
    wait_reporting(&agg, "frozen-pod");
    let stopped_at = now_ns();
    signal(&victim, "STOP");
    let deadline = Instant::now() + Duration::from_secs(20);
    let alert = loop {
        if let Some(a) = silenced_alerts(&agg, "frozen-pod").pop() {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no alert while the collector is stopped"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    signal(&victim, "CONT");
    let _ = victim.kill();
    let _ = victim.wait();
    let after = Duration::from_nanos(alert.time.saturating_sub(stopped_at));
    eprintln!("silenced-collector alert {after:?} after SIGSTOP");
    assert!(
        alert.output.contains("heartbeats stopped"),
        "{}",
        alert.output
    );
    // Two intervals after the last heartbeat, which came at most one interval before.
    assert!(after <= Duration::from_secs(3 * INTERVAL_SECS) + Duration::from_millis(500));
}

#[test]
fn a_collector_stopped_with_sigterm_raises_no_alert() {
    let agg = Aggregator::start(&["--no-managed-rules"]);
    let mut collector = collector(&agg.url(), "drained-pod");
    wait_reporting(&agg, "drained-pod");
    signal(&collector, "TERM");
    let status = collector.wait().expect("wait");
    assert!(status.success(), "a clean drain: {status}");
    // Its goodbye was stored...
    let goodbye = events(&agg, "heartbeat").into_iter().any(|e| {
        e.source.pod_name == "drained-pod"
            && matches!(&e.record, Record::Heartbeat(h) if h.stopping)
    });
    assert!(goodbye, "the collector said goodbye");
    // ...and nothing is raised, well past the time an alert would have come.
    std::thread::sleep(Duration::from_secs(3 * INTERVAL_SECS));
    assert!(
        silenced_alerts(&agg, "drained-pod").is_empty(),
        "a clean shutdown raised a silenced-collector alert"
    );
}
