//! Readers get roles: a viewer of namespace `a` sees nothing of namespace `b` — not
//! through Query, not live through Subscribe, not in an investigation's answers, alerts
//! included — while an admin sees both; the readers file is re-read when it changes; and
//! client certificates name writers and readers by their SPIFFE ID.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use procflow::proto::v1 as pb;

use crate::identity::{
    alert_of, batch, heartbeat, ingest, namespace_of, process, query, query_until, sha256_hex,
    Issuer, MARKER_RULE,
};

const ADMIN: &str = "admin-token-for-tests";
const VIEWER: &str = "viewer-of-a-token-for-tests";

fn readers(viewer_namespaces: &str) -> String {
    format!(
        "readers:
  - name: root
    token_sha256: {}
    role: admin
  - name: alice
    token_sha256: {}
    role: viewer
    namespaces: {viewer_namespaces}
",
        sha256_hex(ADMIN),
        sha256_hex(VIEWER)
    )
}

pub(crate) fn flow(cookie: u64, local: &str, remote: &str, pid: u32) -> pb::Record {
    let now = procflow::model::now_ns();
    pb::Record {
        kind: Some(pb::record::Kind::Flow(pb::Flow {
            cookie,
            protocol: pb::Protocol::Tcp as i32,
            family: pb::Family::Ipv4 as i32,
            local_addr: local.into(),
            local_port: 40_000 + cookie as u32,
            remote_addr: Some(remote.into()),
            remote_port: Some(5432),
            direction: pb::Direction::Outbound as i32,
            scope: pb::Scope::EastWest as i32,
            phase: pb::FlowPhase::End as i32,
            state: "CLOSE".into(),
            bytes_sent: Some(100),
            bytes_received: Some(10),
            first_seen: now - 1_000_000,
            last_seen: now,
            ended_at: Some(now),
            pid: Some(pid),
            attribution: pb::Attribution::Fd as i32,
            end_reason: pb::EndReason::DestroyEvent as i32,
            ..pb::Flow::default()
        })),
    }
}

/// What pod `pod` of `namespace` (at `ip`) reports: a heartbeat, a marker process (which
/// raises an alert) and a flow to `peer`.
fn report(issuer: &Issuer, url: &str, namespace: &str, pod: &str, ip: &str, peer: &str, seq: u64) {
    let token = issuer.token(namespace, pod, 600);
    let id = pb::CollectorIdentity {
        pod_ip: ip.into(),
        ..crate::identity::identity(&format!("uid-{pod}/1"), namespace, pod)
    };
    let pid = 100 + seq as u32;
    let records = vec![
        heartbeat(seq),
        process(pid, &format!("pf-marker-{namespace}")),
        flow(seq, ip, peer, pid),
    ];
    let acks = ingest(url, Some(&token), vec![batch(&id, seq, records)]).expect("ingest");
    assert!(!acks[0].rejected, "{:?}", acks[0]);
}

/// Subscribes as `token` on its own thread; items arrive on the receiver.
pub(crate) fn subscribe(url: &str, token: &str) -> mpsc::Receiver<pb::Event> {
    let (tx, rx) = mpsc::channel();
    let (url, token) = (url.to_owned(), token.to_owned());
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let mut client = pb::subscribe_client::SubscribeClient::connect(url)
                .await
                .expect("connect");
            let mut request = tonic::Request::new(pb::SubscribeRequest { filter: None });
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
            let mut stream = client
                .subscribe(request)
                .await
                .expect("subscribe")
                .into_inner();
            let _ = ready_tx.send(());
            while let Ok(Some(item)) = stream.message().await {
                if let Some(pb::subscribe_item::Item::Event(e)) = item.item {
                    if tx.send(e).is_err() {
                        return;
                    }
                }
            }
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("subscribed");
    rx
}

/// Everything `rx` receives until it has seen an alert of each of `namespaces` or `within`.
fn collect_live(
    rx: &mpsc::Receiver<pb::Event>,
    namespaces: &[&str],
    within: Duration,
) -> Vec<pb::Event> {
    let deadline = Instant::now() + within;
    let mut out: Vec<pb::Event> = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(e) = rx.recv_timeout(left) else { break };
        out.push(e);
        let done = namespaces.iter().all(|ns| {
            out.iter()
                .any(|e| alert_of(e).is_some() && namespace_of(e) == *ns)
        });
        if done {
            break;
        }
    }
    out
}

fn investigate<T>(
    url: &str,
    token: &str,
    call: impl for<'a> FnOnce(
        &'a mut pb::investigate_client::InvestigateClient<tonic::transport::Channel>,
        tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<T, tonic::Status>> + 'a>,
    >,
) -> Result<T, tonic::Status> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut client = pb::investigate_client::InvestigateClient::connect(url.to_owned())
            .await
            .expect("connect");
        let header = format!("Bearer {token}").parse().expect("header");
        call(&mut client, header).await
    })
}

fn with_auth<T>(
    message: T,
    header: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", header);
    request
}

fn talkers(url: &str, token: &str) -> Result<pb::TalkersReply, tonic::Status> {
    investigate(url, token, |client, header| {
        Box::pin(async move {
            Ok(client
                .talkers(with_auth(pb::TalkersRequest::default(), header))
                .await?
                .into_inner())
        })
    })
}

fn tree(
    url: &str,
    token: &str,
    pod: &str,
    namespace: &str,
    pid: u32,
) -> Result<pb::ProcessTreeReply, tonic::Status> {
    let request = pb::ProcessTreeRequest {
        pod_name: pod.into(),
        pod_namespace: namespace.into(),
        pid,
        ..pb::ProcessTreeRequest::default()
    };
    investigate(url, token, |client, header| {
        Box::pin(async move {
            Ok(client
                .process_tree(with_auth(request, header))
                .await?
                .into_inner())
        })
    })
}

fn new_activity(url: &str, token: &str) -> Result<pb::NewActivityReply, tonic::Status> {
    let now = procflow::model::now_ns();
    let request = pb::NewActivityRequest {
        window: Some(pb::Window {
            filter: None,
            since: now - 600_000_000_000,
            until: 0,
        }),
        baseline_since: now - 7_200_000_000_000,
        limit: 100,
    };
    investigate(url, token, |client, header| {
        Box::pin(async move {
            Ok(client
                .new_activity(with_auth(request, header))
                .await?
                .into_inner())
        })
    })
}

#[test]
fn a_viewer_of_a_sees_nothing_of_b_through_query_subscribe_and_investigate() {
    let issuer = Issuer::new();
    let rules = tempfile::tempdir().expect("rules");
    std::fs::write(rules.path().join("marker.yaml"), MARKER_RULE).expect("rule");
    let readers_path = issuer.readers(&readers("[a]"));
    let rules_dir = rules.path().to_str().expect("path");
    let agg = issuer.aggregator(&[
        "--readers",
        &readers_path,
        "--rules",
        rules_dir,
        "--no-managed-rules",
    ]);
    let url = agg.url();

    let viewer_live = subscribe(&url, VIEWER);
    let admin_live = subscribe(&url, ADMIN);
    // Pod a talks to pod b's address; pod b talks to a third address.
    report(&issuer, &url, "a", "web-a", "10.9.0.1", "10.9.0.2", 1);
    report(&issuer, &url, "b", "db-b", "10.9.0.2", "10.9.0.3", 2);

    // Subscribe: the viewer's stream carries a's records and alert, nothing of b's.
    let admin_seen = collect_live(&admin_live, &["a", "b"], Duration::from_secs(20));
    assert!(
        ["a", "b"].iter().all(|ns| admin_seen
            .iter()
            .any(|e| alert_of(e).is_some() && namespace_of(e) == *ns)),
        "the admin sees both alerts live"
    );
    let viewer_seen = collect_live(&viewer_live, &["a"], Duration::from_secs(5));
    assert!(viewer_seen
        .iter()
        .any(|e| alert_of(e).is_some() && namespace_of(e) == "a"));
    // What else was queued reaches the viewer within a moment: none of it may be b's.
    std::thread::sleep(Duration::from_millis(500));
    let viewer_all: Vec<pb::Event> = viewer_seen
        .into_iter()
        .chain(viewer_live.try_iter())
        .collect();
    assert!(
        viewer_all.iter().all(|e| namespace_of(e) == "a"),
        "live events of b reached a viewer of a: {:?}",
        viewer_all.iter().map(namespace_of).collect::<Vec<_>>()
    );

    // Query: everything of a, alert included; nothing of b; asking for b is refused.
    let admin_all = query_until(&url, Some(ADMIN), &[], Duration::from_secs(10), |events| {
        events.iter().filter(|e| alert_of(e).is_some()).count() >= 2
    });
    assert!(admin_all.iter().any(|e| namespace_of(e) == "b"));
    let seen = query(&url, Some(VIEWER), &[], &[]).expect("viewer query");
    assert!(seen.iter().any(|e| alert_of(e).is_some()), "a's alert");
    assert!(seen.len() >= 4, "a's records: {}", seen.len());
    assert!(
        seen.iter().all(|e| namespace_of(e) == "a"),
        "the viewer's query returned b: {:?}",
        seen.iter().map(namespace_of).collect::<Vec<_>>()
    );
    let alerts_only = query(&url, Some(VIEWER), &[pb::RecordKind::Alert], &[]).expect("alerts");
    assert!(alerts_only.iter().all(|e| namespace_of(e) == "a") && !alerts_only.is_empty());
    let denied = query(&url, Some(VIEWER), &[], &["b"]).expect_err("asking for b");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        query(&url, Some("not-a-reader"), &[], &[])
            .expect_err("stranger")
            .code(),
        tonic::Code::Unauthenticated
    );

    // Investigate: a's edge only, and b's pod not named as its peer.
    let answer = talkers(&url, VIEWER).expect("viewer talkers");
    assert!(!answer.edges.is_empty());
    for edge in &answer.edges {
        assert_eq!(edge.pod_namespace, "a", "{edge:?}");
        assert_eq!(
            edge.peer_pod_namespace, None,
            "b's pod named for a viewer of a: {edge:?}"
        );
    }
    let admin_answer = talkers(&url, ADMIN).expect("admin talkers");
    assert!(admin_answer.edges.iter().any(|e| e.pod_namespace == "b"));
    assert!(
        admin_answer
            .edges
            .iter()
            .any(|e| e.peer_pod_name.as_deref() == Some("db-b")),
        "the admin's answer names the peer pod"
    );
    let fresh = new_activity(&url, VIEWER).expect("viewer new activity");
    assert!(fresh.edges.iter().all(|e| e.pod_namespace == "a"));
    assert!(fresh.executables.iter().all(|x| x.pod_namespace == "a"));
    assert!(!fresh.executables.is_empty(), "a's new executable");
    assert!(tree(&url, VIEWER, "web-a", "", 101).is_ok(), "a's tree");
    assert_eq!(
        tree(&url, VIEWER, "db-b", "", 102)
            .expect_err("b's pod")
            .code(),
        tonic::Code::NotFound
    );
    assert_eq!(
        tree(&url, VIEWER, "db-b", "b", 102)
            .expect_err("b's namespace")
            .code(),
        tonic::Code::PermissionDenied
    );
    assert!(tree(&url, ADMIN, "db-b", "b", 102).is_ok());

    // The grant widens when the file changes, without a restart.
    std::fs::write(&readers_path, readers("[a, b]")).expect("rewrite readers");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = query(&url, Some(VIEWER), &[], &[]).expect("viewer query");
        if seen.iter().any(|e| namespace_of(e) == "b") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the readers file was not reloaded"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A CA and the certificates it signs, with SPIFFE IDs, as PEM files.
struct SpiffePki {
    dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl SpiffePki {
    fn new() -> SpiffePki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().expect("key"))
                .expect("CA");
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
        SpiffePki { dir, ca }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// `name.pem`/`name.key` with `dns` names and the URI SAN `spiffe`, if any.
    fn leaf(&self, name: &str, dns: &[&str], spiffe: Option<&str>) {
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        if let Some(id) = spiffe {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(id.try_into().expect("uri")));
        }
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("certificate");
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).expect("write");
    }

    fn tls(&self, client: &str) -> procflow::transport::TlsFiles {
        procflow::transport::TlsFiles {
            ca: Some(self.path("ca.pem").into()),
            cert: Some(self.path(&format!("{client}.pem")).into()),
            key: Some(self.path(&format!("{client}.key")).into()),
        }
    }
}

/// As `client` over TLS: one ingest stream (with `batches`), or one query; the status on
/// refusal.
fn over(
    url: &str,
    tls: procflow::transport::TlsFiles,
    batches: Option<Vec<pb::Batch>>,
) -> Result<usize, tonic::Status> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let channel = procflow::transport::endpoint(url, &tls)
            .expect("endpoint")
            .connect()
            .await
            .expect("TLS connection");
        match batches {
            Some(batches) => {
                let n = batches.len();
                let mut client = pb::ingest_client::IngestClient::new(channel);
                let mut acks = client
                    .stream(tokio_stream::iter(batches))
                    .await?
                    .into_inner();
                let mut got = 0;
                while got < n {
                    match acks.message().await? {
                        Some(a) if !a.rejected => got += 1,
                        Some(a) => return Err(tonic::Status::invalid_argument(a.error)),
                        None => break,
                    }
                }
                Ok(got)
            }
            None => {
                let mut client = pb::query_client::QueryClient::new(channel);
                let mut stream = client
                    .records(pb::QueryRequest::default())
                    .await?
                    .into_inner();
                let mut n = 0;
                while stream.message().await?.is_some() {
                    n += 1;
                }
                Ok(n)
            }
        }
    })
}

#[test]
fn client_certificates_name_writers_and_readers_by_their_spiffe_id() {
    let pki = SpiffePki::new();
    pki.leaf("server", &["127.0.0.1"], None);
    pki.leaf(
        "web-1",
        &[],
        Some("spiffe://test.example/ns/shop/pod/web-1"),
    );
    pki.leaf(
        "oncall",
        &[],
        Some("spiffe://test.example/ns/sec/sa/oncall"),
    );
    pki.leaf(
        "intruder",
        &[],
        Some("spiffe://test.example/ns/sec/sa/intruder"),
    );
    pki.leaf(
        "foreign",
        &[],
        Some("spiffe://other.example/ns/shop/pod/web-1"),
    );
    let readers_file = pki.path("readers.yaml");
    std::fs::write(
        &readers_file,
        "readers:\n  - name: oncall\n    spiffe: spiffe://test.example/ns/sec/sa/oncall\n    role: viewer\n    namespaces: [shop]\n",
    )
    .expect("readers");
    let agg = crate::pipeline::Aggregator::start(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
        "--tls-client-ca",
        &pki.path("ca.pem"),
        "--spiffe-trust-domain",
        "test.example",
        "--readers",
        &readers_file,
    ]);
    let url = format!("https://127.0.0.1:{}", agg.port);
    let channel = |who: &str| pki.tls(who);
    let own = crate::identity::identity("c1", "shop", "web-1");
    let other = crate::identity::identity("c1", "shop", "db-0");

    assert_eq!(
        over(
            &url,
            channel("web-1"),
            Some(vec![batch(&own, 1, vec![process(5, "cert-writer")])])
        )
        .expect("writes as itself"),
        1
    );
    assert_eq!(
        over(
            &url,
            channel("web-1"),
            Some(vec![batch(&other, 1, vec![heartbeat(1)])])
        )
        .expect_err("as another pod")
        .code(),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        over(
            &url,
            channel("foreign"),
            Some(vec![batch(&own, 2, vec![heartbeat(2)])])
        )
        .expect_err("another trust domain")
        .code(),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        over(&url, channel("oncall"), None).expect("a registered reader"),
        1
    );
    assert_eq!(
        over(&url, channel("intruder"), None)
            .expect_err("not a reader")
            .code(),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        over(&url, channel("web-1"), None)
            .expect_err("a writer reads nothing")
            .code(),
        tonic::Code::PermissionDenied
    );
}
