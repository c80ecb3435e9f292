//! Tables more than one page shows (edges, flows, alerts) and the links between entities.

use maud::{html, Markup};

use super::render::{self, href, inert};
use super::scope::TimeScope;
use crate::investigate::Edge;
use crate::model::{AlertRecord, AuditRecord, FlowRecord};

pub fn pod_link(scope: &TimeScope, ns: &str, pod: &str) -> Markup {
    html! { a href=(href("/pod", scope, &[("ns", ns), ("pod", pod)])) { (ns) "/" (pod) } }
}

pub fn process_href(
    scope: &TimeScope,
    ns: &str,
    pod: &str,
    pid: u32,
    start: Option<u64>,
) -> String {
    let pid = pid.to_string();
    match start {
        Some(start) => {
            let start = start.to_string();
            href(
                "/process",
                scope,
                &[("ns", ns), ("pod", pod), ("pid", &pid), ("start", &start)],
            )
        }
        None => href(
            "/process",
            scope,
            &[("ns", ns), ("pod", pod), ("pid", &pid)],
        ),
    }
}

pub fn endpoint_link(scope: &TimeScope, ip: &std::net::IpAddr) -> Markup {
    let ip = ip.to_string();
    html! { a href=(href("/endpoint", scope, &[("ip", &ip)])) { (ip) } }
}

pub fn alert_href(scope: &TimeScope, id: &str) -> String {
    href("/alert", scope, &[("id", id)])
}

/// The executable of an edge or process: exe when known, else comm.
pub fn image(comm: &[u8], exe: Option<&[u8]>) -> Markup {
    match exe {
        Some(exe) => inert(exe),
        None if comm.is_empty() => html! { span.muted { "(unattributed)" } },
        None => inert(comm),
    }
}

/// Edges with their pods, executables (linked to a process of the edge), peers and bytes.
pub fn edges(scope: &TimeScope, edges: &[Edge], caption: &str) -> Markup {
    html! {
        div.scroll {
            table {
                caption.muted { (caption) }
                thead { tr {
                    th scope="col" { "Pod" } th scope="col" { "Executable" } th scope="col" { "Direction" }
                    th scope="col" { "Network" } th scope="col" { "Peer" } th.num scope="col" { "Port" }
                    th.num scope="col" { "Conns" } th.num scope="col" { "Sent" } th.num scope="col" { "Received" }
                    th scope="col" { "Last seen" }
                } }
                tbody {
                    @for e in edges {
                        tr {
                            td { (pod_link(scope, &e.pod_namespace, &e.pod_name)) }
                            td {
                                @match e.pids.first() {
                                    Some(pid) => a href=(process_href(scope, &e.pod_namespace, &e.pod_name, *pid, None)) { (image(&e.comm, e.exe.as_deref())) },
                                    None => (image(&e.comm, e.exe.as_deref())),
                                }
                            }
                            td { (render::direction_label(e.direction)) }
                            td { (render::scope_label(e.scope)) }
                            td {
                                (endpoint_link(scope, &e.peer_addr))
                                @if let (Some(ns), Some(pod)) = (&e.peer_pod_namespace, &e.peer_pod_name) {
                                    " (" (pod_link(scope, ns, pod)) ")"
                                }
                            }
                            td.num { (e.port) }
                            td.num { (e.connections) }
                            td.num { (render::bytes(e.bytes_sent)) }
                            td.num { (render::bytes(e.bytes_received)) }
                            td { (render::time(e.last_seen)) }
                        }
                    }
                }
            }
        }
    }
}

/// Flows (one row per socket, its last counters).
pub fn flows(scope: &TimeScope, flows: &[FlowRecord]) -> Markup {
    html! {
        div.scroll {
            table {
                thead { tr {
                    th scope="col" { "Peer" } th.num scope="col" { "Port" } th scope="col" { "Direction" }
                    th scope="col" { "Network" } th scope="col" { "State" } th.num scope="col" { "Sent" }
                    th.num scope="col" { "Received" } th scope="col" { "First seen" } th scope="col" { "Ended" }
                } }
                tbody {
                    @for f in flows {
                        tr {
                            td { @match f.remote_addr { Some(ip) => (endpoint_link(scope, &ip)), None => span.muted { "(none)" } } }
                            td.num { @if let Some(p) = f.remote_port { (p) } }
                            td { (render::direction_label(f.direction)) }
                            td { (render::scope_label(f.scope)) }
                            td { (f.state) }
                            td.num { @match f.bytes_sent { Some(b) => (render::bytes(b)), None => "—" } }
                            td.num { @match f.bytes_received { Some(b) => (render::bytes(b)), None => "—" } }
                            td { (render::time(f.first_seen)) }
                            td { @match f.ended_at { Some(t) => (render::time(t)), None => span.muted { "open" } } }
                        }
                    }
                }
            }
        }
    }
}

/// Alerts, newest first.
pub fn alerts(scope: &TimeScope, alerts: &[&AlertRecord]) -> Markup {
    html! {
        div.scroll {
            table {
                thead { tr {
                    th scope="col" { "Severity" } th scope="col" { "Rule" } th scope="col" { "Pod" }
                    th scope="col" { "Process" } th.num scope="col" { "Count" } th scope="col" { "Last seen" }
                } }
                tbody {
                    @for a in alerts {
                        tr {
                            td { (render::severity(a.severity)) }
                            td { a href=(alert_href(scope, &a.id)) { (a.rule_name) } }
                            td { (pod_link(scope, &a.pod_namespace, &a.pod_name)) }
                            td { @if let Some(p) = &a.process {
                                a href=(process_href(scope, &a.pod_namespace, &a.pod_name, p.pid, Some(p.start_time))) {
                                    (image(&p.comm, p.exe.as_deref())) " (" (p.pid) ")"
                                }
                            } }
                            td.num { (a.count) }
                            td { (render::time(a.last_seen)) }
                        }
                    }
                }
            }
        }
    }
}

/// API requests that created or changed a workload (its pod, ReplicaSet, Deployment...):
/// when, who (and as whom), what, from where, with which client, and the answer. Every
/// name here came from a client of the API server and is rendered inert.
pub fn api_changes(scope: &TimeScope, changes: &[AuditRecord]) -> Markup {
    html! {
        div.scroll { table {
            caption { "Oldest first" }
            thead { tr {
                th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Request" }
                th scope="col" { "Object" } th scope="col" { "From" } th scope="col" { "Client" }
                th.num scope="col" { "Answer" }
            } }
            tbody { @for a in changes { tr {
                td { (render::time(a.request_received)) }
                td {
                    (render::inert_str(&a.user.username))
                    @if let Some(as_user) = &a.impersonated_user { " as " (render::inert_str(&as_user.username)) }
                }
                td { (render::inert_str(&a.verb)) " " (render::inert_str(&a.resource_path())) }
                td { (render::inert_str(a.object.as_ref().and_then(|o| o.name.as_deref()).unwrap_or(""))) }
                td { @match a.source_ip() { Some(ip) => (endpoint_link(scope, &ip)), None => span.muted { "—" } } }
                td { (render::inert_str(a.user_agent.as_deref().unwrap_or(""))) }
                td.num { @match a.response_code { Some(code) => (code), None => span.muted { "—" } } " " (a.outcome().as_str()) }
            } } }
        } }
    }
}
