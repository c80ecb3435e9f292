//! The bounded lock-free queue between the collector's sources and its outputs.
//!
//! A full queue applies backpressure: the sender waits for room as long as the outputs
//! behind the queue can still take records (the stdout writer always can, at its own pace;
//! the exporter can while its memory buffer has room or a spool takes over). Only when the
//! outputs say they cannot ([`Outlet::set_blocked`]: the exporter's memory is full and it
//! has no spool), or the consumer is gone, is a record dropped, counted
//! (`procflow_queue_dropped_total`) and logged once per burst. So a snapshot is written
//! whole whatever the queue's size, and a burst waits instead of losing records.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};

use crate::model::Record;
use crate::telemetry::collector::{QueueDropped, QueueWaited};
use crate::telemetry::InternalEvent;

/// Counters shared by both ends of the queue.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    /// Sends that found the queue full and waited for room (backpressure, no loss).
    pub waited: AtomicU64,
    /// Total time senders spent waiting for room, in microseconds.
    pub waited_us: AtomicU64,
}

/// Whether the outputs behind the queue can still take records. The queue's consumer side
/// hands it to whatever buffers further down (the exporter); senders read it when the
/// queue is full to decide between waiting and dropping.
#[derive(Debug, Clone, Default)]
pub struct Outlet(Arc<OutletState>);

#[derive(Debug, Default)]
struct OutletState {
    blocked: AtomicBool,
    /// Shutdown gave up on a stalled output: no sender waits any more.
    abandoned: AtomicBool,
}

impl Outlet {
    /// Set while nothing downstream can buffer another record (cleared when it can again).
    pub fn set_blocked(&self, blocked: bool) {
        self.0.blocked.store(blocked, Ordering::Relaxed);
    }

    /// Senders stop waiting for good (shutdown with an output that does not drain).
    pub fn abandon(&self) {
        self.0.abandoned.store(true, Ordering::Relaxed);
    }

    /// Whether a sender facing a full queue should wait for room.
    pub fn accepting(&self) -> bool {
        !self.0.blocked.load(Ordering::Relaxed) && !self.0.abandoned.load(Ordering::Relaxed)
    }
}

/// Producer side; cheap to clone, one per source.
#[derive(Debug, Clone)]
pub struct RecordTx {
    tx: Sender<Record>,
    stats: Arc<QueueStats>,
    outlet: Outlet,
}

/// Consumer side, owned by the batcher or the stdout writer.
#[derive(Debug)]
pub struct RecordRx {
    pub rx: Receiver<Record>,
    pub stats: Arc<QueueStats>,
    outlet: Outlet,
}

impl RecordRx {
    /// The handle through which the outputs behind this queue say whether they can buffer.
    pub fn outlet(&self) -> Outlet {
        self.outlet.clone()
    }
}

/// A queue holding at most `capacity` records.
pub fn record_queue(capacity: usize) -> (RecordTx, RecordRx) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let stats = Arc::new(QueueStats::default());
    let outlet = Outlet::default();
    (
        RecordTx {
            tx,
            stats: stats.clone(),
            outlet: outlet.clone(),
        },
        RecordRx { rx, stats, outlet },
    )
}

/// How long one wait for room lasts before the outlet is looked at again.
const WAIT_SLICE: Duration = Duration::from_millis(20);

impl RecordTx {
    /// Enqueues `record`, waiting for room while the outputs can take it. Returns false
    /// when the record was dropped (outputs blocked, or the consumer gone); the drop is
    /// counted.
    pub fn send(&self, record: Record) -> bool {
        let record = match self.tx.try_send(record) {
            Ok(()) => return self.sent(),
            Err(TrySendError::Disconnected(_)) => return self.dropped(),
            Err(TrySendError::Full(record)) => record,
        };
        let started = Instant::now();
        let mut record = record;
        let sent = loop {
            if !self.outlet.accepting() {
                break false;
            }
            match self.tx.send_timeout(record, WAIT_SLICE) {
                Ok(()) => break true,
                Err(SendTimeoutError::Timeout(r)) => record = r,
                Err(SendTimeoutError::Disconnected(_)) => break false,
            }
        };
        self.stats.waited.fetch_add(1, Ordering::Relaxed);
        let waited = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.waited_us.fetch_add(waited, Ordering::Relaxed);
        QueueWaited { micros: waited }.emit();
        if sent {
            self.sent()
        } else {
            self.dropped()
        }
    }

    /// Enqueues without ever waiting: a full queue drops the record (counted).
    pub fn try_send(&self, record: Record) -> bool {
        match self.tx.try_send(record) {
            Ok(()) => self.sent(),
            Err(_) => self.dropped(),
        }
    }

    fn sent(&self) -> bool {
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn dropped(&self) -> bool {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        QueueDropped {
            capacity: self.tx.capacity().unwrap_or(0),
        }
        .emit();
        false
    }

    /// Enqueues every record of `records` (waiting for room as [`RecordTx::send`] does),
    /// leaving it empty (its allocation is reused).
    pub fn send_all(&self, records: &mut Vec<Record>) {
        for record in records.drain(..) {
            self.send(record);
        }
    }

    pub fn stats(&self) -> &QueueStats {
        &self.stats
    }

    /// The outputs' side of this queue (see [`Outlet`]).
    pub fn outlet(&self) -> &Outlet {
        &self.outlet
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Heartbeat;

    fn record() -> Record {
        Record::Heartbeat(Heartbeat::default())
    }

    #[test]
    fn a_full_queue_waits_for_its_consumer_and_loses_nothing() {
        let (tx, rx) = record_queue(2);
        let consumer = std::thread::spawn(move || {
            let mut got = 0;
            // A slow consumer: the sender must wait, not drop.
            while rx.rx.recv().is_ok() {
                got += 1;
                if got % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            got
        });
        let mut records: Vec<Record> = (0..200).map(|_| record()).collect();
        tx.send_all(&mut records);
        let stats = tx.stats.clone();
        drop(tx);
        assert_eq!(consumer.join().expect("consumer"), 200);
        assert_eq!(stats.sent.load(Ordering::Relaxed), 200);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
        assert!(
            stats.waited.load(Ordering::Relaxed) > 0,
            "the queue was full"
        );
    }

    #[test]
    fn a_blocked_outlet_drops_and_counts() {
        let (tx, rx) = record_queue(2);
        rx.outlet().set_blocked(true);
        for _ in 0..5 {
            tx.send(record());
        }
        assert_eq!(rx.stats.sent.load(Ordering::Relaxed), 2);
        assert_eq!(rx.stats.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(rx.rx.try_iter().count(), 2);
        // Room again and the outlet open: nothing more is lost.
        rx.outlet().set_blocked(false);
        assert!(tx.send(record()));
        assert_eq!(rx.stats.dropped.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_waiting_sender_drops_once_the_outlet_blocks() {
        let (tx, rx) = record_queue(1);
        assert!(tx.send(record()));
        let outlet = rx.outlet();
        let blocker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(60));
            outlet.set_blocked(true);
        });
        // Waits (the outlet accepts) until the outputs say they cannot buffer.
        assert!(!tx.send(record()));
        blocker.join().expect("blocker");
        assert!(rx.stats.waited_us.load(Ordering::Relaxed) >= 40_000);
        assert_eq!(rx.stats.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn try_send_never_waits() {
        let (tx, rx) = record_queue(1);
        assert!(tx.try_send(record()));
        assert!(!tx.try_send(record()));
        assert_eq!(rx.stats.dropped.load(Ordering::Relaxed), 1);
    }
}
