//! Investigation end to end: a real collector streams this host into a real aggregator;
//! real shells connect to listeners of this test; `procflow investigate` answers who talked
//! to whom (with exact bytes), what is new against a baseline, and which process tree did it.

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use procflow::investigate::{NewActivity, ProcessTree, Talkers};
use procflow::model::Direction;

use crate::pipeline::Aggregator;
use crate::util::{grpc_collector, procflow_bin};

const HOST: &str = "127.0.83.29";
const POD: &str = "inv-shop-7c9f8d6b5-q8w2z";

/// Accepts connections and reads each to its end (the clients only send).
fn sink() -> u16 {
    let listener = TcpListener::bind((HOST, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = conn.read_to_end(&mut buf);
            });
        }
    });
    port
}

/// `bash` (the tree's root) running a child `bash` that connects, sends `payload` and holds
/// the connection long enough to be seen alive, then closes it.
fn connect_tree(port: u16, payload: &str) -> u32 {
    let inner = format!(
        "exec 3<>/dev/tcp/{HOST}/{port}; printf %s {payload} >&3; sleep 0.6 3>&-; exec 3>&-"
    );
    let mut root = Command::new("bash")
        .args(["-c", &format!("bash -c '{inner}'; sleep 0.2; exit 0")])
        .spawn()
        .expect("bash");
    let pid = root.id();
    assert!(root.wait().expect("wait").success());
    pid
}

fn investigate(agg: &Aggregator, args: &[&str]) -> String {
    let out = Command::new(procflow_bin())
        .arg("investigate")
        .args(args)
        .args(["--aggregator", &agg.url(), "--json"])
        .output()
        .expect("investigate");
    assert!(
        out.status.success(),
        "investigate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn who_talked_to_whom_what_is_new_and_which_tree() {
    let agg = Aggregator::start(&["--no-detection"]);
    let (known_port, novel_port) = (sink(), sink());
    let collector = KillOnDrop(grpc_collector(&agg.url(), POD, "inv", 40));
    std::thread::sleep(Duration::from_millis(1500));

    // Baseline: one connection to the known port.
    connect_tree(known_port, "12345");
    std::thread::sleep(Duration::from_secs(3));
    let window_start = Instant::now();
    // Window: the known port again, and a port never seen before.
    let root = connect_tree(known_port, "abcdefg");
    connect_tree(novel_port, "xyz");
    std::thread::sleep(Duration::from_millis(800));
    let window = format!("{}ms", window_start.elapsed().as_millis() + 300);

    // Who talked to whom: the known edge carries both connections and their exact bytes.
    let talkers: Talkers = serde_json::from_str(&investigate(
        &agg,
        &["talkers", "--pod", POD, "--since", "1h", "--limit", "1000"],
    ))
    .expect("talkers JSON");
    let edge_to = |port: u16| {
        talkers
            .edges
            .iter()
            .find(|e| e.peer_addr.to_string() == HOST && e.port == port)
            .unwrap_or_else(|| panic!("no edge to {HOST}:{port} in {:#?}", talkers.edges))
    };
    let known = edge_to(known_port);
    assert_eq!(known.direction, Direction::Outbound);
    assert_eq!(known.connections, 2);
    assert_eq!(
        known.bytes_sent,
        5 + 7,
        "exact payload bytes over both sockets"
    );
    assert!(
        known
            .exe
            .as_deref()
            .is_some_and(|exe| exe.ends_with(b"/bash")),
        "the edge is named by the executable that held the socket: {known:?}"
    );
    assert_eq!(edge_to(novel_port).bytes_sent, 3);

    // What is new: the novel port is, the known one is not.
    let new: NewActivity = serde_json::from_str(&investigate(
        &agg,
        &[
            "new",
            "--pod",
            POD,
            "--since",
            &window,
            "--baseline",
            "1h",
            "--limit",
            "10000",
        ],
    ))
    .expect("new JSON");
    assert!(new.baseline_flows > 0, "the baseline held flows");
    let new_ports: Vec<u16> = new
        .edges
        .iter()
        .filter(|e| e.peer_addr.to_string() == HOST)
        .map(|e| e.port)
        .collect();
    assert!(new_ports.contains(&novel_port), "{new_ports:?}");
    assert!(!new_ports.contains(&known_port), "{new_ports:?}");

    // Which process tree did this: the root bash, its child bash holding the flow.
    let tree: ProcessTree = serde_json::from_str(&investigate(
        &agg,
        &["tree", "--pod", POD, "--pid", &root.to_string()],
    ))
    .expect("tree JSON");
    assert_eq!(tree.nodes[0].process.pid, root);
    assert_eq!(tree.nodes[0].depth, 0);
    assert!(!tree.ancestors.is_empty(), "the root's ancestry is kept");
    let holder = tree
        .nodes
        .iter()
        .find(|n| n.flows.iter().any(|f| f.remote_port == Some(known_port)))
        .unwrap_or_else(|| panic!("no node holds the flow: {tree:#?}"));
    assert_eq!(holder.depth, 1, "the child shell opened it");
    assert_eq!(holder.process.ppid, root);
    let flow = holder
        .flows
        .iter()
        .find(|f| f.remote_port == Some(known_port))
        .expect("flow");
    assert_eq!(flow.bytes_sent, Some(7));

    // A tree for a pid the store never saw is a clear error.
    let missing = Command::new(procflow_bin())
        .args(["investigate", "tree", "--pod", POD, "--pid", "4000000"])
        .args(["--aggregator", &agg.url()])
        .output()
        .expect("investigate");
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no process 4000000"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    drop(collector);
}

/// Ends the collector also when an assertion fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
