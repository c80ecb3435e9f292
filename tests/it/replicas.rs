//! Several aggregator replicas on one real PostgreSQL, linked as peers: a subscriber on
//! replica A sees what B stored, each event once and only in its namespaces; Query and
//! Investigate answer from either replica; the peer link takes the peers' own credential and
//! nothing else; one alert group across replicas with the summed count; a value learned on A
//! is not new on B; a collector whose stream moved from A to B is not called silenced.

use std::path::Path;
use std::time::{Duration, Instant};

use procflow::proto::v1 as pb;

use crate::identity::{
    alert_of, batch, heartbeat, identity, ingest, namespace_of, process, query, query_until,
    sha256_hex, MARKER_RULE,
};
use crate::pg;
use crate::pipeline::{free_ports, Aggregator};
use crate::readers::{flow, subscribe};

const WRITER: &str = "writer-token-for-replica-tests";
const ADMIN: &str = "admin-token-for-replica-tests";
const VIEWER: &str = "viewer-of-a-token-for-replica-tests";
const PEER: &str = "peer-token-for-replica-tests";

/// Files every replica of a test shares: the database password, the readers, the peer token.
pub struct Shared {
    pub dir: tempfile::TempDir,
    pub url: String,
}

impl Shared {
    pub fn new() -> Shared {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).expect("write");
        };
        write("password", &pg::shared().password);
        write("peer-token", PEER);
        write("writer-token", WRITER);
        write(
            "readers.yaml",
            &format!(
                "readers:\n  - name: root\n    token_sha256: {}\n    role: admin\n  - name: alice\n    token_sha256: {}\n    role: viewer\n    namespaces: [ns-a]\n",
                sha256_hex(ADMIN),
                sha256_hex(VIEWER)
            ),
        );
        Shared {
            url: pg::fresh_database(),
            dir,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("utf-8")
            .to_owned()
    }

    /// Replicas on `ports`, each told every port as its peers (itself included, as a
    /// headless Service's DNS answer would), with `extra` flags.
    pub fn replicas<const N: usize>(&self, ports: [u16; N], extra: &[&str]) -> [Aggregator; N] {
        let peers = ports.map(|p| format!("127.0.0.1:{p}")).join(",");
        let (password, readers, token, peer) = (
            self.path("password"),
            self.path("readers.yaml"),
            self.path("writer-token"),
            self.path("peer-token"),
        );
        ports.map(|port| {
            let mut args = vec![
                "--store",
                &self.url,
                "--store-password-file",
                &password,
                "--readers",
                &readers,
                "--token-file",
                &token,
                "--peers",
                &peers,
                "--peer-token-file",
                &peer,
                "--peer-refresh",
                "1s",
            ];
            args.extend_from_slice(extra);
            Aggregator::start_on(port, &args)
        })
    }
}

fn heartbeats(collector: &str, namespace: &str, first: u64, n: u64) -> pb::Batch {
    let id = identity(collector, namespace, &format!("pod-{collector}"));
    batch(&id, 1, (first..first + n).map(heartbeat).collect())
}

fn heartbeat_time(e: &pb::Event) -> Option<u64> {
    match e.record.as_ref()?.kind.as_ref()? {
        pb::record::Kind::Heartbeat(h) => Some(h.time),
        _ => None,
    }
}

/// Heartbeat times `rx` receives until `want` of them arrived (then a second more, for any
/// duplicate) or `within` passed; sorted.
fn live_heartbeats(
    rx: &std::sync::mpsc::Receiver<pb::Event>,
    want: usize,
    within: Duration,
) -> (Vec<u64>, Vec<pb::Event>) {
    let deadline = Instant::now() + within;
    let mut events = Vec::new();
    let mut times = Vec::new();
    let mut until = deadline;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let Ok(e) = rx.recv_timeout(left) else { break };
        if let Some(t) = heartbeat_time(&e) {
            times.push(t);
        }
        events.push(e);
        if times.len() >= want && until == deadline {
            until = Instant::now() + Duration::from_secs(1);
        }
    }
    times.sort_unstable();
    (times, events)
}

#[test]
fn a_subscriber_on_one_replica_sees_every_replicas_events_once_in_its_namespaces() {
    let shared = Shared::new();
    let [a, b] = shared.replicas(free_ports::<2>(), &["--no-detection"]);
    let admin = subscribe(&a.url(), ADMIN);
    let viewer = subscribe(&a.url(), VIEWER);
    // B stores 300 heartbeats of ns-a and 200 of ns-b; A 100 of ns-a.
    for (url, batch) in [
        (b.url(), heartbeats("b-in-a", "ns-a", 1_000, 300)),
        (b.url(), heartbeats("b-in-b", "ns-b", 2_000, 200)),
        (a.url(), heartbeats("a-in-a", "ns-a", 3_000, 100)),
    ] {
        let acks = ingest(&url, Some(WRITER), vec![batch]).expect("ingest");
        assert!(!acks[0].rejected, "{acks:?}");
    }
    let all: Vec<u64> = (1_000..1_300)
        .chain(2_000..2_200)
        .chain(3_000..3_100)
        .collect();
    let (seen, _) = live_heartbeats(&admin, all.len(), Duration::from_secs(30));
    assert_eq!(
        seen, all,
        "the admin on A: every replica's events, each once"
    );
    let in_a: Vec<u64> = (1_000..1_300).chain(3_000..3_100).collect();
    let (seen, events) = live_heartbeats(&viewer, in_a.len(), Duration::from_secs(30));
    assert_eq!(
        seen, in_a,
        "the viewer of ns-a on A: B's ns-a events and A's, each once"
    );
    assert!(events.iter().all(|e| namespace_of(e) == "ns-a"));

    // Query and Investigate answer from either replica: the store is the one database.
    let flows = pb::Batch {
        seq: 2,
        ..heartbeats("b-in-a", "ns-a", 0, 0)
    };
    let flows = pb::Batch {
        records: vec![flow(7, "10.0.0.7", "10.9.9.9", 77)],
        ..flows
    };
    ingest(&b.url(), Some(WRITER), vec![flows]).expect("ingest flows into B");
    for replica in [&a, &b] {
        let stored = query(
            &replica.url(),
            Some(ADMIN),
            &[pb::RecordKind::Heartbeat],
            &[],
        )
        .expect("query");
        let mut times: Vec<u64> = stored.iter().filter_map(heartbeat_time).collect();
        times.sort_unstable();
        assert_eq!(
            times,
            all,
            "{}: Query answers from the shared store",
            replica.url()
        );
        let edges = talkers(&replica.url(), ADMIN);
        assert!(
            edges.iter().any(|e| e.peer_addr == "10.9.9.9"),
            "{}: Investigate answers from the shared store: {edges:?}",
            replica.url()
        );
    }
}

fn talkers(url: &str, token: &str) -> Vec<pb::Edge> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = pb::investigate_client::InvestigateClient::connect(url.to_owned())
            .await
            .expect("connect");
        let mut request = tonic::Request::new(pb::TalkersRequest {
            window: Some(pb::Window {
                filter: None,
                since: procflow::model::now_ns() - 3_600_000_000_000,
                until: procflow::model::now_ns() + 60_000_000_000,
            }),
            order: 0,
            limit: 0,
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        client
            .talkers(request)
            .await
            .expect("talkers")
            .into_inner()
            .edges
    })
}

/// `Peer.Local` on `url` presenting `token`: its status code.
fn peer_local(url: &str, token: Option<&str>) -> tonic::Code {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = pb::peer_client::PeerClient::connect(url.to_owned())
            .await
            .expect("connect");
        let mut request = tonic::Request::new(pb::SubscribeRequest::default());
        if let Some(token) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
        }
        match client.local(request).await {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        }
    })
}

#[test]
fn a_peer_link_takes_the_peer_credential_and_nothing_else() {
    let shared = Shared::new();
    let [a] = shared.replicas(free_ports::<1>(), &["--no-detection"]);
    // Whatever a workload or a reader holds does not open the link that carries every
    // namespace's events.
    for token in [
        None,
        Some(WRITER),
        Some(ADMIN),
        Some(VIEWER),
        Some("peer-token"),
    ] {
        assert_eq!(
            peer_local(&a.url(), token),
            tonic::Code::Unauthenticated,
            "Peer.Local with {token:?}"
        );
    }
    assert_eq!(peer_local(&a.url(), Some(PEER)), tonic::Code::Ok);
    // And the peer credential reads nothing through the readers' services.
    let read = query(&a.url(), Some(PEER), &[pb::RecordKind::Heartbeat], &[]);
    assert_eq!(
        read.expect_err("the peer token is no reader").code(),
        tonic::Code::Unauthenticated
    );
    // Without --peer-token-file the peer service is not served at all.
    let password = shared.path("password");
    let token = shared.path("writer-token");
    let alone = Aggregator::start(&[
        "--store",
        &shared.url,
        "--store-password-file",
        &password,
        "--token-file",
        &token,
        "--no-detection",
    ]);
    assert_eq!(
        peer_local(&alone.url(), Some(PEER)),
        tonic::Code::Unimplemented
    );
    assert!(Path::new(&shared.path("peer-token")).exists());
}

/// A new-value rule whose first value is already new (no learning period), one group per
/// value.
const NEW_COMM: &str = "- id: TEST-NEW-COMM\n  name: New command\n  severity: high\n  kinds: [process]\n  condition: proc.comm startswith \"pf-nv\"\n  new_value:\n    value: proc.comm\n    learning: 0s\n  output: 'new {proc.comm}'\n  group_by: [proc.comm]\n";

/// The stored alerts of `rule` (from either replica: one database), as (output, count).
fn alerts(url: &str, rule: &str, done: impl Fn(usize) -> bool) -> Vec<(String, u64)> {
    let events = query_until(
        url,
        Some(ADMIN),
        &[pb::RecordKind::Alert],
        Duration::from_secs(30),
        |events| {
            done(
                events
                    .iter()
                    .filter_map(alert_of)
                    .filter(|a| a.rule_id == rule)
                    .count(),
            )
        },
    );
    let mut out: Vec<(String, u64)> = events
        .iter()
        .filter_map(alert_of)
        .filter(|a| a.rule_id == rule)
        .map(|a| (a.output.clone(), a.count))
        .collect();
    out.sort();
    out
}

#[test]
fn alert_groups_and_learned_values_are_shared_across_replicas() {
    let shared = Shared::new();
    let rules = shared.dir.path().join("rules");
    std::fs::create_dir(&rules).expect("rules dir");
    let marker = MARKER_RULE.trim_start_matches("rules:\n");
    std::fs::write(
        rules.join("test.yaml"),
        format!("rules:\n{marker}{NEW_COMM}"),
    )
    .expect("rules");
    let rules = rules.to_str().expect("utf-8").to_owned();
    let [a, b] = shared.replicas(
        free_ports::<2>(),
        &[
            "--rules",
            &rules,
            "--no-managed-rules",
            "--alert-reemit",
            "4s",
        ],
    );
    let id = identity("uid-web-0/c", "ns-a", "web-0");
    let mut seq = 0;
    // One process (pid and start time) reported again and again: one incident.
    let started_at = procflow::model::now_ns();
    let mut send = |url: &str, comms: &[&str]| {
        seq += 1;
        let records = comms
            .iter()
            .map(|c| {
                let mut record = process(4242, c);
                if let Some(pb::record::Kind::Process(p)) = &mut record.kind {
                    p.start_time = started_at;
                }
                record
            })
            .collect();
        let acks = ingest(url, Some(WRITER), vec![batch(&id, seq, records)]).expect("ingest");
        assert!(!acks[0].rejected, "{acks:?}");
    };
    let (a, b) = (a.url(), b.url());

    // One group: A emits its first hit; B's two hits and A's next two fall within the
    // re-emit interval of A's emission (B's first is held, not emitted); once it has passed,
    // B's next hit emits the count of all six.
    let started = Instant::now();
    send(&a, &["pf-marker-x"]);
    assert_eq!(alerts(&b, "TEST-MARKER", |n| n >= 1).len(), 1);
    send(&b, &["pf-marker-x", "pf-marker-x"]);
    send(&a, &["pf-marker-x", "pf-marker-x"]);
    // The held hits are written within a second; the interval is 4 s.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(started.elapsed()));
    send(&b, &["pf-marker-x"]);
    let marker = alerts(&a, "TEST-MARKER", |n| n >= 2);
    let counts: Vec<u64> = marker.iter().map(|(_, count)| *count).collect();
    assert_eq!(
        counts,
        [1, 6],
        "one group, emitted once per interval with every replica's hits: {marker:?}"
    );

    // Learned values: x is new on A, then known on B; y is new on B, then known on A. z on
    // A last: once its alert is stored, A has judged y.
    send(&a, &["pf-nv-x"]);
    alerts(&a, "TEST-NEW-COMM", |n| n >= 1);
    send(&b, &["pf-nv-x", "pf-nv-y"]);
    alerts(&a, "TEST-NEW-COMM", |n| n >= 2);
    send(&a, &["pf-nv-y", "pf-nv-z"]);
    let learned = alerts(&b, "TEST-NEW-COMM", |n| n >= 3);
    std::thread::sleep(Duration::from_secs(1));
    let learned_now = alerts(&b, "TEST-NEW-COMM", |n| n >= 3);
    assert_eq!(learned, learned_now);
    let outputs: Vec<&str> = learned.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(
        outputs,
        ["new pf-nv-x", "new pf-nv-y", "new pf-nv-z"],
        "each value new once across replicas"
    );
}

/// A heartbeat promising one every second (`stopping`: the collector's goodbye).
fn promise(time: u64, stopping: bool) -> pb::Record {
    pb::Record {
        kind: Some(pb::record::Kind::Heartbeat(pb::Heartbeat {
            time,
            interval_ns: 1_000_000_000,
            stopping,
            ..pb::Heartbeat::default()
        })),
    }
}

#[test]
fn a_collector_whose_stream_moved_to_another_replica_is_not_called_silenced() {
    let shared = Shared::new();
    let [replica_a, replica_b] = shared.replicas(free_ports::<2>(), &["--no-managed-rules"]);
    let (a, b) = (replica_a.url(), replica_b.url());
    let moved = identity("uid-moved/c", "ns-a", "moved");
    let gone = identity("uid-gone/c", "ns-a", "gone");
    // Both streams to A end without the collector's goodbye (as when A's connection is cut).
    for id in [&moved, &gone] {
        ingest(
            &a,
            Some(WRITER),
            vec![batch(id, 1, vec![promise(1, false)])],
        )
        .expect("into A");
    }
    // One comes back at once through the Service, on B (and later leaves with its goodbye).
    let back = vec![
        batch(&moved, 2, vec![promise(2, false)]),
        batch(&moved, 3, vec![promise(3, true)]),
    ];
    ingest(&b, Some(WRITER), back).expect("into B");
    // A's watch waits one interval (1 s) for either; the one that never came back is
    // silenced, the one on B is not.
    let silenced = |events: &[pb::Event]| -> Vec<String> {
        events
            .iter()
            .filter_map(alert_of)
            .filter(|a| a.rule_id == "PF-COLLECTOR-SILENCED")
            .map(|a| a.pod_name.clone())
            .collect()
    };
    query_until(
        &a,
        Some(ADMIN),
        &[pb::RecordKind::Alert],
        Duration::from_secs(20),
        |e| !silenced(e).is_empty(),
    );
    std::thread::sleep(Duration::from_secs(2));
    let events = query(&a, Some(ADMIN), &[pb::RecordKind::Alert], &[]).expect("query");
    assert_eq!(
        silenced(&events),
        ["gone"],
        "A's log: {}\nB's log: {}",
        replica_a.log(),
        replica_b.log()
    );
}
