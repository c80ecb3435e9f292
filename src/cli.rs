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
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The flags every command takes.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Log format for the daemon's own logs (on stderr).
    #[arg(long, global = true, env = "PROCFLOW_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// TOML file whose keys are this subcommand's flag names.
    #[arg(long, global = true, env = "PROCFLOW_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `procflow-collector`: `procflow collector` as a binary of its own, with the same flags,
/// environment and `--config` keys. It links the collector's code alone, so a sidecar maps
/// only that (the `procflow` binary carries the aggregator, the console and SQLite too).
#[derive(Debug, Parser)]
#[command(
    name = "procflow-collector",
    version,
    about = "Sidecar daemon: sockets from sock_diag, processes from /proc, streamed out (procflow collector alone)"
)]
pub struct CollectorCli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten)]
    pub args: crate::collector::Args,
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
    crate::telemetry::init_logging(cli.global.log_format == "json");
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

/// `procflow-collector`: parses the command line (after loading `--config`, whose keys are
/// `procflow collector`'s) and runs the collector.
pub fn collector_main_with_args(args: Vec<OsString>) -> anyhow::Result<()> {
    let (path, _) = config_path_and_subcommand(&args);
    if let Some(path) = path {
        let known = env_names(CollectorCli::command().get_arguments());
        crate::config::apply_config_file(&path, "collector", &known)
            .context("loading configuration for `procflow-collector`")?;
    }
    let cli = CollectorCli::parse_from(args);
    crate::telemetry::init_logging(cli.global.log_format == "json");
    crate::collector::run(cli.args)
}

/// Finds `--config FILE` (or `PROCFLOW_CONFIG`) before clap parses, and exports the file's
/// keys as `PROCFLOW_*` variables, so precedence is flag > env > file > default.
fn load_config_file(args: &[OsString]) -> anyhow::Result<()> {
    let (Some(path), Some(name)) = config_path_and_subcommand(args) else {
        return Ok(());
    };
    let command = Cli::command();
    let Some(sub) = command.find_subcommand(&name) else {
        return Ok(()); // clap reports the unknown subcommand
    };
    let known = env_names(sub.get_arguments().chain(command.get_arguments()));
    crate::config::apply_config_file(&path, &name, &known)
        .with_context(|| format!("loading configuration for `procflow {name}`"))
}

/// The `--config` file (flag, else `PROCFLOW_CONFIG`) and the first word that is not a flag.
fn config_path_and_subcommand(args: &[OsString]) -> (Option<PathBuf>, Option<String>) {
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
    (path, subcommand)
}

/// The `PROCFLOW_*` variables of `arguments`: the keys a configuration file may set.
fn env_names<'a>(arguments: impl Iterator<Item = &'a clap::Arg>) -> Vec<String> {
    arguments
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect()
}
