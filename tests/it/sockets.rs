//! The socket side against the real kernel: every connection the test makes gets exactly
//! one END with its exact payload bytes on both ends, direction and scope are right across
//! network namespaces, and all of it works as `nobody` with no capabilities.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use procflow::model::{Direction, EndReason, FlowPhase, FlowRecord, Record, Scope};

use crate::util::{count_phase, flows, Collector, ConnectionHolder, Netns, UNPRIVILEGED};

/// One connection of the workload: bytes each way and how long it stays open.
#[derive(Clone, Copy)]
struct Conn {
    up: usize,
    down: usize,
    hold: Duration,
}

/// Runs `conns` against a local listener; returns the listener port and each connection's
/// client port with its plan.
/// The workload's own loopback address: tests run side by side in one network namespace, and
/// port pairs alone can repeat across them (ports are reused within a millisecond).
const WORKLOAD_ADDR: &str = "127.0.83.17";

fn run_workload(conns: &[Conn]) -> (u16, HashMap<u16, Conn>) {
    let listener = TcpListener::bind((WORKLOAD_ADDR, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = conns.len();
    let server = thread::spawn(move || {
        let mut handlers = Vec::new();
        for _ in 0..count {
            let (mut s, _) = listener.accept().expect("accept");
            handlers.push(thread::spawn(move || {
                // The client says how much to send back, then sends until it shuts down.
                let mut header = [0u8; 4];
                s.read_exact(&mut header).expect("server read header");
                let mut upload = Vec::new();
                s.read_to_end(&mut upload).expect("server read");
                s.write_all(&vec![b'd'; u32::from_be_bytes(header) as usize])
                    .expect("server write");
            }));
        }
        for h in handlers {
            h.join().expect("handler");
        }
    });
    let mut clients = Vec::new();
    for plan in conns.iter().copied() {
        clients.push(thread::spawn(move || {
            let mut c = TcpStream::connect((WORKLOAD_ADDR, port)).expect("connect");
            let local = c.local_addr().expect("local").port();
            c.write_all(&(plan.down as u32).to_be_bytes())
                .expect("client header");
            c.write_all(&vec![b'u'; plan.up]).expect("client write");
            thread::sleep(plan.hold);
            c.shutdown(Shutdown::Write).expect("shutdown");
            let mut reply = Vec::new();
            c.read_to_end(&mut reply).expect("client read");
            assert_eq!(reply.len(), plan.down);
            (local, plan)
        }));
    }
    let by_port = clients
        .into_iter()
        .map(|h| h.join().expect("client"))
        .collect();
    server.join().expect("server");
    (port, by_port)
}

fn ends_of<'a>(flows: &[&'a FlowRecord], local_port: u16, remote_port: u16) -> Vec<&'a FlowRecord> {
    flows
        .iter()
        .copied()
        .filter(|f| {
            f.local_port == local_port
                && f.remote_port == Some(remote_port)
                // Clients connect from 127.0.0.1; the server end holds the workload address.
                && (f.local_addr.to_string() == WORKLOAD_ADDR
                    || f.remote_addr.map(|a| a.to_string()).as_deref() == Some(WORKLOAD_ADDR))
        })
        .collect()
}

fn assert_exact(records: &[Record], port: u16, plans: &HashMap<u16, Conn>, long: Duration) {
    let all = flows(records);
    // A peer FIN that lands between a dump's state read and its counter read (the kernel
    // reads the state outside the socket lock) leaves one received byte too many: rare,
    // documented in README, and allowed once per run; every other count must be exact.
    let mut fin_races = 0;
    for (client_port, plan) in plans {
        for (local, remote, sent, received, direction) in [
            // The client's 4-byte header is payload too.
            (
                *client_port,
                port,
                plan.up + 4,
                plan.down,
                Direction::Outbound,
            ),
            (
                port,
                *client_port,
                plan.down,
                plan.up + 4,
                Direction::Inbound,
            ),
        ] {
            let mine = ends_of(&all, local, remote);
            let ends: Vec<_> = mine.iter().filter(|f| f.phase == FlowPhase::End).collect();
            assert_eq!(
                ends.len(),
                1,
                "exactly one END for {local}->{remote}: {mine:#?}"
            );
            let end = ends[0];
            assert_eq!(end.end_reason, EndReason::DestroyEvent);
            assert_eq!(
                end.bytes_sent,
                Some(sent as u64),
                "bytes_sent {local}->{remote}"
            );
            if end.bytes_received == Some(received as u64 + 1) && fin_races == 0 {
                fin_races += 1;
            } else {
                assert_eq!(
                    end.bytes_received,
                    Some(received as u64),
                    "bytes_received {local}->{remote}"
                );
            }
            let starts = count_phase(&mine, FlowPhase::Start);
            assert!(starts <= 1, "at most one START for {local}->{remote}");
            if plan.hold >= long {
                assert_eq!(
                    starts, 1,
                    "a connection open across polls has its START ({local}->{remote}): {mine:#?}"
                );
                let start = mine
                    .iter()
                    .find(|f| f.phase == FlowPhase::Start)
                    .expect("start");
                assert_eq!(start.direction, direction);
                assert_eq!(start.scope, Scope::Local);
                assert!(
                    start.inode.is_some() && start.uid.is_some(),
                    "dumps carry uid and inode: {start:#?}"
                );
            }
        }
    }
}

#[test]
fn every_loopback_connection_ends_once_with_exact_bytes() {
    let collector = Collector::start(&[], &["--poll-interval", "100ms"]);
    let long = Duration::from_millis(350);
    let mut conns = Vec::new();
    for i in 0..20 {
        // Short ones live well under a millisecond between connect and close.
        conns.push(Conn {
            up: i * 37,
            down: i * 101,
            hold: Duration::ZERO,
        });
    }
    for i in 0..5 {
        conns.push(Conn {
            up: 100_000 + i,
            down: 1 + i * 1000,
            hold: long,
        });
    }
    conns.push(Conn {
        up: 0,
        down: 0,
        hold: long,
    });
    conns.push(Conn {
        up: 2 << 20,
        down: 3,
        hold: Duration::ZERO,
    });
    let (port, plans) = run_workload(&conns);
    // The active closer's destroy event comes when it enters TIME_WAIT.
    thread::sleep(Duration::from_millis(600));
    let records = collector.stop();
    assert_exact(&records, port, &plans, long);
}

#[test]
fn unprivileged_collector_sees_flows_and_destroy_events() {
    let collector = Collector::start(&UNPRIVILEGED, &["--poll-interval", "100ms"]);
    let long = Duration::from_millis(300);
    let conns = [
        Conn {
            up: 1234,
            down: 77,
            hold: long,
        },
        Conn {
            up: 5,
            down: 99_999,
            hold: Duration::ZERO,
        },
    ];
    let (port, plans) = run_workload(&conns);
    thread::sleep(Duration::from_millis(600));
    let records = collector.stop();
    assert_exact(&records, port, &plans, long);
}

/// Python one-liners run inside the test's namespaces (python3 is on every machine here).
const SERVER_PY: &str = r#"
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
s.settimeout(15)
for _ in range(int(sys.argv[3])):
    c, _ = s.accept()
    c.settimeout(10)
    d = b""
    while len(d) < 100:
        x = c.recv(4096)
        if not x:
            break
        d += x
    c.sendall(b"r" * 50)
    # Hold the connection 300 ms (3 poll intervals): an orphaned FIN_WAIT2 socket dies at
    # once, and a socket that lived this long must be seen alive. (At 100 ms, one interval,
    # the parallel suite once starved the collector past it: seen only by its destroy event.)
    time.sleep(0.3)
    c.close()
"#;
const CLIENT_PY: &str = r#"
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
c.sendall(b"q" * 100)
time.sleep(0.4)
while c.recv(4096):
    pass
c.close()
"#;

fn in_ns(ns: &str, script: &str, args: &[&str]) -> std::process::Child {
    Command::new("ip")
        // The system interpreter: shims (pyenv) add a second of shell scripts per start.
        .args(["netns", "exec", ns, "/usr/bin/python3", "-c", script])
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn in netns")
}

#[test]
fn direction_and_scope_across_namespaces() {
    // pod ─veth─ cluster (10.200.x, inside the cluster CIDRs)
    //  └──veth── outside (203.0.113.x, TEST-NET-3: north-south)
    let ns = Netns::new("s", &["pod", "cluster", "outside"]);
    ns.link(0, "10.200.0.1/24", 1, "10.200.0.2/24", "c");
    ns.link(0, "203.0.113.1/24", 2, "203.0.113.2/24", "o");
    let collector = Collector::start(
        &["ip", "netns", "exec", ns.name(0)],
        &["--poll-interval", "100ms"],
    );

    let mut servers = vec![
        in_ns(ns.name(1), SERVER_PY, &["10.200.0.2", "8080", "1"]),
        in_ns(ns.name(2), SERVER_PY, &["203.0.113.2", "8080", "1"]),
        in_ns(ns.name(0), SERVER_PY, &["0.0.0.0", "9090", "2"]),
    ];
    thread::sleep(Duration::from_millis(400));
    let clients = vec![
        in_ns(ns.name(0), CLIENT_PY, &["10.200.0.2", "8080"]),
        in_ns(ns.name(0), CLIENT_PY, &["203.0.113.2", "8080"]),
        in_ns(ns.name(1), CLIENT_PY, &["10.200.0.1", "9090"]),
        in_ns(ns.name(2), CLIENT_PY, &["203.0.113.1", "9090"]),
    ];
    for mut c in clients {
        assert!(c.wait().expect("client").success());
    }
    for s in &mut servers {
        assert!(s.wait().expect("server").success());
    }
    thread::sleep(Duration::from_millis(300));
    let records = collector.stop();
    if std::env::var_os("PF_DEBUG_DUMP").is_some() {
        for r in &records {
            eprintln!("REC {}", serde_json::to_string(r).expect("record JSON"));
        }
    }
    let all = flows(&records);
    let find =
        |remote: &str, port_local: Option<u16>, port_remote: Option<u16>| -> Vec<&FlowRecord> {
            all.iter()
                .copied()
                .filter(|f| f.remote_addr.map(|a| a.to_string()).as_deref() == Some(remote))
                .filter(|f| {
                    port_local.is_none_or(|p| f.local_port == p)
                        && port_remote.is_none_or(|p| f.remote_port == Some(p))
                })
                .collect()
        };
    let mut fin_misjudged = 0;
    for (remote, local_port, remote_port, direction, scope) in [
        (
            "10.200.0.2",
            None,
            Some(8080),
            Direction::Outbound,
            Scope::EastWest,
        ),
        (
            "203.0.113.2",
            None,
            Some(8080),
            Direction::Outbound,
            Scope::NorthSouth,
        ),
        (
            "10.200.0.2",
            Some(9090),
            None,
            Direction::Inbound,
            Scope::EastWest,
        ),
        (
            "203.0.113.2",
            Some(9090),
            None,
            Direction::Inbound,
            Scope::NorthSouth,
        ),
    ] {
        let mine = find(remote, local_port, remote_port);
        assert_eq!(
            count_phase(&mine, FlowPhase::Start),
            1,
            "START for {remote} {direction:?}: {mine:#?}"
        );
        assert_eq!(
            count_phase(&mine, FlowPhase::End),
            1,
            "END for {remote} {direction:?}"
        );
        for f in &mine {
            assert_eq!((f.direction, f.scope), (direction, scope), "{f:#?}");
        }
        let end = mine
            .iter()
            .find(|f| f.phase == FlowPhase::End)
            .expect("end");
        let (sent, received) = if direction == Direction::Outbound {
            (100, 50)
        } else {
            (50, 100)
        };
        assert_eq!(end.bytes_sent, Some(sent));
        // The received count is exact, or one high/low once per run when the FIN inference
        // misjudges (a FIN racing the dump's state read, or a server whose orphaned socket
        // dies in FIN_WAIT2 before the peer's FIN): see README, "What it is not".
        let received_got = end.bytes_received.expect("TCP has counters");
        if received_got != received {
            assert_eq!(received_got.abs_diff(received), 1, "{end:#?}");
            fin_misjudged += 1;
        }
    }
    assert!(fin_misjudged <= 1, "{fin_misjudged} FIN misjudgements");
    // Nothing from outside the pod's namespace: no flow between cluster and outside.
    assert!(all
        .iter()
        .all(|f| f.local_addr.to_string() != "10.200.0.2"
            && f.local_addr.to_string() != "203.0.113.2"));
}

/// Holds `held` loopback connections with known bytes (client sends 100 + i, server 200 + i)
/// and prints the listener port and the clients' ports. On the first line of stdin it churns
/// `churn` connections, then closes the held ones, and prints "closed".
const OVERFLOW_WORKLOAD_PY: &str = r#"
import socket, sys
held, churn = int(sys.argv[1]), int(sys.argv[2])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1024)
port = srv.getsockname()[1]
pairs = []
for i in range(held):
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = srv.accept()
    for (tx, rx, n, m) in ((c, a, 100 + i, b"u"), (a, c, 200 + i, b"d")):
        tx.sendall(m * n)
        got = 0
        while got < n:
            got += len(rx.recv(65536))
    pairs.append((c, a))
print(port, *[c.getsockname()[1] for c, _ in pairs], flush=True)
sys.stdin.readline()
for _ in range(churn):
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = srv.accept()
    c.close()
    a.close()
for c, a in pairs:
    c.close()
    a.close()
print("closed", flush=True)
sys.stdin.readline()
"#;

/// The destroy stream overflows for real: the collector (as `nobody`, in a namespace of its
/// own, with a tiny destroy-socket buffer) is stopped while connections churn and then the
/// held ones close, so the kernel drops their destroy events. After it resumes, the loss is
/// counted and every held socket still ends once, as RECOVERED, with its bytes.
#[test]
fn destroy_stream_overflow_is_counted_and_missed_flows_end_recovered() {
    use std::io::{BufRead, BufReader};

    const HELD: usize = 20;
    const CHURN: usize = 400;
    let ns = Netns::new("ovf", &["a"]);
    let mut workload = Command::new("ip")
        .args(["netns", "exec", ns.name(0), "/usr/bin/python3", "-c"])
        .args([OVERFLOW_WORKLOAD_PY, &HELD.to_string(), &CHURN.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn workload");
    let mut lines = BufReader::new(workload.stdout.take().expect("stdout")).lines();
    let mut stdin = workload.stdin.take().expect("stdin");
    let ports: Vec<u16> = lines
        .next()
        .expect("workload ports")
        .expect("read ports")
        .split_whitespace()
        .map(|p| p.parse().expect("port"))
        .collect();
    let (server_port, client_ports) = (ports[0], &ports[1..]);
    assert_eq!(client_ports.len(), HELD);

    let in_namespace_unprivileged: Vec<&str> = ["ip", "netns", "exec", ns.name(0)]
        .into_iter()
        .chain(UNPRIVILEGED)
        .collect();
    let collector = Collector::start(
        &in_namespace_unprivileged,
        &[
            "--poll-interval",
            "100ms",
            "--no-processes",
            "--destroy-rcvbuf",
            "4096",
        ],
    );
    thread::sleep(Duration::from_millis(300));
    collector.signal("STOP");
    writeln!(stdin, "go").expect("signal workload");
    let closed = lines.next().expect("workload closed").expect("read");
    assert_eq!(closed, "closed");
    collector.signal("CONT");
    // The resynchronising dump, then the vanish grace (1 s) and a few polls.
    thread::sleep(Duration::from_millis(2_500));
    let records = collector.stop();
    let _ = writeln!(stdin, "end");
    let _ = workload.wait();

    let heartbeat = records
        .iter()
        .rev()
        .find_map(|r| match r {
            Record::Heartbeat(h) => Some(h),
            _ => None,
        })
        .expect("a final heartbeat");
    let counter = |name: &str| {
        heartbeat
            .counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("heartbeat has no {name}: {:?}", heartbeat.counters))
    };
    assert!(
        counter("destroy_overflows") >= 1,
        "{:?}",
        heartbeat.counters
    );
    assert!(
        counter("destroy_events_lost") >= 1,
        "{:?}",
        heartbeat.counters
    );

    let flows = flows(&records);
    let mut recovered = 0;
    for (i, &client_port) in client_ports.iter().enumerate() {
        let (up, down) = (100 + i as u64, 200 + i as u64);
        // (local port, remote port, bytes sent, bytes received) of both ends.
        for (local, remote, sent, received) in [
            (client_port, server_port, up, down),
            (server_port, client_port, down, up),
        ] {
            let mine: Vec<&&FlowRecord> = flows
                .iter()
                .filter(|f| f.local_port == local && f.remote_port == Some(remote))
                .collect();
            let ends: Vec<_> = mine.iter().filter(|f| f.phase == FlowPhase::End).collect();
            assert_eq!(
                count_phase(
                    &mine.iter().map(|f| **f).collect::<Vec<_>>(),
                    FlowPhase::Start
                ),
                1,
                "{local}->{remote}: {mine:?}"
            );
            assert_eq!(ends.len(), 1, "{local}->{remote}: {mine:?}");
            let end = ends[0];
            assert!(
                matches!(
                    end.end_reason,
                    EndReason::Recovered | EndReason::DestroyEvent
                ),
                "a lost destroy event must end as RECOVERED, not {:?}",
                end.end_reason
            );
            recovered += usize::from(end.end_reason == EndReason::Recovered);
            assert_eq!(
                (end.bytes_sent, end.bytes_received),
                (Some(sent), Some(received)),
                "{local}->{remote}"
            );
        }
    }
    assert!(
        recovered > 0,
        "the held sockets closed into a full buffer: some ENDs must be RECOVERED"
    );
    // Every socket that died (both ends of each churned and held connection; the listener
    // lives on) is accounted for: its event was delivered, or counted as lost by the kernel.
    let delivered = counter("flows_ended_destroy_event") + counter("flows_duplicate_ends");
    assert_eq!(
        delivered + counter("destroy_events_lost"),
        2 * (CHURN + HELD) as u64,
        "{:?}",
        heartbeat.counters
    );
}

/// `--once` writes every socket of a namespace holding 100,000 (50,000 connections spread
/// over six processes: one process may hold at most 20,000 fds here), with or without
/// processes, whatever the queue's size: the queue waits for the output, it never drops.
#[test]
fn once_writes_every_one_of_100k_sockets() {
    let ns = Netns::new("once", &["a"]);
    let per_process = [8_334usize, 8_334, 8_333, 8_333, 8_333, 8_333];
    let holders: Vec<ConnectionHolder> = per_process
        .iter()
        .enumerate()
        .map(|(i, n)| ConnectionHolder::start(Some(ns.name(0)), *n, &format!("127.0.2.{}", i + 1)))
        .collect();
    let expected = per_process.iter().sum::<usize>() * 2;
    let holder_pids: std::collections::HashSet<u32> = holders.iter().map(|h| h.pid()).collect();
    for processes in [false, true] {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns.name(0), crate::util::procflow_bin()])
            .args(["collector", "--once", "--output", "stdout"])
            // A queue far smaller than the snapshot: it must wait, not drop.
            .args(["--queue-capacity", "256"]);
        if !processes {
            command.arg("--no-processes");
        }
        let out = command.output().expect("procflow collector --once");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut flows = 0usize;
        let mut by_fd = 0usize;
        let mut cookies = std::collections::HashSet::new();
        for line in out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let record: Record = serde_json::from_slice(line).expect("a JSON record");
            if let Record::Flow(f) = record {
                assert_eq!(f.phase, FlowPhase::Start);
                assert!(f.preexisting);
                if f.local_addr.to_string().starts_with("127.0.2.")
                    || f.remote_addr
                        .is_some_and(|a| a.to_string().starts_with("127.0.2."))
                {
                    flows += 1;
                    cookies.insert(f.cookie);
                    if f.attribution == procflow::model::Attribution::Fd
                        && f.pid.is_some_and(|p| holder_pids.contains(&p))
                    {
                        by_fd += 1;
                    }
                }
            }
        }
        assert_eq!(flows, expected, "every socket, processes: {processes}");
        assert_eq!(cookies.len(), expected, "each once");
        if processes {
            assert_eq!(by_fd, expected, "each attributed to its holder by fd");
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("dropping"), "{stderr}");
    }
    drop(holders);
}
