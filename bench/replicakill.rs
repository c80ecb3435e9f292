//! `replica-kill` (only when named): two aggregator replicas on one PostgreSQL (a server of
//! scripts/pg.sh, fsync on), collectors streaming to them through a TCP front that stands
//! for the Service (each connection to a replica that accepts it: half the collectors
//! start on A, half on B), and replica A killed with SIGKILL mid-stream. Its collectors
//! reconnect through the front to B and resend what was not acknowledged. Figures: records
//! lost and duplicated (from the database: every batch key and every record counted per
//! collector against what was sent), and the time from the kill until each of A's
//! collectors has a batch stored again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use procflow::codec::EncodedBatch;
use procflow::pipeline::exporter;
use procflow::proto::v1 as pb;
use tokio::net::{TcpListener, TcpStream};

use crate::pgstore::{load_average, Server};
use crate::pipeline::{exporter_config, Aggregator};
use crate::Report;

const COLLECTORS: usize = 8;
const RECORDS_PER_BATCH: u64 = 100;
const BATCH_EVERY: Duration = Duration::from_millis(20);
const RUN: Duration = Duration::from_secs(20);
const KILL_AT: Duration = Duration::from_secs(8);

/// The Service in front of the replicas: connection `n` of collector `i` goes to the first
/// replica that accepts, trying them from `i % replicas` on (so collector `i` starts on
/// replica `i % 2` and moves to the other when its replica is gone).
async fn front(listener: TcpListener, first: usize, backends: Arc<Vec<u16>>) {
    while let Ok((mut client, _)) = listener.accept().await {
        let backends = backends.clone();
        tokio::spawn(async move {
            for k in 0..backends.len() {
                let port = backends[(first + k) % backends.len()];
                if let Ok(mut server) = TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
            }
        });
    }
}

fn heartbeats(id: &pb::CollectorIdentity, seq: u64) -> pb::Batch {
    pb::Batch {
        identity: Some(id.clone()),
        seq,
        sent_at: 0,
        records: (0..RECORDS_PER_BATCH)
            .map(|i| pb::Record {
                kind: Some(pb::record::Kind::Heartbeat(pb::Heartbeat {
                    time: seq * RECORDS_PER_BATCH + i,
                    ..pb::Heartbeat::default()
                })),
            })
            .collect(),
    }
}

pub fn scenario_replica_kill(report: &mut Report) -> anyhow::Result<()> {
    let server = Server::start()?;
    let password = server.password_file();
    let args = [
        "--store",
        &server.url,
        "--store-password-file",
        password.to_str().unwrap_or_default(),
    ];
    let a = Aggregator::start(&args)?;
    let b = Aggregator::start(&args)?;
    let load = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let backends = Arc::new(vec![a.port, b.port]);
    let run_tag = procflow::model::now_ns();
    let mut exporters = Vec::new();
    let mut senders = Vec::new();
    for i in 0..COLLECTORS {
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        runtime.spawn(front(listener, i % 2, backends.clone()));
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        exporters.push(runtime.spawn(exporter::run(exporter_config(&url), rx)));
        let id = pb::CollectorIdentity {
            collector_id: format!("kill-{run_tag}-{i}"),
            pod_name: format!("kill-{i}"),
            pod_namespace: "bench".into(),
            ..pb::CollectorIdentity::default()
        };
        senders.push((id, tx));
    }
    let started = Instant::now();
    let mut killed_at = None;
    let mut seq = 0u64;
    let mut a = Some(a);
    while started.elapsed() < RUN {
        seq += 1;
        for (id, tx) in &senders {
            // Waits when the exporter's memory is full (it is not while the front works).
            tx.blocking_send(EncodedBatch::encode(&heartbeats(id, seq)))?;
        }
        if killed_at.is_none() && started.elapsed() >= KILL_AT {
            if let Some(a) = a.take() {
                a.kill();
            }
            killed_at = Some(procflow::model::now_ns());
        }
        std::thread::sleep(BATCH_EVERY);
    }
    drop(senders);
    for exporter in exporters {
        runtime.block_on(exporter)??;
    }
    let killed_at = killed_at.ok_or_else(|| anyhow::anyhow!("the run ended before the kill"))?;
    b.stop();
    let mut lost = 0i64;
    let mut duplicated = 0i64;
    let mut resumed_ms = Vec::new();
    for i in 0..COLLECTORS {
        let collector = format!("kill-{run_tag}-{i}");
        let batches = server.value(&format!(
            "SELECT count(*) FROM batches WHERE collector = '{collector}'"
        ))? as i64;
        let records = server.value(&format!(
            "SELECT COALESCE(sum(count), 0) FROM segments WHERE collector = '{collector}' AND kind = 'heartbeat'"
        ))? as i64;
        // A batch key is stored once by construction; its records with it, once.
        lost += (seq as i64 - batches).max(0)
            + (seq as i64 * RECORDS_PER_BATCH as i64 - records).max(0);
        duplicated += (records - seq as i64 * RECORDS_PER_BATCH as i64).max(0);
        if i % 2 == 0 {
            let first_after = server.value(&format!(
                "SELECT min(received_at) FROM batches WHERE collector = '{collector}' AND received_at > {killed_at}"
            ))?;
            resumed_ms.push((first_after - killed_at as f64) / 1e6);
        }
    }
    resumed_ms.sort_by(f64::total_cmp);
    let sent = seq * RECORDS_PER_BATCH * COLLECTORS as u64;
    report.add(
        "replica-kill",
        &format!("records lost of {sent} sent ({COLLECTORS} collectors, replica A SIGKILLed)"),
        lost as f64,
        "records",
        Some(("==0", lost == 0)),
    );
    report.add(
        "replica-kill",
        "records stored twice",
        duplicated as f64,
        "records",
        Some(("==0", duplicated == 0)),
    );
    let median = resumed_ms[resumed_ms.len() / 2];
    let max = resumed_ms.last().copied().unwrap_or(f64::NAN);
    report.add(
        "replica-kill",
        "kill → A's collectors streaming to B again: median",
        median,
        "ms",
        None,
    );
    report.add(
        "replica-kill",
        "kill → A's collectors streaming to B again: slowest",
        max,
        "ms",
        None,
    );
    report.add("replica-kill", "load average at start", load, "", None);
    Ok(())
}
