//! Records (flows, listeners, processes, alerts) and the collector identity, both ways.

use super::fields::*;
use super::{Limits, WireError};
use crate::model::{self, Record};
use crate::proto::v1 as pb;

pub fn record_to_proto(record: &Record) -> pb::Record {
    use pb::record::Kind;
    let kind = match record {
        Record::Flow(f) => Kind::Flow(flow_to_proto(f)),
        Record::Process(p) => Kind::Process(process_to_proto(p)),
        Record::Listener(l) => Kind::Listener(listener_to_proto(l)),
        Record::Heartbeat(h) => Kind::Heartbeat(pb::Heartbeat {
            time: h.time,
            counters: h
                .counters
                .iter()
                .map(|(name, value)| pb::Counter {
                    name: name.clone(),
                    value: *value,
                })
                .collect(),
            flows_tracked: h.flows_tracked,
            processes_tracked: h.processes_tracked,
            rss_bytes: h.rss_bytes,
            cpu_time_ns: h.cpu_time_ns,
            features: h.features.clone(),
            interval_ns: h.interval_ns,
            stopping: h.stopping,
        }),
        Record::Alert(a) => Kind::Alert(pb::Alert {
            id: a.id.clone(),
            rule_id: a.rule_id.clone(),
            rule_name: a.rule_name.clone(),
            severity: severity_to_proto(a.severity) as i32,
            tags: a.tags.clone(),
            time: a.time,
            first_seen: a.first_seen,
            last_seen: a.last_seen,
            count: a.count,
            output: a.output.clone(),
            pod_name: a.pod_name.clone(),
            pod_namespace: a.pod_namespace.clone(),
            container_id: a.container_id.clone(),
            process: a.process.as_deref().map(process_to_proto),
            flows: a.flows.iter().map(flow_to_proto).collect(),
            evidence_counters: Vec::new(),
            evidence: a.evidence.clone(),
            node_name: a.node_name.clone(),
            exec: a.exec.as_deref().map(super::audit::exec_to_proto),
        }),
        Record::Audit(a) => Kind::Audit(super::audit::audit_to_proto(a)),
    };
    pb::Record { kind: Some(kind) }
}

pub fn flow_to_proto(f: &model::FlowRecord) -> pb::Flow {
    pb::Flow {
        cookie: f.cookie,
        protocol: protocol_to_proto(f.protocol) as i32,
        family: family_to_proto(f.family) as i32,
        local_addr: ip_text(f.local_addr),
        local_port: u32::from(f.local_port),
        remote_addr: f.remote_addr.map(ip_text),
        remote_port: f.remote_port.map(u32::from),
        direction: direction_to_proto(f.direction) as i32,
        scope: scope_to_proto(f.scope) as i32,
        phase: flow_phase_to_proto(f.phase) as i32,
        state: f.state.clone().into_owned(),
        preexisting: f.preexisting,
        bytes_sent: f.bytes_sent,
        bytes_received: f.bytes_received,
        segs_out: f.segs_out,
        segs_in: f.segs_in,
        retransmits: f.retransmits,
        rtt_us: f.rtt_us,
        first_seen: f.first_seen,
        last_seen: f.last_seen,
        ended_at: f.ended_at,
        uid: f.uid,
        inode: f.inode,
        pid: f.pid,
        process_start_time: f.process_start_time,
        attribution: attribution_to_proto(f.attribution) as i32,
        end_reason: end_reason_to_proto(f.end_reason) as i32,
        reset: f.reset,
        cgroup_id: f.cgroup_id,
        total_retrans: f.total_retrans,
        peer_scrubbed: f.peer_scrubbed,
    }
}

pub(super) fn listener_to_proto(l: &model::ListenerRecord) -> pb::Listener {
    pb::Listener {
        cookie: l.cookie,
        protocol: protocol_to_proto(l.protocol) as i32,
        family: family_to_proto(l.family) as i32,
        local_addr: ip_text(l.local_addr),
        local_port: u32::from(l.local_port),
        phase: flow_phase_to_proto(l.phase) as i32,
        preexisting: l.preexisting,
        first_seen: l.first_seen,
        ended_at: l.ended_at,
        uid: l.uid,
        inode: l.inode,
        pid: l.pid,
        process_start_time: l.process_start_time,
        attribution: attribution_to_proto(l.attribution) as i32,
        backlog: l.backlog,
        packet: l.packet.map(|p| pb::PacketSocket {
            sock_type: u32::from(p.sock_type),
            ethertype: u32::from(p.ethertype),
            ifindex: p.ifindex,
        }),
    }
}

pub fn process_to_proto(p: &model::ProcessRecord) -> pb::Process {
    pb::Process {
        pid: p.pid,
        start_time: p.start_time,
        ppid: p.ppid,
        parent_start_time: p.parent_start_time,
        phase: match p.phase {
            model::ProcessPhase::Start => pb::ProcessPhase::Start,
            model::ProcessPhase::Exec => pb::ProcessPhase::Exec,
            model::ProcessPhase::Exit => pb::ProcessPhase::Exit,
        } as i32,
        comm: p.comm.clone(),
        exe: p.exe.clone(),
        argv: p.argv.clone(),
        cwd: p.cwd.clone(),
        uid: p.uid,
        gid: p.gid,
        euid: p.euid,
        tty: p.tty,
        session_id: p.session_id,
        container_id: p.container_id.clone(),
        pod_uid: p.pod_uid.clone(),
        exit_time: p.exit_time,
        ancestors: p.ancestors.iter().map(ancestor_to_proto).collect(),
        exe_unavailable: unavailable_to_proto(p.exe_unavailable) as i32,
        cwd_unavailable: unavailable_to_proto(p.cwd_unavailable) as i32,
        exe_deleted: p.exe_deleted,
        seen_at_exit_only: p.seen_at_exit_only,
        preexisting: p.preexisting,
        forked_no_exec: p.forked_no_exec,
        exe_replaced: p.exe_replaced,
        stdin_pipe: p.stdin_pipe,
        stdout_pipe: p.stdout_pipe,
        comm_is_exe_link: p.comm_is_exe_link,
        egid: p.egid,
        pgid: p.pgid,
        stdio_socket_inodes: p.stdio_socket_inodes.clone(),
        stdio_is_socket: p.stdio_is_socket,
    }
}

pub(super) fn ancestor_to_proto(a: &model::Ancestor) -> pb::Ancestor {
    pb::Ancestor {
        pid: a.pid,
        start_time: a.start_time,
        comm: a.comm.clone(),
        exe: a.exe.clone(),
        argv: a.argv.clone(),
        exited: a.exited,
        uid: a.uid,
    }
}

pub fn identity_to_proto(i: &model::CollectorIdentity) -> pb::CollectorIdentity {
    pb::CollectorIdentity {
        collector_id: i.collector_id.clone(),
        pod_name: i.pod_name.clone(),
        pod_namespace: i.pod_namespace.clone(),
        pod_uid: i.pod_uid.clone(),
        pod_ip: i.pod_ip.clone(),
        node_name: i.node_name.clone(),
        container_images: i.container_images.clone(),
        version: i.version.clone(),
    }
}

pub fn event_to_proto(e: &model::Event) -> pb::Event {
    pb::Event {
        source: Some(identity_to_proto(&e.source)),
        record: Some(record_to_proto(&e.record)),
        received_at: e.received_at,
    }
}

// === Inbound (validating) ===

pub fn record_from_proto(r: pb::Record, limits: &Limits) -> Result<Record, WireError> {
    use pb::record::Kind;
    Ok(match r.kind.ok_or(WireError::Missing("record.kind"))? {
        Kind::Flow(f) => Record::Flow(flow_from_proto(f, limits)?),
        Kind::Process(p) => Record::Process(process_from_proto(p, limits)?),
        Kind::Listener(l) => Record::Listener(model::ListenerRecord {
            cookie: l.cookie,
            protocol: protocol_from_proto(l.protocol)?,
            family: family_from_proto(l.family)?,
            local_addr: addr("listener.local_addr", &l.local_addr)?,
            local_port: port("listener.local_port", l.local_port)?,
            phase: flow_phase_from_proto(l.phase)?,
            preexisting: l.preexisting,
            first_seen: l.first_seen,
            ended_at: l.ended_at,
            uid: l.uid,
            inode: l.inode,
            pid: l.pid,
            process_start_time: l.process_start_time,
            attribution: attribution_from_proto(l.attribution)?,
            backlog: l.backlog,
            packet: l
                .packet
                .map(|p| -> Result<_, WireError> {
                    let narrow = |field, v: u32| {
                        u16::try_from(v).map_err(|_| WireError::TooLarge {
                            field,
                            len: v as usize,
                            limit: usize::from(u16::MAX),
                        })
                    };
                    Ok(model::PacketSocket {
                        sock_type: narrow("listener.packet.sock_type", p.sock_type)?,
                        ethertype: narrow("listener.packet.ethertype", p.ethertype)?,
                        ifindex: p.ifindex,
                    })
                })
                .transpose()?,
        }),
        Kind::Heartbeat(h) => {
            check_len("heartbeat.counters", h.counters.len(), limits.max_argv)?;
            for c in &h.counters {
                check_len("heartbeat.counters.name", c.name.len(), 256)?;
            }
            Record::Heartbeat(model::Heartbeat {
                time: h.time,
                counters: h.counters.into_iter().map(|c| (c.name, c.value)).collect(),
                flows_tracked: h.flows_tracked,
                processes_tracked: h.processes_tracked,
                rss_bytes: h.rss_bytes,
                cpu_time_ns: h.cpu_time_ns,
                features: h.features,
                interval_ns: h.interval_ns,
                stopping: h.stopping,
            })
        }
        Kind::Alert(a) => {
            check_len("alert.output", a.output.len(), limits.max_string_bytes)?;
            check_len("alert.flows", a.flows.len(), limits.max_flows_per_alert)?;
            Record::Alert(model::AlertRecord {
                id: a.id,
                rule_id: a.rule_id,
                rule_name: a.rule_name,
                severity: severity_from_proto(a.severity)?,
                tags: a.tags,
                time: a.time,
                first_seen: a.first_seen,
                last_seen: a.last_seen,
                count: a.count,
                output: a.output,
                pod_name: a.pod_name,
                pod_namespace: a.pod_namespace,
                node_name: a.node_name,
                container_id: a.container_id,
                process: a
                    .process
                    .map(|p| process_from_proto(p, limits))
                    .transpose()?
                    .map(Box::new),
                flows: a
                    .flows
                    .into_iter()
                    .map(|f| flow_from_proto(f, limits))
                    .collect::<Result<_, _>>()?,
                evidence: a.evidence,
                exec: a
                    .exec
                    .map(|e| super::audit::exec_from_proto(e, limits))
                    .transpose()?
                    .map(Box::new),
            })
        }
        Kind::Audit(a) => Record::Audit(Box::new(super::audit::audit_from_proto(a, limits)?)),
    })
}

pub fn flow_from_proto(f: pb::Flow, limits: &Limits) -> Result<model::FlowRecord, WireError> {
    // Exhaustive: a field added to the schema stops the build here and in `direct`.
    let pb::Flow {
        cookie,
        protocol,
        family,
        local_addr,
        local_port,
        remote_addr,
        remote_port,
        direction,
        scope,
        phase,
        state,
        preexisting,
        bytes_sent,
        bytes_received,
        segs_out,
        segs_in,
        retransmits,
        rtt_us,
        first_seen,
        last_seen,
        ended_at,
        uid,
        inode,
        pid,
        process_start_time,
        attribution,
        end_reason,
        reset,
        cgroup_id,
        total_retrans,
        peer_scrubbed,
    } = f;
    flow_from_view(
        FlowView {
            cookie,
            protocol,
            family,
            local_addr: local_addr.as_bytes(),
            local_port,
            remote_addr: remote_addr.as_deref().map(str::as_bytes),
            remote_port,
            direction,
            scope,
            phase,
            state: state.as_bytes(),
            preexisting,
            bytes_sent,
            bytes_received,
            segs_out,
            segs_in,
            retransmits,
            rtt_us,
            first_seen,
            last_seen,
            ended_at,
            uid,
            inode,
            pid,
            process_start_time,
            attribution,
            end_reason,
            reset,
            cgroup_id,
            total_retrans,
            peer_scrubbed,
        },
        limits,
    )
}

/// A `procflow.v1.Flow` as it arrived, strings borrowed: what both the generated types and
/// the direct decoder (`direct`) hand to the one validation, [`flow_from_view`].
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct FlowView<'a> {
    pub cookie: u64,
    pub protocol: i32,
    pub family: i32,
    /// Text fields as bytes: the hand-written decoder validates them as it converts them
    /// (an IPv4 address parsed from ASCII digits needs no separate UTF-8 check).
    pub local_addr: &'a [u8],
    pub local_port: u32,
    pub remote_addr: Option<&'a [u8]>,
    pub remote_port: Option<u32>,
    pub direction: i32,
    pub scope: i32,
    pub phase: i32,
    pub state: &'a [u8],
    pub preexisting: bool,
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
    pub segs_out: Option<u64>,
    pub segs_in: Option<u64>,
    pub retransmits: Option<u32>,
    pub rtt_us: Option<u32>,
    pub first_seen: u64,
    pub last_seen: u64,
    pub ended_at: Option<u64>,
    pub uid: Option<u32>,
    pub inode: Option<u64>,
    pub pid: Option<u32>,
    pub process_start_time: Option<u64>,
    pub attribution: i32,
    pub end_reason: i32,
    pub reset: bool,
    pub cgroup_id: Option<u64>,
    pub total_retrans: Option<u32>,
    pub peer_scrubbed: bool,
}

pub(crate) fn flow_from_view(
    f: FlowView<'_>,
    limits: &Limits,
) -> Result<model::FlowRecord, WireError> {
    check_len("flow.state", f.state.len(), limits.max_string_bytes.min(64))?;
    Ok(model::FlowRecord {
        cookie: f.cookie,
        protocol: match protocol_from_proto(f.protocol)? {
            // Packet sockets have no flows: only listeners.
            model::Protocol::Packet => {
                return Err(WireError::BadEnum {
                    field: "protocol",
                    value: f.protocol,
                })
            }
            p => p,
        },
        family: family_from_proto(f.family)?,
        local_addr: addr_bytes("flow.local_addr", f.local_addr)?,
        local_port: port("flow.local_port", f.local_port)?,
        remote_addr: f
            .remote_addr
            .map(|a| addr_bytes("flow.remote_addr", a))
            .transpose()?,
        remote_port: f
            .remote_port
            .map(|p| port("flow.remote_port", p))
            .transpose()?,
        direction: direction_from_proto(f.direction, "flow.direction")?,
        scope: scope_from_proto(f.scope, "flow.scope")?,
        phase: flow_phase_from_proto(f.phase)?,
        state: match crate::sockdiag::msg::static_state_name(f.state) {
            Some(known) => known.into(),
            None => std::str::from_utf8(f.state)
                .map_err(|_| WireError::NotUtf8("flow.state"))?
                .to_owned()
                .into(),
        },
        preexisting: f.preexisting,
        bytes_sent: f.bytes_sent,
        bytes_received: f.bytes_received,
        segs_out: f.segs_out,
        segs_in: f.segs_in,
        retransmits: f.retransmits,
        total_retrans: f.total_retrans,
        rtt_us: f.rtt_us,
        first_seen: f.first_seen,
        last_seen: f.last_seen,
        ended_at: f.ended_at,
        uid: f.uid,
        inode: f.inode,
        pid: f.pid,
        process_start_time: f.process_start_time,
        attribution: attribution_from_proto(f.attribution)?,
        end_reason: match pb::EndReason::try_from(f.end_reason) {
            Ok(pb::EndReason::Unspecified) => model::EndReason::Unspecified,
            Ok(pb::EndReason::DestroyEvent) => model::EndReason::DestroyEvent,
            Ok(pb::EndReason::Vanished) => model::EndReason::Vanished,
            Ok(pb::EndReason::Recovered) => model::EndReason::Recovered,
            Ok(pb::EndReason::Shutdown) => model::EndReason::Shutdown,
            Err(_) => {
                return Err(WireError::BadEnum {
                    field: "flow.end_reason",
                    value: f.end_reason,
                })
            }
        },
        reset: f.reset,
        peer_scrubbed: f.peer_scrubbed,
        cgroup_id: f.cgroup_id,
    })
}

pub fn process_from_proto(
    p: pb::Process,
    limits: &Limits,
) -> Result<model::ProcessRecord, WireError> {
    check_len("process.comm", p.comm.len(), 4096)?;
    check_len("process.argv", p.argv.len(), limits.max_argv)?;
    check_len(
        "process.argv bytes",
        p.argv.iter().map(Vec::len).sum(),
        limits.max_string_bytes * 4,
    )?;
    check_len(
        "process.exe",
        p.exe.as_ref().map_or(0, Vec::len),
        limits.max_string_bytes,
    )?;
    check_len(
        "process.cwd",
        p.cwd.as_ref().map_or(0, Vec::len),
        limits.max_string_bytes,
    )?;
    check_len("process.ancestors", p.ancestors.len(), limits.max_ancestors)?;
    let ancestors = p
        .ancestors
        .into_iter()
        .map(|a| ancestor_from_proto(a, limits))
        .collect::<Result<_, WireError>>()?;
    Ok(model::ProcessRecord {
        pid: p.pid,
        start_time: p.start_time,
        ppid: p.ppid,
        parent_start_time: p.parent_start_time,
        phase: match pb::ProcessPhase::try_from(p.phase) {
            Ok(pb::ProcessPhase::Start) => model::ProcessPhase::Start,
            Ok(pb::ProcessPhase::Exec) => model::ProcessPhase::Exec,
            Ok(pb::ProcessPhase::Exit) => model::ProcessPhase::Exit,
            _ => {
                return Err(WireError::BadEnum {
                    field: "process.phase",
                    value: p.phase,
                })
            }
        },
        comm: p.comm,
        exe: p.exe,
        argv: p.argv,
        cwd: p.cwd,
        uid: p.uid,
        gid: p.gid,
        euid: p.euid,
        egid: p.egid,
        tty: p.tty,
        session_id: p.session_id,
        pgid: p.pgid,
        container_id: p.container_id,
        pod_uid: p.pod_uid,
        exit_time: p.exit_time,
        ancestors,
        exe_unavailable: unavailable_from_proto(p.exe_unavailable, "process.exe_unavailable")?,
        cwd_unavailable: unavailable_from_proto(p.cwd_unavailable, "process.cwd_unavailable")?,
        exe_deleted: p.exe_deleted,
        seen_at_exit_only: p.seen_at_exit_only,
        preexisting: p.preexisting,
        stdio_is_socket: p.stdio_is_socket,
        stdio_socket_inodes: p.stdio_socket_inodes,
        forked_no_exec: p.forked_no_exec,
        exe_replaced: p.exe_replaced,
        stdin_pipe: p.stdin_pipe,
        stdout_pipe: p.stdout_pipe,
        comm_is_exe_link: p.comm_is_exe_link,
    })
}

pub(super) fn ancestor_from_proto(
    a: pb::Ancestor,
    limits: &Limits,
) -> Result<model::Ancestor, WireError> {
    check_len("ancestor.argv", a.argv.len(), limits.max_argv)?;
    check_len(
        "ancestor.argv bytes",
        a.argv.iter().map(Vec::len).sum(),
        limits.max_string_bytes * 4,
    )?;
    Ok(model::Ancestor {
        pid: a.pid,
        start_time: a.start_time,
        comm: a.comm,
        exe: a.exe,
        argv: a.argv,
        exited: a.exited,
        uid: a.uid,
    })
}

pub fn identity_from_proto(
    i: pb::CollectorIdentity,
    limits: &Limits,
) -> Result<model::CollectorIdentity, WireError> {
    for (field, value) in [
        ("identity.collector_id", &i.collector_id),
        ("identity.pod_name", &i.pod_name),
        ("identity.pod_namespace", &i.pod_namespace),
        ("identity.node_name", &i.node_name),
    ] {
        check_len(field, value.len(), limits.max_string_bytes.min(512))?;
    }
    if i.collector_id.is_empty() {
        return Err(WireError::Missing("identity.collector_id"));
    }
    Ok(model::CollectorIdentity {
        collector_id: i.collector_id,
        pod_name: i.pod_name,
        pod_namespace: i.pod_namespace,
        pod_uid: i.pod_uid,
        pod_ip: i.pod_ip,
        node_name: i.node_name,
        container_images: i.container_images,
        version: i.version,
    })
}

pub fn event_from_proto(e: pb::Event, limits: &Limits) -> Result<model::Event, WireError> {
    Ok(model::Event {
        source: std::sync::Arc::new(identity_from_proto(
            e.source.ok_or(WireError::Missing("event.source"))?,
            limits,
        )?),
        received_at: e.received_at,
        record: record_from_proto(e.record.ok_or(WireError::Missing("event.record"))?, limits)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn sample_flow() -> FlowRecord {
        FlowRecord {
            cookie: u64::MAX - 3,
            protocol: Protocol::Tcp,
            family: Family::Ipv6,
            local_addr: "::1".parse().expect("ip"),
            local_port: 443,
            remote_addr: Some("2001:db8::7".parse().expect("ip")),
            remote_port: Some(51000),
            direction: Direction::Inbound,
            scope: Scope::NorthSouth,
            phase: FlowPhase::End,
            state: "CLOSE".into(),
            preexisting: true,
            bytes_sent: Some(1),
            bytes_received: Some(2),
            segs_out: Some(3),
            segs_in: Some(4),
            retransmits: Some(0),
            total_retrans: Some(5),
            rtt_us: Some(60),
            first_seen: 7,
            last_seen: 8,
            ended_at: Some(9),
            uid: Some(1000),
            inode: Some(77),
            pid: Some(42),
            process_start_time: Some(11),
            attribution: Attribution::Fd,
            end_reason: EndReason::DestroyEvent,
            reset: true,
            peer_scrubbed: true,
            cgroup_id: Some(99),
        }
    }

    fn sample_process() -> ProcessRecord {
        ProcessRecord {
            pid: 42,
            start_time: 11,
            ppid: 1,
            parent_start_time: Some(3),
            phase: ProcessPhase::Exec,
            comm: b"ev\nil\xff".to_vec(),
            exe: None,
            argv: vec![b"a".to_vec(), b"\x1b[31m".to_vec()],
            cwd: Some(b"/tmp".to_vec()),
            uid: 1,
            gid: 2,
            euid: 3,
            egid: 4,
            tty: Some(34816),
            session_id: 5,
            pgid: 6,
            container_id: Some("abc".into()),
            pod_uid: None,
            exit_time: None,
            ancestors: vec![Ancestor {
                pid: 1,
                start_time: 3,
                comm: b"init".to_vec(),
                exe: Some(b"/sbin/init".to_vec()),
                argv: vec![],
                exited: false,
                uid: Some(0),
            }],
            exe_unavailable: Unavailable::PermissionDenied,
            cwd_unavailable: Unavailable::Unspecified,
            exe_deleted: false,
            seen_at_exit_only: false,
            preexisting: true,
            stdio_is_socket: Some(true),
            stdio_socket_inodes: vec![5, 6],
            forked_no_exec: true,
            exe_replaced: Some(false),
            stdin_pipe: Some(7),
            stdout_pipe: None,
            comm_is_exe_link: true,
        }
    }

    #[test]
    fn records_round_trip() {
        let limits = Limits::default();
        for record in [
            Record::Flow(sample_flow()),
            Record::Process(sample_process()),
        ] {
            let back = record_from_proto(record_to_proto(&record), &limits).expect("valid");
            assert_eq!(back, record);
        }
    }

    #[test]
    fn invalid_fields_are_named() {
        let limits = Limits::default();
        let mut flow = flow_to_proto(&sample_flow());
        flow.local_addr = "not-an-ip".into();
        let err = record_from_proto(
            pb::Record {
                kind: Some(pb::record::Kind::Flow(flow)),
            },
            &limits,
        )
        .expect_err("invalid");
        assert!(err.to_string().contains("flow.local_addr"), "{err}");
        let mut flow = flow_to_proto(&sample_flow());
        flow.protocol = 99;
        assert!(matches!(
            record_from_proto(
                pb::Record {
                    kind: Some(pb::record::Kind::Flow(flow))
                },
                &limits
            ),
            Err(WireError::BadEnum {
                field: "protocol",
                ..
            })
        ));
        let mut process = process_to_proto(&sample_process());
        process.argv = vec![b"x".to_vec(); limits.max_argv + 1];
        assert!(matches!(
            record_from_proto(
                pb::Record {
                    kind: Some(pb::record::Kind::Process(process))
                },
                &limits
            ),
            Err(WireError::TooLarge {
                field: "process.argv",
                ..
            })
        ));
        assert_eq!(
            record_from_proto(pb::Record { kind: None }, &limits),
            Err(WireError::Missing("record.kind"))
        );
    }
}
