//! Rules: the managed and custom rules the engine has loaded (kept current across hot
//! reloads), enabled or not, severity, ATT&CK and other tags, and how many alerts each raised
//! in the scope for this viewer.

use std::collections::HashMap;

use maud::html;

use super::render::{self, href, Nav, Page};
use super::{Ctx, PageError};

pub fn build(ctx: &Ctx) -> Result<Page, PageError> {
    let rules = ctx.rules.as_ref().map(|r| r.get());
    let mut counts: HashMap<String, (usize, u64)> = HashMap::new();
    for (_, a) in ctx.alerts(&[], &[])? {
        let c = counts.entry(a.rule_id).or_default();
        c.0 += 1;
        c.1 += a.count.max(1);
    }
    let body = html! {
        @match &rules {
            None => p.notice { "Detection is off on this aggregator (--no-detection): no rule runs." },
            Some(rules) => {
                p { (rules.len()) " rules loaded: " (rules.iter().filter(|r| r.managed).count()) " managed, "
                    (rules.iter().filter(|r| !r.managed).count()) " custom; "
                    (rules.iter().filter(|r| !r.enabled).count()) " disabled." }
                div.scroll { table {
                    thead { tr {
                        th scope="col" { "Rule" } th scope="col" { "Severity" } th scope="col" { "State" }
                        th scope="col" { "Source" } th scope="col" { "Records" } th scope="col" { "Tags" }
                        th.num scope="col" { "Alerts in scope" }
                    } }
                    tbody { @for r in rules.iter() {
                        @let (alerts, events) = counts.get(&r.id).copied().unwrap_or_default();
                        tr {
                            td { strong { (r.name) } br; span.muted { (r.id) } @if !r.description.is_empty() { br; (r.description) } }
                            td { (render::severity(r.severity)) }
                            td { @if r.enabled { "enabled" } @else { strong { "disabled" } } @if let Some(k) = r.stateful { br; span.muted { (k) } } }
                            td { @if r.managed { "managed" } @else { "custom" } br; span.muted.raw { (r.file) } }
                            td { (r.kinds.join(", ")) }
                            td { @for t in &r.tags { span.tag { (t) } } }
                            td.num {
                                @if alerts > 0 { a href=(href("/search", &ctx.scope, &[("kind", "alert")])) { (alerts) } " (" (events) " events)" }
                                @else { "0" }
                            }
                        }
                    } }
                } }
            }
        }
    };
    Ok(Page {
        title: "Rules".into(),
        nav: Nav::Rules,
        path: "/rules",
        keep: Vec::new(),
        body,
        scripts: &[],
    })
}
