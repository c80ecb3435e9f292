use std::sync::Arc;

use super::*;
use crate::model::{AuditLevel, AuditObject, AuditUser, CollectorIdentity};

const HOUR: u64 = 3_600_000_000_000;

fn record(user: &str, verb: &str, resource: &str, code: u32, at: u64) -> AuditRecord {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r.to_owned(), Some(s.to_owned())),
        None => (resource.to_owned(), None),
    };
    AuditRecord {
        cluster: "prod".into(),
        audit_id: format!("{user}-{verb}-{at}"),
        stage: AuditStage::ResponseComplete,
        level: AuditLevel::Metadata,
        verb: verb.into(),
        request_uri: "/api/v1/namespaces/shop/pods".into(),
        user: AuditUser {
            username: user.into(),
            ..AuditUser::default()
        },
        impersonated_user: None,
        source_ips: vec!["198.51.100.7".parse().expect("ip")],
        user_agent: Some("kubectl/v1.31.0".into()),
        object: Some(AuditObject {
            resource,
            subresource,
            namespace: Some("shop".into()),
            name: None,
            api_group: None,
            api_version: Some("v1".into()),
        }),
        response_code: Some(code),
        response_reason: None,
        decision: None,
        decision_reason: None,
        request_received: at,
        stage_time: at,
        exec: None,
        pod: None,
        role: None,
        binding: None,
    }
}

fn event(a: AuditRecord) -> Event {
    Event {
        source: Arc::new(CollectorIdentity::default()),
        received_at: a.stage_time,
        record: Record::Audit(Box::new(a)),
    }
}

fn named(mut a: AuditRecord, group: Option<&str>, name: &str) -> AuditRecord {
    if let Some(o) = a.object.as_mut() {
        o.api_group = group.map(str::to_owned);
        o.name = Some(name.to_owned());
    }
    a
}

#[test]
fn a_request_counts_once_at_its_last_stage_in_its_outcome_class() {
    let mut window = ApiWindow::default();
    let mut received = record("alice", "get", "pods", 0, 10);
    received.stage = AuditStage::RequestReceived;
    received.response_code = None;
    for e in [
        received,
        record("alice", "get", "pods", 200, 10),
        record("alice", "get", "pods", 404, 11),
        record("alice", "get", "pods", 401, 12),
        record("alice", "get", "pods", 403, 13),
        record("alice", "get", "pods", 403, 14),
    ] {
        assert!(window.add(&event(e)));
    }
    let answer = activity(
        &ApiBaseline::default(),
        window,
        10,
        (HOUR, HOUR),
        Vec::new(),
    );
    assert_eq!(
        answer.requests, 5,
        "the RequestReceived stage is not a request"
    );
    assert_eq!(answer.calls.len(), 1);
    let call = &answer.calls[0];
    assert_eq!(
        call.counts,
        OutcomeCounts {
            success: 1,
            failed: 1,
            unauthorized: 1,
            forbidden: 2
        }
    );
    assert_eq!((call.first_seen, call.last_seen), (10, 14));
    assert_eq!(call.source_ip, Some("198.51.100.7".parse().expect("ip")));
}

#[test]
fn groups_split_by_verb_resource_subject_and_address_busiest_first() {
    let mut window = ApiWindow::default();
    let mut from_elsewhere = record("alice", "get", "pods", 200, 5);
    from_elsewhere.source_ips = vec!["203.0.113.5".parse().expect("ip")];
    let mut events = vec![from_elsewhere, record("bob", "get", "pods", 200, 6)];
    events.extend((0..3).map(|i| record("alice", "get", "pods", 200, 7 + i)));
    events.push(record("alice", "list", "pods", 200, 20));
    events.push(record("alice", "create", "pods/exec", 101, 21));
    for e in events {
        window.add(&event(e));
    }
    let answer = activity(&ApiBaseline::default(), window, 3, (HOUR, HOUR), Vec::new());
    assert_eq!(answer.total_calls, 5);
    assert_eq!(answer.calls.len(), 3, "limited");
    assert_eq!(answer.calls[0].counts.success, 3, "{:?}", answer.calls);
    assert_eq!(answer.calls[0].subject, "alice");
    assert_eq!(
        answer.calls[1].resource, "pods/exec",
        "then the most recent"
    );
}

#[test]
fn new_calls_are_those_the_subject_never_made_in_the_baseline() {
    let mut baseline = ApiBaseline::default();
    baseline.add(&event(record("alice", "get", "pods", 200, 1)));
    baseline.add(&event(record("bob", "get", "secrets", 200, 2)));
    let mut window = ApiWindow::default();
    for e in [
        record("alice", "get", "pods", 200, HOUR),
        record("alice", "get", "secrets", 403, HOUR + 1),
        record("alice", "get", "secrets", 200, HOUR + 2),
        record("carol", "get", "pods", 200, HOUR + 3),
    ] {
        window.add(&event(e));
    }
    let answer = activity(&baseline, window, 10, (HOUR, HOUR), Vec::new());
    let mut new: Vec<(&str, &str)> = answer
        .new_calls
        .iter()
        .map(|c| (c.subject.as_str(), c.resource.as_str()))
        .collect();
    new.sort();
    assert_eq!(new, vec![("alice", "secrets"), ("carol", "pods")]);
    let secrets = answer
        .new_calls
        .iter()
        .find(|c| c.subject == "alice")
        .expect("alice");
    assert_eq!((secrets.counts.forbidden, secrets.counts.success), (1, 1));
    assert_eq!(secrets.first_seen, HOUR + 1);
    assert_eq!(answer.baseline_requests, 2);
}

#[test]
fn a_subject_increases_only_well_above_its_baseline_rate() {
    let mut baseline = ApiBaseline::default();
    // 10 hours of baseline: alice 50 an hour, bob 50 an hour, carol 1 an hour.
    for i in 0..500 {
        baseline.add(&event(record("alice", "get", "pods", 200, i)));
        baseline.add(&event(record("bob", "get", "pods", 200, i)));
    }
    for i in 0..10 {
        baseline.add(&event(record("carol", "get", "pods", 200, i)));
    }
    let mut window = ApiWindow::default();
    // One hour: alice x8 (increased), bob x2 (not), carol x50 but only 50 calls (not).
    for i in 0..400 {
        window.add(&event(record("alice", "get", "pods", 200, HOUR + i)));
    }
    for i in 0..100 {
        window.add(&event(record("bob", "get", "pods", 200, HOUR + i)));
    }
    for i in 0..50 {
        window.add(&event(record("carol", "get", "pods", 200, HOUR + i)));
    }
    // A subject absent from the baseline is new, not increased.
    for i in 0..500 {
        window.add(&event(record("dave", "get", "pods", 200, HOUR + i)));
    }
    let answer = activity(&baseline, window, 10, (10 * HOUR, HOUR), Vec::new());
    let increased: Vec<&str> = answer
        .increased
        .iter()
        .map(|i| i.subject.as_str())
        .collect();
    assert_eq!(increased, vec!["alice"]);
    assert_eq!(answer.increased[0].calls, 400);
    assert!((answer.increased[0].baseline_per_hour - 50.0).abs() < 1e-9);
    assert!((answer.increased[0].window_per_hour - 400.0).abs() < 1e-9);
}

#[test]
fn changes_name_the_pod_its_replicaset_and_deployment_not_their_neighbours() {
    let pod = "web-7c9f8d6b5-x2k4q".to_owned();
    let mut changes = Changes::new(std::slice::from_ref(&pod));
    let cases = [
        (
            named(record("alice", "create", "pods", 201, 1), None, &pod),
            true,
        ),
        (
            named(record("alice", "create", "pods/exec", 101, 2), None, &pod),
            true,
        ),
        (
            named(
                record("argo", "patch", "deployments", 200, 3),
                Some("apps"),
                "web",
            ),
            true,
        ),
        (
            named(
                record("kcm", "create", "replicasets", 201, 4),
                Some("apps"),
                "web-7c9f8d6b5",
            ),
            true,
        ),
        // Reads, bookkeeping and other objects are not changes of this workload.
        (
            named(record("alice", "get", "pods", 200, 5), None, &pod),
            false,
        ),
        (
            named(
                record("kubelet", "patch", "pods/status", 200, 6),
                None,
                &pod,
            ),
            false,
        ),
        (
            named(
                record("alice", "delete", "pods", 200, 7),
                None,
                "web-7c9f8d6b5-zzzzz",
            ),
            false,
        ),
        (
            named(
                record("alice", "patch", "deployments", 200, 8),
                Some("apps"),
                "web2",
            ),
            false,
        ),
        (
            named(
                record("alice", "patch", "deployments/scale", 200, 9),
                Some("apps"),
                "web",
            ),
            false,
        ),
        // A core-group "deployments" is not the apps one.
        (
            named(
                record("alice", "patch", "deployments", 200, 10),
                None,
                "web",
            ),
            false,
        ),
    ];
    for (a, expected) in &cases {
        assert_eq!(
            changes.matches(a),
            *expected,
            "{} {}",
            a.verb,
            a.resource_path()
        );
    }
    let mut started = named(record("alice", "create", "pods/exec", 101, 11), None, &pod);
    started.stage = AuditStage::ResponseStarted;
    assert!(
        !changes.matches(&started),
        "counted once, at the last stage"
    );
    for (a, _) in cases.iter().rev() {
        changes.add(&event(a.clone()));
    }
    let kept: Vec<u64> = changes
        .finish()
        .iter()
        .map(|a| a.request_received)
        .collect();
    assert_eq!(kept, vec![1, 2, 3, 4], "oldest first");
    // Bounded: the latest are kept.
    let mut changes = Changes::new(std::slice::from_ref(&pod));
    for i in 0..(MAX_CHANGES as u64 + 5) {
        changes.add(&event(named(
            record("alice", "patch", "pods", 200, i),
            None,
            &pod,
        )));
    }
    let kept = changes.finish();
    assert_eq!(kept.len(), MAX_CHANGES);
    assert_eq!(kept[0].request_received, 5);
}
