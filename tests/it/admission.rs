//! Attacks on the aggregator by a client that holds a valid credential, each against a
//! real aggregator process: a query with a huge limit, a filter of 150,000 names, a
//! thousand idle ingest streams, a 16 MiB frame of empty records, a rule nested 3,000 deep.
//! Each is bounded (refused, or served in bounded memory and time), counted in the
//! aggregator's metrics, and the aggregator keeps serving everyone else.

use std::time::{Duration, Instant};

use bytes::BufMut;
use procflow::codec::EncodedBatch;
use procflow::proto::v1 as pb;
use prost::Message;

use crate::pipeline::{batch, free_ports, http_get, identity, ingest, Aggregator};
use crate::util::procflow_bin;

/// An aggregator with its metrics endpoint; returns it and the metrics port.
pub fn aggregator(extra: &[&str]) -> (Aggregator, u16) {
    let [grpc, metrics] = free_ports::<2>();
    let listen = format!("127.0.0.1:{metrics}");
    let mut args = vec!["--metrics-listen", listen.as_str()];
    args.extend_from_slice(extra);
    (Aggregator::start_on(grpc, &args), metrics)
}

/// A counter's value in the aggregator's metrics (0 when absent).
pub fn metric(port: u16, series: &str) -> f64 {
    http_get(port, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn refused(port: u16, limit: &str) -> f64 {
    metric(
        port,
        &format!("procflow_admission_refused_total{{limit=\"{limit}\"}}"),
    )
}

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

/// Stores `batches` batches of `per_batch` heartbeats as `collector`.
fn fill(agg: &Aggregator, collector: &str, batches: u64, per_batch: u64) {
    let id = identity(collector);
    let acks = ingest(
        &agg.url(),
        None,
        (1..=batches)
            .map(|s| batch(&id, s, s * per_batch, per_batch))
            .collect(),
    )
    .expect("ingest");
    assert!(acks.len() == batches as usize && acks.iter().all(|a| !a.rejected));
}

#[test]
fn a_huge_query_limit_is_refused_and_a_stalled_answer_ends_at_its_deadline() {
    let (agg, metrics) = aggregator(&["--no-detection", "--query-timeout", "3s"]);
    // 100,000 events, some 7 MB of answer: more than the buffers between the store and a
    // client that stopped reading (HTTP/2 windows, the server's channel) hold.
    fill(&agg, "query-limit", 100, 1000);
    let url = agg.url();
    let rt = runtime();
    let mut client = rt
        .block_on(pb::query_client::QueryClient::connect(url))
        .expect("connect");
    // The huge limit: refused before anything is read, and the refusal says the maximum.
    let status = rt
        .block_on(client.records(pb::QueryRequest {
            limit: u32::MAX,
            ..pb::QueryRequest::default()
        }))
        .expect_err("a limit of 4 billion is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("100000"), "{status:?}");
    assert_eq!(refused(metrics, "query_limit"), 1.0);

    // The largest allowed query, read by a client that stalls after its first event: the
    // answer streams from the store as it is read (a bounded buffer, not all 100,000 built
    // first), so the stall holds the store's reader until the deadline ends the query.
    let (received, end) = rt.block_on(async {
        let mut answer = client
            .records(pb::QueryRequest::default())
            .await
            .expect("query")
            .into_inner();
        let first = answer.message().await.expect("first event");
        assert!(first.is_some());
        tokio::time::sleep(Duration::from_secs(8)).await;
        let mut received = 1usize;
        loop {
            match answer.message().await {
                Ok(Some(_)) => received += 1,
                Ok(None) => break (received, None),
                Err(status) => break (received, Some(status)),
            }
        }
    });
    let end = end.expect("the stalled query ended with an error, not a silent cut");
    assert_eq!(end.code(), tonic::Code::DeadlineExceeded, "{end:?}");
    assert!(received < 100_000, "{received} events: the answer was cut");
    assert_eq!(refused(metrics, "query_timeout"), 1.0);
    // A reader that keeps up gets everything it asked for.
    let all = rt.block_on(async {
        let mut answer = client
            .records(pb::QueryRequest {
                limit: 5_000,
                ..pb::QueryRequest::default()
            })
            .await
            .expect("query")
            .into_inner();
        let mut n = 0usize;
        while answer.message().await.expect("event").is_some() {
            n += 1;
        }
        n
    });
    assert_eq!(all, 5_000);
}

/// 150,000 pod names: about 2.5 MB, under the 4 MiB message limit.
fn huge_filter() -> pb::Filter {
    pb::Filter {
        pods: (0..150_000).map(|i| format!("pod-{i:08}")).collect(),
        ..pb::Filter::default()
    }
}

#[test]
fn a_huge_filter_is_refused_and_a_large_one_matches_as_a_set() {
    let (agg, metrics) = aggregator(&["--no-detection"]);
    let rt = runtime();
    let url = agg.url();
    let (mut subscribe, mut query) = rt.block_on(async {
        (
            pb::subscribe_client::SubscribeClient::connect(url.clone())
                .await
                .expect("connect"),
            pb::query_client::QueryClient::connect(url)
                .await
                .expect("connect"),
        )
    });
    let status = rt
        .block_on(subscribe.subscribe(pb::SubscribeRequest {
            filter: Some(huge_filter()),
        }))
        .expect_err("150,000 names refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("filter.pods has 150000 values"),
        "{status:?}"
    );
    let status = rt
        .block_on(query.records(pb::QueryRequest {
            filter: Some(huge_filter()),
            ..pb::QueryRequest::default()
        }))
        .expect_err("refused for queries too");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(refused(metrics, "filter_values"), 2.0);

    // At the bound (10,000 names) a subscription is served, and matches exactly its pods.
    let mut filter = pb::Filter {
        pods: (0..9_999).map(|i| format!("pod-{i:08}")).collect(),
        ..pb::Filter::default()
    };
    filter.pods.push("pod-a".into());
    let mut live = rt
        .block_on(subscribe.subscribe(pb::SubscribeRequest {
            filter: Some(filter),
        }))
        .expect("10,000 names accepted")
        .into_inner();
    let mut elsewhere = identity("filter-other");
    elsewhere.pod_name = "pod-b".into();
    let acks = ingest(
        &agg.url(),
        None,
        vec![
            batch(&elsewhere, 1, 0, 5),
            batch(&identity("filter-mine"), 1, 100, 3),
        ],
    )
    .expect("ingest");
    assert_eq!(acks.len(), 2);
    let pods: Vec<String> = rt.block_on(async {
        let mut pods = Vec::new();
        while pods.len() < 3 {
            let item = tokio::time::timeout(Duration::from_secs(10), live.message())
                .await
                .expect("live events within 10 s")
                .expect("stream")
                .expect("open");
            if let Some(pb::subscribe_item::Item::Event(e)) = item.item {
                pods.push(e.source.expect("source").pod_name);
            }
        }
        pods
    });
    assert_eq!(pods, vec!["pod-a"; 3], "only pod-a's events");
}

#[test]
fn idle_ingest_streams_past_the_bound_are_refused_and_ingest_goes_on() {
    let (agg, metrics) = aggregator(&["--no-detection"]);
    let url = agg.url();
    let rt = runtime();
    // A thousand ingest streams from one identity (this host) that never send a batch.
    let (held, refusals) = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut opens = tokio::task::JoinSet::new();
        for _ in 0..1000 {
            let mut client = pb::ingest_client::IngestClient::new(channel.clone());
            opens.spawn(async move {
                client
                    .stream(tokio_stream::pending::<pb::Batch>())
                    .await
                    .map(tonic::Response::into_inner)
            });
        }
        let (mut held, mut refusals) = (Vec::new(), Vec::new());
        while let Some(opened) = opens.join_next().await {
            match opened.expect("join") {
                Ok(acks) => held.push(acks),
                Err(status) => refusals.push(status),
            }
        }
        (held, refusals)
    });
    assert_eq!(held.len(), 8, "the default bound per identity");
    assert_eq!(refusals.len(), 992);
    assert!(refusals
        .iter()
        .all(|s| s.code() == tonic::Code::ResourceExhausted));
    assert_eq!(refused(metrics, "ingest_streams"), 992.0);
    assert!(
        agg.log().contains("admission refused a request"),
        "the refusals are logged"
    );
    assert!(
        agg.log().matches("admission refused a request").count() < 10,
        "sampled, not one line per refusal"
    );

    // Another identity (another host: 127.0.0.2) ingests while they are held.
    let other = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("endpoint")
            .local_address(Some("127.0.0.2".parse().expect("ip")))
            .connect()
            .await
            .expect("connect from 127.0.0.2");
        let mut client = pb::ingest_client::IngestClient::new(channel);
        let mut acks = client
            .stream(tokio_stream::iter(vec![batch(
                &identity("idle-other"),
                1,
                0,
                10,
            )]))
            .await
            .expect("stream")
            .into_inner();
        acks.message().await.expect("ack").expect("an ack")
    });
    assert!(!other.rejected);
    // Closing the idle streams (their connection) gives their slots back.
    drop(held);
    drop(rt);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ingest(&url, None, vec![batch(&identity("idle-after"), 1, 0, 1)]) {
            Ok(acks) if acks.len() == 1 => break,
            _ => assert!(Instant::now() < deadline, "slots came back"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_frame_of_millions_of_empty_records_is_refused_before_it_costs_memory() {
    let (agg, metrics) = aggregator(&["--no-detection"]);
    // Warm up, then read the high-water mark.
    fill(&agg, "frame-warmup", 2, 100);
    let before = peak_rss_kib(agg.pid());
    // 8,000,000 empty records (2 bytes each) in one 16 MB frame, under the 16 MiB limit.
    let mut bytes = pb::Batch {
        identity: Some(procflow::wire::identity_to_proto(&identity("frame"))),
        seq: 1,
        sent_at: 0,
        records: Vec::new(),
    }
    .encode_to_vec();
    for _ in 0..8_000_000 {
        bytes.put_slice(&[0x22, 0x00]);
    }
    assert!(bytes.len() < 16 << 20);
    let ack = runtime().block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(agg.url())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let request = tonic::Request::new(tokio_stream::iter(vec![EncodedBatch {
            seq: 1,
            records: 8_000_000,
            bytes: bytes.into(),
        }]));
        let mut acks = grpc
            .streaming(
                request,
                procflow::codec::ingest_stream_path(),
                procflow::codec::EncodedBatchCodec,
            )
            .await
            .expect("stream")
            .into_inner();
        acks.message().await.expect("ack").expect("an ack")
    });
    assert!(
        ack.rejected && ack.error.contains("8000000 records exceeds"),
        "{ack:?}"
    );
    let grown = peak_rss_kib(agg.pid()).saturating_sub(before) / 1024;
    // The frame itself (16 MiB, buffered while it arrives and parsed in place) and no
    // more: a range kept per record cost 128 MiB on top.
    assert!(grown < 100, "peak RSS grew {grown} MiB for a 16 MiB frame");
    assert_eq!(metric(metrics, "procflow_batches_rejected_total"), 1.0);
    fill(&agg, "frame-after", 1, 10);
}

#[test]
fn a_client_that_hangs_up_is_counted_as_such_not_as_a_rejected_batch() {
    let (agg, metrics) = aggregator(&["--no-detection"]);
    let id = identity("hang-up");
    runtime().block_on(async {
        let mut client = pb::ingest_client::IngestClient::connect(agg.url())
            .await
            .expect("connect");
        // One valid batch, then a request stream that never ends: the client leaves with
        // its stream open, as a collector that read its ack and was killed does.
        let batches = tokio_stream::StreamExt::chain(
            tokio_stream::iter(vec![batch(&id, 1, 1, 10)]),
            tokio_stream::pending(),
        );
        let mut acks = client.stream(batches).await.expect("stream").into_inner();
        let ack = acks.message().await.expect("ack").expect("an ack");
        assert!(!ack.rejected, "{ack:?}");
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(metrics, "procflow_ingest_streams_hung_up_total") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the hang-up was not counted: rejected {}",
            metric(metrics, "procflow_batches_rejected_total")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(metrics, "procflow_batches_rejected_total"), 0.0);
}

/// A condition 3,000 levels deep (it overflowed the parser's stack).
fn deep_rule() -> String {
    format!(
        "rules:\n- id: DEEP\n  name: deep\n  severity: low\n  kinds: [process]\n  condition: '{}proc.pid == 1{}'\n  output: x\n",
        "(".repeat(3000),
        ")".repeat(3000)
    )
}

#[test]
fn a_deep_rule_fails_validation_and_a_running_aggregators_reload_which_survives() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("deep.yaml"), deep_rule()).expect("rule");
    let out = std::process::Command::new(procflow_bin())
        .args(["rules", "validate"])
        .arg(dir.path())
        .output()
        .expect("validate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("rule DEEP: condition 1:65: condition nested deeper than 64 levels"),
        "{stderr}"
    );

    // Hot reload: the running aggregator keeps its rules and keeps serving.
    let rules = tempfile::tempdir().expect("rules");
    let (mut agg, metrics) = aggregator(&["--rules", rules.path().to_str().expect("path")]);
    std::fs::write(rules.path().join("deep.yaml"), deep_rule()).expect("deep rule");
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(metrics, "procflow_rule_reload_failures_total") < 1.0 {
        assert!(agg.is_running(), "the aggregator died reloading the rule");
        assert!(Instant::now() < deadline, "no reload attempt seen");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(agg.is_running());
    assert!(agg.log().contains("nested deeper than 64 levels"));
    fill(&agg, "deep-after", 1, 10);
}
