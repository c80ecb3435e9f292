//! `procflow investigate api` against a running aggregator fed through its audit webhook:
//! calls by verb / resource / subject / source IP with their four outcome counts (each
//! request once, whatever stages were sent), calls new against a 45-day baseline, subjects
//! with increased volume, who created and changed a workload's pod and deployment; a viewer
//! of one namespace sees none of another's calls nor the cluster-scoped ones; hostile user
//! names and agents reach the terminal escaped.

use std::process::Command;

use procflow::audit::event::format_time;
use procflow::investigate::api::{ApiActivity, ApiCall};
use procflow::model::now_ns;

use crate::audit::{event_list, webhook, AuditAggregator, WEBHOOK_TOKEN};
use crate::identity::sha256_hex;
use crate::util::procflow_bin;

const ADMIN: &str = "admin-token-for-audit-tests";
const VIEWER: &str = "viewer-of-shop-token-for-audit-tests";
const POD: &str = "web-7c9f8d6b5-x2k4q";
const MIN: u64 = 60_000_000_000;
const DAY: u64 = 24 * 60 * MIN;
/// A user agent that would retitle a terminal and ring its bell if printed raw.
const HOSTILE_AGENT: &str = "kubectl/v1.31.0 \u{1b}]0;pwned\u{7}\u{1b}[2J";

/// One request's event at `stage` as the API server writes it.
#[allow(clippy::too_many_arguments)]
fn api_event(
    id: &str,
    stage: &str,
    user: &str,
    ip: &str,
    verb: &str,
    object: serde_json::Value,
    code: Option<u32>,
    at: u64,
) -> String {
    let mut event = serde_json::json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": id, "stage": stage, "verb": verb,
        "requestURI": "/api/v1/namespaces/shop/pods",
        "user": {"username": user, "groups": ["system:authenticated"]},
        "sourceIPs": [ip], "userAgent": "kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc",
        "objectRef": object,
        "requestReceivedTimestamp": format_time(at),
        "stageTimestamp": format_time(at + 5_000_000),
    });
    if let Some(code) = code {
        event["responseStatus"] = serde_json::json!({"metadata": {}, "code": code});
    }
    event.to_string()
}

fn obj(
    resource: &str,
    group: Option<&str>,
    ns: Option<&str>,
    name: Option<&str>,
) -> serde_json::Value {
    let (resource, sub) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (resource, None),
    };
    let mut o = serde_json::json!({"resource": resource, "apiVersion": "v1"});
    for (key, value) in [
        ("subresource", sub),
        ("apiGroup", group),
        ("namespace", ns),
        ("name", name),
    ] {
        if let Some(v) = value {
            o[key] = v.into();
        }
    }
    o
}

struct Feed {
    events: Vec<String>,
    n: u64,
}

impl Feed {
    /// A whole request (ResponseComplete).
    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        user: &str,
        ip: &str,
        verb: &str,
        object: serde_json::Value,
        code: u32,
        at: u64,
    ) {
        self.n += 1;
        let id = format!("00000000-0000-4000-8000-{:012}", self.n);
        self.events.push(api_event(
            &id,
            "ResponseComplete",
            user,
            ip,
            verb,
            object,
            Some(code),
            at,
        ));
    }
}

fn investigate(
    agg: &AuditAggregator,
    token_file: &std::path::Path,
    args: &[&str],
) -> Result<String, String> {
    let out = Command::new(procflow_bin())
        .args([
            "investigate",
            "api",
            "--aggregator",
            &agg.agg.url(),
            "--token-file",
        ])
        .arg(token_file)
        .args(args)
        .output()
        .expect("investigate api");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn answer(agg: &AuditAggregator, token_file: &std::path::Path, args: &[&str]) -> ApiActivity {
    let mut all = vec!["--json", "--since", "1h", "--limit", "1000"];
    all.extend_from_slice(args);
    let text = investigate(agg, token_file, &all)
        .unwrap_or_else(|e| panic!("investigate api {args:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn group<'a>(
    a: &'a ApiActivity,
    subject: &str,
    verb: &str,
    resource: &str,
    ip: &str,
) -> &'a ApiCall {
    a.calls
        .iter()
        .find(|c| {
            c.subject == subject
                && c.verb == verb
                && c.resource == resource
                && c.source_ip.is_some_and(|s| s.to_string() == ip)
        })
        .unwrap_or_else(|| panic!("no {subject} {verb} {resource} from {ip} in {:#?}", a.calls))
}

#[test]
fn api_calls_new_calls_increases_and_who_changed_the_workload() {
    let dir = tempfile::tempdir().expect("dir");
    let readers = dir.path().join("readers.yaml");
    std::fs::write(
        &readers,
        format!(
            "readers:\n  - name: root\n    token_sha256: {}\n    role: admin\n  - name: ana\n    token_sha256: {}\n    role: viewer\n    namespaces: [shop]\n",
            sha256_hex(ADMIN),
            sha256_hex(VIEWER)
        ),
    )
    .expect("readers");
    let (admin, viewer) = (dir.path().join("admin"), dir.path().join("viewer"));
    std::fs::write(&admin, ADMIN).expect("token");
    std::fs::write(&viewer, VIEWER).expect("token");
    let readers = readers.to_string_lossy().into_owned();
    let agg = AuditAggregator::start(&[
        "--readers",
        &readers,
        "--retention",
        "60d",
        "--no-detection",
    ]);

    let now = now_ns();
    let pods = || obj("pods", None, Some("shop"), None);
    let mut feed = Feed {
        events: Vec::new(),
        n: 0,
    };
    // The baseline, 20 and 10 days back: alice reads pods, the CI bot lists deployments twice.
    for days in [20, 10] {
        for i in 0..5 {
            feed.call(
                "alice@corp",
                "198.51.100.7",
                "get",
                pods(),
                200,
                now - days * DAY + i * MIN,
            );
        }
        feed.call(
            "ci-bot",
            "10.0.0.9",
            "list",
            obj("deployments", Some("apps"), Some("shop"), None),
            200,
            now - days * DAY,
        );
    }
    // The scope, the last 30 minutes.
    let t = now - 30 * MIN;
    for i in 0..3 {
        feed.call("alice@corp", "198.51.100.7", "get", pods(), 200, t + i);
    }
    feed.call("alice@corp", "203.0.113.50", "get", pods(), 200, t + 10);
    let secret = || obj("secrets", None, Some("shop"), Some("db-password"));
    feed.call("alice@corp", "198.51.100.7", "get", secret(), 403, t + 20);
    feed.call("alice@corp", "198.51.100.7", "get", secret(), 403, t + 21);
    feed.call("alice@corp", "198.51.100.7", "get", secret(), 200, t + 22);
    feed.call("alice@corp", "198.51.100.7", "get", secret(), 404, t + 23);
    feed.call("system:anonymous", "192.0.2.66", "get", pods(), 401, t + 30);
    // The same request's RequestReceived stage: still one request.
    let received =
        feed.events[feed.events.len() - 1].replace("\"ResponseComplete\"", "\"RequestReceived\"");
    feed.events.push(received);
    for i in 0..150 {
        feed.call(
            "ci-bot",
            "10.0.0.9",
            "list",
            obj("deployments", Some("apps"), Some("shop"), None),
            200,
            t + 100 + i,
        );
    }
    // Another namespace and a cluster-scoped object: not for a viewer of shop.
    feed.call(
        "bob@corp",
        "198.51.100.8",
        "get",
        obj("secrets", None, Some("billing"), Some("card-key")),
        200,
        t + 40,
    );
    feed.call(
        "mallory@corp",
        "198.51.100.9",
        "create",
        obj(
            "clusterrolebindings",
            Some("rbac.authorization.k8s.io"),
            None,
            Some("mallory-admin"),
        ),
        201,
        t + 41,
    );
    // The workload: its deployment changed (a day ago), its ReplicaSet and pod created, then an exec.
    feed.call(
        "argo@ci",
        "10.0.0.10",
        "patch",
        obj("deployments", Some("apps"), Some("shop"), Some("web")),
        200,
        now - DAY,
    );
    feed.call(
        "system:serviceaccount:kube-system:deployment-controller",
        "10.0.0.1",
        "create",
        obj(
            "replicasets",
            Some("apps"),
            Some("shop"),
            Some("web-7c9f8d6b5"),
        ),
        201,
        now - DAY + MIN,
    );
    feed.call(
        "system:serviceaccount:kube-system:replicaset-controller",
        "10.0.0.1",
        "create",
        obj("pods", None, Some("shop"), None),
        201,
        now - DAY + 2 * MIN,
    );
    // (A create names its pod only in the response: the audit objectRef has it on EKS.)
    if let Some(last) = feed.events.last_mut() {
        let mut e: serde_json::Value = serde_json::from_str(last).expect("json");
        e["objectRef"]["name"] = POD.into();
        *last = e.to_string();
    }
    // An exec by a user whose name and agent are hostile, sent at both of its stages.
    let exec = obj("pods/exec", None, Some("shop"), Some(POD));
    let hostile_user = "eve\u{1b}[31m@corp";
    let at = t + 50;
    for (stage, code) in [("ResponseStarted", 101), ("ResponseComplete", 101)] {
        let mut e: serde_json::Value = serde_json::from_str(&api_event(
            "11111111-0000-4000-8000-000000000001",
            stage,
            hostile_user,
            "198.51.100.66",
            "create",
            exec.clone(),
            Some(code),
            at,
        ))
        .expect("json");
        e["userAgent"] = HOSTILE_AGENT.into();
        feed.events.push(e.to_string());
    }
    // Another pod's change is not this workload's.
    feed.call(
        "alice@corp",
        "198.51.100.7",
        "delete",
        obj("pods", None, Some("shop"), Some("web-7c9f8d6b5-zzzzz")),
        200,
        t + 60,
    );

    for chunk in feed.events.chunks(100) {
        let (status, reply) = webhook(&agg.endpoint(), "prod", WEBHOOK_TOKEN, &event_list(chunk));
        assert_eq!(status, 200, "{reply}");
    }

    // The admin's answer over the last hour.
    let all = answer(&agg, &admin, &[]);
    let scope_requests = 3 + 1 + 4 + 1 + 150 + 1 + 1 + 1 + 1;
    assert_eq!(
        all.requests, scope_requests,
        "each request once: {:#?}",
        all.calls
    );
    assert_eq!(
        group(&all, "alice@corp", "get", "pods", "198.51.100.7")
            .counts
            .success,
        3
    );
    assert_eq!(
        group(&all, "alice@corp", "get", "pods", "203.0.113.50")
            .counts
            .success,
        1
    );
    let secrets = group(&all, "alice@corp", "get", "secrets", "198.51.100.7").counts;
    assert_eq!(
        (
            secrets.success,
            secrets.failed,
            secrets.unauthorized,
            secrets.forbidden
        ),
        (1, 1, 0, 2)
    );
    assert_eq!(
        group(&all, "system:anonymous", "get", "pods", "192.0.2.66")
            .counts
            .unauthorized,
        1
    );
    assert_eq!(all.calls[0].subject, "ci-bot", "the busiest first");
    // New against the 45-day baseline: alice's secrets, the anonymous call, bob, mallory, eve's
    // exec, the delete; not alice's pods nor the bot's lists.
    let new: Vec<(&str, &str, &str)> = all
        .new_calls
        .iter()
        .map(|c| (c.subject.as_str(), c.verb.as_str(), c.resource.as_str()))
        .collect();
    for expected in [
        ("alice@corp", "get", "secrets"),
        ("system:anonymous", "get", "pods"),
        ("bob@corp", "get", "secrets"),
        ("mallory@corp", "create", "clusterrolebindings"),
        (hostile_user, "create", "pods/exec"),
        ("alice@corp", "delete", "pods"),
    ] {
        assert!(new.contains(&expected), "{expected:?} not new in {new:?}");
    }
    assert!(!new.contains(&("alice@corp", "get", "pods")), "{new:?}");
    assert!(!new.contains(&("ci-bot", "list", "deployments")), "{new:?}");
    assert_eq!(
        all.baseline_requests,
        12 + 3,
        "the baseline's 12 and the workload's day-old 3"
    );
    // The CI bot went from 2 calls in 45 days to 150 in the hour.
    let increased: Vec<&str> = all.increased.iter().map(|i| i.subject.as_str()).collect();
    assert_eq!(increased, vec!["ci-bot"]);
    assert!(all.changes.is_empty(), "no pods asked about");

    // The workload: who created and changed its pod and deployment, oldest first.
    let workload = answer(&agg, &admin, &["--pod", POD, "--namespace", "shop"]);
    let changes: Vec<(&str, &str, &str)> = workload
        .changes
        .iter()
        .map(|c| {
            let name = c
                .object
                .as_ref()
                .and_then(|o| o.name.as_deref())
                .unwrap_or("");
            (c.user.username.as_str(), c.verb.as_str(), name)
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("argo@ci", "patch", "web"),
            (
                "system:serviceaccount:kube-system:deployment-controller",
                "create",
                "web-7c9f8d6b5"
            ),
            (
                "system:serviceaccount:kube-system:replicaset-controller",
                "create",
                POD
            ),
            (hostile_user, "create", POD),
        ]
    );
    assert_eq!(
        workload.requests, 1,
        "the scope's requests about the pod: the exec"
    );

    // A viewer of shop: shop's calls, nothing of billing, nothing cluster-scoped.
    let shop = answer(&agg, &viewer, &[]);
    assert!(shop.calls.iter().any(|c| c.subject == "alice@corp"));
    for c in &shop.calls {
        assert!(
            !["bob@corp", "mallory@corp"].contains(&c.subject.as_str()),
            "{c:?}"
        );
    }
    for c in &shop.new_calls {
        assert!(
            !["bob@corp", "mallory@corp"].contains(&c.subject.as_str()),
            "{c:?}"
        );
    }
    assert_eq!(shop.requests, scope_requests - 2);
    let refused = investigate(&agg, &viewer, &["--namespace", "billing"])
        .expect_err("billing is not granted");
    assert!(refused.contains("not granted"), "{refused}");

    // The text form: hostile strings escaped, never raw control characters.
    let text = investigate(
        &agg,
        &admin,
        &["--since", "1h", "--pod", POD, "--namespace", "shop"],
    )
    .expect("text");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(
        text.contains("eve\\x1b[31m@corp") || text.contains("eve\\u{1b}[31m@corp"),
        "{text}"
    );
    assert!(text.contains("who created or changed"), "{text}");
}
