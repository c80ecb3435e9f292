//! Live tests of the second pass of the managed rules (issue 22): each attack runs as real
//! processes and sockets (in network namespaces where it needs a world) under a streaming
//! collector, in the access mode it is meant for; each has a benign twin that must not
//! raise the rule. Alerts come from the managed set fed the collector's records in the
//! order they arrived, as the aggregator feeds them.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use procflow::model::{CollectorIdentity, Event, Record};
use procflow::rules::{Engine, RuleSet};

use crate::util::{Collector, Kids, Netns, UNPRIVILEGED};

mod cmdline;
mod links;
mod packages;
mod packet;
mod pipes;
mod stdio;

/// Every alert of the managed set on `records`: (rule id, pid of the alerted process,
/// output).
fn alerts(records: &[Record]) -> Vec<(String, Option<u32>, String)> {
    let source = std::sync::Arc::new(CollectorIdentity {
        collector_id: "live".into(),
        pod_name: "web-7c9f8d6b5-x2k4q".into(),
        pod_namespace: "shop".into(),
        ..CollectorIdentity::default()
    });
    let mut engine = Engine::new(RuleSet::managed().expect("managed"));
    let mut out = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let ev = Event {
            source: source.clone(),
            received_at: 0,
            record: record.clone(),
        };
        let now = 1_000_000_000 + i as u64;
        for a in engine.evaluate(&ev, now) {
            out.push((a.rule_id, a.process.map(|p| p.pid), a.output));
        }
    }
    out
}

/// Which of `rules` fired on a process of `pids` (or a descendant's record naming it).
fn fired_on(alerts: &[(String, Option<u32>, String)], rule: &str, pids: &HashSet<u32>) -> bool {
    alerts
        .iter()
        .any(|(r, p, _)| r == rule && p.is_some_and(|p| pids.contains(&p)))
}

/// Runs `scenario` under a collector started with `prefix`, until every child it returned
/// has exited (bounded), and returns the collector's records.
fn observe(prefix: &[&str], scenario: impl FnOnce() -> Kids) -> (Vec<Record>, Kids) {
    let collector = Collector::start(prefix, &["--output", "stdout"]);
    let mut kids = scenario();
    let deadline = Instant::now() + Duration::from_secs(20);
    for c in &mut kids.0 {
        while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The last exits reach the collector on its next poll.
    std::thread::sleep(Duration::from_millis(300));
    (collector.stop(), kids)
}

/// The pids of `kids` and all their descendants seen in `records`.
fn family(kids: &[u32], records: &[Record]) -> HashSet<u32> {
    let mut pids: HashSet<u32> = kids.iter().copied().collect();
    for r in records {
        if let Record::Process(p) = r {
            if p.ancestors.iter().any(|a| kids.contains(&a.pid)) {
                pids.insert(p.pid);
            }
        }
    }
    pids
}

fn scratch_dir() -> tempfile::TempDir {
    // Not under /tmp: the scratch-path rules would judge the path, not the behaviour.
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

/// Writes `body` into `dir/name` and runs it as `sh dir/name`, quietly: a script file,
/// whose command line says nothing of what it runs.
fn sh_file(dir: &std::path::Path, name: &str, body: &str) -> Child {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("script");
    Command::new("sh")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh")
}

/// The benign twins of a download into a shell, as script files in `dir`: a download of
/// `url` piped into grep, and a local file (`dir/x.sh`) piped into a shell.
fn download_twins(dir: &std::path::Path, url: &str) -> [Child; 2] {
    [
        sh_file(
            dir,
            "grep.sh",
            &format!("curl -fsS {url} | grep -q sleep; sleep 2\n"),
        ),
        sh_file(
            dir,
            "local.sh",
            &format!("cat {} | sh\n", dir.join("x.sh").display()),
        ),
    ]
}

fn sh(script: &str) -> Child {
    Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh")
}

const PY: &str = "/usr/bin/python3";

fn python(code: &str, args: &[&str]) -> Child {
    Command::new(PY)
        .arg("-c")
        .arg(code)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3")
}

/// A binary deleted by its runner (fexecve of an unlinked copy) is an execution from a
/// deleted file; the forks of a shell whose binary was replaced on disk are not executions.
#[test]
fn a_runner_deleting_its_binary_fires_and_forks_of_a_replaced_shell_do_not() {
    let dir = scratch_dir();
    let bash = dir.path().join("bash");
    crate::util::copy_executable("/usr/bin/bash", &bash);
    let payload = dir.path().join("payload");
    let (records, kids) = observe(&[], || {
        // The shell starts, its file is replaced by a file of another owner (so only the
        // fork tells it apart: exe_replaced is false), then it forks subshells that live.
        let shell = Command::new(&bash)
            .args([
                "-c",
                &format!(
                    "sleep 0.5; rm -f {b}; cp /usr/bin/bash {b}; chown nobody {b}; (sleep 2; true) & (sleep 2; true) & wait",
                    b = bash.display()
                ),
            ])
            .spawn()
            .expect("bash");
        let runner = python(
            "import os,shutil,sys\nshutil.copy('/usr/bin/sleep', sys.argv[1])\nfd=os.open(sys.argv[1], os.O_RDONLY)\nos.unlink(sys.argv[1])\nos.execve(fd, ['payload','2'], {})",
            &[payload.to_str().expect("utf-8")],
        );
        Kids(vec![shell, runner])
    });
    let all = alerts(&records);
    let shell = family(&[kids.0[0].id()], &records);
    let runner = HashSet::from([kids.0[1].id()]);
    let deleted_forks = records
        .iter()
        .filter(|r| matches!(r, Record::Process(p) if shell.contains(&p.pid) && p.exe_deleted && p.forked_no_exec))
        .count();
    assert!(deleted_forks > 0, "no fork of the replaced shell was seen");
    assert!(fired_on(&all, "PF-EXEC-TMP", &runner), "{all:?}");
    assert!(!fired_on(&all, "PF-EXEC-TMP", &shell), "{all:?}");
    let replaced: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Process(p) if runner.contains(&p.pid) && p.exe_deleted => Some(p.exe_replaced),
            _ => None,
        })
        .collect();
    assert!(replaced.contains(&Some(false)), "{replaced:?}");
}

/// Tools started through Debian's alternatives (awk → mawk) and versioned links (python3 →
/// python3.11) are consistent; a binary that renamed itself after a command is not.
#[test]
fn alternatives_are_consistent_and_a_renamed_binary_is_a_masquerade() {
    let dir = scratch_dir();
    let src = dir.path().join("renamed.c");
    std::fs::write(
        &src,
        "#include <sys/prctl.h>\n#include <unistd.h>\nint main(void){prctl(PR_SET_NAME,\"awk\");sleep(2);return 0;}\n",
    )
    .expect("write");
    let bin = dir.path().join("xmrig");
    let cc = Command::new("gcc")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("gcc");
    assert!(cc.success());
    let (records, kids) = observe(&[], || {
        Kids(vec![
            sh("sleep 2 | awk '{print}'"),
            python("import time; time.sleep(2)", &[]),
            Command::new("bash")
                .args(["-c", &format!("exec -a awk {}", bin.display())])
                .spawn()
                .expect("renamed"),
        ])
    });
    let all = alerts(&records);
    let benign = family(&[kids.0[0].id(), kids.0[1].id()], &records);
    let awk_seen = records
        .iter()
        .any(|r| matches!(r, Record::Process(p) if benign.contains(&p.pid) && p.comm == b"awk" && p.exe.as_deref() == Some(b"/usr/bin/mawk".as_slice())));
    assert!(awk_seen, "awk running mawk was not seen");
    assert!(!fired_on(&all, "PF-MASQUERADE", &benign), "{all:?}");
    let renamed = HashSet::from([kids.0[2].id()]);
    assert!(fired_on(&all, "PF-MASQUERADE", &renamed), "{all:?}");
}

/// A Python retitled as a kernel worker, seen with and without access to its executable;
/// a plain Python beside it stays quiet.
#[test]
fn a_process_retitled_as_a_kernel_thread_fires_in_both_access_modes() {
    let retitle = format!(
        "exec -a '[kworker/1:2-events]' {PY} -c 'import ctypes,time; ctypes.CDLL(None).prctl(15, b\"[kworker/1:2-ev\", 0, 0, 0); time.sleep(2)'"
    );
    for prefix in [&[][..], &UNPRIVILEGED[..]] {
        let (records, kids) = observe(prefix, || {
            Kids(vec![
                Command::new("bash")
                    .args(["-c", &retitle])
                    .spawn()
                    .expect("bash"),
                python("import time; time.sleep(2)", &[]),
            ])
        });
        let all = alerts(&records);
        let attack = HashSet::from([kids.0[0].id()]);
        let benign = HashSet::from([kids.0[1].id()]);
        assert!(
            fired_on(&all, "PF-KTHREAD-NAME", &attack),
            "{prefix:?}: {all:?}"
        );
        assert!(
            !all.iter()
                .any(|(_, p, _)| p.is_some_and(|p| benign.contains(&p))),
            "{prefix:?}: {all:?}"
        );
    }
}

/// A server (it owns a listener) running `sh -c` fires; the same server's forked worker, a
/// process manager's worker and the server's loopback health check do not.
#[test]
fn a_server_starting_a_shell_fires_and_its_benign_twins_do_not() {
    let dir = scratch_dir();
    // A process manager that holds a socket and starts its workers by design.
    let supervisord = dir.path().join("supervisord");
    std::os::unix::fs::symlink("/usr/bin/python3.11", &supervisord).expect("symlink");
    let server = |cmd: &str| {
        format!(
            "import os,socket,subprocess,time\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\nport=s.getsockname()[1]\ntime.sleep(2)\n{cmd}\ntime.sleep(2.5)"
        )
    };
    let (records, kids) = observe(&[], || {
        Kids(vec![
            python(&server("subprocess.Popen('id >/dev/null; sleep 2', shell=True)"), &[]),
            python(
                &server("pid=os.fork()\nif pid == 0:\n    time.sleep(2); os._exit(0)"),
                &[],
            ),
            python(
                &server("subprocess.Popen('curl -fsm2 http://127.0.0.1:%d/healthz' % port, shell=True)"),
                &[],
            ),
            Command::new(&supervisord)
                .args([
                    "-c",
                    &server("subprocess.Popen(['/usr/bin/python3', '-c', 'import time; time.sleep(2)'])"),
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("supervisord"),
        ])
    });
    let all = alerts(&records);
    let attack = family(&[kids.0[0].id()], &records);
    assert!(
        fired_on(&all, "PF-SERVER-SPAWNED-SHELL", &attack),
        "{all:?}"
    );
    let benign = family(&[kids.0[1].id(), kids.0[2].id(), kids.0[3].id()], &records);
    assert!(benign.len() > 3, "the benign children were not seen");
    for r in &records {
        if let Record::Process(p) = r {
            if all.iter().any(|(_, a, _)| *a == Some(p.pid)) && benign.contains(&p.pid) {
                eprintln!(
                    "benign alerted: {}",
                    serde_json::to_string(p).unwrap_or_default()
                );
            }
        }
    }
    assert!(
        !fired_on(&all, "PF-SERVER-SPAWNED-SHELL", &benign),
        "{all:?}"
    );
}

/// `curl … | sh` fires whether the collector can read the shell's files or not; a download
/// piped into grep does not.
#[test]
fn a_download_piped_into_a_shell_fires_in_both_access_modes() {
    let dir = scratch_dir();
    std::fs::write(dir.path().join("x.sh"), "sleep 2\n").expect("script");
    let (server, port) = serve_dir(dir.path());
    let url = format!("http://127.0.0.1:{port}/x.sh");
    for prefix in [&[][..], &UNPRIVILEGED[..]] {
        let (records, kids) = observe(prefix, || {
            Kids(vec![
                sh(&format!("curl -fsS {url} | sh")),
                sh(&format!("curl -fsS {url} | grep -q sleep; sleep 2")),
            ])
        });
        let all = alerts(&records);
        let attack = family(&[kids.0[0].id()], &records);
        let benign = family(&[kids.0[1].id()], &records);
        assert!(
            fired_on(&all, "PF-DOWNLOAD-SHELL", &attack),
            "{prefix:?}: {all:?}"
        );
        assert!(
            !fired_on(&all, "PF-DOWNLOAD-SHELL", &benign),
            "{prefix:?}: {all:?}"
        );
    }
    drop(server);
}

/// A local HTTP server of `dir`'s files (the downloads' source), with its port. It holds
/// each body back a second after the headers, so a downloader lives long enough for the
/// collector to read its exec whatever the file's size: a client's rate limit does not
/// hold back a file that fits in one read, and a downloader that lives a few ms can end
/// before the collector reads it (a polling limit, in the rules' descriptions; not what
/// the tests are about).
const SLOW_SERVER: &str = "import http.server,time\nclass H(http.server.SimpleHTTPRequestHandler):\n    def copyfile(self, src, dst):\n        time.sleep(1); super().copyfile(src, dst)\n    def log_message(self, *a): pass\ns=http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)\nprint('serving on port', s.server_address[1], flush=True)\ns.serve_forever()";

fn serve_dir(dir: &std::path::Path) -> (Kids, u16) {
    let mut server = Command::new(PY)
        .args(["-c", SLOW_SERVER])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("http.server");
    let port = server_port(&mut server);
    (Kids(vec![server]), port)
}

/// The port a server prints on its first line (`… port N …`).
fn server_port(server: &mut Child) -> u16 {
    use std::io::{BufRead, BufReader};
    let out = server.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect("line");
    line.split("port ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// With another uid the collector cannot read exe or cwd; argv[0] still says `/dev/shm`.
#[test]
fn scratch_path_execution_is_judged_from_argv0_without_exe_access() {
    let dir = tempfile::Builder::new()
        .prefix(".pf-test-")
        .tempdir_in("/dev/shm")
        .expect("shm dir");
    let agent = dir.path().join("agent");
    crate::util::copy_executable("/usr/bin/sleep", &agent);
    let (records, kids) = observe(&UNPRIVILEGED, || {
        Kids(vec![
            Command::new(&agent).arg("2").spawn().expect("agent"),
            sh(&format!("cd {} && ./agent 2", dir.path().display())),
            Command::new("/usr/bin/sleep")
                .arg("2")
                .spawn()
                .expect("sleep"),
        ])
    });
    let all = alerts(&records);
    let denied = records.iter().any(|r| {
        matches!(r, Record::Process(p) if p.pid == kids.0[0].id()
            && p.exe_unavailable == procflow::model::Unavailable::PermissionDenied)
    });
    assert!(denied, "the collector could read the agent's exe");
    assert!(
        fired_on(&all, "PF-EXEC-TMP-ARGV", &HashSet::from([kids.0[0].id()])),
        "{all:?}"
    );
    assert!(
        fired_on(
            &all,
            "PF-EXEC-TMP-ARGV",
            &family(&[kids.0[1].id()], &records)
        ),
        "{all:?}"
    );
    assert!(
        !all.iter().any(|(_, p, _)| *p == Some(kids.0[2].id())),
        "{all:?}"
    );
}

/// DNS in a pod namespace: many queries to a resolver on the internet fire both DNS rules;
/// as many to the cluster's resolver raise nothing.
#[test]
fn dns_to_an_external_resolver_and_its_rate_fire_and_the_cluster_resolver_does_not() {
    let ns = Netns::new("d", &["pod", "world"]);
    ns.link(0, "10.78.0.2/16", 1, "10.78.0.1/16", "d");
    ns.add_addrs(1, "d", &["203.0.113.53/32", "10.96.0.10/32"]);
    ns.default_route(0, "10.78.0.1");
    // One socket per address, so each answer comes from the address asked.
    let resolver = "import socket,threading\ndef serve(addr):\n    s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    s.bind((addr,53))\n    while True:\n        d,a=s.recvfrom(512); s.sendto(d,a)\nfor addr in ('203.0.113.53','10.96.0.10'):\n    threading.Thread(target=serve,args=(addr,),daemon=True).start()\nthreading.Event().wait()";
    let _world = Kids(vec![Command::new("ip")
        .args(["netns", "exec", ns.name(1), PY, "-c", resolver])
        .spawn()
        .expect("resolver")]);
    std::thread::sleep(Duration::from_millis(500));
    let queries = |addr: &str| {
        format!(
            "import socket,time\nfor i in range(100):\n    s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('{addr}',53)); s.send(b'q%d' % i); s.settimeout(1); s.recv(512); s.close(); time.sleep(0.01)"
        )
    };
    let prefix = ["ip", "netns", "exec", ns.name(0)];
    let (records, _kids) = observe(&prefix, || {
        let run = |addr: &str| {
            Command::new("ip")
                .args(["netns", "exec", ns.name(0), PY, "-c", &queries(addr)])
                .spawn()
                .expect("queries")
        };
        Kids(vec![run("203.0.113.53"), run("10.96.0.10")])
    });
    let all = alerts(&records);
    let external = records
        .iter()
        .filter(|r| matches!(r, Record::Flow(f) if f.remote_port == Some(53) && f.remote_addr == Some("203.0.113.53".parse().expect("ip"))))
        .count();
    assert!(
        external >= 60,
        "only {external} records of external queries"
    );
    // Sockets living a few ms are often not attributed (issue 19): the alert then names
    // no process; it names the resolver either way.
    let on = |rule: &str, addr: &str| {
        all.iter()
            .any(|(r, _, out)| r == rule && out.contains(&format!("{addr}:53")))
    };
    assert!(on("PF-DNS-EXTERNAL-RESOLVER", "203.0.113.53"), "{all:?}");
    assert!(on("PF-DNS-TUNNEL", "203.0.113.53"), "{all:?}");
    let noisy: Vec<_> = all
        .iter()
        .filter(|(_, _, out)| out.contains("10.96.0.10"))
        .collect();
    assert!(noisy.is_empty(), "{noisy:?}");
}

/// One terminal session whose scripts start 50 shells is one interactive-shell alert; a
/// second session at the same time is a second alert.
#[test]
fn one_session_of_50_shells_is_one_alert_and_another_session_another() {
    let session = "for i in $(seq 50); do sh -c 'sleep 0.03'; done; sleep 0.5";
    let (records, kids) = observe(&[], || {
        let pty = || {
            Command::new("script")
                .args(["-qc", session, "/dev/null"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("script")
        };
        Kids(vec![pty(), pty()])
    });
    let all = alerts(&records);
    let mine = family(&[kids.0[0].id(), kids.0[1].id()], &records);
    let shells = records
        .iter()
        .filter(|r| matches!(r, Record::Process(p) if mine.contains(&p.pid) && p.comm == b"sh" && p.tty.is_some()))
        .count();
    assert!(shells >= 50, "only {shells} shell records on the terminals");
    let tty_alerts = all
        .iter()
        .filter(|(r, p, _)| r == "PF-SHELL-TTY" && p.is_some_and(|p| mine.contains(&p)))
        .count();
    assert_eq!(tty_alerts, 2, "{all:?}");
}
