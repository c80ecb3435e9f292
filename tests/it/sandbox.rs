//! The closest thing to Fargate this machine offers: a "pod" with its own network, pid and
//! mount namespaces (/proc remounted, root filesystem read-only), an app (HTTP server and a
//! client loop) as uid 1000, the collector beside it with no capabilities, and the aggregator
//! outside the pod in a "cluster" namespace reached over a veth; an "internet" namespace on
//! TEST-NET-3 plays the north-south peer. Run twice: collector with the app's uid (exact fd
//! attribution) and with another uid (degraded, and saying so).

use std::process::{Command, Stdio};
use std::time::Duration;

use procflow::model::{
    Attribution, Direction, Event, FlowPhase, ProcessPhase, Record, Scope, Unavailable,
};

use crate::util::{sh, Netns};

const APP_UID: &str = "1000";

/// Runs the whole sandbox with the collector as `collector_uid`; returns what the aggregator stored.
fn run_pod(tag: &str, collector_uid: &str) -> Vec<Event> {
    let ns = Netns::new(tag, &["pod", "cluster", "inet"]);
    ns.link(0, "10.210.0.2/24", 1, "10.210.0.1/24", &format!("{tag}c"));
    ns.link(0, "203.0.113.1/24", 2, "203.0.113.2/24", &format!("{tag}i"));
    let dir = tempfile::tempdir().expect("tempdir");
    // The cluster's issuer signs the pod's projected token; the aggregator checks it against
    // the issuer's key set; the test reads back as an admin reader.
    let issuer = crate::identity::Issuer::new();
    let token = dir.path().join("token");
    std::fs::write(&token, issuer.token("sandbox", "shop-7c9f8d6b5-x2k4q", 600)).expect("token");
    let admin = "sandbox-admin-token";
    let readers = issuer.readers(&crate::identity::admin_readers(admin));
    let admin_token = dir.path().join("admin-token");
    std::fs::write(&admin_token, admin).expect("admin token");
    // World-readable: the collector runs as another user.
    sh(&["chmod", "755", dir.path().to_str().expect("path")]);
    sh(&["chmod", "644", token.to_str().expect("path")]);
    let bin = crate::util::procflow_bin();
    let data = dir.path().join("data");

    let mut aggregator = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(1),
            bin,
            "aggregator",
            "--listen",
            "10.210.0.1:7410",
            "--sa-token-issuer",
            crate::identity::ISSUER,
            "--readers",
            &readers,
            "--sa-token-jwks",
        ])
        .arg(issuer.jwks())
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("aggregator");
    let mut internet_server = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(2),
            "/usr/bin/python3",
            "-m",
            "http.server",
            "8081",
            "--bind",
            "203.0.113.2",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("internet server");
    std::thread::sleep(Duration::from_millis(800));

    // Inside the pod: pid 1 is a shell that starts the app and the collector.
    let drop_to = |uid: &str| {
        format!("setpriv --reuid={uid} --regid={uid} --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs")
    };
    let script = format!(
        "mount --make-rprivate / && mount -o remount,bind,ro / 2>/dev/null; \
         {app} /usr/bin/python3 -m http.server 8080 --bind 0.0.0.0 >/dev/null 2>&1 & \
         POD_NAME=shop-7c9f8d6b5-x2k4q POD_NAMESPACE=sandbox \
         {collector} {bin} collector --output grpc --aggregator http://10.210.0.1:7410 --token-file {token} \
            --duration 7s --batch-interval 100ms >/dev/null 2>/dev/null & \
         collector=$!; \
         sleep 1.5; \
         {app} /usr/bin/python3 -c \"{client}\" ; \
         wait $collector",
        app = drop_to(APP_UID),
        collector = drop_to(collector_uid),
        token = token.display(),
        client = http_get("203.0.113.2", 8081, 3),
    );
    let mut pod = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(0),
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("pod");
    std::thread::sleep(Duration::from_millis(2500));
    // Peers call the pod's server: one inside the cluster, one from the internet.
    for (peer, host) in [(ns.name(1), "10.210.0.2"), (ns.name(2), "203.0.113.1")] {
        let status = Command::new("ip")
            .args([
                "netns",
                "exec",
                peer,
                "/usr/bin/python3",
                "-c",
                &http_get(host, 8080, 1),
            ])
            .status()
            .expect("peer client");
        assert!(status.success(), "peer request to {host}");
    }
    // The collector stops after --duration; then the pod's init (the shell) exits and the
    // kernel ends the rest of the pid namespace, the app's server with it.
    let status = pod.wait().expect("pod");
    assert!(status.success(), "pod script failed");
    std::thread::sleep(Duration::from_millis(500));

    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(1),
            bin,
            "query",
            "--aggregator",
            "http://10.210.0.1:7410",
            "--json",
            "--since",
            "10m",
            "--limit",
            "100000",
            "--token-file",
        ])
        .arg(&admin_token)
        .output()
        .expect("query");
    let _ = internet_server.kill();
    let _ = internet_server.wait();
    let _ = aggregator.kill();
    let _ = aggregator.wait();
    assert!(
        out.status.success(),
        "query failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("event JSON"))
        .collect()
}

/// A Python HTTP/1.0 client making `count` requests, each holding its connection open 300 ms
/// before the request (the server's accepted socket idles with its fd) and 300 ms after the
/// response (the client's socket idles in CLOSE_WAIT): long enough for any poll interval, as
/// a real keep-alive client would.
fn http_get(host: &str, port: u16, count: u32) -> String {
    format!(
        "import socket,time\n\
         for _ in range({count}):\n    \
             s = socket.create_connection(('{host}', {port}), timeout=5); time.sleep(0.3)\n    \
             s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n    \
             while s.recv(65536): pass\n    \
             time.sleep(0.3); s.close()\n\
         "
    )
}

struct Seen<'a> {
    events: &'a [Event],
}

impl<'a> Seen<'a> {
    fn flows(&self) -> impl Iterator<Item = &'a procflow::model::FlowRecord> {
        self.events.iter().filter_map(|e| match &e.record {
            Record::Flow(f) => Some(f),
            _ => None,
        })
    }

    fn processes(&self) -> impl Iterator<Item = &'a procflow::model::ProcessRecord> {
        self.events.iter().filter_map(|e| match &e.record {
            Record::Process(p) => Some(p),
            _ => None,
        })
    }

    fn flow(
        &self,
        local_port: Option<u16>,
        remote: &str,
        remote_port: Option<u16>,
    ) -> &'a procflow::model::FlowRecord {
        // A request served in a few ms may close between two dumps: its END (from the destroy
        // event) then stands alone, which is what the socket issue promises.
        let mut matching = self.flows().filter(|f| {
            f.remote_addr.map(|a| a.to_string()).as_deref() == Some(remote)
                && local_port.is_none_or(|p| f.local_port == p)
                && remote_port.is_none_or(|p| f.remote_port == Some(p))
        });
        let all: Vec<_> = matching.by_ref().collect();
        all.iter()
            .find(|f| f.phase == FlowPhase::Start)
            .or_else(|| all.first())
            .copied()
            .unwrap_or_else(|| panic!("no flow {local_port:?} -> {remote}:{remote_port:?}"))
    }

    fn python_pids(&self, needle: &str) -> Vec<u32> {
        self.processes()
            .filter(|p| {
                p.argv
                    .iter()
                    .any(|a| String::from_utf8_lossy(a).contains(needle))
            })
            .map(|p| p.pid)
            .collect()
    }
}

fn assert_pod_contents(events: &[Event]) {
    let seen = Seen { events };
    // North-south out, east-west and north-south in, east-west to the aggregator.
    let out_ns = seen.flow(None, "203.0.113.2", Some(8081));
    assert_eq!(
        (out_ns.direction, out_ns.scope),
        (Direction::Outbound, Scope::NorthSouth)
    );
    let in_ew = seen.flow(Some(8080), "10.210.0.1", None);
    assert_eq!(
        (in_ew.direction, in_ew.scope),
        (Direction::Inbound, Scope::EastWest)
    );
    let in_ns = seen.flow(Some(8080), "203.0.113.2", None);
    assert_eq!(
        (in_ns.direction, in_ns.scope),
        (Direction::Inbound, Scope::NorthSouth)
    );
    let to_agg = seen.flow(None, "10.210.0.1", Some(7410));
    assert_eq!(
        (to_agg.direction, to_agg.scope),
        (Direction::Outbound, Scope::EastWest)
    );
    // Every END carries bytes; the HTTP exchanges moved some.
    assert!(seen
        .flows()
        .filter(|f| f.phase == FlowPhase::End && f.remote_port == Some(8081))
        .all(|f| f.bytes_received.unwrap_or(0) > 0));
    // Processes of the pod with lineage up to the pod's init (pid 1 of its namespace).
    let server = seen
        .processes()
        .find(|p| {
            p.phase != ProcessPhase::Exit && p.argv.iter().any(|a| a.as_slice() == b"http.server")
        })
        .expect("the app's server process");
    assert_eq!(
        server.ancestors.last().map(|a| a.pid),
        Some(1),
        "lineage ends at the pod's init: {:?}",
        server.ancestors
    );
    assert_eq!(server.uid, 1000);
    // Nothing from outside the pod: no aggregator or internet-server process, no foreign address.
    assert!(
        seen.processes()
            .all(|p| !p.argv.iter().any(|a| a.as_slice() == b"aggregator")),
        "aggregator is outside the pod"
    );
    assert!(
        seen.processes()
            .all(|p| !p.argv.iter().any(|a| a.as_slice() == b"8081")),
        "the internet server is outside the pod"
    );
    for f in seen.flows() {
        let local = f.local_addr.to_string();
        assert!(
            [
                "10.210.0.2",
                "203.0.113.1",
                "127.0.0.1",
                "0.0.0.0",
                "::",
                "::1"
            ]
            .contains(&local.as_str()),
            "a flow from outside the pod: {f:?}"
        );
    }
}

#[test]
fn pod_sandbox_with_the_apps_uid_attributes_by_fd() {
    let events = run_pod("a", APP_UID);
    assert_pod_contents(&events);
    let seen = Seen { events: &events };
    let out_ns = seen.flow(None, "203.0.113.2", Some(8081));
    assert_eq!(out_ns.attribution, Attribution::Fd, "{out_ns:?}");
    let clients = seen.python_pids("create_connection");
    assert!(
        out_ns.pid.is_some_and(|p| clients.contains(&p)),
        "attributed to the app's client {clients:?}: {out_ns:?}"
    );
    let in_ns = seen.flow(Some(8080), "203.0.113.2", None);
    assert_eq!(in_ns.attribution, Attribution::Fd, "{in_ns:?}");
}

#[test]
fn pod_sandbox_with_another_uid_degrades_and_says_so() {
    let events = run_pod("b", "1001");
    assert_pod_contents(&events);
    let seen = Seen { events: &events };
    let out_ns = seen.flow(None, "203.0.113.2", Some(8081));
    assert_ne!(
        out_ns.attribution,
        Attribution::Fd,
        "fd tables of uid 1000 are closed to uid 1001: {out_ns:?}"
    );
    let in_ns = seen.flow(Some(8080), "203.0.113.2", None);
    assert!(
        matches!(
            in_ns.attribution,
            Attribution::Listener | Attribution::Uid | Attribution::None
        ),
        "{in_ns:?}"
    );
    let server = seen
        .processes()
        .find(|p| p.argv.iter().any(|a| a.as_slice() == b"http.server"))
        .expect("the app's server is still reported");
    assert_eq!(server.exe, None);
    assert_eq!(server.exe_unavailable, Unavailable::PermissionDenied);
}
