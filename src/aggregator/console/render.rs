//! What every page shares: the shell (navigation, scope picker, sign-out), links that carry
//! the scope, and the rendering of values. Everything a watched workload controls (process
//! names, argv, paths, alert outputs built from them) goes through [`inert`]: maud escapes
//! HTML, and control, invisible and bidirectional-override characters are shown as visible
//! escapes, so a name can neither run, hide text nor reorder what the analyst reads.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::assets;
use super::auth::Viewer;
use super::scope::{self, TimeScope};
use crate::model::{Direction, Severity, UnixNanos};

/// The pages in the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Alerts,
    Map,
    Search,
    Rules,
    Entity,
}

/// What a page hands to the shell.
pub struct Page {
    pub title: String,
    pub nav: Nav,
    /// The path the scope picker submits to (the page itself).
    pub path: &'static str,
    /// The page's own parameters besides the scope (kept when the scope changes).
    pub keep: Vec<(&'static str, String)>,
    pub body: Markup,
    /// Extra scripts (vendored libraries) this page needs beyond htmx and the app's own.
    pub scripts: &'static [&'static str],
}

pub fn shell(page: Page, viewer: &Viewer, scope: &TimeScope) -> Markup {
    let link = |path: &str| href(path, scope, &[]);
    let nav_item = |nav: Nav, path: &str, label: &str| {
        let current = page.nav == nav;
        html! {
            li { a href=(link(path)) aria-current=[current.then_some("page")] { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // htmx must not inject inline styles or evaluate anything: the CSP forbids both.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"selfRequestsOnly":true}"#;
                title { (page.title) " · procflow" }
                link rel="stylesheet" href=(assets::url("app.css"));
                @if page.scripts.contains(&"uPlot.iife.min.js") {
                    link rel="stylesheet" href=(assets::url("uPlot.min.css"));
                }
                script src=(assets::url("htmx.min.js")) defer {}
                @for s in page.scripts { script src=(assets::url(s)) defer {} }
                script src=(assets::url("app.js")) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="Main" {
                        a.brand href=(link("/")) { "procflow" }
                        ul {
                            (nav_item(Nav::Overview, "/", "Overview"))
                            (nav_item(Nav::Alerts, "/alerts", "Alerts"))
                            (nav_item(Nav::Map, "/map", "Service map"))
                            (nav_item(Nav::Search, "/search", "Search"))
                            (nav_item(Nav::Rules, "/rules", "Rules"))
                        }
                    }
                    div.who {
                        span { "Signed in as " strong { (viewer.name()) } " · " (viewer.describe()) }
                        form method="post" action="/signout" {
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                (picker(&page, scope))
                main #main tabindex="-1" {
                    h1 { (page.title) }
                    (page.body)
                }
            }
        }
    }
}

/// The scope picker: shortcuts as links, a fixed window as a form (works without script).
fn picker(page: &Page, scope: &TimeScope) -> Markup {
    let pinned = scope.pinned();
    html! {
        section.scope aria-label="Scope time" {
            span.scope-now { "Scope: " strong { (scope.label()) } " · baseline " (scope::format_length(scope.baseline_hours)) " before" }
            ul.shortcuts {
                @for (name, hours) in scope::SHORTCUTS {
                    @let s = scope.with_last(hours);
                    li { a href=(href_keep(page.path, &s, &page.keep))
                        aria-current=[(scope.last_hours == Some(hours)).then_some("true")] { "last " (name) } }
                }
            }
            form.window method="get" action=(page.path) {
                @for (k, v) in &page.keep { input type="hidden" name=(k) value=(v); }
                label { "From (UTC hour) " input name="from" value=(scope::format_hour(pinned.start)) pattern=r"\d{4}-\d{2}-\d{2}T\d{2}" size="13" required; }
                label { "to " input name="to" value=(scope::format_hour(pinned.end)) pattern=r"\d{4}-\d{2}-\d{2}T\d{2}" size="13" required; }
                label { "baseline " input name="baseline" value=(scope::format_length(scope.baseline_hours)) size="5"; }
                button type="submit" { "Apply" }
            }
        }
    }
}

/// A link to `path` with the scope and `extra` parameters.
pub fn href(path: &str, scope: &TimeScope, extra: &[(&str, &str)]) -> String {
    let mut out = String::from(path);
    let mut sep = '?';
    let mut push = |k: &str, v: &str| {
        out.push(sep);
        sep = '&';
        out.push_str(k);
        out.push('=');
        percent_encode(&mut out, v);
    };
    for (k, v) in extra {
        push(k, v);
    }
    for (k, v) in scope.params() {
        push(k, &v);
    }
    out
}

fn href_keep(path: &str, scope: &TimeScope, keep: &[(&'static str, String)]) -> String {
    let extra: Vec<(&str, &str)> = keep.iter().map(|(k, v)| (*k, v.as_str())).collect();
    href(path, scope, &extra)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(out: &mut String, value: &str) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Bytes a process controls, shown inert: valid text as text, every control, invisible or
/// bidirectional formatting character as a visible `\u{…}` escape, invalid UTF-8 as `\xNN`.
pub fn inert(bytes: &[u8]) -> Markup {
    let mut plain = String::new();
    let mut parts: Vec<Markup> = Vec::new();
    let flush = |plain: &mut String, parts: &mut Vec<Markup>| {
        if !plain.is_empty() {
            parts.push(html! { (plain) });
            plain.clear();
        }
    };
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if shown_escaped(c) {
                flush(&mut plain, &mut parts);
                let code = format!("\\u{{{:x}}}", c as u32);
                parts.push(html! { span.esc title="a control or formatting character" { (code) } });
            } else {
                plain.push(c);
            }
        }
        for b in chunk.invalid() {
            flush(&mut plain, &mut parts);
            let code = format!("\\x{b:02x}");
            parts.push(html! { span.esc title="a byte that is not UTF-8" { (code) } });
        }
    }
    flush(&mut plain, &mut parts);
    html! { bdi.raw { @for p in parts { (p) } } }
}

/// A string from a record (e.g. an alert's output, built from process names) shown inert.
pub fn inert_str(s: &str) -> Markup {
    inert(s.as_bytes())
}

/// Characters that must not act: C0/C1 controls and DEL, bidirectional marks, embeddings,
/// overrides and isolates, zero-width and other invisible format characters.
fn shown_escaped(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}')
}

/// An argv, each argument inert and visibly separated.
pub fn argv(args: &[Vec<u8>]) -> Markup {
    html! {
        span.argv {
            @for (i, a) in args.iter().enumerate() {
                @if i > 0 { " " }
                span.arg { (inert(a)) }
            }
        }
    }
}

pub fn time(ns: UnixNanos) -> Markup {
    if ns == 0 {
        return html! { "—" };
    }
    html! { time datetime=(scope::format_time(ns).replace(' ', "T")) { (scope::format_time(ns)) } }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Severity as a word and a shape, coloured too: colour is never the only signal.
pub fn severity(s: Severity) -> Markup {
    let (class, mark, word) = match s {
        Severity::Critical => ("sev sev-critical", "◆◆", "critical"),
        Severity::High => ("sev sev-high", "◆", "high"),
        Severity::Medium => ("sev sev-medium", "▲", "medium"),
        Severity::Low => ("sev sev-low", "●", "low"),
        Severity::Info => ("sev sev-info", "○", "info"),
    };
    html! { span class=(class) { span aria-hidden="true" { (mark) } " " (word) } }
}

pub fn scope_label(s: crate::model::Scope) -> Markup {
    use crate::model::Scope;
    let (class, word) = match s {
        Scope::NorthSouth => ("net net-ns", "north-south"),
        Scope::EastWest => ("net net-ew", "east-west"),
        Scope::Local => ("net net-local", "local"),
        _ => ("net", "unknown"),
    };
    html! { span class=(class) { (word) } }
}

pub fn direction_label(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
        Direction::Listen => "listen",
        _ => "unknown",
    }
}

/// A JSON document for the page's script, in a non-executing `<script type=application/json>`
/// (allowed by the CSP; `<` is escaped so the data cannot close the element).
pub fn json_data(id: &str, value: &serde_json::Value) -> Markup {
    let text = value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    html! { script type="application/json" id=(id) { (PreEscaped(text)) } }
}

/// A notice that an answer stopped at a bound.
pub fn truncated(is: bool) -> Markup {
    html! {
        @if is {
            p.notice role="status" { "The answer stopped at the aggregator's bound: it covers part of the scope. Narrow the scope or the filter." }
        }
    }
}

pub fn empty(what: &str) -> Markup {
    html! { p.empty { "No " (what) " in this scope." } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_process_names_are_shown_inert() {
        let hostile =
            "<img src=x onerror=alert(1)>\u{202e}gpj.exe\u{1b}[31m\r\nroot\u{200b}\u{2066}x"
                .as_bytes()
                .iter()
                .copied()
                .chain([0xff, 0x00])
                .collect::<Vec<u8>>();
        let html = inert(&hostile).into_string();
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
        for raw in [
            '\u{202e}', '\u{1b}', '\r', '\n', '\u{200b}', '\u{2066}', '\0',
        ] {
            assert!(!html.contains(raw), "{raw:?} left raw in {html}");
        }
        for shown in [
            r"\u{202e}",
            r"\u{1b}",
            r"\u{d}",
            r"\u{a}",
            r"\u{200b}",
            r"\u{2066}",
            r"\xff",
            r"\u{0}",
        ] {
            assert!(html.contains(shown), "{shown} missing from {html}");
        }
        // Plain and right-to-left letters stay readable, isolated from the text around them.
        assert_eq!(
            inert("nginx: worker".as_bytes()).into_string(),
            "<bdi class=\"raw\">nginx: worker</bdi>"
        );
        assert!(inert("שלום".as_bytes()).into_string().contains("שלום"));
    }

    #[test]
    fn embedded_json_cannot_close_its_element() {
        let v = serde_json::json!({"name": "</script><script>alert(1)</script>&"});
        let html = json_data("d", &v).into_string();
        assert_eq!(html.matches("</script>").count(), 1, "{html}");
        assert!(!html.contains("<script>alert"));
    }

    #[test]
    fn links_carry_the_scope_and_encode_values() {
        let scope = TimeScope {
            start: 0,
            end: scope::HOUR_NS * 24,
            last_hours: None,
            baseline_hours: 7 * 24,
        };
        assert_eq!(
            href("/pod", &scope, &[("pod", "web 1&x=<y>"), ("ns", "shop")]),
            "/pod?pod=web%201%26x%3D%3Cy%3E&ns=shop&from=1970-01-01T00&to=1970-01-02T00&baseline=7d"
        );
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert!(severity(Severity::High).into_string().contains("high"));
    }
}
