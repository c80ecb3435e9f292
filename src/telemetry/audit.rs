//! The Kubernetes audit ingestion's internal events (webhook and Firehose adapters, the
//! exec join): each counts its metric and, where a sender can provoke it at will, logs
//! sampled. Labels: `adapter` webhook|firehose, `outcome`, `reason`.

use std::time::Duration;

use super::{InternalEvent, LogSampler};

// === Metric names ===

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

/// An audit request was answered (`outcome`: ok, unauthorized, too_large, invalid, busy,
/// store_error, replayed).
pub struct AuditRequestAnswered {
    pub adapter: &'static str,
    pub outcome: &'static str,
}

impl InternalEvent for AuditRequestAnswered {
    fn emit(self) {
        metrics::counter!(AUDIT_REQUESTS, "adapter" => self.adapter, "outcome" => self.outcome)
            .increment(1);
    }
}

/// What went wrong with an audit request, each kind logged on its own sampler.
#[derive(Debug, Clone, Copy)]
pub enum AuditTrouble {
    WebhookRefused,
    WebhookBodyRejected,
    WebhookEventsRejected,
    FirehoseRefused,
    FirehoseRequestRejected,
    FirehoseEventsRejected,
}

impl AuditTrouble {
    fn message(self) -> &'static str {
        match self {
            AuditTrouble::WebhookRefused => "audit webhook request refused",
            AuditTrouble::WebhookBodyRejected => "audit webhook body rejected",
            AuditTrouble::WebhookEventsRejected => "audit webhook events rejected",
            AuditTrouble::FirehoseRefused => "audit Firehose request refused",
            AuditTrouble::FirehoseRequestRejected => "audit Firehose request rejected",
            AuditTrouble::FirehoseEventsRejected => "audit Firehose events rejected",
        }
    }

    fn adapter(self) -> &'static str {
        match self {
            AuditTrouble::WebhookRefused
            | AuditTrouble::WebhookBodyRejected
            | AuditTrouble::WebhookEventsRejected => "webhook",
            _ => "firehose",
        }
    }
}

/// An audit request or some of its events were refused; `rejected_events` counts events
/// that did not decode (0 for a request refused whole, which its answer counts).
/// `cluster` and `detail` come from the client: cut to a bound before they are logged.
pub struct AuditRejected<'a> {
    pub trouble: AuditTrouble,
    pub rejected_events: u64,
    pub cluster: &'a str,
    pub detail: &'a str,
}

static AUDIT_TROUBLE: [LogSampler; 6] = [
    LogSampler::new(1, Duration::from_secs(1)),
    LogSampler::new(1, Duration::from_secs(1)),
    LogSampler::new(1, Duration::from_secs(1)),
    LogSampler::new(1, Duration::from_secs(1)),
    LogSampler::new(1, Duration::from_secs(1)),
    LogSampler::new(1, Duration::from_secs(1)),
];

impl InternalEvent for AuditRejected<'_> {
    fn emit(self) {
        if self.rejected_events > 0 {
            metrics::counter!(AUDIT_EVENTS_REJECTED, "adapter" => self.trouble.adapter())
                .increment(self.rejected_events);
        }
        if let Some(suppressed) = AUDIT_TROUBLE[self.trouble as usize].sample() {
            let cluster: String = self.cluster.chars().take(100).collect();
            let detail: String = self.detail.chars().take(512).collect();
            tracing::warn!(%cluster, %detail, suppressed, "{}", self.trouble.message());
        }
    }
}

/// Firehose log events skipped (`reason`: control_message, other_stream).
pub struct AuditRecordsSkipped {
    pub reason: &'static str,
    pub records: u64,
}

impl InternalEvent for AuditRecordsSkipped {
    fn emit(self) {
        metrics::counter!(AUDIT_RECORDS_SKIPPED, "reason" => self.reason).increment(self.records);
    }
}

/// Audit events appended: stored, and delivered again (not stored twice).
pub struct AuditEventsAppended {
    pub adapter: &'static str,
    pub stored: usize,
    pub duplicates: usize,
}

impl InternalEvent for AuditEventsAppended {
    fn emit(self) {
        metrics::counter!(AUDIT_EVENTS_STORED, "adapter" => self.adapter)
            .increment(self.stored as u64);
        metrics::counter!(AUDIT_EVENTS_DUPLICATE, "adapter" => self.adapter)
            .increment(self.duplicates as u64);
    }
}

/// What decoding a request repaired: fields cut or left out, bodies that did not read.
pub struct AuditRepaired {
    pub fields: u64,
    pub unreadable_bodies: u64,
}

impl InternalEvent for AuditRepaired {
    fn emit(self) {
        if self.fields > 0 {
            metrics::counter!(AUDIT_FIELDS_REPAIRED).increment(self.fields);
        }
        if self.unreadable_bodies > 0 {
            metrics::counter!(AUDIT_BODIES_UNREADABLE).increment(self.unreadable_bodies);
        }
    }
}

/// An exec request was joined with the process tree it started.
pub struct AuditExecJoined;

impl InternalEvent for AuditExecJoined {
    fn emit(self) {
        metrics::counter!(AUDIT_EXEC_JOINED).increment(1);
    }
}

/// An exec request joined no process (`reason`: no_process, ambiguous, pod_not_watched,
/// no_command).
pub struct AuditExecUnmatched {
    pub reason: &'static str,
}

impl InternalEvent for AuditExecUnmatched {
    fn emit(self) {
        metrics::counter!(AUDIT_EXEC_UNMATCHED, "reason" => self.reason).increment(1);
    }
}

/// Join state dropped at its bound (`what`: pending, candidates, links).
pub struct AuditJoinEvicted {
    pub what: &'static str,
}

impl InternalEvent for AuditJoinEvicted {
    fn emit(self) {
        metrics::counter!(AUDIT_JOIN_EVICTED, "reason" => self.what).increment(1);
    }
}
