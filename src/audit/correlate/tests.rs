//! Joins in both arrival orders, and every way a join must not happen.

use std::sync::Arc;

use super::*;
use crate::audit::event::{decode_event, tests::fixture};
use crate::model::Ancestor;

const SEC: u64 = 1_000_000_000;
/// The fixture's request time.
const T0: u64 = 1_796_375_702_123_456_000;

fn config() -> JoinConfig {
    JoinConfig {
        window_ns: 5 * SEC,
        wait_ns: 600 * SEC,
    }
}

/// An allowed exec (ResponseStarted, 101) by `user` into `shop/<pod>` running `command`,
/// received at T0 + `offset`.
fn exec(user: &str, pod: &str, command: &[&str], offset: u64) -> Event {
    let mut json: serde_json::Value =
        serde_json::from_str(fixture("exec-response-started")).expect("fixture");
    json["user"]["username"] = user.into();
    json["objectRef"]["name"] = pod.into();
    let query: Vec<String> = command
        .iter()
        .map(|c| format!("command={}", c.replace(' ', "+")))
        .collect();
    json["requestURI"] = format!(
        "/api/v1/namespaces/shop/pods/{pod}/exec?{}&container=app&stdin=true&tty=true",
        query.join("&")
    )
    .into();
    json["auditID"] = format!("{user}-{pod}-{offset}").into();
    let mut r =
        decode_event(json.to_string().as_bytes(), "prod", &mut Default::default()).expect("exec");
    r.request_received = T0 + offset;
    r.stage_time = T0 + offset + SEC / 10;
    Event {
        source: Arc::new(crate::audit::ingest::source_of(&r)),
        received_at: r.stage_time,
        record: Record::Audit(Box::new(r)),
    }
}

fn pod_source(pod: &str) -> Arc<CollectorIdentity> {
    Arc::new(CollectorIdentity {
        collector_id: format!("c-{pod}"),
        pod_name: pod.into(),
        pod_namespace: "shop".into(),
        ..CollectorIdentity::default()
    })
}

/// A root process (parent outside the pod) of `pod` started at T0 + `offset`.
fn root(pod: &str, pid: u32, argv: &[&str], offset: u64) -> (Event, ProcessRecord) {
    let p = ProcessRecord {
        ppid: 0,
        start_time: T0 + offset,
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        tty: Some(34816),
        ..crate::fixtures::process(pid, argv[0].as_bytes())
    };
    (
        Event {
            source: pod_source(pod),
            received_at: T0 + offset,
            record: Record::Process(p.clone()),
        },
        p,
    )
}

fn child_of(parent: &ProcessRecord, pid: u32, comm: &str) -> ProcessRecord {
    ProcessRecord {
        ppid: parent.pid,
        start_time: parent.start_time + SEC,
        ancestors: vec![Ancestor {
            pid: parent.pid,
            start_time: parent.start_time,
            comm: parent.comm.clone(),
            exe: None,
            argv: parent.argv.clone(),
            exited: false,
            uid: Some(1000),
        }],
        ..crate::fixtures::process(pid, comm.as_bytes())
    }
}

fn alert_on(p: &ProcessRecord, rule: &str) -> AlertRecord {
    AlertRecord {
        id: format!("{rule}-{}", p.pid),
        rule_id: rule.into(),
        rule_name: rule.into(),
        severity: crate::model::Severity::High,
        tags: Vec::new(),
        time: 0,
        first_seen: 0,
        last_seen: 0,
        count: 1,
        output: String::new(),
        pod_name: "web-1".into(),
        pod_namespace: "shop".into(),
        node_name: String::new(),
        container_id: None,
        process: Some(Box::new(p.clone())),
        flows: Vec::new(),
        evidence: Vec::new(),
        exec: None,
    }
}

const SH: &[&str] = &["sh", "-i"];

#[test]
fn audit_first_then_the_shell_joins_and_its_tree_carries_the_user() {
    let mut c = Correlator::new(config());
    assert!(c.observe(&exec("alice@corp", "web-1", SH, 0), 1).is_empty());
    let (event, shell) = root("web-1", 40, SH, SEC / 5);
    let joins = c.observe(&event, 2);
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0].attribution.user, "alice@corp");
    assert_eq!(joins[0].root.pid, 40);
    // An alert on a child of the shell (curl) names alice; one in another pod does not.
    let curl = child_of(&shell, 41, "curl");
    let mut alerts = vec![alert_on(&curl, "PF-NETWORK-TOOL")];
    c.annotate("c-web-1", &mut alerts, 3);
    let exec = alerts[0].exec.as_deref().expect("attributed");
    assert_eq!(exec.user, "alice@corp");
    assert!(alerts[0].evidence.iter().any(|e| e
        .starts_with("started by kubectl exec by alice@corp from 198.51.100.7 (kubectl/v1.31.0")));
    let mut elsewhere = vec![alert_on(&curl, "PF-NETWORK-TOOL")];
    c.annotate("c-web-2", &mut elsewhere, 3);
    assert!(elsewhere[0].exec.is_none());
}

#[test]
fn runtime_first_then_the_request_joins_and_amends_the_alerts_raised_before() {
    let mut c = Correlator::new(config());
    let (event, shell) = root("web-1", 40, SH, SEC / 5);
    assert!(c.observe(&event, 1).is_empty());
    let mut alerts = vec![alert_on(&shell, "PF-SHELL-TTY")];
    c.annotate("c-web-1", &mut alerts, 2);
    assert!(alerts[0].exec.is_none(), "nothing known yet");
    let joins = c.observe(&exec("bob@corp", "web-1", SH, 0), 3);
    assert_eq!(joins.len(), 1);
    let amended = &joins[0].amended;
    assert_eq!(amended.len(), 1, "the alert raised before is sent again");
    assert_eq!(amended[0].id, alerts[0].id, "with the same id");
    assert_eq!(
        amended[0].exec.as_deref().map(|e| e.user.as_str()),
        Some("bob@corp")
    );
    // The request's later stages (ResponseComplete) do not join again.
    let mut complete = exec("bob@corp", "web-1", SH, 0);
    if let Record::Audit(a) = &mut complete.record {
        a.stage = crate::model::AuditStage::ResponseComplete;
    }
    assert!(c.observe(&complete, 4).is_empty());
}

#[test]
fn an_exec_for_another_pod_links_nothing() {
    let mut c = Correlator::new(config());
    let (event, _) = root("web-1", 40, SH, SEC / 5);
    c.observe(&event, 1);
    assert!(c
        .observe(&exec("mallory@corp", "web-2", SH, 0), 2)
        .is_empty());
    let misses = c.expire(2 + 601 * SEC);
    assert_eq!(misses.len(), 1);
    assert_eq!(
        misses[0].reason,
        MissReason::PodNotWatched,
        "no collector reports web-2"
    );
}

#[test]
fn wrong_command_time_or_answer_never_joins() {
    let mut c = Correlator::new(config());
    let (event, _) = root("web-1", 40, &["bash", "-i"], SEC / 5);
    c.observe(&event, 1);
    let (late, _) = root("web-1", 41, SH, 30 * SEC);
    c.observe(&late, 1);
    assert!(
        c.observe(&exec("alice@corp", "web-1", SH, 0), 2).is_empty(),
        "command differs or too late"
    );
    // Refused (403): started nothing, never waits.
    let mut refused = exec("eve@corp", "web-1", &["bash", "-i"], 0);
    if let Record::Audit(a) = &mut refused.record {
        a.response_code = Some(403);
    }
    assert!(c.observe(&refused, 3).is_empty());
    let misses = c.expire(3 + 601 * SEC);
    assert_eq!(misses.len(), 1, "alice's request, eve's was never pending");
    assert_eq!(
        misses[0].reason,
        MissReason::NoProcess,
        "the pod reported, nothing matched"
    );
}

#[test]
fn two_people_with_the_same_command_at_once_join_nobody() {
    let mut c = Correlator::new(config());
    c.observe(&exec("alice@corp", "web-1", SH, 0), 1);
    c.observe(&exec("mallory@corp", "web-1", SH, SEC / 2), 1);
    let (a, _) = root("web-1", 40, SH, SEC / 5);
    let (b, _) = root("web-1", 41, SH, SEC / 2 + SEC / 5);
    assert!(c.observe(&a, 2).is_empty() && c.observe(&b, 2).is_empty());
    let misses = c.expire(2 + 601 * SEC);
    assert_eq!(misses.len(), 2);
    assert!(misses.iter().all(|m| m.reason == MissReason::Ambiguous));
}

#[test]
fn the_same_person_twice_joins_both_in_time_order() {
    let mut c = Correlator::new(config());
    c.observe(&exec("alice@corp", "web-1", SH, 0), 1);
    c.observe(&exec("alice@corp", "web-1", SH, SEC), 1);
    let (a, _) = root("web-1", 40, SH, SEC / 5);
    let (b, _) = root("web-1", 41, SH, SEC + SEC / 5);
    let joins: Vec<Join> = [a, b].iter().flat_map(|e| c.observe(e, 2)).collect();
    assert_eq!(joins.len(), 2);
    assert!(joins.iter().all(|j| j.attribution.user == "alice@corp"));
}

#[test]
fn a_later_rival_request_is_ambiguous_and_does_not_steal_the_tree() {
    let mut c = Correlator::new(config());
    c.observe(&exec("alice@corp", "web-1", SH, 0), 1);
    let (a, shell) = root("web-1", 40, SH, SEC / 5);
    assert_eq!(c.observe(&a, 2).len(), 1);
    // Mallory's identical exec arrives later: the tree stays alice's, mallory's request
    // is reported ambiguous (one of the two joins could be wrong; none is made for it).
    assert!(c
        .observe(&exec("mallory@corp", "web-1", SH, SEC), 3)
        .is_empty());
    let mut alerts = vec![alert_on(&shell, "PF-SHELL-TTY")];
    c.annotate("c-web-1", &mut alerts, 4);
    assert_eq!(
        alerts[0].exec.as_deref().map(|e| e.user.as_str()),
        Some("alice@corp")
    );
    let misses = c.expire(4 + 601 * SEC);
    assert_eq!(misses.len(), 1);
    assert_eq!(misses[0].reason, MissReason::Ambiguous);
}

#[test]
fn a_root_seen_after_its_exec_joins_on_any_command_line_it_had() {
    let mut c = Correlator::new(config());
    // The collector saw the shell only after it exec'd python: its START came with the
    // new image, and its EXEC record... the first record matches nothing.
    let (first, _) = root("web-1", 40, &["python3", "app.py"], SEC / 5);
    c.observe(&first, 1);
    assert!(c
        .observe(
            &exec(
                "alice@corp",
                "web-1",
                &["sh", "-c", "exec python3 app.py"],
                0
            ),
            2
        )
        .is_empty());
    // ...until a record with the exec'd command line (an EXEC of the same process).
    let (mut again, _) = root("web-1", 40, &["sh", "-c", "exec python3 app.py"], SEC / 5);
    if let Record::Process(p) = &mut again.record {
        p.phase = ProcessPhase::Exec;
    }
    assert_eq!(c.observe(&again, 3).len(), 1);
}

#[test]
fn attach_and_container_inits_do_not_join() {
    let mut c = Correlator::new(config());
    let mut attach = exec("alice@corp", "web-1", &[], 0);
    if let Record::Audit(a) = &mut attach.record {
        a.audit_id = "the-attach".into();
        if let Some(o) = a.object.as_mut() {
            o.subresource = Some("attach".into());
        }
    }
    assert!(c.observe(&attach, 1).is_empty());
    // pid 1 and processes running before the collector are never roots.
    let (init, _) = root("web-1", 1, SH, SEC / 5);
    let (mut old, _) = root("web-1", 50, SH, SEC / 5);
    if let Record::Process(p) = &mut old.record {
        p.preexisting = true;
    }
    c.observe(&init, 1);
    c.observe(&old, 1);
    assert!(c.observe(&exec("alice@corp", "web-1", SH, 0), 2).is_empty());
    assert_eq!(c.expire(2 + 601 * SEC).len(), 1);
}

#[test]
fn state_is_bounded() {
    let mut c = Correlator::new(config());
    for i in 0..(MAX_ROOTS_PER_POD + 10) as u32 {
        let (e, _) = root("web-1", 100 + i, &["x"], 0);
        c.observe(&e, 1);
    }
    assert_eq!(
        c.roots.get(&("shop".into(), "web-1".into())).map(Vec::len),
        Some(MAX_ROOTS_PER_POD)
    );
    let shell = root("web-1", 40, SH, 0).1;
    let mut alerts: Vec<AlertRecord> = (0..MAX_HELD_ALERTS + 5)
        .map(|_| alert_on(&shell, "R"))
        .collect();
    c.annotate("c-web-1", &mut alerts, 1);
    assert_eq!(c.held.len(), MAX_HELD_ALERTS);
}
