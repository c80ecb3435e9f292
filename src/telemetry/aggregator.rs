//! The aggregator's internal events (ingest, store, detection, outputs, readers, console,
//! audit): each counts its metric and, when someone may need to act, logs, sampled wherever a
//! client can provoke it at will. Label values come from bounded sets.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use super::{InternalEvent, LogSampler};

// === Metric names ===

/// Live events dropped for a subscriber that fell behind (it gets a gap marker).
pub const SUBSCRIBER_DROPPED: &str = "procflow_subscriber_dropped_total";
/// Requests rejected for a missing, empty, wrong or expired credential.
pub const AUTH_REJECTED: &str = "procflow_auth_rejected_total";
/// Requests with a valid credential that may not do what they asked (a reader writing, a
/// writer reading, a viewer outside its namespaces, a batch claiming another identity).
pub const AUTH_DENIED: &str = "procflow_auth_denied_total";
/// Console sign-ins refused (wrong or empty credential).
pub const CONSOLE_SIGNIN_REJECTED: &str = "procflow_console_signin_rejected_total";
/// Console pages that failed reading the store.
pub const CONSOLE_PAGE_ERRORS: &str = "procflow_console_page_errors_total";
/// Console pages refused because too many were being computed at once.
pub const CONSOLE_BUSY: &str = "procflow_console_busy_total";
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
/// Ingest streams the client left (reset, or its connection closed): no batch was refused.
pub const INGEST_STREAMS_HUNG_UP: &str = "procflow_ingest_streams_hung_up_total";
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
/// Pipes (and filter links between them) the rules forgot at their per-source bound.
pub const RULE_PIPES_FORGOTTEN: &str = "procflow_rule_pipes_forgotten_total";
/// Processes' incident trees the rules forgot at their bound (least recently joined first).
pub const RULE_TREES_FORGOTTEN: &str = "procflow_rule_incident_trees_forgotten_total";

const EVERY_10S: Duration = Duration::from_secs(10);

// === Credentials and admission ===

/// A request refused for its credential (`denied: false`: missing, wrong, expired) or for
/// what it asked (`denied: true`).
pub struct RequestRefused<'a> {
    pub denied: bool,
    pub peer: Option<SocketAddr>,
    pub principal: &'a str,
    pub status: &'a tonic::Status,
}

static REFUSALS: LogSampler = LogSampler::new(5, EVERY_10S);

impl InternalEvent for RequestRefused<'_> {
    fn emit(self) {
        let metric = if self.denied {
            AUTH_DENIED
        } else {
            AUTH_REJECTED
        };
        metrics::counter!(metric).increment(1);
        if let Some(held_back) = REFUSALS.sample() {
            tracing::warn!(peer = ?self.peer, principal = self.principal, code = ?self.status.code(),
                why = self.status.message(), held_back, "refused a request (sampled; all are counted)");
        }
    }
}

/// An admission bound refused a request (`limit` names it; one log sampler per limit).
pub struct AdmissionRefused<'a> {
    pub limit: &'static str,
    pub sampler: &'a LogSampler,
    pub identity: &'a str,
    pub reason: &'a str,
}

impl InternalEvent for AdmissionRefused<'_> {
    fn emit(self) {
        metrics::counter!(ADMISSION_REFUSED, "limit" => self.limit).increment(1);
        if let Some(unlogged) = self.sampler.sample() {
            tracing::warn!(
                limit = self.limit,
                identity = self.identity,
                unlogged,
                reason = self.reason,
                "admission refused a request"
            );
        }
    }
}

/// An ingest batch waited for room under `--max-records-in-flight`.
pub struct IngestAdmissionWaited;

impl InternalEvent for IngestAdmissionWaited {
    fn emit(self) {
        metrics::counter!(INGEST_ADMISSION_WAITS).increment(1);
    }
}

/// Records decoded and not yet stored, now.
pub struct RecordsInFlight {
    pub records: usize,
}

impl InternalEvent for RecordsInFlight {
    fn emit(self) {
        metrics::gauge!(INGEST_RECORDS_IN_FLIGHT).set(self.records as f64);
    }
}

/// The issuer's signing keys changed.
pub struct IssuerKeysChanged;

impl InternalEvent for IssuerKeysChanged {
    fn emit(self) {
        metrics::counter!(ISSUER_KEY_REFRESHES).increment(1);
    }
}

/// Loading the issuer's keys failed; `at_start`: none are loaded yet.
pub struct IssuerKeysFailed<'a> {
    pub error: &'a dyn Display,
    pub at_start: bool,
}

impl InternalEvent for IssuerKeysFailed<'_> {
    fn emit(self) {
        metrics::counter!(ISSUER_KEY_REFRESH_FAILURES).increment(1);
        if self.at_start {
            tracing::error!(error = %self.error, "the issuer's keys are not loaded yet; service-account tokens are refused until they are");
        } else {
            tracing::warn!(error = %self.error, "refreshing the issuer's keys failed; the previous keys stay in force");
        }
    }
}

/// The readers file was reloaded.
pub struct ReadersReloaded<'a> {
    pub path: &'a std::path::Path,
    pub readers: usize,
}

impl InternalEvent for ReadersReloaded<'_> {
    fn emit(self) {
        metrics::counter!(READERS_RELOADS).increment(1);
        tracing::info!(path = %self.path.display(), readers = self.readers, "readers reloaded");
    }
}

/// The readers file did not reload; the previous readers stay in force.
pub struct ReadersReloadFailed<'a> {
    pub error: &'a dyn Display,
}

impl InternalEvent for ReadersReloadFailed<'_> {
    fn emit(self) {
        metrics::counter!(READERS_RELOAD_FAILURES).increment(1);
        tracing::error!(error = %self.error, "readers file reload failed; the previous readers stay in force");
    }
}

// === Ingest ===

/// An ingest stream failed (e.g. a message over the size limit).
pub struct IngestStreamFailed<'a> {
    pub peer: Option<SocketAddr>,
    pub status: &'a tonic::Status,
}

static STREAM_FAILURES: LogSampler = LogSampler::new(5, EVERY_10S);

impl InternalEvent for IngestStreamFailed<'_> {
    fn emit(self) {
        // A client that hung up (its stream reset: CANCELLED; its connection gone: UNKNOWN,
        // the transport's error) had nothing refused: what it sent unacked it sends again.
        // Counted as a rejected batch, a collector that read its ack and left counted as two.
        if matches!(
            self.status.code(),
            tonic::Code::Cancelled | tonic::Code::Unknown
        ) {
            metrics::counter!(INGEST_STREAMS_HUNG_UP).increment(1);
            tracing::debug!(peer = ?self.peer, status = %self.status, "ingest stream left by the client");
            return;
        }
        metrics::counter!(BATCHES_REJECTED).increment(1);
        if let Some(held_back) = STREAM_FAILURES.sample() {
            tracing::warn!(peer = ?self.peer, status = %self.status, held_back, "ingest stream failed (sampled; all counted)");
        }
    }
}

/// A batch claimed what its writer may not (another identity, alerts): the stream ends.
pub struct IngestDenied<'a> {
    pub peer: Option<SocketAddr>,
    pub principal: &'a str,
    pub seq: u64,
    pub why: &'a str,
}

static INGEST_DENIALS: LogSampler = LogSampler::new(5, EVERY_10S);

impl InternalEvent for IngestDenied<'_> {
    fn emit(self) {
        metrics::counter!(INGEST_DENIED).increment(1);
        metrics::counter!(AUTH_DENIED).increment(1);
        if let Some(held_back) = INGEST_DENIALS.sample() {
            tracing::warn!(peer = ?self.peer, principal = %self.principal, seq = self.seq, why = self.why,
                held_back, "refused a batch claiming what its writer may not (sampled; all counted)");
        }
    }
}

/// A batch did not validate; it is acknowledged as rejected.
pub struct BatchRejected<'a> {
    pub peer: Option<SocketAddr>,
    pub seq: u64,
    pub error: &'a str,
}

static REJECTIONS: LogSampler = LogSampler::new(5, EVERY_10S);

impl InternalEvent for BatchRejected<'_> {
    fn emit(self) {
        metrics::counter!(BATCHES_REJECTED).increment(1);
        if let Some(held_back) = REJECTIONS.sample() {
            tracing::warn!(peer = ?self.peer, seq = self.seq, error = self.error, held_back,
                "rejected an invalid batch (sampled; all counted)");
        }
    }
}

/// Records arrived in a valid batch.
pub struct RecordsReceived {
    pub records: usize,
}

impl InternalEvent for RecordsReceived {
    fn emit(self) {
        metrics::counter!(RECORDS_RECEIVED).increment(self.records as u64);
    }
}

/// Records were stored.
pub struct RecordsStored {
    pub records: usize,
}

impl InternalEvent for RecordsStored {
    fn emit(self) {
        metrics::counter!(RECORDS_STORED).increment(self.records as u64);
    }
}

/// A batch arrived again (at-least-once delivery) and was not stored twice.
pub struct BatchDeduplicated;

impl InternalEvent for BatchDeduplicated {
    fn emit(self) {
        metrics::counter!(BATCHES_DEDUPLICATED).increment(1);
    }
}

// === Store ===

/// A read of the store failed (logged with the range the error names).
pub struct StoreReadFailed<'a> {
    pub error: &'a dyn Display,
    pub what: &'a str,
}

static READ_FAILURES: LogSampler = LogSampler::new(5, EVERY_10S);

impl InternalEvent for StoreReadFailed<'_> {
    fn emit(self) {
        metrics::counter!(STORE_READ_ERRORS).increment(1);
        if let Some(held_back) = READ_FAILURES.sample() {
            tracing::error!(error = %self.error, what = self.what, held_back, "reading the store failed (sampled; all counted)");
        }
    }
}

/// The store deleted its oldest data to stay under its size bound (`unit`: what a count is,
/// segments or daily partitions).
pub struct StoreTrimmed {
    pub count: usize,
    pub unit: &'static str,
    pub max_bytes: u64,
}

impl InternalEvent for StoreTrimmed {
    fn emit(self) {
        metrics::counter!(STORE_SEGMENTS_TRIMMED).increment(self.count as u64);
        tracing::info!(
            count = self.count,
            unit = self.unit,
            max_bytes = self.max_bytes,
            "store over its size limit: deleted the oldest data"
        );
    }
}

/// Records arrived already past retention and were not kept.
pub struct StoreExpiredOnArrival {
    pub records: u64,
}

static EXPIRED: LogSampler = LogSampler::new(5, Duration::from_secs(60));

impl InternalEvent for StoreExpiredOnArrival {
    fn emit(self) {
        metrics::counter!(STORE_EXPIRED_ON_ARRIVAL).increment(self.records);
        if let Some(held_back) = EXPIRED.sample() {
            tracing::warn!(
                records = self.records,
                held_back,
                "records received already past retention were not kept (sampled; all counted)"
            );
        }
    }
}

// === Detection and alerts ===

/// Records now waiting for the detection rules.
pub struct DetectQueued {
    pub records: usize,
}

impl InternalEvent for DetectQueued {
    fn emit(self) {
        metrics::gauge!(DETECT_QUEUED).set(self.records as f64);
    }
}

/// Stored records not evaluated: the detection queue was full, or its thread stopped.
pub struct DetectDropped {
    pub records: u64,
    pub stopped: bool,
}

static DETECT_DROPS: LogSampler = LogSampler::new(1, EVERY_10S);

impl InternalEvent for DetectDropped {
    fn emit(self) {
        metrics::counter!(DETECT_DROPPED).increment(self.records);
        if let Some(held_back) = DETECT_DROPS.sample() {
            if self.stopped {
                tracing::error!(
                    records = self.records,
                    held_back,
                    "detection thread stopped: records not evaluated (sampled; all counted)"
                );
            } else {
                tracing::warn!(
                    records = self.records,
                    held_back,
                    "detection queue full: records stored but not evaluated (sampled; all counted)"
                );
            }
        }
    }
}

/// Records went through the rules.
pub struct RulesEvaluated {
    pub records: usize,
}

impl InternalEvent for RulesEvaluated {
    fn emit(self) {
        metrics::counter!(RULES_EVALUATED).increment(self.records as u64);
    }
}

/// Alerts were raised.
pub struct AlertsRaised {
    pub alerts: usize,
}

impl InternalEvent for AlertsRaised {
    fn emit(self) {
        metrics::counter!(ALERTS_RAISED).increment(self.alerts as u64);
    }
}

/// Alerts the store could not keep (they are still published and delivered); `error` is
/// `None` when the store's writer is gone.
pub struct AlertsUnstored<'a> {
    pub alerts: usize,
    pub error: Option<&'a dyn Display>,
}

impl InternalEvent for AlertsUnstored<'_> {
    fn emit(self) {
        metrics::counter!(ALERTS_UNSTORED).increment(self.alerts as u64);
        match self.error {
            Some(error) => {
                tracing::error!(%error, alerts = self.alerts, "alerts not stored (still published and delivered)")
            }
            None => tracing::error!(alerts = self.alerts, "store writer gone: alerts not stored"),
        }
    }
}

/// The rule files changed and were reloaded.
pub struct RulesReloaded {
    pub rules: usize,
}

impl InternalEvent for RulesReloaded {
    fn emit(self) {
        metrics::counter!(RULE_RELOADS).increment(1);
        tracing::info!(rules = self.rules, "detection rules reloaded");
    }
}

/// The rule files changed and did not load; the previous set stays in force.
pub struct RuleReloadFailed<'a> {
    pub error: &'a dyn Display,
}

impl InternalEvent for RuleReloadFailed<'_> {
    fn emit(self) {
        metrics::counter!(RULE_RELOAD_FAILURES).increment(1);
        tracing::error!(error = %self.error, "rule reload failed; the previous rule set stays in force");
    }
}

/// The rule state was corrupt: set aside, the stateful rules start fresh.
pub struct RuleStateQuarantined<'a> {
    pub path: &'a std::path::Path,
    pub kept_as: &'a std::path::Path,
    pub reason: &'a dyn Display,
}

impl InternalEvent for RuleStateQuarantined<'_> {
    fn emit(self) {
        metrics::counter!(RULE_STATE_QUARANTINED).increment(1);
        tracing::error!(
            path = %self.path.display(),
            kept_as = %self.kept_as.display(),
            reason = %self.reason,
            "rule state is corrupt: set aside, stateful rules start fresh (thresholds, learned values and rates are relearned)"
        );
    }
}

/// Keys of stateful rules not tracked because a rule reached its bound, so far.
pub struct RuleStateKeysRefused {
    pub keys: u64,
}

impl InternalEvent for RuleStateKeysRefused {
    fn emit(self) {
        metrics::gauge!(RULE_STATE_KEYS_REFUSED).set(self.keys as f64);
    }
}

/// The rules forgot pipes at their per-source bound (the oldest first): a workload showed
/// more pipes than the engine keeps. Reported per state save, not per pipe.
pub struct RulePipesForgotten {
    pub forgotten: u64,
    pub total: u64,
}

static PIPES_FORGOTTEN: LogSampler = LogSampler::new(5, EVERY_10S);

impl InternalEvent for RulePipesForgotten {
    fn emit(self) {
        metrics::counter!(RULE_PIPES_FORGOTTEN).increment(self.forgotten);
        if let Some(held_back) = PIPES_FORGOTTEN.sample() {
            tracing::warn!(forgotten = self.forgotten, total = self.total, held_back,
                "rules forgot the oldest pipes of a source at their bound; a download piped into a shell through them is not seen (sampled; all counted)");
        }
    }
}

/// The rules forgot the incident trees of processes no descendant joined lately (a busy
/// host's hits pass the bound in minutes: expected, logged at info). A process of a
/// forgotten tree starts a tree (an alert) of its own.
pub struct RuleTreesForgotten {
    pub forgotten: u64,
}

static TREES_FORGOTTEN: LogSampler = LogSampler::new(1, EVERY_10S);

impl InternalEvent for RuleTreesForgotten {
    fn emit(self) {
        metrics::counter!(RULE_TREES_FORGOTTEN).increment(self.forgotten);
        if let Some(held_back) = TREES_FORGOTTEN.sample() {
            tracing::info!(
                forgotten = self.forgotten,
                held_back,
                "rules forgot the incident trees no process joined lately (sampled; all counted)"
            );
        }
    }
}

/// An output delivered an alert (`output`: stdout, webhook).
pub struct AlertDelivered {
    pub output: &'static str,
}

impl InternalEvent for AlertDelivered {
    fn emit(self) {
        metrics::counter!(ALERTS_DELIVERED, "output" => self.output).increment(1);
    }
}

/// An output dropped an alert (queue full, worker stopped, retries spent).
pub struct AlertDropped<'a> {
    pub output: &'static str,
    /// The rule, where the output still knows it (the webhook's worker holds only bodies).
    pub rule: Option<&'a str>,
    pub why: &'a dyn Display,
}

static ALERT_DROPS: LogSampler = LogSampler::new(5, EVERY_10S);

impl InternalEvent for AlertDropped<'_> {
    fn emit(self) {
        metrics::counter!(ALERTS_DROPPED, "output" => self.output).increment(1);
        if let Some(held_back) = ALERT_DROPS.sample() {
            tracing::error!(output = self.output, rule = self.rule.unwrap_or(""), why = %self.why, held_back,
                "alert dropped from this output (sampled; all counted)");
        }
    }
}

/// A collector was found silenced (stream broken without goodbye, or heartbeats stopped).
pub struct CollectorSilenced<'a> {
    pub pod: &'a str,
    pub namespace: &'a str,
    pub output: &'a str,
}

impl InternalEvent for CollectorSilenced<'_> {
    fn emit(self) {
        metrics::counter!(COLLECTORS_SILENCED).increment(1);
        tracing::warn!(pod = %self.pod, namespace = %self.namespace, output = %self.output, "collector silenced");
    }
}

/// A live event skipped for a subscriber that does not keep up (it gets a gap marker).
pub struct SubscriberMissed;

impl InternalEvent for SubscriberMissed {
    fn emit(self) {
        metrics::counter!(SUBSCRIBER_DROPPED).increment(1);
    }
}

// === Console ===

/// A console page refused: too many were being computed at once.
pub struct ConsoleBusy;

impl InternalEvent for ConsoleBusy {
    fn emit(self) {
        metrics::counter!(CONSOLE_BUSY).increment(1);
    }
}

/// A console page failed reading the store.
pub struct ConsolePageFailed<'a> {
    pub error: &'a dyn Display,
}

static PAGE_FAILURES: LogSampler = LogSampler::new(5, EVERY_10S);

impl InternalEvent for ConsolePageFailed<'_> {
    fn emit(self) {
        metrics::counter!(CONSOLE_PAGE_ERRORS).increment(1);
        if let Some(held_back) = PAGE_FAILURES.sample() {
            tracing::warn!(error = %self.error, held_back, "console page failed (sampled; all counted)");
        }
    }
}

/// A console sign-in was refused.
pub struct ConsoleSigninRejected;

static SIGNIN_REFUSALS: LogSampler = LogSampler::new(1, EVERY_10S);

impl InternalEvent for ConsoleSigninRejected {
    fn emit(self) {
        metrics::counter!(CONSOLE_SIGNIN_REJECTED).increment(1);
        if let Some(held_back) = SIGNIN_REFUSALS.sample() {
            tracing::warn!(
                held_back,
                "console sign-in refused: wrong credential (sampled; all counted)"
            );
        }
    }
}

// === Peer links between replicas ===

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

static PEER_TROUBLE: LogSampler = LogSampler::new(5, EVERY_10S);

/// A peer link started (`up`) or ended streaming.
pub struct PeerLinkStreaming {
    pub up: bool,
}

impl InternalEvent for PeerLinkStreaming {
    fn emit(self) {
        if self.up {
            metrics::gauge!(PEER_LINKS).increment(1.0);
        } else {
            metrics::gauge!(PEER_LINKS).decrement(1.0);
        }
    }
}

/// An event arrived from a peer for a local subscriber (`in_scope: false`: outside the
/// subscriber's namespaces — a bug or a forged link — never shown).
pub struct PeerEventReceived {
    pub in_scope: bool,
}

impl InternalEvent for PeerEventReceived {
    fn emit(self) {
        if self.in_scope {
            metrics::counter!(PEER_EVENTS).increment(1);
        } else {
            metrics::counter!(PEER_OUT_OF_SCOPE).increment(1);
        }
    }
}

/// A peer link failed or broke; it is retried.
pub struct PeerLinkFailed<'a> {
    pub addr: SocketAddr,
    pub why: &'a str,
}

impl InternalEvent for PeerLinkFailed<'_> {
    fn emit(self) {
        metrics::counter!(PEER_LINK_ERRORS).increment(1);
        if let Some(held_back) = PEER_TROUBLE.sample() {
            tracing::warn!(addr = %self.addr, why = self.why, held_back,
                "peer link down: its events do not reach this subscriber until it is back (sampled; all counted)");
        }
    }
}

/// Resolving the peer names failed; the last set stays.
pub struct PeerLookupFailed<'a> {
    pub name: &'a str,
    pub error: &'a dyn Display,
}

impl InternalEvent for PeerLookupFailed<'_> {
    fn emit(self) {
        metrics::counter!(PEER_LOOKUP_ERRORS).increment(1);
        if let Some(held_back) = PEER_TROUBLE.sample() {
            tracing::warn!(name = self.name, error = %self.error, held_back,
                "resolving peers failed; the last set stays (sampled; all counted)");
        }
    }
}

/// A peer link was refused: it did not present the peer credential.
pub struct PeerLinkRefused {
    pub peer: Option<SocketAddr>,
}

impl InternalEvent for PeerLinkRefused {
    fn emit(self) {
        metrics::counter!(AUTH_REJECTED).increment(1);
        if let Some(held_back) = PEER_TROUBLE.sample() {
            tracing::warn!(peer = ?self.peer, held_back,
                "refused a peer link without the peer credential (sampled; all counted)");
        }
    }
}

// === Rule state shared between replicas ===

/// The shared rule state (alert groups, learned values) the store could not read or write:
/// the replica decided alone, counted.
pub const SHARED_STATE_ERRORS: &str = "procflow_shared_rule_state_errors_total";

static SHARED_STATE_TROUBLE: LogSampler = LogSampler::new(3, Duration::from_secs(60));

/// The store did not answer for the shared rule state (`error` absent: not asked, while it
/// recovers from a failure moments ago).
pub struct SharedStateUnavailable<'a> {
    pub what: &'static str,
    pub error: Option<&'a str>,
}

impl InternalEvent for SharedStateUnavailable<'_> {
    fn emit(self) {
        metrics::counter!(SHARED_STATE_ERRORS).increment(1);
        let Some(error) = self.error else { return };
        if let Some(held_back) = SHARED_STATE_TROUBLE.sample() {
            tracing::warn!(what = self.what, error, held_back,
                "shared rule state unavailable: this replica groups and learns alone for now (sampled; all counted)");
        }
    }
}
