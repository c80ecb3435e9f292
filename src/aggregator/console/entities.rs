//! Entity profiles: a pod (its activity over the scope, peers with bytes, what is newly
//! observed against the baseline, its alerts, the processes it started, and beside them the
//! API requests that created or changed it and its controllers), a process (its
//! ancestors and descendants, exited members kept, with the flows each held, and the alerts
//! of the tree) and a remote endpoint (who talked to it, on which ports, how much, whether
//! it is new). All from the Investigate answers.

use std::net::IpAddr;

use maud::html;

use super::overview::{self, activity_timeline, count_starts};
use super::render::{self, inert, Nav, Page};
use super::tables;
use super::{Ctx, PageError};
use crate::investigate::{Comparison, Edge};
use crate::model::workload_of;
use crate::model::{AlertRecord, ProcessPhase, Record};

/// Process starts a pod page lists at most.
const PROCESS_ROWS: usize = 200;

pub fn pod_page(ctx: &Ctx) -> Result<Page, PageError> {
    let (ns, pod) = ctx.pod()?;
    let scope = &ctx.scope;
    let pods = [pod.clone()];
    let namespaces = [ns.clone()];
    let q = ctx.question(&pods, &namespaces).ok_or_else(|| {
        PageError::NotFound("no such pod among the namespaces you may see".to_string())
    })?;
    let mut activity = activity_timeline(scope);
    let comparison = ctx
        .investigator
        .compare(&q, scope.baseline_start(), 50, &mut |_| {})?;
    count_starts(&mut activity, &comparison.starts);
    // The scope's processes from the raw records (rollups keep no process list).
    let mut processes = Vec::new();
    ctx.investigator.store().scan(
        &crate::aggregator::store::EventQuery {
            kinds: vec![crate::model::RecordKind::Process],
            ..q.query.clone()
        },
        &mut |e| {
            if let Record::Process(p) = e.record {
                if p.phase != ProcessPhase::Exit {
                    processes.push(p);
                }
            }
            processes.len() < PROCESS_ROWS
        },
    )?;
    let alerts = ctx.alerts(&pods, &namespaces)?;
    let alert_refs: Vec<&AlertRecord> = alerts.iter().rev().map(|(_, a)| a).collect();
    // Who made this pod run as it does: the API requests on it and its controllers, from
    // the baseline's start (a pod is often created long before the scope).
    let changes = ctx
        .investigator
        .workload_changes(&q, scope.baseline_start())?;
    let body = html! {
        p { "Workload " strong { (ns) "/" (workload_of(&pod)) } ". "
            (comparison.talkers.flows) " sockets on " (comparison.talkers.total_edges) " edges, "
            (activity.total(5)) " process starts, " (alerts.len()) " alerts in the scope." }
        (render::truncated(comparison.talkers.truncated))
        div.grid {
            (activity.render("chart-activity", "Activity"))
            section.panel aria-labelledby="alerts-h" {
                h2 #alerts-h { "Alerts" }
                @if alert_refs.is_empty() { (render::empty("alerts")) }
                @else { (tables::alerts(scope, &alert_refs)) }
            }
        }
        section.panel aria-labelledby="api-h" {
            h2 #api-h { "API activity" }
            p.muted { "Who created, changed, deleted or exec'd into this pod and its ReplicaSet, Deployment, StatefulSet, DaemonSet or Job, from the Kubernetes audit log, since the baseline's start." }
            @if changes.is_empty() { (render::empty("API requests on this workload")) }
            @else { (tables::api_changes(scope, &changes)) }
        }
        section.panel aria-labelledby="peers-h" {
            h2 #peers-h { "Peers" }
            @if comparison.talkers.edges.is_empty() { (render::empty("flows")) }
            @else { (tables::edges(scope, &comparison.talkers.edges, "By bytes moved")) }
        }
        div.grid {
            (overview::newly_observed(ctx, &comparison))
            (overview::increased(ctx, &comparison))
        }
        section.panel aria-labelledby="procs-h" {
            h2 #procs-h { "Processes started" }
            @if processes.is_empty() { (render::empty("process starts")) }
            @else {
                div.scroll { table {
                    thead { tr { th.num scope="col" { "Pid" } th scope="col" { "Executable" } th scope="col" { "Command line" } th.num scope="col" { "Uid" } th scope="col" { "Started" } } }
                    tbody { @for p in &processes { tr {
                        td.num { (p.pid) }
                        td { a href=(tables::process_href(scope, &ns, &pod, p.pid, Some(p.start_time))) { (tables::image(&p.comm, p.exe.as_deref())) } }
                        td { (render::argv(&p.argv)) }
                        td.num { (p.uid) }
                        td { (render::time(p.start_time)) }
                    } } }
                } }
                @if processes.len() == PROCESS_ROWS { p.muted { "The first " (PROCESS_ROWS) " only; " a href=(render::href("/search", scope, &[("kind", "process"), ("ns", &ns), ("pod", &pod)])) { "search for the rest" } "." } }
            }
        }
    };
    Ok(Page {
        title: format!("Pod {ns}/{pod}"),
        nav: Nav::Entity,
        path: "/pod",
        keep: vec![("ns", ns.clone()), ("pod", pod.clone())],
        body,
        scripts: &["uPlot.iife.min.js"],
    })
}

pub fn process_page(ctx: &Ctx) -> Result<Page, PageError> {
    let (ns, pod) = ctx.pod()?;
    let scope = &ctx.scope;
    let number = |name: &str| -> Result<Option<u64>, PageError> {
        ctx.params
            .get(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| PageError::BadRequest(format!("{name} {v:?} is not a number")))
            })
            .transpose()
    };
    let pid = number("pid")?
        .and_then(|p| u32::try_from(p).ok())
        .ok_or_else(|| PageError::BadRequest("pid is required".into()))?;
    let start = number("start")?;
    let pods = [pod.clone()];
    let namespaces = [ns.clone()];
    let q = ctx.question(&pods, &namespaces).ok_or_else(|| {
        PageError::NotFound("no such pod among the namespaces you may see".to_string())
    })?;
    let tree = ctx
        .investigator
        .process_tree(&q, pid, start)?
        .ok_or_else(|| {
            PageError::NotFound(format!("no process {pid} in pod {ns}/{pod} in the store"))
        })?;
    let root = tree.nodes.first().map(|n| n.process.clone());
    let members: std::collections::HashSet<(u32, u64)> = tree
        .nodes
        .iter()
        .map(|n| (n.process.pid, n.process.start_time))
        .chain(tree.ancestors.iter().map(|a| (a.pid, a.start_time)))
        .collect();
    let alerts = ctx.alerts(&pods, &namespaces)?;
    let tree_alerts: Vec<&AlertRecord> = alerts
        .iter()
        .rev()
        .map(|(_, a)| a)
        .filter(|a| {
            a.process
                .as_ref()
                .is_some_and(|p| members.contains(&(p.pid, p.start_time)))
        })
        .collect();
    let title = match &root {
        Some(p) => format!("Process {} in {ns}/{pod}", p.pid),
        None => format!("Process {pid}"),
    };
    let body = html! {
        @if let Some(p) = &root {
            section.panel aria-labelledby="facts-h" {
                h2 #facts-h { "The process" }
                dl.facts {
                    dt { "Executable" } dd { (tables::image(&p.comm, p.exe.as_deref())) }
                    dt { "Command line" } dd { (render::argv(&p.argv)) }
                    dt { "comm" } dd { (inert(&p.comm)) }
                    @if let Some(cwd) = &p.cwd { dt { "Working directory" } dd { (inert(cwd)) } }
                    dt { "Pid / parent" } dd { (p.pid) " / " (p.ppid) }
                    dt { "Uid / euid" } dd { (p.uid) " / " (p.euid) }
                    dt { "Started" } dd { (render::time(p.start_time)) }
                    dt { "Exited" } dd { @match p.exit_time { Some(t) => (render::time(t)), None => span.muted { "running when last seen" } } }
                    @if let Some(stdio) = p.stdio_is_socket { dt { "Standard input/output" } dd { @if stdio { strong { "a socket" } } @else { "not a socket" } } }
                    dt { "Pod" } dd { (tables::pod_link(scope, &ns, &pod)) }
                }
            }
        }
        section.panel aria-labelledby="tree-h" {
            h2 #tree-h { "Process tree" }
            p.muted { "Ancestors (root first), then this process and its descendants with the flows each held in the scope. Exited members are kept." }
            (render::truncated(tree.truncated))
            ol.tree {
                @for a in tree.ancestors.iter().rev() {
                    li {
                        a href=(tables::process_href(scope, &ns, &pod, a.pid, Some(a.start_time))) { (tables::image(&a.comm, a.exe.as_deref())) }
                        " pid " (a.pid) @if a.exited { " " span.muted { "(exited)" } }
                        br; (render::argv(&a.argv))
                    }
                }
            }
            ol.tree aria-label="This process and its descendants" {
                @for (i, n) in tree.nodes.iter().enumerate() {
                    @let p = &n.process;
                    li.focus[i == 0] class=(format!("d{}", n.depth.min(12))) {
                        @if n.depth > 0 { span.muted aria-hidden="true" { "└─ " } span.visually-hidden { "depth " (n.depth) ", " } }
                        a href=(tables::process_href(scope, &ns, &pod, p.pid, Some(p.start_time))) { (tables::image(&p.comm, p.exe.as_deref())) }
                        " pid " (p.pid) " uid " (p.uid)
                        @if p.phase == ProcessPhase::Exit || p.exit_time.is_some() { " " span.muted { "(exited)" } }
                        @if i == 0 { " " strong { "← this process" } }
                        br; (render::argv(&p.argv))
                        @if !n.flows.is_empty() {
                            div.flows { (tables::flows(scope, &n.flows)) }
                        }
                    }
                }
            }
        }
        section.panel aria-labelledby="talerts-h" {
            h2 #talerts-h { "Alerts of this tree" }
            @if tree_alerts.is_empty() { (render::empty("alerts on these processes")) }
            @else { (tables::alerts(scope, &tree_alerts)) }
        }
    };
    let mut keep = vec![
        ("ns", ns.clone()),
        ("pod", pod.clone()),
        ("pid", pid.to_string()),
    ];
    if let Some(start) = start {
        keep.push(("start", start.to_string()));
    }
    Ok(Page {
        title,
        nav: Nav::Entity,
        path: "/process",
        keep,
        body,
        scripts: &[],
    })
}

/// Edges of the whole answer (not only the top ones) that reach `ip`.
const ALL_EDGES: usize = 1_000_000;

pub fn endpoint_page(ctx: &Ctx) -> Result<Page, PageError> {
    let Some(raw) = ctx.params.get("ip") else {
        return Err(PageError::BadRequest("ip is required".into()));
    };
    let ip: IpAddr = raw
        .parse()
        .map_err(|_| PageError::BadRequest(format!("{raw:?} is not an IP address")))?;
    let scope = &ctx.scope;
    let comparison = match ctx.question(&[], &[]) {
        Some(q) => ctx
            .investigator
            .compare(&q, scope.baseline_start(), ALL_EDGES, &mut |_| {})?,
        None => Comparison::default(),
    };
    let to_ip = |edges: &[Edge]| -> Vec<Edge> {
        edges
            .iter()
            .filter(|e| e.peer_addr == ip)
            .cloned()
            .collect()
    };
    let edges = to_ip(&comparison.talkers.edges);
    let new_edges = to_ip(&comparison.new.edges);
    let sent: u64 = edges.iter().map(|e| e.bytes_sent).sum();
    let received: u64 = edges.iter().map(|e| e.bytes_received).sum();
    let connections: u64 = edges.iter().map(|e| e.connections).sum();
    let first = edges.iter().map(|e| e.first_seen).min().unwrap_or(0);
    let last = edges.iter().map(|e| e.last_seen).max().unwrap_or(0);
    let mut ports: Vec<u16> = edges.iter().map(|e| e.port).collect();
    ports.sort_unstable();
    ports.dedup();
    let peer_pod = edges
        .iter()
        .find_map(|e| e.peer_pod_name.clone().zip(e.peer_pod_namespace.clone()));
    let alerts = ctx.alerts(&[], &[])?;
    let touching: Vec<&AlertRecord> = alerts
        .iter()
        .rev()
        .map(|(_, a)| a)
        .filter(|a| a.flows.iter().any(|f| f.remote_addr == Some(ip)))
        .collect();
    let ip_text = ip.to_string();
    let body = html! {
        section.panel aria-labelledby="ep-h" {
            h2 #ep-h { "The endpoint" }
            dl.facts {
                dt { "Address" } dd { span.raw { (ip) } }
                @if let Some((pod, ns)) = &peer_pod { dt { "Pod" } dd { (tables::pod_link(scope, ns, pod)) } }
                dt { "Network" } dd { @match edges.first() { Some(e) => (render::scope_label(e.scope)), None => "—" } }
                dt { "Ports" } dd { @for p in &ports { span.tag { (p) } } }
                dt { "Connections" } dd { (connections) }
                dt { "Bytes sent to it / received" } dd { (render::bytes(sent)) " / " (render::bytes(received)) }
                dt { "First / last seen" } dd { (render::time(first)) " / " (render::time(last)) }
                dt { "New in this scope" } dd {
                    @if edges.is_empty() { "—" }
                    @else if new_edges.len() == edges.len() { strong { "yes" } ": no workload talked to it in the baseline" }
                    @else if new_edges.is_empty() { "no: seen in the baseline" }
                    @else { strong { "partly" } ": " (new_edges.len()) " of " (edges.len()) " edges are new" }
                }
            }
        }
        (render::truncated(comparison.talkers.truncated))
        section.panel aria-labelledby="who-h" {
            h2 #who-h { "Who talked to it" }
            @if edges.is_empty() { (render::empty("flows with this endpoint")) }
            @else { (tables::edges(scope, &edges, "Workloads and executables, by bytes")) }
        }
        section.panel aria-labelledby="ealerts-h" {
            h2 #ealerts-h { "Alerts with a flow to it" }
            @if touching.is_empty() { (render::empty("alerts")) }
            @else { (tables::alerts(scope, &touching)) }
        }
        p { a href=(render::href("/search", scope, &[("kind", "flow"), ("peer", &ip_text)])) { "Search the flow records with this peer" } }
    };
    Ok(Page {
        title: format!("Endpoint {ip}"),
        nav: Nav::Entity,
        path: "/endpoint",
        keep: vec![("ip", ip_text.clone())],
        body,
        scripts: &[],
    })
}
