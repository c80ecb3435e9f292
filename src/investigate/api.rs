//! The Kubernetes API side of an investigation, from stored audit events, in the shape of
//! Detective's EKS panels: API calls in the scope by verb, resource, subject and source
//! address with success / failed / unauthorized / forbidden counts; calls newly observed
//! against the baseline; subjects whose call volume grew significantly; and, for a workload,
//! who created or changed its pod and the controllers above it, and when.
//!
//! A request is counted once, at its last stage (ResponseComplete, or Panic): an audit ID
//! repeats across stages and only the last carries the final response code. A request still
//! running at the end of the scope (a long exec or watch) is counted when it ends.
//!
//! Pure code over events, fed by `aggregator::investigate::Investigator` for both faces.

use std::collections::VecDeque;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{HashMap, HashSet, HOUR_NS, INCREASE_FACTOR};
use crate::model::workload_of;
use crate::model::{AuditRecord, AuditStage, Event, Outcome, Record, UnixNanos};

/// Distinct groups (calls by verb, resource, subject and address) one answer may hold;
/// beyond it the answer is marked truncated.
pub const MAX_GROUPS: usize = 1_000_000;
/// Changes of one workload an answer lists (the latest).
pub const MAX_CHANGES: usize = 200;
/// A subject's volume "increased significantly" when its hourly rate is at least
/// [`INCREASE_FACTOR`] times the baseline's and at least this many calls above what that rate
/// predicts for the scope (a quiet subject making a few more calls is not news).
pub const MIN_INCREASE_CALLS: f64 = 100.0;
/// Source addresses a newly observed call keeps.
const NEW_CALL_ADDRESSES: usize = 8;

/// Requests by Detective's four outcome classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OutcomeCounts {
    pub success: u64,
    pub failed: u64,
    pub unauthorized: u64,
    pub forbidden: u64,
}

impl OutcomeCounts {
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.success += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Unauthorized => self.unauthorized += 1,
            Outcome::Forbidden => self.forbidden += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.success + self.failed + self.unauthorized + self.forbidden
    }
}

/// The requests of one verb on one resource by one subject from one address, in the scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCall {
    pub cluster: String,
    pub verb: String,
    /// `resource` or `resource/subresource`, or the path of a non-resource URL.
    pub resource: String,
    pub subject: String,
    pub impersonated: Option<String>,
    /// The client's own address (the first of the request's source addresses).
    pub source_ip: Option<IpAddr>,
    pub counts: OutcomeCounts,
    pub first_seen: UnixNanos,
    pub last_seen: UnixNanos,
}

/// A subject calling a verb on a resource that it did not call in the baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewApiCall {
    pub cluster: String,
    pub subject: String,
    pub verb: String,
    pub resource: String,
    pub counts: OutcomeCounts,
    pub first_seen: UnixNanos,
    /// Some of the addresses it came from (at most 8).
    pub source_ips: Vec<IpAddr>,
    /// The user agent of its first request.
    pub user_agent: Option<String>,
}

/// A subject that made significantly more calls per hour in the scope than in its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectIncrease {
    pub cluster: String,
    pub subject: String,
    pub baseline_per_hour: f64,
    pub window_per_hour: f64,
    /// Its requests in the scope.
    pub calls: u64,
}

/// The API answer of a scope against its baseline.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ApiActivity {
    /// The busiest groups first.
    pub calls: Vec<ApiCall>,
    /// Requests in the scope, and groups before the limit.
    pub requests: u64,
    pub total_calls: u64,
    pub new_calls: Vec<NewApiCall>,
    pub increased: Vec<SubjectIncrease>,
    /// Requests in the baseline: 0 means there was nothing to compare with.
    pub baseline_requests: u64,
    /// When the question names pods and their namespace: the requests that created,
    /// changed, deleted or exec'd into those pods or their controllers (Deployment,
    /// ReplicaSet, StatefulSet, DaemonSet, Job), oldest first, from the baseline's start to
    /// the scope's end.
    pub changes: Vec<AuditRecord>,
    pub truncated: bool,
}

/// Whether the event is a request's last stage, the one a request is counted at.
fn last_stage(e: &Event) -> Option<&AuditRecord> {
    match &e.record {
        Record::Audit(a) if matches!(a.stage, AuditStage::ResponseComplete | AuditStage::Panic) => {
            Some(a)
        }
        _ => None,
    }
}

type CallKey = (String, String, String, String);
type SubjectKey = (String, String);

fn call_key(a: &AuditRecord) -> CallKey {
    (
        a.cluster.clone(),
        a.user.username.clone(),
        a.verb.clone(),
        a.resource_path(),
    )
}

fn subject_key(a: &AuditRecord) -> SubjectKey {
    (a.cluster.clone(), a.user.username.clone())
}

// === The baseline ===

/// What "new" and "increased" need from the baseline: the calls each subject made, and
/// how many.
#[derive(Debug, Default)]
pub struct ApiBaseline {
    calls: HashSet<CallKey>,
    subjects: HashMap<SubjectKey, u64>,
    pub requests: u64,
    pub truncated: bool,
}

impl ApiBaseline {
    /// Adds one stored event; `false` once the bound is reached (the scan may stop).
    pub fn add(&mut self, e: &Event) -> bool {
        let Some(a) = last_stage(e) else {
            return true;
        };
        if self.calls.len() >= MAX_GROUPS {
            self.truncated = true;
            return false;
        }
        self.requests += 1;
        self.calls.insert(call_key(a));
        *self.subjects.entry(subject_key(a)).or_default() += 1;
        true
    }
}

// === The scope ===

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    cluster: String,
    verb: String,
    resource: String,
    subject: String,
    impersonated: Option<String>,
    source_ip: Option<IpAddr>,
}

/// The scope's requests, grouped as the answer needs them.
#[derive(Debug, Default)]
pub struct ApiWindow {
    groups: HashMap<GroupKey, ApiCall>,
    calls: HashMap<CallKey, NewApiCall>,
    subjects: HashMap<SubjectKey, u64>,
    requests: u64,
    truncated: bool,
}

impl ApiWindow {
    /// Adds one stored event; `false` once the bound is reached (the scan may stop).
    pub fn add(&mut self, e: &Event) -> bool {
        let Some(a) = last_stage(e) else {
            return true;
        };
        if self.groups.len() >= MAX_GROUPS {
            self.truncated = true;
            return false;
        }
        self.requests += 1;
        let at = a.request_received;
        let outcome = a.outcome();
        let resource = a.resource_path();
        let key = GroupKey {
            cluster: a.cluster.clone(),
            verb: a.verb.clone(),
            resource: resource.clone(),
            subject: a.user.username.clone(),
            impersonated: a.impersonated_user.as_ref().map(|u| u.username.clone()),
            source_ip: a.source_ip(),
        };
        let group = self.groups.entry(key).or_insert_with_key(|k| ApiCall {
            cluster: k.cluster.clone(),
            verb: k.verb.clone(),
            resource: k.resource.clone(),
            subject: k.subject.clone(),
            impersonated: k.impersonated.clone(),
            source_ip: k.source_ip,
            counts: OutcomeCounts::default(),
            first_seen: at,
            last_seen: at,
        });
        group.counts.add(outcome);
        group.first_seen = group.first_seen.min(at);
        group.last_seen = group.last_seen.max(at);
        let call = self
            .calls
            .entry((
                a.cluster.clone(),
                a.user.username.clone(),
                a.verb.clone(),
                resource,
            ))
            .or_insert_with_key(|k| NewApiCall {
                cluster: k.0.clone(),
                subject: k.1.clone(),
                verb: k.2.clone(),
                resource: k.3.clone(),
                counts: OutcomeCounts::default(),
                first_seen: at,
                source_ips: Vec::new(),
                user_agent: a.user_agent.clone(),
            });
        call.counts.add(outcome);
        if at < call.first_seen {
            call.first_seen = at;
            call.user_agent = a.user_agent.clone();
        }
        if let Some(ip) = a.source_ip() {
            if call.source_ips.len() < NEW_CALL_ADDRESSES && !call.source_ips.contains(&ip) {
                call.source_ips.push(ip);
            }
        }
        *self.subjects.entry(subject_key(a)).or_default() += 1;
        true
    }
}

/// The answer: the busiest `limit` groups, the calls the baseline did not have, the
/// subjects that grew. `spans` are the baseline's and the scope's lengths in ns.
pub fn activity(
    baseline: &ApiBaseline,
    window: ApiWindow,
    limit: usize,
    spans: (u64, u64),
    changes: Vec<AuditRecord>,
) -> ApiActivity {
    let total_calls = window.groups.len() as u64;
    let mut calls: Vec<ApiCall> = window.groups.into_values().collect();
    calls.sort_by(|a, b| {
        b.counts
            .total()
            .cmp(&a.counts.total())
            .then(b.last_seen.cmp(&a.last_seen))
            .then_with(|| {
                (&a.subject, &a.verb, &a.resource).cmp(&(&b.subject, &b.verb, &b.resource))
            })
    });
    calls.truncate(limit);
    let mut new_calls: Vec<NewApiCall> = window
        .calls
        .into_iter()
        .filter(|(k, _)| !baseline.calls.contains(k))
        .map(|(_, v)| v)
        .collect();
    new_calls.sort_by(|a, b| {
        b.first_seen.cmp(&a.first_seen).then_with(|| {
            (&a.subject, &a.verb, &a.resource).cmp(&(&b.subject, &b.verb, &b.resource))
        })
    });
    new_calls.truncate(limit);
    let hours = |span: u64| (span as f64 / HOUR_NS).max(1.0);
    let (baseline_hours, window_hours) = (hours(spans.0), hours(spans.1));
    let mut increased: Vec<SubjectIncrease> = window
        .subjects
        .into_iter()
        .filter_map(|(k, calls)| {
            let before = *baseline.subjects.get(&k)? as f64 / baseline_hours;
            let now = calls as f64 / window_hours;
            let significant = now >= before * INCREASE_FACTOR
                && calls as f64 - before * window_hours >= MIN_INCREASE_CALLS;
            significant.then_some(SubjectIncrease {
                cluster: k.0,
                subject: k.1,
                baseline_per_hour: before,
                window_per_hour: now,
                calls,
            })
        })
        .collect();
    increased.sort_by(|a, b| {
        let excess = |i: &SubjectIncrease| i.window_per_hour - i.baseline_per_hour;
        excess(b)
            .total_cmp(&excess(a))
            .then_with(|| a.subject.cmp(&b.subject))
    });
    increased.truncate(limit);
    ApiActivity {
        calls,
        requests: window.requests,
        total_calls,
        new_calls,
        increased,
        baseline_requests: baseline.requests,
        changes,
        truncated: baseline.truncated || window.truncated,
    }
}

// === Who changed a workload ===

const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const CONTROLLERS: &[(&str, &str)] = &[
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("batch", "jobs"),
];
/// Pod subresources whose writes are a person's or controller's act on the pod; `status`
/// and `binding` are the kubelet's and the scheduler's bookkeeping.
const POD_SUBRESOURCES: &[&str] = &[
    "exec",
    "attach",
    "portforward",
    "ephemeralcontainers",
    "eviction",
];

/// The requests that created or changed some pods or their controllers, whose names follow
/// from the pods' (`web-7c9f8d6b5-x2k4q`: ReplicaSet `web-7c9f8d6b5`, Deployment `web`).
#[derive(Debug)]
pub struct Changes {
    pods: Vec<String>,
    controllers: Vec<String>,
    kept: VecDeque<AuditRecord>,
}

impl Changes {
    pub fn new(pods: &[String]) -> Changes {
        let mut controllers: Vec<String> = Vec::new();
        for pod in pods {
            let workload = workload_of(pod);
            if workload != pod {
                controllers.push(workload.to_owned());
                if let Some((replicaset, _)) = pod.rsplit_once('-') {
                    controllers.push(replicaset.to_owned());
                }
            }
        }
        controllers.sort();
        controllers.dedup();
        Changes {
            pods: pods.to_vec(),
            controllers,
            kept: VecDeque::new(),
        }
    }

    /// Whether `a` is such a request (at its last stage).
    pub fn matches(&self, a: &AuditRecord) -> bool {
        let Some(object) = &a.object else {
            return false;
        };
        let Some(name) = object.name.as_deref() else {
            return false;
        };
        if !matches!(a.stage, AuditStage::ResponseComplete | AuditStage::Panic)
            || !WRITE_VERBS.contains(&a.verb.as_str())
        {
            return false;
        }
        let group = object.api_group.as_deref().unwrap_or("");
        if group.is_empty() && object.resource == "pods" {
            return self.pods.iter().any(|p| p == name)
                && object
                    .subresource
                    .as_deref()
                    .is_none_or(|s| POD_SUBRESOURCES.contains(&s));
        }
        object.subresource.is_none()
            && CONTROLLERS.contains(&(group, object.resource.as_str()))
            && self.controllers.iter().any(|c| c == name)
    }

    /// Adds one stored event; always `true` (the scan goes on: the latest are kept).
    pub fn add(&mut self, e: &Event) -> bool {
        if let Record::Audit(a) = &e.record {
            if self.matches(a) {
                if self.kept.len() == MAX_CHANGES {
                    self.kept.pop_front();
                }
                self.kept.push_back((**a).clone());
            }
        }
        true
    }

    /// Oldest first.
    pub fn finish(self) -> Vec<AuditRecord> {
        let mut kept: Vec<AuditRecord> = self.kept.into();
        kept.sort_by_key(|a| a.request_received);
        kept
    }
}

#[cfg(test)]
mod tests;
