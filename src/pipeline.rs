//! The collector's data path after the sources: bounded queue → batcher → outputs
//! (gRPC exporter with memory buffer and spool, stdout JSON lines).

pub mod batcher;
pub mod exporter;
pub mod queue;
pub mod spool;
pub mod stdout;

use std::path::PathBuf;
use std::time::Duration;

pub use queue::{record_queue, RecordRx, RecordTx};

/// A `procflow.v1.Batch` encoded once by the batcher; what the exporter buffers, resends and
/// spools.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    pub seq: u64,
    pub records: usize,
    pub bytes: bytes::Bytes,
}

impl EncodedBatch {
    pub fn encode(batch: &crate::proto::v1::Batch) -> Self {
        EncodedBatch {
            seq: batch.seq,
            records: batch.records.len(),
            bytes: prost::Message::encode_to_vec(batch).into(),
        }
    }
}

use crate::config::parse_duration;

/// Flags of the gRPC output, flattened into `procflow collector`.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineArgs {
    /// Aggregator URL (`https://` for TLS).
    #[arg(
        long,
        env = "PROCFLOW_AGGREGATOR",
        default_value = "http://127.0.0.1:7410"
    )]
    pub aggregator: String,
    /// File holding the bearer token for the aggregator.
    #[arg(long, env = "PROCFLOW_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The bearer token itself (prefer the environment variable, e.g. from a secret, over the flag).
    #[arg(
        long,
        env = "PROCFLOW_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// CA bundle that signed the aggregator's certificate.
    #[arg(long, env = "PROCFLOW_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for mTLS (with --tls-key).
    #[arg(long, env = "PROCFLOW_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Client key for mTLS.
    #[arg(long, env = "PROCFLOW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Records per batch, at most.
    #[arg(long, env = "PROCFLOW_BATCH_SIZE", default_value_t = 2048)]
    pub batch_size: usize,
    /// A batch is sent at most this long after its first record.
    #[arg(long, env = "PROCFLOW_BATCH_INTERVAL", default_value = "200ms", value_parser = parse_duration)]
    pub batch_interval: Duration,
    /// Unacknowledged batches kept in memory before the spool takes over.
    #[arg(long, env = "PROCFLOW_MEMORY_BUFFER_BATCHES", default_value_t = 64)]
    pub memory_buffer_batches: usize,
    /// Directory for batches the aggregator has not acknowledged (e.g. an emptyDir). No spool when unset.
    #[arg(long, env = "PROCFLOW_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Spool size cap; beyond it the oldest batches are dropped and counted.
    #[arg(long, env = "PROCFLOW_SPOOL_MAX_BYTES", default_value_t = 64 << 20)]
    pub spool_max_bytes: u64,
}

impl PipelineArgs {
    pub fn exporter_config(&self) -> anyhow::Result<exporter::ExporterConfig> {
        let token = match &self.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading token file {}: {e}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => self.token.clone(),
        };
        Ok(exporter::ExporterConfig {
            endpoint: self.aggregator.clone(),
            token,
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            memory_batches: self.memory_buffer_batches,
            spool_dir: self.spool_dir.clone(),
            spool_max_bytes: self.spool_max_bytes,
            drain_timeout: Duration::from_secs(5),
        })
    }

    pub fn batcher_config(&self) -> batcher::BatcherConfig {
        batcher::BatcherConfig {
            max_records: self.batch_size.max(1),
            max_delay: self.batch_interval,
        }
    }
}
