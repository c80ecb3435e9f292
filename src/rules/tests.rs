use super::load::managed_files;
use super::*;
use crate::model::{workload_of, AlertRecord, Event, ProcessRecord, Record, Severity};
use crate::model::{Ancestor, FlowPhase, ProcessPhase};
use crate::model::{CollectorIdentity, FlowRecord};

pub(crate) fn proc(comm: &[u8], exe: Option<&str>) -> ProcessRecord {
    ProcessRecord {
        exe: exe.map(|e| e.as_bytes().to_vec()),
        ..crate::fixtures::process(100, comm)
    }
}

fn one(cond: &str) -> Result<RuleSet, RuleError> {
    let y = format!(
        "lists:\n  shells: [sh, bash]\nmacros:\n  is_shell: proc.comm in (shells)\nrules:\n- id: T1\n  name: t\n  severity: low\n  kinds: [process]\n  condition: |\n    {}\n  output: 'c={{proc.comm}}'\n",
        cond.replace('\n', "\n    ")
    );
    RuleSet::compile(&[("t.yaml".into(), y)])
}

fn fires(cond: &str, p: &ProcessRecord) -> bool {
    let set = one(cond).expect("compiles");
    Engine::new(set).count_matches(&Record::Process(p.clone())) > 0
}

#[test]
fn managed_set_compiles() {
    let set = RuleSet::managed().expect("managed rules compile");
    assert!(set.rules.len() >= 14, "{}", set.rules.len());
}

#[test]
fn parse_errors_name_file_rule_and_position() {
    let e = one("proc.comm == \"a\" and\n  proc.nope == 1")
        .expect_err("must fail")
        .to_string();
    assert!(
        e.contains("t.yaml") && e.contains("T1") && e.contains("2:3") && e.contains("proc.nope"),
        "{e}"
    );
    let e = one("proc.comm ==").expect_err("must fail").to_string();
    assert!(e.contains("1:13"), "{e}");
    let e = one("proc.pid == \"x\"").expect_err("must fail").to_string();
    assert!(e.contains("type mismatch"), "{e}");
    let e = one("proc.comm regex \"(\"")
        .expect_err("must fail")
        .to_string();
    assert!(e.contains("bad regex"), "{e}");
    let e = one("(proc.comm == \"a\"")
        .expect_err("must fail")
        .to_string();
    assert!(e.contains("expected `)`"), "{e}");
    let e = one("proc.comm == \"a\" and proc.phase != \"exit\"")
        .expect_err("an enum value the field never holds")
        .to_string();
    assert!(
        e.contains("1:36") && e.contains("\"exit\"") && e.contains("START, EXEC, EXIT"),
        "{e}"
    );
    let e = one("proc.comm in nolist and 1")
        .expect_err("must fail")
        .to_string();
    assert!(e.contains("unknown list"), "{e}");
}

#[test]
fn evaluation_semantics() {
    let mut p = proc(b"bash", Some("/usr/bin/bash"));
    assert!(fires("is_shell", &p));
    assert!(fires(
        "not proc.comm == \"sh\" and (proc.pid == 1 or proc.pid >= 100)",
        &p
    ));
    assert!(!fires("proc.tty > 0", &p), "absent values never match");
    assert!(!fires("proc.tty == 0", &p));
    assert!(fires("not proc.tty > 0", &p));
    assert!(fires("proc.exe glob \"/usr/*/ba?h\"", &p));
    assert!(fires("proc.exe startswith \"/usr/\"", &p));
    assert!(fires(
        "proc.exe_name == \"bash\" and proc.comm_matches_exe",
        &p
    ));
    p.ancestors.push(Ancestor {
        pid: 7,
        start_time: 0,
        comm: b"sshd".to_vec(),
        exe: None,
        argv: vec![],
        exited: false,
        uid: Some(0),
    });
    assert!(fires(
        "any(proc.ancestors, a.comm == \"sshd\" and a.uid == 0)",
        &p
    ));
    assert!(!fires(
        "any(proc.ancestors, a.comm == \"sshd\" and a.uid == 1)",
        &p
    ));
    assert!(fires(
        "proc.root.pid == 7 and proc.root.comm == \"sshd\"",
        &p
    ));
    assert!(one("a.comm == \"x\"").is_err(), "a.* only inside any()");
}

#[test]
fn hostile_values_match_bytes_and_render_escaped() {
    let mut p = proc(b"ev\nil\x1b[31m\xff", Some("/tmp/x"));
    p.argv = vec![b"a\nb".to_vec(), b"\\x41".to_vec()];
    assert!(fires("proc.comm contains \"il\"", &p));
    assert!(fires("proc.comm regex \"^ev\\nil\"", &p));
    let set = one("proc.comm contains \"il\"").expect("compiles");
    let hits = Engine::new(set).matches(&Record::Process(p));
    assert_eq!(hits.len(), 1);
    assert!(
        !hits[0].output.contains('\n') && !hits[0].output.contains('\u{1b}'),
        "{}",
        hits[0].output
    );
    assert!(hits[0].output.contains("\\xff"), "{}", hits[0].output);
}

#[test]
fn flow_sees_owner_and_cidr() {
    let y = "rules:\n- id: F\n  name: f\n  severity: high\n  kinds: [flow]\n  condition: fd.rip in_cidr (\"10.0.0.0/8\") and proc.comm == \"bash\"\n  output: '{proc.comm} {fd.rip}:{fd.rport}'\n";
    let set = RuleSet::compile(&[("f.yaml".into(), y.into())]).expect("compiles");
    let mut e = Engine::new(set);
    let src = CollectorIdentity::default();
    let ev = |record| Event {
        source: std::sync::Arc::new(src.clone()),
        received_at: 0,
        record,
    };
    e.evaluate(&ev(Record::Process(proc(b"bash", Some("/bin/bash")))), 1);
    let flow: FlowRecord = serde_json::from_value(serde_json::json!({
        "cookie": "1", "protocol": "TCP", "family": "IPV4", "local_addr": "10.1.1.1", "local_port": 5000,
        "remote_addr": "10.2.3.4", "remote_port": 4444, "direction": "OUTBOUND", "scope": "EAST_WEST",
        "phase": "START", "state": "ESTABLISHED", "preexisting": false, "bytes_sent": 0, "bytes_received": 0,
        "segs_out": null, "segs_in": null, "retransmits": null, "total_retrans": null, "rtt_us": null,
        "first_seen": 1, "last_seen": 1, "ended_at": null, "uid": 1000, "inode": 1, "pid": 100,
        "process_start_time": 1, "attribution": "FD", "end_reason": "UNSPECIFIED", "reset": false, "cgroup_id": null
    })).expect("flow json");
    let a = e.evaluate(&ev(Record::Flow(flow.clone())), 2);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].output, "bash 10.2.3.4:4444");
    assert_eq!(a[0].flows.len(), 1);
    // grouping: the repeat within the re-emit window is counted, not emitted
    assert!(e.evaluate(&ev(Record::Flow(flow.clone())), 3).is_empty());
    let a = e.evaluate(&ev(Record::Flow(flow)), 3 + e.reemit_ns);
    assert_eq!(a[0].count, 3);
}

#[test]
fn falco_payload_shape() {
    let a = AlertRecord {
        id: "x".into(),
        rule_id: "R".into(),
        rule_name: "n".into(),
        severity: Severity::High,
        tags: vec!["T1".into()],
        time: 1_700_000_000_123_456_789,
        first_seen: 0,
        last_seen: 0,
        count: 1,
        output: "o".into(),
        pod_name: "p".into(),
        pod_namespace: "ns".into(),
        node_name: "h".into(),
        container_id: None,
        process: None,
        flows: vec![],
        evidence: vec![],
        exec: None,
    };
    let v = falco_payload(&a);
    assert_eq!(v["priority"], "Error");
    assert_eq!(v["time"], "2023-11-14T22:13:20.123456789Z");
    for k in [
        "output",
        "priority",
        "rule",
        "time",
        "output_fields",
        "source",
        "tags",
        "hostname",
    ] {
        assert!(v.get(k).is_some(), "{k}");
    }
}

// === Stateful rules ===

const SEC: u64 = 1_000_000_000;

fn flow_to(remote: &str, rport: u16, cookie: u64, phase: FlowPhase, sent: u64) -> FlowRecord {
    FlowRecord {
        local_addr: "10.1.1.1".parse().expect("ip"),
        local_port: 40000,
        remote_addr: Some(remote.parse().expect("ip")),
        remote_port: Some(rport),
        phase,
        bytes_sent: Some(sent),
        inode: Some(1),
        pid: Some(100),
        process_start_time: Some(1),
        ..crate::fixtures::flow(cookie)
    }
}

fn stateful_engine(rule: &str) -> Engine {
    let y = format!("rules:\n{rule}");
    let mut e = Engine::new(RuleSet::compile(&[("s.yaml".into(), y)]).expect("compiles"));
    e.reemit_ns = 0;
    e
}

fn pod_event(pod: &str, record: Record) -> Event {
    Event {
        source: std::sync::Arc::new(CollectorIdentity {
            collector_id: format!("c-{pod}"),
            pod_name: pod.into(),
            pod_namespace: "shop".into(),
            ..CollectorIdentity::default()
        }),
        received_at: 0,
        record,
    }
}

const EXFIL: &str = "- id: X\n  name: x\n  severity: high\n  kinds: [flow]\n  condition: fd.direction == \"OUTBOUND\"\n  threshold:\n    sum: fd.bytes_sent\n    window: 10s\n    above: 1000\n    by: [fd.rip]\n  output: 'x {fd.rip}'\n";

#[test]
fn threshold_adds_what_each_socket_moved_and_slides_its_window() {
    let mut e = stateful_engine(EXFIL);
    let ev = |f| pod_event("web-7c9f8d6b5-x2k4q", Record::Flow(f));
    // One socket reports cumulative counters: 600 then 900 is 900 moved, not 1500.
    assert!(e
        .evaluate(&ev(flow_to("1.2.3.4", 443, 1, FlowPhase::Start, 600)), SEC)
        .is_empty());
    assert!(e
        .evaluate(
            &ev(flow_to("1.2.3.4", 443, 1, FlowPhase::Update, 900)),
            2 * SEC
        )
        .is_empty());
    // Another socket to the same destination pushes the window over 1000.
    let a = e.evaluate(
        &ev(flow_to("1.2.3.4", 443, 2, FlowPhase::End, 200)),
        3 * SEC,
    );
    assert_eq!(a.len(), 1, "900 + 200 > 1000");
    assert!(
        a[0].evidence
            .iter()
            .any(|l| l.contains("fd.bytes_sent 1100")),
        "{:?}",
        a[0].evidence
    );
    // Other destinations have their own window.
    assert!(e
        .evaluate(
            &ev(flow_to("5.6.7.8", 443, 3, FlowPhase::End, 999)),
            3 * SEC
        )
        .is_empty());
    // Window edge: at exactly 10 s after the first event, that event has left the window.
    assert!(e
        .evaluate(
            &ev(flow_to("9.9.9.9", 443, 4, FlowPhase::End, 600)),
            20 * SEC
        )
        .is_empty());
    assert!(e
        .evaluate(
            &ev(flow_to("9.9.9.9", 443, 5, FlowPhase::End, 300)),
            29 * SEC
        )
        .is_empty());
    assert_eq!(
        e.evaluate(
            &ev(flow_to("9.9.9.9", 443, 6, FlowPhase::End, 200)),
            29 * SEC
        )
        .len(),
        1
    );
    assert!(
        e.evaluate(
            &ev(flow_to("9.9.9.9", 443, 7, FlowPhase::End, 1)),
            39 * SEC + 1
        )
        .is_empty(),
        "only 201 left in the window"
    );
}

#[test]
fn replicas_of_a_workload_share_state_and_other_workloads_do_not() {
    let mut e = stateful_engine(EXFIL);
    let f = |c| Record::Flow(flow_to("1.2.3.4", 443, c, FlowPhase::End, 600));
    assert!(e
        .evaluate(&pod_event("web-7c9f8d6b5-x2k4q", f(1)), SEC)
        .is_empty());
    assert!(e
        .evaluate(&pod_event("api-5d4f7b9c8-abcde", f(2)), SEC)
        .is_empty());
    assert_eq!(
        e.evaluate(&pod_event("web-7c9f8d6b5-zzzzz", f(3)), SEC)
            .len(),
        1
    );
    assert_eq!(workload_of("web-7c9f8d6b5-x2k4q"), "web");
    assert_eq!(workload_of("db-0"), "db-0");
    assert_eq!(workload_of("worker"), "worker");
}

const NEW_DEST: &str = "- id: N\n  name: n\n  severity: medium\n  kinds: [flow]\n  condition: fd.direction == \"OUTBOUND\"\n  new_value:\n    value: fd.rip\n    learning: 1h\n    allow: [\"8.8.8.8\"]\n  output: 'new {fd.rip}'\n";

#[test]
fn new_value_learns_then_alerts_once_per_new_value() {
    let mut e = stateful_engine(NEW_DEST);
    let ev = |ip: &str, c| {
        pod_event(
            "web-7c9f8d6b5-x2k4q",
            Record::Flow(flow_to(ip, 443, c, FlowPhase::Start, 0)),
        )
    };
    let t0 = 1_000 * SEC;
    assert!(e.evaluate(&ev("1.1.1.1", 1), t0).is_empty(), "learning");
    assert!(
        e.evaluate(&ev("2.2.2.2", 2), t0 + 3599 * SEC).is_empty(),
        "still learning"
    );
    assert!(
        e.evaluate(&ev("1.1.1.1", 3), t0 + 3600 * SEC).is_empty(),
        "learned"
    );
    assert!(
        e.evaluate(&ev("2.2.2.2", 4), t0 + 3600 * SEC).is_empty(),
        "learned at the edge"
    );
    assert!(
        e.evaluate(&ev("8.8.8.8", 5), t0 + 3600 * SEC).is_empty(),
        "allowlisted"
    );
    let a = e.evaluate(&ev("6.6.6.6", 6), t0 + 3600 * SEC);
    assert_eq!(a.len(), 1);
    assert!(
        e.evaluate(&ev("6.6.6.6", 7), t0 + 3700 * SEC).is_empty(),
        "now known"
    );
    // Another workload starts its own learning period.
    let other = pod_event(
        "api-5d4f7b9c8-abcde",
        Record::Flow(flow_to("6.6.6.6", 443, 8, FlowPhase::Start, 0)),
    );
    assert!(e.evaluate(&other, t0 + 3700 * SEC).is_empty());
}

#[test]
fn socket_baselines_from_an_older_id_scheme_are_reset_without_a_burst() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rule-state.json");
    // A state file written before socket ids had a scheme number: its ids mean nothing now.
    std::fs::write(
        &path,
        br#"{"windows":{},"learned":{},"distinct":{},"sockets":{"12345":700},"keys_refused":0}"#,
    )
    .expect("write");
    let mut e = stateful_engine(EXFIL);
    e.load_state(&path).expect("load");
    let long_lived = |cookie, phase, sent| {
        let mut f = flow_to("1.2.3.4", 443, cookie, phase, sent);
        f.first_seen = 1; // long before the load
        pod_event("web-7c9f8d6b5-x2k4q", Record::Flow(f))
    };
    let now = crate::model::now_ns();
    // A socket open across the upgrade reports its lifetime's 5,000 bytes: a baseline, not
    // a burst over the 1,000-byte threshold...
    assert!(e
        .evaluate(&long_lived(9, FlowPhase::Update, 5_000), now)
        .is_empty());
    // ...and what it moves afterwards counts: 5,000 → 6,200 is 1,200.
    assert_eq!(
        e.evaluate(&long_lived(9, FlowPhase::Update, 6_200), now + SEC)
            .len(),
        1
    );
    // A socket that starts after the load counts from its first record.
    let mut fresh = flow_to("5.6.7.8", 443, 10, FlowPhase::Start, 1_500);
    fresh.first_seen = now + 2 * SEC;
    assert_eq!(
        e.evaluate(
            &pod_event("web-7c9f8d6b5-x2k4q", Record::Flow(fresh)),
            now + 2 * SEC
        )
        .len(),
        1
    );
    // Saved again, the file carries the current scheme: a second load resets nothing.
    e.save_state(&path).expect("save");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    assert_eq!(saved["socket_ids"], 2);
    assert_eq!(saved["sockets"].as_object().map(|m| m.len()), Some(2));
}

#[test]
fn stateful_state_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rule-state.json");
    let ev = |ip: &str, c| {
        pod_event(
            "web-7c9f8d6b5-x2k4q",
            Record::Flow(flow_to(ip, 443, c, FlowPhase::End, 600)),
        )
    };
    let t0 = 1_000 * SEC;
    {
        let mut e = stateful_engine(&format!("{NEW_DEST}{EXFIL}"));
        assert!(e.evaluate(&ev("1.1.1.1", 1), t0).is_empty());
        e.save_state(&path).expect("save");
    }
    let mut e = stateful_engine(&format!("{NEW_DEST}{EXFIL}"));
    e.load_state(&path).expect("load");
    // The learning clock and the learned value came back...
    assert!(e.evaluate(&ev("1.1.1.1", 2), t0 + 7200 * SEC).is_empty());
    // ...and so did the threshold window: 600 before the restart + 600 now.
    let fired: Vec<String> = e
        .evaluate(&ev("1.1.1.1", 3), t0 + 5 * SEC)
        .into_iter()
        .map(|a| a.rule_id)
        .collect();
    assert_eq!(fired, vec!["X".to_string()]);
    // A corrupt state file is an error, not a silent fresh start.
    std::fs::write(&path, b"{not json").expect("write");
    assert!(matches!(
        e.load_state(&path),
        Err(stateful::StateError::Corrupt { .. })
    ));
    std::fs::write(&path, b"").expect("write");
    assert!(matches!(
        e.load_state(&path),
        Err(stateful::StateError::Corrupt { .. })
    ));
}

#[test]
fn rate_counts_distinct_values_in_its_window() {
    let rule = "- id: R\n  name: r\n  severity: high\n  kinds: [flow]\n  condition: fd.direction == \"OUTBOUND\"\n  rate:\n    distinct: fd.rport\n    by: [fd.rip]\n    window: 60s\n    above: 3\n  output: 'scan {fd.rip}'\n";
    let mut e = stateful_engine(rule);
    let ev = |port, c| {
        pod_event(
            "scanner",
            Record::Flow(flow_to("10.9.9.9", port, c, FlowPhase::Start, 0)),
        )
    };
    for (i, port) in [22, 22, 80, 443].into_iter().enumerate() {
        assert!(
            e.evaluate(&ev(port, i as u64), SEC).is_empty(),
            "3 distinct ports is not above 3"
        );
    }
    assert_eq!(e.evaluate(&ev(8080, 9), 2 * SEC).len(), 1);
    // After the window only the new port counts.
    assert!(e.evaluate(&ev(9090, 10), 70 * SEC).is_empty());
}

/// A scanner sends most of the distinct ports to one address; a benign client's record then
/// crosses the limit. The alert names the scanner (with the crossing noted), also after the
/// state went through a restart.
#[test]
fn a_rate_alert_names_the_process_behind_most_values_not_the_last_one() {
    let rule = "- id: R\n  name: r\n  severity: high\n  kinds: [flow]\n  condition: fd.direction == \"OUTBOUND\"\n  rate:\n    distinct: fd.rport\n    by: [fd.rip]\n    window: 60s\n    above: 3\n  output: 'scan {fd.rip} by {proc.comm}'\n";
    let scanner = crate::fixtures::process(200, b"nmap");
    let client = crate::fixtures::process(300, b"uploader");
    let flow = |p: &ProcessRecord, port, cookie| {
        pod_event(
            "web",
            Record::Flow(FlowRecord {
                pid: Some(p.pid),
                process_start_time: Some(p.start_time),
                ..flow_to("10.9.9.9", port, cookie, FlowPhase::Start, 0)
            }),
        )
    };
    let meet = |e: &mut Engine| {
        for p in [&scanner, &client] {
            e.evaluate(&pod_event("web", Record::Process(p.clone())), SEC);
        }
    };
    let named = |alerts: &[AlertRecord]| alerts.first()?.process.as_ref().map(|p| p.pid);
    let run = |e: &mut Engine| {
        meet(e);
        for (i, port) in [22, 23, 25].into_iter().enumerate() {
            assert!(e.evaluate(&flow(&scanner, port, i as u64), SEC).is_empty());
        }
    };
    let mut e = stateful_engine(rule);
    run(&mut e);
    let alerts = e.evaluate(&flow(&client, 443, 9), 2 * SEC);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(named(&alerts), Some(200), "{alerts:?}");
    assert_eq!(alerts[0].output, "scan 10.9.9.9 by nmap");
    assert!(
        alerts[0]
            .evidence
            .iter()
            .any(|l| l.contains("crossed the threshold came from pid 300")),
        "{:?}",
        alerts[0].evidence
    );

    // The same after a restart: who sent what is part of the saved state.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let mut before = stateful_engine(rule);
    run(&mut before);
    before.save_state(&path).expect("save");
    let mut after = stateful_engine(rule);
    after.load_state(&path).expect("load");
    meet(&mut after);
    let alerts = after.evaluate(&flow(&client, 443, 9), 2 * SEC);
    assert_eq!(named(&alerts), Some(200), "{alerts:?}");

    // When the crossing process also sent the most values, it is named as before.
    let mut e = stateful_engine(rule);
    run(&mut e);
    let alerts = e.evaluate(&flow(&scanner, 80, 10), 2 * SEC);
    assert_eq!(named(&alerts), Some(200), "{alerts:?}");
    assert!(!alerts[0].evidence.iter().any(|l| l.contains("crossed")));
}

#[test]
fn stateful_rules_reject_unknown_fields_and_two_kinds() {
    let bad = EXFIL.replace("by: [fd.rip]", "by: [fd.nope]");
    let err = RuleSet::compile(&[("s.yaml".into(), format!("rules:\n{bad}"))])
        .expect_err("unknown field")
        .to_string();
    assert!(err.contains("s.yaml") && err.contains("fd.nope"), "{err}");
    let two = EXFIL.replace(
        "  output:",
        "  new_value:\n    value: fd.rip\n    learning: 1h\n  output:",
    );
    let err = RuleSet::compile(&[("s.yaml".into(), format!("rules:\n{two}"))])
        .expect_err("two kinds")
        .to_string();
    assert!(err.contains("at most one"), "{err}");
    let bad_window = EXFIL.replace("window: 10s", "window: soon");
    assert!(RuleSet::compile(&[("s.yaml".into(), format!("rules:\n{bad_window}"))]).is_err());
}

#[test]
fn exec_from_scratch_judges_witnessed_executions_only() {
    let e = Engine::new(RuleSet::managed().expect("managed"));
    let fires = |p: ProcessRecord| {
        e.matches(&Record::Process(p))
            .into_iter()
            .any(|h| e.rules().rules[h.rule].spec.id == "PF-EXEC-TMP")
    };
    let started = proc(b"x", Some("/tmp/x"));
    assert!(fires(started.clone()));
    let running_before = ProcessRecord {
        preexisting: true,
        ..started.clone()
    };
    assert!(!fires(running_before));
    let exec_seen = ProcessRecord {
        phase: ProcessPhase::Exec,
        ..started
    };
    assert!(fires(exec_seen));
    let audit = "rules:\n- id: SITE-OLD-TMP\n  name: t\n  severity: low\n  kinds: [process]\n  condition: proc.preexisting and proc.exe startswith (\"/tmp/\",)\n  output: x\n";
    let set = RuleSet::compile(&[("site.yaml".into(), audit.into())]).expect("compiles");
    let old = ProcessRecord {
        preexisting: true,
        ..proc(b"x", Some("/tmp/x"))
    };
    assert_eq!(Engine::new(set).count_matches(&Record::Process(old)), 1);
}

#[test]
fn overrides_tune_managed_rules_and_name_unknown_targets() {
    let tuning = "overrides:\n- rule: PF-EXEC-TMP\n  exceptions: ['proc.exe startswith (\"/memfd:sealed-\",)']\n- rule: PF-PACKAGE-MANAGER\n  enabled: false\n";
    let mut files = managed_files();
    files.push(("site.yaml".into(), tuning.into()));
    let set = RuleSet::compile(&files).expect("compiles");
    let e = Engine::new(set);
    let hits = |p: &ProcessRecord| -> Vec<String> {
        e.matches(&Record::Process(p.clone()))
            .into_iter()
            .map(|h| e.rules().rules[h.rule].spec.id.clone())
            .collect()
    };
    assert!(!hits(&proc(b"x", Some("/memfd:sealed-1234 (deleted)")))
        .contains(&"PF-EXEC-TMP".to_string()));
    assert!(
        hits(&proc(b"x", Some("/memfd:payload (deleted)"))).contains(&"PF-EXEC-TMP".to_string())
    );
    assert!(hits(&proc(b"apt-get", Some("/usr/bin/apt-get"))).is_empty());
    let err = RuleSet::compile(&[(
        "site.yaml".into(),
        "overrides:\n- rule: NOPE\n  enabled: false\n".into(),
    )])
    .expect_err("unknown rule")
    .to_string();
    assert!(err.contains("site.yaml") && err.contains("NOPE"), "{err}");
}

#[test]
fn masquerade_needs_a_readable_exe() {
    let set = RuleSet::managed().expect("managed");
    let e = Engine::new(set);
    let ids = |p: &ProcessRecord| -> Vec<String> {
        e.matches(&Record::Process(p.clone()))
            .into_iter()
            .map(|h| e.rules().rules[h.rule].spec.id.clone())
            .collect()
    };
    assert!(!ids(&proc(b"process_api", None)).contains(&"PF-MASQUERADE".to_string()));
    assert!(ids(&proc(b"nginx", Some("/tmp/.x/miner"))).contains(&"PF-MASQUERADE".to_string()));
}
