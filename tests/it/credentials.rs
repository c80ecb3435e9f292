//! Credentials as an attacker inside the watched pod meets them: the collector's cannot be
//! read by a process of its own uid, it never takes one from its environment, empty ones
//! are refused on both sides, and the command-line clients send the one they are given.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use procflow::model::{CollectorIdentity, Heartbeat, Record};
use procflow::proto::v1 as pb;
use procflow::wire;

use crate::pipeline::Aggregator;
use crate::util::{procflow_bin, Collector, UNPRIVILEGED};

/// Runs `args` as `nobody` (the collector's uid in these tests), without capabilities.
fn as_nobody(args: &[&str]) -> std::process::Output {
    Command::new(UNPRIVILEGED[0])
        .args(&UNPRIVILEGED[1..])
        .args(args)
        .output()
        .expect("setpriv")
}

#[test]
fn a_process_of_the_collectors_uid_cannot_read_its_environment_root_or_fds() {
    let collector = Collector::start(
        &UNPRIVILEGED,
        &["--poll-interval", "100ms", "--no-exec-wakeups"],
    );
    let pid = collector.pid().to_string();
    let out = as_nobody(&["cat", &format!("/proc/{pid}/environ")]);
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "/proc/{pid}/environ was readable by its uid: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    for dir in ["root/", "fd/"] {
        let out = as_nobody(&["ls", &format!("/proc/{pid}/{dir}")]);
        assert!(
            !out.status.success(),
            "/proc/{pid}/{dir} was listable by its uid: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // The same uid can read an ordinary process of its own: the refusal above is the
    // collector's protection, not the test's set-up.
    let mut own = Command::new(UNPRIVILEGED[0])
        .args(&UNPRIVILEGED[1..])
        .args(["sleep", "30"])
        .spawn()
        .expect("sleep");
    std::thread::sleep(Duration::from_millis(200));
    let environ = as_nobody(&["cat", &format!("/proc/{}/environ", own.id())]);
    let root = as_nobody(&["ls", &format!("/proc/{}/root/", own.id())]);
    let _ = own.kill();
    let _ = own.wait();
    assert!(
        environ.status.success() && root.status.success(),
        "control: a process of the same uid is readable"
    );
    // And the collector still watches: it saw processes and sockets.
    let records = collector.stop();
    assert!(records.iter().any(|r| matches!(r, Record::Process(_))));
}

#[test]
fn the_collector_refuses_a_token_in_its_environment_and_an_empty_token_file() {
    let out = Command::new(procflow_bin())
        .args(["collector", "--output", "grpc", "--duration", "1s"])
        .env("PROCFLOW_TOKEN", "visible-to-the-app")
        .output()
        .expect("collector");
    assert!(
        !out.status.success(),
        "a token in the environment was taken"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--token-file only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().expect("dir");
    let empty = dir.path().join("token");
    std::fs::write(&empty, "\n").expect("write");
    let out = Command::new(procflow_bin())
        .args([
            "collector",
            "--output",
            "grpc",
            "--duration",
            "1s",
            "--token-file",
        ])
        .arg(&empty)
        .output()
        .expect("collector");
    assert!(!out.status.success(), "an empty token file was taken");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_aggregator_refuses_an_empty_token_file_and_never_accepts_an_empty_bearer() {
    let dir = tempfile::tempdir().expect("dir");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").expect("write");
    let out = Command::new(procflow_bin())
        .args(["aggregator", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--token-file")
        .arg(&empty)
        .output()
        .expect("aggregator");
    assert!(!out.status.success(), "an empty token file was taken");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));

    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("write");
    let agg = Aggregator::start(&["--token-file", token.to_str().expect("path")]);
    for header in ["Bearer ", "Bearer    ", "Bearer", ""] {
        let status = query_with_header(&agg.url(), header).expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{header:?}");
    }
    query_with_header(&agg.url(), "Bearer s3cret").expect("the real token is served");
}

/// One `Query.Records` call with `authorization: <header>` exactly as given.
fn query_with_header(url: &str, header: &str) -> Result<(), tonic::Status> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = pb::query_client::QueryClient::connect(url.to_owned())
            .await
            .expect("connect");
        let mut request = tonic::Request::new(pb::QueryRequest::default());
        if !header.is_empty() {
            request
                .metadata_mut()
                .insert("authorization", header.parse().expect("header"));
        }
        let mut stream = client.records(request).await?.into_inner();
        while stream.message().await?.is_some() {}
        Ok(())
    })
}

/// Stores one heartbeat as collector `id`, authenticated with `token`.
fn store_heartbeat(url: &str, token: &str, id: &str) {
    let batch = pb::Batch {
        identity: Some(wire::identity_to_proto(&CollectorIdentity {
            collector_id: id.into(),
            pod_name: "pod-t".into(),
            pod_namespace: "ns-t".into(),
            ..CollectorIdentity::default()
        })),
        seq: 1,
        sent_at: 0,
        records: vec![wire::record_to_proto(&Record::Heartbeat(Heartbeat {
            time: 42,
            ..Heartbeat::default()
        }))],
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = pb::ingest_client::IngestClient::connect(url.to_owned())
            .await
            .expect("connect");
        let mut request = tonic::Request::new(tokio_stream::iter(vec![batch]));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let mut acks = client.stream(request).await.expect("stream").into_inner();
        let ack = acks.message().await.expect("ack").expect("one ack");
        assert!(!ack.rejected, "{ack:?}");
    });
}

#[test]
fn tail_query_and_investigate_send_the_token_from_the_flag_and_the_environment() {
    let dir = tempfile::tempdir().expect("dir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("write");
    let agg = Aggregator::start(&["--token-file", token.to_str().expect("path")]);
    store_heartbeat(&agg.url(), "s3cret", "token-flag-test");
    let url = agg.url();
    let query = |extra: &[&str], env: Option<&str>| {
        let mut command = Command::new(procflow_bin());
        command.args([
            "query",
            "--aggregator",
            &url,
            "--json",
            "--kind",
            "heartbeat",
        ]);
        command.args(extra).env_remove("PROCFLOW_TOKEN");
        if let Some(value) = env {
            command.env("PROCFLOW_TOKEN", value);
        }
        command.output().expect("query")
    };
    for (how, out) in [
        ("--token", query(&["--token", "s3cret"], None)),
        ("PROCFLOW_TOKEN", query(&[], Some("s3cret"))),
        (
            "--token-file",
            query(&["--token-file", token.to_str().expect("path")], None),
        ),
    ] {
        assert!(
            out.status.success(),
            "query with {how}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("token-flag-test"),
            "query with {how} returned the stored heartbeat"
        );
    }
    assert!(!query(&["--token", "wrong"], None).status.success());

    let investigate = Command::new(procflow_bin())
        .args([
            "investigate",
            "talkers",
            "--aggregator",
            &url,
            "--token",
            "s3cret",
        ])
        .output()
        .expect("investigate");
    assert!(
        investigate.status.success(),
        "{}",
        String::from_utf8_lossy(&investigate.stderr)
    );

    // tail with the token from its environment stays subscribed; with a wrong one it ends
    // at once with the server's refusal.
    let tail = |value: &str| {
        Command::new(procflow_bin())
            .args(["tail", "--aggregator", &url])
            .env("PROCFLOW_TOKEN", value)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tail")
    };
    let mut good = tail("s3cret");
    let mut bad = tail("wrong");
    let deadline = Instant::now() + Duration::from_secs(10);
    let bad_status = loop {
        if let Some(status) = bad.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "tail with a wrong token kept running"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!bad_status.success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        good.try_wait().expect("wait").is_none(),
        "tail with PROCFLOW_TOKEN was refused"
    );
    let _ = good.kill();
    let _ = good.wait();
}

/// An attacker without the credential hammers the aggregator: 2,000 refused calls are all
/// counted, and the log holds a sample of them, not 2,000 lines.
#[test]
fn a_flood_of_bad_credentials_is_counted_whole_and_logged_sampled() {
    let dir = tempfile::tempdir().expect("dir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("write");
    let (agg, metrics) =
        crate::admission::aggregator(&["--token-file", token.to_str().expect("path")]);
    const CALLS: usize = 2_000;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let codes = runtime.block_on(async {
        let mut client = pb::query_client::QueryClient::connect(agg.url())
            .await
            .expect("connect");
        let mut codes = Vec::with_capacity(CALLS);
        for i in 0..CALLS {
            let mut request = tonic::Request::new(pb::QueryRequest::default());
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer guess-{i}").parse().expect("header"),
            );
            codes.push(
                client
                    .records(request)
                    .await
                    .map(|_| ())
                    .err()
                    .map(|s| s.code()),
            );
        }
        codes
    });
    assert!(
        codes
            .iter()
            .all(|c| *c == Some(tonic::Code::Unauthenticated)),
        "every guess refused"
    );
    let counted = crate::admission::metric(metrics, "procflow_auth_rejected_total");
    assert_eq!(counted, CALLS as f64, "every refusal counted");
    let logged = agg.log().matches("refused a request").count();
    assert!(logged >= 1, "the refusals are logged");
    assert!(
        logged < 50,
        "{logged} lines for {CALLS} refusals: not sampled"
    );
}
