use super::*;
use crate::model::CollectorIdentity;
use crate::model::{Ancestor, ProcessPhase, Unavailable};

pub(crate) fn proc(comm: &[u8], exe: Option<&str>) -> ProcessRecord {
    ProcessRecord {
        pid: 100,
        start_time: 1,
        ppid: 1,
        parent_start_time: None,
        phase: ProcessPhase::Start,
        comm: comm.to_vec(),
        exe: exe.map(|e| e.as_bytes().to_vec()),
        argv: vec![comm.to_vec()],
        cwd: None,
        uid: 1000,
        gid: 1000,
        euid: 1000,
        egid: 1000,
        tty: None,
        session_id: 0,
        pgid: 0,
        container_id: None,
        pod_uid: None,
        exit_time: None,
        ancestors: vec![],
        exe_unavailable: Unavailable::Unspecified,
        cwd_unavailable: Unavailable::Unspecified,
        exe_deleted: false,
        seen_at_exit_only: false,
        stdio_is_socket: None,
        stdio_socket_inodes: vec![],
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
        source: src.clone(),
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

/// `cargo test --release --lib rules::tests::throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn throughput() {
    let engine = bench_engine();
    let recs = bench_records();
    let n = 2_000_000usize;
    let t = std::time::Instant::now();
    let mut hits = 0usize;
    for i in 0..n {
        hits += engine.count_matches(&recs[i % recs.len()]);
    }
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "{} records in {s:.3}s: {:.0} records/s, {hits} hits",
        n,
        n as f64 / s
    );
}
