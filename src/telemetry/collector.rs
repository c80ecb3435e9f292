//! The collector's internal events: each counts its metric and, when someone may need to act,
//! logs, sampled where the event can repeat. Call sites say what happened; how it is counted
//! and worded lives here, beside the metric names.

use std::time::Duration;

use super::{InternalEvent, LogSampler};
use crate::model::{Family, Protocol};

// === Metric names ===

/// Half-written spool files (a crash's leftovers) removed when the spool opened.
pub const SPOOL_TEMP_SWEPT: &str = "procflow_spool_temp_files_swept_total";
/// Spool files that could not be read back (torn, damaged): skipped, records counted as dropped.
pub const SPOOL_CORRUPT: &str = "procflow_spool_corrupt_batches_total";
/// Records dropped because the collector's queue was full and its outputs could not buffer
/// more (the exporter's memory buffer full without a spool).
pub const QUEUE_DROPPED: &str = "procflow_queue_dropped_total";
/// Time the collector's sources waited for room in a full queue (backpressure, no loss).
pub const QUEUE_WAIT_MICROS: &str = "procflow_queue_wait_microseconds_total";
/// Batches built by the collector's batcher.
pub const BATCHES_BUILT: &str = "procflow_batches_built_total";
/// Records the exporter dropped (spool full, no spool, rejected batches).
pub const EXPORT_RECORDS_DROPPED: &str = "procflow_export_records_dropped_total";
/// sock_diag messages or datagrams that did not parse (skipped).
pub const SOCKDIAG_MALFORMED: &str = "procflow_sockdiag_malformed_total";
/// Dumps the kernel flagged NLM_F_DUMP_INTR (no vanish inference from them).
pub const SOCKDIAG_DUMP_INTERRUPTED: &str = "procflow_sockdiag_dump_interrupted_total";
/// Full dumps run.
pub const SOCKDIAG_DUMPS: &str = "procflow_sockdiag_dumps_total";
/// Dumps that failed (kernel error, receive error).
pub const SOCKDIAG_DUMP_ERRORS: &str = "procflow_sockdiag_dump_errors_total";
/// Time per full dump + flow-table diff.
pub const SOCKDIAG_DUMP_SECONDS: &str = "procflow_sockdiag_dump_seconds";
/// Single-socket lookups of accepted sockets whose owner was not known yet.
pub const SOCKDIAG_LOOKUPS: &str = "procflow_sockdiag_lookups_total";
/// Reads of /proc/net/packet that failed, and lines of it that did not parse (skipped).
pub const PACKET_TABLE_ERRORS: &str = "procflow_packet_table_errors_total";
/// Destroy events lost by the kernel (ENOBUFS; exact count from SO_MEMINFO).
pub const DESTROY_OVERFLOW_LOST: &str = "procflow_destroy_events_lost_total";
/// Destroy events dropped because the engine's channel was full.
pub const DESTROY_QUEUE_DROPPED: &str = "procflow_destroy_queue_dropped_total";
/// Receive errors on the destroy stream other than ENOBUFS.
pub const DESTROY_RECV_ERRORS: &str = "procflow_destroy_recv_errors_total";
/// Destroy events received.
pub const DESTROY_EVENTS: &str = "procflow_destroy_events_total";
/// Flows ended by disappearance from dumps (their destroy event never came).
pub const FLOWS_ENDED_WITHOUT_EVENT: &str = "procflow_flows_ended_without_event_total";
/// Engine wake-ups by an exec (inotify open of a loader or executable directory).
pub const EXEC_WAKEUPS: &str = "procflow_exec_wakeups_total";
/// Processes seen starting.
pub const PROCESSES_STARTED: &str = "procflow_processes_started_total";
/// /proc reads denied for lack of ptrace access (exe, cwd, fd).
pub const PROC_PERMISSION_DENIED: &str = "procflow_proc_permission_denied_total";
/// Sockets whose inode was not found in any readable fd table.
pub const ATTRIBUTION_MISSES: &str = "procflow_attribution_misses_total";

const EVERY_10S: Duration = Duration::from_secs(10);

// === Output path ===

/// The spool found files an earlier run left half-written and removed them.
pub struct SpoolTempSwept<'a> {
    pub files: usize,
    pub dir: &'a std::path::Path,
}

impl InternalEvent for SpoolTempSwept<'_> {
    fn emit(self) {
        metrics::counter!(SPOOL_TEMP_SWEPT).increment(self.files as u64);
        tracing::warn!(
            files = self.files,
            dir = %self.dir.display(),
            "removed spool files an earlier run left half-written (their batches were never spooled)"
        );
    }
}

/// A spool file did not read back; its records are dropped through [`BatchDropped`].
pub struct SpoolCorrupt;

impl InternalEvent for SpoolCorrupt {
    fn emit(self) {
        metrics::counter!(SPOOL_CORRUPT).increment(1);
    }
}

/// The batcher encoded a batch.
pub struct BatchBuilt;

impl InternalEvent for BatchBuilt {
    fn emit(self) {
        metrics::counter!(BATCHES_BUILT).increment(1);
    }
}

/// The exporter gave up on a batch (spool full, no spool, rejected, unreadable).
pub struct BatchDropped<'a> {
    pub seq: u64,
    pub records: u64,
    pub why: &'a str,
}

static BATCH_DROPS: LogSampler = LogSampler::new(5, EVERY_10S);

impl InternalEvent for BatchDropped<'_> {
    fn emit(self) {
        metrics::counter!(EXPORT_RECORDS_DROPPED).increment(self.records);
        if let Some(held_back) = BATCH_DROPS.sample() {
            tracing::warn!(
                seq = self.seq,
                records = self.records,
                why = self.why,
                held_back,
                "dropped a batch (sampled; all counted in procflow_export_records_dropped_total)"
            );
        }
    }
}

/// A source waited for room in the full record queue (backpressure: nothing lost).
pub struct QueueWaited {
    pub micros: u64,
}

impl InternalEvent for QueueWaited {
    fn emit(self) {
        metrics::counter!(QUEUE_WAIT_MICROS).increment(self.micros);
    }
}

/// A record was dropped: the queue was full and the outputs could not buffer more.
pub struct QueueDropped {
    pub capacity: usize,
}

static QUEUE_DROPS: LogSampler = LogSampler::new(1, EVERY_10S);

impl InternalEvent for QueueDropped {
    fn emit(self) {
        metrics::counter!(QUEUE_DROPPED).increment(1);
        if let Some(held_back) = QUEUE_DROPS.sample() {
            tracing::warn!(
                capacity = self.capacity,
                held_back,
                "record queue full and its outputs cannot buffer more: dropping records (sampled; all counted in procflow_queue_dropped_total)"
            );
        }
    }
}

// === Sockets ===

/// A sock_diag datagram, message or destroy event did not parse and was skipped.
pub struct SockdiagMalformed<'a> {
    pub what: &'static str,
    pub error: &'a dyn std::fmt::Display,
    pub family: Option<Family>,
    pub protocol: Option<Protocol>,
}

static MALFORMED: LogSampler = LogSampler::new(5, EVERY_10S);

impl InternalEvent for SockdiagMalformed<'_> {
    fn emit(self) {
        metrics::counter!(SOCKDIAG_MALFORMED).increment(1);
        if let Some(held_back) = MALFORMED.sample() {
            tracing::warn!(error = %self.error, family = ?self.family, protocol = ?self.protocol,
                held_back, "skipping malformed sock_diag {} (sampled; all counted)", self.what);
        }
    }
}

/// The kernel flagged a dump as interrupted (nothing is concluded from its absences).
pub struct DumpInterrupted;

impl InternalEvent for DumpInterrupted {
    fn emit(self) {
        metrics::counter!(SOCKDIAG_DUMP_INTERRUPTED).increment(1);
    }
}

/// A full dump and its flow-table diff finished.
pub struct DumpFinished {
    pub elapsed: Duration,
}

impl InternalEvent for DumpFinished {
    fn emit(self) {
        metrics::counter!(SOCKDIAG_DUMPS).increment(1);
        metrics::histogram!(SOCKDIAG_DUMP_SECONDS).record(self.elapsed.as_secs_f64());
    }
}

/// A full dump failed (what it saw before failing is kept).
pub struct DumpFailed<'a> {
    pub error: &'a dyn std::fmt::Display,
    pub elapsed: Duration,
}

static DUMP_FAILURES: LogSampler = LogSampler::new(5, EVERY_10S);

impl InternalEvent for DumpFailed<'_> {
    fn emit(self) {
        metrics::counter!(SOCKDIAG_DUMP_ERRORS).increment(1);
        metrics::histogram!(SOCKDIAG_DUMP_SECONDS).record(self.elapsed.as_secs_f64());
        if let Some(held_back) = DUMP_FAILURES.sample() {
            tracing::warn!(error = %self.error, held_back, "sock_diag dump failed (sampled; all counted)");
        }
    }
}

/// Accepted sockets looked up one by one because their owner was not known yet.
pub struct SocketsLookedUp {
    pub sockets: u64,
}

impl InternalEvent for SocketsLookedUp {
    fn emit(self) {
        metrics::counter!(SOCKDIAG_LOOKUPS).increment(self.sockets);
    }
}

/// A read of /proc/net/packet failed, or lines of it did not parse: the packet sockets they
/// list are not reported (and none is ended by a failed read).
pub struct PacketTableUnread<'a> {
    pub errors: u64,
    pub what: &'a dyn std::fmt::Display,
}

static PACKET_TABLE_FAILURES: LogSampler = LogSampler::new(3, EVERY_10S);

impl InternalEvent for PacketTableUnread<'_> {
    fn emit(self) {
        metrics::counter!(PACKET_TABLE_ERRORS).increment(self.errors);
        if let Some(held_back) = PACKET_TABLE_FAILURES.sample() {
            tracing::warn!(errors = self.errors, what = %self.what, held_back, "/proc/net/packet: not read whole (sampled; all counted)");
        }
    }
}

/// The kernel lost destroy events (ENOBUFS); the destroy reader logs them in summaries.
pub struct DestroyEventsLost {
    pub lost: u64,
}

impl InternalEvent for DestroyEventsLost {
    fn emit(self) {
        metrics::counter!(DESTROY_OVERFLOW_LOST).increment(self.lost);
    }
}

/// Receiving from the destroy stream failed (other than ENOBUFS).
pub struct DestroyReceiveFailed<'a> {
    pub error: &'a std::io::Error,
}

static DESTROY_RECV_FAILURES: LogSampler = LogSampler::new(5, EVERY_10S);

impl InternalEvent for DestroyReceiveFailed<'_> {
    fn emit(self) {
        metrics::counter!(DESTROY_RECV_ERRORS).increment(1);
        if let Some(held_back) = DESTROY_RECV_FAILURES.sample() {
            tracing::error!(error = %self.error, held_back, "destroy-event stream: receive failed (sampled; all counted)");
        }
    }
}

/// A destroy event arrived.
pub struct DestroyEventReceived;

impl InternalEvent for DestroyEventReceived {
    fn emit(self) {
        metrics::counter!(DESTROY_EVENTS).increment(1);
    }
}

/// A destroy event was dropped because the engine's channel was full.
pub struct DestroyEventDropped;

static DESTROY_DROPS: LogSampler = LogSampler::new(1, EVERY_10S);

impl InternalEvent for DestroyEventDropped {
    fn emit(self) {
        metrics::counter!(DESTROY_QUEUE_DROPPED).increment(1);
        if let Some(held_back) = DESTROY_DROPS.sample() {
            tracing::warn!(
                held_back,
                "destroy-event queue full: dropping events (sampled; all counted; flows end by disappearance instead)"
            );
        }
    }
}

/// A flow ended because it vanished from the dumps (its destroy event never came).
pub struct FlowEndedWithoutEvent;

impl InternalEvent for FlowEndedWithoutEvent {
    fn emit(self) {
        metrics::counter!(FLOWS_ENDED_WITHOUT_EVENT).increment(1);
    }
}

// === Processes ===

/// An exec woke the engine between ticks.
pub struct ExecWakeup;

impl InternalEvent for ExecWakeup {
    fn emit(self) {
        metrics::counter!(EXEC_WAKEUPS).increment(1);
    }
}

/// A process was seen starting.
pub struct ProcessStarted;

impl InternalEvent for ProcessStarted {
    fn emit(self) {
        metrics::counter!(PROCESSES_STARTED).increment(1);
    }
}

/// A /proc read (exe, cwd, fd) was denied for lack of ptrace access: expected without
/// SYS_PTRACE for other users' processes, so counted and not logged.
pub struct ProcReadDenied;

impl InternalEvent for ProcReadDenied {
    fn emit(self) {
        metrics::counter!(PROC_PERMISSION_DENIED).increment(1);
    }
}

/// A socket's inode was in no readable fd table.
pub struct AttributionMissed;

impl InternalEvent for AttributionMissed {
    fn emit(self) {
        metrics::counter!(ATTRIBUTION_MISSES).increment(1);
    }
}
