//! Investigation answers (edges, talkers, new activity, process trees), both ways.

use super::fields::*;
use super::records::*;
use super::{Limits, WireError};
use crate::investigate;
use crate::proto::v1 as pb;

pub fn edge_to_proto(e: &investigate::Edge) -> pb::Edge {
    pb::Edge {
        pod_name: e.pod_name.clone(),
        pod_namespace: e.pod_namespace.clone(),
        comm: e.comm.clone(),
        exe: e.exe.clone(),
        direction: direction_to_proto(e.direction) as i32,
        scope: scope_to_proto(e.scope) as i32,
        protocol: protocol_to_proto(e.protocol) as i32,
        peer_addr: e.peer_addr.to_string(),
        port: e.port.into(),
        peer_pod_name: e.peer_pod_name.clone(),
        peer_pod_namespace: e.peer_pod_namespace.clone(),
        connections: e.connections,
        bytes_sent: e.bytes_sent,
        bytes_received: e.bytes_received,
        first_seen: e.first_seen,
        last_seen: e.last_seen,
        pids: e.pids.clone(),
        unattributed: e.unattributed,
    }
}

pub fn edge_from_proto(e: pb::Edge) -> Result<investigate::Edge, WireError> {
    Ok(investigate::Edge {
        pod_name: e.pod_name,
        pod_namespace: e.pod_namespace,
        comm: e.comm,
        exe: e.exe,
        direction: direction_from_proto(e.direction, "edge.direction")?,
        scope: scope_from_proto(e.scope, "edge.scope")?,
        protocol: protocol_from_proto(e.protocol)?,
        peer_addr: addr("edge.peer_addr", &e.peer_addr)?,
        port: port("edge.port", e.port)?,
        peer_pod_name: e.peer_pod_name,
        peer_pod_namespace: e.peer_pod_namespace,
        connections: e.connections,
        bytes_sent: e.bytes_sent,
        bytes_received: e.bytes_received,
        first_seen: e.first_seen,
        last_seen: e.last_seen,
        pids: e.pids,
        unattributed: e.unattributed,
    })
}

pub fn talkers_to_proto(t: &investigate::Talkers) -> pb::TalkersReply {
    pb::TalkersReply {
        edges: t.edges.iter().map(edge_to_proto).collect(),
        flows: t.flows,
        total_edges: t.total_edges,
        truncated: t.truncated,
    }
}

pub fn talkers_from_proto(t: pb::TalkersReply) -> Result<investigate::Talkers, WireError> {
    Ok(investigate::Talkers {
        edges: t
            .edges
            .into_iter()
            .map(edge_from_proto)
            .collect::<Result<_, _>>()?,
        flows: t.flows,
        total_edges: t.total_edges,
        truncated: t.truncated,
    })
}

pub fn new_executable_to_proto(x: &investigate::NewExecutable) -> pb::NewExecutable {
    pb::NewExecutable {
        pod_name: x.pod_name.clone(),
        pod_namespace: x.pod_namespace.clone(),
        comm: x.comm.clone(),
        exe: x.exe.clone(),
        first_seen: x.first_seen,
        process: Some(process_to_proto(&x.process)),
    }
}

pub fn new_executable_from_proto(
    x: pb::NewExecutable,
    limits: &Limits,
) -> Result<investigate::NewExecutable, WireError> {
    Ok(investigate::NewExecutable {
        pod_name: x.pod_name,
        pod_namespace: x.pod_namespace,
        comm: x.comm,
        exe: x.exe,
        first_seen: x.first_seen,
        process: process_from_proto(
            x.process
                .ok_or(WireError::Missing("new_executable.process"))?,
            limits,
        )?,
    })
}

pub fn new_listener_to_proto(l: &investigate::NewListener) -> pb::NewListener {
    pb::NewListener {
        pod_name: l.pod_name.clone(),
        pod_namespace: l.pod_namespace.clone(),
        protocol: protocol_to_proto(l.protocol) as i32,
        local_addr: ip_text(l.local_addr),
        port: l.port.into(),
        comm: l.comm.clone(),
        exe: l.exe.clone(),
        first_seen: l.first_seen,
    }
}

pub fn new_listener_from_proto(l: pb::NewListener) -> Result<investigate::NewListener, WireError> {
    Ok(investigate::NewListener {
        pod_name: l.pod_name,
        pod_namespace: l.pod_namespace,
        protocol: protocol_from_proto(l.protocol)?,
        local_addr: addr("new_listener.local_addr", &l.local_addr)?,
        port: port("new_listener.port", l.port)?,
        comm: l.comm,
        exe: l.exe,
        first_seen: l.first_seen,
    })
}

pub fn new_activity_to_proto(n: &investigate::NewActivity) -> pb::NewActivityReply {
    pb::NewActivityReply {
        edges: n.edges.iter().map(edge_to_proto).collect(),
        executables: n.executables.iter().map(new_executable_to_proto).collect(),
        listeners: n.listeners.iter().map(new_listener_to_proto).collect(),
        baseline_flows: n.baseline_flows,
        baseline_processes: n.baseline_processes,
        truncated: n.truncated,
    }
}

pub fn new_activity_from_proto(
    n: pb::NewActivityReply,
    limits: &Limits,
) -> Result<investigate::NewActivity, WireError> {
    Ok(investigate::NewActivity {
        edges: n
            .edges
            .into_iter()
            .map(edge_from_proto)
            .collect::<Result<_, _>>()?,
        executables: n
            .executables
            .into_iter()
            .map(|x| new_executable_from_proto(x, limits))
            .collect::<Result<_, WireError>>()?,
        listeners: n
            .listeners
            .into_iter()
            .map(new_listener_from_proto)
            .collect::<Result<_, WireError>>()?,
        baseline_flows: n.baseline_flows,
        baseline_processes: n.baseline_processes,
        truncated: n.truncated,
    })
}

pub fn tree_to_proto(t: &investigate::ProcessTree) -> pb::ProcessTreeReply {
    pb::ProcessTreeReply {
        ancestors: t.ancestors.iter().map(ancestor_to_proto).collect(),
        nodes: t
            .nodes
            .iter()
            .map(|n| pb::TreeNode {
                process: Some(process_to_proto(&n.process)),
                depth: n.depth,
                flows: n.flows.iter().map(flow_to_proto).collect(),
            })
            .collect(),
        truncated: t.truncated,
    }
}

pub fn tree_from_proto(
    t: pb::ProcessTreeReply,
    limits: &Limits,
) -> Result<investigate::ProcessTree, WireError> {
    Ok(investigate::ProcessTree {
        ancestors: t
            .ancestors
            .into_iter()
            .map(|a| ancestor_from_proto(a, limits))
            .collect::<Result<_, _>>()?,
        nodes: t
            .nodes
            .into_iter()
            .map(|n| {
                Ok(investigate::TreeNode {
                    process: process_from_proto(
                        n.process.ok_or(WireError::Missing("tree_node.process"))?,
                        limits,
                    )?,
                    depth: n.depth,
                    flows: n
                        .flows
                        .into_iter()
                        .map(|f| flow_from_proto(f, limits))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<_, WireError>>()?,
        truncated: t.truncated,
    })
}
