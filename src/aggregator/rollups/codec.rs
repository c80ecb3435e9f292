//! Protobuf forms of rollups: the pods seen and the sockets carried, and the pod-hours as
//! they were stored before the compact `body` encoding (still read), decoded with the same
//! limits as ingest.

use std::net::IpAddr;

use prost::Message;

use crate::aggregator::store::{RollupSegment, StoreError};
use crate::investigate::rollup::{AlertCount, Carried, Carry, EdgeRow, PodAddress, PodHour};
use crate::model::Severity;
use crate::proto::v1 as pb;
use crate::wire::{self, Limits};

#[derive(Clone, PartialEq, Message)]
struct PodHourMsg {
    #[prost(message, repeated, tag = "1")]
    edges: Vec<EdgeRowMsg>,
    #[prost(message, repeated, tag = "2")]
    executables: Vec<pb::NewExecutable>,
    #[prost(message, repeated, tag = "3")]
    listeners: Vec<pb::NewListener>,
    #[prost(message, repeated, tag = "4")]
    alerts: Vec<AlertMsg>,
    #[prost(uint64, tag = "5")]
    processes: u64,
    #[prost(bool, tag = "6")]
    truncated: bool,
}

#[derive(Clone, PartialEq, Message)]
struct EdgeRowMsg {
    #[prost(message, optional, tag = "1")]
    edge: Option<pb::Edge>,
    #[prost(uint64, optional, tag = "2")]
    prev_hour: Option<u64>,
    #[prost(uint64, tag = "3")]
    sent_delta: u64,
    #[prost(uint64, tag = "4")]
    received_delta: u64,
}

#[derive(Clone, PartialEq, Message)]
struct AlertMsg {
    #[prost(string, tag = "1")]
    rule_id: String,
    #[prost(uint32, tag = "2")]
    severity: u32,
    #[prost(uint64, tag = "3")]
    count: u64,
}

#[derive(Clone, PartialEq, Message)]
struct CarryMsg {
    #[prost(message, repeated, tag = "1")]
    sockets: Vec<CarriedMsg>,
}

#[derive(Clone, PartialEq, Message)]
struct CarriedMsg {
    #[prost(string, tag = "1")]
    collector: String,
    #[prost(uint64, tag = "2")]
    cookie: u64,
    #[prost(uint64, tag = "3")]
    hour: u64,
    #[prost(uint64, tag = "4")]
    sent: u64,
    #[prost(uint64, tag = "5")]
    received: u64,
}

#[derive(Clone, PartialEq, Message)]
struct PodsMsg {
    #[prost(message, repeated, tag = "1")]
    pods: Vec<PodAddressMsg>,
}

#[derive(Clone, PartialEq, Message)]
struct PodAddressMsg {
    #[prost(string, tag = "1")]
    namespace: String,
    #[prost(string, tag = "2")]
    pod: String,
    #[prost(string, tag = "3")]
    ip: String,
}

pub(super) const SEVERITIES: [Severity; 5] = [
    Severity::Info,
    Severity::Low,
    Severity::Medium,
    Severity::High,
    Severity::Critical,
];

pub(super) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        id: 0,
        reason: format!("{what}: {e}"),
    }
}

/// The protobuf form pod-hours were stored in before `body` (kept to test that they are
/// still read).
#[cfg(test)]
pub(super) fn encode_pod_hour(p: &PodHour) -> Vec<u8> {
    PodHourMsg {
        edges: p
            .edges
            .iter()
            .map(|r| EdgeRowMsg {
                edge: Some(wire::edge_to_proto(&r.edge)),
                prev_hour: r.prev_hour,
                sent_delta: r.sent_delta,
                received_delta: r.received_delta,
            })
            .collect(),
        executables: p
            .executables
            .iter()
            .map(wire::new_executable_to_proto)
            .collect(),
        listeners: p
            .listeners
            .iter()
            .map(wire::new_listener_to_proto)
            .collect(),
        alerts: p
            .alerts
            .iter()
            .map(|a| AlertMsg {
                rule_id: a.rule_id.clone(),
                severity: SEVERITIES
                    .iter()
                    .position(|s| *s == a.severity)
                    .unwrap_or(0) as u32,
                count: a.count,
            })
            .collect(),
        processes: p.processes,
        truncated: p.truncated,
    }
    .encode_to_vec()
}

pub(super) fn decode_pod_hour(s: &RollupSegment) -> Result<PodHour, StoreError> {
    let what = format!("rollup of {}/{} at {}", s.namespace, s.pod, s.hour);
    let msg = PodHourMsg::decode(s.body.as_slice()).map_err(|e| corrupt(&what, e))?;
    let limits = Limits::default();
    Ok(PodHour {
        pod_namespace: s.namespace.clone(),
        pod_name: s.pod.clone(),
        edges: msg
            .edges
            .into_iter()
            .map(|r| {
                Ok(EdgeRow {
                    edge: wire::edge_from_proto(r.edge.unwrap_or_default())?,
                    prev_hour: r.prev_hour,
                    sent_delta: r.sent_delta,
                    received_delta: r.received_delta,
                })
            })
            .collect::<Result<_, wire::WireError>>()
            .map_err(|e| corrupt(&what, e))?,
        executables: msg
            .executables
            .into_iter()
            .map(|x| wire::new_executable_from_proto(x, &limits))
            .collect::<Result<_, _>>()
            .map_err(|e| corrupt(&what, e))?,
        listeners: msg
            .listeners
            .into_iter()
            .map(wire::new_listener_from_proto)
            .collect::<Result<_, _>>()
            .map_err(|e| corrupt(&what, e))?,
        alerts: msg
            .alerts
            .into_iter()
            .map(|a| AlertCount {
                rule_id: a.rule_id,
                severity: SEVERITIES
                    .get(a.severity as usize)
                    .copied()
                    .unwrap_or_default(),
                count: a.count,
            })
            .collect(),
        processes: msg.processes,
        truncated: msg.truncated,
        starts: Vec::new(),
    })
}

pub(super) fn encode_carry(carry: &Carry) -> Vec<u8> {
    CarryMsg {
        sockets: carry
            .iter()
            .map(|((collector, cookie), c)| CarriedMsg {
                collector: collector.clone(),
                cookie: *cookie,
                hour: c.hour,
                sent: c.sent,
                received: c.received,
            })
            .collect(),
    }
    .encode_to_vec()
}

pub(super) fn decode_carry(bytes: &[u8]) -> Result<Carry, StoreError> {
    let msg = CarryMsg::decode(bytes).map_err(|e| corrupt("rollup carry", e))?;
    Ok(msg
        .sockets
        .into_iter()
        .map(|c| {
            (
                (c.collector, c.cookie),
                Carried {
                    hour: c.hour,
                    sent: c.sent,
                    received: c.received,
                },
            )
        })
        .collect())
}

pub(super) fn encode_pods(pods: &[PodAddress]) -> Vec<u8> {
    PodsMsg {
        pods: pods
            .iter()
            .map(|p| PodAddressMsg {
                namespace: p.pod_namespace.clone(),
                pod: p.pod_name.clone(),
                ip: p.ip.to_string(),
            })
            .collect(),
    }
    .encode_to_vec()
}

pub(super) fn decode_pods(bytes: &[u8]) -> Result<Vec<PodAddress>, StoreError> {
    let msg = PodsMsg::decode(bytes).map_err(|e| corrupt("rollup pods", e))?;
    Ok(msg
        .pods
        .into_iter()
        .filter_map(|p| {
            Some(PodAddress {
                ip: p.ip.parse::<IpAddr>().ok()?,
                pod_namespace: p.namespace,
                pod_name: p.pod,
            })
        })
        .collect())
}
