//! The Firehose and CloudWatch envelopes around the schema fixtures, built as AWS documents
//! them, and hostile records.

use std::io::Write;

use super::*;
use crate::audit::event::tests::fixture;
use crate::model::AuditStage;

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A CloudWatch Logs subscription message holding `messages` (one audit event each).
pub(crate) fn subscription_message(log_group: &str, log_stream: &str, messages: &[&str]) -> String {
    serde_json::json!({
        "messageType": "DATA_MESSAGE",
        "owner": "111122223333",
        "logGroup": log_group,
        "logStream": log_stream,
        "subscriptionFilters": ["procflow-audit"],
        "logEvents": messages.iter().enumerate().map(|(i, m)| serde_json::json!({
            "id": format!("3795342937465328374658234756283746582374658237465823{i:04}"),
            "timestamp": 1_796_375_702_123u64 + i as u64,
            "message": m,
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

pub(crate) fn firehose_request(request_id: &str, records: &[Vec<u8>]) -> String {
    serde_json::json!({
        "requestId": request_id,
        "timestamp": 1_796_375_760_000u64,
        "records": records.iter().map(|r| serde_json::json!({"data": b64(r)})).collect::<Vec<_>>(),
    })
    .to_string()
}

/// A fixture as CloudWatch stores it: one line of compact JSON.
fn line(name: &str) -> String {
    serde_json::from_str::<serde_json::Value>(fixture(name))
        .expect("fixture json")
        .to_string()
}

const GROUP: &str = "/aws/eks/prod/cluster";
const STREAM: &str = "kube-apiserver-audit-8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";

#[test]
fn gzip_cloudwatch_messages_in_a_firehose_request() {
    let exec = [
        line("exec-request-received"),
        line("exec-response-started"),
        line("exec-response-complete"),
    ];
    let first = gzip(subscription_message(GROUP, STREAM, &[&exec[0], &exec[1]]).as_bytes());
    let second = gzip(
        subscription_message(GROUP, STREAM, &[&exec[2], &line("deployment-update-panic")])
            .as_bytes(),
    );
    let control = gzip(
        serde_json::json!({
            "messageType": "CONTROL_MESSAGE", "owner": "CloudwatchLogs", "logGroup": "",
            "logStream": "", "subscriptionFilters": [],
            "logEvents": [{"id": "", "timestamp": 1, "message": "CWL CONTROL MESSAGE: Checking health of destination Firehose."}],
        })
        .to_string()
        .as_bytes(),
    );
    let authenticator = gzip(
        subscription_message(
            GROUP,
            "authenticator-0123456789abcdef",
            &["time=\"…\" level=info msg=\"access granted\""],
        )
        .as_bytes(),
    );
    let body = firehose_request(
        "ed4acda5-034f-9f42-bba1-f29aea6d7d8f",
        &[first, control, second, authenticator],
    );
    let d = decode(body.as_bytes(), "prod-eks", "prod", Bounds::default()).expect("decodes");
    assert_eq!(d.request_id, "ed4acda5-034f-9f42-bba1-f29aea6d7d8f");
    assert_eq!(d.rejected, Vec::<String>::new());
    let stages: Vec<AuditStage> = d.records.iter().map(|r| r.stage).collect();
    assert_eq!(
        stages,
        [
            AuditStage::RequestReceived,
            AuditStage::ResponseStarted,
            AuditStage::ResponseComplete,
            AuditStage::Panic
        ]
    );
    assert!(
        d.records.iter().all(|r| r.cluster == "prod-eks"),
        "the credential's cluster"
    );
    assert_eq!((d.control_messages, d.other_streams), (1, 1));
}

#[test]
fn decompressed_and_extracted_records_are_accepted() {
    let plain = subscription_message(GROUP, STREAM, &[&line("exec-request-received")]);
    // Message extraction: the bare event, newline-terminated, two in one record.
    let extracted = format!(
        "{}\n{}\n",
        line("pod-create-request-response"),
        line("clusterrolebinding-create")
    );
    let body = firehose_request("r", &[plain.into_bytes(), extracted.into_bytes()]);
    let d = decode(body.as_bytes(), "prod", "prod", Bounds::default()).expect("decodes");
    assert_eq!(d.rejected, Vec::<String>::new());
    assert_eq!(d.records.len(), 3);
    assert!(d.records[1].pod.as_ref().is_some_and(|p| p.privileged));
}

#[test]
fn an_event_whose_text_mentions_message_type_is_still_an_event() {
    // A client chooses its user agent: the word must not turn its event into an envelope.
    let mut event: serde_json::Value =
        serde_json::from_str(fixture("exec-request-received")).expect("json");
    event["userAgent"] = serde_json::Value::String("\"messageType\": \"DATA_MESSAGE\"".into());
    let body = firehose_request("r", &[event.to_string().into_bytes()]);
    let d = decode(body.as_bytes(), "prod", "prod", Bounds::default()).expect("decodes");
    assert_eq!(
        (d.records.len(), d.rejected.len()),
        (1, 0),
        "{:?}",
        d.rejected
    );
}

#[test]
fn records_of_another_clusters_log_group_are_not_stored() {
    let other = gzip(
        subscription_message(
            "/aws/eks/staging/cluster",
            STREAM,
            &[&line("exec-request-received")],
        )
        .as_bytes(),
    );
    let mine =
        gzip(subscription_message(GROUP, STREAM, &[&line("exec-response-started")]).as_bytes());
    let d = decode(
        firehose_request("r", &[other, mine]).as_bytes(),
        "prod",
        "prod",
        Bounds::default(),
    )
    .expect("decodes");
    assert_eq!(d.records.len(), 1);
    assert_eq!(d.rejected.len(), 1);
    assert!(
        d.rejected[0].contains("/aws/eks/staging/cluster"),
        "{}",
        d.rejected[0]
    );
}

#[test]
fn hostile_records_are_rejected_one_by_one() {
    let bounds = Bounds::default();
    let bomb = gzip(&vec![b' '; bounds.record + 1]);
    assert!(
        bomb.len() < 100_000,
        "a small record that decompresses past the bound"
    );
    let truncated_gzip = gzip(b"{}")[..10].to_vec();
    let bad_event =
        gzip(subscription_message(GROUP, STREAM, &["{\"auditID\": 7}", "not json"]).as_bytes());
    let good =
        gzip(subscription_message(GROUP, STREAM, &[&line("exec-request-received")]).as_bytes());
    let mut body: serde_json::Value = serde_json::from_str(&firehose_request(
        "r",
        &[bomb, truncated_gzip, bad_event, good],
    ))
    .expect("json");
    body["records"]
        .as_array_mut()
        .expect("records")
        .push(serde_json::json!({"data": "%%% not base64 %%%"}));
    let d =
        decode(body.to_string().as_bytes(), "prod", "prod", bounds).expect("the envelope is fine");
    assert_eq!(
        d.records.len(),
        1,
        "the good record survives: {:?}",
        d.rejected
    );
    let wanted = [
        "records[0]: data decompresses to more than",
        "records[1]: data is not valid gzip",
        "records[2][0].logEvents[0]: auditID: invalid type",
        "records[2][0].logEvents[1]: (document): expected ident",
        "records[4]: data is not base64",
    ];
    assert_eq!(d.rejected.len(), wanted.len(), "{:?}", d.rejected);
    for (got, wanted) in d.rejected.iter().zip(wanted) {
        assert!(got.starts_with(wanted), "{got} (wanted {wanted})");
    }
}

#[test]
fn envelope_errors_fail_the_request() {
    for (body, wanted) in [
        ("{\"records\": []}".to_owned(), "missing field `requestId`"),
        (
            "{\"requestId\": \"r\", \"records\": [{\"data\": 5}]}".to_owned(),
            "records[0].data: invalid type",
        ),
        (
            "[]".to_owned(),
            "(document): an array where an object belongs",
        ),
        (
            format!("{}1{}", "[".repeat(1000), "]".repeat(1000)),
            "nested deeper",
        ),
    ] {
        let e = decode(body.as_bytes(), "prod", "prod", Bounds::default())
            .expect_err(&body)
            .to_string();
        assert!(e.contains(wanted), "{e} (wanted {wanted})");
    }
    let many = firehose_request("r", &vec![Vec::new(); MAX_RECORDS + 1]);
    assert_eq!(
        decode(many.as_bytes(), "prod", "prod", Bounds::default()).expect_err("too many"),
        FirehoseError::TooManyRecords {
            records: MAX_RECORDS + 1
        }
    );
}

#[test]
fn the_request_wide_budget_bounds_decompression() {
    // Records each just under the per-record bound pass it, and together exceed the
    // request's budget: the whole request is too large (Firehose keeps it as failed).
    let bounds = Bounds {
        record: 64 << 10,
        request: 1 << 20,
    };
    let near = gzip(&vec![b' '; bounds.record - 1]);
    let records: Vec<Vec<u8>> = (0..bounds.request / (bounds.record - 1) + 1)
        .map(|_| near.clone())
        .collect();
    let body = firehose_request("r", &records);
    let e = decode(body.as_bytes(), "prod", "prod", bounds).expect_err("budget");
    assert_eq!(e, FirehoseError::TooLarge(bounds.request));
    // One record fewer fits.
    let body = firehose_request("r", &records[1..]);
    let d = decode(body.as_bytes(), "prod", "prod", bounds).expect("fits");
    assert_eq!(d.rejected.len(), 0, "{:?}", d.rejected);
}

#[test]
fn responses_are_in_firehoses_format() {
    let ok = serde_json::to_value(Response::new("abc", None)).expect("json");
    assert_eq!(ok["requestId"], "abc");
    assert!(ok["timestamp"]
        .as_u64()
        .is_some_and(|t| t > 1_700_000_000_000));
    assert!(ok.get("errorMessage").is_none());
    let failed =
        serde_json::to_value(Response::new("abc", Some("x".repeat(10_000)))).expect("json");
    assert_eq!(failed["errorMessage"].as_str().map(str::len), Some(8192));
}
