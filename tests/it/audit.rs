//! Kubernetes audit ingest through the running aggregator: the webhook and Firehose
//! endpoints store each event once whatever is resent, refuse wrong credentials before
//! reading a body, answer hostile bodies with clear errors, keep serving, and speak TLS
//! with the aggregator's certificate; a collector cannot send audit events.

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use procflow::audit::client::AuditClient;
use procflow::model::{AuditStage, Event, Record};
use procflow::proto::v1 as pb;

use crate::pipeline::{free_ports, ingest, Aggregator, TestPki};

pub(crate) const WEBHOOK_TOKEN: &str = "prod-webhook-token-0123456789";
pub(crate) const FIREHOSE_KEY: &str = "prod-firehose-key-0123456789";
const STAGING_TOKEN: &str = "staging-webhook-token-0123456789";

pub(crate) fn fixture(name: &str) -> String {
    let path = format!(
        "{}/src/audit/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("fixture");
    // One line, as the API server writes events.
    serde_json::from_str::<serde_json::Value>(&text)
        .expect("fixture JSON")
        .to_string()
}

/// Writes the clusters file (prod: webhook + Firehose for EKS cluster "prod"; staging:
/// webhook) and its secrets into `dir`; returns the file.
pub(crate) fn clusters_file(dir: &Path) -> String {
    let secret = |name: &str, value: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("{value}\n")).expect("secret");
        path
    };
    let text = format!(
        "[clusters.prod]\nwebhook_token_file = {:?}\nfirehose_access_key_file = {:?}\n[clusters.staging]\nwebhook_token_file = {:?}\n",
        secret("prod-hook", WEBHOOK_TOKEN),
        secret("prod-fire", FIREHOSE_KEY),
        secret("staging-hook", STAGING_TOKEN),
    );
    let file = dir.join("clusters.toml");
    std::fs::write(&file, text).expect("clusters file");
    file.to_string_lossy().into_owned()
}

/// An aggregator with audit endpoints on a port of their own.
pub(crate) struct AuditAggregator {
    pub agg: Aggregator,
    pub audit_port: u16,
    _secrets: tempfile::TempDir,
}

impl AuditAggregator {
    pub(crate) fn start(extra: &[&str]) -> AuditAggregator {
        let secrets = tempfile::tempdir().expect("dir");
        let clusters = clusters_file(secrets.path());
        let [audit_port] = free_ports::<1>();
        let listen = format!("127.0.0.1:{audit_port}");
        let mut args = vec!["--audit-listen", &listen, "--audit-clusters", &clusters];
        args.extend_from_slice(extra);
        AuditAggregator {
            agg: Aggregator::start(&args),
            audit_port,
            _secrets: secrets,
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.audit_port)
    }

    /// Every stored audit event (they are stored at the API server's time: the fixtures' is
    /// days back).
    pub(crate) fn audit_events(&self) -> Vec<Event> {
        self.agg.query_since("audit", "3650d")
    }
}

/// POSTs with a client of its own; returns the status and the body as JSON (or text).
pub(crate) fn post(
    endpoint: &str,
    ca: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, serde_json::Value), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut client =
            AuditClient::new(endpoint, ca.map(Path::new)).map_err(|e| e.to_string())?;
        let (status, body) = client
            .post(path, headers, body)
            .await
            .map_err(|e| e.to_string())?;
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
        Ok((status.as_u16(), json))
    })
}

pub(crate) fn webhook(
    endpoint: &str,
    cluster: &str,
    token: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {token}");
    post(
        endpoint,
        None,
        &format!("/audit/webhook/{cluster}"),
        &[("authorization", &auth)],
        body.as_bytes().to_vec(),
    )
    .expect("webhook request")
}

pub(crate) fn event_list(events: &[String]) -> String {
    format!(
        "{{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\"metadata\":{{}},\"items\":[{}]}}",
        events.join(",")
    )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

/// A Firehose request carrying one gzip CloudWatch message of `messages`.
fn firehose_body(request_id: &str, log_group: &str, messages: &[String]) -> String {
    let cloudwatch = serde_json::json!({
        "messageType": "DATA_MESSAGE",
        "owner": "111122223333",
        "logGroup": log_group,
        "logStream": "kube-apiserver-audit-0a1b2c3d4e5f",
        "subscriptionFilters": ["procflow"],
        "logEvents": messages.iter().enumerate().map(|(i, m)| serde_json::json!({
            "id": i.to_string(), "timestamp": 1_796_375_702_123u64, "message": m,
        })).collect::<Vec<_>>(),
    });
    serde_json::json!({
        "requestId": request_id,
        "timestamp": 1_796_375_760_000u64,
        "records": [{"data": base64::engine::general_purpose::STANDARD.encode(gzip(cloudwatch.to_string().as_bytes()))}],
    })
    .to_string()
}

fn firehose(endpoint: &str, key: &str, request_id: &str, body: &str) -> (u16, serde_json::Value) {
    post(
        endpoint,
        None,
        "/audit/firehose/prod",
        &[
            ("x-amz-firehose-access-key", key),
            ("x-amz-firehose-request-id", request_id),
            ("x-amz-firehose-protocol-version", "1.0"),
        ],
        body.as_bytes().to_vec(),
    )
    .expect("firehose request")
}

fn audit_ids(events: &[Event]) -> Vec<(String, AuditStage)> {
    let mut ids: Vec<(String, AuditStage)> = events
        .iter()
        .filter_map(|e| match &e.record {
            Record::Audit(a) => Some((a.audit_id.clone(), a.stage)),
            _ => None,
        })
        .collect();
    ids.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.ordinal().cmp(&b.1.ordinal())));
    ids
}

#[test]
fn webhook_and_firehose_store_each_event_once() {
    let a = AuditAggregator::start(&[]);
    let ep = a.endpoint();
    let list = std::fs::read_to_string(format!(
        "{}/src/audit/fixtures/webhook-eventlist.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    let (status, answer) = webhook(&ep, "prod", WEBHOOK_TOKEN, &list);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["stored"], 5, "{answer}");
    // The API server retries a batch it did not see answered: nothing is stored twice.
    let (status, answer) = webhook(&ep, "prod", WEBHOOK_TOKEN, &list);
    assert_eq!(
        (status, &answer["stored"], &answer["duplicates"]),
        (200, &0.into(), &5.into()),
        "{answer}"
    );

    // EKS: the same exec's stages (two of them new) and a secret read, through Firehose.
    let messages = vec![
        fixture("exec-response-complete"),
        fixture("secret-get-request-response"),
        fixture("clusterrolebinding-create"),
    ];
    let body = firehose_body(
        "ed4acda5-034f-9f42-bba1-f29aea6d7d8f",
        "/aws/eks/prod/cluster",
        &messages,
    );
    let (status, answer) = firehose(
        &ep,
        FIREHOSE_KEY,
        "ed4acda5-034f-9f42-bba1-f29aea6d7d8f",
        &body,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["requestId"], "ed4acda5-034f-9f42-bba1-f29aea6d7d8f");
    assert!(
        answer["timestamp"]
            .as_u64()
            .is_some_and(|t| t > 1_700_000_000_000),
        "{answer}"
    );
    assert!(answer.get("errorMessage").is_none(), "{answer}");
    // A replayed request (same ID, same records) is answered and stores nothing again; so
    // is the same records under a new ID (a retry after a configuration change).
    let (status, again) = firehose(
        &ep,
        FIREHOSE_KEY,
        "ed4acda5-034f-9f42-bba1-f29aea6d7d8f",
        &body,
    );
    assert_eq!((status, &again["requestId"]), (200, &answer["requestId"]));
    let (status, _) = firehose(&ep, FIREHOSE_KEY, "another-id", &body);
    assert_eq!(status, 200);

    let events = a.audit_events();
    let ids = audit_ids(&events);
    assert_eq!(
        ids.len(),
        7,
        "5 from the webhook + 2 new from Firehose: {ids:?}"
    );
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique, ids, "each (audit ID, stage) once");
    for e in &events {
        let Record::Audit(r) = &e.record else {
            continue;
        };
        assert_eq!(r.cluster, "prod");
        assert_eq!(e.source.collector_id, "k8s-audit/prod");
        assert_eq!(
            e.received_at, r.stage_time,
            "stored at the API server's time"
        );
        if r.is_pod_exec() {
            assert_eq!(e.source.pod_name, "web-7c9f8d6b5-x2k4q");
            assert_eq!(e.source.pod_namespace, "shop");
        }
    }
    // A reused audit ID (a client may set the Audit-ID header) with another request time is
    // another request: stored, not taken for a redelivery.
    let mut reused: serde_json::Value =
        serde_json::from_str(&fixture("exec-request-received")).expect("json");
    reused["requestReceivedTimestamp"] = "2026-12-04T10:00:00.000001Z".into();
    reused["stageTimestamp"] = "2026-12-04T10:00:00.000001Z".into();
    let (status, answer) = webhook(
        &ep,
        "prod",
        WEBHOOK_TOKEN,
        &event_list(&[reused.to_string()]),
    );
    assert_eq!((status, &answer["stored"]), (200, &1.into()), "{answer}");
}

#[test]
fn wrong_credentials_are_refused_before_the_body_is_read() {
    let a = AuditAggregator::start(&[]);
    let ep = a.endpoint();
    let list = event_list(&[fixture("exec-request-received")]);
    for (cluster, token, why) in [
        ("prod", STAGING_TOKEN, "another cluster's token"),
        (
            "staging",
            WEBHOOK_TOKEN,
            "this token on another cluster's path",
        ),
        ("prod", FIREHOSE_KEY, "the Firehose key on the webhook"),
        ("nowhere", WEBHOOK_TOKEN, "a cluster that is not configured"),
        ("prod", "", "an empty token"),
    ] {
        let (status, answer) = webhook(&ep, cluster, token, &list);
        assert_eq!(status, 401, "{why}: {answer}");
        assert!(answer["error"].is_string(), "{why}: {answer}");
    }
    let (status, answer) = post(
        &ep,
        None,
        "/audit/webhook/prod",
        &[],
        list.clone().into_bytes(),
    )
    .expect("request");
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("no credential presented"))
    );
    // Firehose: refused in Firehose's format, with the request ID.
    let body = firehose_body(
        "r-1",
        "/aws/eks/prod/cluster",
        &[fixture("exec-request-received")],
    );
    let (status, answer) = firehose(&ep, WEBHOOK_TOKEN, "r-1", &body);
    assert_eq!(
        (status, &answer["requestId"]),
        (401, &"r-1".into()),
        "{answer}"
    );
    assert!(answer["errorMessage"].is_string());
    // A refused request was not remembered: the right key then stores it.
    let (status, _) = firehose(&ep, FIREHOSE_KEY, "r-1", &body);
    assert_eq!(status, 200);
    assert_eq!(
        a.audit_events().len(),
        1,
        "only the accepted request stored anything"
    );
}

#[test]
fn hostile_bodies_get_clear_errors_and_the_aggregator_keeps_serving() {
    let a = AuditAggregator::start(&[]);
    let ep = a.endpoint();
    let send = |body: Vec<u8>| {
        let auth = format!("Bearer {WEBHOOK_TOKEN}");
        post(
            &ep,
            None,
            "/audit/webhook/prod",
            &[("authorization", &auth)],
            body,
        )
    };
    // Malformed JSON.
    let (status, answer) = send(b"{\"items\": [ {\"auditID\": ".to_vec()).expect("answered");
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().is_some_and(|e| e.contains("EOF")),
        "{answer}"
    );
    // A bomb of nested objects.
    let bomb = format!(
        "{{\"items\":[{}1{}]}}",
        "{\"a\":".repeat(200_000),
        "}".repeat(200_000)
    );
    let (status, answer) = send(bomb.into_bytes()).expect("answered");
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("nested deeper than 100")),
        "{answer}"
    );
    // Wrong types: the item is rejected with its path, the good one beside it is stored.
    let mut wrong: serde_json::Value =
        serde_json::from_str(&fixture("exec-response-started")).expect("json");
    wrong["responseStatus"]["code"] = "one hundred and one".into();
    let (status, answer) =
        send(event_list(&[fixture("exec-request-received"), wrong.to_string()]).into_bytes())
            .expect("answered");
    assert_eq!(
        (status, &answer["stored"], &answer["rejected"]),
        (200, &1.into(), &1.into()),
        "{answer}"
    );
    assert!(
        answer["errors"][0]
            .as_str()
            .is_some_and(|e| e.starts_with("items[1].responseStatus.code: invalid type: string")),
        "{answer}"
    );
    // A 50 MB batch: refused as too large (413, permanent for Firehose), nothing stored.
    let item = fixture("exec-response-complete");
    let mut big = String::with_capacity(52 << 20);
    big.push_str("{\"items\":[");
    while big.len() < 50_000_000 {
        big.push_str(&item);
        big.push(',');
    }
    big.push_str(&item);
    big.push_str("]}");
    match send(big.into_bytes()) {
        Ok((status, answer)) => {
            assert_eq!(status, 413, "{answer}");
            assert!(
                answer["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("--audit-max-body-bytes")),
                "{answer}"
            );
        }
        // The server may close before the client finished sending its 50 MB.
        Err(e) => assert!(e.contains("HTTP") || e.contains("connect"), "{e}"),
    }
    // A gzip body that inflates past the bound.
    let auth = format!("Bearer {WEBHOOK_TOKEN}");
    let (status, answer) = post(
        &ep,
        None,
        "/audit/webhook/prod",
        &[("authorization", &auth), ("content-encoding", "gzip")],
        gzip(&vec![b' '; 20 << 20]),
    )
    .expect("answered");
    assert_eq!(status, 413, "{answer}");
    // Still serving: a good request is stored, and gRPC queries answer.
    let (status, answer) =
        send(event_list(&[fixture("deployment-update-panic")]).into_bytes()).expect("answered");
    assert_eq!((status, &answer["stored"]), (200, &1.into()), "{answer}");
    let ids = audit_ids(&a.audit_events());
    assert_eq!(ids.len(), 2, "the good item and the last request: {ids:?}");
}

#[test]
fn tls_with_the_aggregators_certificate() {
    let pki = TestPki::new();
    pki.leaf("server", &["127.0.0.1", "localhost"], true);
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let a = AuditAggregator::start(&["--tls-cert", &cert, "--tls-key", &key]);
    let https = format!("https://127.0.0.1:{}", a.audit_port);
    let auth = format!("Bearer {WEBHOOK_TOKEN}");
    let body = event_list(&[fixture("exec-request-received")]).into_bytes();
    let (status, answer) = post(
        &https,
        Some(&ca),
        "/audit/webhook/prod",
        &[("authorization", &auth)],
        body.clone(),
    )
    .expect("TLS request");
    assert_eq!((status, &answer["stored"]), (200, &1.into()), "{answer}");
    // Plain HTTP to the TLS port is not served.
    let plain = post(
        &a.endpoint(),
        None,
        "/audit/webhook/prod",
        &[("authorization", &auth)],
        body,
    );
    assert!(
        plain.is_err() || plain.as_ref().is_ok_and(|(s, _)| *s != 200),
        "{plain:?}"
    );
}

#[test]
fn a_collector_cannot_send_audit_events() {
    let a = AuditAggregator::start(&[]);
    let record = procflow::audit::event::decode_event(
        fixture("exec-request-received").as_bytes(),
        "prod",
        &mut Default::default(),
    )
    .expect("fixture");
    let batch = pb::Batch {
        identity: Some(procflow::wire::identity_to_proto(
            &crate::pipeline::identity("forger"),
        )),
        seq: 1,
        sent_at: 0,
        records: vec![procflow::wire::record_to_proto(&Record::Audit(Box::new(
            record,
        )))],
    };
    let acks = ingest(&a.agg.url(), None, vec![batch]).expect("stream");
    assert!(acks[0].rejected, "{:?}", acks[0]);
    assert!(
        acks[0].error.contains("may not send audit events"),
        "{}",
        acks[0].error
    );
    assert!(a.audit_events().is_empty());
}

#[test]
fn hostile_firehose_requests_are_answered_in_firehoses_format_and_nothing_is_stored_twice() {
    let a = AuditAggregator::start(&[]);
    let ep = a.endpoint();
    let refused = |status: u16, answer: &serde_json::Value, id: &str, wanted: &str| {
        let expected = if wanted.contains("max-body") {
            413
        } else {
            400
        };
        assert_eq!(status, expected, "{answer}");
        assert_eq!(answer["requestId"], id, "{answer}");
        assert!(
            answer["errorMessage"]
                .as_str()
                .is_some_and(|e| e.contains(wanted)),
            "{answer} (wanted {wanted})"
        );
    };
    // A bomb of nested arrays in the envelope itself.
    let bomb = format!("{}1{}", "[".repeat(200_000), "]".repeat(200_000));
    let (status, answer) = firehose(&ep, FIREHOSE_KEY, "bomb-1", &bomb);
    refused(status, &answer, "bomb-1", "nested deeper");
    // A 50 MB request (Firehose's buffer is configured below the bound; this is not Firehose).
    let item = fixture("exec-response-complete");
    let mut huge = String::with_capacity(52 << 20);
    huge.push_str("{\"requestId\":\"huge-1\",\"timestamp\":1,\"records\":[");
    let record = format!(
        "{{\"data\":\"{}\"}}",
        base64::engine::general_purpose::STANDARD.encode(item.as_bytes())
    );
    while huge.len() < 50_000_000 {
        huge.push_str(&record);
        huge.push(',');
    }
    huge.push_str(&record);
    huge.push_str("]}");
    match post(
        &ep,
        None,
        "/audit/firehose/prod",
        &[
            ("x-amz-firehose-access-key", FIREHOSE_KEY),
            ("x-amz-firehose-request-id", "huge-1"),
        ],
        huge.into_bytes(),
    ) {
        Ok((status, answer)) => refused(status, &answer, "huge-1", "--audit-max-body-bytes"),
        // The server may close before the client finished sending its 50 MB.
        Err(e) => assert!(e.contains("HTTP") || e.contains("connect"), "{e}"),
    }
    // A nested-object bomb as one audit event of a CloudWatch message, beside a good one:
    // that record is rejected, the good one stored, once however often the request comes.
    let nested = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    let body = firehose_body(
        "mixed-1",
        "/aws/eks/prod/cluster",
        &[nested, fixture("secret-get-request-response")],
    );
    for id in ["mixed-1", "mixed-1", "mixed-2"] {
        let (status, answer) = firehose(&ep, FIREHOSE_KEY, id, &body);
        assert_eq!(
            (status, &answer["requestId"]),
            (200, &id.into()),
            "{answer}"
        );
    }
    // Still serving: gRPC queries answer, and exactly the good event is stored.
    let ids = audit_ids(&a.audit_events());
    assert_eq!(ids.len(), 1, "{ids:?}");
}
