//! Aggregator processes on a real PostgreSQL: the database stopped mid-stream (ingest
//! answers UNAVAILABLE, the collector's exporter keeps and resends, nothing acknowledged is
//! lost); the database down when the aggregator starts (it does not listen until the
//! database answers, so collectors cannot connect and spool; nothing is lost once it is
//! up); a wrong database password (the aggregator exits at once, saying so); and two
//! replicas on one database: a batch resent to the other replica is stored once; a replica
//! killed with SIGKILL mid-stream and its address taken over by a new one (what a Service
//! does) loses and duplicates nothing, while the other replica goes on.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use procflow::codec::EncodedBatch;
use procflow::pipeline::exporter;

use crate::pg::PgServer;
use crate::pipeline::{batch, exporter_config, free_ports, identity, ingest, times_of, Aggregator};
use crate::util::procflow_bin;

fn on_postgres(server: &PgServer, url: &str, port: u16) -> Aggregator {
    let password = server.password_file();
    Aggregator::start_on(
        port,
        &[
            "--store",
            url,
            "--store-password-file",
            password.to_str().expect("utf-8 path"),
            "--no-detection",
        ],
    )
}

type Exporter = tokio::task::JoinHandle<Result<(), exporter::ExportError>>;

/// The collector's exporter to `agg`, holding `memory` batches before its spool in `spool`.
fn spooling_exporter(
    runtime: &tokio::runtime::Runtime,
    agg: &Aggregator,
    spool: &std::path::Path,
    memory: usize,
) -> (tokio::sync::mpsc::Sender<EncodedBatch>, Exporter) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let config = exporter_config(agg.url(), Some(spool.to_owned()), memory, 64 << 20);
    (tx, runtime.spawn(exporter::run(config, rx)))
}

/// Batch `seq` of `per_batch` heartbeats, numbered from `seq * per_batch`.
fn send(
    tx: &tokio::sync::mpsc::Sender<EncodedBatch>,
    id: &procflow::model::CollectorIdentity,
    seq: u64,
    per_batch: u64,
) {
    tx.blocking_send(EncodedBatch::encode(&batch(
        id,
        seq,
        seq * per_batch,
        per_batch,
    )))
    .expect("send");
}

fn expected(batches: u64, per_batch: u64) -> Vec<u64> {
    (1..=batches)
        .flat_map(|s| s * per_batch..s * per_batch + per_batch)
        .collect()
}

#[test]
fn the_database_down_mid_stream_loses_nothing_acknowledged() {
    let server = PgServer::start();
    let url = server.database();
    let [port] = free_ports::<1>();
    let agg = on_postgres(&server, &url, port);
    let id = identity("pg-outage");
    let spool = tempfile::tempdir().expect("spool dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (tx, exporter) = spooling_exporter(&runtime, &agg, spool.path(), 8);
    let (batches, per_batch) = (200u64, 50u64);
    for seq in 1..=batches {
        send(&tx, &id, seq, per_batch);
        if seq == batches / 2 {
            server.stop();
        }
        if seq == batches * 3 / 4 {
            std::thread::sleep(Duration::from_millis(500));
            server.restart();
        }
    }
    drop(tx);
    runtime.block_on(exporter).expect("join").expect("exporter");
    assert!(
        agg.log()
            .contains("store failed; the collector will resend"),
        "ingest did not fail while the database was down: {}",
        agg.log()
    );
    assert_eq!(
        times_of(&agg.query("heartbeat"), "pg-outage"),
        expected(batches, per_batch),
        "every record stored once"
    );
}

#[test]
fn the_database_down_at_start_collectors_spool_and_nothing_is_lost() {
    let server = PgServer::start();
    let url = server.database();
    server.stop();
    let [port] = free_ports::<1>();
    let password = server.password_file();
    let mut agg = Aggregator::launch_on(
        port,
        &[
            "--store",
            &url,
            "--store-password-file",
            password.to_str().expect("utf-8 path"),
            "--store-connect-wait",
            "180s",
            "--no-detection",
        ],
    );
    let id = identity("pg-down-at-start");
    let spool = tempfile::tempdir().expect("spool dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (tx, exporter) = spooling_exporter(&runtime, &agg, spool.path(), 4);
    let (batches, per_batch) = (60u64, 20u64);
    for seq in 1..=batches {
        send(&tx, &id, seq, per_batch);
    }
    // Nothing listens: what the exporter's memory does not hold goes to its spool.
    let deadline = Instant::now() + Duration::from_secs(60);
    let spooled = || {
        std::fs::read_dir(spool.path()).map_or(0, |d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "batch"))
            })
            .count()
        })
    };
    while spooled() == 0 {
        assert!(Instant::now() < deadline, "the collector did not spool");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!agg.is_listening(), "listening without its database");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !agg.log().contains("waiting for the database") {
        assert!(
            Instant::now() < deadline,
            "no word of the wait: {}",
            agg.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.restart();
    agg.wait_listening(Duration::from_secs(60));
    drop(tx);
    runtime.block_on(exporter).expect("join").expect("exporter");
    assert_eq!(
        times_of(&agg.query("heartbeat"), "pg-down-at-start"),
        expected(batches, per_batch),
        "every record stored once"
    );
}

#[test]
fn a_wrong_database_password_stops_the_aggregator_at_once_saying_so() {
    let server = PgServer::start();
    let url = server.database();
    let dir = tempfile::tempdir().expect("dir");
    let password = dir.path().join("password");
    std::fs::write(&password, "not-the-password\n").expect("write");
    let [port] = free_ports::<1>();
    let started = Instant::now();
    let mut child = Command::new(procflow_bin())
        .args([
            "aggregator",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .args(["--store", &url, "--store-password-file"])
        .arg(&password)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start aggregator");
    // A refusal is not waited out like a database that is down (that wait is 60 s).
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(40) {
            let _ = child.kill();
            panic!("the aggregator kept waiting on a wrong password");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("password authentication failed"),
        "the error does not say why: {stderr}"
    );
    assert!(
        !stderr.contains("not-the-password"),
        "the password is in the log: {stderr}"
    );
}

#[test]
fn a_batch_resent_to_another_replica_is_stored_once() {
    let server = PgServer::start();
    let url = server.database();
    let [a, b] = free_ports::<2>();
    let (a, b) = (on_postgres(&server, &url, a), on_postgres(&server, &url, b));
    let id = identity("two-replicas");
    let batches: Vec<_> = (1..=10).map(|seq| batch(&id, seq, seq * 10, 10)).collect();
    // Replica A stores the first six; the collector, cut off before their acks, sends
    // all ten to replica B.
    let acks = ingest(&a.url(), None, batches[..6].to_vec()).expect("ingest into A");
    assert_eq!(acks.len(), 6);
    let acks = ingest(&b.url(), None, batches.clone()).expect("ingest into B");
    assert!(acks.iter().all(|ack| !ack.rejected), "{acks:?}");
    let expected: Vec<u64> = (1..=10u64).flat_map(|s| s * 10..s * 10 + 10).collect();
    // Either replica answers from the one database.
    assert_eq!(times_of(&a.query("heartbeat"), "two-replicas"), expected);
    assert_eq!(times_of(&b.query("heartbeat"), "two-replicas"), expected);
}

#[test]
fn a_replica_killed_mid_stream_loses_and_duplicates_nothing() {
    let server = PgServer::start();
    let url = server.database();
    let [port_a, port_b] = free_ports::<2>();
    let mut a = on_postgres(&server, &url, port_a);
    let b = on_postgres(&server, &url, port_b);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (batches, per_batch) = (300u64, 50u64);
    let mut senders = Vec::new();
    let mut exporters = Vec::new();
    for (name, replica) in [("to-a", &a), ("to-b", &b)] {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        exporters.push(runtime.spawn(exporter::run(
            exporter_config(replica.url(), None, 100_000, 0),
            rx,
        )));
        senders.push((identity(name), tx));
    }
    for seq in 1..=batches {
        for (id, tx) in &senders {
            send(tx, id, seq, per_batch);
        }
        if seq == batches / 2 {
            // SIGKILL: no flush, no goodbye. Another replica takes over A's address.
            a.kill();
            std::thread::sleep(Duration::from_millis(200));
            a = on_postgres(&server, &url, port_a);
        }
    }
    drop(senders);
    for exporter in exporters {
        runtime.block_on(exporter).expect("join").expect("exporter");
    }
    let stored = b.query("heartbeat");
    for name in ["to-a", "to-b"] {
        assert_eq!(
            times_of(&stored, name),
            expected(batches, per_batch),
            "{name}: every record stored exactly once"
        );
    }
    drop(a);
}
