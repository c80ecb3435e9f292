//! The store's command-line face: the connection flags the aggregator and
//! `procflow store migrate` share, and that subcommand.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::{OpenOptions, PgOptions, Retention, StoreSpec};
use crate::config::parse_duration;

/// How to reach a PostgreSQL store (ignored by the others).
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// File holding the PostgreSQL password (e.g. a mounted Secret). The environment
    /// variable PROCFLOW_STORE_PASSWORD is read when this is not set; the password is never
    /// taken from the URL or a flag, which show in logs and process lists.
    #[arg(long, env = "PROCFLOW_STORE_PASSWORD_FILE")]
    pub store_password_file: Option<PathBuf>,
    /// Connections this process keeps to PostgreSQL (one writes, one keeps partitions,
    /// the rest read; a first `investigate new` reads on four at once).
    #[arg(long, env = "PROCFLOW_STORE_POOL_SIZE", default_value_t = 12)]
    pub store_pool_size: usize,
    /// How long to wait at start for a PostgreSQL server that is down or starting.
    #[arg(long, env = "PROCFLOW_STORE_CONNECT_WAIT", default_value = "60s", value_parser = parse_duration)]
    pub store_connect_wait: Duration,
}

impl ConnectArgs {
    /// The PostgreSQL options, with the password read from its file or the environment.
    pub fn pg_options(&self) -> anyhow::Result<PgOptions> {
        let password = match &self.store_password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            None => std::env::var("PROCFLOW_STORE_PASSWORD").ok(),
        };
        Ok(PgOptions {
            password,
            pool_size: self.store_pool_size,
            connect_wait: self.store_connect_wait,
        })
    }
}

/// `procflow store`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the store's schema migrations and exit (the aggregator also runs them at start).
    Migrate(MigrateArgs),
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The store: sqlite (in --data-dir), sqlite:PATH or postgres://USER@HOST[:PORT]/DB.
    #[arg(long, env = "PROCFLOW_STORE", default_value = "sqlite")]
    pub store: StoreSpec,
    /// Directory of the embedded store.
    #[arg(long, env = "PROCFLOW_DATA_DIR", default_value = ".procflow")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs `procflow store …`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Migrate(args) => {
            if matches!(args.store, StoreSpec::Sqlite(None)) {
                std::fs::create_dir_all(&args.data_dir)
                    .with_context(|| format!("creating {}", args.data_dir.display()))?;
            }
            let options = OpenOptions {
                spec: args.store.clone(),
                data_dir: args.data_dir,
                retention: Retention {
                    max_age: Duration::MAX,
                    max_bytes: u64::MAX,
                    rollups: super::ROLLUP_RETENTION,
                },
                postgres: args.connect.pg_options()?,
            };
            let (from, to) = super::migrate(&options)?;
            println!("{}: schema version {from} -> {to}", args.store);
            Ok(())
        }
    }
}
