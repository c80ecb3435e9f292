//! Service map: pods and the endpoints they talked to as a graph (Cytoscape.js, layered
//! layout), edges weighted by bytes, north-south edges dashed and brown and their endpoints
//! inside an "outside the cluster" box, east-west edges solid; every node opens its profile.
//! The same edges are listed in a table for keyboards, screen readers and no-script.

use std::collections::BTreeMap;

use maud::html;
use serde_json::{json, Value};

use super::render::{self, href, json_data, Nav, Page};
use super::tables;
use super::{Ctx, PageError};
use crate::investigate::{Edge, EdgeOrder, Talkers};
use crate::model::{Direction, Scope};

/// Edges drawn at most (the heaviest by bytes).
const MAP_EDGES: usize = 300;

pub fn build(ctx: &Ctx) -> Result<Page, PageError> {
    let talkers = match ctx.question(&[], &[]) {
        Some(q) => ctx
            .investigator
            .talkers(&q, EdgeOrder::Bytes, MAP_EDGES, &mut |_| {})?,
        None => Talkers::default(),
    };
    let graph = graph(ctx, &talkers.edges);
    let drawn = graph["edges"].as_array().map_or(0, Vec::len);
    let body = html! {
        p { (drawn) " edges between pods and endpoints (the " (MAP_EDGES) " heaviest of " (talkers.total_edges) "; loopback edges are left out). "
            "Line width follows bytes; " span.net.net-ns { "north-south" } " edges are dashed, " span.net.net-ew { "east-west" } " edges solid. Select a node to open its profile." }
        (render::truncated(talkers.truncated))
        // Cytoscape.js adds an inline <style> (which the CSP forbids) unless an element with
        // this id exists; its one rule is in app.css.
        span #__________cytoscape_stylesheet hidden {}
        div #map role="img" aria-label="Service map; the table below lists the same edges" {}
        (json_data("map-data", &graph))
        section.panel aria-labelledby="edges-h" {
            h2 #edges-h { "Edges" }
            @if talkers.edges.is_empty() { (render::empty("flows")) }
            @else { (tables::edges(&ctx.scope, &talkers.edges, "The same edges, by bytes")) }
        }
    };
    Ok(Page {
        title: "Service map".into(),
        nav: Nav::Map,
        path: "/map",
        keep: Vec::new(),
        body,
        scripts: &["cytoscape.min.js"],
    })
}

/// Line width for a number of bytes: logarithmic, 1 to 12 px.
pub fn weight(bytes: u64) -> f64 {
    (1.0 + 1.5 * (1.0 + bytes as f64 / 1024.0).log10()).min(12.0)
}

/// The graph as Cytoscape elements: nodes `{id, label, kind, href, parent?}`, edges
/// `{id, source, target, weight, label, scope}`.
pub fn graph(ctx: &Ctx, edges: &[Edge]) -> Value {
    let scope = &ctx.scope;
    let mut nodes: BTreeMap<String, Value> = BTreeMap::new();
    let pod_node = |nodes: &mut BTreeMap<String, Value>, ns: &str, pod: &str| {
        let id = format!("pod:{ns}/{pod}");
        nodes.entry(id.clone()).or_insert_with(|| {
            json!({"id": id, "label": format!("{ns}/{pod}"), "kind": "workload",
                   "href": href("/pod", scope, &[("ns", ns), ("pod", pod)])})
        });
        id
    };
    let mut out_edges: BTreeMap<(String, String, u16), (u64, Scope)> = BTreeMap::new();
    for e in edges {
        if e.scope == Scope::Local {
            continue;
        }
        let own = pod_node(&mut nodes, &e.pod_namespace, &e.pod_name);
        let peer = match (&e.peer_pod_namespace, &e.peer_pod_name) {
            (Some(ns), Some(pod)) => pod_node(&mut nodes, ns, pod),
            _ => {
                let ip = e.peer_addr.to_string();
                let id = format!("ip:{ip}");
                let outside = e.scope == Scope::NorthSouth;
                if outside {
                    nodes.entry("edge".into()).or_insert_with(
                        || json!({"id": "edge", "label": "outside the cluster", "kind": "edge"}),
                    );
                }
                nodes.entry(id.clone()).or_insert_with(|| {
                    let mut n = json!({"id": id, "label": ip, "kind": "external",
                                       "href": href("/endpoint", scope, &[("ip", &ip)])});
                    if outside {
                        n["parent"] = json!("edge");
                    }
                    n
                });
                id
            }
        };
        let (source, target) = if e.direction == Direction::Inbound {
            (peer, own)
        } else {
            (own, peer)
        };
        let slot = out_edges
            .entry((source, target, e.port))
            .or_insert((0, e.scope));
        slot.0 += e.bytes_sent + e.bytes_received;
    }
    let edges: Vec<Value> = out_edges
        .into_iter()
        .enumerate()
        .map(|(i, ((source, target, port), (bytes, net)))| {
            json!({"id": format!("e{i}"), "source": source, "target": target,
                   "weight": weight(bytes), "label": format!("{port} · {}", render::bytes(bytes)),
                   "scope": if net == Scope::NorthSouth { "north-south" } else { "east-west" }})
        })
        .collect();
    json!({"nodes": nodes.into_values().collect::<Vec<_>>(), "edges": edges})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_widen_with_bytes_within_bounds() {
        assert!((weight(0) - 1.0).abs() < 1e-9);
        assert!(weight(1 << 20) > weight(1 << 10));
        assert!(weight(u64::MAX) <= 12.0);
    }
}
