//! `procflow investigate`: questions over the aggregator's stored records — who talked to
//! whom (`talkers`), what is loud (`loud`), what is new (`new`), which process tree did this
//! (`tree`), and what the Kubernetes API saw (`api`). `--json` prints the answer as one JSON document (`investigate::*` serde form).

use std::time::Duration;

use anyhow::Context;

use crate::client::{directions_to_proto, scopes_to_proto};
use crate::config::parse_duration;
use crate::investigate::{Edge, EdgeOrder, NewActivity, ProcessTree, Talkers};
use crate::model::{display_bytes, now_ns, Direction, Scope, UnixNanos};
use crate::proto::v1 as pb;
use crate::transport::ConnectArgs;
use crate::wire::{self, Limits};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub question: Question,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Question {
    /// Who talked to whom: pod → executable → peer:port edges with connections and bytes.
    Talkers(TalkersArgs),
    /// What is loud: the edges that moved the most bytes (talkers ordered by volume).
    Loud(TalkersArgs),
    /// What is new: peers, executables and listening ports not seen in a baseline.
    New(NewArgs),
    /// Which process tree did this: a process, its ancestry, its descendants and their flows.
    Tree(TreeArgs),
    /// The Kubernetes API (from audit logs): calls by verb, resource, subject and source IP
    /// with success / failed / unauthorized / forbidden counts, calls new against the
    /// baseline, subjects with increased volume; with --pod and --namespace, who created or
    /// changed those pods and their controllers.
    Api(ApiArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct WindowArgs {
    /// Only records of the last DUR (e.g. 10m, 2h).
    #[arg(long, env = "PROCFLOW_SINCE", default_value = "1h", value_parser = parse_duration)]
    pub since: Duration,
    /// Only these pods; repeatable.
    #[arg(long = "pod", env = "PROCFLOW_POD", value_delimiter = ',')]
    pub pods: Vec<String>,
    /// Only these namespaces; repeatable.
    #[arg(long = "namespace", env = "PROCFLOW_NAMESPACE", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Only flows of these scopes; repeatable.
    #[arg(long = "scope", env = "PROCFLOW_SCOPE", value_delimiter = ',', value_parser = ["local", "east-west", "north-south"])]
    pub scopes: Vec<String>,
    /// Only flows of these directions; repeatable.
    #[arg(long = "direction", env = "PROCFLOW_DIRECTION", value_delimiter = ',', value_parser = ["inbound", "outbound"])]
    pub directions: Vec<String>,
    /// At most this many answers (per list).
    #[arg(long, env = "PROCFLOW_LIMIT", default_value_t = 20)]
    pub limit: u32,
    /// Print the answer as JSON.
    #[arg(long, env = "PROCFLOW_JSON")]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TalkersArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub window: WindowArgs,
    /// Order edges by total bytes, connection count or last activity.
    #[arg(long, env = "PROCFLOW_ORDER", value_enum)]
    pub order: Option<EdgeOrder>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct NewArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub window: WindowArgs,
    /// How far back before the window the baseline reaches.
    #[arg(long, env = "PROCFLOW_BASELINE", default_value = "24h", value_parser = parse_duration)]
    pub baseline: Duration,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The scope (--scope and --direction are for flows and are refused here).
    #[command(flatten)]
    pub window: WindowArgs,
    /// How far back before the scope the baseline reaches (Detective's 45 days).
    #[arg(long, env = "PROCFLOW_BASELINE", default_value = "45d", value_parser = parse_duration)]
    pub baseline: Duration,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TreeArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The pod the process ran in (pids are per pod).
    #[arg(long, env = "PROCFLOW_POD")]
    pub pod: String,
    /// The pod's namespace (when pod names repeat across namespaces).
    #[arg(long, env = "PROCFLOW_NAMESPACE")]
    pub namespace: Option<String>,
    /// The process's pid, as the pod sees it.
    #[arg(long, env = "PROCFLOW_PID")]
    pub pid: u32,
    /// Which process that had this pid (unix ns, its `start_time`); default: the latest.
    #[arg(long, env = "PROCFLOW_START_TIME")]
    pub start_time: Option<u64>,
    /// Flows of the last DUR are attached to the tree.
    #[arg(long, env = "PROCFLOW_SINCE", default_value = "24h", value_parser = parse_duration)]
    pub since: Duration,
    /// Print the answer as JSON.
    #[arg(long, env = "PROCFLOW_JSON")]
    pub json: bool,
}

fn ago(d: Duration) -> UnixNanos {
    now_ns().saturating_sub(d.as_nanos() as u64)
}

fn window(w: &WindowArgs) -> pb::Window {
    pb::Window {
        filter: Some(pb::Filter {
            kinds: Vec::new(),
            pods: w.pods.clone(),
            namespaces: w.namespaces.clone(),
            scopes: scopes_to_proto(&w.scopes),
            directions: directions_to_proto(&w.directions),
        }),
        since: ago(w.since),
        until: 0,
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let limits = Limits::default();
        let output = match args.question {
            Question::Talkers(a) => talkers(a, EdgeOrder::Bytes, "who talked to whom").await?,
            Question::Loud(a) => talkers(a, EdgeOrder::Bytes, "loudest edges").await?,
            Question::New(a) => {
                let mut client = investigate_client(&a.connect).await?;
                let w = window(&a.window);
                let baseline_since = w.since.saturating_sub(a.baseline.as_nanos() as u64);
                let request = a.connect.request(pb::NewActivityRequest {
                    window: Some(w),
                    baseline_since,
                    limit: a.window.limit,
                })?;
                let reply = client
                    .new_activity(request)
                    .await
                    .context("asking what is new")?
                    .into_inner();
                let answer = wire::new_activity_from_proto(reply, &limits)?;
                if a.window.json {
                    serde_json::to_string_pretty(&answer)?
                } else {
                    show_new(&answer)
                }
            }
            Question::Api(a) => {
                if !a.window.scopes.is_empty() || !a.window.directions.is_empty() {
                    anyhow::bail!("--scope and --direction are about flows, not API calls");
                }
                let mut client = investigate_client(&a.connect).await?;
                let w = window(&a.window);
                let baseline_since = w.since.saturating_sub(a.baseline.as_nanos() as u64);
                let request = a.connect.request(pb::ApiActivityRequest {
                    window: Some(w),
                    baseline_since,
                    limit: a.window.limit,
                })?;
                let reply = client
                    .api_activity(request)
                    .await
                    .context("asking about the Kubernetes API")?
                    .into_inner();
                let answer = wire::api::api_activity_from_proto(reply, &limits)?;
                if a.window.json {
                    serde_json::to_string_pretty(&answer)?
                } else {
                    super::investigate_api::show(&answer)
                }
            }
            Question::Tree(a) => {
                let mut client = investigate_client(&a.connect).await?;
                let request = a.connect.request(pb::ProcessTreeRequest {
                    pod_name: a.pod.clone(),
                    pod_namespace: a.namespace.clone().unwrap_or_default(),
                    pid: a.pid,
                    start_time: a.start_time,
                    since: ago(a.since),
                    until: 0,
                })?;
                let reply = client
                    .process_tree(request)
                    .await
                    .context("asking for the process tree")?
                    .into_inner();
                let answer = wire::tree_from_proto(reply, &limits)?;
                if a.json {
                    serde_json::to_string_pretty(&answer)?
                } else {
                    show_tree(&answer)
                }
            }
        };
        println!("{output}");
        Ok(())
    })
}

/// A client of the aggregator's Investigate service (answers can be large).
async fn investigate_client(
    connect_args: &ConnectArgs,
) -> anyhow::Result<pb::investigate_client::InvestigateClient<tonic::transport::Channel>> {
    let channel = connect_args.connect().await?;
    Ok(pb::investigate_client::InvestigateClient::new(channel).max_decoding_message_size(64 << 20))
}

async fn talkers(a: TalkersArgs, default: EdgeOrder, title: &str) -> anyhow::Result<String> {
    let mut client = investigate_client(&a.connect).await?;
    let order = match a.order.unwrap_or(default) {
        EdgeOrder::Bytes => pb::EdgeOrder::Bytes,
        EdgeOrder::Connections => pb::EdgeOrder::Connections,
        EdgeOrder::Recent => pb::EdgeOrder::Recent,
    };
    let request = a.connect.request(pb::TalkersRequest {
        window: Some(window(&a.window)),
        order: order as i32,
        limit: a.window.limit,
    })?;
    let reply = client
        .talkers(request)
        .await
        .context("asking who talked to whom")?
        .into_inner();
    let answer = wire::talkers_from_proto(reply)?;
    Ok(if a.window.json {
        serde_json::to_string_pretty(&answer)?
    } else {
        show_talkers(&answer, title)
    })
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub(crate) fn when(t: UnixNanos) -> String {
    let secs = now_ns().saturating_sub(t) / 1_000_000_000;
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

fn program(comm: &[u8], exe: &Option<Vec<u8>>) -> String {
    match exe {
        Some(exe) => display_bytes(exe),
        None if comm.is_empty() => "(unattributed)".into(),
        None => format!("[{}]", display_bytes(comm)),
    }
}

fn edge_line(e: &Edge) -> String {
    let arrow = match e.direction {
        Direction::Inbound => "<-",
        _ => "->",
    };
    let scope = match e.scope {
        Scope::Local => "local",
        Scope::EastWest => "east-west",
        Scope::NorthSouth => "north-south",
        Scope::Unspecified => "?",
    };
    let peer = match (&e.peer_pod_namespace, &e.peer_pod_name) {
        (Some(ns), Some(pod)) => format!("{} ({ns}/{pod})", e.peer_addr),
        _ => e.peer_addr.to_string(),
    };
    let port = match e.direction {
        Direction::Inbound => format!("port {} {arrow} {peer}", e.port),
        _ => format!("{arrow} {peer}:{}", e.port),
    };
    format!(
        "{}/{} {} {port} {:?} {scope}  conns={} sent={} recv={} last {} pids={:?}",
        e.pod_namespace,
        e.pod_name,
        program(&e.comm, &e.exe),
        e.protocol,
        e.connections,
        size(e.bytes_sent),
        size(e.bytes_received),
        when(e.last_seen),
        e.pids
    )
}

fn show_talkers(t: &Talkers, title: &str) -> String {
    let mut out = format!(
        "{title}: {} of {} edges from {} sockets{}\n",
        t.edges.len(),
        t.total_edges,
        t.flows,
        if t.truncated { " (truncated)" } else { "" }
    );
    for e in &t.edges {
        out.push_str(&edge_line(e));
        out.push('\n');
    }
    out.trim_end().to_owned()
}

fn show_new(n: &NewActivity) -> String {
    let mut out = String::new();
    if n.baseline_flows == 0 && n.baseline_processes == 0 {
        out.push_str("note: the baseline holds no records; everything in the window is new\n");
    }
    out.push_str(&format!("new peers: {}\n", n.edges.len()));
    for e in &n.edges {
        out.push_str(&format!("  {}\n", edge_line(e)));
    }
    out.push_str(&format!("new executables: {}\n", n.executables.len()));
    for x in &n.executables {
        let argv: Vec<String> = x
            .process
            .argv
            .iter()
            .take(8)
            .map(|a| display_bytes(a))
            .collect();
        out.push_str(&format!(
            "  {}/{} {} pid={} [{}] first {}\n",
            x.pod_namespace,
            x.pod_name,
            program(&x.comm, &x.exe),
            x.process.pid,
            argv.join(" "),
            when(x.first_seen)
        ));
    }
    out.push_str(&format!("new listening ports: {}\n", n.listeners.len()));
    for l in &n.listeners {
        out.push_str(&format!(
            "  {}/{} {:?} {}:{} {} first {}\n",
            l.pod_namespace,
            l.pod_name,
            l.protocol,
            l.local_addr,
            l.port,
            program(&l.comm, &l.exe),
            when(l.first_seen)
        ));
    }
    if n.truncated {
        out.push_str("(truncated: the window or baseline held more than one answer may scan)\n");
    }
    out.trim_end().to_owned()
}

fn show_tree(t: &ProcessTree) -> String {
    let mut out = String::new();
    for (i, a) in t.ancestors.iter().rev().enumerate() {
        out.push_str(&format!(
            "{}{} pid={}{}\n",
            "  ".repeat(i),
            program(&a.comm, &a.exe),
            a.pid,
            if a.exited { " (exited)" } else { "" }
        ));
    }
    let base = t.ancestors.len();
    for n in &t.nodes {
        let p = &n.process;
        let indent = "  ".repeat(base + n.depth as usize);
        let argv: Vec<String> = p.argv.iter().take(8).map(|a| display_bytes(a)).collect();
        out.push_str(&format!(
            "{indent}{}{} pid={} uid={} [{}] {:?}\n",
            if n.depth == 0 { "* " } else { "" },
            program(&p.comm, &p.exe),
            p.pid,
            p.uid,
            argv.join(" "),
            p.phase
        ));
        for f in &n.flows {
            let remote = match (f.remote_addr, f.remote_port) {
                (Some(a), Some(port)) => format!("{a}:{port}"),
                _ => "(unconnected)".into(),
            };
            let bytes = match (f.bytes_sent, f.bytes_received) {
                (Some(s), Some(r)) => format!("sent={} recv={}", size(s), size(r)),
                _ => "bytes n/a".into(),
            };
            out.push_str(&format!(
                "{indent}  flow {:?} {:?} {}:{} -> {remote} {bytes} {:?}\n",
                f.protocol, f.direction, f.local_addr, f.local_port, f.phase
            ));
        }
    }
    if t.truncated {
        out.push_str("(truncated)\n");
    }
    out.trim_end().to_owned()
}
