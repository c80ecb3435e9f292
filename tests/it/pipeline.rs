//! The pipeline over real gRPC connections to a real aggregator process with a real SQLite
//! store: exactly-once storage across an aggregator crash, the spool carrying data across a
//! long outage, counted drops when the spool is full, slow subscribers, and bad clients.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use procflow::codec::EncodedBatch;
use procflow::model::{CollectorIdentity, Heartbeat, Record};
use procflow::pipeline::exporter::{self, ExporterConfig, EXPORT_STATS};
use procflow::proto::v1 as pb;
use procflow::wire;

use crate::util::procflow_bin;

/// An aggregator process on a fixed port of its own, restartable on the same data dir.
pub struct Aggregator {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
    /// Launches so far: each says once in the (appended) log that it serves.
    launches: usize,
}

impl Aggregator {
    pub fn start(extra: &[&str]) -> Aggregator {
        let [port] = free_ports::<1>();
        Aggregator::start_on(port, extra)
    }

    pub fn start_on(port: u16, extra: &[&str]) -> Aggregator {
        let mut a = Aggregator::launch_on(port, extra);
        a.wait_listening(Duration::from_secs(20));
        a
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        self.launch();
        self.wait_listening(Duration::from_secs(20));
    }

    /// An aggregator that may not listen yet (it waits for its database), on `port`.
    pub fn launch_on(port: u16, extra: &[&str]) -> Aggregator {
        let mut a = Aggregator {
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            launches: 0,
        };
        a.launch();
        a
    }

    /// Whether it accepts connections.
    pub fn is_listening(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    /// Waits up to `wait` for it to accept connections: its own listener, said in its log,
    /// not whatever else answers on the port (a port can be taken between being chosen and
    /// bound; a test would then talk to a stranger and fail far from the cause).
    pub fn wait_listening(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        let serving = format!("aggregator serving listen=127.0.0.1:{}", self.port);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "aggregator on port {} exited ({status}) before serving:\n{}",
                    self.port,
                    self.log()
                );
            }
            if self.log().matches(&serving).count() >= self.launches && self.is_listening() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "aggregator on port {} did not start:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn launch(&mut self) {
        let child = Command::new(procflow_bin())
            .args([
                "aggregator",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--data-dir",
            ])
            .arg(self.dir.path())
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(self.log_file())
            .spawn()
            .expect("start aggregator");
        self.child = Some(child);
        self.launches += 1;
    }

    /// Where its log goes (appended across restarts), beside its data.
    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("aggregator.log"))
            .expect("aggregator log")
    }

    /// Everything it has logged, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("aggregator.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether the process is still alive (not exited, not killed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, and waits for it to exit (it saves its state and closes the store).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// SIGKILL: no graceful shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn query(&self, kind: &str) -> Vec<procflow::model::Event> {
        self.query_since(kind, "1h")
    }

    /// Stored events of `kind` of the last `since` (e.g. `3650d`).
    pub fn query_since(&self, kind: &str, since: &str) -> Vec<procflow::model::Event> {
        let out = Command::new(procflow_bin())
            .args([
                "query",
                "--aggregator",
                &self.url(),
                "--json",
                "--since",
                since,
                "--limit",
                "100000",
                "--kind",
                kind,
            ])
            .output()
            .expect("query");
        assert!(
            out.status.success(),
            "query failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("event JSON"))
            .collect()
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// N distinct ports, free when chosen, that nothing else on this host is handed meanwhile.
///
/// They come from below the ephemeral range: a port of that range, released here before the
/// aggregator binds it, can meanwhile become a neighbour test's `bind(0)` listener or the source
/// port of one of its connections (a test opening a thousand streams takes a thousand), and the
/// aggregator then fails to bind while the test talks to whatever holds the port. Distinct
/// within this process by a counter; apart from other test processes by a start drawn from
/// the pid; free when chosen by a bind.
pub fn free_ports<const N: usize>() -> [u16; N] {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, span) = ports_below_ephemeral();
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    let mut ports = [0u16; N];
    for p in &mut ports {
        *p = (0..span)
            .map(|_| low + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span)
            .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok())
            .expect("a free port below the ephemeral range") as u16;
    }
    ports
}

/// The ports below the host's ephemeral range (`ip_local_port_range`) this suite draws from:
/// up to 12,000 of them, none under 10,000.
fn ports_below_ephemeral() -> (u32, u32) {
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let low = ephemeral_low.saturating_sub(12_000).max(10_000);
    assert!(
        ephemeral_low > low + 1_000,
        "the ephemeral range starts at {ephemeral_low}: too few ports below it for the tests"
    );
    (low, ephemeral_low - low)
}

pub(crate) fn identity(id: &str) -> CollectorIdentity {
    CollectorIdentity {
        collector_id: id.into(),
        pod_name: "pod-a".into(),
        pod_namespace: "ns-a".into(),
        ..CollectorIdentity::default()
    }
}

/// A batch of heartbeats whose `time` fields number the records uniquely.
pub fn batch(id: &CollectorIdentity, seq: u64, first: u64, count: u64) -> pb::Batch {
    pb::Batch {
        identity: Some(wire::identity_to_proto(id)),
        seq,
        sent_at: 0,
        records: (first..first + count)
            .map(|t| {
                wire::record_to_proto(&Record::Heartbeat(Heartbeat {
                    time: t,
                    ..Heartbeat::default()
                }))
            })
            .collect(),
    }
}

pub fn exporter_config(
    url: String,
    spool: Option<std::path::PathBuf>,
    memory: usize,
    spool_max: u64,
) -> ExporterConfig {
    ExporterConfig {
        endpoint: url,
        token: procflow::transport::TokenSource::None,
        tls: procflow::transport::TlsFiles::default(),
        memory_batches: memory,
        spool_dir: spool,
        spool_max_bytes: spool_max,
        drain_timeout: Duration::from_secs(20),
    }
}

pub fn times_of(events: &[procflow::model::Event], collector: &str) -> Vec<u64> {
    let mut times: Vec<u64> = events
        .iter()
        .filter(|e| e.source.collector_id == collector)
        .filter_map(|e| match &e.record {
            Record::Heartbeat(h) => Some(h.time),
            _ => None,
        })
        .collect();
    times.sort_unstable();
    times
}

#[test]
fn aggregator_crash_mid_stream_stores_every_record_exactly_once() {
    let mut agg = Aggregator::start(&[]);
    let id = identity("crash-test");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let exporter = runtime.spawn(exporter::run(
        exporter_config(agg.url(), None, 100_000, 0),
        rx,
    ));
    let per_batch = 100u64;
    let batches = 300u64;
    for seq in 1..=batches {
        tx.blocking_send(EncodedBatch::encode(&batch(
            &id,
            seq,
            seq * per_batch,
            per_batch,
        )))
        .expect("send");
        if seq == batches / 2 {
            agg.kill();
            std::thread::sleep(Duration::from_millis(300));
            agg.restart();
        }
    }
    drop(tx);
    runtime.block_on(exporter).expect("join").expect("exporter");
    let times = times_of(&agg.query("heartbeat"), "crash-test");
    let expected: Vec<u64> = (1..=batches)
        .flat_map(|s| s * per_batch..s * per_batch + per_batch)
        .collect();
    assert_eq!(
        times.len(),
        expected.len(),
        "every record stored once (no loss, no duplicate)"
    );
    assert_eq!(times, expected);
}

#[test]
fn spool_carries_data_across_an_outage_longer_than_memory() {
    let mut agg = Aggregator::start(&[]);
    agg.kill();
    let spool = tempfile::tempdir().expect("spool dir");
    let id = identity("spool-test");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let exporter = runtime.spawn(exporter::run(
        exporter_config(agg.url(), Some(spool.path().to_owned()), 2, 64 << 20),
        rx,
    ));
    for seq in 1..=40 {
        tx.blocking_send(EncodedBatch::encode(&batch(&id, seq, seq * 10, 10)))
            .expect("send");
    }
    std::thread::sleep(Duration::from_millis(500));
    let spooled = std::fs::read_dir(spool.path()).expect("read spool").count();
    assert!(
        spooled >= 30,
        "batches beyond memory are on disk ({spooled} files)"
    );
    agg.restart();
    drop(tx);
    runtime.block_on(exporter).expect("join").expect("exporter");
    let times = times_of(&agg.query("heartbeat"), "spool-test");
    assert_eq!(
        times,
        (1..=40u64)
            .flat_map(|s| s * 10..s * 10 + 10)
            .collect::<Vec<_>>()
    );
}

#[test]
fn full_spool_drops_oldest_and_counts_it() {
    let mut agg = Aggregator::start(&[]);
    agg.kill();
    let spool = tempfile::tempdir().expect("spool dir");
    let id = identity("full-spool-test");
    let one_batch = {
        use prost::Message;
        batch(&id, 1, 0, 10).encoded_len() as u64
    };
    let before = EXPORT_STATS.records_dropped.load(Ordering::Relaxed);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let exporter = runtime.spawn(exporter::run(
        exporter_config(agg.url(), Some(spool.path().to_owned()), 1, one_batch * 5),
        rx,
    ));
    for seq in 1..=20 {
        tx.blocking_send(EncodedBatch::encode(&batch(&id, seq, seq * 10, 10)))
            .expect("send");
    }
    std::thread::sleep(Duration::from_millis(500));
    agg.restart();
    drop(tx);
    runtime.block_on(exporter).expect("join").expect("exporter");
    let dropped = EXPORT_STATS.records_dropped.load(Ordering::Relaxed) - before;
    let stored = times_of(&agg.query("heartbeat"), "full-spool-test").len() as u64;
    assert!(dropped > 0, "drops are counted");
    assert_eq!(
        stored + dropped,
        200,
        "every record is either stored or counted as dropped"
    );
}

/// Opens an ingest stream by hand and returns the acks for `batches`.
pub(crate) fn ingest(
    url: &str,
    token: Option<&str>,
    batches: Vec<pb::Batch>,
) -> Result<Vec<pb::Ack>, tonic::Status> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = pb::ingest_client::IngestClient::connect(url.to_owned())
            .await
            .expect("connect");
        let n = batches.len();
        let mut request = tonic::Request::new(tokio_stream::iter(batches));
        if let Some(t) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("header"),
            );
        }
        let mut acks = client.stream(request).await?.into_inner();
        let mut out = Vec::new();
        while out.len() < n {
            match acks.message().await? {
                Some(a) => out.push(a),
                None => break,
            }
        }
        Ok(out)
    })
}

#[test]
fn bad_clients_get_clear_errors_and_others_keep_being_served() {
    let token_dir = tempfile::tempdir().expect("dir");
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").expect("token");
    let agg = Aggregator::start(&[
        "--token-file",
        token_file.to_str().expect("path"),
        "--max-batch-records",
        "1000",
    ]);
    let id = identity("bad-input");

    // Garbage bytes on the port.
    let mut raw = TcpStream::connect(("127.0.0.1", agg.port)).expect("connect");
    let _ = raw.write_all(b"GET / HTTP/1.1\r\n\r\n\x00\xff garbage \x16\x03\x01");
    drop(raw);

    let missing = ingest(&agg.url(), None, vec![batch(&id, 1, 0, 1)]).expect_err("no token");
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    let wrong =
        ingest(&agg.url(), Some("nope"), vec![batch(&id, 1, 0, 1)]).expect_err("wrong token");
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);

    // A batch with an invalid field is rejected by name; the stream goes on.
    let mut invalid = batch(&id, 2, 0, 1);
    invalid.records = vec![pb::Record {
        kind: Some(pb::record::Kind::Flow(pb::Flow {
            local_addr: "999.1.1.1".into(),
            protocol: pb::Protocol::Tcp as i32,
            family: pb::Family::Ipv4 as i32,
            phase: pb::FlowPhase::Start as i32,
            ..pb::Flow::default()
        })),
    }];
    let too_many = batch(&id, 3, 0, 1001);
    let acks = ingest(
        &agg.url(),
        Some("s3cret"),
        vec![invalid, too_many, batch(&id, 4, 77, 1)],
    )
    .expect("stream");
    assert_eq!(acks.len(), 3);
    assert!(
        acks[0].rejected && acks[0].error.contains("local_addr"),
        "{:?}",
        acks[0]
    );
    assert!(
        acks[1].rejected && acks[1].error.contains("exceeds"),
        "{:?}",
        acks[1]
    );
    assert!(!acks[2].rejected);

    // An oversized message is refused with a status, not a crash.
    let huge = batch(&id, 5, 0, 1);
    let mut huge = huge;
    if let Some(pb::record::Kind::Heartbeat(h)) = huge.records[0].kind.as_mut() {
        h.features = vec!["x".repeat(1 << 20); 20];
    }
    let status = ingest(&agg.url(), Some("s3cret"), vec![huge]).expect_err("oversized");
    assert!(
        matches!(
            status.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::Internal
        ),
        "{status:?}"
    );

    // Still serving a good client.
    let ok = ingest(&agg.url(), Some("s3cret"), vec![batch(&id, 6, 500, 3)]).expect("good client");
    assert!(!ok[0].rejected);
}

/// A CA, and leaf certificates it signs, as PEM files in a directory of their own.
pub(crate) struct TestPki {
    dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestPki {
    pub(crate) fn new() -> TestPki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "procflow test CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA");
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
        TestPki { dir, ca }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// `name.pem` and `name.key`, for `names` (DNS names or IP addresses), signed by the CA
    /// or, for a stranger, by itself.
    pub(crate) fn leaf(&self, name: &str, names: &[&str], signed: bool) {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = if signed {
            params.signed_by(&key, &self.ca)
        } else {
            params.self_signed(&key)
        }
        .expect("certificate");
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).expect("write");
    }
}

/// One ingest stream through `procflow::transport::endpoint` (the collector's and the CLI's
/// TLS set-up); any failure, at connect or as a status, comes back as text.
fn ingest_tls(
    url: &str,
    ca: &str,
    client: Option<(&str, &str)>,
    batches: Vec<pb::Batch>,
) -> Result<Vec<pb::Ack>, String> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let endpoint = procflow::transport::endpoint(
            url,
            &procflow::transport::TlsFiles {
                ca: Some(ca.into()),
                cert: client.map(|c| c.0.into()),
                key: client.map(|c| c.1.into()),
            },
        )
        .map_err(|e| format!("{e:#}"))?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let n = batches.len();
        let mut client = pb::ingest_client::IngestClient::new(channel);
        let mut acks = client
            .stream(tokio_stream::iter(batches))
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        let mut out = Vec::new();
        while out.len() < n {
            match acks.message().await.map_err(|s| s.to_string())? {
                Some(a) => out.push(a),
                None => break,
            }
        }
        Ok(out)
    })
}

#[test]
fn tls_with_client_certificates_refuses_plaintext_and_strangers() {
    let pki = TestPki::new();
    pki.leaf("server", &["127.0.0.1", "localhost"], true);
    pki.leaf("collector", &["collector"], true);
    pki.leaf("stranger", &["collector"], false);
    let agg = Aggregator::start(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
        "--tls-client-ca",
        &pki.path("ca.pem"),
    ]);
    let https = format!("https://127.0.0.1:{}", agg.port);
    let ca = pki.path("ca.pem");
    let (cert, key) = (pki.path("collector.pem"), pki.path("collector.key"));
    let id = identity("tls-test");

    // Plaintext against TLS: refused, whether at the handshake or as a status.
    let plain = ingest_tls(&agg.url(), &ca, None, vec![batch(&id, 1, 0, 1)]);
    assert!(plain.is_err(), "plaintext was served: {plain:?}");
    // TLS without a client certificate, and with one the CA never signed.
    let anonymous = ingest_tls(&https, &ca, None, vec![batch(&id, 1, 0, 1)]);
    assert!(anonymous.is_err(), "no client certificate was served");
    let (s_cert, s_key) = (pki.path("stranger.pem"), pki.path("stranger.key"));
    let stranger = ingest_tls(
        &https,
        &ca,
        Some((&s_cert, &s_key)),
        vec![batch(&id, 1, 0, 1)],
    );
    assert!(stranger.is_err(), "a stranger's certificate was served");

    // The collector's exporter with its certificate: stored, and read back by the CLI
    // over the same mutual TLS.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let config = ExporterConfig {
        tls: procflow::transport::TlsFiles {
            ca: Some(ca.clone().into()),
            cert: Some(cert.clone().into()),
            key: Some(key.clone().into()),
        },
        ..exporter_config(https.clone(), None, 16, 0)
    };
    let exporter = runtime.spawn(exporter::run(config, rx));
    for seq in 1..=3 {
        tx.blocking_send(EncodedBatch::encode(&batch(&id, seq, seq * 10, 5)))
            .expect("send");
    }
    drop(tx);
    runtime.block_on(exporter).expect("join").expect("exporter");
    let out = Command::new(procflow_bin())
        .args(["query", "--aggregator", &https, "--json", "--since", "1h"])
        .args(["--kind", "heartbeat", "--tls-ca", &ca, "--tls-cert", &cert])
        .args(["--tls-key", &key])
        .output()
        .expect("query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<procflow::model::Event> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("event JSON"))
        .collect();
    assert_eq!(times_of(&events, "tls-test").len(), 15);
    // The CLI without its certificate is refused with a message, not served.
    let refused = Command::new(procflow_bin())
        .args(["query", "--aggregator", &https, "--tls-ca", &ca])
        .output()
        .expect("query");
    assert!(!refused.status.success());
}

#[test]
fn non_loopback_listen_without_writer_identities_refuses_to_start() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(procflow_bin())
        .args(["aggregator", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without per-identity writer authentication")
    );
}

#[test]
fn slow_subscriber_does_not_slow_ingest_and_sees_a_gap() {
    let agg = Aggregator::start(&["--subscriber-queue", "8"]);
    let id = identity("slow-sub");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let url = agg.url();
    let mut live = runtime.block_on(async {
        let mut client = pb::subscribe_client::SubscribeClient::connect(url)
            .await
            .expect("connect");
        client
            .subscribe(pb::SubscribeRequest { filter: None })
            .await
            .expect("subscribe")
            .into_inner()
    });
    // Ingest a lot while the subscriber reads nothing.
    let batches: Vec<pb::Batch> = (1..=50).map(|s| batch(&id, s, s * 100, 100)).collect();
    let acks = ingest(&agg.url(), None, batches).expect("ingest");
    assert_eq!(acks.len(), 50);
    assert!(acks.iter().all(|a| !a.rejected));
    assert_eq!(
        times_of(&agg.query("heartbeat"), "slow-sub").len(),
        5000,
        "ingest unaffected"
    );
    // The subscriber now reads: a gap marker says how much it missed.
    let saw_gap = runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Ok(Some(item))) = tokio::time::timeout_at(deadline, live.message()).await {
            if let Some(pb::subscribe_item::Item::Gap(g)) = item.item {
                return g.missed > 0;
            }
        }
        false
    });
    assert!(saw_gap, "a slow subscriber is told what it missed");
}

#[test]
fn collector_to_aggregator_query_and_subscribe_agree() {
    // Records only: alerts about this host would be streamed beside them.
    let agg = Aggregator::start(&["--no-detection"]);
    let mut tail = Command::new(procflow_bin())
        .args(["tail", "--aggregator", &agg.url(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tail");
    // Drain tail's pipe as it writes, or it blocks once the pipe buffer is full.
    let tail_stdout = tail.stdout.take().expect("tail stdout");
    let tail_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(tail_stdout), &mut text);
        text
    });
    std::thread::sleep(Duration::from_millis(1000)); // the subscription is registered
    let collector = Command::new(procflow_bin())
        .args([
            "collector",
            "--output",
            "both",
            "--aggregator",
            &agg.url(),
            "--duration",
            "2s",
            "--batch-interval",
            "50ms",
        ])
        .env("POD_NAME", "e2e-pod")
        .env("POD_NAMESPACE", "e2e")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("collector");
    std::thread::sleep(Duration::from_millis(500));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut c = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (mut s, _) = listener.accept().expect("accept");
    c.write_all(b"hello").expect("write");
    let mut buf = [0u8; 5];
    std::io::Read::read_exact(&mut s, &mut buf).expect("read");
    drop((c, s));
    let out = collector.wait_with_output().expect("collector output");
    assert!(out.status.success());
    let printed: Vec<Record> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("record JSON"))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = tail.kill();
    let _ = tail.wait();
    let text = tail_reader.join().expect("tail reader");
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)]; // tail was killed
    let streamed: Vec<Record> = complete
        .lines()
        .filter(|l| !l.contains("\"kind\":\"gap\""))
        .map(|l| {
            serde_json::from_str::<procflow::model::Event>(l)
                .expect("event JSON")
                .record
        })
        .collect();
    let stored: Vec<procflow::model::Event> = ["flow", "process", "listener", "heartbeat"]
        .iter()
        .flat_map(|k| agg.query(k))
        .collect();
    assert!(stored
        .iter()
        .all(|e| e.source.pod_name == "e2e-pod" && e.source.pod_namespace == "e2e"));
    let stored: Vec<Record> = stored.into_iter().map(|e| e.record).collect();
    let key = |r: &Record| serde_json::to_string(r).expect("json");
    let mut a: Vec<String> = printed.iter().map(key).collect();
    let mut b: Vec<String> = stored.iter().map(key).collect();
    let mut c: Vec<String> = streamed.iter().map(key).collect();
    a.sort();
    b.sort();
    c.sort();
    assert!(
        a.len() > 10,
        "the collector reported this host ({} records)",
        a.len()
    );
    let differences = |x: &[String], y: &[String]| -> Vec<String> {
        x.iter()
            .filter(|r| !y.contains(r))
            .chain(y.iter().filter(|r| !x.contains(r)))
            .take(3)
            .cloned()
            .collect()
    };
    assert_eq!(
        (a.len(), b.len()),
        (a.len(), a.len()),
        "stored vs printed: {:?}",
        differences(&a, &b)
    );
    assert!(
        a == b,
        "stored records equal what the collector printed: {:?}",
        differences(&a, &b)
    );
    assert_eq!(
        (a.len(), c.len()),
        (a.len(), a.len()),
        "subscribed vs printed: {:?}",
        differences(&a, &c)
    );
    assert!(
        a == c,
        "subscribed records equal what the collector printed: {:?}",
        differences(&a, &c)
    );
    assert!(printed
        .iter()
        .any(|r| matches!(r, Record::Flow(f) if f.bytes_sent == Some(5))));
}

pub fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .expect("request");
    let mut response = String::new();
    std::io::Read::read_to_string(&mut s, &mut response).expect("response");
    response
}

#[test]
fn aggregator_serves_health_and_metrics_of_what_moved() {
    let [grpc_port, metrics_port] = free_ports::<2>();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let agg = Aggregator::start_on(grpc_port, &["--metrics-listen", &metrics_listen]);
    let acks = ingest(
        &agg.url(),
        None,
        vec![
            batch(&identity("metrics"), 1, 0, 7),
            batch(&identity("metrics"), 1, 0, 7),
        ],
    )
    .expect("ingest");
    assert_eq!(acks.len(), 2);
    assert!(http_get(metrics_port, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(http_get(metrics_port, "/readyz").starts_with("HTTP/1.1 200"));
    assert!(http_get(metrics_port, "/nope").starts_with("HTTP/1.1 404"));
    let metrics = http_get(metrics_port, "/metrics");
    assert!(
        metrics.contains("procflow_records_stored_total 7"),
        "{metrics}"
    );
    assert!(
        metrics.contains("procflow_batches_deduplicated_total 1"),
        "{metrics}"
    );
}

/// A streaming collector's start-up snapshot of a busy host (4,000 sockets of a holder, every
/// one a START at once) goes through a queue and a memory buffer far smaller than it while
/// the aggregator is down. With a spool, every record waits for room and reaches the
/// aggregator once it is back: none dropped. Without one, records are dropped only once the
/// memory buffer is full, and the drops are counted.
#[test]
fn startup_snapshot_waits_for_room_and_drops_only_when_nothing_can_buffer() {
    let _holder = crate::util::ConnectionHolder::start(None, 2_000, "127.0.4.1");
    for spool in [true, false] {
        let mut agg = Aggregator::start(&[]);
        agg.kill();
        let spool_dir = tempfile::tempdir().expect("spool dir");
        let pod = format!("snapshot-{spool}-{}", std::process::id());
        let mut command = Command::new(procflow_bin());
        command
            .args(["collector", "--output", "grpc", "--aggregator", &agg.url()])
            .args(["--no-processes", "--queue-capacity", "64"])
            .args(["--memory-buffer-batches", "2", "--batch-size", "100"])
            .args(["--batch-interval", "50ms", "--duration", "10s"])
            // The last heartbeat goes out behind the shutdown's ENDs of every socket, which
            // the drain may not deliver in time: heartbeats every second carry the counts.
            .args(["--heartbeat-interval", "1s"])
            .env("POD_NAME", &pod)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if spool {
            command.arg("--spool-dir").arg(spool_dir.path());
        }
        let mut collector = command.spawn().expect("collector");
        std::thread::sleep(Duration::from_secs(2));
        agg.restart();
        assert!(collector.wait().expect("collector").success());
        let ours = |events: &[procflow::model::Event]| -> Vec<Record> {
            events
                .iter()
                .filter(|e| e.source.pod_name == pod)
                .map(|e| e.record.clone())
                .collect()
        };
        let cookies: std::collections::HashSet<u64> = ours(&agg.query("flow"))
            .iter()
            .filter_map(|r| match r {
                Record::Flow(f)
                    if f.phase == procflow::model::FlowPhase::Start
                        && (f.local_addr.to_string() == "127.0.4.1"
                            || f.remote_addr.is_some_and(|a| a.to_string() == "127.0.4.1")) =>
                {
                    Some(f.cookie)
                }
                _ => None,
            })
            .collect();
        let last_heartbeat = ours(&agg.query("heartbeat"))
            .into_iter()
            .filter_map(|r| match r {
                Record::Heartbeat(h) => Some(h),
                _ => None,
            })
            .max_by_key(|h| h.time)
            .expect("a heartbeat of the collector");
        let counter = |name: &str| {
            last_heartbeat
                .counters
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| *v)
        };
        if spool {
            assert_eq!(cookies.len(), 4_000, "every socket of the snapshot stored");
            assert_eq!(counter("queue_dropped"), 0, "{:?}", last_heartbeat.counters);
        } else {
            assert!(
                counter("queue_dropped") > 0,
                "memory full and no spool: drops, counted: {:?}",
                last_heartbeat.counters
            );
        }
    }
}
