//! The bounded lock-free queue between the collector's sources and its batcher.
//!
//! Sources never block on the pipeline: when the queue is full the record is dropped,
//! counted (`procflow_queue_dropped_total`) and logged once per burst.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::model::Record;

/// Counters shared by both ends of the queue.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    warned: AtomicBool,
}

/// Producer side; cheap to clone, one per source.
#[derive(Debug, Clone)]
pub struct RecordTx {
    tx: Sender<Record>,
    stats: Arc<QueueStats>,
}

/// Consumer side, owned by the batcher.
#[derive(Debug)]
pub struct RecordRx {
    pub rx: Receiver<Record>,
    pub stats: Arc<QueueStats>,
}

/// A queue holding at most `capacity` records.
pub fn record_queue(capacity: usize) -> (RecordTx, RecordRx) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let stats = Arc::new(QueueStats::default());
    (
        RecordTx {
            tx,
            stats: stats.clone(),
        },
        RecordRx { rx, stats },
    )
}

impl RecordTx {
    /// Enqueues without blocking. Returns false when the record was dropped (queue full or
    /// consumer gone); the drop is counted.
    pub fn send(&self, record: Record) -> bool {
        match self.tx.try_send(record) {
            Ok(()) => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                self.stats.warned.store(false, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::telemetry::QUEUE_DROPPED).increment(1);
                if !self.stats.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        capacity = self.tx.capacity().unwrap_or(0),
                        "record queue full: dropping records (counted in procflow_queue_dropped_total)"
                    );
                }
                false
            }
        }
    }

    /// Enqueues every record of `records`, leaving it empty (its allocation is reused).
    pub fn send_all(&self, records: &mut Vec<Record>) {
        for record in records.drain(..) {
            self.send(record);
        }
    }

    pub fn stats(&self) -> &QueueStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Heartbeat;

    #[test]
    fn full_queue_drops_and_counts() {
        let (tx, rx) = record_queue(2);
        for _ in 0..5 {
            tx.send(Record::Heartbeat(Heartbeat::default()));
        }
        assert_eq!(rx.stats.sent.load(Ordering::Relaxed), 2);
        assert_eq!(rx.stats.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(rx.rx.try_iter().count(), 2);
    }
}
