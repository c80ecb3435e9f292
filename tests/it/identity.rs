//! Writers' identities as an attacker inside one watched pod meets them. The aggregator
//! verifies projected service-account tokens signed by a real key against the issuer's key
//! set (a file, or OpenID discovery over HTTPS), and derives the writer's pod, namespace and
//! collector id from them: a pod cannot write as another, cannot squat on another's
//! sequence numbers, cannot send alerts; expired, misaddressed, foreign and forged tokens
//! are refused; a rotated key is picked up.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use procflow::aggregator::auth::jwt::testing::{key_set, pod_claims, Signer};
use procflow::proto::v1 as pb;

use crate::pipeline::{free_ports, Aggregator};

pub const ISSUER: &str = "https://oidc.eks.eu-west-1.amazonaws.com/id/PROCFLOWTEST";

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A cluster issuer: its signing key, its key set on disk, and a readers file beside it.
pub struct Issuer {
    pub signer: Signer,
    pub dir: tempfile::TempDir,
}

impl Issuer {
    pub fn new() -> Issuer {
        let issuer = Issuer {
            signer: Signer::es256("key-1"),
            dir: tempfile::tempdir().expect("dir"),
        };
        issuer.publish(&[&issuer.signer]);
        issuer
    }

    pub fn jwks(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }

    pub fn publish(&self, signers: &[&Signer]) {
        std::fs::write(self.jwks(), key_set(signers)).expect("jwks");
    }

    /// A projected token of `namespace/pod`, valid for `ttl` seconds.
    pub fn token(&self, namespace: &str, pod: &str, ttl: i64) -> String {
        self.signer.sign(&pod_claims(
            ISSUER,
            "procflow",
            namespace,
            pod,
            &pod_uid(pod),
            now_secs(),
            ttl,
        ))
    }

    /// Writes `readers` (YAML) as the readers file and returns its path.
    pub fn readers(&self, readers: &str) -> String {
        let path = self.dir.path().join("readers.yaml");
        std::fs::write(&path, readers).expect("readers");
        path.to_string_lossy().into_owned()
    }

    /// An aggregator on loopback trusting this issuer's key file, with `extra` flags.
    pub fn aggregator(&self, extra: &[&str]) -> Aggregator {
        let jwks = self.jwks().to_string_lossy().into_owned();
        let mut args = vec!["--sa-token-issuer", ISSUER, "--sa-token-jwks", &jwks];
        args.extend_from_slice(extra);
        Aggregator::start(&args)
    }
}

/// The uid Kubernetes would have given `pod` (stable per name in these tests).
pub fn pod_uid(pod: &str) -> String {
    format!("uid-{pod}")
}

/// SHA-256 of `token` in hex, as a readers file lists it.
pub fn sha256_hex(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn identity(collector_id: &str, namespace: &str, pod: &str) -> pb::CollectorIdentity {
    pb::CollectorIdentity {
        collector_id: collector_id.into(),
        pod_name: pod.into(),
        pod_namespace: namespace.into(),
        ..pb::CollectorIdentity::default()
    }
}

/// A process record whose command name is `comm`.
pub fn process(pid: u32, comm: &str) -> pb::Record {
    pb::Record {
        kind: Some(pb::record::Kind::Process(pb::Process {
            pid,
            start_time: procflow::model::now_ns(),
            ppid: 1,
            phase: pb::ProcessPhase::Start as i32,
            comm: comm.as_bytes().to_vec(),
            argv: vec![comm.as_bytes().to_vec()],
            ..pb::Process::default()
        })),
    }
}

pub fn heartbeat(time: u64) -> pb::Record {
    pb::Record {
        kind: Some(pb::record::Kind::Heartbeat(pb::Heartbeat {
            time,
            ..pb::Heartbeat::default()
        })),
    }
}

pub fn batch(identity: &pb::CollectorIdentity, seq: u64, records: Vec<pb::Record>) -> pb::Batch {
    pb::Batch {
        identity: Some(identity.clone()),
        seq,
        sent_at: 0,
        records,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn authorized<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(t) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    request
}

/// One ingest stream as `token`; the acks, or the status that ended the stream.
pub fn ingest(
    url: &str,
    token: Option<&str>,
    batches: Vec<pb::Batch>,
) -> Result<Vec<pb::Ack>, tonic::Status> {
    runtime().block_on(async {
        let mut client = pb::ingest_client::IngestClient::connect(url.to_owned())
            .await
            .expect("connect");
        let n = batches.len();
        let mut acks = client
            .stream(authorized(tokio_stream::iter(batches), token))
            .await?
            .into_inner();
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

/// Stored events as `token`, of `namespaces` (empty: all it may see).
pub fn query(
    url: &str,
    token: Option<&str>,
    kinds: &[pb::RecordKind],
    namespaces: &[&str],
) -> Result<Vec<pb::Event>, tonic::Status> {
    runtime().block_on(async {
        let mut client = pb::query_client::QueryClient::connect(url.to_owned())
            .await
            .expect("connect");
        let request = pb::QueryRequest {
            filter: Some(pb::Filter {
                kinds: kinds.iter().map(|k| *k as i32).collect(),
                namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
                ..pb::Filter::default()
            }),
            since: 0,
            until: 0,
            limit: 100_000,
        };
        let mut stream = client
            .records(authorized(request, token))
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(e) = stream.message().await? {
            out.push(e);
        }
        Ok(out)
    })
}

/// Polls `query` until `done` holds of its answer or `within` passes; the last answer.
pub fn query_until(
    url: &str,
    token: Option<&str>,
    kinds: &[pb::RecordKind],
    within: Duration,
    done: impl Fn(&[pb::Event]) -> bool,
) -> Vec<pb::Event> {
    let deadline = Instant::now() + within;
    loop {
        let events = query(url, token, kinds, &[]).expect("query");
        if done(&events) || Instant::now() >= deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn namespace_of(e: &pb::Event) -> &str {
    e.source.as_ref().map_or("", |s| s.pod_namespace.as_str())
}

pub fn comm_of(e: &pb::Event) -> Option<&[u8]> {
    match e.record.as_ref()?.kind.as_ref()? {
        pb::record::Kind::Process(p) => Some(&p.comm),
        _ => None,
    }
}

pub fn alert_of(e: &pb::Event) -> Option<&pb::Alert> {
    match e.record.as_ref()?.kind.as_ref()? {
        pb::record::Kind::Alert(a) => Some(a),
        _ => None,
    }
}

/// A rule that fires on a process named `pf-marker-*`, grouped per pod and pid.
pub const MARKER_RULE: &str = "rules:\n- id: TEST-MARKER\n  name: Marker process\n  severity: critical\n  tags: [T0000]\n  kinds: [process]\n  condition: proc.comm startswith \"pf-marker\"\n  output: 'marker {proc.comm} pid={proc.pid}'\n  group_by: [proc.pid]\n";

pub fn admin_readers(admin_token: &str) -> String {
    format!(
        "readers:\n  - name: root\n    token_sha256: {}\n    role: admin\n",
        sha256_hex(admin_token)
    )
}

#[test]
fn expired_misaddressed_foreign_and_forged_tokens_are_refused() {
    let issuer = Issuer::new();
    let agg = issuer.aggregator(&[]);
    let url = agg.url();
    let id = identity("c", "shop", "web-1");
    let attempt = |token: &str| ingest(&url, Some(token), vec![batch(&id, 1, vec![heartbeat(1)])]);
    let now = now_secs();
    let claims = |ttl| {
        pod_claims(
            ISSUER,
            "procflow",
            "shop",
            "web-1",
            &pod_uid("web-1"),
            now,
            ttl,
        )
    };

    let expired = issuer.signer.sign(&claims(-300));
    let mut audience = claims(600);
    audience["aud"] = serde_json::json!(["sts.amazonaws.com"]);
    let mut foreign = claims(600);
    foreign["iss"] = serde_json::json!("https://oidc.eks.eu-west-1.amazonaws.com/id/OTHER");
    let forger = Signer::es256("key-1"); // the same key id, another key
    let mut unbound = claims(600);
    unbound["kubernetes.io"]
        .as_object_mut()
        .expect("object")
        .remove("pod");
    for (what, token, code) in [
        ("expired", expired, tonic::Code::Unauthenticated),
        (
            "wrong audience",
            issuer.signer.sign(&audience),
            tonic::Code::Unauthenticated,
        ),
        (
            "wrong issuer",
            issuer.signer.sign(&foreign),
            tonic::Code::Unauthenticated,
        ),
        (
            "bad signature",
            forger.sign(&claims(600)),
            tonic::Code::Unauthenticated,
        ),
        (
            "not bound to a pod",
            issuer.signer.sign(&unbound),
            tonic::Code::PermissionDenied,
        ),
    ] {
        let status = attempt(&token).expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
    }
    let acks = attempt(&issuer.token("shop", "web-1", 600)).expect("a valid token writes");
    assert!(!acks[0].rejected);
    // Without any credential, nothing is served (the listener is loopback, but an issuer is
    // configured: no open door).
    assert_eq!(
        attempt("").expect_err("empty").code(),
        tonic::Code::Unauthenticated
    );
    let none = ingest(&url, None, vec![batch(&id, 2, vec![heartbeat(2)])]).expect_err("none");
    assert_eq!(none.code(), tonic::Code::Unauthenticated);
}

#[test]
fn a_rotated_key_is_picked_up_and_the_retired_one_refused() {
    let issuer = Issuer::new();
    let agg = issuer.aggregator(&[]);
    let url = agg.url();
    let id = identity("c", "shop", "web-1");
    let old = issuer.token("shop", "web-1", 600);
    assert!(ingest(&url, Some(&old), vec![batch(&id, 1, vec![heartbeat(1)])]).is_ok());

    // The issuer rotates: a new key signs, the old one is withdrawn.
    let rotated = Signer::es256("key-2");
    issuer.publish(&[&rotated]);
    let fresh = rotated.sign(&pod_claims(
        ISSUER,
        "procflow",
        "shop",
        "web-1",
        &pod_uid("web-1"),
        now_secs(),
        600,
    ));
    let acks = ingest(&url, Some(&fresh), vec![batch(&id, 2, vec![heartbeat(2)])])
        .expect("a token of the new key is accepted at once");
    assert!(!acks[0].rejected);
    let retired = ingest(&url, Some(&old), vec![batch(&id, 3, vec![heartbeat(3)])])
        .expect_err("the withdrawn key no longer signs");
    assert_eq!(retired.code(), tonic::Code::Unauthenticated);
}

#[test]
fn a_pod_cannot_write_as_another_nor_send_alerts() {
    let issuer = Issuer::new();
    let admin = "admin-token-for-tests";
    let readers = issuer.readers(&admin_readers(admin));
    let agg = issuer.aggregator(&["--readers", &readers, "--no-detection"]);
    let url = agg.url();
    let attacker = issuer.token("shop", "web-1", 600);

    for (what, claimed) in [
        ("another pod", identity("uid-db-0/1", "shop", "db-0")),
        (
            "another namespace",
            identity("uid-web-1/1", "bank", "web-1"),
        ),
        (
            "another pod uid",
            pb::CollectorIdentity {
                pod_uid: "uid-db-0".into(),
                ..identity("uid-db-0/1", "shop", "web-1")
            },
        ),
    ] {
        let status = ingest(
            &url,
            Some(&attacker),
            vec![batch(&claimed, 1, vec![process(4242, "forged-by-web-1")])],
        )
        .expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{what}: {status:?}"
        );
    }
    // A forged alert, under the writer's own identity.
    let forged_alert = pb::Record {
        kind: Some(pb::record::Kind::Alert(pb::Alert {
            id: "forged".into(),
            rule_id: "PF-FORGED".into(),
            rule_name: "forged".into(),
            severity: pb::Severity::Critical as i32,
            output: "all is well".into(),
            pod_name: "db-0".into(),
            pod_namespace: "shop".into(),
            ..pb::Alert::default()
        })),
    };
    let own = identity("uid-web-1/1", "shop", "web-1");
    let status = ingest(
        &url,
        Some(&attacker),
        vec![batch(&own, 1, vec![heartbeat(1), forged_alert])],
    )
    .expect_err("alerts are the rules' to raise");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    // The writer's own records are stored, under the identity its credential states.
    ingest(
        &url,
        Some(&attacker),
        vec![batch(&own, 2, vec![process(7, "honest")])],
    )
    .expect("own records");
    let stored = query(&url, Some(admin), &[], &[]).expect("admin query");
    assert!(
        stored
            .iter()
            .all(|e| comm_of(e) != Some(b"forged-by-web-1")),
        "a forged identity was stored"
    );
    assert!(
        stored.iter().all(|e| alert_of(e).is_none()),
        "a forged alert was stored"
    );
    let honest: Vec<&pb::Event> = stored
        .iter()
        .filter(|e| comm_of(e) == Some(b"honest"))
        .collect();
    assert_eq!(honest.len(), 1);
    let source = honest[0].source.as_ref().expect("source");
    assert_eq!(
        (
            source.pod_name.as_str(),
            source.pod_namespace.as_str(),
            source.pod_uid.as_str()
        ),
        ("web-1", "shop", "uid-web-1")
    );
    // A writer's credential reads nothing; a reader's writes nothing.
    assert_eq!(
        query(&url, Some(&attacker), &[], &[])
            .expect_err("writer reads")
            .code(),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        ingest(&url, Some(admin), vec![batch(&own, 3, vec![heartbeat(3)])])
            .expect_err("reader writes")
            .code(),
        tonic::Code::PermissionDenied
    );
}

#[test]
fn dedupe_squatting_cannot_hide_the_victims_batch_or_its_alert() {
    let issuer = Issuer::new();
    let rules = tempfile::tempdir().expect("rules");
    std::fs::write(rules.path().join("marker.yaml"), MARKER_RULE).expect("rule");
    let admin = "admin-token-for-tests";
    let readers = issuer.readers(&admin_readers(admin));
    let rules_dir = rules.path().to_str().expect("path");
    let agg = issuer.aggregator(&[
        "--readers",
        &readers,
        "--rules",
        rules_dir,
        "--no-managed-rules",
    ]);
    let url = agg.url();
    let victim_token = issuer.token("shop", "db-0", 600);
    let attacker_token = issuer.token("shop", "web-1", 600);
    let victim = identity("uid-db-0/5eed", "shop", "db-0");
    ingest(
        &url,
        Some(&victim_token),
        (1..=3)
            .map(|seq| batch(&victim, seq, vec![heartbeat(seq)]))
            .collect(),
    )
    .expect("the victim reports");

    // The attacker, having seen the victim's collector id and sequence numbers, sends
    // empty batches with the victim's next ones: as the victim (refused), and under its own
    // pod name with the victim's collector id (stored, in its own sequence space).
    let as_victim = ingest(
        &url,
        Some(&attacker_token),
        (4..=10).map(|seq| batch(&victim, seq, vec![])).collect(),
    )
    .expect_err("claiming the victim's pod");
    assert_eq!(as_victim.code(), tonic::Code::PermissionDenied);
    let squat = identity("uid-db-0/5eed", "shop", "web-1");
    let acks = ingest(
        &url,
        Some(&attacker_token),
        (4..=10).map(|seq| batch(&squat, seq, vec![])).collect(),
    )
    .expect("its own pod, someone else's collector id");
    assert!(acks.iter().all(|a| !a.rejected));

    // The victim's real batch (a reverse shell, say) is stored and raises its alert.
    ingest(
        &url,
        Some(&victim_token),
        vec![batch(
            &victim,
            4,
            vec![process(31337, "pf-marker-revshell")],
        )],
    )
    .expect("the victim's batch");
    let events = query_until(&url, Some(admin), &[], Duration::from_secs(15), |events| {
        events.iter().any(|e| alert_of(e).is_some())
    });
    assert!(
        events
            .iter()
            .any(|e| comm_of(e) == Some(b"pf-marker-revshell") && namespace_of(e) == "shop"),
        "the victim's batch was stored"
    );
    let alert = events
        .iter()
        .find_map(alert_of)
        .expect("the victim's alert was raised");
    assert_eq!(alert.rule_id, "TEST-MARKER");
    assert_eq!(alert.pod_name, "db-0");
}

/// Serves `dir` over HTTPS on 127.0.0.1:`port` with `cert`/`key` (Python's http.server).
fn https_server(dir: &std::path::Path, port: u16, cert: &str, key: &str) -> std::process::Child {
    let script = format!(
        "import http.server, ssl, functools\n\
         handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory={dir:?})\n\
         server = http.server.ThreadingHTTPServer(('127.0.0.1', {port}), handler)\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         ctx.load_cert_chain({cert:?}, {key:?})\n\
         server.socket = ctx.wrap_socket(server.socket, server_side=True)\n\
         server.serve_forever()\n",
        dir = dir.to_string_lossy(),
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the issuer did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn keys_are_discovered_from_the_issuer_over_https_and_follow_a_rotation() {
    // The issuer: a CA-signed certificate for 127.0.0.1, the discovery document and the
    // key set served over HTTPS, as EKS serves them.
    let pki = tempfile::tempdir().expect("pki");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let path = |name: &str| pki.path().join(name).to_string_lossy().into_owned();
    std::fs::write(path("ca.pem"), ca.pem()).expect("write");
    std::fs::write(path("leaf.pem"), leaf.pem()).expect("write");
    std::fs::write(path("leaf.key"), leaf_key.serialize_pem()).expect("write");

    let [port] = free_ports::<1>();
    let issuer_url = format!("https://127.0.0.1:{port}");
    let docs = tempfile::tempdir().expect("docs");
    std::fs::create_dir_all(docs.path().join(".well-known")).expect("mkdir");
    std::fs::write(
        docs.path().join(".well-known/openid-configuration"),
        serde_json::json!({"issuer": issuer_url, "jwks_uri": format!("{issuer_url}/keys.json")})
            .to_string(),
    )
    .expect("discovery");
    let first = Signer::es256("key-1");
    std::fs::write(docs.path().join("keys.json"), key_set(&[&first])).expect("keys");
    let mut server = https_server(docs.path(), port, &path("leaf.pem"), &path("leaf.key"));

    let ca_path = path("ca.pem");
    let agg = Aggregator::start(&[
        "--sa-token-issuer",
        &issuer_url,
        "--sa-token-issuer-ca",
        &ca_path,
    ]);
    let url = agg.url();
    let token = |signer: &Signer| {
        signer.sign(&pod_claims(
            &issuer_url,
            "procflow",
            "shop",
            "web-1",
            &pod_uid("web-1"),
            now_secs(),
            600,
        ))
    };
    let id = identity("c", "shop", "web-1");
    ingest(
        &url,
        Some(&token(&first)),
        vec![batch(&id, 1, vec![heartbeat(1)])],
    )
    .expect("a token of the discovered key");

    let second = Signer::es256("key-2");
    std::fs::write(docs.path().join("keys.json"), key_set(&[&second])).expect("rotate");
    ingest(
        &url,
        Some(&token(&second)),
        vec![batch(&id, 2, vec![heartbeat(2)])],
    )
    .expect("the rotated key is fetched when a token names it");

    // An aggregator that does not trust the issuer's certificate fetches no key, so it
    // accepts no token (and says to retry rather than that the token is bad).
    let other = rcgen::CertifiedIssuer::self_signed(
        {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p
        },
        rcgen::KeyPair::generate().expect("key"),
    )
    .expect("CA");
    std::fs::write(path("other-ca.pem"), other.pem()).expect("write");
    let other_ca = path("other-ca.pem");
    let distrusting = Aggregator::start(&[
        "--sa-token-issuer",
        &issuer_url,
        "--sa-token-issuer-ca",
        &other_ca,
    ]);
    let status = ingest(
        &distrusting.url(),
        Some(&token(&second)),
        vec![batch(&id, 1, vec![heartbeat(1)])],
    )
    .expect_err("keys from an untrusted issuer");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn the_shared_token_and_unidentified_writers_stay_on_loopback() {
    let dir = tempfile::tempdir().expect("dir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret").expect("write");
    let run = |args: &[&str]| {
        Command::new(crate::util::procflow_bin())
            .args(["aggregator", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .output()
            .expect("aggregator")
    };
    let shared = run(&[
        "--listen",
        "0.0.0.0:0",
        "--token-file",
        token.to_str().expect("path"),
    ]);
    assert!(!shared.status.success());
    assert!(
        String::from_utf8_lossy(&shared.stderr).contains("loopback listener only"),
        "{}",
        String::from_utf8_lossy(&shared.stderr)
    );
    let readers_only = dir.path().join("readers.yaml");
    std::fs::write(&readers_only, admin_readers("x")).expect("write");
    let unidentified = run(&[
        "--listen",
        "0.0.0.0:0",
        "--readers",
        readers_only.to_str().expect("path"),
    ]);
    assert!(!unidentified.status.success());
    assert!(String::from_utf8_lossy(&unidentified.stderr).contains("per-identity writer"));
}

#[test]
fn a_stream_ends_when_its_token_expires_so_the_rotated_one_is_presented() {
    let issuer = Issuer::new();
    let agg = issuer.aggregator(&["--no-detection"]);
    let token = issuer.token("shop", "web-1", 3);
    let id = identity("uid-web-1/1", "shop", "web-1");
    let started = Instant::now();
    let ended = runtime().block_on(async {
        let mut client = pb::ingest_client::IngestClient::connect(agg.url())
            .await
            .expect("connect");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(batch(&id, 1, vec![heartbeat(1)]))
            .await
            .expect("send");
        let mut acks = client
            .stream(authorized(
                tokio_stream::wrappers::ReceiverStream::new(rx),
                Some(&token),
            ))
            .await
            .expect("stream")
            .into_inner();
        assert!(
            !acks
                .message()
                .await
                .expect("ack")
                .expect("one ack")
                .rejected
        );
        // The sender stays open: only the credential's expiry ends the stream.
        let end = tokio::time::timeout(Duration::from_secs(20), acks.message()).await;
        drop(tx);
        end.expect("the stream ended")
    });
    let status = ended.expect_err("ended by a status");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before the expiry"
    );
}
