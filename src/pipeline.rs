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

use crate::config::parse_duration;

/// Flags of the gRPC output, flattened into `procflow collector`.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub endpoint: crate::transport::EndpointArgs,
    /// File holding the credential for the aggregator: a projected service-account token
    /// (re-read at each connection, so the kubelet's rotation is picked up) or, on loopback,
    /// the shared token. The collector takes no token from its environment or command line,
    /// which the app's processes could read.
    #[arg(long, env = "PROCFLOW_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
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
    pub fn exporter_config(&self) -> exporter::ExporterConfig {
        exporter::ExporterConfig {
            endpoint: self.endpoint.aggregator.clone(),
            token: crate::transport::TokenSource::new(self.token_file.clone(), None),
            tls: crate::transport::TlsFiles::of(&self.endpoint),
            memory_batches: self.memory_buffer_batches,
            spool_dir: self.spool_dir.clone(),
            spool_max_bytes: self.spool_max_bytes,
            drain_timeout: Duration::from_secs(5),
        }
    }

    pub fn batcher_config(&self) -> batcher::BatcherConfig {
        batcher::BatcherConfig {
            max_records: self.batch_size.max(1),
            max_delay: self.batch_interval,
        }
    }
}
