//! Records the investigate modules' tests build on.

use std::sync::Arc;

use crate::model::{CollectorIdentity, Event, FlowPhase, FlowRecord, ProcessRecord, Record};

pub(super) fn identity(collector_id: &str, pod: &str, pod_ip: &str) -> Arc<CollectorIdentity> {
    Arc::new(CollectorIdentity {
        collector_id: collector_id.into(),
        pod_name: pod.into(),
        pod_namespace: "shop".into(),
        pod_ip: pod_ip.into(),
        ..CollectorIdentity::default()
    })
}

pub(super) fn flow(cookie: u64, peer: &str, port: u16, phase: FlowPhase, sent: u64) -> FlowRecord {
    FlowRecord {
        remote_addr: Some(peer.parse().expect("ip")),
        remote_port: Some(port),
        phase,
        bytes_sent: Some(sent),
        bytes_received: Some(sent / 2),
        first_seen: 1_000 + cookie,
        last_seen: 2_000 + cookie,
        ..crate::fixtures::flow(cookie)
    }
}

pub(super) fn process(
    pid: u32,
    start: u64,
    ppid: u32,
    parent_start: u64,
    exe: &str,
) -> ProcessRecord {
    ProcessRecord {
        start_time: start,
        ppid,
        parent_start_time: Some(parent_start),
        exe: Some(exe.as_bytes().to_vec()),
        argv: vec![exe.as_bytes().to_vec()],
        session_id: 1,
        pgid: 1,
        ..crate::fixtures::process(pid, exe.rsplit('/').next().unwrap_or(exe).as_bytes())
    }
}

pub(super) fn event(source: &Arc<CollectorIdentity>, received_at: u64, record: Record) -> Event {
    Event {
        source: source.clone(),
        received_at,
        record,
    }
}
