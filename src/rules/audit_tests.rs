//! The managed audit rules (`rules/managed/k8s_audit.yaml`): each with an event that makes
//! it fire and a benign twin that does not, through the engine as the aggregator runs it.

use std::sync::Arc;

use super::*;
use crate::audit::event::{decode_event, tests::fixture};
use crate::model::AuditRecord;
use crate::model::{Event, Record};

const DAY: u64 = 86_400_000_000_000;

fn record(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> AuditRecord {
    let mut json: serde_json::Value = serde_json::from_str(fixture(name)).expect("fixture");
    edit(&mut json);
    decode_event(json.to_string().as_bytes(), "prod", &mut Default::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn event(r: AuditRecord) -> Event {
    Event {
        source: Arc::new(crate::audit::ingest::source_of(&r)),
        received_at: r.stage_time,
        record: Record::Audit(Box::new(r)),
    }
}

/// The managed rules that fire on `records`, evaluated in order on the API server's clock.
fn fired(engine: &mut Engine, records: Vec<AuditRecord>) -> Vec<String> {
    let mut ids = Vec::new();
    for r in records {
        let at = r.stage_time;
        for a in engine.evaluate(&event(r), at) {
            ids.push(a.rule_id);
        }
    }
    ids
}

fn managed() -> Engine {
    Engine::new(RuleSet::managed().expect("managed rules"))
}

/// Fires `rule` on `trigger` and nothing of the audit set on `twin` (fresh engines).
fn check(rule: &str, trigger: AuditRecord, twin: AuditRecord) {
    let hit = fired(&mut managed(), vec![trigger]);
    assert!(
        hit.iter().any(|r| r == rule),
        "{rule} did not fire: {hit:?}"
    );
    let quiet = fired(&mut managed(), vec![twin]);
    assert!(
        !quiet
            .iter()
            .any(|r| r.starts_with("PF-KA-") && r != "PF-KA-NEW-CALL"),
        "{rule}'s benign twin fired {quiet:?}"
    );
}

fn set(path: &str, value: serde_json::Value) -> impl FnOnce(&mut serde_json::Value) {
    let path = path.to_owned();
    move |json| {
        let mut at = json;
        let parts: Vec<&str> = path.split('/').collect();
        for p in &parts[..parts.len() - 1] {
            at = match p.parse::<usize>() {
                Ok(i) => &mut at[i],
                Err(_) => &mut at[*p],
            };
        }
        at[parts[parts.len() - 1]] = value;
    }
}

/// An edit of a fixture's JSON.
type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;

fn with(name: &str, edits: Vec<Edit>) -> AuditRecord {
    record(name, |json| edits.into_iter().for_each(|e| e(json)))
}

macro_rules! edits {
    ($($path:expr => $value:tt),* $(,)?) => {
        vec![$(Box::new(set($path, serde_json::json!($value))) as Edit),*]
    };
}

#[test]
fn exec_into_a_pod() {
    check(
        "PF-KA-EXEC",
        record("exec-response-started", |_| {}),
        // kubectl logs: a read of pods/log by the same user.
        with(
            "exec-response-started",
            edits!["objectRef/subresource" => "log", "verb" => "get"],
        ),
    );
    // Refused execs and the control plane's own are not exec sessions.
    let refused = with(
        "exec-response-started",
        edits!["stage" => "ResponseComplete", "responseStatus/code" => 403],
    );
    let control_plane = with(
        "exec-response-started",
        edits!["user/username" => "eks:node-manager"],
    );
    assert_eq!(
        fired(&mut managed(), vec![refused, control_plane]),
        Vec::<String>::new()
    );
    // The alert renders the client-chosen parts escaped and names the command.
    let hostile = with(
        "exec-response-started",
        edits!["userAgent" => "kubectl/v1.31\n\u{1b}[31mfake line"],
    );
    let alerts = managed().evaluate(&event(hostile.clone()), hostile.stage_time);
    let output = &alerts.first().expect("an alert").output;
    assert!(output.contains("command=sh -c id && curl"), "{output}");
    assert!(
        !output.contains('\n') && !output.contains('\u{1b}'),
        "{output}"
    );
    assert!(alerts[0]
        .evidence
        .iter()
        .any(|e| e.contains("audit create") && e.contains("alice@corp")));
}

#[test]
fn port_forward() {
    check(
        "PF-KA-PORT-FORWARD",
        with(
            "exec-response-started",
            edits!["objectRef/subresource" => "portforward"],
        ),
        with(
            "exec-response-started",
            edits!["objectRef/subresource" => "status", "verb" => "get"],
        ),
    );
}

#[test]
fn ephemeral_container() {
    let patch = |sub: serde_json::Value| {
        with(
            "exec-response-complete",
            edits![
                "objectRef/subresource" => sub,
                "verb" => "patch",
                "responseStatus/code" => 200,
                "requestURI" => "/api/v1/namespaces/shop/pods/web-7c9f8d6b5-x2k4q/ephemeralcontainers",
            ],
        )
    };
    check(
        "PF-KA-EPHEMERAL-CONTAINER",
        patch("ephemeralcontainers".into()),
        patch(serde_json::Value::Null),
    );
}

#[test]
fn privileged_pod() {
    check(
        "PF-KA-PRIVILEGED-POD",
        record("pod-create-request-response", |_| {}),
        with(
            "pod-create-request-response",
            edits![
                "requestObject/spec" => {"containers": [{"name": "c", "image": "nginx:1.27", "securityContext": {"privileged": false}}]},
            ],
        ),
    );
}

#[test]
fn host_namespace_pod_in_a_deployment_template() {
    let deployment = |host_network: bool| {
        record("pod-create-request-response", |json| {
            json["objectRef"] = serde_json::json!({"resource": "deployments", "namespace": "shop", "name": "web", "apiGroup": "apps", "apiVersion": "v1"});
            json["requestObject"] = serde_json::json!({"spec": {"template": {"spec": {
                "hostNetwork": host_network,
                "containers": [{"name": "web", "image": "nginx:1.27"}],
            }}}});
            json["responseObject"] = serde_json::Value::Null;
        })
    };
    check(
        "PF-KA-HOST-NAMESPACE-POD",
        deployment(true),
        deployment(false),
    );
}

#[test]
fn sensitive_mount() {
    let pod = |path: &str| {
        with(
            "pod-create-request-response",
            edits![
                "requestObject/spec" => {
                    "containers": [{"name": "c", "image": "alpine:3.20"}],
                    "volumes": [{"name": "v", "hostPath": {"path": path}}],
                },
            ],
        )
    };
    check(
        "PF-KA-SENSITIVE-MOUNT",
        pod("/var/run/docker.sock"),
        pod("/mnt/data"),
    );
    check("PF-KA-SENSITIVE-MOUNT", pod("/"), pod("/srv/cache"));
}

#[test]
fn secret_read_by_a_person() {
    check(
        "PF-KA-SECRET-READ",
        record("secret-get-request-response", |_| {}),
        with(
            "secret-get-request-response",
            edits!["user/username" => "system:serviceaccount:shop:app"],
        ),
    );
}

#[test]
fn binding_to_cluster_admin() {
    check(
        "PF-KA-CLUSTER-ADMIN-BINDING",
        record("clusterrolebinding-create", |_| {}),
        with(
            "clusterrolebinding-create",
            edits!["requestObject/roleRef/name" => "view"],
        ),
    );
}

#[test]
fn wildcard_or_exec_role() {
    let role = |rules: serde_json::Value| {
        record("clusterrolebinding-create", |json| {
            json["objectRef"] = serde_json::json!({"resource": "clusterroles", "name": "r", "apiGroup": "rbac.authorization.k8s.io"});
            json["requestObject"] = serde_json::json!({"rules": rules});
        })
    };
    check(
        "PF-KA-WILDCARD-ROLE",
        role(serde_json::json!([{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}])),
        role(
            serde_json::json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]),
        ),
    );
    check(
        "PF-KA-WILDCARD-ROLE",
        role(
            serde_json::json!([{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]),
        ),
        role(serde_json::json!([{"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}])),
    );
}

#[test]
fn anonymous_request_allowed() {
    let anonymous = |uri: &str, code: u32| {
        with(
            "secret-get-request-response",
            edits![
                "user" => {"username": "system:anonymous", "groups": ["system:unauthenticated"]},
                "requestURI" => uri,
                "objectRef" => null,
                "responseStatus/code" => code,
            ],
        )
    };
    check(
        "PF-KA-ANONYMOUS-ALLOWED",
        anonymous("/api/v1/namespaces/shop/pods", 200),
        anonymous("/healthz", 200),
    );
    assert_eq!(
        fired(
            &mut managed(),
            vec![anonymous("/api/v1/namespaces/shop/pods", 403)]
        ),
        Vec::<String>::new(),
        "refused anonymous requests are the cluster working"
    );
}

#[test]
fn burst_of_denied_calls() {
    let denied = |resource: &str, at: u64| {
        let mut r = with(
            "secret-get-request-response",
            edits![
                "objectRef/resource" => resource,
                "responseStatus/code" => 403,
                "user/username" => "mallory@corp",
            ],
        );
        r.stage_time += at;
        r
    };
    let resources = [
        "secrets",
        "pods",
        "nodes",
        "configmaps",
        "services",
        "deployments",
        "daemonsets",
        "roles",
        "rolebindings",
        "clusterroles",
        "namespaces",
        "serviceaccounts",
    ];
    let probing: Vec<AuditRecord> = resources
        .iter()
        .enumerate()
        .map(|(i, r)| denied(r, i as u64 * 1_000_000_000))
        .collect();
    let hit = fired(&mut managed(), probing);
    assert_eq!(
        hit.iter().filter(|r| *r == "PF-KA-DENIED-BURST").count(),
        1,
        "the 11th distinct call crosses the bound; repeats are grouped: {hit:?}"
    );
    let retrying: Vec<AuditRecord> = (0..30)
        .map(|i| denied("secrets", i * 1_000_000_000))
        .collect();
    let quiet = fired(&mut managed(), retrying);
    assert!(
        !quiet.iter().any(|r| r == "PF-KA-DENIED-BURST"),
        "{quiet:?}"
    );
    // The same 12 distinct calls spread over 12 minutes stay under the rate.
    let slow: Vec<AuditRecord> = resources
        .iter()
        .enumerate()
        .map(|(i, r)| denied(r, i as u64 * 61_000_000_000))
        .collect();
    assert!(!fired(&mut managed(), slow)
        .iter()
        .any(|r| r == "PF-KA-DENIED-BURST"));
}

#[test]
fn new_call_after_the_45_day_baseline() {
    let call = |verb: &str, resource: &str, at: u64| {
        let mut r = with(
            "secret-get-request-response",
            edits!["verb" => verb, "objectRef/resource" => resource, "user/username" => "ci@corp"],
        );
        r.stage_time = r.stage_time.saturating_sub(60 * DAY) + at;
        r
    };
    let mut engine = managed();
    // Learning: its usual calls over 45 days.
    let learned: Vec<AuditRecord> = (0..45)
        .flat_map(|d| {
            [
                call("get", "configmaps", d * DAY),
                call("list", "pods", d * DAY),
            ]
        })
        .collect();
    assert!(!fired(&mut engine, learned)
        .iter()
        .any(|r| r == "PF-KA-NEW-CALL"));
    // After it: the usual call is quiet (the twin), a call never made before fires.
    let quiet = fired(&mut engine, vec![call("get", "configmaps", 46 * DAY)]);
    assert!(!quiet.iter().any(|r| r == "PF-KA-NEW-CALL"), "{quiet:?}");
    let hit = fired(&mut engine, vec![call("delete", "pods", 46 * DAY + 1)]);
    assert!(hit.iter().any(|r| r == "PF-KA-NEW-CALL"), "{hit:?}");
}

#[test]
fn list_fields_match_on_any_item_and_not_equal_means_none() {
    let y = r#"rules:
- id: G
  name: g
  severity: low
  kinds: [audit]
  condition: ka.user.groups == "devs" and ka.user.groups != "admins" and ka.sourceips in_cidr ("198.51.100.0/24")
  output: 'groups={ka.user.groups} call={ka.call}'
"#;
    let set = RuleSet::compile(&[("g.yaml".into(), y.into())]).expect("compiles");
    let exec = record("exec-response-started", |_| {});
    let hits = Engine::new(set.clone()).matches(&Record::Audit(Box::new(exec.clone())));
    assert_eq!(hits.len(), 1);
    assert_eq!(
        hits[0].output,
        "groups=devs,system:authenticated call=create pods/exec"
    );
    let admin = with(
        "exec-response-started",
        edits!["user/groups" => ["devs", "admins"]],
    );
    assert!(Engine::new(set)
        .matches(&Record::Audit(Box::new(admin)))
        .is_empty());
    // ka.* fields exist for audit records only, and enum values are checked at load.
    let wrong_kind = y.replace("kinds: [audit]", "kinds: [process]");
    let e = RuleSet::compile(&[("g.yaml".into(), wrong_kind)]).expect_err("ka on process");
    assert!(
        e.to_string()
            .contains("unknown field or macro `ka.user.groups`"),
        "{e}"
    );
    let typo = y.replace("ka.user.groups == \"devs\"", "ka.outcome == \"forbiden\"");
    let e = RuleSet::compile(&[("g.yaml".into(), typo)]).expect_err("typo");
    assert!(
        e.to_string()
            .contains("success, unauthorized, forbidden, failed"),
        "{e}"
    );
}
