//! Detection in the running aggregator: a real collector streams this host to it; alerts are
//! stored and queryable, streamed to a live subscriber, POSTed to a webhook (Falco format,
//! with a retry after a failure), and a broken rule file does not stop detection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use procflow::model::{Event, Record};

use crate::pipeline::Aggregator;
use crate::util::{grpc_collector, procflow_bin};

/// A webhook that fails its first request with 500, then records bodies and answers 204.
fn webhook() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { break };
            conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let status = if i == 0 {
                "500 Internal Server Error"
            } else {
                "204 No Content"
            };
            let _ = conn
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
            if i > 0
                && tx
                    .send(String::from_utf8_lossy(&body).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    (port, rx)
}

const MARKER_RULE: &str = "rules:\n- id: SITE-MARKER\n  name: Marker process\n  severity: critical\n  tags: [T0000]\n  kinds: [process]\n  condition: proc.comm == \"pf-e2e-marker\" and proc.phase != \"EXIT\"\n  output: 'marker pid={proc.pid}'\n  group_by: [proc.pid]\n";

#[test]
fn alerts_are_stored_streamed_and_delivered_and_survive_a_bad_reload() {
    let rules = tempfile::tempdir().expect("rules dir");
    std::fs::write(rules.path().join("site.yaml"), MARKER_RULE).expect("rule file");
    let (hook_port, bodies) = webhook();
    let hook = format!("http://127.0.0.1:{hook_port}/");
    let rules_dir = rules.path().to_str().expect("path");
    let agg = Aggregator::start(&[
        "--rules",
        rules_dir,
        "--alert-webhook",
        &hook,
        "--alert-webhook-format",
        "falco",
    ]);
    let mut tail = Command::new(procflow_bin())
        .args([
            "tail",
            "--aggregator",
            &agg.url(),
            "--json",
            "--kind",
            "alert",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tail");
    let (line_tx, lines) = mpsc::channel::<String>();
    let tail_out = tail.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(tail_out).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut collector = grpc_collector(&agg.url(), "shop-7c9f8d6b5-x2k4q", "e2e", 20);
    std::thread::sleep(Duration::from_millis(1500));

    let work = tempfile::tempdir().expect("work dir");
    let marker = work.path().join("pf-e2e-marker");
    crate::util::copy_executable("/usr/bin/sleep", &marker);
    let started = Instant::now();
    let mut first = Command::new(&marker).arg("30").spawn().expect("marker");
    let alert = wait_for_alert(&lines, first.id(), Duration::from_secs(10))
        .expect("the marker's alert reached the live subscriber");
    eprintln!(
        "alert latency (spawn → subscriber): {:?}",
        started.elapsed()
    );
    assert_eq!(alert.rule_id, "SITE-MARKER");
    let process = alert
        .process
        .as_ref()
        .expect("the alert carries the process");
    assert!(!process.ancestors.is_empty(), "with its lineage");
    assert!(alert.evidence.iter().any(|e| e.starts_with("lineage:")));
    assert_eq!(
        (alert.pod_name.as_str(), alert.pod_namespace.as_str()),
        ("shop-7c9f8d6b5-x2k4q", "e2e")
    );

    // Delivered to the webhook in Falco's shape, after the first attempt failed.
    let falco: serde_json::Value = serde_json::from_str(
        &recv_matching(&bodies, "Marker process", Duration::from_secs(10)).expect("webhook body"),
    )
    .expect("falco JSON");
    assert_eq!(falco["priority"], "Critical");
    assert_eq!(falco["source"], "procflow");
    assert_eq!(falco["output_fields"]["proc.pid"], first.id());

    // A broken rule file: the reload fails, the previous set keeps running.
    std::fs::write(rules.path().join("broken.yaml"), "rules:\n- id: B\n  name: b\n  severity: low\n  kinds: [process]\n  condition: proc.comm ==\n  output: x\n").expect("broken");
    std::thread::sleep(Duration::from_secs(3));
    let mut second = Command::new(&marker).arg("30").spawn().expect("marker 2");
    assert!(
        wait_for_alert(&lines, second.id(), Duration::from_secs(10)).is_some(),
        "detection continues with the last good rule set"
    );

    // Stored and queryable like any record.
    std::thread::sleep(Duration::from_millis(500));
    let stored = agg.query("alert");
    let pids: Vec<u32> = stored
        .iter()
        .filter_map(|e| match &e.record {
            Record::Alert(a) if a.rule_id == "SITE-MARKER" => a.process.as_ref().map(|p| p.pid),
            _ => None,
        })
        .collect();
    assert!(
        pids.contains(&first.id()) && pids.contains(&second.id()),
        "{pids:?}"
    );
    for c in [&mut first, &mut second, &mut collector, &mut tail] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn wait_for_alert(
    lines: &mpsc::Receiver<String>,
    pid: u32,
    within: Duration,
) -> Option<procflow::model::AlertRecord> {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let line = lines.recv_timeout(left).ok()?;
        let Ok(event) = serde_json::from_str::<Event>(&line) else {
            continue;
        };
        if let Record::Alert(a) = event.record {
            if a.rule_id == "SITE-MARKER" && a.process.as_ref().is_some_and(|p| p.pid == pid) {
                return Some(a);
            }
        }
    }
    None
}

fn recv_matching(rx: &mpsc::Receiver<String>, needle: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let body = rx.recv_timeout(left).ok()?;
        if body.contains(needle) {
            return Some(body);
        }
    }
    None
}
