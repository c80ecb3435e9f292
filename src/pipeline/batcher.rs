//! The batcher: drains the record queue by size or time, whichever comes first, encodes
//! records into a protobuf `Batch` with a strictly increasing sequence number, and hands it
//! to the exporter. One buffer is reused; telemetry is per batch, never per record.

use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use tokio::sync::mpsc;

use crate::model::{now_ns, CollectorIdentity};
use crate::pipeline::RecordRx;
use crate::proto::v1 as pb;
use crate::telemetry;
use crate::wire;

#[derive(Debug, Clone)]
pub struct BatcherConfig {
    pub max_records: usize,
    pub max_delay: Duration,
}

/// Runs until every record sender is gone; then flushes and closes `out`.
pub fn run(
    config: BatcherConfig,
    identity: CollectorIdentity,
    rx: RecordRx,
    out: mpsc::Sender<pb::Batch>,
) {
    let identity = wire::identity_to_proto(&identity);
    let mut seq = 0u64;
    let mut records: Vec<pb::Record> = Vec::with_capacity(config.max_records);
    let mut deadline: Option<Instant> = None;
    loop {
        let timeout = deadline.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        let (flush, closed) = match rx.rx.recv_timeout(timeout) {
            Ok(record) => {
                if records.is_empty() {
                    deadline = Some(Instant::now() + config.max_delay);
                }
                records.push(wire::record_to_proto(&record));
                // Drain what is already queued without waking again.
                while records.len() < config.max_records {
                    match rx.rx.try_recv() {
                        Ok(r) => records.push(wire::record_to_proto(&r)),
                        Err(_) => break,
                    }
                }
                (records.len() >= config.max_records, false)
            }
            Err(RecvTimeoutError::Timeout) => (true, false),
            Err(RecvTimeoutError::Disconnected) => (true, true),
        };
        if flush && !records.is_empty() {
            seq += 1;
            let batch = pb::Batch {
                identity: Some(identity.clone()),
                seq,
                sent_at: now_ns(),
                records: std::mem::replace(&mut records, Vec::with_capacity(config.max_records)),
            };
            metrics::counter!(telemetry::BATCHES_BUILT).increment(1);
            if out.blocking_send(batch).is_err() {
                tracing::error!("exporter stopped; batcher exits");
                return;
            }
            deadline = None;
        }
        if closed {
            return;
        }
    }
}

/// The collector's identity from the downward API (`POD_NAME`, `POD_NAMESPACE`, `POD_UID`,
/// `POD_IP`, `NODE_NAME`), with a collector id unique to this run, so that sequence numbers
/// restarting at 1 can never collide with an earlier run's.
pub fn identity_from_env() -> CollectorIdentity {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let pod_name = Some(var("POD_NAME"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| host.clone());
    let base = Some(var("POD_UID"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| pod_name.clone());
    CollectorIdentity {
        collector_id: format!("{base}/{:016x}", fastrand::u64(..)),
        pod_name,
        pod_namespace: var("POD_NAMESPACE"),
        pod_uid: var("POD_UID"),
        pod_ip: var("POD_IP"),
        node_name: var("NODE_NAME"),
        container_images: var("PROCFLOW_CONTAINER_IMAGES")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}
