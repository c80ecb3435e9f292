//! The evaluator: each record against the candidates of its kind, with its owner process
//! from a per-source cache, stateful rules' state, and alert groups.

use std::path::Path;
use std::sync::Arc;

use super::alert::{alert, push_val, render};
use super::alert_key::Incidents;
use super::lang::{self, Ctx};
use super::load::{kind_slot, RuleSet};
use super::pipes::Tracked;
use super::shared::{Claim, SharedState};
use super::source::{Slot, SourceProcs, SourceView};
use super::stateful::{self, HashMap as FastMap};
use super::RuleError;
use crate::model::{
    workload_of, AlertRecord, CollectorIdentity, Event, ProcessRecord, Record, RecordKind,
    UnixNanos,
};

/// A field of a state or group key, resolved at load.
#[derive(Debug, Clone, Copy)]
pub(super) enum KeyPart {
    Namespace,
    Pod,
    Workload,
    Field(lang::Field),
}

impl KeyPart {
    pub(super) fn compile(name: &str) -> Option<KeyPart> {
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
pub(super) struct Rendered {
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

/// One rule firing on one record, before grouping.
#[derive(Debug, Clone)]
pub struct Hit {
    pub rule: usize,
    pub output: String,
}

#[derive(Default)]
pub(super) struct Scratch {
    pub(super) hits: Vec<usize>,
    pub(super) key: String,
    pub(super) value: String,
    pub(super) rendered: Rendered,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Group {
    pub(super) first_seen: UnixNanos,
    pub(super) last_emit: UnixNanos,
    pub(super) count: u64,
    pub(super) emitted_count: u64,
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
    /// The incident part of group keys (and of unattributed records' state keys).
    incidents: Incidents,
    /// Each rule's id as `incidents` numbers it, by rule index (made at each load).
    rule_names: Vec<u32>,
    state: stateful::State,
    /// A group re-emits at most once per this many nanoseconds (with its count).
    pub reemit_ns: u64,
    seq: u64,
    /// Groups and learned values shared with other replicas, when the store shares them.
    shared: Option<Box<dyn SharedState>>,
}

pub(super) const PROC_CACHE_MAX: usize = 262_144;
pub(super) const GROUPS_MAX: usize = 100_000;

impl Engine {
    pub fn new(set: RuleSet) -> Self {
        let mut incidents = Incidents::default();
        let rule_names = set
            .rules
            .iter()
            .map(|r| incidents.name(&r.spec.id))
            .collect();
        let mut procs = SourceProcs::default();
        procs.track(tracked(&set));
        Engine {
            set,
            rule_names,
            procs,
            last_source: None,
            cached: 0,
            scratch: Scratch::default(),
            groups: FastMap::default(),
            incidents,
            state: stateful::State::default(),
            reemit_ns: 60_000_000_000,
            seq: 0,
            shared: None,
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.set
    }

    /// Loads a new set; on error the current set stays in force.
    pub fn reload(&mut self, dir: Option<&Path>, with_managed: bool) -> Result<(), RuleError> {
        self.set = RuleSet::load(dir, with_managed)?;
        self.procs.track(tracked(&self.set));
        self.rule_names = self
            .set
            .rules
            .iter()
            .map(|r| self.incidents.name(&r.spec.id))
            .collect();
        let ids: std::collections::HashSet<&str> =
            self.set.rules.iter().map(|r| r.spec.id.as_str()).collect();
        self.state.retain_rules(&ids);
        Ok(())
    }

    /// Alert groups and new-value rules' learned sets are shared through `shared` (the
    /// store several replicas write to).
    pub fn share_state(&mut self, shared: Box<dyn SharedState>) {
        self.shared = Some(shared);
    }

    /// Writes the group hits held for the shared state.
    pub fn flush_shared(&mut self, now: UnixNanos) {
        if let Some(shared) = &mut self.shared {
            shared.flush(now);
        }
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

    /// Pipes and filter links the engine forgot at their bounds (a workload showing more
    /// than [`super::pipes::PIPES_MAX`] pipes), so far.
    pub fn pipes_evicted(&self) -> u64 {
        self.procs.pipes_evicted()
    }

    /// Processes' incident trees the engine forgot at their bound (the least recently
    /// joined first), so far.
    pub fn trees_forgotten(&self) -> u64 {
        self.incidents.trees_forgotten()
    }

    fn remember(&mut self, slot: usize, rec: &Record) {
        if let Record::Listener(l) = rec {
            self.procs.by_slot[slot].listening.observe(l);
        }
        let Record::Process(p) = rec else { return };
        let per_source = &mut self.procs.by_slot[slot].procs;
        if p.phase == crate::model::ProcessPhase::Exit {
            if per_source.remove(&p.pid).is_some() {
                self.cached -= 1;
            }
            self.procs.by_slot[slot].exec_from.remove(&p.pid);
            return;
        }
        if self.cached >= PROC_CACHE_MAX {
            tracing::warn!(size = self.cached, "rule process cache full; starting over");
            self.procs.by_slot.iter_mut().for_each(|s| {
                s.procs.clear();
                s.exec_from.clear();
            });
            self.cached = 0;
        }
        let Slot {
            procs,
            pipes,
            exec_from,
            ..
        } = &mut self.procs.by_slot[slot];
        let before = procs.insert(p.pid, p.clone());
        match &before {
            None => self.cached += 1,
            Some(old)
                if p.phase == crate::model::ProcessPhase::Exec
                    && old.start_time == p.start_time
                    && (old.comm != p.comm || old.exe != p.exe) =>
            {
                exec_from.insert(p.pid, (p.start_time, old.comm.clone()));
            }
            Some(_) => {}
        }
        if p.phase == crate::model::ProcessPhase::Start {
            exec_from.remove(&p.pid);
        }
        if p.stdin_pipe.is_some() || p.stdout_pipe.is_some() {
            pipes.observe(p);
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
        lookup(&self.procs.by_slot[slot].procs, pid, start)
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
            Record::Flow(f) => lookup(&procs[slot].procs, f.pid, f.process_start_time),
            Record::Listener(l) => lookup(&procs[slot].procs, l.pid, l.process_start_time),
            _ => None,
        };
        let cmdline = std::cell::OnceCell::new();
        let out = match make_ctx(&event.record, owner) {
            Some((_, mut ctx)) => {
                ctx.source = Some(SourceView::new(&procs[slot]));
                ctx.cmdline = Some(&cmdline);
                self.evaluate_in(event, &ctx, &source.workload, &procs, now)
            }
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
        procs: &[Slot],
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
        procs: &[Slot],
        now: UnixNanos,
        scratch: &mut Scratch,
    ) -> Vec<AlertRecord> {
        let mut out = Vec::new();
        let key = &mut scratch.key;
        if scratch.hits.is_empty() {
            return out;
        }
        let source_name = self.incidents.name(&event.source.collector_id);
        for &index in &scratch.hits {
            let rule = &self.set.rules[index];
            let mut state_evidence = None;
            let mut culprit = None;
            let incident =
                self.incidents
                    .of(self.rule_names[index], source_name, &event.record, ctx, now);
            if let Some(kind) = &rule.stateful {
                key.clear();
                key.push_str(workload);
                for part in &rule.state_by {
                    key.push('|');
                    part.push(key, event, ctx, &mut scratch.rendered);
                }
                // A sum over "no process" would add separate incidents together; learned
                // values stay the workload's, and a rate credits each value's sender.
                if ctx.process.is_none() && matches!(kind, stateful::Kind::Threshold(_)) {
                    incident.push(key);
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
                if let (Some(shared), stateful::Kind::NewValue(n), Some(value)) =
                    (&mut self.shared, kind, value)
                {
                    // A value unknown here may be known to another replica: asked once,
                    // then kept here like a value learned here.
                    if !n.allow.iter().any(|a| a == value)
                        && self.state.learnable(&rule.spec.id, key, value)
                    {
                        if let Some(learned) = shared.learn(&rule.spec.id, key, value, now) {
                            self.state.seed(&rule.spec.id, key, value, learned);
                        }
                    }
                }
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
            incident.push(key);
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
                if let Some(shared) = &mut self.shared {
                    shared.hit(key);
                }
                continue;
            }
            g.last_emit = now;
            g.emitted_count = g.count;
            let mut g = match self
                .shared
                .as_mut()
                .and_then(|s| s.claim(key, now, self.reemit_ns))
            {
                // Another replica emitted it lately: this one waits as if it had.
                Some(Claim::Held { last_emit }) => {
                    g.last_emit = last_emit;
                    continue;
                }
                Some(Claim::Emit { first_seen, count }) => Group {
                    first_seen,
                    count,
                    ..*g
                },
                None => *g,
            };
            g.emitted_count = g.count;
            self.seq += 1;
            let mut alert = match &culprit {
                // Another process sent most of the values: the alert names it (or no
                // process when its owner is unknown), with the record that crossed the limit.
                Some((c, _)) => {
                    let process = self.procs.slots.get(c.source.as_str()).and_then(|slot| {
                        lookup(&procs[*slot].procs, Some(c.pid), Some(c.start_time))
                    });
                    let blamed = Ctx {
                        process,
                        ancestor: None,
                        cmdline: None,
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
pub(super) fn sender_of<'a>(event: &'a Event, ctx: &Ctx<'_>) -> stateful::Sender<'a> {
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

/// A record's source as the engine keeps it between records: a batch's records share one
/// identity, so most find their slot and `namespace/workload` key prefix here.
pub(super) struct LastSource {
    identity: Arc<CollectorIdentity>,
    slot: usize,
    workload: String,
    audit: bool,
}

pub(super) fn lookup(
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

pub(super) fn make_ctx<'a>(
    rec: &'a Record,
    owner: Option<&'a ProcessRecord>,
) -> Option<(RecordKind, Ctx<'a>)> {
    let ctx = |process, flow, listener| Ctx {
        process,
        flow,
        listener,
        ancestor: None,
        audit: None,
        source: None,
        cmdline: None,
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

/// The names the rules compare a pipe's other side with: what the pipes carry through
/// filters.
fn tracked(set: &RuleSet) -> Tracked {
    let (mut writers, mut readers) = (Vec::new(), Vec::new());
    for c in set.by_kind.iter().flatten() {
        for cond in std::iter::once(&c.condition).chain(&c.exceptions) {
            cond.names_compared(lang::Field::StdinWriterComm, &mut writers);
            cond.names_compared(lang::Field::StdoutReaderComm, &mut readers);
        }
    }
    Tracked::new(writers, readers)
}
