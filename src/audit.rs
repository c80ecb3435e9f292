//! Kubernetes API server audit logs (`audit.k8s.io/v1`): one decoder ([`event`]) behind the
//! adapters that bring events in — the API server's audit webhook, EKS through CloudWatch
//! Logs and Kinesis Data Firehose ([`firehose`]), and `procflow audit import` for backfill —
//! and what the aggregator does with them besides storing them: audit rules read them
//! through the `ka.*` fields, and exec requests are joined with the process trees they
//! started.

pub mod client;
pub mod correlate;
pub mod credentials;
pub mod event;
pub mod firehose;
pub mod import;
pub mod ingest;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::parse_duration;

/// The aggregator's audit flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Serve the audit endpoints here (POST /audit/webhook/CLUSTER for the kube-apiserver
    /// audit webhook, /audit/firehose/CLUSTER for EKS through Kinesis Data Firehose); TLS with
    /// --tls-cert/--tls-key. Requires --audit-clusters.
    #[arg(long, env = "PROCFLOW_AUDIT_LISTEN", requires = "audit_clusters")]
    pub audit_listen: Option<SocketAddr>,
    /// TOML file of the clusters that may send audit events and their credential files
    /// ([clusters.NAME] webhook_token_file, firehose_access_key_file, eks_cluster); re-read
    /// when it or a credential file changes.
    #[arg(long, env = "PROCFLOW_AUDIT_CLUSTERS")]
    pub audit_clusters: Option<PathBuf>,
    /// Largest audit request body accepted, also after gzip (larger: 413, which Firehose
    /// treats as permanent; keep its buffer size below this).
    #[arg(long, env = "PROCFLOW_AUDIT_MAX_BODY_BYTES", default_value_t = 16 << 20)]
    pub audit_max_body_bytes: usize,
    /// An exec request and a process it may have started are joined when the process started
    /// within this of the request's receive time (either way: the clocks differ).
    #[arg(long, env = "PROCFLOW_AUDIT_JOIN_WINDOW", default_value = "10s", value_parser = parse_duration)]
    pub audit_join_window: Duration,
    /// How long an exec request waits for its process, and a process for its request, to
    /// arrive (audit logs through CloudWatch and Firehose come minutes late); then a request
    /// left alone is reported as unmatched.
    #[arg(long, env = "PROCFLOW_AUDIT_JOIN_WAIT", default_value = "10m", value_parser = parse_duration)]
    pub audit_join_wait: Duration,
}
