//! Aggregator processes on a real PostgreSQL: the database stopped mid-stream (ingest
//! answers UNAVAILABLE, the collector's exporter keeps and resends, nothing acknowledged is
//! lost), and two replicas on one database: a batch resent to the other replica is stored
//! once; a replica killed with SIGKILL mid-stream and its address taken over by a new one
//! (what a Service does) loses and duplicates nothing, while the other replica goes on.

use std::time::Duration;

use procflow::codec::EncodedBatch;
use procflow::pipeline::exporter;

use crate::pg::PgServer;
use crate::pipeline::{batch, exporter_config, free_ports, identity, ingest, times_of, Aggregator};

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
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let exporter = runtime.spawn(exporter::run(
        exporter_config(agg.url(), Some(spool.path().to_owned()), 8, 64 << 20),
        rx,
    ));
    let (batches, per_batch) = (200u64, 50u64);
    for seq in 1..=batches {
        tx.blocking_send(EncodedBatch::encode(&batch(
            &id,
            seq,
            seq * per_batch,
            per_batch,
        )))
        .expect("send");
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
            tx.blocking_send(EncodedBatch::encode(&batch(
                id,
                seq,
                seq * per_batch,
                per_batch,
            )))
            .expect("send");
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
