//! Helpers shared by the integration tests: running the real `procflow` binary as a
//! separate process, reading its JSON lines, and network namespaces that clean up.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use procflow::model::{FlowPhase, FlowRecord, Record};

pub fn procflow_bin() -> &'static str {
    env!("CARGO_BIN_EXE_procflow")
}

/// Runs a command as `nobody` with no capabilities at all (prefix for [`Collector::start`]).
pub const UNPRIVILEGED: [&str; 7] = [
    "setpriv",
    "--reuid=nobody",
    "--regid=nogroup",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
];

/// Children killed and reaped when the test ends, however it ends.
pub struct Kids(pub Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A collector process whose stdout (JSON lines) is collected until it stops.
pub struct Collector {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Collector {
    /// Starts `prefix… procflow collector args…` and waits until it reports it is running.
    pub fn start(prefix: &[&str], args: &[&str]) -> Collector {
        let mut command = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(procflow_bin());
                c
            }
            None => Command::new(procflow_bin()),
        };
        let mut child = command
            .arg("collector")
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start collector");
        let (line_tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("collector running") {
                    let _ = ready_tx.send(());
                }
                eprintln!("[collector] {line}");
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("collector did not report it was running");
        // Let the initial dump and the first trigger reads settle.
        std::thread::sleep(Duration::from_millis(200));
        Collector { child, lines }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the collector a signal by its PID (e.g. STOP and CONT to stall its readers).
    pub fn signal(&self, signal: &str) {
        sh(&["kill", &format!("-{signal}"), &self.child.id().to_string()]);
    }

    /// The records written so far (each returned once: [`Collector::stop`] returns the rest).
    pub fn records_so_far(&self) -> Vec<Record> {
        self.lines
            .try_iter()
            .map(|l| {
                serde_json::from_str::<Record>(&l)
                    .unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))
            })
            .collect()
    }

    /// Stops the collector with SIGTERM (it ends live flows and drains) and returns every record.
    pub fn stop(mut self) -> Vec<Record> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = self.child.wait().expect("wait collector");
        assert!(exit.success(), "collector exited with {exit}");
        self.lines
            .try_iter()
            .map(|l| {
                serde_json::from_str::<Record>(&l)
                    .unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))
            })
            .collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn flows(records: &[Record]) -> Vec<&FlowRecord> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Flow(f) => Some(f),
            _ => None,
        })
        .collect()
}

pub fn count_phase(flows: &[&FlowRecord], phase: FlowPhase) -> usize {
    flows.iter().filter(|f| f.phase == phase).count()
}

/// Copies an executable through `cp`, so that its writable fd never lives in this
/// process: a test thread that forks while the copy is open would hold it, and
/// exec'ing the copy then fails with ETXTBSY ("Text file busy").
pub fn copy_executable(from: &str, to: &std::path::Path) {
    let to = to.to_str().expect("utf-8 path");
    sh(&["cp", from, to]);
}

/// Runs a command and panics with its output when it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Network namespaces created by a test, deleted on drop (also on panic).
pub struct Netns {
    pub names: Vec<String>,
}

impl Netns {
    pub fn new(tag: &str, names: &[&str]) -> Netns {
        let names: Vec<String> = names
            .iter()
            .map(|n| format!("pf{}{tag}{n}", std::process::id()))
            .collect();
        for n in &names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
            sh(&["ip", "netns", "add", n]);
            sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        Netns { names }
    }

    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Connects namespaces `a` and `b` with a veth pair and addresses (CIDR notation).
    pub fn link(&self, a: usize, addr_a: &str, b: usize, addr_b: &str, tag: &str) {
        let (na, nb) = (self.name(a), self.name(b));
        let (va, vb) = (veth('a', tag), veth('b', tag));
        sh(&[
            "ip", "link", "add", &va, "netns", na, "type", "veth", "peer", "name", &vb, "netns", nb,
        ]);
        sh(&["ip", "-n", na, "addr", "add", addr_a, "dev", &va]);
        sh(&["ip", "-n", nb, "addr", "add", addr_b, "dev", &vb]);
        sh(&["ip", "-n", na, "link", "set", &va, "up"]);
        sh(&["ip", "-n", nb, "link", "set", &vb, "up"]);
    }
}

impl Netns {
    /// Namespace `i`'s default route, through `via`.
    pub fn default_route(&self, i: usize, via: &str) {
        sh(&[
            "ip",
            "-n",
            self.name(i),
            "route",
            "add",
            "default",
            "via",
            via,
        ]);
    }

    /// More addresses on namespace `b`'s end of the link made with `tag`.
    pub fn add_addrs(&self, b: usize, tag: &str, addrs: &[&str]) {
        let dev = veth('b', tag);
        for addr in addrs {
            sh(&["ip", "-n", self.name(b), "addr", "add", addr, "dev", &dev]);
        }
    }
}

/// The device of a link's end: `'a'` or `'b'`, as the namespaces were given to [`Netns::link`].
pub fn veth(side: char, tag: &str) -> String {
    format!("v{side}{tag}{}", std::process::id() % 100000)
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// A collector streaming this host to `aggregator_url` as pod `namespace/pod`, for `secs`
/// seconds at most (killed on drop by the caller).
pub fn grpc_collector(aggregator_url: &str, pod: &str, namespace: &str, secs: u32) -> Child {
    Command::new(procflow_bin())
        .args([
            "collector",
            "--output",
            "grpc",
            "--aggregator",
            aggregator_url,
            "--duration",
            &format!("{secs}s"),
            "--batch-interval",
            "50ms",
        ])
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", namespace)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start collector")
}

/// A python process holding loopback connections (both ends its own) on an address of its
/// own, optionally in a network namespace, until dropped.
pub struct ConnectionHolder {
    child: Child,
}

/// Holds `n` connections to a listener of its own on `ip`, then prints "ready" and waits
/// for stdin to close. Raises its fd limit to the hard one.
const HOLDER_PY: &str = r#"
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
n, ip = int(sys.argv[1]), sys.argv[2]
lst = socket.socket()
lst.bind((ip, 0))
lst.listen(128)
held = []
for _ in range(n):
    held.append(socket.create_connection(lst.getsockname()))
    held.append(lst.accept()[0])
lst.close()
print("ready", flush=True)
sys.stdin.read()
"#;

impl ConnectionHolder {
    /// Starts the holder and waits until its `n` connections are open.
    pub fn start(netns: Option<&str>, n: usize, ip: &str) -> ConnectionHolder {
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "/usr/bin/python3"]);
                c
            }
            None => Command::new("/usr/bin/python3"),
        };
        let mut child = command
            .args(["-c", HOLDER_PY, &n.to_string(), ip])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("connection holder");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim(), "ready", "holder of {n} connections on {ip}");
        ConnectionHolder { child }
    }

    /// `ip netns exec` execs the interpreter: this is the holder's own pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ConnectionHolder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
