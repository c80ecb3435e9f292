//! `procflow tail` (live events) and `procflow query` (stored events): gRPC clients of the
//! aggregator. `--json` writes `model::Event` as JSON lines, the same shape for both; the
//! human form escapes every byte a process controls before it reaches the terminal.

pub mod investigate;
mod investigate_api;

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;

use crate::config::parse_duration;
use crate::model::{display_bytes, Event, Record, RecordKind};
use crate::proto::v1 as pb;
pub use crate::transport::ConnectArgs;
use crate::wire::{self, Limits};

#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    /// Only these record kinds (flow, process, listener, heartbeat, alert); repeatable.
    #[arg(long = "kind", env = "PROCFLOW_KIND", value_delimiter = ',')]
    pub kinds: Vec<RecordKind>,
    /// Only records from these pods; repeatable.
    #[arg(long = "pod", env = "PROCFLOW_POD", value_delimiter = ',')]
    pub pods: Vec<String>,
    /// Only records from these namespaces; repeatable.
    #[arg(long = "namespace", env = "PROCFLOW_NAMESPACE", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Print JSON lines (`model::Event`) instead of text.
    #[arg(long, env = "PROCFLOW_JSON")]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only flows of these scopes (local, east-west, north-south); repeatable.
    #[arg(long = "scope", env = "PROCFLOW_SCOPE", value_delimiter = ',', value_parser = ["local", "east-west", "north-south"])]
    pub scopes: Vec<String>,
    /// Only flows of these directions (inbound, outbound, listen); repeatable.
    #[arg(long = "direction", env = "PROCFLOW_DIRECTION", value_delimiter = ',', value_parser = ["inbound", "outbound", "listen", "unknown"])]
    pub directions: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only records of the last DUR (e.g. 10m, 2h).
    #[arg(long, env = "PROCFLOW_SINCE", default_value = "1h", value_parser = parse_duration)]
    pub since: Duration,
    /// At most this many records.
    #[arg(long, env = "PROCFLOW_LIMIT", default_value_t = 10_000)]
    pub limit: u32,
}

pub fn run_tail(args: TailArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = args.connect.connect().await?;
        let mut client = pb::subscribe_client::SubscribeClient::new(channel);
        let mut filter = proto_filter(&args.filter);
        filter.scopes = scopes_to_proto(&args.scopes);
        filter.directions = directions_to_proto(&args.directions);
        let request = args.connect.request(pb::SubscribeRequest {
            filter: Some(filter),
        })?;
        let mut stream = client
            .subscribe(request)
            .await
            .context("subscribing")?
            .into_inner();
        let mut printer = Printer::new(args.filter.json);
        while let Some(item) = stream.message().await.context("live stream")? {
            match item.item {
                Some(pb::subscribe_item::Item::Event(e)) => printer.event(e)?,
                Some(pb::subscribe_item::Item::Gap(g)) => printer.gap(g.missed)?,
                None => {}
            }
        }
        Ok(())
    })
}

pub fn run_query(args: QueryArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = args.connect.connect().await?;
        let mut client =
            pb::query_client::QueryClient::new(channel).max_decoding_message_size(64 << 20);
        let since = crate::model::now_ns().saturating_sub(args.since.as_nanos() as u64);
        let request = args.connect.request(pb::QueryRequest {
            filter: Some(proto_filter(&args.filter)),
            since,
            until: 0,
            limit: args.limit,
        })?;
        let mut stream = client
            .records(request)
            .await
            .context("querying")?
            .into_inner();
        let mut printer = Printer::new(args.filter.json);
        while let Some(e) = stream.message().await.context("query results")? {
            printer.event(e)?;
        }
        Ok(())
    })
}

/// `--scope` values (as the flags spell them) in the proto's terms.
pub(crate) fn scopes_to_proto(scopes: &[String]) -> Vec<i32> {
    scopes
        .iter()
        .map(|s| match s.as_str() {
            "local" => pb::Scope::Local,
            "east-west" => pb::Scope::EastWest,
            _ => pb::Scope::NorthSouth,
        } as i32)
        .collect()
}

/// `--direction` values (as the flags spell them) in the proto's terms.
pub(crate) fn directions_to_proto(directions: &[String]) -> Vec<i32> {
    directions
        .iter()
        .map(|d| match d.as_str() {
            "inbound" => pb::Direction::Inbound,
            "outbound" => pb::Direction::Outbound,
            "listen" => pb::Direction::Listen,
            _ => pb::Direction::Unknown,
        } as i32)
        .collect()
}

fn proto_filter(f: &FilterArgs) -> pb::Filter {
    pb::Filter {
        kinds: f
            .kinds
            .iter()
            .map(|k| match k {
                RecordKind::Flow => pb::RecordKind::Flow,
                RecordKind::Process => pb::RecordKind::Process,
                RecordKind::Listener => pb::RecordKind::Listener,
                RecordKind::Heartbeat => pb::RecordKind::Heartbeat,
                RecordKind::Alert => pb::RecordKind::Alert,
                RecordKind::Audit => pb::RecordKind::Audit,
            } as i32)
            .collect(),
        pods: f.pods.clone(),
        namespaces: f.namespaces.clone(),
        scopes: Vec::new(),
        directions: Vec::new(),
    }
}

struct Printer {
    json: bool,
    colour: bool,
    out: std::io::Stdout,
    limits: Limits,
}

impl Printer {
    fn new(json: bool) -> Printer {
        let out = std::io::stdout();
        Printer {
            json,
            colour: !json && out.is_terminal(),
            out,
            limits: Limits::default(),
        }
    }

    fn event(&mut self, e: pb::Event) -> anyhow::Result<()> {
        let event = match wire::event_from_proto(e, &self.limits) {
            Ok(e) => e,
            Err(error) => {
                tracing::warn!(%error, "skipping an event that does not validate");
                return Ok(());
            }
        };
        // One write per event, so a reader never sees half a line.
        let mut line = if self.json {
            serde_json::to_string(&event)?
        } else {
            human(&event, self.colour)
        };
        line.push('\n');
        self.out.lock().write_all(line.as_bytes())?;
        Ok(())
    }

    fn gap(&mut self, missed: u64) -> anyhow::Result<()> {
        let mut out = self.out.lock();
        if self.json {
            writeln!(out, "{{\"kind\":\"gap\",\"missed\":{missed}}}")?;
        } else {
            writeln!(out, "-- fell behind: {missed} live events not shown (they are stored; use `procflow query`) --")?;
        }
        Ok(())
    }
}

/// One line per event, for people. Every kernel byte goes through `display_bytes`.
pub fn human(e: &Event, colour: bool) -> String {
    let paint = |code: &str, s: String| {
        if colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s
        }
    };
    let pod = format!("{}/{}", e.source.pod_namespace, e.source.pod_name);
    match &e.record {
        Record::Flow(f) => {
            let remote = match (f.remote_addr, f.remote_port) {
                _ if f.peer_scrubbed => "(peer unknown: reset before any dump)".into(),
                (Some(a), Some(p)) => format!("{a}:{p}"),
                _ => "(unconnected)".into(),
            };
            let bytes = match (f.bytes_sent, f.bytes_received) {
                (Some(s), Some(r)) => format!("sent={s} recv={r}"),
                _ => "bytes=n/a".into(),
            };
            let owner = f.pid.map_or("pid=?".into(), |p| format!("pid={p}"));
            format!(
                "{} {pod} {:?} {:?} {:?} {}:{} -> {remote} {bytes} {owner} ({:?}){}",
                paint("36", "flow".into()),
                f.phase,
                f.direction,
                f.scope,
                f.local_addr,
                f.local_port,
                f.attribution,
                if f.reset { " reset" } else { "" }
            )
        }
        Record::Listener(l) => format!(
            "{} {pod} {:?} {}:{} pid={:?}",
            paint("34", "listen".into()),
            l.phase,
            l.local_addr,
            l.local_port,
            l.pid
        ),
        Record::Process(p) => {
            let argv: Vec<String> = p.argv.iter().take(8).map(|a| display_bytes(a)).collect();
            let lineage: Vec<String> = p
                .ancestors
                .iter()
                .take(6)
                .map(|a| format!("{}({})", display_bytes(&a.comm), a.pid))
                .collect();
            format!(
                "{} {pod} {:?} pid={} uid={} {} [{}] <- {}",
                paint("33", "proc".into()),
                p.phase,
                p.pid,
                p.uid,
                display_bytes(&p.comm),
                argv.join(" "),
                lineage.join(" <- ")
            )
        }
        Record::Heartbeat(h) => format!(
            "{} {pod} flows={} processes={} rss={}KiB",
            paint("2", "heartbeat".into()),
            h.flows_tracked,
            h.processes_tracked,
            h.rss_bytes / 1024
        ),
        Record::Alert(a) => format!(
            "{} {pod} {:?} {} x{}: {}",
            paint("1;31", "ALERT".into()),
            a.severity,
            a.rule_id,
            a.count,
            a.output
        ),
        Record::Audit(a) => {
            let object = match &a.object {
                Some(o) => format!(
                    "{}/{}",
                    o.namespace.as_deref().unwrap_or("-"),
                    o.name.as_deref().unwrap_or("-")
                ),
                None => "-".into(),
            };
            // Names, agents and URIs are client-controlled: escaped like kernel bytes.
            let text = format!(
                "{} {object} by {} from {} ({}) -> {} {:?}",
                a.resource_path(),
                a.user.username,
                a.source_ip().map_or("?".into(), |ip| ip.to_string()),
                a.user_agent.as_deref().unwrap_or(""),
                a.response_code.map_or("?".into(), |c| c.to_string()),
                a.stage,
            );
            format!(
                "{} {} {} {}",
                paint("35", "audit".into()),
                display_bytes(a.cluster.as_bytes()),
                display_bytes(a.verb.as_bytes()),
                display_bytes(text.as_bytes())
            )
        }
    }
}
