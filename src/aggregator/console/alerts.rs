//! Alerts: grouped by rule and workload (count, first and last seen, highest severity),
//! kept live by a long poll (htmx re-asks as soon as an answer comes; the server answers when
//! a new alert for this viewer reaches the hub, or after a while); a group's alerts; and an
//! alert's page with its evidence, the process and its lineage as a tree, the triggering
//! flows and its finding group (the other alerts of the same process tree or workload).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use maud::{html, Markup};

use super::render::{self, href, inert, inert_str, Nav, Page};
use super::scope::TimeScope;
use super::tables;
use super::{fragment, Console, Ctx, PageError};
use crate::aggregator::hub::LiveFilter;
use crate::model::workload_of;
use crate::model::{AlertRecord, RecordKind, Severity};

/// How long a live request waits for a new alert before answering with the same table.
const LIVE_WAIT: Duration = Duration::from_secs(25);

pub fn groups_page(ctx: &Ctx) -> Result<Page, PageError> {
    let alerts = ctx.alerts(&[], &[])?;
    Ok(Page {
        title: "Alerts".into(),
        nav: Nav::Alerts,
        path: "/alerts",
        keep: Vec::new(),
        body: live_groups(ctx, &alerts),
        scripts: &[],
    })
}

/// Answers when an alert newer than `after` exists for this viewer, or after [`LIVE_WAIT`].
pub async fn live_handler(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let after: u64 = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    // A viewer that may see nothing gets its (empty) answer at once, and never a wake-up
    // from another namespace's alert.
    if let Some(namespaces) = console.viewer(&headers).and_then(|v| v.visible()) {
        // Subscribe first, then look: an alert stored in between is seen by the scan.
        let mut live = console.hub().subscribe(LiveFilter::new(
            vec![RecordKind::Alert],
            Vec::new(),
            namespaces,
            Vec::new(),
            Vec::new(),
        ));
        let newest = match super::prepare(&console, &headers, &uri, q.clone(), false) {
            Ok(prepared) => super::compute(&console, &prepared, |ctx| {
                Ok(ctx
                    .alerts(&[], &[])?
                    .iter()
                    .map(|(at, _)| *at)
                    .max()
                    .unwrap_or(0))
            })
            .await
            .ok(),
            Err(_) => None,
        };
        if newest.is_some_and(|n| n <= after) {
            let _ = tokio::time::timeout(LIVE_WAIT, live.recv()).await;
            // Alerts of one batch arrive together: let the rest of it be stored.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    fragment(console, headers, uri, q, |ctx| {
        let alerts = ctx.alerts(&[], &[])?;
        Ok(live_groups(ctx, &alerts))
    })
    .await
}

/// One rule firing in one workload.
pub struct Group<'a> {
    pub rule_id: &'a str,
    pub rule_name: &'a str,
    pub namespace: &'a str,
    pub workload: &'a str,
    pub severity: Severity,
    pub alerts: usize,
    pub count: u64,
    pub first_seen: u64,
    pub last_seen: u64,
    pub pods: BTreeSet<&'a str>,
}

/// Alerts grouped by rule and workload, the most severe and most recent first.
pub fn groups(alerts: &[(u64, AlertRecord)]) -> Vec<Group<'_>> {
    let mut by_key: HashMap<(&str, &str, &str), Group> = HashMap::new();
    for (_, a) in alerts {
        let workload = workload_of(&a.pod_name);
        let g = by_key
            .entry((a.rule_id.as_str(), a.pod_namespace.as_str(), workload))
            .or_insert_with(|| Group {
                rule_id: &a.rule_id,
                rule_name: &a.rule_name,
                namespace: &a.pod_namespace,
                workload,
                severity: a.severity,
                alerts: 0,
                count: 0,
                first_seen: a.first_seen,
                last_seen: a.last_seen,
                pods: BTreeSet::new(),
            });
        g.severity = g.severity.max(a.severity);
        g.alerts += 1;
        g.count += a.count.max(1);
        g.first_seen = g.first_seen.min(a.first_seen);
        g.last_seen = g.last_seen.max(a.last_seen);
        g.pods.insert(&a.pod_name);
    }
    let mut out: Vec<Group> = by_key.into_values().collect();
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.last_seen.cmp(&a.last_seen))
            .then(a.rule_id.cmp(b.rule_id))
    });
    out
}

fn group_href(scope: &TimeScope, g: &Group) -> String {
    href(
        "/alerts/group",
        scope,
        &[
            ("rule", g.rule_id),
            ("ns", g.namespace),
            ("workload", g.workload),
        ],
    )
}

/// The groups table inside the element htmx keeps live.
fn live_groups(ctx: &Ctx, alerts: &[(u64, AlertRecord)]) -> Markup {
    let scope = &ctx.scope;
    let newest = alerts
        .iter()
        .map(|(at, _)| *at)
        .max()
        .unwrap_or(0)
        .to_string();
    let groups = groups(alerts);
    let live = scope.is_live(ctx.now);
    let mut extra: Vec<(&str, &str)> = vec![("after", &newest)];
    if let Some(kind) = ctx.params.get("kind") {
        extra.push(("kind", kind));
    }
    html! {
        div #alert-groups
            hx-get=[live.then(|| href("/alerts/live", scope, &extra))]
            hx-trigger=[live.then_some("load")]
            hx-swap=[live.then_some("outerHTML")] {
            p.live role="status" {
                (alerts.len()) " alerts in " (groups.len()) " groups. "
                @if live { "Updates as alerts arrive (last checked " (render::time(ctx.now)) ")." }
                @else { "This scope is in the past: no live updates." }
            }
            @if groups.is_empty() { (render::empty("alerts")) }
            @else {
                div.scroll { table {
                    thead { tr {
                        th scope="col" { "Severity" } th scope="col" { "Rule" } th scope="col" { "Workload" }
                        th.num scope="col" { "Alerts" } th.num scope="col" { "Events" } th.num scope="col" { "Pods" }
                        th scope="col" { "First seen" } th scope="col" { "Last seen" }
                    } }
                    tbody { @for g in &groups { tr {
                        td { (render::severity(g.severity)) }
                        td { a href=(group_href(scope, g)) { (g.rule_name) } br; span.muted { (g.rule_id) } }
                        td { (g.namespace) "/" (g.workload) }
                        td.num { (g.alerts) }
                        td.num { (g.count) }
                        td.num { (g.pods.len()) }
                        td { (render::time(g.first_seen)) }
                        td { (render::time(g.last_seen)) }
                    } } }
                } }
            }
        }
    }
}

pub fn group_page(ctx: &Ctx) -> Result<Page, PageError> {
    let (Some(rule), Some(ns), Some(workload)) = (
        ctx.params.get("rule"),
        ctx.params.get("ns"),
        ctx.params.get("workload"),
    ) else {
        return Err(PageError::BadRequest(
            "rule, ns and workload are required".into(),
        ));
    };
    let alerts = ctx.alerts(&[], &[ns.to_owned()])?;
    let mut members: Vec<&AlertRecord> = alerts
        .iter()
        .map(|(_, a)| a)
        .filter(|a| a.rule_id == rule && workload_of(&a.pod_name) == workload)
        .collect();
    members.reverse();
    let title = members
        .first()
        .map(|a| a.rule_name.clone())
        .unwrap_or_else(|| rule.to_owned());
    let body = html! {
        p { "Rule " strong { (rule) } " in workload " strong { (ns) "/" (workload) } ": " (members.len()) " alerts, newest first." }
        @if members.is_empty() { (render::empty("alerts of this group")) }
        @else { (tables::alerts(&ctx.scope, &members)) }
    };
    Ok(Page {
        title,
        nav: Nav::Alerts,
        path: "/alerts/group",
        keep: vec![
            ("rule", rule.into()),
            ("ns", ns.into()),
            ("workload", workload.into()),
        ],
        body,
        scripts: &[],
    })
}

/// Whether two alerts share a process tree: one's process is in the other's lineage, or
/// they share an ancestor below the pod's init.
fn same_tree(a: &AlertRecord, b: &AlertRecord) -> bool {
    let (Some(pa), Some(pb)) = (&a.process, &b.process) else {
        return false;
    };
    if a.pod_namespace != b.pod_namespace || a.pod_name != b.pod_name {
        return false;
    }
    let lineage = |p: &crate::model::ProcessRecord| -> HashSet<(u32, u64)> {
        // Skip the root (the container's init): every process shares it.
        let mut set: HashSet<(u32, u64)> = p
            .ancestors
            .iter()
            .skip(1)
            .map(|x| (x.pid, x.start_time))
            .collect();
        set.insert((p.pid, p.start_time));
        set
    };
    !lineage(pa).is_disjoint(&lineage(pb))
}

pub fn alert_page(ctx: &Ctx) -> Result<Page, PageError> {
    let Some(id) = ctx.params.get("id") else {
        return Err(PageError::BadRequest("id is required".into()));
    };
    let scoped = ctx.alerts(&[], &[])?;
    let found = scoped
        .iter()
        .rev()
        .find(|(_, a)| a.id == id)
        .map(|(_, a)| a.clone());
    let alert = match found {
        Some(a) => a,
        None => {
            // Linked from another scope: look through everything the viewer may see.
            let wide = Ctx {
                scope: TimeScope {
                    start: 0,
                    ..ctx.scope
                },
                investigator: ctx.investigator.clone(),
                viewer: ctx.viewer.clone(),
                params: ctx.params.clone(),
                rules: ctx.rules.clone(),
                now: ctx.now,
            };
            wide.alerts(&[], &[])?
                .into_iter()
                .rev()
                .find(|(_, a)| a.id == id)
                .map(|(_, a)| a)
                .ok_or_else(|| PageError::NotFound(format!("no alert {id:?}")))?
        }
    };
    let scope = &ctx.scope;
    let group: Vec<&AlertRecord> = scoped
        .iter()
        .rev()
        .map(|(_, a)| a)
        .filter(|a| a.id != alert.id)
        .filter(|a| {
            same_tree(&alert, a)
                || (a.pod_namespace == alert.pod_namespace
                    && workload_of(&a.pod_name) == workload_of(&alert.pod_name))
        })
        .collect();
    let group_severity = group
        .iter()
        .map(|a| a.severity)
        .chain([alert.severity])
        .max();
    let body = html! {
        div.grid {
            section.panel aria-labelledby="what-h" {
                h2 #what-h { "What fired" }
                dl.facts {
                    dt { "Severity" } dd { (render::severity(alert.severity)) }
                    dt { "Rule" } dd { (alert.rule_name) " " span.muted { "(" (alert.rule_id) ")" } }
                    dt { "Pod" } dd { (tables::pod_link(scope, &alert.pod_namespace, &alert.pod_name)) }
                    dt { "Node" } dd { (alert.node_name) }
                    @if let Some(c) = &alert.container_id { dt { "Container" } dd { span.raw { (c) } } }
                    dt { "Raised" } dd { (render::time(alert.time)) }
                    dt { "First / last seen" } dd { (render::time(alert.first_seen)) " / " (render::time(alert.last_seen)) }
                    dt { "Events" } dd { (alert.count) }
                    dt { "Tags" } dd { @for t in &alert.tags { span.tag { (t) } } }
                }
                h3 { "Output" }
                p { (inert_str(&alert.output)) }
                h3 { "Evidence" }
                @if alert.evidence.is_empty() { (render::empty("evidence")) }
                ul { @for e in &alert.evidence { li { (inert_str(e)) } } }
            }
            (lineage(ctx, &alert))
        }
        section.panel aria-labelledby="flows-h" {
            h2 #flows-h { "Triggering flows" }
            @if alert.flows.is_empty() { (render::empty("flows on this alert")) }
            @else { (tables::flows(scope, &alert.flows)) }
        }
        section.panel aria-labelledby="group-h" {
            h2 #group-h { "Finding group" }
            p { "This alert and " (group.len()) " others of the same process tree or workload in the scope; group severity "
                @if let Some(s) = group_severity { (render::severity(s)) } "." }
            @if !group.is_empty() { (tables::alerts(scope, &group)) }
        }
    };
    Ok(Page {
        title: format!("Alert: {}", alert.rule_name),
        nav: Nav::Alerts,
        path: "/alert",
        keep: vec![("id", id.to_owned())],
        body,
        scripts: &[],
    })
}

/// The alert's process under its ancestors, root first, each linked to its process page.
fn lineage(ctx: &Ctx, alert: &AlertRecord) -> Markup {
    let scope = &ctx.scope;
    let (ns, pod) = (&alert.pod_namespace, &alert.pod_name);
    html! {
        section.panel aria-labelledby="lineage-h" {
            h2 #lineage-h { "Process and lineage" }
            @match &alert.process {
                None => (render::empty("process on this alert")),
                Some(p) => {
                    ol.tree {
                        @for a in p.ancestors.iter().rev() {
                            li {
                                a href=(tables::process_href(scope, ns, pod, a.pid, Some(a.start_time))) {
                                    (tables::image(&a.comm, a.exe.as_deref()))
                                }
                                " pid " (a.pid)
                                @if a.exited { " " span.muted { "(exited)" } }
                                br; (render::argv(&a.argv))
                            }
                        }
                        li.focus {
                            a href=(tables::process_href(scope, ns, pod, p.pid, Some(p.start_time))) {
                                (tables::image(&p.comm, p.exe.as_deref()))
                            }
                            " pid " (p.pid) " uid " (p.uid) " " strong { "← this alert" }
                            br; (render::argv(&p.argv))
                        }
                    }
                    p { a href=(tables::process_href(scope, ns, pod, p.pid, Some(p.start_time))) { "Open the process tree with its flows" } }
                    p.muted { "comm " (inert(&p.comm)) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(
        rule: &str,
        pod: &str,
        severity: Severity,
        first: u64,
        last: u64,
    ) -> (u64, AlertRecord) {
        (
            last,
            AlertRecord {
                id: format!("{rule}-{pod}-{first}"),
                rule_id: rule.into(),
                rule_name: rule.to_uppercase(),
                severity,
                tags: Vec::new(),
                time: last,
                first_seen: first,
                last_seen: last,
                count: 2,
                output: String::new(),
                pod_name: pod.into(),
                pod_namespace: "shop".into(),
                node_name: String::new(),
                container_id: None,
                process: None,
                flows: Vec::new(),
                evidence: Vec::new(),
                exec: None,
            },
        )
    }

    #[test]
    fn alerts_group_by_rule_and_workload_with_the_highest_severity_first() {
        let alerts = vec![
            alert("shell", "web-6d8f9c7b5-x2k4q", Severity::Medium, 10, 20),
            alert("shell", "web-6d8f9c7b5-q8w2z", Severity::High, 5, 30),
            alert("shell", "db-0", Severity::Medium, 1, 40),
            alert("scan", "web-6d8f9c7b5-x2k4q", Severity::Low, 7, 50),
        ];
        let g = groups(&alerts);
        let summary: Vec<String> = g
            .iter()
            .map(|g| {
                format!(
                    "{} {} {:?} alerts={} events={} {}..{} pods={}",
                    g.rule_id,
                    g.workload,
                    g.severity,
                    g.alerts,
                    g.count,
                    g.first_seen,
                    g.last_seen,
                    g.pods.len()
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                "shell web High alerts=2 events=4 5..30 pods=2",
                "shell db-0 Medium alerts=1 events=2 1..40 pods=1",
                "scan web Low alerts=1 events=2 7..50 pods=1",
            ]
        );
    }
}
