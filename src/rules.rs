//! Detection rules: YAML rule files compiled into typed condition trees
//! ([`lang`]), evaluated per record, alerts grouped per rule + workload.

pub mod cli;
pub mod ka;
pub mod lang;
pub mod stateful;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::model::{
    display_bytes, AlertRecord, CollectorIdentity, Event, ProcessRecord, Record, RecordKind,
    Severity, UnixNanos,
};
use lang::{Condition, Ctx, Defs};
use stateful::HashMap as FastMap;

/// The managed rule set, embedded so a container image carries it.
pub const MANAGED: &[(&str, &str)] = &[
    (
        "managed/shell.yaml",
        include_str!("../rules/managed/shell.yaml"),
    ),
    (
        "managed/network.yaml",
        include_str!("../rules/managed/network.yaml"),
    ),
    (
        "managed/exec.yaml",
        include_str!("../rules/managed/exec.yaml"),
    ),
    (
        "managed/behavior.yaml",
        include_str!("../rules/managed/behavior.yaml"),
    ),
    (
        "managed/k8s_audit.yaml",
        include_str!("../rules/managed/k8s_audit.yaml"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{file}: {msg}")]
    File { file: String, msg: String },
    #[error("{file}: rule {rule}: condition {pos}")]
    Condition {
        file: String,
        rule: String,
        pos: lang::ParseError,
    },
    #[error("{file}: rule {rule}: {msg}")]
    Rule {
        file: String,
        rule: String,
        msg: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    lists: HashMap<String, Vec<serde_yaml_ng::Value>>,
    #[serde(default)]
    macros: HashMap<String, String>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
    /// Tuning of rules defined elsewhere (the managed set) without copying them.
    #[serde(default)]
    overrides: Vec<OverrideSpec>,
}

/// `overrides:` entry: appends exceptions to a rule, or changes whether it runs and how loud.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideSpec {
    rule: String,
    #[serde(default)]
    exceptions: Vec<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    severity: Option<SeveritySpec>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub severity: SeveritySpec,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub kinds: Vec<String>,
    pub condition: String,
    #[serde(default)]
    pub exceptions: Vec<String>,
    pub output: String,
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Stateful kinds (at most one): the condition selects, the state decides.
    #[serde(default)]
    pub threshold: Option<stateful::ThresholdSpec>,
    #[serde(default)]
    pub new_value: Option<stateful::NewValueSpec>,
    #[serde(default)]
    pub rate: Option<stateful::RateSpec>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeveritySpec {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl From<SeveritySpec> for Severity {
    fn from(s: SeveritySpec) -> Self {
        match s {
            SeveritySpec::Info => Severity::Info,
            SeveritySpec::Low => Severity::Low,
            SeveritySpec::Medium => Severity::Medium,
            SeveritySpec::High => Severity::High,
            SeveritySpec::Critical => Severity::Critical,
        }
    }
}

/// A compiled rule (its conditions, one per record kind, are in [`RuleSet`]'s candidates).
#[derive(Debug, Clone)]
pub struct Rule {
    pub spec: RuleSpec,
    pub file: String,
    output: Vec<Piece>,
    pub stateful: Option<stateful::Kind>,
    /// Compiled at load: the stateful key, value and sum fields, and the group key.
    state_by: Vec<KeyPart>,
    state_value: Option<KeyPart>,
    state_sum: Option<lang::Field>,
    group_by: Vec<KeyPart>,
}

/// A field of a state or group key, resolved at load.
#[derive(Debug, Clone, Copy)]
enum KeyPart {
    Namespace,
    Pod,
    Workload,
    Field(lang::Field),
}

impl KeyPart {
    fn compile(name: &str) -> Option<KeyPart> {
        match name {
            "k8s.ns.name" => Some(KeyPart::Namespace),
            "k8s.pod.name" => Some(KeyPart::Pod),
            "k8s.workload" => Some(KeyPart::Workload),
            _ => lang::field_for_name(name).map(KeyPart::Field),
        }
    }

    fn push(self, buf: &mut String, event: &Event, ctx: &Ctx<'_>, rendered: &mut Rendered) {
        match self {
            KeyPart::Namespace => buf.push_str(&event.source.pod_namespace),
            KeyPart::Pod => buf.push_str(&event.source.pod_name),
            KeyPart::Workload => buf.push_str(workload_of(&event.source.pod_name)),
            KeyPart::Field(f) => buf.push_str(rendered.get(f, ctx)),
        }
    }
}

/// Field values rendered as key text for the current record: several rules key on the
/// same fields (the remote address above all), each rendered once.
#[derive(Default)]
struct Rendered {
    text: String,
    fields: Vec<(lang::Field, std::ops::Range<usize>)>,
}

impl Rendered {
    fn clear(&mut self) {
        self.text.clear();
        self.fields.clear();
    }

    fn get(&mut self, f: lang::Field, ctx: &Ctx<'_>) -> &str {
        let range = match self.fields.iter().find(|(g, _)| *g == f) {
            Some((_, range)) => range.clone(),
            None => {
                let start = self.text.len();
                push_val(&mut self.text, lang::get(f, ctx));
                self.fields.push((f, start..self.text.len()));
                start..self.text.len()
            }
        };
        &self.text[range]
    }
}

/// Key fields that come from the record's source rather than the record.
const SOURCE_FIELDS: [&str; 3] = ["k8s.ns.name", "k8s.pod.name", "k8s.workload"];

fn known_field(name: &str) -> bool {
    SOURCE_FIELDS.contains(&name) || lang::field_for_name(name).is_some()
}

/// A pod's workload: its name without the pod and ReplicaSet hashes a Deployment adds
/// (`web-7c9f8d6b5-x2k4q` → `web`), so learning and windows span a workload's replicas.
/// Kubernetes draws both from a vowel-free alphabet; a StatefulSet's `db-0` stays itself.
pub fn workload_of(pod_name: &str) -> &str {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let hashy = |s: &str, lens: std::ops::RangeInclusive<usize>| {
        lens.contains(&s.len()) && s.bytes().all(|b| ALPHABET.contains(&b))
    };
    let Some((rest, pod_hash)) = pod_name.rsplit_once('-') else {
        return pod_name;
    };
    if rest.is_empty() || !hashy(pod_hash, 5..=5) {
        return pod_name;
    }
    match rest.rsplit_once('-') {
        Some((name, rs_hash)) if !name.is_empty() && hashy(rs_hash, 6..=10) => name,
        _ => rest, // a DaemonSet or Job pod: name-xxxxx
    }
}

#[derive(Debug, Clone)]
enum Piece {
    Lit(String),
    Field(String),
}

fn parse_template(t: &str) -> Result<Vec<Piece>, String> {
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

/// A loaded, compiled rule set.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// Per record kind (flow, process, listener): the enabled rules' conditions, laid out
    /// together so the per-record loop reads them in order.
    by_kind: [Vec<Candidate>; 4],
}

/// A rule's condition and exceptions for one record kind.
#[derive(Debug, Clone)]
struct Candidate {
    rule: usize,
    condition: Condition,
    exceptions: Vec<Condition>,
}

impl Candidate {
    fn matches(&self, facts: lang::Facts, ctx: &Ctx<'_>) -> bool {
        self.condition.holds(facts, ctx) && !self.exceptions.iter().any(|e| e.holds(facts, ctx))
    }
}

fn kind_slot(kind: RecordKind) -> Option<usize> {
    match kind {
        RecordKind::Flow => Some(0),
        RecordKind::Process => Some(1),
        RecordKind::Listener => Some(2),
        RecordKind::Audit => Some(3),
        _ => None,
    }
}

impl RuleSet {
    /// Compiles rule files given as (name, text); every rule of every file shares
    /// the lists and macros of all files.
    pub fn compile(files: &[(String, String)]) -> Result<RuleSet, RuleError> {
        let mut defs = Defs::default();
        let mut specs = Vec::new();
        let mut overrides = Vec::new();
        for (file, text) in files {
            let spec: FileSpec = serde_yaml_ng::from_str(text).map_err(|e| RuleError::File {
                file: file.clone(),
                msg: match e.location() {
                    Some(l) => format!("{}:{}: {e}", l.line(), l.column()),
                    None => e.to_string(),
                },
            })?;
            for (k, v) in spec.lists {
                defs.lists.entry(k).or_default().extend(v);
            }
            defs.macros.extend(spec.macros);
            specs.extend(spec.rules.into_iter().map(|r| (file.clone(), r)));
            overrides.extend(spec.overrides.into_iter().map(|o| (file.clone(), o)));
        }
        for (file, o) in overrides {
            let Some((_, target)) = specs.iter_mut().find(|(_, r)| r.id == o.rule) else {
                return Err(RuleError::Rule {
                    file,
                    rule: o.rule,
                    msg: "override of a rule that is not loaded".into(),
                });
            };
            target.exceptions.extend(o.exceptions);
            if let Some(enabled) = o.enabled {
                target.enabled = enabled;
            }
            if let Some(severity) = o.severity {
                target.severity = severity;
            }
        }
        let mut rules: Vec<Rule> = Vec::new();
        let mut by_kind: [Vec<Candidate>; 4] = Default::default();
        for (file, spec) in specs {
            let rerr = |msg: String| RuleError::Rule {
                file: file.clone(),
                rule: spec.id.clone(),
                msg,
            };
            if rules.iter().any(|r| r.spec.id == spec.id) {
                return Err(rerr("duplicate rule id".into()));
            }
            for k in &spec.kinds {
                let kind: RecordKind = k.parse().map_err(rerr)?;
                if !matches!(
                    kind,
                    RecordKind::Flow
                        | RecordKind::Process
                        | RecordKind::Listener
                        | RecordKind::Audit
                ) {
                    return Err(rerr(format!(
                        "kind {k} cannot be matched (flow, process, listener, audit)"
                    )));
                }
                let cerr = |pos| RuleError::Condition {
                    file: file.clone(),
                    rule: spec.id.clone(),
                    pos,
                };
                let cond = lang::compile(&spec.condition, kind, &defs).map_err(cerr)?;
                let exc = spec
                    .exceptions
                    .iter()
                    .map(|e| lang::compile(e, kind, &defs))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|pos| RuleError::Rule {
                        file: file.clone(),
                        rule: spec.id.clone(),
                        msg: format!("exception {pos}"),
                    })?;
                if let (true, Some(slot)) = (spec.enabled, kind_slot(kind)) {
                    by_kind[slot].push(Candidate {
                        rule: rules.len(),
                        condition: cond,
                        exceptions: exc,
                    });
                }
            }
            let output = parse_template(&spec.output).map_err(rerr)?;
            let kinds: Vec<stateful::Kind> = [
                spec.threshold.clone().map(stateful::Kind::Threshold),
                spec.new_value.clone().map(stateful::Kind::NewValue),
                spec.rate.clone().map(stateful::Kind::Rate),
            ]
            .into_iter()
            .flatten()
            .collect();
            if kinds.len() > 1 {
                return Err(rerr(
                    "at most one of threshold, new_value, rate per rule".into(),
                ));
            }
            let stateful = kinds.into_iter().next();
            if let Some(k) = &stateful {
                if let Some(bad) = k.fields().into_iter().find(|f| !known_field(f)) {
                    return Err(rerr(format!("unknown field `{bad}` in its state keys")));
                }
            }
            if let Some(bad) = spec.group_by.iter().find(|f| !known_field(f)) {
                return Err(rerr(format!("unknown field `{bad}` in group_by")));
            }
            let parts = |names: &[String]| -> Vec<KeyPart> {
                names.iter().filter_map(|n| KeyPart::compile(n)).collect()
            };
            let (state_by, state_value, state_sum) = match &stateful {
                None => (Vec::new(), None, None),
                Some(stateful::Kind::Threshold(t)) => (
                    parts(&t.by),
                    None,
                    t.sum.as_deref().and_then(lang::field_for_name),
                ),
                Some(stateful::Kind::NewValue(n)) => {
                    (parts(&n.by), KeyPart::compile(&n.value), None)
                }
                Some(stateful::Kind::Rate(r)) => {
                    (parts(&r.by), KeyPart::compile(&r.distinct), None)
                }
            };
            let group_by = parts(&spec.group_by);
            rules.push(Rule {
                spec,
                file,
                output,
                stateful,
                state_by,
                state_value,
                state_sum,
                group_by,
            });
        }
        Ok(RuleSet { rules, by_kind })
    }

    /// The managed set alone.
    pub fn managed() -> Result<RuleSet, RuleError> {
        Self::compile(&managed_files())
    }

    /// Managed rules plus every `*.yaml`/`*.yml` in `dir` (sorted by name).
    pub fn load(dir: Option<&Path>, with_managed: bool) -> Result<RuleSet, RuleError> {
        let mut files = if with_managed {
            managed_files()
        } else {
            Vec::new()
        };
        if let Some(dir) = dir {
            files.extend(read_dir(dir)?);
        }
        Self::compile(&files)
    }
}

fn managed_files() -> Vec<(String, String)> {
    MANAGED
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, RuleError> {
    let ferr = |p: &Path, e: std::io::Error| RuleError::File {
        file: p.display().to_string(),
        msg: e.to_string(),
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ferr(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            std::fs::read_to_string(&p)
                .map(|t| (p.display().to_string(), t))
                .map_err(|e| ferr(&p, e))
        })
        .collect()
}

/// One rule firing on one record, before grouping.
#[derive(Debug, Clone)]
pub struct Hit {
    pub rule: usize,
    pub output: String,
}

#[derive(Default)]
struct Scratch {
    hits: Vec<usize>,
    key: String,
    value: String,
    rendered: Rendered,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_seen: UnixNanos,
    last_emit: UnixNanos,
    count: u64,
    emitted_count: u64,
}

/// The evaluator: a rule set, a process cache per source (pids repeat across pods) so flow
/// and listener rules can see their owning process, stateful rule state, and alert groups.
pub struct Engine {
    set: RuleSet,
    /// Per source (collector id): pid → process.
    procs: SourceProcs,
    /// The source of the previous record (absent while a record is being evaluated).
    last_source: Option<LastSource>,
    /// Process records cached across all sources.
    cached: usize,
    /// Buffers reused for every record (keys and values are built per record).
    scratch: Scratch,
    groups: FastMap<String, Group>,
    state: stateful::State,
    /// A group re-emits at most once per this many nanoseconds (with its count).
    pub reemit_ns: u64,
    seq: u64,
}

const PROC_CACHE_MAX: usize = 262_144;
const GROUPS_MAX: usize = 100_000;

impl Engine {
    pub fn new(set: RuleSet) -> Self {
        Engine {
            set,
            procs: SourceProcs::default(),
            last_source: None,
            cached: 0,
            scratch: Scratch::default(),
            groups: FastMap::default(),
            state: stateful::State::default(),
            reemit_ns: 60_000_000_000,
            seq: 0,
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.set
    }

    /// Loads a new set; on error the current set stays in force.
    pub fn reload(&mut self, dir: Option<&Path>, with_managed: bool) -> Result<(), RuleError> {
        self.set = RuleSet::load(dir, with_managed)?;
        let ids: std::collections::HashSet<&str> =
            self.set.rules.iter().map(|r| r.spec.id.as_str()).collect();
        self.state.retain_rules(&ids);
        Ok(())
    }

    /// Restores stateful rule state saved by [`Engine::save_state`].
    pub fn load_state(&mut self, path: &Path) -> Result<(), stateful::StateError> {
        self.state = stateful::State::load(path)?;
        Ok(())
    }

    pub fn save_state(&self, path: &Path) -> Result<(), stateful::StateError> {
        self.state.save(path)
    }

    /// Keys of stateful rules not tracked because a rule hit its bound.
    pub fn state_keys_refused(&self) -> u64 {
        self.state.keys_refused
    }

    fn remember(&mut self, slot: usize, rec: &Record) {
        let Record::Process(p) = rec else { return };
        let per_source = &mut self.procs.by_slot[slot];
        if p.phase == crate::model::ProcessPhase::Exit {
            if per_source.remove(&p.pid).is_some() {
                self.cached -= 1;
            }
            return;
        }
        if self.cached >= PROC_CACHE_MAX {
            tracing::warn!(size = self.cached, "rule process cache full; starting over");
            self.procs.by_slot.iter_mut().for_each(FastMap::clear);
            self.cached = 0;
        }
        if self.procs.by_slot[slot].insert(p.pid, p.clone()).is_none() {
            self.cached += 1;
        }
    }

    /// The record's source: its slot and state-key prefix, computed again only when the
    /// identity differs from the previous record's. Lent out for the record; see
    /// [`Engine::evaluate`].
    /// An audit record's state is its cluster's (`k8s-audit/<cluster>`), not its object's
    /// namespace: a subject's calls across namespaces count together.
    fn source(&mut self, identity: &Arc<CollectorIdentity>, audit: bool) -> LastSource {
        match self.last_source.take() {
            Some(last) if Arc::ptr_eq(&last.identity, identity) && last.audit == audit => last,
            reused => {
                let mut workload = reused.map(|l| l.workload).unwrap_or_default();
                workload.clear();
                if audit {
                    workload.push_str(&identity.collector_id);
                } else {
                    workload.push_str(&identity.pod_namespace);
                    workload.push('/');
                    workload.push_str(workload_of(&identity.pod_name));
                }
                LastSource {
                    identity: Arc::clone(identity),
                    slot: self.procs.slot(&identity.collector_id),
                    workload,
                    audit,
                }
            }
        }
    }

    fn ctx<'a>(&'a self, source: &str, rec: &'a Record) -> Option<(RecordKind, Ctx<'a>)> {
        make_ctx(rec, self.owner_of(source, rec))
    }

    fn owner_of(&self, source: &str, rec: &Record) -> Option<&ProcessRecord> {
        match rec {
            Record::Flow(f) => self.owner(source, f.pid, f.process_start_time),
            Record::Listener(l) => self.owner(source, l.pid, l.process_start_time),
            _ => None,
        }
    }

    /// Which rules' conditions hold for `rec` (stateful rules included, before their state
    /// is consulted), with rendered output.
    pub fn matches(&self, rec: &Record) -> Vec<Hit> {
        let Some((_, ctx)) = self.ctx("", rec) else {
            return Vec::new();
        };
        let mut hits = Vec::new();
        self.matching_rules(&ctx, rec, &mut hits);
        hits.into_iter()
            .map(|rule| Hit {
                rule,
                output: render(&self.set.rules[rule].output, &ctx),
            })
            .collect()
    }

    /// Indices of the rules whose condition holds and no exception does.
    fn matching_rules(&self, ctx: &Ctx<'_>, rec: &Record, out: &mut Vec<usize>) {
        let Some(slot) = kind_slot(rec.kind()) else {
            return;
        };
        let facts = lang::Facts::of(ctx);
        out.extend(
            self.set.by_kind[slot]
                .iter()
                .filter(|c| c.matches(facts, ctx))
                .map(|c| c.rule),
        );
    }

    /// Counts rules whose conditions hold, without rendering output or state.
    pub fn count_matches(&self, rec: &Record) -> usize {
        let Some((_, ctx)) = self.ctx("", rec) else {
            return 0;
        };
        let mut hits = Vec::new();
        self.matching_rules(&ctx, rec, &mut hits);
        hits.len()
    }

    fn owner(
        &self,
        source: &str,
        pid: Option<u32>,
        start: Option<UnixNanos>,
    ) -> Option<&ProcessRecord> {
        let slot = *self.procs.slots.get(source)?;
        lookup(&self.procs.by_slot[slot], pid, start)
    }

    /// Evaluates one ingested event: alerts to emit now (first of a group, then
    /// at most once per `reemit_ns` per group with the updated count).
    pub fn evaluate(&mut self, event: &Event, now: UnixNanos) -> Vec<AlertRecord> {
        let source = self.source(&event.source, matches!(event.record, Record::Audit(_)));
        let slot = source.slot;
        self.remember(slot, &event.record);
        // The cache is lent out for this record so the state and groups can change
        // while the owner process is borrowed from it.
        let procs = std::mem::take(&mut self.procs.by_slot);
        let owner = match &event.record {
            Record::Flow(f) => lookup(&procs[slot], f.pid, f.process_start_time),
            Record::Listener(l) => lookup(&procs[slot], l.pid, l.process_start_time),
            _ => None,
        };
        let out = match make_ctx(&event.record, owner) {
            Some((_, ctx)) => self.evaluate_in(event, &ctx, &source.workload, &procs, now),
            None => Vec::new(),
        };
        self.procs.by_slot = procs;
        self.last_source = Some(source);
        out
    }

    fn evaluate_in(
        &mut self,
        event: &Event,
        ctx: &Ctx<'_>,
        workload: &str,
        procs: &[FastMap<u32, ProcessRecord>],
        now: UnixNanos,
    ) -> Vec<AlertRecord> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.hits.clear();
        scratch.rendered.clear();
        self.matching_rules(ctx, &event.record, &mut scratch.hits);
        let out = self.apply_hits(event, ctx, workload, procs, now, &mut scratch);
        self.scratch = scratch;
        out
    }

    fn apply_hits(
        &mut self,
        event: &Event,
        ctx: &Ctx<'_>,
        workload: &str,
        procs: &[FastMap<u32, ProcessRecord>],
        now: UnixNanos,
        scratch: &mut Scratch,
    ) -> Vec<AlertRecord> {
        let mut out = Vec::new();
        let key = &mut scratch.key;
        for &index in &scratch.hits {
            let rule = &self.set.rules[index];
            let mut state_evidence = None;
            let mut culprit = None;
            if let Some(kind) = &rule.stateful {
                key.clear();
                key.push_str(workload);
                for part in &rule.state_by {
                    key.push('|');
                    part.push(key, event, ctx, &mut scratch.rendered);
                }
                let value = rule.state_value.map(|part| {
                    scratch.value.clear();
                    part.push(&mut scratch.value, event, ctx, &mut scratch.rendered);
                    scratch.value.as_str()
                });
                let amount = rule.state_sum.and_then(|f| match lang::get(f, ctx) {
                    lang::Val::Int(i) => u64::try_from(i).ok(),
                    _ => None,
                });
                let sender = matches!(kind, stateful::Kind::Rate(_)).then(|| sender_of(event, ctx));
                let verdict = self.state.observe(
                    &rule.spec.id,
                    kind,
                    key,
                    value,
                    amount,
                    Some((event.source.collector_id.as_str(), &event.record)),
                    sender,
                    now,
                );
                if !verdict.fire {
                    continue;
                }
                state_evidence = Some(verdict.evidence);
                culprit = verdict.culprit.zip(sender);
            }
            key.clear();
            key.push_str(&rule.spec.id);
            key.push('|');
            key.push_str(&event.source.pod_namespace);
            key.push('|');
            key.push_str(&event.source.pod_name);
            for part in &rule.group_by {
                key.push('|');
                part.push(key, event, ctx, &mut scratch.rendered);
            }
            if self.groups.len() >= GROUPS_MAX && !self.groups.contains_key(key.as_str()) {
                // Groups not emitted lately go first; a pruned group just alerts afresh.
                let horizon = now.saturating_sub(self.reemit_ns);
                self.groups.retain(|_, g| g.last_emit >= horizon);
            }
            let g = self.groups.entry_ref(key.as_str()).or_insert(Group {
                first_seen: now,
                last_emit: 0,
                count: 0,
                emitted_count: 0,
            });
            g.count += 1;
            let emit = g.emitted_count == 0 || now.saturating_sub(g.last_emit) >= self.reemit_ns;
            if !emit {
                continue;
            }
            g.last_emit = now;
            g.emitted_count = g.count;
            let g = *g;
            self.seq += 1;
            let mut alert = match &culprit {
                // Another process sent most of the values: the alert names it (or no
                // process when its owner is unknown), with the record that crossed the limit.
                Some((c, _)) => {
                    let process =
                        self.procs.slots.get(c.source.as_str()).and_then(|slot| {
                            lookup(&procs[*slot], Some(c.pid), Some(c.start_time))
                        });
                    let blamed = Ctx {
                        process,
                        ancestor: None,
                        ..*ctx
                    };
                    alert(rule, event, &blamed, g, now, self.seq, state_evidence)
                }
                None => alert(rule, event, ctx, g, now, self.seq, state_evidence),
            };
            if let Some((c, crossed)) = &culprit {
                let who = |pid: u32| match pid {
                    0 => "a process not attributed".to_owned(),
                    pid => format!("pid {pid}"),
                };
                alert.evidence.push(format!(
                    "the record that crossed the threshold came from {}; the alert names the process behind most of the values: {}",
                    who(crossed.pid),
                    who(c.pid)
                ));
            }
            out.push(alert);
        }
        out
    }
}

/// Who sent a record, for rate rules: its collector and owner process (pid 0 when the
/// owner is unknown, so unattributed values are not credited to a known process).
fn sender_of<'a>(event: &'a Event, ctx: &Ctx<'_>) -> stateful::Sender<'a> {
    let (pid, start_time) = match (&event.record, ctx.process) {
        (_, Some(p)) => (p.pid, p.start_time),
        (Record::Flow(f), None) => (f.pid.unwrap_or(0), f.process_start_time.unwrap_or(0)),
        (Record::Listener(l), None) => (l.pid.unwrap_or(0), l.process_start_time.unwrap_or(0)),
        _ => (0, 0),
    };
    stateful::Sender {
        source: &event.source.collector_id,
        pid,
        start_time,
    }
}

/// Process records by source: a slot per collector id, so a record whose source is the
/// previous record's reaches its processes without hashing the id.
#[derive(Default)]
struct SourceProcs {
    slots: FastMap<String, usize>,
    by_slot: Vec<FastMap<u32, ProcessRecord>>,
}

impl SourceProcs {
    fn slot(&mut self, source: &str) -> usize {
        let next = self.by_slot.len();
        let slot = *self.slots.entry_ref(source).or_insert(next);
        if slot == next {
            self.by_slot.push(FastMap::default());
        }
        slot
    }
}

/// A record's source as the engine keeps it between records: a batch's records share one
/// identity, so most find their slot and `namespace/workload` key prefix here.
struct LastSource {
    identity: Arc<CollectorIdentity>,
    slot: usize,
    workload: String,
    audit: bool,
}

fn lookup(
    procs: &FastMap<u32, ProcessRecord>,
    pid: Option<u32>,
    start: Option<UnixNanos>,
) -> Option<&ProcessRecord> {
    let p = procs.get(&pid?)?;
    match start {
        Some(s) if s != p.start_time => None,
        _ => Some(p),
    }
}

/// The alert for a rule that fired: the process with its lineage, the flow, the evidence.
fn alert(
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

/// An audit event in one line: who did what to which object, from where, and the answer.
/// Every part a client chose is escaped.
fn audit_evidence(a: &crate::model::AuditRecord) -> String {
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

fn make_ctx<'a>(
    rec: &'a Record,
    owner: Option<&'a ProcessRecord>,
) -> Option<(RecordKind, Ctx<'a>)> {
    let ctx = |process, flow, listener| Ctx {
        process,
        flow,
        listener,
        ancestor: None,
        audit: None,
    };
    Some(match rec {
        Record::Process(p) => (RecordKind::Process, ctx(Some(p), None, None)),
        Record::Flow(f) => (RecordKind::Flow, ctx(owner, Some(f), None)),
        Record::Listener(l) => (RecordKind::Listener, ctx(owner, None, Some(l))),
        Record::Audit(a) => (
            RecordKind::Audit,
            Ctx {
                audit: Some(a),
                ..ctx(None, None, None)
            },
        ),
        _ => return None,
    })
}

fn render(pieces: &[Piece], ctx: &Ctx<'_>) -> String {
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
fn push_val(s: &mut String, v: lang::Val<'_>) {
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
        Val::Ip(ip) => crate::wire::push_ip(s, ip),
    }
}

/// Falco-compatible JSON payload (for falcosidekick).
pub fn falco_payload(a: &AlertRecord) -> serde_json::Value {
    let priority = match a.severity {
        Severity::Info => "Informational",
        Severity::Low => "Notice",
        Severity::Medium => "Warning",
        Severity::High => "Error",
        Severity::Critical => "Critical",
    };
    let secs = a.time / 1_000_000_000;
    let time = chrono_like_rfc3339(secs, a.time % 1_000_000_000);
    serde_json::json!({
        "output": a.output,
        "priority": priority,
        "rule": a.rule_name,
        "time": time,
        "source": "procflow",
        "tags": a.tags,
        "hostname": a.node_name,
        "output_fields": {
            "procflow.rule_id": a.rule_id,
            "procflow.count": a.count,
            "k8s.pod.name": a.pod_name,
            "k8s.ns.name": a.pod_namespace,
            "container.id": a.container_id,
            "proc.pid": a.process.as_ref().map(|p| p.pid),
            "proc.name": a.process.as_ref().map(|p| display_bytes(&p.comm)),
            "proc.exepath": a.process.as_ref().and_then(|p| p.exe.as_deref().map(display_bytes)),
        },
    })
}

pub(crate) fn chrono_like_rfc3339(secs: u64, nanos: u64) -> String {
    // civil-from-days (Howard Hinnant), UTC
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A mix for throughput measurement, one entry per pod (100): a process (3-deep
/// lineage), seven flows owned by it and one listener (11% / 78% / 11%).
pub fn bench_records() -> Vec<Vec<Record>> {
    use crate::model::*;
    use std::net::{IpAddr, Ipv4Addr};
    let comms: [&[u8]; 5] = [b"nginx", b"python3", b"java", b"node", b"envoy"];
    let mut out = Vec::new();
    for i in 0..100u32 {
        let comm = comms[i as usize % comms.len()];
        let exe = format!("/usr/bin/{}", String::from_utf8_lossy(comm));
        let anc = |pid: u32, c: &[u8]| Ancestor {
            pid,
            start_time: 1,
            comm: c.to_vec(),
            exe: None,
            argv: vec![],
            exited: false,
            uid: Some(0),
        };
        let p = ProcessRecord {
            pid: 1000 + i,
            start_time: 5,
            ppid: 10,
            parent_start_time: Some(1),
            phase: ProcessPhase::Start,
            comm: comm.to_vec(),
            exe: Some(exe.into_bytes()),
            argv: vec![comm.to_vec(), b"--serve".to_vec()],
            cwd: Some(b"/app".to_vec()),
            uid: 1000,
            gid: 1000,
            euid: 1000,
            egid: 1000,
            tty: None,
            session_id: 1,
            pgid: 1,
            container_id: Some("abc".into()),
            pod_uid: None,
            exit_time: None,
            ancestors: vec![anc(10, b"supervisor"), anc(5, b"tini"), anc(1, b"pause")],
            exe_unavailable: Unavailable::Unspecified,
            cwd_unavailable: Unavailable::Unspecified,
            exe_deleted: false,
            seen_at_exit_only: false,
            preexisting: false,
            stdio_is_socket: Some(false),
            stdio_socket_inodes: vec![],
        };
        let mut pod = vec![Record::Process(p)];
        for j in 0..7u32 {
            pod.push(Record::Flow(FlowRecord {
                cookie: u64::from(i * 10 + j),
                protocol: Protocol::Tcp,
                family: Family::Ipv4,
                local_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
                local_port: 40000 + j as u16,
                remote_addr: Some(IpAddr::V4(Ipv4Addr::new(52, 1, (i % 250) as u8, j as u8))),
                remote_port: Some(443),
                direction: Direction::Outbound,
                scope: Scope::NorthSouth,
                phase: FlowPhase::Update,
                state: "ESTABLISHED".into(),
                preexisting: false,
                bytes_sent: Some(1000),
                bytes_received: Some(5000),
                segs_out: None,
                segs_in: None,
                retransmits: None,
                total_retrans: None,
                rtt_us: None,
                first_seen: 1,
                last_seen: 2,
                ended_at: None,
                uid: Some(1000),
                inode: Some(1),
                pid: Some(1000 + i),
                process_start_time: Some(5),
                attribution: Attribution::Fd,
                end_reason: EndReason::Unspecified,
                reset: false,
                cgroup_id: None,
            }));
        }
        for _ in 0..1 {
            pod.push(Record::Listener(ListenerRecord {
                cookie: u64::from(i),
                protocol: Protocol::Tcp,
                family: Family::Ipv4,
                local_addr: IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)),
                local_port: 8080,
                phase: FlowPhase::Start,
                preexisting: false,
                first_seen: 1,
                ended_at: None,
                uid: Some(1000),
                inode: Some(2),
                pid: Some(1000 + i),
                process_start_time: Some(5),
                attribution: Attribution::Fd,
                backlog: Some(128),
            }));
        }
        out.push(pod);
    }
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod audit_tests;

#[cfg(test)]
mod key_tests {
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
            super::push_val(&mut s, super::lang::Val::Ip(addr));
            assert_eq!(s, addr.to_string());
        }
    }
}
