//! Investigation over stored events, in the style of a behavior graph: the entities are
//! workloads (pods), processes (by executable) and remote endpoints; the edges are their
//! connections over a window. Answers "who talked to whom", "what is loud", "what is new"
//! and "which process tree did this".
//!
//! Pure code over events: `aggregator::investigate::Investigator` feeds it from the store
//! for both of its faces (the gRPC service and the web console); `wire` carries the answers.

//! One module per job: `entities` names processes and peers, `sockets` folds flow records
//! into edges (who talked to whom), `novelty` compares a window with its baseline (what is
//! new, what grew), `tree` builds process trees with their flows; `api` is the Kubernetes
//! API's answer. The answers' types live here.

pub mod api;
mod entities;
mod novelty;
pub mod rollup;
mod sockets;
#[cfg(test)]
mod test_support;
mod tree;

pub use entities::{PodDirectory, ProcessNames};
pub use novelty::{
    compare, new_activity, Activity, Baseline, Comparison, Increase, Period, INCREASE_FACTOR,
    MIN_INCREASE_BYTES,
};
pub use sockets::{talkers, Sockets};
pub use tree::{PodProcesses, TreeFlows};

// Answers hash every socket of a window (hundreds of thousands) several times: foldhash,
// not SipHash (the keys are the store's own records, already past the ingest checks).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{
    escaped_bytes, escaped_bytes_opt, Ancestor, Direction, FlowRecord, ProcessRecord, Protocol,
    Scope, UnixNanos,
};

/// Distinct sockets one answer may hold in memory; beyond it the answer is marked truncated.
pub const MAX_SOCKETS: usize = 2_000_000;
/// Processes one tree may hold.
pub const MAX_TREE_NODES: usize = 10_000;
const MAX_EDGE_PIDS: usize = 16;
const HOUR_NS: f64 = 3_600e9;

/// One executable of one pod talking to one peer on one port, over a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    pub pod_name: String,
    pub pod_namespace: String,
    #[serde(with = "escaped_bytes")]
    pub comm: Vec<u8>,
    #[serde(with = "escaped_bytes_opt", default)]
    pub exe: Option<Vec<u8>>,
    pub direction: Direction,
    pub scope: Scope,
    pub protocol: Protocol,
    pub peer_addr: IpAddr,
    /// The peer's port for outbound flows, the local (service) port for inbound ones.
    pub port: u16,
    pub peer_pod_name: Option<String>,
    pub peer_pod_namespace: Option<String>,
    pub connections: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub first_seen: UnixNanos,
    pub last_seen: UnixNanos,
    pub pids: Vec<u32>,
    /// No socket of the edge was tied to a process.
    pub unattributed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EdgeOrder {
    #[default]
    Bytes,
    Connections,
    Recent,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Talkers {
    pub edges: Vec<Edge>,
    pub flows: u64,
    pub total_edges: u64,
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewExecutable {
    pub pod_name: String,
    pub pod_namespace: String,
    #[serde(with = "escaped_bytes")]
    pub comm: Vec<u8>,
    #[serde(with = "escaped_bytes_opt", default)]
    pub exe: Option<Vec<u8>>,
    pub first_seen: UnixNanos,
    pub process: ProcessRecord,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewListener {
    pub pod_name: String,
    pub pod_namespace: String,
    pub protocol: Protocol,
    pub local_addr: IpAddr,
    pub port: u16,
    #[serde(with = "escaped_bytes")]
    pub comm: Vec<u8>,
    #[serde(with = "escaped_bytes_opt", default)]
    pub exe: Option<Vec<u8>>,
    pub first_seen: UnixNanos,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NewActivity {
    pub edges: Vec<Edge>,
    pub executables: Vec<NewExecutable>,
    pub listeners: Vec<NewListener>,
    pub baseline_flows: u64,
    pub baseline_processes: u64,
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeNode {
    pub process: ProcessRecord,
    pub depth: u32,
    pub flows: Vec<FlowRecord>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcessTree {
    pub ancestors: Vec<Ancestor>,
    pub nodes: Vec<TreeNode>,
    pub truncated: bool,
}

/// Which flows a question looks at (pods, namespaces and time are the store's filter).
#[derive(Debug, Clone, Default)]
pub struct FlowFilter {
    pub scopes: Vec<Scope>,
    pub directions: Vec<Direction>,
}

impl FlowFilter {
    pub(crate) fn admits(&self, f: &FlowRecord) -> bool {
        (self.scopes.is_empty() || self.scopes.contains(&f.scope))
            && (self.directions.is_empty() || self.directions.contains(&f.direction))
    }

    fn admits_edge(&self, scope: Scope, direction: Direction) -> bool {
        (self.scopes.is_empty() || self.scopes.contains(&scope))
            && (self.directions.is_empty() || self.directions.contains(&direction))
    }
}
