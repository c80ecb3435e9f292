//! Rollups on both backends: answers from rollups (hours, and days folded from them) equal
//! the answers from raw records over the same hours, also with the hours not rolled up yet
//! read raw; retention drops the raw records (PostgreSQL: their partitions) and the rollups
//! stay, and go at their own retention; replicas rolling up the same hours store each once;
//! partitions dropped at retention while ingest runs lose nothing.

use std::sync::Arc;

use procflow::aggregator::investigate::{Investigator, Question};
use procflow::aggregator::rollups::RollupBuilder;
use procflow::aggregator::store::{EventQuery, Grain, Retention, Store};
use procflow::investigate::{Comparison, EdgeOrder, Talkers};
use procflow::model::{now_ns, CollectorIdentity, Event, Record};

use crate::store::{append, open, retention, Backend};

const HOUR: u64 = 3_600_000_000_000;
const DAY: u64 = 24 * HOUR;

pub(crate) fn pod(collector: &str, name: &str, ip: &str) -> Arc<CollectorIdentity> {
    Arc::new(CollectorIdentity {
        collector_id: collector.into(),
        pod_name: name.into(),
        pod_namespace: "shop".into(),
        pod_ip: ip.into(),
        ..CollectorIdentity::default()
    })
}

pub(crate) struct Flow<'a> {
    pub(crate) cookie: u64,
    pub(crate) peer: &'a str,
    pub(crate) port: u16,
    pub(crate) inbound: bool,
    pub(crate) phase: &'a str,
    pub(crate) sent: u64,
    pub(crate) born: u64,
}

/// Every seventh socket from hour 6 on is the second executable's.
fn second(cookie: u64) -> bool {
    cookie % 7 == 0 && cookie > 60
}

pub(crate) fn flow(f: Flow, at: u64) -> Record {
    let scope = if f.peer.starts_with("10.") {
        "EAST_WEST"
    } else {
        "NORTH_SOUTH"
    };
    let (local_port, remote_port, direction) = if f.inbound {
        (f.port, 40_000 + (f.cookie % 1000) as u16, "INBOUND")
    } else {
        (40_000 + (f.cookie % 1000) as u16, f.port, "OUTBOUND")
    };
    let ended = (f.phase == "END").then_some(at - 5);
    Record::Flow(
        serde_json::from_value(serde_json::json!({
            "kind": "flow", "cookie": f.cookie.to_string(), "protocol": "TCP", "family": "IPV4",
            "local_addr": "10.0.0.5", "local_port": local_port, "remote_addr": f.peer,
            "remote_port": remote_port, "direction": direction, "scope": scope,
            "phase": f.phase, "state": "ESTABLISHED", "preexisting": false,
            "bytes_sent": f.sent, "bytes_received": f.sent / 3, "segs_out": null,
            "segs_in": null, "retransmits": null, "total_retrans": null, "rtt_us": null,
            "first_seen": f.born, "last_seen": at - 5, "ended_at": ended, "uid": 1000,
            "inode": 9, "pid": if second(f.cookie) { 8 } else { 7 },
            "process_start_time": if second(f.cookie) { 80 } else { 70 },
            "attribution": "FD", "end_reason": "UNSPECIFIED", "reset": false, "cgroup_id": null
        }))
        .unwrap_or_else(|e| panic!("flow fixture: {e}")),
    )
}

pub(crate) fn process(pid: u32, start: u64, exe: &str) -> Record {
    Record::Process(
        serde_json::from_value(serde_json::json!({
            "kind": "process", "pid": pid, "start_time": start, "ppid": 1,
            "parent_start_time": null, "phase": "START",
            "comm": exe.rsplit('/').next().unwrap_or(exe), "exe": exe, "argv": [exe],
            "cwd": null, "uid": 1000, "gid": 1000, "euid": 1000, "egid": 1000, "tty": null,
            "session_id": 1, "pgid": 1, "container_id": null, "pod_uid": null,
            "exit_time": null, "ancestors": [], "exe_unavailable": "UNSPECIFIED",
            "cwd_unavailable": "UNSPECIFIED", "exe_deleted": false,
            "seen_at_exit_only": false, "preexisting": false, "stdio_is_socket": null,
            "stdio_socket_inodes": []
        }))
        .unwrap_or_else(|e| panic!("process fixture: {e}")),
    )
}

pub(crate) fn listener(cookie: u64, port: u16, at: u64) -> Record {
    Record::Listener(
        serde_json::from_value(serde_json::json!({
            "cookie": cookie.to_string(), "protocol": "TCP", "family": "IPV4",
            "local_addr": "0.0.0.0", "local_port": port, "phase": "START",
            "preexisting": false, "first_seen": at - 5, "ended_at": null, "uid": 1000,
            "inode": 11, "pid": 8, "process_start_time": 80, "attribution": "FD",
            "backlog": 128
        }))
        .unwrap_or_else(|e| panic!("listener fixture: {e}")),
    )
}

pub(crate) fn heartbeat(at: u64) -> Record {
    Record::Heartbeat(procflow::model::Heartbeat {
        time: at,
        counters: Vec::new(),
        flows_tracked: 0,
        processes_tracked: 0,
        rss_bytes: 0,
        cpu_time_ns: 0,
        features: Vec::new(),
        interval_ns: 10_000_000_000,
        stopping: false,
    })
}

/// Ten hours from `base` of a web pod talking to the internet and to its database: short
/// connections every hour, one connection living hours 0..=5 (no record in hour 2), one
/// living 5..=8; from hour 6 a second executable, a new peer, a new listening port and ten
/// times the traffic to port 443.
fn workload(base: u64) -> Vec<(String, Vec<Event>)> {
    let web = pod("c-web", "web-6d8f9c7b5-abcde", "10.0.0.5");
    let db = pod("c-db", "db-0", "10.0.0.9");
    let mut batches = Vec::new();
    let at = |h: u64, m: u64| base + h * HOUR + m * 60_000_000_000;
    for h in 0..10u64 {
        let mut web_events = vec![(at(h, 0), heartbeat(at(h, 0)))];
        if h == 0 {
            web_events.push((at(0, 1), process(7, 70, "/usr/bin/curl")));
        }
        if h == 6 {
            web_events.push((at(6, 1), process(8, 80, "/tmp/x")));
            web_events.push((at(6, 2), listener(900, 2222, at(6, 2))));
        }
        let scale = if h >= 6 { 10 } else { 1 };
        for i in 0..3u64 {
            let cookie = h * 10 + i + 1;
            let born = at(h, 10 + i);
            for (phase, sent) in [("START", 0), ("END", 200_000 * scale * (i + 1))] {
                web_events.push((
                    born + if phase == "END" { 30_000_000 } else { 0 },
                    flow(
                        Flow {
                            cookie,
                            peer: "203.0.113.7",
                            port: 443,
                            inbound: false,
                            phase,
                            sent,
                            born,
                        },
                        born + 1,
                    ),
                ));
            }
        }
        let long = |cookie, phase, sent, born| Flow {
            cookie,
            peer: "10.0.0.9",
            port: 5432,
            inbound: false,
            phase,
            sent,
            born,
        };
        match h {
            0 => web_events.push((
                at(0, 20),
                flow(long(1000, "START", 0, at(0, 20)), at(0, 20)),
            )),
            1 | 3 | 4 => web_events.push((
                at(h, 20),
                flow(long(1000, "UPDATE", h * 5000, at(0, 20)), at(h, 20)),
            )),
            5 => {
                web_events.push((
                    at(5, 20),
                    flow(long(1000, "END", 40_000, at(0, 20)), at(5, 20)),
                ));
                web_events.push((
                    at(5, 30),
                    flow(long(2000, "START", 0, at(5, 30)), at(5, 30)),
                ));
            }
            6 | 7 => web_events.push((
                at(h, 30),
                flow(long(2000, "UPDATE", h * 7000, at(5, 30)), at(h, 30)),
            )),
            8 => web_events.push((
                at(8, 30),
                flow(long(2000, "END", 90_000, at(5, 30)), at(8, 30)),
            )),
            _ => {}
        }
        if h >= 7 {
            web_events.push((
                at(h, 40),
                flow(
                    Flow {
                        cookie: 7000 + h,
                        peer: "198.51.100.1",
                        port: 4444,
                        inbound: false,
                        phase: "END",
                        sent: 70,
                        born: at(h, 40),
                    },
                    at(h, 40),
                ),
            ));
        }
        // One batch per arrival time, as a collector's batches are.
        web_events.sort_by_key(|(t, _)| *t);
        for (t, record) in web_events {
            batches.push((
                "c-web".to_owned(),
                vec![Event {
                    source: web.clone(),
                    received_at: t,
                    record,
                }],
            ));
        }
        batches.push((
            "c-db".to_owned(),
            vec![Event {
                source: db.clone(),
                received_at: at(h, 0),
                record: heartbeat(at(h, 0)),
            }],
        ));
    }
    batches
}

pub(crate) fn question(since: u64, until: u64) -> Question {
    Question {
        query: EventQuery {
            since,
            until,
            ..EventQuery::default()
        },
        ..Question::default()
    }
}

/// The answers the test compares: talkers over several windows (some holding a whole day:
/// the workload's hours 3..27 are one UTC day) and two comparisons.
fn answers(store: &Arc<dyn Store>, base: u64) -> (Vec<Talkers>, Vec<Comparison>) {
    let investigator = Investigator::new(store.clone());
    let talkers = [
        (0, 10),
        (2, 4),
        (1, 6),
        (6, 10),
        (8, 9),
        (3, 27),
        (0, 30),
        (2, 52),
    ]
    .iter()
    .map(|&(from, to)| {
        investigator
            .talkers(
                &question(base + from * HOUR, base + to * HOUR - 1),
                EdgeOrder::Bytes,
                100,
                &mut |_| {},
            )
            .unwrap_or_else(|e| panic!("talkers {from}..{to}: {e}"))
    })
    .collect();
    let comparisons = [(6, 10), (3, 27)]
        .iter()
        .map(|&(from, to)| {
            investigator
                .compare(
                    &question(base + from * HOUR, base + to * HOUR - 1),
                    base,
                    100,
                    &mut |_| {},
                )
                .unwrap_or_else(|e| panic!("compare {from}..{to}: {e}"))
        })
        .collect();
    (talkers, comparisons)
}

/// An hour is rolled up this long after it ends (`aggregator::rollups`).
pub(crate) const GRACE: u64 = 120_000_000_000;

fn rollups_equal_raw(backend: Backend) {
    let now = now_ns();
    // Three hours before a UTC day: the workload's ten hours end six hours into it.
    let base = now - now % DAY - 20 * DAY - 3 * HOUR;
    let long = Retention {
        max_age: std::time::Duration::from_secs(400 * 86_400),
        ..retention(400)
    };
    let opened = open(backend, long);
    // PostgreSQL keeps a day only in its partition: make those of the workload's days.
    opened.store.maintain(base).expect("partitions back then");
    for (seq, (collector, events)) in workload(base).into_iter().enumerate() {
        append(&*opened.store, &collector, seq as u64, events);
    }
    let raw = answers(&opened.store, base);
    assert_eq!(raw.0[0].flows, 30 + 2 + 3, "{backend:?}: every socket once");
    assert_eq!(
        raw.0[6], raw.0[0],
        "{backend:?}: nothing after the tenth hour"
    );
    // Both executables talk to the new peer; the new one also to the old one.
    let new = &raw.1[0].new;
    assert_eq!(new.edges.len(), 3, "{backend:?}: {new:?}");
    assert_eq!(new.executables.len(), 1);
    assert_eq!(new.listeners.len(), 1);
    assert_eq!(
        raw.1[0].increased.len(),
        1,
        "{backend:?}: {:?}",
        raw.1[0].increased
    );
    let db_edge = raw.0[0]
        .edges
        .iter()
        .find(|e| e.port == 5432)
        .expect("the database edge");
    assert_eq!(
        (db_edge.connections, db_edge.bytes_sent),
        (2, 40_000 + 90_000)
    );
    assert_eq!(db_edge.peer_pod_name.as_deref(), Some("db-0"));

    // Hours 0..=4 rolled up, the rest read raw (the windows are whole hours: they read
    // rollups where built).
    let mut built = RollupBuilder::new(opened.store.clone())
        .catch_up(base + 5 * HOUR + GRACE)
        .expect("roll up five hours");
    assert_eq!(built, 5, "{backend:?}");
    let partly = answers(&opened.store, base);
    assert_eq!(partly.0, raw.0, "{backend:?}: talkers from rollups and raw");
    assert_eq!(
        partly.1, raw.1,
        "{backend:?}: comparisons from rollups and raw"
    );

    built += RollupBuilder::new(opened.store.clone())
        .catch_up(now)
        .expect("roll up");
    assert!(built >= 20 * 24 - 1, "{backend:?}: {built} hours rolled up");
    assert_eq!(
        RollupBuilder::new(opened.store.clone())
            .catch_up(now)
            .expect("again"),
        0,
        "{backend:?}: a second builder (another replica) finds every hour built"
    );
    let rollups = opened.store.rollups().expect("rollups");
    let days = rollups
        .rollup_pods(Grain::Day, base, base + 30 * HOUR)
        .expect("days built");
    assert_eq!(
        days.first().map(|(d, _)| *d),
        Some(base + 3 * HOUR),
        "{backend:?}: the workload's whole day, folded"
    );
    let all = answers(&opened.store, base);
    assert_eq!(all.0, raw.0, "{backend:?}: talkers from rollups, raw kept");
    assert_eq!(
        all.1, raw.1,
        "{backend:?}: comparisons from rollups, raw kept"
    );

    // Raw records kept 14 days: the workload's are dropped, its rollups stay.
    let opened = opened.reopen(retention(14));
    opened.store.maintain(now).expect("retention");
    let left = opened
        .store
        .query(&EventQuery {
            since: base,
            until: base + 10 * HOUR,
            ..EventQuery::default()
        })
        .expect("query");
    assert!(left.is_empty(), "{backend:?}: raw records past retention");
    let rolled = answers(&opened.store, base);
    assert_eq!(rolled.0, raw.0, "{backend:?}: talkers from rollups");
    assert_eq!(rolled.1, raw.1, "{backend:?}: comparison from rollups");

    // Rollups at their own retention: gone.
    let opened = opened.reopen(Retention {
        rollups: std::time::Duration::from_secs(86_400),
        ..retention(14)
    });
    opened.store.maintain(now).expect("retention");
    let gone = answers(&opened.store, base);
    assert_eq!(
        gone.0[0].flows, 0,
        "{backend:?}: rollups past their retention"
    );
    assert_eq!(
        gone.0[5].flows, 0,
        "{backend:?}: daily rollups past their retention"
    );
}

#[test]
fn rollups_answer_as_raw_records_did_and_outlive_them_on_sqlite() {
    rollups_equal_raw(Backend::Sqlite);
}

#[test]
fn rollups_answer_as_raw_records_did_and_outlive_them_on_postgres() {
    rollups_equal_raw(Backend::Postgres);
}

/// Two replicas (two stores on one PostgreSQL database) ingest without pause while both run
/// upkeep that drops the partitions of days past retention: every batch is acknowledged and
/// stored once, what was past retention is gone.
#[test]
fn partitions_dropped_at_retention_while_two_replicas_ingest_lose_nothing() {
    let url = crate::pg::fresh_database();
    let password = crate::pg::shared().password.clone();
    let options = procflow::aggregator::store::PgOptions {
        password: Some(password.clone()),
        pool_size: 4,
        connect_wait: std::time::Duration::from_secs(30),
    };
    let replica = || -> Arc<dyn Store> {
        Arc::new(
            procflow::aggregator::store::PgStore::open(&url, &options, retention(14))
                .expect("open"),
        )
    };
    let (a, b) = (replica(), replica());
    let now = now_ns();
    let old = now - 20 * DAY;
    a.maintain(old).expect("the partitions of twenty days ago");
    let web = pod("c-old", "web-0", "10.0.0.5");
    let old_events = |cookie| {
        vec![Event {
            source: web.clone(),
            received_at: old,
            record: flow(
                Flow {
                    cookie,
                    peer: "203.0.113.7",
                    port: 443,
                    inbound: false,
                    phase: "END",
                    sent: 1,
                    born: old,
                },
                old,
            ),
        }]
    };
    append(&*a, "c-old", 0, old_events(1));
    let partitions = || {
        crate::pg::psql(
            &url,
            &password,
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'segments'::regclass",
        )
        .parse::<u32>()
        .expect("count")
    };
    assert!(partitions() > 4, "old days' partitions exist");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ingest = |store: Arc<dyn Store>, collector: &'static str| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let source = pod(collector, collector, "10.0.0.6");
            let mut seq = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && seq < 5_000 {
                let at = now_ns();
                let events = (0..20)
                    .map(|i| Event {
                        source: source.clone(),
                        received_at: at,
                        record: flow(
                            Flow {
                                cookie: seq * 20 + i,
                                peer: "203.0.113.7",
                                port: 443,
                                inbound: false,
                                phase: "END",
                                sent: 1,
                                born: at,
                            },
                            at,
                        ),
                    })
                    .collect();
                append(&*store, collector, seq, events);
                seq += 1;
            }
            seq
        })
    };
    let (ingest_a, ingest_b) = (ingest(a.clone(), "writer-a"), ingest(b.clone(), "writer-b"));
    // Upkeep on both replicas at once while they ingest (one holds the lock at a time).
    for _ in 0..5 {
        let (a2, b2) = (a.clone(), b.clone());
        let up_a = std::thread::spawn(move || a2.maintain(now_ns()));
        let up_b = std::thread::spawn(move || b2.maintain(now_ns()));
        up_a.join().expect("join").expect("upkeep on a");
        up_b.join().expect("join").expect("upkeep on b");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent_a = ingest_a.join().expect("ingest a");
    let sent_b = ingest_b.join().expect("ingest b");
    assert!(sent_a > 0 && sent_b > 0);
    assert_eq!(partitions(), 4, "yesterday, today and two days ahead");
    let count = |collector: &str| {
        crate::pg::psql(
            &url,
            &password,
            &format!(
                "SELECT COALESCE(sum(count), 0) FROM segments WHERE collector = '{collector}'"
            ),
        )
        .parse::<u64>()
        .expect("count")
    };
    assert_eq!(
        count("writer-a"),
        sent_a * 20,
        "every acknowledged record of a, once"
    );
    assert_eq!(
        count("writer-b"),
        sent_b * 20,
        "every acknowledged record of b, once"
    );
    assert_eq!(count("c-old"), 0, "past retention");
}
