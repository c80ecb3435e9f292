//! Live tests of the managed rules: real processes and loopback sockets, observed by
//! the real collector (`procflow collector --output stdout --once`), fed to the engine.
//! Each malicious workload has a benign twin that must raise nothing.

use std::collections::{HashMap, HashSet};
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
    let mut recs: Vec<Record> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
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
            source: CollectorIdentity::default(),
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
        std::fs::copy("/usr/bin/sleep", &p).expect("copy sleep");
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
    let mut expected = vec![
        "PF-REVERSE-SHELL-STDIO",
        "PF-EXEC-TMP",
        "PF-MASQUERADE",
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
    settle();
    let pids: HashSet<u32> = kids.0.iter().map(|c| c.id()).collect();
    let (fired, seen) = alerts_for(&pids);
    assert!(
        seen >= 4,
        "the collector saw only {seen} records of the benign workloads"
    );
    assert!(fired.is_empty(), "benign workloads raised {fired:?}");
}
