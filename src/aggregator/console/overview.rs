//! Overview: records and alerts over the scope (new connections by network scope and
//! direction, process starts, alerts by severity), top talkers, what is newly observed
//! against the baseline (peers, executables, listening ports) and the edges whose volume
//! grew significantly. The charts draw the hourly counts the answers come with.

use maud::{html, Markup};
use serde_json::json;

use super::render::{self, json_data, Nav, Page};
use super::scope::{TimeScope, HOUR_NS};
use super::tables;
use super::{Ctx, PageError};
use crate::investigate::rollup::HourStarts;
use crate::investigate::Comparison;
use crate::model::{AlertRecord, Severity};

/// Counts per time bucket of the scope, for the charts.
pub struct Timeline {
    start: u64,
    bucket: u64,
    pub series: Vec<&'static str>,
    pub counts: Vec<Vec<u64>>,
}

impl Timeline {
    /// About a hundred points whatever the scope: hours up to three days, then days, then weeks.
    pub fn new(scope: &TimeScope, series: Vec<&'static str>) -> Timeline {
        let bucket = match scope.hours() {
            0..=72 => HOUR_NS,
            73..=2160 => 24 * HOUR_NS,
            _ => 7 * 24 * HOUR_NS,
        };
        let n = (scope.end - scope.start).div_ceil(bucket) as usize;
        Timeline {
            start: scope.start,
            bucket,
            counts: vec![vec![0; n]; series.len()],
            series,
        }
    }

    pub fn add(&mut self, series: usize, at: u64) {
        self.add_n(series, at, 1);
    }

    fn add_n(&mut self, series: usize, at: u64, n: u64) {
        if at < self.start {
            return;
        }
        let i = ((at - self.start) / self.bucket) as usize;
        if let Some(slot) = self.counts.get_mut(series).and_then(|s| s.get_mut(i)) {
            *slot += n;
        }
    }

    pub fn total(&self, series: usize) -> u64 {
        self.counts.get(series).map_or(0, |s| s.iter().sum())
    }

    /// The chart (drawn by app.js from the embedded data) and its table (without script).
    pub fn render(&self, id: &str, title: &str) -> Markup {
        let x: Vec<u64> = (0..self.counts.first().map_or(0, Vec::len))
            .map(|i| (self.start + i as u64 * self.bucket) / 1_000_000_000)
            .collect();
        let data = json!({"x": x, "series": self.series, "y": self.counts});
        let unit = if self.bucket == HOUR_NS {
            "hour"
        } else if self.bucket == 24 * HOUR_NS {
            "day"
        } else {
            "week"
        };
        html! {
            section.panel aria-labelledby=(format!("{id}-h")) {
                h2 id=(format!("{id}-h")) { (title) " per " (unit) }
                div.chart data-chart=(id) role="img" aria-label=(format!("{title} per {unit}; the table below has the numbers")) {}
                (json_data(id, &data))
                details {
                    summary { "Numbers" }
                    div.scroll { table {
                        thead { tr { th scope="col" { "From (UTC)" } @for s in &self.series { th.num scope="col" { (s) } } } }
                        tbody {
                            @for (i, t) in x.iter().enumerate() {
                                @if self.counts.iter().any(|s| s[i] > 0) {
                                    tr { td { (render::time(t * 1_000_000_000)) } @for s in &self.counts { td.num { (s[i]) } } }
                                }
                            }
                        }
                    } }
                }
            }
        }
    }
}

const FLOW_SERIES: [&str; 5] = [
    "north-south out",
    "north-south in",
    "east-west",
    "local",
    "other",
];

/// Feeds a timeline of new connections (series 0–4, `rollup::flow_series`) and process
/// starts (series 5) from a window's hourly counts (raw records or rollups alike).
pub fn count_starts(timeline: &mut Timeline, starts: &[HourStarts]) {
    for s in starts {
        for (series, n) in s.counts.iter().enumerate() {
            timeline.add_n(series, s.hour, *n);
        }
    }
}

pub fn activity_timeline(scope: &TimeScope) -> Timeline {
    let mut series = FLOW_SERIES.to_vec();
    series.push("process starts");
    Timeline::new(scope, series)
}

pub fn alert_timeline(scope: &TimeScope, alerts: &[(u64, AlertRecord)]) -> Timeline {
    let mut t = Timeline::new(scope, vec!["critical", "high", "medium", "low", "info"]);
    for (at, a) in alerts {
        let series = match a.severity {
            Severity::Critical => 0,
            Severity::High => 1,
            Severity::Medium => 2,
            Severity::Low => 3,
            Severity::Info => 4,
        };
        t.add(series, *at);
    }
    t
}

pub fn build(ctx: &Ctx) -> Result<Page, PageError> {
    let scope = &ctx.scope;
    let mut activity = activity_timeline(scope);
    let comparison = match ctx.question(&[], &[]) {
        Some(q) => ctx
            .investigator
            .compare(&q, scope.baseline_start(), 10, &mut |_| {})?,
        None => Comparison::default(),
    };
    count_starts(&mut activity, &comparison.starts);
    let alerts = ctx.alerts(&[], &[])?;
    let alert_chart = alert_timeline(scope, &alerts);
    let body = html! {
        ul.stats {
            li { strong { (comparison.talkers.flows) } "sockets" }
            li { strong { (comparison.talkers.total_edges) } "edges" }
            li { strong { (activity.total(5)) } "process starts" }
            li { strong { (alerts.len()) } "alerts" }
            li { strong { (comparison.new.edges.len() + comparison.new.executables.len() + comparison.new.listeners.len()) } "newly observed" }
        }
        (render::truncated(comparison.talkers.truncated || comparison.new.truncated))
        div.grid {
            (activity.render("chart-activity", "New connections and process starts"))
            (alert_chart.render("chart-alerts", "Alerts by severity"))
        }
        div.grid {
            (newly_observed(ctx, &comparison))
            (increased(ctx, &comparison))
        }
        section.panel aria-labelledby="talkers-h" {
            h2 #talkers-h { "Top talkers" }
            @if comparison.talkers.edges.is_empty() { (render::empty("flows")) }
            @else { (tables::edges(scope, &comparison.talkers.edges, "The edges that moved the most bytes in the scope")) }
        }
    };
    Ok(Page {
        title: "Overview".into(),
        nav: Nav::Overview,
        path: "/",
        keep: Vec::new(),
        body,
        scripts: &["uPlot.iife.min.js"],
    })
}

/// "Newly observed" peers, executables and listening ports, against the baseline.
pub fn newly_observed(ctx: &Ctx, c: &Comparison) -> Markup {
    let scope = &ctx.scope;
    html! {
        section.panel aria-labelledby="new-h" {
            h2 #new-h { "Newly observed" }
            p.muted { "Not seen in the baseline (" (c.new.baseline_flows) " sockets, " (c.new.baseline_processes) " process records), compared per workload." }
            h3 { "Peers" }
            @if c.new.edges.is_empty() { (render::empty("new peers")) }
            @else { (tables::edges(scope, &c.new.edges, "New peers, first seen first")) }
            h3 { "Executables" }
            @if c.new.executables.is_empty() { (render::empty("new executables")) }
            @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "Pod" } th scope="col" { "Executable" } th scope="col" { "Command line" } th scope="col" { "First seen" } } }
                    tbody { @for x in &c.new.executables { tr {
                        td { (tables::pod_link(scope, &x.pod_namespace, &x.pod_name)) }
                        td { a href=(tables::process_href(scope, &x.pod_namespace, &x.pod_name, x.process.pid, Some(x.process.start_time))) { (tables::image(&x.comm, x.exe.as_deref())) } }
                        td { (render::argv(&x.process.argv)) }
                        td { (render::time(x.first_seen)) }
                    } } }
                } }
            }
            h3 { "Listening ports" }
            @if c.new.listeners.is_empty() { (render::empty("new listening ports")) }
            @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "Pod" } th.num scope="col" { "Port" } th scope="col" { "Address" } th scope="col" { "Executable" } th scope="col" { "First seen" } } }
                    tbody { @for l in &c.new.listeners { tr {
                        td { (tables::pod_link(scope, &l.pod_namespace, &l.pod_name)) }
                        td.num { (l.port) " " (format!("{:?}", l.protocol).to_lowercase()) }
                        td { (l.local_addr) }
                        td { (tables::image(&l.comm, l.exe.as_deref())) }
                        td { (render::time(l.first_seen)) }
                    } } }
                } }
            }
        }
    }
}

/// Edges whose hourly volume grew significantly against the baseline.
pub fn increased(ctx: &Ctx, c: &Comparison) -> Markup {
    let scope = &ctx.scope;
    html! {
        section.panel aria-labelledby="increased-h" {
            h2 #increased-h { "Increased volume" }
            p.muted { "Edges moving at least " (crate::investigate::INCREASE_FACTOR) "× their baseline rate per hour, and 1 MiB above it." }
            @if c.increased.is_empty() { (render::empty("edges with significantly increased volume")) }
            @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "Pod" } th scope="col" { "Executable" } th scope="col" { "Peer" } th.num scope="col" { "Port" } th.num scope="col" { "Baseline / h" } th.num scope="col" { "Scope / h" } } }
                    tbody { @for i in &c.increased { tr {
                        td { (tables::pod_link(scope, &i.edge.pod_namespace, &i.edge.pod_name)) }
                        td { (tables::image(&i.edge.comm, i.edge.exe.as_deref())) }
                        td { (tables::endpoint_link(scope, &i.edge.peer_addr)) }
                        td.num { (i.edge.port) }
                        td.num { (render::bytes(i.baseline_per_hour as u64)) }
                        td.num { (render::bytes(i.window_per_hour as u64)) }
                    } } }
                } }
            }
        }
    }
}
