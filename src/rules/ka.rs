//! The `ka.*` fields of the rule language: what an audit rule reads of an audit record
//! (`kinds: [audit]`). The names follow Falco's k8saudit fields where one exists.
//!
//! Some fields hold a list (a user's groups, the source addresses, a pod's images and
//! hostPath mounts, a binding's subjects): a test on a list holds when it holds for one of
//! its items (`ka.user.groups == "system:masters"`), and `!=` holds when no item equals the
//! value. In an output template or a key a list is written with commas.
//!
//! This module reads records only; the language ([`super::lang`]) turns its values into
//! its own.

use std::net::IpAddr;

use crate::model::{AuditRecord, AuditStage};

/// An audit field, resolved at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KaField {
    Cluster,
    AuditId,
    Stage,
    Verb,
    Uri,
    UserName,
    UserGroups,
    ImpersonatedUser,
    SourceIps,
    SourceIp,
    UserAgent,
    Resource,
    Subresource,
    Namespace,
    Name,
    ApiGroup,
    Call,
    ResponseCode,
    ResponseReason,
    Outcome,
    Decision,
    DecisionReason,
    ExecCommand,
    ExecContainer,
    PodPrivileged,
    PodHostNetwork,
    PodHostPid,
    PodHostIpc,
    PodHostPaths,
    PodImages,
    RoleWildcard,
    RolePodExec,
    BindingRole,
    BindingSubjects,
}

/// What a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KaType {
    Text,
    Int,
    Bool,
    Ip,
    /// One of [`enum_names`]'s values.
    Enum,
}

/// A field's value for one record.
#[derive(Debug, Clone, PartialEq)]
pub enum KaValue<'a> {
    Null,
    Text(&'a str),
    Owned(String),
    Int(i64),
    Bool(bool),
    Ip(IpAddr),
}

use KaField::*;

/// Every field: its name, what it reads, its type, and whether it holds a list.
pub const FIELDS: &[(&str, KaField, KaType, bool)] = &[
    ("ka.cluster", Cluster, KaType::Text, false),
    ("ka.auditid", AuditId, KaType::Text, false),
    ("ka.stage", Stage, KaType::Enum, false),
    ("ka.verb", Verb, KaType::Text, false),
    ("ka.uri", Uri, KaType::Text, false),
    ("ka.user.name", UserName, KaType::Text, false),
    ("ka.user.groups", UserGroups, KaType::Text, true),
    ("ka.impuser.name", ImpersonatedUser, KaType::Text, false),
    ("ka.sourceips", SourceIps, KaType::Ip, true),
    ("ka.source_ip", SourceIp, KaType::Ip, false),
    ("ka.useragent", UserAgent, KaType::Text, false),
    ("ka.target.resource", Resource, KaType::Text, false),
    ("ka.target.subresource", Subresource, KaType::Text, false),
    ("ka.target.namespace", Namespace, KaType::Text, false),
    ("ka.target.name", Name, KaType::Text, false),
    ("ka.target.group", ApiGroup, KaType::Text, false),
    ("ka.call", Call, KaType::Text, false),
    ("ka.response.code", ResponseCode, KaType::Int, false),
    ("ka.response.reason", ResponseReason, KaType::Text, false),
    ("ka.outcome", Outcome, KaType::Enum, false),
    ("ka.auth.decision", Decision, KaType::Text, false),
    ("ka.auth.reason", DecisionReason, KaType::Text, false),
    ("ka.exec.command", ExecCommand, KaType::Text, false),
    ("ka.exec.container", ExecContainer, KaType::Text, false),
    ("ka.req.pod.privileged", PodPrivileged, KaType::Bool, false),
    (
        "ka.req.pod.host_network",
        PodHostNetwork,
        KaType::Bool,
        false,
    ),
    ("ka.req.pod.host_pid", PodHostPid, KaType::Bool, false),
    ("ka.req.pod.host_ipc", PodHostIpc, KaType::Bool, false),
    ("ka.req.pod.hostpath", PodHostPaths, KaType::Text, true),
    ("ka.req.pod.images", PodImages, KaType::Text, true),
    ("ka.req.role.wildcard", RoleWildcard, KaType::Bool, false),
    ("ka.req.role.pod_exec", RolePodExec, KaType::Bool, false),
    ("ka.req.binding.role", BindingRole, KaType::Text, false),
    (
        "ka.req.binding.subjects",
        BindingSubjects,
        KaType::Text,
        true,
    ),
];

/// The field, its type and whether it is a list.
pub fn resolve(name: &str) -> Option<(KaField, KaType, bool)> {
    FIELDS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|&(_, f, t, list)| (f, t, list))
}

pub fn is_list(f: KaField) -> bool {
    FIELDS.iter().any(|&(_, g, _, list)| g == f && list)
}

/// The names an enum field holds, by ordinal.
pub fn enum_names(f: KaField) -> Option<&'static [&'static str]> {
    match f {
        Stage => Some(AuditStage::NAMES),
        Outcome => Some(crate::model::Outcome::NAMES),
        _ => None,
    }
}

/// An enum field's value as its ordinal.
pub fn ordinal(f: KaField, a: &AuditRecord) -> Option<u8> {
    match f {
        Stage => Some(a.stage.ordinal()),
        Outcome => Some(a.outcome().ordinal()),
        _ => None,
    }
}

/// A field's value; a list as its items joined with commas (for templates and keys).
pub fn get(f: KaField, a: &AuditRecord) -> KaValue<'_> {
    fn text(s: &str) -> KaValue<'_> {
        KaValue::Text(s)
    }
    fn opt(s: Option<&String>) -> KaValue<'_> {
        s.map_or(KaValue::Null, |s| KaValue::Text(s))
    }
    let object = a.object.as_ref();
    let pod = a.pod.as_ref();
    let flag = |v: Option<bool>| v.map_or(KaValue::Null, KaValue::Bool);
    match f {
        Cluster => text(&a.cluster),
        AuditId => text(&a.audit_id),
        Stage => text(a.stage.name()),
        Verb => text(&a.verb),
        Uri => text(&a.request_uri),
        UserName => text(&a.user.username),
        ImpersonatedUser => opt(a.impersonated_user.as_ref().map(|u| &u.username)),
        SourceIp => a.source_ip().map_or(KaValue::Null, KaValue::Ip),
        UserAgent => opt(a.user_agent.as_ref()),
        Resource => opt(object.map(|o| &o.resource).filter(|r| !r.is_empty())),
        Subresource => opt(object.and_then(|o| o.subresource.as_ref())),
        Namespace => opt(object.and_then(|o| o.namespace.as_ref())),
        Name => opt(object.and_then(|o| o.name.as_ref())),
        ApiGroup => opt(object.and_then(|o| o.api_group.as_ref())),
        Call => KaValue::Owned(format!("{} {}", a.verb, a.resource_path())),
        ResponseCode => a
            .response_code
            .map_or(KaValue::Null, |c| KaValue::Int(i64::from(c))),
        ResponseReason => opt(a.response_reason.as_ref()),
        Outcome => text(a.outcome().as_str()),
        Decision => opt(a.decision.as_ref()),
        DecisionReason => opt(a.decision_reason.as_ref()),
        ExecCommand => a
            .exec
            .as_ref()
            .map_or(KaValue::Null, |e| KaValue::Owned(e.command.join(" "))),
        ExecContainer => opt(a.exec.as_ref().map(|e| &e.container)),
        PodPrivileged => flag(pod.map(|p| p.privileged)),
        PodHostNetwork => flag(pod.map(|p| p.host_network)),
        PodHostPid => flag(pod.map(|p| p.host_pid)),
        PodHostIpc => flag(pod.map(|p| p.host_ipc)),
        RoleWildcard => flag(a.role.as_ref().map(|r| r.wildcard)),
        RolePodExec => flag(a.role.as_ref().map(|r| r.pod_exec)),
        BindingRole => opt(a.binding.as_ref().map(|b| &b.role_name)),
        UserGroups | SourceIps | PodHostPaths | PodImages | BindingSubjects => {
            let mut items = Vec::new();
            each(f, a, &mut |v| {
                items.push(match v {
                    KaValue::Text(s) => s.to_owned(),
                    KaValue::Ip(ip) => ip.to_string(),
                    _ => String::new(),
                });
                false
            });
            if items.is_empty() {
                KaValue::Null
            } else {
                KaValue::Owned(items.join(","))
            }
        }
    }
}

/// Offers a list field's items to `visit` until it returns true; whether one did.
pub fn each<'a>(
    f: KaField,
    a: &'a AuditRecord,
    visit: &mut dyn FnMut(KaValue<'a>) -> bool,
) -> bool {
    let texts = |items: &'a [String], visit: &mut dyn FnMut(KaValue<'a>) -> bool| {
        items.iter().any(|s| visit(KaValue::Text(s)))
    };
    match f {
        UserGroups => texts(&a.user.groups, visit),
        SourceIps => a.source_ips.iter().any(|ip| visit(KaValue::Ip(*ip))),
        PodHostPaths => a.pod.as_ref().is_some_and(|p| texts(&p.host_paths, visit)),
        PodImages => a.pod.as_ref().is_some_and(|p| texts(&p.images, visit)),
        BindingSubjects => a
            .binding
            .as_ref()
            .is_some_and(|b| texts(&b.subjects, visit)),
        _ => visit(get(f, a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_resolves_and_reads() {
        let a: AuditRecord = crate::audit::event::decode_event(
            crate::audit::event::tests::fixture("pod-create-request-response").as_bytes(),
            "prod",
            &mut Default::default(),
        )
        .expect("fixture");
        for &(name, field, ty, list) in FIELDS {
            assert_eq!(resolve(name), Some((field, ty, list)), "{name}");
            assert_eq!(is_list(field), list, "{name}");
            assert_eq!(enum_names(field).is_some(), ty == KaType::Enum, "{name}");
            let _ = get(field, &a);
        }
        assert_eq!(get(Call, &a), KaValue::Owned("create pods".into()));
        assert_eq!(
            get(SourceIps, &a),
            KaValue::Owned("10.0.12.34,192.0.2.10".into())
        );
        assert_eq!(get(PodPrivileged, &a), KaValue::Bool(true));
        assert_eq!(
            get(RoleWildcard, &a),
            KaValue::Null,
            "no role in a pod create"
        );
        let mut seen = Vec::new();
        each(UserGroups, &a, &mut |v| {
            seen.push(v);
            false
        });
        assert_eq!(seen.len(), 3);
        assert!(each(PodImages, &a, &mut |v| v == KaValue::Text("busybox:1.36")));
        assert_eq!(resolve("ka.nope"), None);
    }
}
