//! Live correlation: a "pod" (its own pid and network namespaces, /proc remounted) runs
//! the collector with POD_NAME/POD_NAMESPACE set; the aggregator runs in a "cluster"
//! namespace with its audit endpoints. Interactive shells enter the pod from outside its
//! pid namespace, as the container runtime does for `kubectl exec` (parent 0, a terminal),
//! while the test posts the matching exec audit events with `procflow audit import`: once
//! before the shell starts (alice) and once after it has been reported (bob). The stored
//! alerts on each shell name its user; an exec event for another pod (mallory's, the same
//! command at the same time) links nothing.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use procflow::audit::event::format_time;
use procflow::model::{now_ns, AlertRecord, Event, Record};

use crate::util::{procflow_bin, sh, Netns};

const AGG: &str = "10.211.0.1";
const ALICE_SHELL: [&str; 4] = ["sh", "-i", "-c", "sleep 5; true"];
const BOB_SHELL: [&str; 4] = ["bash", "-i", "-c", "sleep 5; true"];

/// Children ended by pid on drop.
struct Kids(Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An exec audit event (ResponseStarted, allowed) as one JSON line.
fn exec_line(id: &str, user: &str, ip: &str, pod: &str, command: &[&str], at: u64) -> String {
    let query: Vec<String> = command
        .iter()
        .map(|c| {
            let encoded: String = c
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("command={encoded}")
        })
        .collect();
    serde_json::json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": id, "stage": "ResponseStarted",
        "requestURI": format!("/api/v1/namespaces/shop/pods/{pod}/exec?{}&container=app&stdin=true&stdout=true&tty=true", query.join("&")),
        "verb": "create",
        "user": {"username": user, "groups": ["devs", "system:authenticated"]},
        "sourceIPs": [ip], "userAgent": "kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc",
        "objectRef": {"resource": "pods", "namespace": "shop", "name": pod, "apiVersion": "v1", "subresource": "exec"},
        "responseStatus": {"metadata": {}, "code": 101},
        "requestReceivedTimestamp": format_time(at),
        "stageTimestamp": format_time(at + 40_000_000),
    })
    .to_string()
}

fn import(ns: &Netns, dir: &std::path::Path, name: &str, lines: &[String]) {
    let file = dir.join(name);
    std::fs::write(&file, lines.join("\n") + "\n").expect("events");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(1),
            procflow_bin(),
            "audit",
            "import",
        ])
        .arg(&file)
        .args([
            "--endpoint",
            &format!("http://{AGG}:7411"),
            "--cluster",
            "prod",
            "--token-file",
        ])
        .arg(dir.join("webhook-token"))
        .output()
        .expect("import");
    assert!(
        out.status.success(),
        "import failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An interactive shell entering the pod's pid and network namespaces from outside, on a
/// terminal of its own (`script` gives it one).
fn shell(pod_init: u32, command: &[&str]) -> Child {
    let inner = format!(
        "nsenter -t {pod_init} -p -n -- {}",
        command
            .iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Command::new("script")
        .args(["-qfec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("script")
}

/// The host pid of the pod's init: the child of `unshare --fork`.
fn pod_init(unshare: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "the pod did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alerts(ns: &Netns, dir: &std::path::Path) -> Vec<AlertRecord> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(1), procflow_bin(), "query"])
        .args([
            "--aggregator",
            &format!("http://{AGG}:7410"),
            "--json",
            "--kind",
            "alert",
        ])
        .args(["--since", "10m", "--limit", "100000", "--token-file"])
        .arg(dir.join("admin-token"))
        .output()
        .expect("query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(
            |l| match serde_json::from_str::<Event>(l).expect("event").record {
                Record::Alert(a) => Some(a),
                _ => None,
            },
        )
        .collect()
}

fn shell_alerts_of<'a>(alerts: &'a [AlertRecord], argv0: &str) -> Vec<&'a AlertRecord> {
    alerts
        .iter()
        .filter(|a| {
            matches!(
                a.rule_id.as_str(),
                "PF-SHELL-TTY" | "PF-EXEC-INTO-CONTAINER"
            )
        })
        .filter(|a| {
            a.process
                .as_ref()
                .is_some_and(|p| p.argv.first().map(Vec::as_slice) == Some(argv0.as_bytes()))
        })
        .collect()
}

/// Polls the stored alerts until `done` holds (or 30 s).
fn wait_for(
    ns: &Netns,
    dir: &std::path::Path,
    done: impl Fn(&[AlertRecord]) -> bool,
) -> Vec<AlertRecord> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = alerts(ns, dir);
        if done(&found) || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn kubectl_exec_is_joined_with_the_shell_in_both_arrival_orders() {
    let ns = Netns::new("aj", &["pod", "cluster"]);
    ns.link(0, "10.211.0.2/24", 1, &format!("{AGG}/24"), "ajc");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // The pod writes with its projected service-account token (the aggregator derives
    // shop/web-1 from it); the test reads back as an admin reader.
    let issuer = crate::identity::Issuer::new();
    std::fs::write(d.join("token"), issuer.token("shop", "web-1", 600)).expect("token");
    let readers = issuer.readers(&crate::identity::admin_readers("join-admin-token"));
    std::fs::write(d.join("admin-token"), "join-admin-token").expect("admin token");
    std::fs::write(d.join("webhook-token"), "prod-webhook-token-0123456789\n").expect("token");
    std::fs::write(
        d.join("clusters.toml"),
        format!(
            "[clusters.prod]\nwebhook_token_file = {:?}\n",
            d.join("webhook-token")
        ),
    )
    .expect("clusters");
    // The collector runs as another user: the directory and token must be readable.
    sh(&["chmod", "755", d.to_str().expect("path")]);
    sh(&["chmod", "644", d.join("token").to_str().expect("path")]);
    let bin = procflow_bin();
    let mut kids = Kids(Vec::new());
    kids.0.push(
        Command::new("ip")
            .args(["netns", "exec", ns.name(1), bin, "aggregator"])
            .args([
                "--listen",
                &format!("{AGG}:7410"),
                "--audit-listen",
                &format!("{AGG}:7411"),
            ])
            .args([
                "--sa-token-issuer",
                crate::identity::ISSUER,
                "--readers",
                &readers,
            ])
            .arg("--sa-token-jwks")
            .arg(issuer.jwks())
            .arg("--audit-clusters")
            .arg(d.join("clusters.toml"))
            .arg("--data-dir")
            .arg(d.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aggregator"),
    );
    std::thread::sleep(Duration::from_millis(800));
    let collector = format!(
        "setpriv --reuid=1000 --regid=1000 --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs \
         {bin} collector --output grpc --aggregator http://{AGG}:7410 --token-file {} --batch-interval 50ms",
        d.join("token").display()
    );
    let pod = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(0),
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
        ])
        .args([
            "sh",
            "-c",
            &format!("{collector} >/dev/null 2>&1 & sleep 120"),
        ])
        .env("POD_NAME", "web-1")
        .env("POD_NAMESPACE", "shop")
        .env("POD_IP", "10.211.0.2")
        .stdout(Stdio::null())
        .spawn()
        .expect("pod");
    let init = pod_init(pod.id());
    kids.0.push(pod);
    std::thread::sleep(Duration::from_millis(2500));

    // Audit first: alice's exec (and mallory's into another pod, the same command at the
    // same time) arrive, then the shell starts.
    let t_alice = now_ns();
    import(
        &ns,
        d,
        "alice.jsonl",
        &[
            exec_line(
                "aaaa-0001",
                "alice@corp",
                "198.51.100.7",
                "web-1",
                &ALICE_SHELL,
                t_alice,
            ),
            exec_line(
                "mmmm-0001",
                "mallory@corp",
                "203.0.113.66",
                "web-2",
                &ALICE_SHELL,
                t_alice,
            ),
        ],
    );
    let mut alice = shell(init, &ALICE_SHELL);
    // Runtime first: bob's shell starts and is reported before his exec event arrives.
    std::thread::sleep(Duration::from_millis(1500));
    let t_bob = now_ns();
    let mut bob = shell(init, &BOB_SHELL);
    let seen_bob = wait_for(&ns, d, |a| !shell_alerts_of(a, "bash").is_empty());
    assert!(
        shell_alerts_of(&seen_bob, "bash")
            .iter()
            .all(|a| a.exec.is_none()),
        "bob's shell was alerted on before anyone could know who started it"
    );
    import(
        &ns,
        d,
        "bob.jsonl",
        &[exec_line(
            "bbbb-0001",
            "bob@corp",
            "198.51.100.8",
            "web-1",
            &BOB_SHELL,
            t_bob,
        )],
    );
    let all = wait_for(&ns, d, |a| {
        let named = |argv0: &str, user: &str| {
            shell_alerts_of(a, argv0)
                .iter()
                .any(|x| x.exec.as_ref().is_some_and(|e| e.user == user))
        };
        named("sh", "alice@corp") && named("bash", "bob@corp")
    });
    let _ = alice.stdin.take().map(|mut s| s.write_all(b"exit\n"));
    let _ = bob.stdin.take().map(|mut s| s.write_all(b"exit\n"));
    let _ = alice.wait();
    let _ = bob.wait();

    for (argv0, user, ip) in [
        ("sh", "alice@corp", "198.51.100.7"),
        ("bash", "bob@corp", "198.51.100.8"),
    ] {
        let named: Vec<&AlertRecord> = shell_alerts_of(&all, argv0)
            .into_iter()
            .filter(|a| a.exec.as_ref().is_some_and(|e| e.user == user))
            .collect();
        assert!(
            !named.is_empty(),
            "an alert on {user}'s shell names {user}: {:#?}",
            shell_alerts_of(&all, argv0)
        );
        assert!(
            named[0].evidence.iter().any(|e| e.starts_with(&format!(
                "started by kubectl exec by {user} from {ip} (kubectl/v1.31.0"
            ))),
            "{:?}",
            named[0].evidence
        );
        let joined = all
            .iter()
            .filter(|a| a.rule_id == "PF-KA-EXEC-JOINED")
            .filter(|a| a.exec.as_ref().is_some_and(|e| e.user == user))
            .count();
        assert_eq!(joined, 1, "one join recorded for {user}");
    }
    // Bob's shell alert, raised before his request arrived, was sent again with his name.
    assert!(shell_alerts_of(&all, "bash").iter().any(|a| a
        .evidence
        .iter()
        .any(|e| e.contains("joined after this alert was first raised"))));
    // Mallory's exec was for another pod: it links nothing and names no alert.
    assert!(
        all.iter()
            .all(|a| a.exec.as_ref().is_none_or(|e| e.user != "mallory@corp")),
        "{:#?}",
        all.iter().filter(|a| a.exec.is_some()).collect::<Vec<_>>()
    );
    // The audit side fired too (PF-KA-EXEC for each exec, mallory's included).
    let exec_rule = all.iter().filter(|a| a.rule_id == "PF-KA-EXEC").count();
    assert!(exec_rule >= 3, "{exec_rule}");
}
