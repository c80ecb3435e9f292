//! Loading: rule files (managed and custom) and overrides parsed, conditions compiled per
//! record kind, keys and output templates resolved, all checked before a set replaces the
//! running one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::alert::{parse_template, Piece};
use super::engine::KeyPart;
use super::lang::{self, Condition, Ctx, Defs};
use super::{stateful, RuleError, MANAGED};
use crate::model::{RecordKind, Severity};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSpec {
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
pub(super) struct OverrideSpec {
    rule: String,
    #[serde(default)]
    exceptions: Vec<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    severity: Option<SeveritySpec>,
}

pub(super) fn yes() -> bool {
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
    pub(super) output: Vec<Piece>,
    pub stateful: Option<stateful::Kind>,
    /// Compiled at load: the stateful key, value and sum fields, and the group key.
    pub(super) state_by: Vec<KeyPart>,
    pub(super) state_value: Option<KeyPart>,
    pub(super) state_sum: Option<lang::Field>,
    pub(super) group_by: Vec<KeyPart>,
}

/// Key fields that come from the record's source rather than the record.
pub(super) const SOURCE_FIELDS: [&str; 3] = ["k8s.ns.name", "k8s.pod.name", "k8s.workload"];

pub(super) fn known_field(name: &str) -> bool {
    SOURCE_FIELDS.contains(&name) || lang::field_for_name(name).is_some()
}

/// A loaded, compiled rule set.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// Per record kind (flow, process, listener): the enabled rules' conditions, laid out
    /// together so the per-record loop reads them in order.
    pub(super) by_kind: [Vec<Candidate>; 4],
}

/// A rule's condition and exceptions for one record kind.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub(super) rule: usize,
    pub(super) condition: Condition,
    pub(super) exceptions: Vec<Condition>,
}

impl Candidate {
    pub(super) fn matches(&self, facts: lang::Facts, ctx: &Ctx<'_>) -> bool {
        self.condition.holds(facts, ctx) && !self.exceptions.iter().any(|e| e.holds(facts, ctx))
    }
}

pub(super) fn kind_slot(kind: RecordKind) -> Option<usize> {
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

pub(super) fn managed_files() -> Vec<(String, String)> {
    MANAGED
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

pub(super) fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, RuleError> {
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
