//! Joins `kubectl exec` requests (audit events of `pods/exec`) with the process trees they
//! started in the pod (runtime records), in either arrival order, so that every alert on
//! that tree says who started it. Pure state: the detection thread feeds it every stored
//! event and the time, and turns what it returns into records.
//!
//! How a join is decided. The container runtime starts an exec'd process from outside the
//! pod's pid namespace, so it is a *root*: parent 0, not pid 1, started after the
//! collector (a container's init looks alike, but its command and time will not match). A
//! request and a root are *compatible* when they are of the same pod (the request's object,
//! the collector's downward-API identity), the root's command line is the request's
//! command (`command=` of the request URI, exactly as the runtime passes it on), and the
//! root started within `--audit-join-window` of the request's receive time (the API
//! server's clock and the node's). Only allowed requests join (an exec refused with 403
//! started nothing), and an attach, which starts no process, never does.
//!
//! A request is joined with a compatible root when every request compatible with that
//! root names the same person (user, impersonated user, addresses, client): then whichever
//! pairing is made, the attribution is right. When two people's identical commands meet
//! in one pod within the window, nothing is joined and both requests are reported as
//! ambiguous: a wrong join would blame the wrong person, which is worse than none. A
//! request that finds nothing within `--audit-join-wait` is reported as unmatched (no
//! process, or no collector reports the pod).
//!
//! Alerts raised on a tree before its request arrived are kept for the same wait; the join
//! sends them again, with the same id, carrying the attribution.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::model::{
    AlertRecord, AuditRecord, CollectorIdentity, Event, ExecAttribution, Outcome, ProcessPhase,
    ProcessRecord, Record, UnixNanos,
};
use crate::telemetry::audit::{AuditExecJoined, AuditExecUnmatched, AuditJoinEvicted};
use crate::telemetry::InternalEvent;

/// Requests waiting, roots waiting, joined trees and held alerts each stop growing here
/// (the oldest goes, counted): a flood of execs or processes cannot grow the aggregator.
const MAX_PENDING: usize = 100_000;
const MAX_ROOTS_PER_POD: usize = 1024;
const MAX_LINKS: usize = 100_000;
const MAX_HELD_ALERTS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
pub struct JoinConfig {
    /// Largest distance between a request's receive time and its root's start.
    pub window_ns: u64,
    /// How long either side waits for the other (arrival time).
    pub wait_ns: u64,
}

/// A request joined with the root of a tree.
#[derive(Debug, Clone)]
pub struct Join {
    pub attribution: Arc<ExecAttribution>,
    /// The root's latest record and the collector that reported it.
    pub root: ProcessRecord,
    pub source: Arc<CollectorIdentity>,
    /// Alerts raised on the tree before the join, now carrying the attribution.
    pub amended: Vec<AlertRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissReason {
    /// The pod's collector reported, and no process matched in the window.
    NoProcess,
    /// Processes matched, and so did another person's request: nothing was joined.
    Ambiguous,
    /// No collector reports the pod.
    PodNotWatched,
}

impl MissReason {
    pub fn as_str(self) -> &'static str {
        match self {
            MissReason::NoProcess => "no_process",
            MissReason::Ambiguous => "ambiguous",
            MissReason::PodNotWatched => "pod_not_watched",
        }
    }
}

/// A request nothing was joined with.
#[derive(Debug, Clone)]
pub struct Miss {
    pub attribution: Arc<ExecAttribution>,
    pub reason: MissReason,
}

type PodKey = (String, String);

struct Pending {
    attribution: Arc<ExecAttribution>,
    arrived: UnixNanos,
    /// Another person's compatible request was seen: never joined.
    contested: bool,
}

struct Root {
    source: Arc<CollectorIdentity>,
    process: ProcessRecord,
    /// Every command line the root was seen with (its START and EXECs).
    argvs: Vec<Vec<Vec<u8>>>,
    arrived: UnixNanos,
}

struct Link {
    pid: u32,
    start_time: UnixNanos,
    attribution: Arc<ExecAttribution>,
}

struct Held {
    arrived: UnixNanos,
    collector: Arc<str>,
    alert: AlertRecord,
}

pub struct Correlator {
    config: JoinConfig,
    pending: HashMap<PodKey, Vec<Pending>>,
    pending_count: usize,
    /// Requests registered, so their other stages are not registered again.
    known: HashSet<(String, String, UnixNanos)>,
    known_order: VecDeque<(UnixNanos, (String, String, UnixNanos))>,
    roots: HashMap<PodKey, Vec<Root>>,
    /// Joined trees by collector id.
    links: HashMap<Arc<str>, Vec<Link>>,
    link_order: VecDeque<(Arc<str>, u32, UnixNanos)>,
    /// When a collector last reported each pod.
    watched: HashMap<PodKey, UnixNanos>,
    held: VecDeque<Held>,
}

impl Correlator {
    pub fn new(config: JoinConfig) -> Correlator {
        Correlator {
            config,
            pending: HashMap::new(),
            pending_count: 0,
            known: HashSet::new(),
            known_order: VecDeque::new(),
            roots: HashMap::new(),
            links: HashMap::new(),
            link_order: VecDeque::new(),
            watched: HashMap::new(),
            held: VecDeque::new(),
        }
    }

    /// Takes in one stored event; returns the joins it made possible.
    pub fn observe(&mut self, event: &Event, now: UnixNanos) -> Vec<Join> {
        match &event.record {
            Record::Audit(a) => self.request(a, now),
            Record::Alert(_) => Vec::new(),
            record => {
                let pod = pod_of(&event.source);
                if pod.1.is_empty() {
                    return Vec::new();
                }
                self.watched.insert(pod.clone(), now);
                match record {
                    Record::Process(p) => self.process(&event.source, p, pod, now),
                    _ => Vec::new(),
                }
            }
        }
    }

    fn request(&mut self, a: &AuditRecord, now: UnixNanos) -> Vec<Join> {
        // An allowed exec only: a refused one started nothing, and a stage without a
        // response yet could still be refused.
        if a.outcome() != Outcome::Success || !a.is_pod_exec() {
            return Vec::new();
        }
        let Some(attribution) = ExecAttribution::of(a) else {
            return Vec::new();
        };
        let key = (a.cluster.clone(), a.audit_id.clone(), a.request_received);
        if !self.known.insert(key.clone()) {
            return Vec::new();
        }
        self.known_order.push_back((now, key));
        if attribution.command.is_empty() {
            // An attach starts no process: there is no tree to join.
            AuditExecUnmatched {
                reason: "no_command",
            }
            .emit();
            return Vec::new();
        }
        let pod = (attribution.namespace.clone(), attribution.pod.clone());
        let attribution = Arc::new(attribution);
        // A tree already joined with another person's request, whose root this request
        // would fit as well: the earlier join stands, this request is ambiguous.
        let contested = self.linked_rivals(&pod, &attribution);
        if self.pending_count >= MAX_PENDING {
            self.evict_oldest_pending();
        }
        self.pending.entry(pod.clone()).or_default().push(Pending {
            attribution,
            arrived: now,
            contested,
        });
        self.pending_count += 1;
        self.link_pod(&pod)
    }

    fn process(
        &mut self,
        source: &Arc<CollectorIdentity>,
        p: &ProcessRecord,
        pod: PodKey,
        now: UnixNanos,
    ) -> Vec<Join> {
        let is_root = p.ppid == 0 && p.pid != 1 && p.ancestors.is_empty() && !p.preexisting;
        if !is_root || p.phase == ProcessPhase::Exit {
            return Vec::new();
        }
        let roots = self.roots.entry(pod.clone()).or_default();
        let same = |r: &Root| {
            r.process.pid == p.pid
                && r.process.start_time == p.start_time
                && r.source.collector_id == source.collector_id
        };
        match roots.iter_mut().find(|r| same(r)) {
            Some(r) => {
                if !r.argvs.contains(&p.argv) {
                    r.argvs.push(p.argv.clone());
                }
                r.process = p.clone();
            }
            None => {
                if self
                    .links
                    .get(source.collector_id.as_str())
                    .is_some_and(|links| {
                        links
                            .iter()
                            .any(|l| l.pid == p.pid && l.start_time == p.start_time)
                    })
                {
                    return Vec::new(); // joined already (a later record of the root)
                }
                if roots.len() >= MAX_ROOTS_PER_POD {
                    roots.remove(0);
                    evicted("roots");
                }
                roots.push(Root {
                    source: source.clone(),
                    process: p.clone(),
                    argvs: vec![p.argv.clone()],
                    arrived: now,
                });
            }
        }
        self.link_pod(&pod)
    }

    /// Whether a root already joined with someone else would fit `attribution`.
    fn linked_rivals(&self, pod: &PodKey, attribution: &ExecAttribution) -> bool {
        // Joined roots are no longer in `roots`: look them up through the links.
        self.links.values().flatten().any(|l| {
            (l.attribution.namespace.as_str(), l.attribution.pod.as_str())
                == (pod.0.as_str(), pod.1.as_str())
                && l.attribution.command == attribution.command
                && l.start_time.abs_diff(attribution.time) <= self.config.window_ns
                && !same_person(&l.attribution, attribution)
        })
    }

    /// Joins what can be joined in `pod`, earliest request first.
    fn link_pod(&mut self, pod: &PodKey) -> Vec<Join> {
        let mut joins = Vec::new();
        while let (Some(pending), Some(roots)) = (self.pending.get(pod), self.roots.get(pod)) {
            let window = self.config.window_ns;
            let mut order: Vec<usize> = (0..pending.len()).collect();
            order.sort_by_key(|&i| pending[i].attribution.time);
            let mut chosen = None;
            for i in order {
                let e = &pending[i];
                if e.contested {
                    continue;
                }
                let candidates: Vec<usize> = (0..roots.len())
                    .filter(|&j| compatible(&e.attribution, &roots[j], window))
                    .collect();
                // Every request that fits any of these roots must name the same person.
                let unanimous = candidates.iter().all(|&j| {
                    pending
                        .iter()
                        .filter(|other| compatible(&other.attribution, &roots[j], window))
                        .all(|other| same_person(&other.attribution, &e.attribution))
                });
                if !unanimous {
                    continue;
                }
                if let Some(&j) = candidates
                    .iter()
                    .min_by_key(|&&j| roots[j].process.start_time.abs_diff(e.attribution.time))
                {
                    chosen = Some((i, j));
                    break;
                }
            }
            let Some((i, j)) = chosen else { break };
            let e = self.pending.get_mut(pod).map(|v| v.remove(i));
            let root = self.roots.get_mut(pod).map(|v| v.remove(j));
            let (Some(e), Some(root)) = (e, root) else {
                break;
            };
            self.pending_count -= 1;
            joins.push(self.link(e.attribution, root));
        }
        joins
    }

    fn link(&mut self, attribution: Arc<ExecAttribution>, root: Root) -> Join {
        AuditExecJoined.emit();
        let collector: Arc<str> = Arc::from(root.source.collector_id.as_str());
        if self.link_order.len() >= MAX_LINKS {
            if let Some((c, pid, start)) = self.link_order.pop_front() {
                if let Some(links) = self.links.get_mut(&c) {
                    links.retain(|l| !(l.pid == pid && l.start_time == start));
                }
                evicted("links");
            }
        }
        self.links.entry(collector.clone()).or_default().push(Link {
            pid: root.process.pid,
            start_time: root.process.start_time,
            attribution: attribution.clone(),
        });
        self.link_order
            .push_back((collector.clone(), root.process.pid, root.process.start_time));
        // Alerts on this tree raised before the join, sent again with who started it.
        let mut amended = Vec::new();
        let mut kept = VecDeque::with_capacity(self.held.len());
        for held in std::mem::take(&mut self.held) {
            let on_tree = held.collector == collector
                && held
                    .alert
                    .process
                    .as_deref()
                    .is_some_and(|p| in_tree(p, root.process.pid, root.process.start_time));
            if on_tree {
                let mut alert = held.alert;
                attribute(&mut alert, &attribution);
                alert.evidence.push(
                    "the exec request was joined after this alert was first raised (its audit event arrived later); this copy, with the same id, carries who started the tree".into(),
                );
                amended.push(alert);
            } else {
                kept.push_back(held);
            }
        }
        self.held = kept;
        Join {
            attribution,
            root: root.process,
            source: root.source,
            amended,
        }
    }

    /// Who started the tree `process` belongs to, if its root was joined.
    pub fn attribution_for(
        &self,
        collector: &str,
        process: &ProcessRecord,
    ) -> Option<Arc<ExecAttribution>> {
        self.links
            .get(collector)?
            .iter()
            .rev()
            .find(|l| in_tree(process, l.pid, l.start_time))
            .map(|l| l.attribution.clone())
    }

    /// Gives `alerts` (raised on `collector`'s records) the attribution of their tree, or
    /// holds those with a process for a join that may come.
    pub fn annotate(&mut self, collector: &str, alerts: &mut [AlertRecord], now: UnixNanos) {
        for alert in alerts.iter_mut() {
            let Some(process) = alert.process.as_deref() else {
                continue;
            };
            match self.attribution_for(collector, process) {
                Some(attribution) => attribute(alert, &attribution),
                None => {
                    if self.held.len() >= MAX_HELD_ALERTS {
                        self.held.pop_front();
                        evicted("held_alerts");
                    }
                    self.held.push_back(Held {
                        arrived: now,
                        collector: Arc::from(collector),
                        alert: alert.clone(),
                    });
                }
            }
        }
    }

    /// Forgets what waited longer than the wait; returns the requests nothing was joined
    /// with.
    pub fn expire(&mut self, now: UnixNanos) -> Vec<Miss> {
        let horizon = now.saturating_sub(self.config.wait_ns);
        let mut misses = Vec::new();
        let wait = self.config.wait_ns;
        for (pod, pending) in self.pending.iter_mut() {
            let reported = self.watched.get(pod).copied();
            let roots = self.roots.get(pod);
            pending.retain(|e| {
                if e.arrived > horizon {
                    return true;
                }
                // The pod's collector reported around the request (within the wait).
                let watched = reported.is_some_and(|t| t >= e.arrived.saturating_sub(wait));
                let reason = if e.contested
                    || roots.is_some_and(|r| {
                        r.iter()
                            .any(|r| compatible(&e.attribution, r, self.config.window_ns))
                    }) {
                    MissReason::Ambiguous
                } else if watched {
                    MissReason::NoProcess
                } else {
                    MissReason::PodNotWatched
                };
                AuditExecUnmatched {
                    reason: reason.as_str(),
                }
                .emit();
                misses.push(Miss {
                    attribution: e.attribution.clone(),
                    reason,
                });
                false
            });
        }
        self.pending.retain(|_, v| !v.is_empty());
        self.pending_count = self.pending.values().map(Vec::len).sum();
        for roots in self.roots.values_mut() {
            roots.retain(|r| r.arrived > horizon);
        }
        self.roots.retain(|_, v| !v.is_empty());
        self.watched
            .retain(|_, t| *t > horizon.saturating_sub(self.config.wait_ns));
        while self.held.front().is_some_and(|h| h.arrived <= horizon) {
            self.held.pop_front();
        }
        while self.known_order.front().is_some_and(|(t, _)| *t <= horizon) {
            if let Some((_, key)) = self.known_order.pop_front() {
                self.known.remove(&key);
            }
        }
        misses
    }

    fn evict_oldest_pending(&mut self) {
        let oldest = self
            .pending
            .iter()
            .flat_map(|(pod, v)| v.iter().enumerate().map(move |(i, e)| (e.arrived, pod, i)))
            .min_by_key(|(t, ..)| *t)
            .map(|(_, pod, i)| (pod.clone(), i));
        if let Some((pod, i)) = oldest {
            if let Some(v) = self.pending.get_mut(&pod) {
                v.remove(i);
                self.pending_count -= 1;
                evicted("pending");
            }
        }
    }
}

/// The record of a join: an informational alert on the root, carrying the attribution.
pub fn join_alert(join: &Join, now: UnixNanos) -> AlertRecord {
    let a = &join.attribution;
    let root = &join.root;
    let after = root.start_time as i128 - a.time as i128;
    let output = format!(
        "kubectl exec by {} into {}/{} joined with {}({}) started {} ms after the request",
        a.user,
        a.namespace,
        a.pod,
        String::from_utf8_lossy(&root.comm),
        root.pid,
        after / 1_000_000
    );
    AlertRecord {
        pod_name: join.source.pod_name.clone(),
        pod_namespace: join.source.pod_namespace.clone(),
        node_name: join.source.node_name.clone(),
        container_id: root.container_id.clone(),
        process: Some(Box::new(root.clone())),
        ..exec_alert(
            format!("{JOINED}-{}-{}", a.audit_id, root.pid),
            (
                JOINED,
                "Exec request joined with the process tree it started",
            ),
            crate::model::Severity::Info,
            a,
            output,
            now,
        )
    }
}

/// The record of a request nothing was joined with, for a pod a collector reports (for
/// other pods only the counter says it: most pods of a cluster may have no collector).
pub fn miss_alert(miss: &Miss, now: UnixNanos) -> Option<AlertRecord> {
    let why = match miss.reason {
        MissReason::PodNotWatched => return None,
        MissReason::NoProcess => "no process of the pod matched its command and time",
        MissReason::Ambiguous => {
            "another person's identical exec into the pod matched the same processes: nothing was joined rather than blame the wrong one"
        }
    };
    let a = &miss.attribution;
    let output = format!(
        "kubectl exec by {} into {}/{} command {:?}: {why} ({})",
        a.user,
        a.namespace,
        a.pod,
        a.command.join(" "),
        miss.reason.as_str()
    );
    Some(exec_alert(
        format!("{UNMATCHED}-{}", a.audit_id),
        (UNMATCHED, "Exec request not joined with a process"),
        crate::model::Severity::Low,
        a,
        output,
        now,
    ))
}

/// What the join's records share: the exec request as evidence, the pod it named.
fn exec_alert(
    id: String,
    (rule_id, rule_name): (&str, &str),
    severity: crate::model::Severity,
    a: &Arc<ExecAttribution>,
    output: String,
    now: UnixNanos,
) -> AlertRecord {
    AlertRecord {
        id,
        rule_id: rule_id.into(),
        rule_name: rule_name.into(),
        severity,
        tags: vec!["T1609".into()],
        time: now,
        first_seen: now,
        last_seen: now,
        count: 1,
        output: crate::model::display_bytes(output.as_bytes()),
        pod_name: a.pod.clone(),
        pod_namespace: a.namespace.clone(),
        node_name: String::new(),
        container_id: None,
        process: None,
        flows: Vec::new(),
        evidence: vec![a.evidence()],
        exec: Some(Box::new((**a).clone())),
    }
}

/// The rule ids of the join's own records.
pub const JOINED: &str = "PF-KA-EXEC-JOINED";
pub const UNMATCHED: &str = "PF-KA-EXEC-UNMATCHED";

fn evicted(what: &'static str) {
    AuditJoinEvicted { what }.emit();
}

fn pod_of(source: &CollectorIdentity) -> PodKey {
    (source.pod_namespace.clone(), source.pod_name.clone())
}

/// Same pod (by key), the root's command line is the request's, and it started within the
/// window of the request.
fn compatible(e: &ExecAttribution, r: &Root, window: u64) -> bool {
    r.process.start_time.abs_diff(e.time) <= window
        && r.argvs.iter().any(|argv| {
            argv.len() == e.command.len()
                && argv
                    .iter()
                    .zip(&e.command)
                    .all(|(a, c)| a.as_slice() == c.as_bytes())
        })
}

/// Two requests whose attribution reads the same.
fn same_person(a: &ExecAttribution, b: &ExecAttribution) -> bool {
    a.cluster == b.cluster
        && a.user == b.user
        && a.impersonated_user == b.impersonated_user
        && a.source_ips == b.source_ips
        && a.user_agent == b.user_agent
}

/// `p` is the root (pid, start) or a descendant of it.
fn in_tree(p: &ProcessRecord, pid: u32, start_time: UnixNanos) -> bool {
    (p.pid == pid && p.start_time == start_time)
        || p.ancestors
            .iter()
            .any(|a| a.pid == pid && a.start_time == start_time)
}

fn attribute(alert: &mut AlertRecord, attribution: &ExecAttribution) {
    alert.evidence.push(attribution.evidence());
    alert.exec = Some(Box::new(attribution.clone()));
}

#[cfg(test)]
mod tests;
