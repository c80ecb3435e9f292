//! One store suite, run against both backends (SQLite and a real PostgreSQL) with the same
//! inputs, asserting the same answers: insert, deduplication, query filters, scans that stop
//! early, retention; then PostgreSQL's own failures: a wrong password, the server down at
//! start and mid-stream, schemas older and newer than the binary.

use std::sync::Arc;
use std::time::Duration;

use procflow::aggregator::store::{
    self, Appended, EventQuery, OpenOptions, PgOptions, PgStore, Retention, Store, StoreError,
    StoreSpec,
};
use procflow::model::{CollectorIdentity, Event, FlowRecord, Record, RecordKind};

use crate::pg;

const DAY: u64 = 86_400_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A store of `backend` over fresh storage, and what keeps that storage alive.
pub(crate) struct Opened {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) options: OpenOptions,
    _dir: Option<tempfile::TempDir>,
}

impl Opened {
    /// The same storage opened again (the store closed first) with another retention.
    pub(crate) fn reopen(mut self, retention: Retention) -> Opened {
        drop(std::mem::replace(
            &mut self.store,
            Arc::new(store::NullStore::default()),
        ));
        self.options.retention = retention;
        self.store = store::open(&self.options).unwrap_or_else(|e| panic!("reopen: {e}"));
        self
    }
}

pub(crate) fn retention(days: u64) -> Retention {
    Retention {
        max_age: Duration::from_secs(days * 86_400),
        max_bytes: u64::MAX,
        rollups: procflow::aggregator::store::ROLLUP_RETENTION,
    }
}

pub(crate) fn pg_options(password: &str) -> PgOptions {
    PgOptions {
        password: Some(password.to_owned()),
        pool_size: 4,
        connect_wait: Duration::from_secs(30),
    }
}

pub(crate) fn open(backend: Backend, retention: Retention) -> Opened {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spec, dir) = match backend {
        Backend::Sqlite => (StoreSpec::Sqlite(None), Some(dir)),
        Backend::Postgres => (StoreSpec::Postgres(pg::fresh_database()), Some(dir)),
    };
    let options = OpenOptions {
        spec,
        data_dir: dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default(),
        retention,
        postgres: pg_options(&pg::shared().password),
    };
    Opened {
        store: store::open(&options).unwrap_or_else(|e| panic!("{backend:?}: {e}")),
        options,
        _dir: dir,
    }
}

fn source(ns: &str, pod: &str) -> Arc<CollectorIdentity> {
    Arc::new(CollectorIdentity {
        collector_id: format!("uid-{pod}/c"),
        pod_name: pod.into(),
        pod_namespace: ns.into(),
        pod_ip: "10.0.0.5".into(),
        ..CollectorIdentity::default()
    })
}

fn flow(cookie: u64, at: u64) -> FlowRecord {
    serde_json::from_value(serde_json::json!({
        "kind": "flow", "cookie": cookie.to_string(), "protocol": "TCP", "family": "IPV4",
        "local_addr": "10.0.0.5", "local_port": 40000, "remote_addr": "198.51.100.77",
        "remote_port": 443, "direction": "OUTBOUND", "scope": "NORTH_SOUTH", "phase": "END",
        "state": "CLOSE", "preexisting": false, "bytes_sent": cookie * 10, "bytes_received": 7,
        "segs_out": null, "segs_in": null, "retransmits": null, "total_retrans": null,
        "rtt_us": null, "first_seen": at - 50, "last_seen": at - 10, "ended_at": at - 10,
        "uid": 1000, "inode": 9, "pid": 4242, "process_start_time": 1,
        "attribution": "FD", "end_reason": "UNSPECIFIED", "reset": false, "cgroup_id": null
    }))
    .unwrap_or_else(|e| panic!("flow fixture: {e}"))
}

fn process_record(pid: u32) -> Record {
    let p = serde_json::json!({
        "kind": "process", "pid": pid, "start_time": 1, "ppid": 1,
        "parent_start_time": null, "phase": "START", "comm": "curl", "exe": "/usr/bin/curl",
        "argv": ["curl"], "cwd": null, "uid": 1000, "gid": 1000,
        "euid": 1000, "egid": 1000, "tty": null, "session_id": 1, "pgid": 1,
        "container_id": null, "pod_uid": null, "exit_time": null, "ancestors": [],
        "exe_unavailable": "UNSPECIFIED", "cwd_unavailable": "UNSPECIFIED", "exe_deleted": false,
        "seen_at_exit_only": false, "preexisting": false, "stdio_is_socket": null,
        "stdio_socket_inodes": []
    });
    Record::Process(serde_json::from_value(p).unwrap_or_else(|e| panic!("process: {e}")))
}

/// A batch of `n` flows and one process from `pod`, received at `at`.
pub(crate) fn batch(ns: &str, pod: &str, first_cookie: u64, n: u64, at: u64) -> Vec<Event> {
    let src = source(ns, pod);
    let mut events: Vec<Event> = (first_cookie..first_cookie + n)
        .map(|c| Event {
            source: src.clone(),
            received_at: at,
            record: Record::Flow(flow(c, at)),
        })
        .collect();
    events.push(Event {
        source: src,
        received_at: at,
        record: process_record(100 + first_cookie as u32),
    });
    events
}

pub(crate) fn append(store: &dyn Store, collector: &str, seq: u64, events: Vec<Event>) -> Appended {
    store
        .append(collector.into(), seq, events)
        .blocking_recv()
        .expect("reply")
        .unwrap_or_else(|e| panic!("append: {e}"))
}

fn audit_events(at: u64) -> Vec<Event> {
    let json = include_str!("../../src/audit/fixtures/exec-request-received.json");
    let record =
        procflow::audit::event::decode_event(json.as_bytes(), "prod", &mut Default::default())
            .expect("audit fixture");
    vec![Event {
        source: Arc::new(procflow::audit::ingest::source_of(&record)),
        received_at: at,
        record: Record::Audit(Box::new(record)),
    }]
}

/// What one backend answered to the suite's questions.
#[derive(Debug, PartialEq)]
struct Answers {
    outcomes: Vec<&'static str>,
    audit: Vec<(usize, usize)>,
    all: Vec<Event>,
    flows_of_web: Vec<Event>,
    shop_processes: Vec<Event>,
    window: Vec<Event>,
    first_three: Vec<Event>,
    complete: bool,
    /// Pods that sent processes in the window, by first appearance; the same in `pay`.
    sources: Vec<String>,
    pay_sources: Vec<String>,
}

fn outcome(a: &Appended) -> &'static str {
    match a {
        Appended::Stored(_) => "stored",
        Appended::Duplicate => "duplicate",
    }
}

fn exercise(backend: Backend) -> Answers {
    let opened = open(backend, retention(14));
    let store = opened.store.as_ref();
    let now = procflow::model::now_ns();
    let mut outcomes = Vec::new();
    let mut stored = |seq, a: Appended| outcomes.push((seq, outcome(&a)));
    stored(
        1,
        append(
            store,
            "uid-web-0/c",
            1,
            batch("shop", "web-0", 1, 5, now - 300),
        ),
    );
    stored(
        2,
        append(
            store,
            "uid-db-0/c",
            1,
            batch("shop", "db-0", 10, 3, now - 200),
        ),
    );
    // The same batch again (a reconnect resends what was not acked): stored once.
    stored(
        3,
        append(
            store,
            "uid-web-0/c",
            1,
            batch("shop", "web-0", 1, 5, now - 300),
        ),
    );
    stored(
        4,
        append(
            store,
            "uid-api-0/c",
            7,
            batch("pay", "api-0", 20, 2, now - 100),
        ),
    );
    // One key twice in one group (the writer groups what is queued).
    let a = store.append(
        "uid-api-0/c".into(),
        8,
        batch("pay", "api-0", 30, 1, now - 90),
    );
    let b = store.append(
        "uid-api-0/c".into(),
        8,
        batch("pay", "api-0", 30, 1, now - 90),
    );
    let a = a.blocking_recv().expect("reply").expect("append");
    let b = b.blocking_recv().expect("reply").expect("append");
    stored(5, a);
    stored(6, b);
    let outcomes = outcomes.into_iter().map(|(_, o)| o).collect();
    let audit = (0..2)
        .map(|_| {
            let a = store
                .append_audit(audit_events(now - 50))
                .blocking_recv()
                .expect("reply")
                .expect("audit");
            (a.stored.len(), a.duplicates)
        })
        .collect();

    let q = |query: EventQuery| store.query(&query).expect("query");
    let all = q(EventQuery::default());
    let flows_of_web = q(EventQuery {
        kinds: vec![RecordKind::Flow],
        pods: vec!["web-0".into()],
        ..EventQuery::default()
    });
    let shop_processes = q(EventQuery {
        kinds: vec![RecordKind::Process],
        namespaces: vec!["shop".into()],
        ..EventQuery::default()
    });
    let window = q(EventQuery {
        since: now - 250,
        until: now - 95,
        ..EventQuery::default()
    });
    let mut first_three = Vec::new();
    let complete = store
        .scan(&EventQuery::default(), &mut |e| {
            first_three.push(e);
            first_three.len() < 3
        })
        .expect("scan");
    let sources = |namespaces: Vec<String>| -> Vec<String> {
        store
            .sources(&EventQuery {
                kinds: vec![RecordKind::Process],
                since: now - 350,
                until: now - 95,
                namespaces,
                ..EventQuery::default()
            })
            .expect("sources")
            .iter()
            .map(|s| s.pod_name.clone())
            .collect()
    };
    Answers {
        outcomes,
        audit,
        all,
        flows_of_web,
        shop_processes,
        window,
        first_three,
        complete,
        sources: sources(Vec::new()),
        pay_sources: sources(vec!["pay".into()]),
    }
}

#[test]
fn both_backends_store_deduplicate_and_answer_alike() {
    let sqlite = exercise(Backend::Sqlite);
    assert_eq!(
        sqlite.outcomes,
        [
            "stored",
            "stored",
            "duplicate",
            "stored",
            "stored",
            "duplicate"
        ]
    );
    assert_eq!(sqlite.audit, [(1, 0), (0, 1)]);
    // 6 + 4 + 3 + 2 events, and the audit event.
    assert_eq!(sqlite.all.len(), 16);
    assert_eq!(sqlite.flows_of_web.len(), 5);
    assert_eq!(sqlite.shop_processes.len(), 2);
    assert_eq!(sqlite.window.len(), 4 + 3);
    assert_eq!(sqlite.first_three.len(), 3);
    assert!(!sqlite.complete);
    // One identity per collector, first seen first (api-0 sent two batches in the window).
    assert_eq!(sqlite.sources, ["web-0", "db-0", "api-0"]);
    assert_eq!(sqlite.pay_sources, ["api-0"]);
    let postgres = exercise(Backend::Postgres);
    // Arrival times differ between the runs: compare everything else.
    let strip = |mut a: Answers| {
        for list in [
            &mut a.all,
            &mut a.flows_of_web,
            &mut a.shop_processes,
            &mut a.window,
            &mut a.first_three,
        ] {
            for e in list.iter_mut() {
                e.received_at = 0;
                if let Record::Flow(f) = &mut e.record {
                    (f.first_seen, f.last_seen, f.ended_at) = (0, 0, None);
                }
            }
        }
        a
    };
    assert_eq!(strip(postgres), strip(sqlite));
}

fn retention_on(backend: Backend) -> (usize, usize, &'static str) {
    // Stored under a 30-day retention, then the store runs with 14 days.
    let opened = open(backend, retention(30));
    let now = procflow::model::now_ns();
    let old = now - 20 * DAY;
    append(
        opened.store.as_ref(),
        "uid-web-0/c",
        1,
        batch("shop", "web-0", 1, 3, old),
    );
    append(
        opened.store.as_ref(),
        "uid-web-0/c",
        2,
        batch("shop", "web-0", 4, 3, now - 1_000),
    );
    let before = opened
        .store
        .query(&EventQuery::default())
        .expect("query")
        .len();
    // PostgreSQL's upkeep runs at open too; SQLite's on its writer's clock: run it now.
    let opened = opened.reopen(retention(14));
    let store = opened.store.as_ref();
    store.maintain(now).expect("upkeep now");
    let after = store.query(&EventQuery::default()).expect("query");
    assert!(after.iter().all(|e| e.received_at > now - 14 * DAY));
    // The kept batch's dedupe row stays with its events.
    let fresh = append(store, "uid-web-0/c", 2, batch("shop", "web-0", 4, 3, now));
    (before, after.len(), outcome(&fresh))
}

#[test]
fn both_backends_drop_what_is_past_retention_with_its_dedupe_rows() {
    let sqlite = retention_on(Backend::Sqlite);
    assert_eq!(sqlite, (8, 4, "duplicate"));
    assert_eq!(retention_on(Backend::Postgres), sqlite);
}

#[test]
fn postgres_partitions_are_daily_made_ahead_and_dropped_at_retention() {
    let url = pg::fresh_database();
    let password = pg::shared().password.clone();
    let store = PgStore::open(&url, &pg_options(&password), retention(14)).expect("open");
    let partitions = || {
        pg::psql(
            &url,
            &password,
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'segments'::regclass",
        )
    };
    // Yesterday, today and two days ahead.
    assert_eq!(partitions(), "4");
    let now = procflow::model::now_ns();
    store.maintain(now - 30 * DAY).expect("upkeep a month ago");
    assert_eq!(partitions(), "8");
    store.maintain(now).expect("upkeep now");
    assert_eq!(partitions(), "4");
}

#[test]
fn a_wrong_postgres_password_is_refused_at_once() {
    let url = pg::fresh_database();
    let started = std::time::Instant::now();
    let err = match PgStore::open(&url, &pg_options("not-the-password"), retention(14)) {
        Ok(_) => panic!("opened with a wrong password"),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::Config(_)), "{err}");
    assert!(err.to_string().contains("password"), "{err}");
    // A refusal is not waited out like a server that is down (connect_wait is 30 s).
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_password_in_the_store_url_is_refused() {
    let err = "postgres://procflow:secret@127.0.0.1:5432/procflow"
        .parse::<StoreSpec>()
        .expect_err("password in URL");
    assert!(err.contains("PROCFLOW_STORE_PASSWORD"), "{err}");
    assert!(
        !err.contains("secret"),
        "the error repeats the password: {err}"
    );
}

#[test]
fn postgres_down_at_start_is_waited_for_then_unavailable() {
    let server = pg::PgServer::start();
    let url = server.database();
    server.stop();
    let short = PgOptions {
        connect_wait: Duration::from_secs(1),
        ..pg_options(&server.password)
    };
    let err = match PgStore::open(&url, &short, retention(14)) {
        Ok(_) => panic!("opened a stopped server"),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    // The server comes up while the store waits: it opens.
    let waiting = std::thread::spawn({
        let url = url.clone();
        let options = pg_options(&server.password);
        move || PgStore::open(&url, &options, retention(14)).map(|_| ())
    });
    std::thread::sleep(Duration::from_millis(500));
    server.restart();
    waiting
        .join()
        .expect("thread")
        .expect("opened once the server was up");
}

#[test]
fn postgres_down_mid_stream_fails_appends_unacked_and_keeps_what_was_acked() {
    let server = pg::PgServer::start();
    let url = server.database();
    let store = PgStore::open(&url, &pg_options(&server.password), retention(14)).expect("open");
    let now = procflow::model::now_ns();
    append(&store, "uid-web-0/c", 1, batch("shop", "web-0", 1, 3, now));
    server.stop();
    let failed = store
        .append("uid-web-0/c".into(), 2, batch("shop", "web-0", 4, 3, now))
        .blocking_recv()
        .expect("reply");
    assert!(
        matches!(failed, Err(StoreError::Unavailable(_))),
        "{failed:?}"
    );
    server.restart();
    // The collector resends seq 2 (never acked) and goes on; seq 1 stays stored once.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let resent = loop {
        match store
            .append("uid-web-0/c".into(), 2, batch("shop", "web-0", 4, 3, now))
            .blocking_recv()
            .expect("reply")
        {
            Ok(a) => break a,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("retrying after {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("the store did not come back: {e}"),
        }
    };
    assert!(matches!(resent, Appended::Stored(_)));
    assert!(matches!(
        append(&store, "uid-web-0/c", 1, batch("shop", "web-0", 1, 3, now)),
        Appended::Duplicate
    ));
    assert_eq!(store.query(&EventQuery::default()).expect("query").len(), 8);
}

#[test]
fn a_postgres_schema_newer_than_the_binary_is_refused() {
    let url = pg::fresh_database();
    let password = pg::shared().password.clone();
    drop(PgStore::open(&url, &pg_options(&password), retention(14)).expect("open"));
    pg::psql(
        &url,
        &password,
        "INSERT INTO procflow_schema (version) VALUES (999)",
    );
    let err = match PgStore::open(&url, &pg_options(&password), retention(14)) {
        Ok(_) => panic!("opened a newer schema"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("999"), "{err}");
}

/// A database an aggregator of schema version 1 left (migrations only add: the later
/// versions' tables dropped and their rows removed are exactly that), with stored batches,
/// brought to the latest version by `procflow store migrate` (a process, as an operator
/// runs it before a rollout): the stored events and their dedupe rows are kept, and the
/// newer tables work.
#[test]
fn a_postgres_database_of_schema_version_1_migrates_with_its_data() {
    let url = pg::fresh_database();
    let password = pg::shared().password.clone();
    let now = procflow::model::now_ns();
    let stored = {
        let store = PgStore::open(&url, &pg_options(&password), retention(14)).expect("open");
        append(&store, "uid-web-0/c", 1, batch("shop", "web-0", 1, 3, now));
        append(&store, "uid-web-0/c", 2, batch("shop", "web-0", 4, 2, now));
        store.query(&EventQuery::default()).expect("query").len()
    };
    pg::psql(
        &url,
        &password,
        "DROP TABLE alert_groups, rule_learned_keys, rule_learned_values, rollups, rollup_hours, \
         rollup_days, rollup_days_built; DELETE FROM procflow_schema WHERE version > 1",
    );
    let out = std::process::Command::new(crate::util::procflow_bin())
        .args(["store", "migrate", "--store", &url])
        .env("PROCFLOW_STORE_PASSWORD", &password)
        .output()
        .expect("procflow store migrate");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("schema version 1 -> "), "{said}");
    assert_eq!(
        pg::psql(&url, &password, "SELECT max(version) FROM procflow_schema"),
        said.trim().rsplit(' ').next().unwrap_or_default()
    );
    let store = PgStore::open(&url, &pg_options(&password), retention(14)).expect("reopen");
    assert_eq!(
        store.query(&EventQuery::default()).expect("query").len(),
        stored
    );
    // The old dedupe rows still guard their batches; new ones are stored.
    assert!(matches!(
        append(&store, "uid-web-0/c", 2, batch("shop", "web-0", 4, 2, now)),
        Appended::Duplicate
    ));
    assert!(matches!(
        append(&store, "uid-web-0/c", 3, batch("shop", "web-0", 6, 1, now)),
        Appended::Stored(_)
    ));
    // The later versions' tables are there and answer.
    let rollups = store.rollups().expect("rollups");
    assert!(rollups
        .rollup_progress()
        .expect("rollup progress")
        .is_none());
    assert_eq!(
        pg::psql(&url, &password, "SELECT count(*) FROM alert_groups"),
        "0"
    );
}

#[test]
fn a_sqlite_database_from_before_versioning_migrates_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.db");
    {
        // The schema as main had it, unversioned, with one stored batch.
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(
            "CREATE TABLE segments (id INTEGER PRIMARY KEY, received_at INTEGER NOT NULL,
                kind TEXT NOT NULL, pod TEXT NOT NULL, namespace TEXT NOT NULL,
                collector TEXT NOT NULL, count INTEGER NOT NULL, body BLOB NOT NULL);
             CREATE TABLE batches (collector TEXT NOT NULL, seq INTEGER NOT NULL,
                received_at INTEGER NOT NULL, PRIMARY KEY (collector, seq)) WITHOUT ROWID;
             INSERT INTO batches VALUES ('uid-web-0/c', 1, 1);",
        )
        .expect("old schema");
    }
    let spec = StoreSpec::Sqlite(Some(path.clone()));
    let options = OpenOptions {
        spec,
        data_dir: dir.path().to_path_buf(),
        retention: retention(14),
        postgres: PgOptions::default(),
    };
    let (from, to) = store::migrate(&options).expect("migrate");
    assert_eq!(from, 0);
    assert!(to >= 1);
    let opened = store::open(&options).expect("open");
    // The old dedupe row still guards its batch.
    let now = procflow::model::now_ns();
    assert!(matches!(
        append(
            opened.as_ref(),
            "uid-web-0/c",
            1,
            batch("shop", "web-0", 1, 1, now)
        ),
        Appended::Duplicate
    ));
}

/// A writer may put NUL in its collector id (PostgreSQL's text cannot hold it): its batch
/// is stored with the id intact, once, and another writer's batch committed in the same
/// group is not failed with it.
fn nul_in_a_collector_id(backend: Backend) -> Vec<(String, usize)> {
    let opened = open(backend, retention(14));
    let store = opened.store.as_ref();
    let now = procflow::model::now_ns();
    let evil = Arc::new(CollectorIdentity {
        collector_id: "uid-web-0/c\0x".into(),
        ..(*source("shop", "web-0")).clone()
    });
    let mut events = batch("shop", "web-0", 1, 2, now);
    for e in &mut events {
        e.source = evil.clone();
    }
    let first = store.append("uid-web-0/c\0x".into(), 1, events.clone());
    let other = store.append("uid-db-0/c".into(), 1, batch("shop", "db-0", 5, 2, now));
    let again = store.append("uid-web-0/c\0x".into(), 1, events);
    let outcomes: Vec<&str> = [first, other, again]
        .into_iter()
        .map(|rx| outcome(&rx.blocking_recv().expect("reply").expect("append")))
        .collect();
    assert_eq!(outcomes, ["stored", "stored", "duplicate"], "{backend:?}");
    let mut ids: Vec<(String, usize)> = Vec::new();
    for e in store.query(&EventQuery::default()).expect("query") {
        match ids.iter_mut().find(|(id, _)| *id == e.source.collector_id) {
            Some((_, n)) => *n += 1,
            None => ids.push((e.source.collector_id.clone(), 1)),
        }
    }
    ids
}

#[test]
fn a_nul_in_a_collector_id_fails_nothing_on_either_backend() {
    let sqlite = nul_in_a_collector_id(Backend::Sqlite);
    assert_eq!(
        sqlite,
        [
            ("uid-web-0/c\0x".to_owned(), 3),
            ("uid-db-0/c".to_owned(), 3)
        ]
    );
    assert_eq!(nul_in_a_collector_id(Backend::Postgres), sqlite);
}

/// Events that arrive with old times (an audit backfill keeps the API server's): one of
/// 5 days ago is stored (PostgreSQL makes its day's partition), one past retention is not
/// kept (SQLite's next upkeep deletes it; PostgreSQL does not store it) — and neither fails
/// the batch.
fn old_arrivals(backend: Backend) -> Vec<u64> {
    let opened = open(backend, retention(14));
    let store = opened.store.as_ref();
    let now = procflow::model::now_ns();
    let mut events = batch("shop", "web-0", 1, 1, now - 5 * DAY);
    events.extend(batch("shop", "web-0", 2, 1, now - 30 * DAY));
    assert!(matches!(
        append(store, "uid-web-0/c", 1, events),
        Appended::Stored(_)
    ));
    store.maintain(now).expect("upkeep");
    let mut days: Vec<u64> = store
        .query(&EventQuery::default())
        .expect("query")
        .iter()
        .map(|e| (now - e.received_at) / DAY)
        .collect();
    days.dedup();
    days
}

#[test]
fn events_arriving_with_old_times_are_kept_or_expired_alike() {
    let sqlite = old_arrivals(Backend::Sqlite);
    assert_eq!(sqlite, [5]);
    assert_eq!(old_arrivals(Backend::Postgres), sqlite);
}
