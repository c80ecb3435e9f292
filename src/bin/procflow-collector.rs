//! The `procflow-collector` binary: `procflow collector` alone (`procflow::cli::CollectorCli`).
//! Only the collector's code is linked in, so a sidecar maps less of its own executable.

fn main() -> anyhow::Result<()> {
    procflow::cli::collector_main_with_args(std::env::args_os().collect())
}
