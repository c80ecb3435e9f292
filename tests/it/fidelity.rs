//! Connection fidelity against real processes (issue 19): a connection a new process opens
//! after a quiet spell is seen alive and owned, on the host and in a pod's network
//! namespace; short connections (2, 10, 30 ms) are owned by fd; a connection reset after
//! 10 ms keeps its peer.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use procflow::model::{Attribution, FlowPhase, FlowRecord};

use crate::util::{flows, Collector, Netns};

/// Listens, connects to itself, holds the connection `argv[1]` seconds, closes; prints its
/// pid and the client's and listener's ports first.
const SELF_CONNECT_PY: &str = r#"
import os, socket, sys, time
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(4)
c = socket.create_connection(l.getsockname()); s, _ = l.accept()
print(os.getpid(), c.getsockname()[1], l.getsockname()[1], flush=True)
c.sendall(b"x"); s.recv(1)
time.sleep(float(sys.argv[1]))
c.close(); s.close(); l.close()
"#;

/// Connects to 127.0.0.1:`argv[1]` `argv[3]` times, each connection held `argv[2]` ms
/// after one byte each way, then closed (with RST when `argv[4]` is "rst"); 50 ms between
/// connections keep the collector's checks at their churn pace. Prints its pid, then each
/// connection's client port.
const CLIENT_PY: &str = r#"
import os, socket, struct, sys, time
port, hold, count, rst = int(sys.argv[1]), float(sys.argv[2]) / 1e3, int(sys.argv[3]), sys.argv[4] == "rst"
print(os.getpid(), flush=True)
for _ in range(count):
    time.sleep(0.05)
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"q"); c.recv(1)
    t = time.monotonic() + hold
    while time.monotonic() < t:
        pass
    if rst:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    print(c.getsockname()[1], flush=True)
    c.close()
"#;

fn python(netns: Option<&str>, script: &str, args: &[&str]) -> std::process::Child {
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "/usr/bin/python3"]);
            c
        }
        None => Command::new("/usr/bin/python3"),
    };
    command
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3")
}

/// The START of the socket whose local port is `local` and remote port `remote`.
fn start_of<'a>(all: &[&'a FlowRecord], local: u16, remote: u16) -> Option<&'a FlowRecord> {
    all.iter().copied().find(|f| {
        f.phase == FlowPhase::Start && f.local_port == local && f.remote_port == Some(remote)
    })
}

/// Ten times, after the collector has been quiet longer than its back-off (5 s to the
/// deepest idle interval), a new process's connection held 200 ms: each one seen alive
/// (a START) and owned by fd by that process. Returns the misses, described.
fn quiet_spells(netns: Option<&str>) -> Vec<String> {
    let prefix: Vec<&str> = match netns {
        Some(ns) => vec!["ip", "netns", "exec", ns],
        None => Vec::new(),
    };
    let collector = Collector::start(&prefix, &[]);
    let mut made = Vec::new();
    for _ in 0..10 {
        thread::sleep(Duration::from_millis(5_600));
        let mut child = python(netns, SELF_CONNECT_PY, &["0.2"]);
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert!(child.wait().expect("wait").success());
        let fields: Vec<u32> = line
            .split_whitespace()
            .map(|w| w.parse().expect("number"))
            .collect();
        made.push((fields[0], fields[1] as u16, fields[2] as u16));
    }
    thread::sleep(Duration::from_millis(300));
    let records = collector.stop();
    let all = flows(&records);
    made.iter()
        .filter_map(|&(pid, client, server)| {
            let start = start_of(&all, client, server);
            let owned =
                start.is_some_and(|f| f.attribution == Attribution::Fd && f.pid == Some(pid));
            (!owned).then(|| format!("pid {pid} port {client}: {start:?}"))
        })
        .collect()
}

#[test]
fn after_a_quiet_spell_a_new_connection_is_seen_alive_and_owned_on_the_host_and_in_a_pod() {
    let ns = Netns::new("q", &["pod"]);
    let pod = ns.name(0).to_owned();
    let in_pod = thread::spawn(move || quiet_spells(Some(&pod)));
    let host = quiet_spells(None);
    let pod = in_pod.join().expect("pod thread");
    assert!(host.is_empty(), "missed on the host: {host:#?}");
    assert!(pod.is_empty(), "missed in the pod: {pod:#?}");
}

/// A server in this process: accepts, answers one byte per connection, reads to EOF.
fn serve() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            thread::spawn(move || {
                let mut b = [0u8; 64];
                if matches!(s.read(&mut b), Ok(n) if n > 0) {
                    let _ = std::io::Write::write_all(&mut s, b"r");
                }
                while matches!(s.read(&mut b), Ok(n) if n > 0) {}
            });
        }
    });
    port
}

/// Runs the client: `count` connections held `hold_ms`; returns its pid and client ports.
fn run_client(port: u16, hold_ms: u32, count: usize, rst: bool) -> (u32, Vec<u16>) {
    let mut child = python(
        None,
        CLIENT_PY,
        &[
            &port.to_string(),
            &hold_ms.to_string(),
            &count.to_string(),
            if rst { "rst" } else { "fin" },
        ],
    );
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let pid = lines
        .next()
        .expect("pid")
        .expect("read")
        .trim()
        .parse()
        .expect("pid");
    let ports = lines
        .map(|l| l.expect("read").trim().parse().expect("port"))
        .collect();
    assert!(child.wait().expect("wait").success());
    (pid, ports)
}

/// Connections held 2, 10 and 30 ms: their client sockets are owned by fd, by the client.
/// A loaded machine starves the collector past a connection's life now and then (this
/// 2-core machine at load 9–13 with a debug build and the suite beside it: 30 ms 5 to 10
/// of 10, 10 ms 2 to 9, 2 ms 0 to 7), so the connections come in batches of 10 until
/// 30 ms has 8 owned (3 batches at most), 10 ms 5 (3 batches), 2 ms one (6 batches); a
/// wrong pid never passes. procflow-bench's `lifetime` scenario measures the rates.
#[test]
fn short_connections_are_owned_by_fd_by_their_process() {
    owned_by_fd(&[(30, TRIES - 2, 3), (10, TRIES / 2, 3)]);
}

/// A connection held 2 ms is owned only if its owner's fd table is read and a dump reaches
/// its socket within those 2 ms: the owners are read at the trigger's rise, before the dump
/// (read after it, 0 of 60 were owned), and TCP's two families come from one walk of the
/// connection hash (≈ 1.5 ms of CPU on this machine's 262,144 buckets).
#[test]
fn two_ms_connections_are_owned_by_fd_by_their_process() {
    owned_by_fd(&[(2, 1, 6)]);
}

const TRIES: usize = 10;

/// For each (hold ms, needed, batches): connections held that long come in batches of
/// `TRIES` until `needed` client sockets are owned by fd by the client.
fn owned_by_fd(cases: &[(u32, usize, usize)]) {
    let collector = Collector::start(&[], &[]);
    let port = serve();
    // Unscored: the collector's first seconds (its first sweeps of a busy host) and the
    // client's first connection (a new process read then) are not what is measured here.
    run_client(port, 1, 3, false);
    let mut records = Vec::new();
    let mut failed = Vec::new();
    for &(hold, needed, batches) in cases {
        let (mut owned, mut tried) = (0, 0);
        for _ in 0..batches {
            let (pid, ports) = run_client(port, hold, TRIES, false);
            tried += ports.len();
            // The client's sockets have ended (it exited): their records are out shortly.
            thread::sleep(Duration::from_millis(300));
            records.extend(collector.records_so_far());
            let all = flows(&records);
            let starts: Vec<_> = ports
                .iter()
                .filter_map(|&p| start_of(&all, p, port))
                .collect();
            let wrong: Vec<_> = starts
                .iter()
                .filter(|f| f.pid.is_some_and(|p| p != pid))
                .collect();
            assert!(
                wrong.is_empty(),
                "held {hold} ms: another pid named: {wrong:#?}"
            );
            owned += starts
                .iter()
                .filter(|f| f.attribution == Attribution::Fd && f.pid == Some(pid))
                .count();
            for f in starts.iter().filter(|f| f.attribution != Attribution::Fd) {
                eprintln!("held {hold} ms, not owned by fd: {f:?}");
            }
            if owned >= needed {
                break;
            }
        }
        eprintln!("held {hold} ms: {owned} of {tried} owned by fd by the client");
        if owned < needed {
            failed.push(format!(
                "held {hold} ms: {owned} of {tried} owned by fd by the client (need {needed})"
            ));
        }
    }
    drop(collector);
    assert!(failed.is_empty(), "{failed:#?}");
}

/// A connection reset (SO_LINGER 0) after 10 ms: its END keeps the peer its dump saw.
#[test]
fn a_connection_reset_after_10_ms_keeps_its_peer() {
    let collector = Collector::start(&[], &[]);
    let port = serve();
    // Batches until half of one batch kept their peer (3 at most), as the short ones above.
    let mut ports = Vec::new();
    let mut records = Vec::new();
    for _ in 0..3 {
        let (_, made) = run_client(port, 10, TRIES, true);
        ports.extend(made);
        thread::sleep(Duration::from_millis(300));
        records.extend(collector.records_so_far());
        let kept = flows(&records)
            .iter()
            .filter(|f| f.phase == FlowPhase::End && ports.contains(&f.local_port))
            .filter(|f| f.remote_port == Some(port))
            .count();
        if kept >= TRIES / 2 {
            break;
        }
    }
    records.extend(collector.stop());
    let all = flows(&records);
    let ends: Vec<_> = all
        .iter()
        .filter(|f| f.phase == FlowPhase::End && ports.contains(&f.local_port))
        .collect();
    assert_eq!(ends.len(), ports.len(), "one END per connection: {ends:#?}");
    let kept = ends
        .iter()
        .filter(|f| f.remote_port == Some(port) && f.remote_addr == Some([127, 0, 0, 1].into()))
        .count();
    assert!(
        ends.iter().all(|f| f.reset),
        "every END says it was reset: {ends:#?}"
    );
    // A socket no dump saw is said to have lost its peer, never given a wrong one.
    assert!(ends
        .iter()
        .all(|f| f.remote_port == Some(port) || f.peer_scrubbed));
    // Seen alive by a dump within its 10 ms, as a loaded machine allows (3 to 8 of 10 at
    // load 9–13 with a debug build); procflow-bench's `lifetime` scenario measures the rate.

    assert!(
        kept >= TRIES / 2,
        "{kept} of {} kept their peer: {ends:#?}",
        ports.len()
    );
}
