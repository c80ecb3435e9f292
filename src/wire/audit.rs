//! Audit records and exec attributions to and from `procflow.v1`, validating inbound ones
//! as the rest of `wire` does (sizes, addresses, enums; the offending field named).

use super::fields::{addr, check_len};
use super::{Limits, WireError};
use crate::model::{self, AuditLevel, AuditStage};
use crate::proto::v1 as pb;

/// Items one list of an audit record may hold (groups, addresses, images, paths, subjects).
const MAX_LIST: usize = 1024;

// === Outbound ===

pub fn audit_to_proto(a: &model::AuditRecord) -> pb::AuditEvent {
    pb::AuditEvent {
        cluster: a.cluster.clone(),
        audit_id: a.audit_id.clone(),
        stage: stage_to_proto(a.stage) as i32,
        level: level_to_proto(a.level) as i32,
        verb: a.verb.clone(),
        request_uri: a.request_uri.clone(),
        user: Some(user_to_proto(&a.user)),
        impersonated_user: a.impersonated_user.as_ref().map(user_to_proto),
        source_ips: a.source_ips.iter().map(|ip| ip.to_string()).collect(),
        user_agent: a.user_agent.clone(),
        object: a.object.as_ref().map(|o| pb::AuditObject {
            resource: o.resource.clone(),
            subresource: o.subresource.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            api_group: o.api_group.clone(),
            api_version: o.api_version.clone(),
        }),
        response_code: a.response_code,
        response_reason: a.response_reason.clone(),
        decision: a.decision.clone(),
        decision_reason: a.decision_reason.clone(),
        request_received: a.request_received,
        stage_time: a.stage_time,
        exec: a.exec.as_ref().map(|e| pb::AuditExec {
            container: e.container.clone(),
            command: e.command.clone(),
            tty: e.tty,
            stdin: e.stdin,
        }),
        pod: a.pod.as_ref().map(|p| pb::AuditPodSpec {
            privileged: p.privileged,
            host_network: p.host_network,
            host_pid: p.host_pid,
            host_ipc: p.host_ipc,
            host_paths: p.host_paths.clone(),
            images: p.images.clone(),
        }),
        role: a.role.as_ref().map(|r| pb::AuditRole {
            wildcard: r.wildcard,
            pod_exec: r.pod_exec,
        }),
        binding: a.binding.as_ref().map(|b| pb::AuditBinding {
            role_kind: b.role_kind.clone(),
            role_name: b.role_name.clone(),
            subjects: b.subjects.clone(),
        }),
    }
}

pub fn exec_to_proto(e: &model::ExecAttribution) -> pb::ExecAttribution {
    pb::ExecAttribution {
        cluster: e.cluster.clone(),
        audit_id: e.audit_id.clone(),
        user: e.user.clone(),
        impersonated_user: e.impersonated_user.clone(),
        source_ip: e.source_ips.first().map(|ip| ip.to_string()),
        source_ips: e.source_ips.iter().map(|ip| ip.to_string()).collect(),
        user_agent: e.user_agent.clone(),
        namespace: e.namespace.clone(),
        pod: e.pod.clone(),
        container: e.container.clone(),
        command: e.command.clone(),
        time: e.time,
    }
}

fn user_to_proto(u: &model::AuditUser) -> pb::AuditUser {
    pb::AuditUser {
        username: u.username.clone(),
        uid: u.uid.clone(),
        groups: u.groups.clone(),
    }
}

pub fn stage_to_proto(s: AuditStage) -> pb::AuditStage {
    match s {
        AuditStage::RequestReceived => pb::AuditStage::RequestReceived,
        AuditStage::ResponseStarted => pb::AuditStage::ResponseStarted,
        AuditStage::ResponseComplete => pb::AuditStage::ResponseComplete,
        AuditStage::Panic => pb::AuditStage::Panic,
    }
}

fn level_to_proto(l: AuditLevel) -> pb::AuditLevel {
    match l {
        AuditLevel::None => pb::AuditLevel::None,
        AuditLevel::Metadata => pb::AuditLevel::Metadata,
        AuditLevel::Request => pb::AuditLevel::Request,
        AuditLevel::RequestResponse => pb::AuditLevel::RequestResponse,
    }
}

// === Inbound (validating) ===

pub fn audit_from_proto(
    a: pb::AuditEvent,
    limits: &Limits,
) -> Result<model::AuditRecord, WireError> {
    let text = |field: &'static str, s: &str| check_len(field, s.len(), limits.max_string_bytes);
    for (field, value) in [
        ("audit.cluster", &a.cluster),
        ("audit.audit_id", &a.audit_id),
        ("audit.verb", &a.verb),
        ("audit.request_uri", &a.request_uri),
    ] {
        text(field, value)?;
    }
    if a.cluster.is_empty() {
        return Err(WireError::Missing("audit.cluster"));
    }
    if a.audit_id.is_empty() {
        return Err(WireError::Missing("audit.audit_id"));
    }
    for (field, value) in [
        ("audit.user_agent", &a.user_agent),
        ("audit.response_reason", &a.response_reason),
        ("audit.decision", &a.decision),
        ("audit.decision_reason", &a.decision_reason),
    ] {
        text(field, value.as_deref().unwrap_or_default())?;
    }
    check_len("audit.source_ips", a.source_ips.len(), MAX_LIST)?;
    let strings = |field: &'static str, list: &[String]| -> Result<(), WireError> {
        check_len(field, list.len(), MAX_LIST)?;
        list.iter().try_for_each(|s| text(field, s))
    };
    let user = |u: pb::AuditUser, field: &'static str| -> Result<model::AuditUser, WireError> {
        text(field, &u.username)?;
        text(field, &u.uid)?;
        strings(field, &u.groups)?;
        Ok(model::AuditUser {
            username: u.username,
            uid: u.uid,
            groups: u.groups,
        })
    };
    let object = match a.object {
        Some(o) => {
            for value in [
                Some(&o.resource),
                o.subresource.as_ref(),
                o.namespace.as_ref(),
                o.name.as_ref(),
                o.api_group.as_ref(),
                o.api_version.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                text("audit.object", value)?;
            }
            Some(model::AuditObject {
                resource: o.resource,
                subresource: o.subresource,
                namespace: o.namespace,
                name: o.name,
                api_group: o.api_group,
                api_version: o.api_version,
            })
        }
        None => None,
    };
    let exec = match a.exec {
        Some(e) => {
            text("audit.exec.container", &e.container)?;
            strings("audit.exec.command", &e.command)?;
            Some(model::ExecParams {
                container: e.container,
                command: e.command,
                tty: e.tty,
                stdin: e.stdin,
            })
        }
        None => None,
    };
    let pod = match a.pod {
        Some(p) => {
            strings("audit.pod.host_paths", &p.host_paths)?;
            strings("audit.pod.images", &p.images)?;
            Some(model::PodSpecFacts {
                privileged: p.privileged,
                host_network: p.host_network,
                host_pid: p.host_pid,
                host_ipc: p.host_ipc,
                host_paths: p.host_paths,
                images: p.images,
            })
        }
        None => None,
    };
    let binding = match a.binding {
        Some(b) => {
            text("audit.binding.role_kind", &b.role_kind)?;
            text("audit.binding.role_name", &b.role_name)?;
            strings("audit.binding.subjects", &b.subjects)?;
            Some(model::BindingFacts {
                role_kind: b.role_kind,
                role_name: b.role_name,
                subjects: b.subjects,
            })
        }
        None => None,
    };
    Ok(model::AuditRecord {
        cluster: a.cluster,
        audit_id: a.audit_id,
        stage: stage_from_proto(a.stage)?,
        level: level_from_proto(a.level)?,
        verb: a.verb,
        request_uri: a.request_uri,
        user: user(a.user.unwrap_or_default(), "audit.user")?,
        impersonated_user: a
            .impersonated_user
            .map(|u| user(u, "audit.impersonated_user"))
            .transpose()?,
        source_ips: a
            .source_ips
            .iter()
            .map(|ip| addr("audit.source_ips", ip))
            .collect::<Result<_, _>>()?,
        user_agent: a.user_agent,
        object,
        response_code: a.response_code,
        response_reason: a.response_reason,
        decision: a.decision,
        decision_reason: a.decision_reason,
        request_received: a.request_received,
        stage_time: a.stage_time,
        exec,
        pod,
        role: a.role.map(|r| model::RoleFacts {
            wildcard: r.wildcard,
            pod_exec: r.pod_exec,
        }),
        binding,
    })
}

pub fn exec_from_proto(
    e: pb::ExecAttribution,
    limits: &Limits,
) -> Result<model::ExecAttribution, WireError> {
    for (field, value) in [
        ("alert.exec.cluster", &e.cluster),
        ("alert.exec.audit_id", &e.audit_id),
        ("alert.exec.user", &e.user),
        ("alert.exec.user_agent", &e.user_agent),
        ("alert.exec.namespace", &e.namespace),
        ("alert.exec.pod", &e.pod),
        ("alert.exec.container", &e.container),
    ] {
        check_len(field, value.len(), limits.max_string_bytes)?;
    }
    check_len("alert.exec.command", e.command.len(), MAX_LIST)?;
    check_len("alert.exec.source_ips", e.source_ips.len(), MAX_LIST)?;
    // Older writers sent the first address alone.
    let source_ips = match (e.source_ips.is_empty(), e.source_ip) {
        (true, Some(ip)) => vec![addr("alert.exec.source_ip", &ip)?],
        _ => e
            .source_ips
            .iter()
            .map(|ip| addr("alert.exec.source_ips", ip))
            .collect::<Result<_, _>>()?,
    };
    Ok(model::ExecAttribution {
        cluster: e.cluster,
        audit_id: e.audit_id,
        user: e.user,
        impersonated_user: e.impersonated_user,
        source_ips,
        user_agent: e.user_agent,
        namespace: e.namespace,
        pod: e.pod,
        container: e.container,
        command: e.command,
        time: e.time,
    })
}

fn stage_from_proto(v: i32) -> Result<AuditStage, WireError> {
    match pb::AuditStage::try_from(v) {
        Ok(pb::AuditStage::RequestReceived) => Ok(AuditStage::RequestReceived),
        Ok(pb::AuditStage::ResponseStarted) => Ok(AuditStage::ResponseStarted),
        Ok(pb::AuditStage::ResponseComplete) => Ok(AuditStage::ResponseComplete),
        Ok(pb::AuditStage::Panic) => Ok(AuditStage::Panic),
        _ => Err(WireError::BadEnum {
            field: "audit.stage",
            value: v,
        }),
    }
}

fn level_from_proto(v: i32) -> Result<AuditLevel, WireError> {
    match pb::AuditLevel::try_from(v) {
        Ok(pb::AuditLevel::None) => Ok(AuditLevel::None),
        Ok(pb::AuditLevel::Metadata) => Ok(AuditLevel::Metadata),
        Ok(pb::AuditLevel::Request) => Ok(AuditLevel::Request),
        Ok(pb::AuditLevel::RequestResponse) => Ok(AuditLevel::RequestResponse),
        _ => Err(WireError::BadEnum {
            field: "audit.level",
            value: v,
        }),
    }
}
