//! The batcher: drains the record queue by size or time, whichever comes first, encodes
//! records into a protobuf `Batch` with a strictly increasing sequence number, and hands it
//! to the exporter. Telemetry is per batch, never per record. Each record is encoded into
//! the batch's bytes as it arrives (`wire::direct`, no generated structs) and the batch's
//! other fields are appended at the flush (protobuf fields may come in any order), so no
//! batch of decoded records is ever held or moved.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use crossbeam_channel::RecvTimeoutError;
use tokio::sync::mpsc;

use crate::codec::EncodedBatch;
use crate::codec::BATCH_RECORDS_FIELD;
use crate::model::{now_ns, CollectorIdentity};
use crate::pipeline::RecordRx;
use crate::proto::v1 as pb;
use crate::telemetry::collector::BatchBuilt;
use crate::telemetry::InternalEvent;
use crate::wire::{self, direct};

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
    out: mpsc::Sender<EncodedBatch>,
) {
    let identity = wire::identity_to_proto(&identity);
    let mut seq = 0u64;
    let mut body = BytesMut::new();
    let mut scratch = direct::Scratch::default();
    let mut add = |body: &mut BytesMut, record: &crate::model::Record| {
        direct::put_record_field(body, BATCH_RECORDS_FIELD, record, &mut scratch);
    };
    // The last batch's size: the next one is likely alike, so its buffer grows once.
    let mut last_batch_bytes = 0usize;
    let mut records = 0usize;
    let mut deadline: Option<Instant> = None;
    loop {
        let timeout = deadline.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        let (flush, closed) = match rx.rx.recv_timeout(timeout) {
            Ok(record) => {
                if records == 0 {
                    deadline = Some(Instant::now() + config.max_delay);
                    body.reserve(last_batch_bytes);
                }
                add(&mut body, &record);
                records += 1;
                // Drain what is already queued without waking again.
                while records < config.max_records {
                    match rx.rx.try_recv() {
                        Ok(r) => {
                            add(&mut body, &r);
                            records += 1;
                        }
                        Err(_) => break,
                    }
                }
                (records >= config.max_records, false)
            }
            Err(RecvTimeoutError::Timeout) => (true, false),
            Err(RecvTimeoutError::Disconnected) => (true, true),
        };
        if flush && records > 0 {
            seq += 1;
            let header = pb::Batch {
                identity: Some(identity.clone()),
                seq,
                sent_at: now_ns(),
                records: Vec::new(),
            };
            prost::Message::encode_raw(&header, &mut body);
            last_batch_bytes = body.len();
            let batch = EncodedBatch {
                seq,
                records: std::mem::take(&mut records),
                bytes: body.split().freeze(),
            };
            BatchBuilt.emit();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FlowRecord, Record};
    use prost::Message;

    #[test]
    fn batches_decode_with_their_records_in_order_and_header() {
        let (tx, rx) = crate::pipeline::record_queue(64);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        let identity = CollectorIdentity {
            collector_id: "c1".into(),
            pod_name: "pod".into(),
            ..CollectorIdentity::default()
        };
        let config = BatcherConfig {
            max_records: 3,
            max_delay: Duration::from_millis(50),
        };
        let batcher = std::thread::spawn(move || run(config, identity, rx, out_tx));
        for cookie in 0..5u64 {
            tx.send(Record::Flow(FlowRecord {
                local_addr: std::net::IpAddr::from([10, 0, 0, 1]),
                ..crate::fixtures::flow(cookie)
            }));
        }
        drop(tx);
        batcher.join().expect("batcher");
        let mut cookies = Vec::new();
        let mut seqs = Vec::new();
        while let Ok(encoded) = out_rx.try_recv() {
            let batch = pb::Batch::decode(encoded.bytes.clone()).expect("decodes");
            assert_eq!(
                (batch.seq, batch.records.len()),
                (encoded.seq, encoded.records)
            );
            assert_eq!(batch.identity.expect("identity").collector_id, "c1");
            seqs.push(batch.seq);
            for record in batch.records {
                match record.kind {
                    Some(pb::record::Kind::Flow(f)) => {
                        assert_eq!(f.local_addr, "10.0.0.1");
                        cookies.push(f.cookie);
                    }
                    other => panic!("not a flow: {other:?}"),
                }
            }
        }
        assert_eq!(cookies, vec![0, 1, 2, 3, 4]);
        assert_eq!(seqs, vec![1, 2]);
    }
}
