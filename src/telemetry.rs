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

// === Sampled logging ===

/// A log line that a client can provoke at will (a wrong credential, a forged batch) is
/// written for the first `burst` occurrences of each `period` and then held back; the next
/// line written says how many were. The counter beside it counts them all.
pub struct LogSampler {
    burst: u64,
    period_ms: u64,
    window: std::sync::atomic::AtomicU64,
    seen: std::sync::atomic::AtomicU64,
}

impl LogSampler {
    pub const fn new(burst: u64, period: std::time::Duration) -> LogSampler {
        LogSampler {
            burst,
            period_ms: period.as_millis() as u64,
            window: std::sync::atomic::AtomicU64::new(0),
            seen: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last line written)` when this occurrence is to be logged.
    pub fn sample(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now_ms = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64;
        // Window numbers start at 1 so the first call opens a window.
        let window = now_ms / self.period_ms.max(1) + 1;
        if self.window.swap(window, Relaxed) != window {
            let before = self.seen.swap(1, Relaxed);
            return Some(before.saturating_sub(self.burst));
        }
        let n = self.seen.fetch_add(1, Relaxed) + 1;
        (n <= self.burst).then_some(0)
    }
}

// === Metric names (one place; label values come from bounded enums) ===

/// Half-written spool files (a crash's leftovers) removed when the spool opened.
pub const SPOOL_TEMP_SWEPT: &str = "procflow_spool_temp_files_swept_total";
/// Spool files that could not be read back (torn, damaged): skipped, records counted as dropped.
pub const SPOOL_CORRUPT: &str = "procflow_spool_corrupt_batches_total";
/// Records dropped because the collector's queue was full and its outputs could not buffer
/// more (the exporter's memory buffer full without a spool).
pub const QUEUE_DROPPED: &str = "procflow_queue_dropped_total";
/// Time the collector's sources waited for room in a full queue (backpressure, no loss).
pub const QUEUE_WAIT_MICROS: &str = "procflow_queue_wait_microseconds_total";
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
/// Single-socket lookups of accepted sockets whose owner was not known yet.
pub const SOCKDIAG_LOOKUPS: &str = "procflow_sockdiag_lookups_total";
/// Dumps that failed (kernel error, receive error).
pub const SOCKDIAG_DUMP_ERRORS: &str = "procflow_sockdiag_dump_errors_total";
/// Time per full dump + flow-table diff.
pub const SOCKDIAG_DUMP_SECONDS: &str = "procflow_sockdiag_dump_seconds";
/// Engine wake-ups by an exec (inotify open of a loader or executable directory).
pub const EXEC_WAKEUPS: &str = "procflow_exec_wakeups_total";
/// Processes seen starting.
pub const PROCESSES_STARTED: &str = "procflow_processes_started_total";
/// /proc reads denied for lack of ptrace access (exe, cwd, fd).
pub const PROC_PERMISSION_DENIED: &str = "procflow_proc_permission_denied_total";
/// Sockets whose inode was not found in any readable fd table.
pub const ATTRIBUTION_MISSES: &str = "procflow_attribution_misses_total";
/// Live events dropped for a subscriber that fell behind (it gets a gap marker).
pub const SUBSCRIBER_DROPPED: &str = "procflow_subscriber_dropped_total";
/// Peer links (to other replicas) currently streaming into subscriptions.
pub const PEER_LINKS: &str = "procflow_peer_links";
/// Peer links that failed or broke (relinked while the peer is resolved).
pub const PEER_LINK_ERRORS: &str = "procflow_peer_link_errors_total";
/// Resolving the --peers names failed (the last set stays).
pub const PEER_LOOKUP_ERRORS: &str = "procflow_peer_lookup_errors_total";
/// Events received from peers for local subscribers.
pub const PEER_EVENTS: &str = "procflow_peer_events_total";
/// Events from a peer outside the subscriber's namespaces, never shown.
pub const PEER_OUT_OF_SCOPE: &str = "procflow_peer_out_of_scope_total";
/// Shared rule state (alert groups, learned values) the store could not read or write: the
/// replica decided alone, counted.
pub const SHARED_STATE_ERRORS: &str = "procflow_shared_rule_state_errors_total";
/// Requests rejected for a missing, empty, wrong or expired credential.
pub const AUTH_REJECTED: &str = "procflow_auth_rejected_total";
/// Console sign-ins refused (wrong or empty credential).
pub const CONSOLE_SIGNIN_REJECTED: &str = "procflow_console_signin_rejected_total";
/// Console pages that failed reading the store.
pub const CONSOLE_PAGE_ERRORS: &str = "procflow_console_page_errors_total";
/// Console pages refused because too many were being computed at once.
pub const CONSOLE_BUSY: &str = "procflow_console_busy_total";
/// Requests with a valid credential that may not do what they asked (a reader writing, a
/// writer reading, a viewer outside its namespaces, a batch claiming another identity).
pub const AUTH_DENIED: &str = "procflow_auth_denied_total";
/// Collectors found silenced (stream broken without goodbye, or heartbeats stopped): alerts.
pub const COLLECTORS_SILENCED: &str = "procflow_collectors_silenced_total";
/// Ingest streams ended because a batch claimed another identity or carried alerts.
pub const INGEST_DENIED: &str = "procflow_ingest_denied_total";
/// Readers file reloads, and reloads that failed (the previous readers stay in force).
pub const READERS_RELOADS: &str = "procflow_readers_reloads_total";
pub const READERS_RELOAD_FAILURES: &str = "procflow_readers_reload_failures_total";
/// Changes of the cluster issuer's signing keys, and failed refreshes.
pub const ISSUER_KEY_REFRESHES: &str = "procflow_issuer_key_refreshes_total";
pub const ISSUER_KEY_REFRESH_FAILURES: &str = "procflow_issuer_key_refresh_failures_total";
/// Requests refused (or a query's answer cut short) by an admission bound (label `limit`:
/// ingest_streams, subscribers, reads, query_limit, filter_values, query_timeout).
pub const ADMISSION_REFUSED: &str = "procflow_admission_refused_total";
/// Ingest batches that waited for room under `--max-records-in-flight`.
pub const INGEST_ADMISSION_WAITS: &str = "procflow_ingest_admission_waits_total";
/// Records decoded by ingest and not yet stored (bounded by `--max-records-in-flight`).
pub const INGEST_RECORDS_IN_FLIGHT: &str = "procflow_ingest_records_in_flight";
/// Batches rejected as invalid.
pub const BATCHES_REJECTED: &str = "procflow_batches_rejected_total";
/// Batches received again (at-least-once delivery) and not stored twice.
pub const BATCHES_DEDUPLICATED: &str = "procflow_batches_deduplicated_total";
/// Records received in valid batches.
pub const RECORDS_RECEIVED: &str = "procflow_records_received_total";
/// Records stored.
pub const RECORDS_STORED: &str = "procflow_records_stored_total";
/// Segments (stored events of one batch, kind and source) deleted to keep the store under
/// its size bound.
pub const STORE_SEGMENTS_TRIMMED: &str = "procflow_store_segments_trimmed_total";
/// Records that arrived already older than the store's retention (audit events keep the
/// API server's time) and were not kept.
pub const STORE_EXPIRED_ON_ARRIVAL: &str = "procflow_store_expired_on_arrival_total";
/// Reads of the store that failed (a damaged page, an I/O error); each is logged with its range.
pub const STORE_READ_ERRORS: &str = "procflow_store_read_errors_total";
/// Batches built by the collector's batcher.
pub const BATCHES_BUILT: &str = "procflow_batches_built_total";
/// Records the exporter dropped (spool full, no spool, rejected batches).
pub const EXPORT_RECORDS_DROPPED: &str = "procflow_export_records_dropped_total";
/// Records stored but not evaluated by the rules (detection queue full or stopped).
pub const DETECT_DROPPED: &str = "procflow_detect_dropped_total";
/// Records stored and waiting for the detection rules (bounded; beyond, dropped and counted).
pub const DETECT_QUEUED: &str = "procflow_detect_queued_records";
/// Records evaluated by the detection rules.
pub const RULES_EVALUATED: &str = "procflow_rules_evaluated_total";
/// Alerts raised (first of a group, then grouped repeats at the re-emit interval).
pub const ALERTS_RAISED: &str = "procflow_alerts_raised_total";
/// Alerts the store could not keep (still published and delivered).
pub const ALERTS_UNSTORED: &str = "procflow_alerts_unstored_total";
/// Alerts delivered to an output (label `output`).
pub const ALERTS_DELIVERED: &str = "procflow_alerts_delivered_total";
/// Alerts an output dropped after its retries or because its queue was full (label `output`).
pub const ALERTS_DROPPED: &str = "procflow_alerts_dropped_total";
/// Successful rule reloads.
pub const RULE_RELOADS: &str = "procflow_rule_reloads_total";
/// Failed rule reloads (the previous set stays in force).
pub const RULE_RELOAD_FAILURES: &str = "procflow_rule_reload_failures_total";
/// Rule-state files found corrupt at start, set aside (the rules started fresh).
pub const RULE_STATE_QUARANTINED: &str = "procflow_rule_state_quarantined_total";
/// Keys of stateful rules not tracked because a rule reached its bound.
pub const RULE_STATE_KEYS_REFUSED: &str = "procflow_rule_state_keys_refused";

// --- Kubernetes audit (labels: `adapter` webhook|firehose, `outcome`, `reason`) ---

/// Audit requests answered, by adapter and outcome (ok, unauthorized, too_large, invalid,
/// busy, store_error, replayed).
pub const AUDIT_REQUESTS: &str = "procflow_audit_requests_total";
/// Audit events stored (first delivery of their cluster, audit ID, stage and time).
pub const AUDIT_EVENTS_STORED: &str = "procflow_audit_events_stored_total";
/// Audit events delivered again and not stored twice.
pub const AUDIT_EVENTS_DUPLICATE: &str = "procflow_audit_events_duplicate_total";
/// Audit events (or Firehose records) that did not decode, each logged with its reason.
pub const AUDIT_EVENTS_REJECTED: &str = "procflow_audit_events_rejected_total";
/// Client-controlled audit fields cut to their bound or left out (long user agents, bad
/// forwarded addresses).
pub const AUDIT_FIELDS_REPAIRED: &str = "procflow_audit_fields_repaired_total";
/// Pod, workload or RBAC bodies in audit events that did not read (their facts absent).
pub const AUDIT_BODIES_UNREADABLE: &str = "procflow_audit_bodies_unreadable_total";
/// Firehose log events skipped: `reason` control_message or other_stream.
pub const AUDIT_RECORDS_SKIPPED: &str = "procflow_audit_records_skipped_total";
/// Exec requests joined with the process tree they started.
pub const AUDIT_EXEC_JOINED: &str = "procflow_audit_exec_joined_total";
/// Exec requests with no process joined (`reason`: no_process, ambiguous, pod_not_watched,
/// no_command).
pub const AUDIT_EXEC_UNMATCHED: &str = "procflow_audit_exec_unmatched_total";
/// Join state dropped at its bound (pending requests, candidate processes, linked trees).
pub const AUDIT_JOIN_EVICTED: &str = "procflow_audit_join_evicted_total";

// === Prometheus + health endpoint ===

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("installing the metrics recorder: {0}")]
    Recorder(#[from] metrics_exporter_prometheus::BuildError),
    #[error("metrics endpoint {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics endpoint thread: {0}")]
    Thread(std::io::Error),
}

/// Serves `GET /metrics` (Prometheus text), `/healthz` (alive) and `/readyz` (ready once
/// `ready` is set) over a deliberately tiny HTTP/1.1 implementation: one request per
/// connection, bounded request size, no body.
pub struct HealthServer {
    handle: metrics_exporter_prometheus::PrometheusHandle,
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HealthServer {
    /// Installs the global Prometheus recorder (once per process).
    pub fn install() -> Result<HealthServer, HealthError> {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
        Ok(HealthServer {
            handle,
            ready: Default::default(),
        })
    }

    pub fn ready_flag(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.ready.clone()
    }

    /// Accepts connections until the process exits.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let handle = self.handle.clone();
            let ready = self.ready.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let n = match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    stream.read(&mut buf),
                )
                .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let path = std::str::from_utf8(&buf[..n])
                    .ok()
                    .and_then(|req| req.split_whitespace().nth(1))
                    .unwrap_or("");
                let (status, body) = match path {
                    "/metrics" => ("200 OK", handle.render()),
                    "/healthz" => ("200 OK", "ok\n".to_owned()),
                    "/readyz" if ready.load(std::sync::atomic::Ordering::Relaxed) => {
                        ("200 OK", "ready\n".to_owned())
                    }
                    "/readyz" => ("503 Service Unavailable", "starting\n".to_owned()),
                    _ => ("404 Not Found", "not found\n".to_owned()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    }
}

/// Starts the endpoint on its own thread when `listen` is set; returns the ready flag.
pub fn start_health_endpoint(
    listen: Option<std::net::SocketAddr>,
) -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>, HealthError> {
    let Some(addr) = listen else {
        return Ok(Default::default());
    };
    let server = HealthServer::install()?;
    let ready = server.ready_flag();
    let listen_error = |source| HealthError::Listen { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(listen_error)?;
    std_listener.set_nonblocking(true).map_err(listen_error)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(error) => {
                    tracing::error!(%error, "metrics endpoint runtime");
                    return;
                }
            };
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(listener) => server.serve(listener).await,
                    Err(error) => tracing::error!(%error, "metrics endpoint"),
                }
            });
        })
        .map_err(HealthError::Thread)?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    Ok(ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_a_burst_at_a_time_and_the_rest_is_reported_held_back() {
        let sampler = LogSampler::new(3, std::time::Duration::from_secs(3600));
        let logged: Vec<Option<u64>> = (0..1000).map(|_| sampler.sample()).collect();
        assert_eq!(logged.iter().filter(|l| l.is_some()).count(), 3);
        assert_eq!(&logged[..4], &[Some(0), Some(0), Some(0), None]);
        let short = LogSampler::new(1, std::time::Duration::from_millis(1));
        assert_eq!(short.sample(), Some(0));
        for _ in 0..9 {
            short.sample();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        // The first line of the next window says how many were held back (at most the 9).
        assert!(short.sample().is_some_and(|held| held <= 9));
    }
}
