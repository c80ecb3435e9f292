//! One image per process record, against real execs: a fork that execs the same shell (its
//! name and executable unchanged) gets a record with its own arguments, no record pairs one
//! image's name with another's executable, and a shim that execs a listener is judged as
//! the listener's program. Lifetimes are generous and every wait is polled with a deadline:
//! the machine is shared.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use procflow::model::{Event, ProcessPhase, ProcessRecord, Record};
use procflow::rules::{Engine, RuleSet};

use crate::util::Collector;

/// The interpreter itself, not a version manager's shim in front of it.
fn real_python() -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn realpath(program: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .args(["-c", &format!("readlink -f \"$(command -v {program})\"")])
        .output()
        .expect("readlink");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .as_bytes()
        .to_vec()
}

fn process_records(records: &[Record]) -> Vec<&ProcessRecord> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Process(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// What one chain's inner shell and its `sleep` are expected to show.
struct Expected {
    pid: u32,
    ppid: u32,
    argv: Vec<Vec<u8>>,
}

fn argv(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// Runs `sh -c OUTER`, whose inner shell prints "its pid, its sleep's pid"; returns the
/// outer, inner and sleep as expected.
fn run_chain(outer: &str, inner: &str, sleep: &str) -> [Expected; 3] {
    let child = Command::new("sh")
        .args(["-c", outer])
        .stdout(Stdio::piped())
        .spawn()
        .expect("chain");
    let outer_pid = child.id();
    let out = child.wait_with_output().expect("wait chain");
    assert!(out.status.success(), "{outer}");
    let text = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<u32> = text
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [inner_pid, sleep_pid] = pids[..] else {
        panic!("chain printed {text:?}");
    };
    [
        Expected {
            pid: outer_pid,
            ppid: std::process::id(),
            argv: argv(&["sh", "-c", outer]),
        },
        Expected {
            pid: inner_pid,
            ppid: outer_pid,
            argv: argv(&["sh", "-c", inner]),
        },
        Expected {
            pid: sleep_pid,
            ppid: inner_pid,
            argv: argv(&["sleep", sleep]),
        },
    ]
}

/// The shape (`sh -c 'echo …; sh -c "…; sleep 0.05 & …"'`), and a fork that runs
/// its parent's image for 30 ms before it execs the same shell (a subshell that ends in
/// `exec sh -c …`): both children exec /bin/sh from /bin/sh, so neither the name nor the
/// executable changes, only the arguments and the fork flag. The children live 200–300 ms
/// so that a collector starved by a loaded machine still reads them after their exec.
#[test]
fn a_child_that_execs_the_same_shell_gets_its_own_arguments_and_no_mixed_image() {
    let collector = Collector::start(&[], &[]);
    let mut expected = Vec::new();
    for i in 0..6 {
        let inner = format!("echo b{i}; sleep 0.2 & echo $$ $!; wait");
        let outer = format!("echo a{i}; sh -c '{inner}'; true");
        expected.extend(run_chain(&outer, &inner, "0.2"));
        let inner = format!("sleep 0.3 & echo $$ $!; wait; true # {i}");
        let outer = format!("(sleep 0.03; exec sh -c '{inner}'); true");
        expected.extend(run_chain(&outer, &inner, "0.3"));
    }
    // Exits are reported by the next look; nothing here waits on them.
    std::thread::sleep(Duration::from_millis(300));
    let records = collector.stop();
    let procs = process_records(&records);
    let mut missing = Vec::new();
    for e in &expected {
        let own = procs.iter().any(|p| {
            p.pid == e.pid
                && matches!(p.phase, ProcessPhase::Start | ProcessPhase::Exec)
                && p.ppid == e.ppid
                && p.argv == e.argv
        });
        if !own {
            let seen: Vec<_> = procs
                .iter()
                .filter(|p| p.pid == e.pid)
                .map(|p| {
                    (
                        p.phase,
                        p.ppid,
                        String::from_utf8_lossy(&p.argv.join(&b' ')).into_owned(),
                    )
                })
                .collect();
            missing.push(format!(
                "pid {} (parent {}) {:?}: {seen:?}",
                e.pid,
                e.ppid,
                String::from_utf8_lossy(&e.argv.join(&b' '))
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "records without their own argv and parent:\n{}",
        missing.join("\n")
    );
    // Every record pairs a name with the executable of the same image.
    let (sh, sleep) = (realpath("sh"), realpath("sleep"));
    let me = std::fs::read_link("/proc/self/exe").expect("own exe");
    let me = me.as_os_str().as_encoded_bytes();
    let ours: HashSet<u32> = expected.iter().map(|e| e.pid).collect();
    let mixed: Vec<_> = procs
        .iter()
        .filter(|p| ours.contains(&p.pid))
        .filter(|p| match p.exe.as_deref() {
            None => false,
            Some(exe) if exe == sh => p.comm != b"sh",
            Some(exe) if exe == sleep => p.comm != b"sleep",
            // Before its exec, the test's own fork (named like the thread that forked it).
            Some(exe) if exe == me => p.comm == b"sh" || p.comm == b"sleep",
            Some(_) => true,
        })
        .map(|p| {
            format!(
                "{} {:?}: comm {:?} exe {:?}",
                p.pid,
                p.phase,
                String::from_utf8_lossy(&p.comm),
                p.exe.as_deref().map(String::from_utf8_lossy)
            )
        })
        .collect();
    assert!(
        mixed.is_empty(),
        "records mixing two images:\n{}",
        mixed.join("\n")
    );
}

const LISTENER: &str = "import socket, sys, time\n\
s = socket.socket()\n\
s.bind(('127.0.0.1', 0))\n\
s.listen()\n\
print(s.getsockname()[1], flush=True)\n\
time.sleep(0.6)\n";

/// A shell script that execs python within 100 ms of starting (past the age at which new
/// processes are re-read on every tick): the listener python opens must be reported after
/// the EXEC that says so, and the rules, reading records in the collector's order, must
/// not take it for a bind shell.
#[test]
fn a_shim_that_execs_a_listener_is_judged_as_the_new_program() {
    let python = real_python();
    let collector = Collector::start(&[], &[]);
    let mut shims = Vec::new();
    for _ in 0..3 {
        let script = format!("sleep 0.08; exec {python} -c \"{LISTENER}\"");
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("shim");
        let pid = child.id();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("port {line:?}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().expect("try_wait").is_none() {
            assert!(Instant::now() < deadline, "the shim did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
        shims.push((pid, port));
    }
    std::thread::sleep(Duration::from_millis(300));
    let records = collector.stop();
    let mut engine = Engine::new(RuleSet::managed().expect("managed rules"));
    let mut alerts: HashMap<u32, Vec<String>> = HashMap::new();
    // Per shim: the executable of its last process record before its listener appeared.
    let mut exe_at_listen: HashMap<u32, Option<Vec<u8>>> = HashMap::new();
    let mut last_exe: HashMap<u32, Vec<u8>> = HashMap::new();
    for record in records {
        let pid = match &record {
            Record::Process(p) => {
                last_exe.insert(p.pid, p.exe.clone().unwrap_or_default());
                Some(p.pid)
            }
            Record::Listener(l) => {
                // Matched by port and owner: another test's listener may have had the port.
                let shim = shims
                    .iter()
                    .find(|&&(pid, port)| port == l.local_port && l.pid == Some(pid));
                if let Some(&(pid, _)) = shim {
                    exe_at_listen
                        .entry(pid)
                        .or_insert_with(|| last_exe.get(&pid).cloned());
                }
                l.pid
            }
            Record::Flow(f) => f.pid,
            _ => None,
        };
        let event = Event {
            source: Default::default(),
            received_at: 0,
            record,
        };
        for alert in engine.evaluate(&event, 1) {
            if let Some(pid) = pid.filter(|p| shims.iter().any(|(s, _)| s == p)) {
                alerts
                    .entry(pid)
                    .or_default()
                    .push(format!("{}: {}", alert.rule_id, alert.output));
            }
        }
    }
    for (pid, port) in shims {
        let exe = exe_at_listen
            .get(&pid)
            .unwrap_or_else(|| panic!("listener {port} of {pid} never reported as its own"));
        assert_eq!(
            exe.as_deref(),
            Some(python.as_bytes()),
            "the listener of {pid} was reported while its records still said {:?}",
            exe.as_deref().map(String::from_utf8_lossy)
        );
        let bind_shell: Vec<_> = alerts
            .get(&pid)
            .into_iter()
            .flatten()
            .filter(|a| a.starts_with("PF-BIND-SHELL"))
            .collect();
        assert!(bind_shell.is_empty(), "{bind_shell:?}");
    }
}
