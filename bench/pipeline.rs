//! Pipeline scenarios: synthetic domain records through the collector's real path (queue →
//! batcher → exporter → gRPC) into an aggregator process, with the store off (transport
//! alone) and on (sustained), and many concurrent collector streams with ack latency.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use procflow::aggregator::auth::jwt::testing::{key_set, pod_claims, Signer};
use procflow::model::{CollectorIdentity, Record};
use procflow::pipeline::{batcher, exporter};
use procflow::proto::v1 as pb;

use crate::{procflow_bin, Report};

pub struct Aggregator {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Aggregator {
    pub fn start(extra: &[&str]) -> anyhow::Result<Aggregator> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(procflow_bin())
            .args([
                "aggregator",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        crate::cleanup::child_started(child.id());
        let ready = Instant::now();
        let mut agg = Aggregator { child, port, dir };
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            // Exited (a bad flag, a store it cannot open), or not listening in time.
            let exited = matches!(agg.child.try_wait(), Ok(Some(_)));
            if exited || ready.elapsed() > Duration::from_secs(60) {
                agg.kill();
                anyhow::bail!("aggregator did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(agg)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no flush, no goodbye (a replica that dies).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::cleanup::child_ended(self.child.id());
    }

    /// SIGTERM (graceful: the store flushes), then waits; returns the data directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                crate::cleanup::child_ended(self.child.id());
                return self.dir;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::cleanup::child_ended(self.child.id());
        self.dir
    }
}

/// The exporter as the bench drives it: many batches in flight, no spool.
pub(crate) fn exporter_config(url: &str) -> exporter::ExporterConfig {
    exporter::ExporterConfig {
        endpoint: url.to_owned(),
        token: procflow::transport::TokenSource::None,
        tls: procflow::transport::TlsFiles::default(),
        memory_batches: 256,
        spool_dir: None,
        spool_max_bytes: 0,
        drain_timeout: Duration::from_secs(300),
    }
}

/// Drives records through the real collector path until `count` records or `duration`.
/// Returns (records sent, seconds, this process's CPU seconds).
pub(crate) fn drive(
    config: exporter::ExporterConfig,
    count: u64,
    duration: Duration,
) -> anyhow::Result<(u64, f64, f64)> {
    let template = crate::sample_flow_record();
    drive_as(
        config,
        count,
        duration,
        format!("bench-{}", procflow::model::now_ns()),
        move |n| {
            let mut record = template.clone();
            if let Record::Flow(f) = &mut record {
                f.cookie = n;
            }
            record
        },
    )
}

/// [`drive`] as collector `collector_id`, record `n` made by `record(n)`.
pub(crate) fn drive_as(
    config: exporter::ExporterConfig,
    count: u64,
    duration: Duration,
    collector_id: String,
    record: impl Fn(u64) -> Record,
) -> anyhow::Result<(u64, f64, f64)> {
    // The collector's default `--queue-capacity`; a full queue makes the sender wait.
    let (tx, rx) = procflow::pipeline::record_queue(4096);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (batches_tx, batches_rx) = tokio::sync::mpsc::channel(64);
    let identity = CollectorIdentity {
        collector_id,
        pod_name: "bench".into(),
        pod_namespace: "bench".into(),
        ..CollectorIdentity::default()
    };
    let cpu0 = crate::own_cpu_secs();
    let started = Instant::now();
    let exporter = runtime.spawn(exporter::run(config, batches_rx));
    let batcher = std::thread::spawn(move || {
        batcher::run(
            batcher::BatcherConfig {
                max_records: 2048,
                max_delay: Duration::from_millis(200),
            },
            identity,
            rx,
            batches_tx,
        )
    });
    let mut sent = 0u64;
    while sent < count && started.elapsed() < duration {
        for _ in 0..1024 {
            // Waits for room, as the collector's sources do.
            anyhow::ensure!(tx.send(record(sent)), "the record queue's consumer stopped");
            sent += 1;
        }
    }
    drop(tx);
    batcher
        .join()
        .map_err(|_| anyhow::anyhow!("batcher panicked"))?;
    runtime.block_on(exporter)??;
    let secs = started.elapsed().as_secs_f64();
    Ok((sent, secs, crate::own_cpu_secs() - cpu0))
}

/// Nanoseconds per call of `f`, the best of five rounds of `rounds` calls (the least
/// disturbed by the VM's neighbours).
fn ns_per_call(rounds: u32, mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..rounds {
                f();
            }
            started.elapsed().as_nanos() as f64 / f64::from(rounds)
        })
        .fold(f64::INFINITY, f64::min)
}

/// One flow record through the hand-written codec (`wire::direct`) and through the
/// generated structs it replaced, in the same process, one after the other.
fn codec_costs(report: &mut Report) -> anyhow::Result<()> {
    use procflow::wire::{self, direct};
    use prost::Message;
    let record = crate::sample_flow_record();
    let limits = wire::Limits::default();
    let mut scratch = direct::Scratch::default();
    let bytes = direct::encode_record(&record, &mut scratch);
    anyhow::ensure!(
        bytes == wire::record_to_proto(&record).encode_to_vec(),
        "the direct encoding differs from the generated one"
    );
    let mut out = Vec::with_capacity(512);
    let direct_encode = ns_per_call(200_000, || {
        out.clear();
        direct::put_record_field(&mut out, 4, std::hint::black_box(&record), &mut scratch);
    });
    let generated_encode = ns_per_call(200_000, || {
        out.clear();
        prost::encoding::message::encode(
            4,
            &wire::record_to_proto(std::hint::black_box(&record)),
            &mut out,
        );
    });
    let direct_decode = ns_per_call(200_000, || {
        let decoded = direct::decode_record(std::hint::black_box(&bytes), &limits);
        std::hint::black_box(decoded.is_ok());
    });
    let generated_decode = ns_per_call(200_000, || {
        let decoded = procflow::proto::v1::Record::decode(std::hint::black_box(bytes.as_slice()))
            .map(|r| wire::record_from_proto(r, &limits));
        std::hint::black_box(decoded.is_ok());
    });
    for (metric, value) in [
        ("flow record encode, direct", direct_encode),
        ("flow record encode, generated structs", generated_encode),
        ("flow record decode+validate, direct", direct_decode),
        (
            "flow record decode+validate, generated structs",
            generated_decode,
        ),
    ] {
        report.add("pipeline", metric, value, "ns", None);
    }
    Ok(())
}

/// The collector's memory while the aggregator is down: `records` (far more than the
/// memory buffer and the spool hold) through the real path with the collector's defaults
/// (64 batches in memory, a 64 MiB spool). Peak RSS is measured from a reset high-water
/// mark (`clear_refs` 5), so it is this run's alone.
fn spool_memory(report: &mut Report, records: u64) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let spool = tempfile::tempdir()?;
    // A port that was just free: connections are refused for the whole run.
    let down = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = exporter::ExporterConfig {
        memory_batches: 64,
        spool_dir: Some(spool.path().to_path_buf()),
        spool_max_bytes: 64 << 20,
        drain_timeout: Duration::from_secs(1),
        ..exporter_config(&format!("http://127.0.0.1:{down}"))
    };
    std::fs::write("/proc/self/clear_refs", "5")?;
    let before = crate::own_rss_kib() as f64;
    let dropped_before = exporter::EXPORT_STATS
        .records_dropped
        .load(Ordering::Relaxed);
    let (sent, _, _) = drive(config, records, Duration::from_secs(300))?;
    let peak = crate::peak_rss_kib_of(std::process::id()) as f64;
    let dropped = exporter::EXPORT_STATS
        .records_dropped
        .load(Ordering::Relaxed)
        - dropped_before;
    let spooled: u64 = std::fs::read_dir(spool.path())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    report.add(
        "pipeline",
        &format!(
            "aggregator down, {sent} records: collector RSS growth (64-batch buffer, 64 MiB spool)"
        ),
        (peak - before) / 1024.0,
        "MiB",
        None,
    );
    report.add(
        "pipeline",
        "aggregator down: spool on disk",
        spooled as f64 / (1 << 20) as f64,
        "MiB",
        Some(("<=64 MiB", spooled <= 64 << 20)),
    );
    report.add(
        "pipeline",
        "aggregator down: oldest records dropped and counted",
        dropped as f64,
        "records",
        None,
    );
    Ok(())
}

pub fn scenario_pipeline(
    report: &mut Report,
    transport_records: u64,
    sustain: Duration,
) -> anyhow::Result<()> {
    codec_costs(report)?;
    spool_memory(report, transport_records.min(1_500_000))?;
    scenario_transport(report, transport_records)?;
    sustained(report, sustain)
}

/// Transport alone: nothing stored, no rules.
pub fn scenario_transport(report: &mut Report, transport_records: u64) -> anyhow::Result<()> {
    crate::machine_speed(report, "before the transport run");
    let agg = Aggregator::start(&["--store", "none", "--no-detection"])?;
    let (n, secs, cpu) = drive(
        exporter_config(&agg.url()),
        transport_records,
        Duration::from_secs(600),
    )?;
    let agg_cpu = crate::cpu_secs_of(agg.pid());
    let _ = agg.stop();
    let rate = n as f64 / secs;
    report.add(
        "pipeline",
        "transport alone (queue->batch->encode->gRPC->decode)",
        rate,
        "rec/s",
        Some((">=1M/s", rate >= 1_000_000.0)),
    );
    report.add(
        "pipeline",
        "collector-side CPU per record (queue+batch+encode+send)",
        cpu * 1e9 / n as f64,
        "ns",
        None,
    );
    report.add(
        "pipeline",
        "aggregator CPU per record (decode+validate+ack)",
        agg_cpu * 1e9 / n as f64,
        "ns",
        None,
    );
    Ok(())
}

fn sustained(report: &mut Report, sustain: Duration) -> anyhow::Result<()> {
    // Sustained into SQLite with the managed rules evaluating every record.
    let metrics_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let agg = Aggregator::start(&["--metrics-listen", &metrics_listen])?;
    let (n, secs, _) = drive(exporter_config(&agg.url()), u64::MAX, sustain)?;
    let rss = crate::peak_rss_kib_of(agg.pid()) as f64 / 1024.0;
    // Detection runs behind the store: wait (bounded) for its backlog, then say how much of
    // what was stored the rules evaluated.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (evaluated, dropped) = loop {
        let scrape = scrape_metrics(metrics_port).unwrap_or_default();
        let value = |name: &str| {
            scrape
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let (evaluated, dropped) = (
            value("procflow_rules_evaluated_total"),
            value("procflow_detect_dropped_total"),
        );
        if evaluated + dropped >= n as f64 || Instant::now() > deadline {
            break (evaluated, dropped);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let dir = agg.stop();
    let db = dir.path().join("procflow.db");
    let stored: i64 = rusqlite::Connection::open(&db)?.query_row(
        "SELECT COALESCE(SUM(count), 0) FROM segments WHERE kind = 'flow'",
        [],
        |r| r.get(0),
    )?;
    let rate = n as f64 / secs;
    report.add(
        "pipeline",
        &format!("into SQLite + rules, sustained {}s", sustain.as_secs()),
        rate,
        "rec/s",
        Some((">=250k/s", rate >= 250_000.0)),
    );
    report.add(
        "pipeline",
        "records stored / sent (must be 1)",
        stored as f64 / n as f64,
        "ratio",
        Some(("==1", stored as u64 == n)),
    );
    report.add("pipeline", "aggregator peak RSS", rss, "MiB", None);
    report.add(
        "pipeline",
        "records evaluated by the rules / stored",
        evaluated / n as f64,
        "ratio",
        None,
    );
    report.add(
        "pipeline",
        "records stored but not evaluated (detection backlog full)",
        dropped,
        "records",
        None,
    );
    Ok(())
}

/// The aggregator's Prometheus text, by a plain HTTP/1.0 GET.
pub(crate) fn scrape_metrics(port: u16) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// `streams` concurrent collector streams, each sending `batches` batches of `per_batch`
/// records and waiting for each ack: every record stored once, p99 ack latency.
///
/// With `identities`, every stream is a pod of its own presenting a projected service-account
/// token (ES256, signed by a bench issuer whose key set the aggregator reads from a file):
/// the aggregator verifies each token and checks each batch against it, as on EKS.
/// Without, the streams are unidentified loopback writers (`make run`) and share this host's
/// admission bound on streams.
pub fn scenario_streams(
    report: &mut Report,
    streams: usize,
    batches: u64,
    per_batch: u64,
    identities: bool,
) -> anyhow::Result<f64> {
    let streams_allowed = streams.to_string();
    let issuer = identities.then(BenchIssuer::new).transpose()?;
    let mut args = vec![
        "--no-detection",
        "--max-ingest-streams-per-identity",
        &streams_allowed,
    ];
    let jwks;
    if let Some(issuer) = &issuer {
        jwks = issuer.jwks.to_string_lossy().into_owned();
        args.extend(["--sa-token-issuer", BENCH_ISSUER, "--sa-token-jwks", &jwks]);
    }
    let agg = Aggregator::start(&args)?;
    let url = agg.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let flow = procflow::wire::record_to_proto(&crate::sample_flow_record());
    // Signed before the clock starts: signing is the cluster's work, not the aggregator's.
    let mut tokens: Vec<Option<String>> = (0..streams)
        .map(|s| issuer.as_ref().map(|i| i.token(&pod_name(s))))
        .collect();
    let started = Instant::now();
    let latencies = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (s, token) in tokens.drain(..).enumerate() {
            let (url, flow) = (url.clone(), flow.clone());
            tasks.spawn(async move { one_stream(url, s, token, batches, per_batch, flow).await });
        }
        let mut all = Vec::new();
        while let Some(done) = tasks.join_next().await {
            all.extend(done??);
        }
        anyhow::Ok(all)
    })?;
    let secs = started.elapsed().as_secs_f64();
    let dir = agg.stop();
    let db = dir.path().join("procflow.db");
    let conn = rusqlite::Connection::open(&db)?;
    let stored: i64 = conn.query_row(
        // A verified writer's collector id is prefixed with its pod's uid.
        "SELECT COALESCE(SUM(count), 0) FROM segments WHERE collector LIKE '%stream-%'",
        [],
        |r| r.get(0),
    )?;
    let expected = streams as u64 * batches * per_batch;
    let mut sorted = latencies;
    sorted.sort_unstable();
    let p = |q: f64| {
        sorted
            .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let scenario = if identities {
        format!("streams {streams}, projected tokens")
    } else {
        format!("streams {streams}")
    };
    let throughput = expected as f64 / secs;
    report.add(
        &scenario,
        "records stored / sent (each exactly once)",
        stored as f64 / expected as f64,
        "ratio",
        Some(("==1", stored as u64 == expected)),
    );
    report.add(&scenario, "throughput", throughput, "rec/s", None);
    report.add(
        &scenario,
        "ack latency p50",
        p(0.5).as_secs_f64() * 1e3,
        "ms",
        None,
    );
    report.add(
        &scenario,
        "ack latency p99",
        p(0.99).as_secs_f64() * 1e3,
        "ms",
        None,
    );
    Ok(throughput)
}

async fn one_stream(
    url: String,
    index: usize,
    token: Option<String>,
    batches: u64,
    per_batch: u64,
    flow: pb::Record,
) -> anyhow::Result<Vec<Duration>> {
    let identity = procflow::wire::identity_to_proto(&CollectorIdentity {
        collector_id: format!("stream-{index}"),
        pod_name: pod_name(index),
        pod_namespace: BENCH_NAMESPACE.into(),
        ..CollectorIdentity::default()
    });
    let mut latencies = Vec::with_capacity(batches as usize);
    let mut next = 1u64;
    let mut attempt = 0u64;
    // A thousand collectors connecting in the same moment can be refused or reset; like the
    // real exporter, reconnect with a growing delay and resend from the first unacknowledged
    // batch (the aggregator deduplicates, so nothing is stored twice).
    while next <= batches {
        let result: anyhow::Result<()> = async {
            let mut client = pb::ingest_client::IngestClient::connect(url.clone()).await?;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            if let Some(token) = &token {
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse()?);
            }
            let mut acks = client.stream(request).await?.into_inner();
            while next <= batches {
                let batch = pb::Batch {
                    identity: Some(identity.clone()),
                    seq: next,
                    sent_at: 0,
                    records: vec![flow.clone(); per_batch as usize],
                };
                let sent = Instant::now();
                tx.send(batch).await?;
                let ack = acks
                    .message()
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("stream {index} closed before ack {next}"))?;
                anyhow::ensure!(
                    ack.seq == next && !ack.rejected,
                    "stream {index}: bad ack {ack:?}"
                );
                latencies.push(sent.elapsed());
                next += 1;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            attempt += 1;
            anyhow::ensure!(attempt <= 10, "stream {index}: {e:#}");
            tokio::time::sleep(Duration::from_millis(50 * attempt + (index % 50) as u64)).await;
        }
    }
    Ok(latencies)
}

const BENCH_ISSUER: &str = "https://oidc.eks.bench.invalid/id/PROCFLOWBENCH";
const BENCH_NAMESPACE: &str = "bench";

fn pod_name(index: usize) -> String {
    format!("pod-{index}")
}

/// The cluster issuer the identity streams' tokens come from: a P-256 key and its key set.
struct BenchIssuer {
    signer: Signer,
    jwks: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl BenchIssuer {
    fn new() -> anyhow::Result<BenchIssuer> {
        let dir = tempfile::tempdir()?;
        let signer = Signer::es256("bench-1");
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, key_set(&[&signer]))?;
        Ok(BenchIssuer {
            signer,
            jwks,
            _dir: dir,
        })
    }

    /// A projected token for `pod`, valid for an hour.
    fn token(&self, pod: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.signer.sign(&pod_claims(
            BENCH_ISSUER,
            "procflow",
            BENCH_NAMESPACE,
            pod,
            &format!("uid-{pod}"),
            now,
            3600,
        ))
    }
}
