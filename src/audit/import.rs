//! `procflow audit import FILE`: a backfill of audit events from JSON lines (the API
//! server's log backend, `--audit-log-path`, or an export of the EKS log group), sent to the
//! aggregator's webhook endpoint in batches like the API server's own, so they take the one
//! path every audit event takes: decoder, deduplication, store, rules.
//!
//! Each line is checked here first with the same decoder, so a bad line is reported with
//! its line number and never sent; the good ones are. A line already stored (an overlap
//! with live ingest, an import run twice) is counted as a duplicate, not stored again.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::client::AuditClient;
use super::event::{self, Notes};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Send audit events from a JSON-lines file (`-` for stdin, `.gz` read as gzip) to the
    /// aggregator's audit webhook endpoint.
    Import(ImportArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// JSON lines, one audit.k8s.io/v1 Event each.
    pub file: PathBuf,
    /// The aggregator's audit listener (`--audit-listen`), e.g. https://aggregator:7411.
    #[arg(long, env = "PROCFLOW_AUDIT_ENDPOINT")]
    pub endpoint: String,
    /// The cluster the events are stored under (a name of the aggregator's --audit-clusters).
    #[arg(long, env = "PROCFLOW_AUDIT_CLUSTER")]
    pub cluster: String,
    /// File holding the cluster's webhook token.
    #[arg(long, env = "PROCFLOW_AUDIT_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// CA bundle that signed the aggregator's certificate (for https).
    #[arg(long, env = "PROCFLOW_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Events per request.
    #[arg(long, env = "PROCFLOW_AUDIT_BATCH", default_value_t = 500)]
    pub batch: usize,
}

/// What an import came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub lines: u64,
    pub sent: u64,
    pub stored: u64,
    pub duplicates: u64,
    /// Lines that did not decode (here) or were refused (by the aggregator).
    pub rejected: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Command::Import(args) = args.command;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(import(&args))?;
    println!(
        "{} lines: {} sent, {} stored, {} already stored, {} rejected",
        summary.lines, summary.sent, summary.stored, summary.duplicates, summary.rejected
    );
    if summary.rejected > 0 {
        anyhow::bail!(
            "{} lines were rejected (listed above); the others were imported",
            summary.rejected
        );
    }
    Ok(())
}

async fn import(args: &ImportArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        super::credentials::valid_cluster_name(&args.cluster),
        "--cluster {:?}: 1 to 100 of A-Z a-z 0-9 - _ .",
        args.cluster
    );
    let token = crate::transport::TokenSource::File(args.token_file.clone())
        .read()?
        .context("no token")?;
    let mut client = AuditClient::new(&args.endpoint, args.tls_ca.as_deref())?;
    let reader = open(&args.file)?;
    let mut summary = Summary::default();
    let mut batch: Vec<String> = Vec::with_capacity(args.batch.max(1));
    let auth = format!("Bearer {}", token.secret());
    let path = format!("/audit/webhook/{}", args.cluster);
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        summary.lines += 1;
        if let Err(e) = event::decode_event(line.as_bytes(), &args.cluster, &mut Notes::default()) {
            summary.rejected += 1;
            if summary.rejected <= 20 {
                eprintln!("line {}: {e}", n + 1);
            }
            continue;
        }
        batch.push(line);
        if batch.len() >= args.batch.max(1) {
            send(&mut client, &path, &auth, &mut batch, &mut summary).await?;
        }
    }
    send(&mut client, &path, &auth, &mut batch, &mut summary).await?;
    Ok(summary)
}

fn open(path: &PathBuf) -> anyhow::Result<Box<dyn BufRead>> {
    let input: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?)
    };
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(input)))
    } else {
        Box::new(BufReader::new(input))
    })
}

/// Sends the batch as an EventList; retries what the aggregator may take later (busy,
/// store unavailable, connection lost) with backoff.
async fn send(
    client: &mut AuditClient,
    path: &str,
    auth: &str,
    batch: &mut Vec<String>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let body = format!(
        "{{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\"items\":[{}]}}",
        batch.join(",")
    );
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=6 {
        let answer = client
            .post(path, &[("authorization", auth)], body.clone().into_bytes())
            .await;
        let retry = match &answer {
            Ok((status, _)) => status.as_u16() == 503 || status.as_u16() == 408,
            Err(_) => true,
        };
        if retry && attempt < 6 {
            tokio::time::sleep(delay).await;
            delay *= 2;
            continue;
        }
        let (status, body) = answer?;
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        anyhow::ensure!(
            status.is_success(),
            "the aggregator answered {status}: {}",
            answer["error"].as_str().unwrap_or("(no reason given)")
        );
        let count = |k: &str| answer[k].as_u64().unwrap_or(0);
        summary.sent += batch.len() as u64;
        summary.stored += count("stored");
        summary.duplicates += count("duplicates");
        summary.rejected += count("rejected");
        for e in answer["errors"].as_array().into_iter().flatten() {
            eprintln!("refused by the aggregator: {}", e.as_str().unwrap_or(""));
        }
        batch.clear();
        return Ok(());
    }
    unreachable!("the last attempt returns")
}
