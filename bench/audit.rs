//! Kubernetes audit logs, as a user runs them: a release aggregator process with its audit
//! endpoint and the managed rules (audit rules included) on, fed over real HTTP.
//!
//! - ingest: the API server's webhook batches (400 events, its default batch size) of a
//!   mixed log (reads by service accounts and nodes, controller updates, creates, and a few
//!   percent that the audit rules fire on), from four clients; events/s until every event
//!   was answered stored, and until detection had evaluated them all (none dropped).
//! - correlation: several pods (a collector stream each), several users; exec requests and
//!   the process trees they start sent in both orders, the same command in every pod at
//!   once by a different user each, decoy requests for pods nobody reports and decoy trees
//!   no request started. The time from both sides having arrived (answered, acknowledged)
//!   to the joined record on a live subscription, and every join checked against the truth.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use procflow::audit::client::AuditClient;
use procflow::audit::event::format_time;
use procflow::model::{now_ns, CollectorIdentity, Record};
use procflow::proto::v1 as pb;

use crate::console::process;
use crate::pipeline::Aggregator;
use crate::Report;

const TOKEN: &str = "bench-webhook-token-0123456789";
/// kube-apiserver's --audit-webhook-batch-max-size default.
const BATCH: usize = 400;
const CLIENTS: usize = 4;
const PODS: usize = 6;
const USERS: [&str; 4] = ["alice@corp", "bob@corp", "carol@corp", "dave@corp"];

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// An aggregator with the audit endpoint (cluster "bench") and metrics on ports of its own.
struct AuditAggregator {
    agg: Aggregator,
    audit: String,
    metrics: u16,
    _secrets: tempfile::TempDir,
}

impl AuditAggregator {
    fn start() -> anyhow::Result<AuditAggregator> {
        let secrets = tempfile::tempdir()?;
        let token = secrets.path().join("token");
        std::fs::write(&token, TOKEN)?;
        let clusters = secrets.path().join("clusters.toml");
        std::fs::write(
            &clusters,
            format!("[clusters.bench]\nwebhook_token_file = {token:?}\n"),
        )?;
        let (audit, metrics) = (free_port()?, free_port()?);
        let audit_listen = format!("127.0.0.1:{audit}");
        let metrics_listen = format!("127.0.0.1:{metrics}");
        let clusters = clusters.to_string_lossy().into_owned();
        let agg = Aggregator::start(&[
            "--audit-listen",
            &audit_listen,
            "--audit-clusters",
            &clusters,
            "--metrics-listen",
            &metrics_listen,
        ])?;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", audit)).is_err() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(20),
                "the audit endpoint did not open"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(AuditAggregator {
            agg,
            audit: format!("http://{audit_listen}"),
            metrics,
            _secrets: secrets,
        })
    }

    fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = crate::pipeline::scrape_metrics(self.metrics)?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |sum, v| sum + v))
    }
}

async fn post(client: &mut AuditClient, body: Vec<u8>) -> anyhow::Result<usize> {
    let auth = format!("Bearer {TOKEN}");
    let (status, answer) = client
        .post("/audit/webhook/bench", &[("authorization", &auth)], body)
        .await?;
    anyhow::ensure!(
        status.is_success(),
        "webhook answered {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    Ok(answer["stored"].as_u64().unwrap_or_default() as usize)
}

fn event_list(items: &[String]) -> Vec<u8> {
    format!(
        "{{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\"metadata\":{{}},\"items\":[{}]}}",
        items.join(",")
    )
    .into_bytes()
}

/// Event `i` of the mixed log: 95 % routine, 5 % for the audit rules.
fn mixed_event(run: u64, i: u64, at: u64) -> String {
    let (user, verb, resource, ns, name, code) = match i % 100 {
        0..=39 => (
            "system:serviceaccount:shop:web",
            "get",
            "configmaps",
            "shop",
            "web-config",
            200,
        ),
        40..=59 => (
            "system:node:ip-10-0-1-7.ec2.internal",
            "list",
            "pods",
            "shop",
            "",
            200,
        ),
        60..=84 => (
            "system:kube-controller-manager",
            "update",
            "leases",
            "kube-system",
            "kube-controller-manager",
            200,
        ),
        85..=94 => (
            "system:serviceaccount:kube-system:replicaset-controller",
            "create",
            "pods",
            "shop",
            "web-7c9f8d6b5-x2k4q",
            201,
        ),
        95 | 96 => ("alice@corp", "get", "secrets", "shop", "db-password", 200),
        97 => (
            "alice@corp",
            "create",
            "pods/exec",
            "shop",
            "web-7c9f8d6b5-x2k4q",
            101,
        ),
        98 => ("bob@corp", "delete", "secrets", "shop", "db-password", 403),
        _ => ("system:anonymous", "get", "pods", "shop", "", 200),
    };
    let (resource, sub) = resource
        .split_once('/')
        .map_or((resource, None), |(r, s)| (r, Some(s)));
    let mut object = serde_json::json!({"resource": resource, "namespace": ns, "apiVersion": "v1"});
    if !name.is_empty() {
        object["name"] = name.into();
    }
    if let Some(sub) = sub {
        object["subresource"] = sub.into();
    }
    let mut event = serde_json::json!({
        "level": "Metadata",
        "auditID": format!("{run:08x}-0000-4000-8000-{i:012x}"),
        "stage": "ResponseComplete",
        "requestURI": format!("/api/v1/namespaces/{ns}/{resource}"),
        "verb": verb,
        "user": {"username": user, "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.1.7"],
        "userAgent": "kube-controller-manager/v1.31.0 (linux/amd64) kubernetes/9edcffc",
        "objectRef": object,
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": format_time(at),
        "stageTimestamp": format_time(at + 2_000_000),
        "annotations": {"authorization.k8s.io/decision": if code == 403 { "forbid" } else { "allow" }},
    });
    if resource == "pods" && verb == "create" && sub.is_none() {
        event["level"] = "RequestResponse".into();
        event["requestObject"] = serde_json::json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "app", "image": "registry.example/web:1.4.2",
                "securityContext": {"privileged": i % 1000 == 85}}]},
        });
    }
    event.to_string()
}

fn ingest(report: &mut Report, events: u64) -> anyhow::Result<()> {
    let agg = AuditAggregator::start()?;
    let run = now_ns() & 0xffff_ffff;
    let now = now_ns();
    // The bodies are made before the clock starts: the API server has them ready too.
    let bodies: Vec<Vec<u8>> = (0..events)
        .collect::<Vec<u64>>()
        .chunks(BATCH)
        .map(|chunk| {
            let items: Vec<String> = chunk
                .iter()
                .map(|&i| mixed_event(run, i, now - (events - i) * 10_000))
                .collect();
            event_list(&items)
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let stored = runtime.block_on(async {
        let mut per_client: Vec<Vec<Vec<u8>>> = vec![Vec::new(); CLIENTS];
        for (i, body) in bodies.into_iter().enumerate() {
            per_client[i % CLIENTS].push(body);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for bodies in per_client {
            let endpoint = agg.audit.clone();
            tasks.spawn(async move {
                let mut client = AuditClient::new(&endpoint, None)?;
                let mut stored = 0;
                for body in bodies {
                    stored += post(&mut client, body).await?;
                }
                anyhow::Ok(stored)
            });
        }
        let mut stored = 0;
        while let Some(done) = tasks.join_next().await {
            stored += done??;
        }
        anyhow::Ok(stored)
    })?;
    let answered = started.elapsed().as_secs_f64();
    // Detection runs behind the answer: the figure that counts is when it has caught up.
    let deadline = Instant::now() + Duration::from_secs(600);
    let evaluated = loop {
        let evaluated = agg.metric(procflow::telemetry::aggregator::RULES_EVALUATED)?;
        if evaluated >= events as f64 || Instant::now() > deadline {
            break evaluated;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let caught_up = started.elapsed().as_secs_f64();
    let dropped = agg.metric(procflow::telemetry::aggregator::DETECT_DROPPED)?;
    let alerts = agg.metric(procflow::telemetry::aggregator::ALERTS_RAISED)?;
    drop(agg.agg.stop());
    let scenario = format!("audit ingest {events}");
    report.add(
        &scenario,
        "events stored / sent (each once)",
        stored as f64 / events as f64,
        "ratio",
        Some(("==1", stored as u64 == events)),
    );
    report.add(
        &scenario,
        "webhook ingest, answered stored",
        events as f64 / answered,
        "events/s",
        None,
    );
    let rate = events as f64 / caught_up;
    report.add(
        &scenario,
        "webhook ingest, rules evaluated (managed audit rules on)",
        rate,
        "events/s",
        Some((">=20000", rate >= 20_000.0 && evaluated >= events as f64)),
    );
    report.add(
        &scenario,
        "events dropped by detection",
        dropped,
        "events",
        Some(("==0", dropped == 0.0)),
    );
    report.add(
        &scenario,
        "alerts raised (one per rule group_by key)",
        alerts,
        "alerts",
        None,
    );
    Ok(())
}

// === Correlation ===

/// One exec of the workload as the truth knows it.
struct Exec {
    pod: usize,
    pid: u32,
    user: &'static str,
    command: Vec<String>,
    /// When the later of its two sides was answered.
    both: Instant,
}

fn exec_event(run: u64, k: usize, pod: &str, user: &str, command: &[String], at: u64) -> String {
    let query: Vec<String> = command
        .iter()
        .map(|c| format!("command={}", c.replace(' ', "+")))
        .collect();
    serde_json::json!({
        "level": "Metadata",
        "auditID": format!("{run:08x}-1111-4000-8000-{k:012x}"),
        "stage": "ResponseStarted",
        "requestURI": format!("/api/v1/namespaces/bench/pods/{pod}/exec?{}&container=app&stdin=true&stdout=true&tty=true", query.join("&")),
        "verb": "create",
        "user": {"username": user, "groups": ["devs", "system:authenticated"]},
        "sourceIPs": [format!("198.51.100.{}", 10 + user.len())],
        "userAgent": "kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc",
        "objectRef": {"resource": "pods", "namespace": "bench", "name": pod, "apiVersion": "v1", "subresource": "exec"},
        "responseStatus": {"metadata": {}, "code": 101},
        "requestReceivedTimestamp": format_time(at),
        "stageTimestamp": format_time(at + 30_000_000),
    })
    .to_string()
}

fn pod_name(p: usize) -> String {
    format!("shop-{p}")
}

/// A collector stream of one pod: sends a batch and waits for its ack.
struct PodStream {
    tx: tokio::sync::mpsc::Sender<pb::Batch>,
    acks: tonic::Streaming<pb::Ack>,
    identity: pb::CollectorIdentity,
    seq: u64,
}

impl PodStream {
    async fn open(url: &str, p: usize) -> anyhow::Result<PodStream> {
        let mut client = pb::ingest_client::IngestClient::connect(url.to_owned()).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let acks = client
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let identity = procflow::wire::identity_to_proto(&CollectorIdentity {
            collector_id: format!("bench-audit-{p}"),
            pod_name: pod_name(p),
            pod_namespace: "bench".into(),
            ..CollectorIdentity::default()
        });
        Ok(PodStream {
            tx,
            acks,
            identity,
            seq: 0,
        })
    }

    async fn send(&mut self, record: Record) -> anyhow::Result<()> {
        self.seq += 1;
        self.tx
            .send(pb::Batch {
                identity: Some(self.identity.clone()),
                seq: self.seq,
                sent_at: now_ns(),
                records: vec![procflow::wire::record_to_proto(&record)],
            })
            .await?;
        let ack = self.acks.message().await?.context("stream closed")?;
        anyhow::ensure!(ack.seq == self.seq && !ack.rejected, "bad ack {ack:?}");
        Ok(())
    }
}

/// Joined records as they arrive on a live subscription: (arrival, pod, pid, user, command).
type Seen = (Instant, String, u32, String, Vec<String>);

fn subscribe(url: String) -> mpsc::Receiver<Seen> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let Ok(mut client) = pb::subscribe_client::SubscribeClient::connect(url).await else {
                return;
            };
            let request = pb::SubscribeRequest {
                filter: Some(pb::Filter {
                    kinds: vec![pb::RecordKind::Alert as i32],
                    ..pb::Filter::default()
                }),
            };
            let Ok(stream) = client.subscribe(request).await else {
                return;
            };
            let mut stream = stream.into_inner();
            let limits = procflow::wire::Limits::default();
            while let Ok(Some(item)) = stream.message().await {
                let Some(pb::subscribe_item::Item::Event(e)) = item.item else {
                    continue;
                };
                let Ok(event) = procflow::wire::event_from_proto(e, &limits) else {
                    continue;
                };
                let Record::Alert(alert) = event.record else {
                    continue;
                };
                if alert.rule_id != procflow::audit::correlate::JOINED {
                    continue;
                }
                let (Some(process), Some(exec)) = (alert.process, alert.exec) else {
                    continue;
                };
                let seen = (
                    Instant::now(),
                    alert.pod_name,
                    process.pid,
                    exec.user,
                    exec.command,
                );
                if tx.send(seen).is_err() {
                    return;
                }
            }
        });
    });
    rx
}

fn correlation(report: &mut Report, execs: usize) -> anyhow::Result<()> {
    let agg = AuditAggregator::start()?;
    let joined = subscribe(agg.agg.url());
    std::thread::sleep(Duration::from_millis(300)); // the subscription is open
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let run = now_ns() & 0xffff_ffff;
    let truth: Vec<Exec> = runtime.block_on(async {
        let mut streams = Vec::new();
        for p in 0..PODS {
            streams.push(PodStream::open(&agg.agg.url(), p).await?);
        }
        let mut client = AuditClient::new(&agg.audit, None)?;
        let mut truth = Vec::new();
        for k in 0..execs {
            let p = k % PODS;
            let round = k / PODS;
            // The same command in every pod within a round, a different person in each.
            let user = USERS[(p + round) % USERS.len()];
            let command: Vec<String> = vec!["sh".into(), "-i".into(), format!("job-{round}")];
            let at = now_ns();
            let pid = 1000 + k as u32;
            let argv: Vec<&str> = command.iter().map(String::as_str).collect();
            let mut root = process(pid, at + 25_000_000, 0, "sh", &argv);
            root.parent_start_time = None;
            let audit = event_list(&[exec_event(run, k, &pod_name(p), user, &command, at)]);
            // Both arrival orders, alternately.
            if k % 2 == 0 {
                post(&mut client, audit).await?;
                streams[p].send(Record::Process(root)).await?;
            } else {
                streams[p].send(Record::Process(root)).await?;
                post(&mut client, audit).await?;
            }
            truth.push(Exec {
                pod: p,
                pid,
                user,
                command,
                both: Instant::now(),
            });
            if k % 5 == 0 {
                // Decoys: the same command for a pod no collector reports, and a tree in
                // this pod that no request started.
                let ghost = exec_event(
                    run,
                    execs + k,
                    &format!("ghost-{k}"),
                    "mallory@corp",
                    &truth[k].command,
                    at,
                );
                post(&mut client, event_list(&[ghost])).await?;
                let lone = process(
                    50_000 + k as u32,
                    at + 30_000_000,
                    0,
                    "sh",
                    &["sh", "-i", "decoy"],
                );
                streams[p].send(Record::Process(lone)).await?;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        anyhow::Ok(truth)
    })?;
    let expected: HashMap<(String, u32), &Exec> = truth
        .iter()
        .map(|e| ((pod_name(e.pod), e.pid), e))
        .collect();
    let mut latencies = Vec::new();
    let mut wrong = 0u64;
    let mut found = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while found.len() < truth.len() && Instant::now() < deadline {
        let Ok((at, pod, pid, user, command)) = joined.recv_timeout(Duration::from_millis(200))
        else {
            continue;
        };
        match expected.get(&(pod.clone(), pid)) {
            Some(e) if e.user == user && e.command == command => {
                if found.insert((pod, pid)) {
                    latencies.push(at.saturating_duration_since(e.both));
                }
            }
            _ => wrong += 1,
        }
    }
    // Late wrong joins would still count: a last look.
    while let Ok((_, pod, pid, user, _)) = joined.recv_timeout(Duration::from_millis(500)) {
        if expected.get(&(pod, pid)).is_none_or(|e| e.user != user) {
            wrong += 1;
        }
    }
    drop(agg.agg.stop());
    latencies.sort_unstable();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    let scenario = format!("audit join {execs}");
    report.add(
        &scenario,
        "execs joined / execs (both orders)",
        found.len() as f64 / truth.len() as f64,
        "ratio",
        Some(("==1", found.len() == truth.len())),
    );
    report.add(
        &scenario,
        "wrong joins",
        wrong as f64,
        "joins",
        Some(("==0", wrong == 0)),
    );
    report.add(
        &scenario,
        "join latency after both sides arrived p50",
        pct(0.5),
        "ms",
        None,
    );
    let p99 = pct(0.99);
    report.add(
        &scenario,
        "join latency after both sides arrived p99",
        p99,
        "ms",
        Some(("<=2000", p99 <= 2000.0)),
    );
    let max = latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    report.add(
        &scenario,
        "join latency after both sides arrived max",
        max,
        "ms",
        Some(("<=2000", max <= 2000.0)),
    );
    Ok(())
}

pub fn scenario_audit(report: &mut Report, events: u64, execs: usize) -> anyhow::Result<()> {
    ingest(report, events).context("audit ingest")?;
    correlation(report, execs).context("audit join")
}
