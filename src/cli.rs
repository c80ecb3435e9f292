//! The `procflow` command line: subcommands, global flags and config-file loading.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "procflow",
    version,
    about = "Unprivileged flow, process and lineage visibility for serverless Kubernetes"
)]
pub struct Cli {
    /// Log format for the daemon's own logs (on stderr).
    #[arg(long, global = true, env = "PROCFLOW_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// TOML file whose keys are this subcommand's flag names.
    #[arg(long, global = true, env = "PROCFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sidecar daemon: sockets from sock_diag, processes from /proc, streamed out.
    Collector(Box<crate::collector::Args>),
    /// gRPC service that collectors stream into: store, rules, alerts, subscriptions.
    Aggregator(Box<crate::aggregator::Args>),
    /// Follow live records and alerts from an aggregator.
    Tail(crate::client::TailArgs),
    /// Read stored records from an aggregator.
    Query(crate::client::QueryArgs),
    /// Investigate stored records: who talked to whom, what is loud, what is new, process trees.
    Investigate(crate::client::investigate::Args),
    /// Validate, test and list detection rules.
    Rules(crate::rules::cli::Args),
    /// Kubernetes audit logs: import a backfill of audit events.
    Audit(crate::audit::import::Args),
    /// The aggregator's store: schema migrations.
    Store(crate::aggregator::store::cli::Args),
}

/// Parses the command line (after loading `--config`) and runs the subcommand.
pub fn main_with_args(args: Vec<OsString>) -> anyhow::Result<()> {
    load_config_file(&args)?;
    let cli = Cli::parse_from(args);
    crate::telemetry::init_logging(cli.log_format == "json");
    match cli.command {
        Command::Collector(args) => crate::collector::run(*args),
        Command::Aggregator(args) => crate::aggregator::run(*args),
        Command::Tail(args) => crate::client::run_tail(args),
        Command::Query(args) => crate::client::run_query(args),
        Command::Investigate(args) => crate::client::investigate::run(args),
        Command::Rules(args) => crate::rules::cli::run(args),
        Command::Audit(args) => crate::audit::import::run(args),
        Command::Store(args) => crate::aggregator::store::cli::run(args),
    }
}

/// Finds `--config FILE` (or `PROCFLOW_CONFIG`) before clap parses, and exports the file's
/// keys as `PROCFLOW_*` variables, so precedence is flag > env > file > default.
fn load_config_file(args: &[OsString]) -> anyhow::Result<()> {
    let mut path = std::env::var_os("PROCFLOW_CONFIG").map(PathBuf::from);
    let mut subcommand = None;
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let arg = arg.to_string_lossy();
        if arg == "--config" {
            path = iter.next().map(PathBuf::from);
        } else if let Some(value) = arg.strip_prefix("--config=") {
            path = Some(PathBuf::from(value));
        } else if subcommand.is_none() && !arg.starts_with('-') {
            subcommand = Some(arg.into_owned());
        }
    }
    let (Some(path), Some(name)) = (path, subcommand) else {
        return Ok(());
    };
    let command = Cli::command();
    let Some(sub) = command.find_subcommand(&name) else {
        return Ok(()); // clap reports the unknown subcommand
    };
    let known: Vec<String> = sub
        .get_arguments()
        .chain(command.get_arguments())
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    crate::config::apply_config_file(&path, &name, &known)
        .with_context(|| format!("loading configuration for `procflow {name}`"))
}
