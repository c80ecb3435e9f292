//! Two aggregator replicas on one real PostgreSQL and two real collectors, each watching a
//! pod network namespace of its own where a workload opens and closes loopback
//! connections; the collectors reach the replicas through a TCP front that stands for the
//! Service (collector 0 lands on replica A, collector 1 on B; a connection goes to the
//! other replica when its first choice refuses). Replica A is SIGKILLed while the
//! workloads run: its collector reconnects through the front to B and resends what A had
//! not acknowledged. Every connection's two ENDs (client and server socket) are then in
//! the database exactly once, against the ports the workload itself reports.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use procflow::model::{FlowPhase, Record};
use tokio::net::{TcpListener, TcpStream};

use crate::pg;
use crate::pipeline::{free_ports, Aggregator};
use crate::util::{sh, Collector, Netns};

const CONNECTIONS: usize = 150;

/// Opens and closes CONNECTIONS loopback connections 40 ms apart, printing each client
/// port once its connection is closed.
const WORKLOAD: &str = r#"
import socket, sys, time
n = int(sys.argv[1])
lst = socket.socket()
lst.bind(("127.0.0.1", 0))
lst.listen(128)
for _ in range(n):
    c = socket.create_connection(lst.getsockname())
    s, _ = lst.accept()
    c.sendall(b"x" * 100)
    s.recv(100)
    port = c.getsockname()[1]
    c.close()
    s.close()
    print(port, flush=True)
    time.sleep(0.04)
print("done", flush=True)
"#;

/// The Service: each connection to the front goes to the first replica that accepts it,
/// trying them from `first` on.
async fn front(listener: TcpListener, first: usize, backends: Arc<Vec<u16>>) {
    while let Ok((mut client, _)) = listener.accept().await {
        let backends = backends.clone();
        tokio::spawn(async move {
            for k in 0..backends.len() {
                let port = backends[(first + k) % backends.len()];
                if let Ok(mut server) = TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
            }
        });
    }
}

/// A veth from this (the host's) namespace into the pod's: the host end's address.
fn uplink(ns: &Netns, i: usize) -> String {
    let subnet = 10 + (std::process::id() % 200) as u8;
    let (host, pod) = (
        format!("10.214.{subnet}.{}", 4 * i + 1),
        format!("10.214.{subnet}.{}", 4 * i + 2),
    );
    let (vh, vp) = (
        format!("vfh{i}{}", std::process::id() % 100_000),
        format!("vfp{i}{}", std::process::id() % 100_000),
    );
    // The host end goes with the pod's namespace when it is deleted.
    sh(&[
        "ip",
        "link",
        "add",
        &vh,
        "type",
        "veth",
        "peer",
        "name",
        &vp,
        "netns",
        ns.name(i),
    ]);
    sh(&["ip", "addr", "add", &format!("{host}/30"), "dev", &vh]);
    sh(&["ip", "link", "set", &vh, "up"]);
    sh(&[
        "ip",
        "-n",
        ns.name(i),
        "addr",
        "add",
        &format!("{pod}/30"),
        "dev",
        &vp,
    ]);
    sh(&["ip", "-n", ns.name(i), "link", "set", &vp, "up"]);
    host
}

#[test]
fn a_replica_killed_mid_stream_its_collector_moves_to_the_other_and_every_end_is_stored_once() {
    let password = tempfile::NamedTempFile::new().expect("password file");
    std::fs::write(password.path(), &pg::shared().password).expect("write");
    let url = pg::fresh_database();
    let args = [
        "--store",
        url.as_str(),
        "--store-password-file",
        password.path().to_str().expect("utf-8 path"),
        "--no-detection",
    ];
    let [port_a, port_b] = free_ports::<2>();
    let mut a = Aggregator::start_on(port_a, &args);
    let b = Aggregator::start_on(port_b, &args);
    let ns = Netns::new("fo", &["p0", "p1"]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let backends = Arc::new(vec![port_a, port_b]);
    let mut collectors = Vec::new();
    for i in 0..2 {
        let host = uplink(&ns, i);
        let listener = runtime
            .block_on(TcpListener::bind((host.as_str(), 0)))
            .expect("front");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        runtime.spawn(front(listener, i, backends.clone()));
        let pod = format!("POD_NAME=failover-{i}");
        collectors.push(Collector::start(
            &[
                "ip",
                "netns",
                "exec",
                ns.name(i),
                "env",
                &pod,
                "POD_NAMESPACE=failover",
            ],
            &[
                "--output",
                "grpc",
                "--aggregator",
                &endpoint,
                "--batch-interval",
                "50ms",
            ],
        ));
    }
    let workloads: Vec<_> = (0..2)
        .map(|i| {
            Command::new("ip")
                .args(["netns", "exec", ns.name(i), "python3", "-c", WORKLOAD])
                .arg(CONNECTIONS.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("workload")
        })
        .collect();
    // Kill A a third of the way in (while both workloads run).
    std::thread::sleep(Duration::from_millis(CONNECTIONS as u64 * 40 / 3));
    a.kill();
    let mut truth: Vec<Vec<u16>> = Vec::new();
    for mut w in workloads {
        let out = w.stdout.take().expect("stdout");
        let lines: Vec<String> = BufReader::new(out).lines().map_while(Result::ok).collect();
        assert!(w.wait().expect("workload").success());
        assert_eq!(lines.last().map(String::as_str), Some("done"));
        truth.push(lines.iter().filter_map(|l| l.parse().ok()).collect());
    }
    // The active closer's END comes when its socket reaches TIME_WAIT; let both arrive,
    // then stop the collectors (they drain what is not acknowledged).
    std::thread::sleep(Duration::from_secs(2));
    for c in collectors {
        c.stop();
    }
    let stored = b.query("flow");
    for (i, ports) in truth.iter().enumerate() {
        assert_eq!(ports.len(), CONNECTIONS);
        let pod = format!("failover-{i}");
        // Loopback ENDs of this pod, per (cookie): each stored once.
        let mut ends: HashMap<u64, Vec<(u16, Option<u16>)>> = HashMap::new();
        for e in stored.iter().filter(|e| e.source.pod_name == pod) {
            if let Record::Flow(f) = &e.record {
                if f.phase == FlowPhase::End && f.local_addr.is_loopback() {
                    ends.entry(f.cookie)
                        .or_default()
                        .push((f.local_port, f.remote_port));
                }
            }
        }
        let twice: Vec<_> = ends.iter().filter(|(_, v)| v.len() > 1).collect();
        assert!(twice.is_empty(), "{pod}: ENDs stored twice: {twice:?}");
        let ends: Vec<(u16, Option<u16>)> = ends.into_values().flatten().collect();
        let missing: Vec<u16> = ports
            .iter()
            .copied()
            .filter(|p| {
                let client = ends.iter().filter(|(l, _)| l == p).count();
                let server = ends.iter().filter(|(_, r)| *r == Some(*p)).count();
                client != 1 || server != 1
            })
            .collect();
        assert!(
            missing.is_empty(),
            "{pod}: {} of {CONNECTIONS} connections without exactly one client and one server END: {missing:?}",
            missing.len()
        );
    }
}
