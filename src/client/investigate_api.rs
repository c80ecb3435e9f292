//! The text form of `procflow investigate api`. Subjects, user agents and object names are
//! whatever a client sent the API server: every one is escaped before it reaches a terminal.

use crate::investigate::api::{ApiActivity, OutcomeCounts};
use crate::model::{display_bytes, AuditRecord};

use super::investigate::when;

fn text(s: &str) -> String {
    display_bytes(s.as_bytes())
}

fn counts(c: &OutcomeCounts) -> String {
    format!(
        "success={} failed={} unauthorized={} forbidden={}",
        c.success, c.failed, c.unauthorized, c.forbidden
    )
}

fn change_line(a: &AuditRecord) -> String {
    let object = a.object.as_ref();
    let name = object.and_then(|o| o.name.as_deref()).unwrap_or("");
    let who = match &a.impersonated_user {
        Some(as_user) => format!(
            "{} (as {})",
            text(&a.user.username),
            text(&as_user.username)
        ),
        None => text(&a.user.username),
    };
    let from = a
        .source_ip()
        .map_or_else(|| "?".to_owned(), |ip| ip.to_string());
    format!(
        "  {} {} {} {} by {who} from {from} ({}) -> {}",
        when(a.request_received),
        text(&a.verb),
        text(&a.resource_path()),
        text(name),
        text(a.user_agent.as_deref().unwrap_or("")),
        a.response_code
            .map_or_else(|| "no response".to_owned(), |c| c.to_string()),
    )
}

pub fn show(a: &ApiActivity) -> String {
    let mut out = format!(
        "API calls: {} of {} groups, {} requests{}\n",
        a.calls.len(),
        a.total_calls,
        a.requests,
        if a.truncated { " (truncated)" } else { "" }
    );
    for c in &a.calls {
        let who = match &c.impersonated {
            Some(as_user) => format!("{} (as {})", text(&c.subject), text(as_user)),
            None => text(&c.subject),
        };
        let from = c
            .source_ip
            .map_or_else(|| "?".to_owned(), |ip| ip.to_string());
        out.push_str(&format!(
            "  {} {} {} by {who} from {from}  {}  last {}\n",
            text(&c.cluster),
            text(&c.verb),
            text(&c.resource),
            counts(&c.counts),
            when(c.last_seen)
        ));
    }
    if a.baseline_requests == 0 {
        out.push_str("note: the baseline holds no API requests; every call in the scope is new\n");
    }
    out.push_str(&format!("newly observed calls: {}\n", a.new_calls.len()));
    for n in &a.new_calls {
        let ips: Vec<String> = n.source_ips.iter().map(|ip| ip.to_string()).collect();
        out.push_str(&format!(
            "  {} {} {} {}  {}  from [{}] ({}) first {}\n",
            text(&n.cluster),
            text(&n.subject),
            text(&n.verb),
            text(&n.resource),
            counts(&n.counts),
            ips.join(", "),
            text(n.user_agent.as_deref().unwrap_or("")),
            when(n.first_seen)
        ));
    }
    out.push_str(&format!(
        "subjects with increased volume: {}\n",
        a.increased.len()
    ));
    for i in &a.increased {
        out.push_str(&format!(
            "  {} {}  {:.1}/h in the baseline, {:.1}/h now ({} calls)\n",
            text(&i.cluster),
            text(&i.subject),
            i.baseline_per_hour,
            i.window_per_hour,
            i.calls
        ));
    }
    if !a.changes.is_empty() {
        out.push_str(&format!(
            "who created or changed the pods and their controllers: {}\n",
            a.changes.len()
        ));
        for c in &a.changes {
            out.push_str(&change_line(c));
            out.push('\n');
        }
    }
    out.trim_end().to_owned()
}
