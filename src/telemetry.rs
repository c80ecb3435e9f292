//! The daemons' own telemetry: logging setup (metric names, the Prometheus and health
//! endpoint are added by the pipeline work).

use tracing_subscriber::EnvFilter;

/// Logs go to stderr (stdout carries records with `--output stdout`). `RUST_LOG` filters.
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

// === Metric names (one place; label values come from bounded enums) ===

/// Records dropped because the collector's queue was full.
pub const QUEUE_DROPPED: &str = "procflow_queue_dropped_total";
/// sock_diag messages or datagrams that did not parse (skipped).
pub const SOCKDIAG_MALFORMED: &str = "procflow_sockdiag_malformed_total";
/// Dumps the kernel flagged NLM_F_DUMP_INTR (no vanish inference from them).
pub const SOCKDIAG_DUMP_INTERRUPTED: &str = "procflow_sockdiag_dump_interrupted_total";
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
/// Full dumps run.
pub const SOCKDIAG_DUMPS: &str = "procflow_sockdiag_dumps_total";
/// Dumps that failed (kernel error, receive error).
pub const SOCKDIAG_DUMP_ERRORS: &str = "procflow_sockdiag_dump_errors_total";
/// Time per full dump + flow-table diff.
pub const SOCKDIAG_DUMP_SECONDS: &str = "procflow_sockdiag_dump_seconds";
/// Processes seen starting.
pub const PROCESSES_STARTED: &str = "procflow_processes_started_total";
/// /proc reads denied for lack of ptrace access (exe, cwd, fd).
pub const PROC_PERMISSION_DENIED: &str = "procflow_proc_permission_denied_total";
/// Sockets whose inode was not found in any readable fd table.
pub const ATTRIBUTION_MISSES: &str = "procflow_attribution_misses_total";
/// Live events dropped for a subscriber that fell behind (it gets a gap marker).
pub const SUBSCRIBER_DROPPED: &str = "procflow_subscriber_dropped_total";
/// Requests rejected for a missing or wrong bearer token.
pub const AUTH_REJECTED: &str = "procflow_auth_rejected_total";
/// Batches rejected as invalid.
pub const BATCHES_REJECTED: &str = "procflow_batches_rejected_total";
/// Batches received again (at-least-once delivery) and not stored twice.
pub const BATCHES_DEDUPLICATED: &str = "procflow_batches_deduplicated_total";
/// Records received in valid batches.
pub const RECORDS_RECEIVED: &str = "procflow_records_received_total";
/// Records stored.
pub const RECORDS_STORED: &str = "procflow_records_stored_total";
/// Batches built by the collector's batcher.
pub const BATCHES_BUILT: &str = "procflow_batches_built_total";
/// Records the exporter dropped (spool full, no spool, rejected batches).
pub const EXPORT_RECORDS_DROPPED: &str = "procflow_export_records_dropped_total";
