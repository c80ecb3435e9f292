//! The daemons' own telemetry: logging setup (metric names, the Prometheus and health
//! endpoint are added by the pipeline work).

use tracing_subscriber::EnvFilter;

/// Logs go to stderr (stdout carries records with `--output stdout`). `RUST_LOG` filters.
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
