//! Alerts as analysts read them: output templates, evidence, the process and its lineage.

use super::engine::Group;
use super::lang::{self, Ctx};
use super::load::Rule;
use crate::model::{display_bytes, AlertRecord, Event, UnixNanos};

#[derive(Debug, Clone)]
pub(super) enum Piece {
    Lit(String),
    Field(String),
}

pub(super) fn parse_template(t: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        out.push(Piece::Lit(rest[..i].to_string()));
        let Some(j) = rest[i..].find('}') else {
            return Err(format!("unclosed `{{` in output at byte {i}"));
        };
        let name = &rest[i + 1..i + j];
        if lang::field_for_name(name).is_none() {
            return Err(format!("output references unknown field `{name}`"));
        }
        out.push(Piece::Field(name.to_string()));
        rest = &rest[i + j + 1..];
    }
    out.push(Piece::Lit(rest.to_string()));
    Ok(out)
}

/// The alert for a rule that fired: the process with its lineage, the flow, the evidence.
pub(super) fn alert(
    rule: &Rule,
    event: &Event,
    ctx: &Ctx<'_>,
    g: Group,
    now: UnixNanos,
    seq: u64,
    state_evidence: Option<String>,
) -> AlertRecord {
    let mut evidence = vec![format!(
        "rule {} matched a {} record from {}/{}",
        rule.spec.id,
        event.record.kind().as_str(),
        event.source.pod_namespace,
        event.source.pod_name
    )];
    evidence.extend(state_evidence);
    if let Some(a) = ctx.audit {
        evidence.push(audit_evidence(a));
    }
    if let Some(f) = &ctx.flow {
        evidence.push(format!(
            "flow {}:{} -> {}:{} {:?} {:?} sent={} received={}",
            f.local_addr,
            f.local_port,
            f.remote_addr.map_or("*".to_owned(), |a| a.to_string()),
            f.remote_port.map_or("*".to_owned(), |p| p.to_string()),
            f.direction,
            f.scope,
            f.bytes_sent.map_or("n/a".to_owned(), |b| b.to_string()),
            f.bytes_received.map_or("n/a".to_owned(), |b| b.to_string()),
        ));
    }
    if let Some(l) = &ctx.listener {
        evidence.push(listener_evidence(l));
    }
    if let Some(p) = ctx.process {
        let chain: Vec<String> = std::iter::once(format!("{}({})", display_bytes(&p.comm), p.pid))
            .chain(
                p.ancestors
                    .iter()
                    .map(|a| format!("{}({})", display_bytes(&a.comm), a.pid)),
            )
            .collect();
        evidence.push(format!("lineage: {}", chain.join(" <- ")));
    }
    AlertRecord {
        id: format!("{}-{}-{}", rule.spec.id, now, seq),
        rule_id: rule.spec.id.clone(),
        rule_name: rule.spec.name.clone(),
        severity: rule.spec.severity.into(),
        tags: rule.spec.tags.clone(),
        time: now,
        first_seen: g.first_seen,
        last_seen: now,
        count: g.count,
        output: render(&rule.output, ctx),
        pod_name: event.source.pod_name.clone(),
        pod_namespace: event.source.pod_namespace.clone(),
        node_name: event.source.node_name.clone(),
        container_id: ctx.process.and_then(|p| p.container_id.clone()),
        process: ctx.process.cloned().map(Box::new),
        flows: ctx.flow.into_iter().cloned().collect(),
        evidence,
        exec: None,
    }
}

/// A listener in one line; a packet socket with what it captures.
fn listener_evidence(l: &crate::model::ListenerRecord) -> String {
    let uid = l.uid.map_or("unknown".to_owned(), |u| u.to_string());
    let owner = match l.pid {
        Some(pid) => format!("pid {pid} ({:?} attribution)", l.attribution),
        None => "owner not attributed".to_owned(),
    };
    match &l.packet {
        Some(p) => format!(
            "packet socket {} EtherType 0x{:04x}{} on {}, uid {uid}, inode {}, {owner}",
            match p.sock_type {
                3 => "SOCK_RAW",
                2 => "SOCK_DGRAM",
                _ => "of another type",
            },
            p.ethertype,
            if p.ethertype == 3 {
                " (every protocol)"
            } else {
                ""
            },
            match p.ifindex {
                0 => "every interface".to_owned(),
                i => format!("interface {i}"),
            },
            l.inode.unwrap_or(0),
        ),
        None => format!(
            "listener {:?} {}:{}, uid {uid}, {owner}",
            l.protocol, l.local_addr, l.local_port
        ),
    }
}

/// An audit event in one line: who did what to which object, from where, and the answer.
/// Every part a client chose is escaped.
pub(super) fn audit_evidence(a: &crate::model::AuditRecord) -> String {
    let object = a.object.as_ref().map_or(String::new(), |o| {
        format!(
            " {}/{}",
            o.namespace.as_deref().unwrap_or("-"),
            o.name.as_deref().unwrap_or("-")
        )
    });
    let who = match &a.impersonated_user {
        Some(as_user) => format!("{} (as {})", a.user.username, as_user.username),
        None => a.user.username.clone(),
    };
    display_bytes(
        format!(
            "audit {} {:?} {} {}{object} by {who} from {} ({}) -> {} ({}), cluster {}, audit ID {}",
            a.verb,
            a.stage,
            a.resource_path(),
            a.request_uri.split('?').next().unwrap_or_default(),
            a.source_ips
                .iter()
                .map(|ip| ip.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            a.user_agent.as_deref().unwrap_or(""),
            a.response_code
                .map_or("no response".into(), |c| c.to_string()),
            a.outcome().as_str(),
            a.cluster,
            a.audit_id
        )
        .as_bytes(),
    )
}

pub(super) fn render(pieces: &[Piece], ctx: &Ctx<'_>) -> String {
    let mut s = String::new();
    for p in pieces {
        match p {
            Piece::Lit(l) => s.push_str(l),
            Piece::Field(name) => push_val(
                &mut s,
                lang::field_for_name(name)
                    .map(|f| lang::get(f, ctx))
                    .unwrap_or(lang::Val::Null),
            ),
        }
    }
    s
}

/// Writes a field value as text: bytes escaped, absent as `<NA>`.
pub(super) fn push_val(s: &mut String, v: lang::Val<'_>) {
    use lang::Val;
    use std::fmt::Write as _;
    match v {
        Val::Null => s.push_str("<NA>"),
        Val::Bytes(b) => crate::model::push_display_bytes(s, &b),
        Val::Int(i) => {
            let _ = write!(s, "{i}");
        }
        Val::Bool(b) => s.push_str(if b { "true" } else { "false" }),
        // Keys are built per record: skip the formatting machinery.
        Val::Ip(ip) => crate::model::push_ip(s, ip),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipv4_keys_match_display() {
        for ip in [
            "0.0.0.0",
            "10.0.0.5",
            "192.168.100.9",
            "255.255.255.255",
            "1.20.30.200",
        ] {
            let addr: std::net::IpAddr = ip.parse().expect("ip");
            let mut s = String::new();
            super::push_val(&mut s, super::super::lang::Val::Ip(addr));
            assert_eq!(s, addr.to_string());
        }
    }
}
