//! Detection rules: YAML rule files compiled into typed condition trees
//! ([`lang`]), evaluated per record, alerts grouped per rule + workload.

pub mod cli;
pub mod lang;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{
    display_bytes, AlertRecord, Event, FlowRecord, ProcessRecord, Record, RecordKind, Severity,
    UnixNanos,
};
use lang::{Ctx, Defs, Node};

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

/// A compiled rule: one condition tree per record kind it applies to.
#[derive(Debug, Clone)]
pub struct Rule {
    pub spec: RuleSpec,
    pub file: String,
    compiled: Vec<(RecordKind, Node, Vec<Node>)>,
    output: Vec<Piece>,
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
        if lang::field_names().iter().all(|f| *f != name) {
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
}

impl RuleSet {
    /// Compiles rule files given as (name, text); every rule of every file shares
    /// the lists and macros of all files.
    pub fn compile(files: &[(String, String)]) -> Result<RuleSet, RuleError> {
        let mut defs = Defs::default();
        let mut specs = Vec::new();
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
        }
        let mut rules: Vec<Rule> = Vec::new();
        for (file, spec) in specs {
            let rerr = |msg: String| RuleError::Rule {
                file: file.clone(),
                rule: spec.id.clone(),
                msg,
            };
            if rules.iter().any(|r| r.spec.id == spec.id) {
                return Err(rerr("duplicate rule id".into()));
            }
            let mut compiled = Vec::new();
            for k in &spec.kinds {
                let kind: RecordKind = k.parse().map_err(rerr)?;
                if !matches!(
                    kind,
                    RecordKind::Flow | RecordKind::Process | RecordKind::Listener
                ) {
                    return Err(rerr(format!(
                        "kind {k} cannot be matched (flow, process, listener)"
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
                compiled.push((kind, cond, exc));
            }
            let output = parse_template(&spec.output).map_err(rerr)?;
            rules.push(Rule {
                spec,
                file,
                compiled,
                output,
            });
        }
        Ok(RuleSet { rules })
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

struct Group {
    first_seen: UnixNanos,
    last_emit: UnixNanos,
    count: u64,
    emitted_count: u64,
}

/// The evaluator: a rule set, a pid → process cache so flow and listener rules
/// can see their owning process, and alert groups.
pub struct Engine {
    set: RuleSet,
    procs: HashMap<u32, ProcessRecord>,
    groups: HashMap<String, Group>,
    /// A group re-emits at most once per this many nanoseconds (with its count).
    pub reemit_ns: u64,
    seq: u64,
}

const PROC_CACHE_MAX: usize = 65_536;

impl Engine {
    pub fn new(set: RuleSet) -> Self {
        Engine {
            set,
            procs: HashMap::new(),
            groups: HashMap::new(),
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
        Ok(())
    }

    fn remember(&mut self, rec: &Record) {
        if let Record::Process(p) = rec {
            if p.phase == crate::model::ProcessPhase::Exit {
                self.procs.remove(&p.pid);
            } else {
                if self.procs.len() >= PROC_CACHE_MAX && !self.procs.contains_key(&p.pid) {
                    self.procs.clear();
                }
                self.procs.insert(p.pid, p.clone());
            }
        }
    }

    /// Stateless matching: which rules fire on `rec`, with rendered output.
    pub fn matches(&self, rec: &Record) -> Vec<Hit> {
        let (kind, ctx) = match rec {
            Record::Process(p) => (
                RecordKind::Process,
                Ctx {
                    process: Some(p),
                    flow: None,
                    listener: None,
                    ancestor: None,
                },
            ),
            Record::Flow(f) => (
                RecordKind::Flow,
                Ctx {
                    process: self.owner(f.pid, f.process_start_time),
                    flow: Some(f),
                    listener: None,
                    ancestor: None,
                },
            ),
            Record::Listener(l) => (
                RecordKind::Listener,
                Ctx {
                    process: self.owner(l.pid, l.process_start_time),
                    flow: None,
                    listener: Some(l),
                    ancestor: None,
                },
            ),
            _ => return Vec::new(),
        };
        let mut hits = Vec::new();
        for (i, r) in self.set.rules.iter().enumerate() {
            if !r.spec.enabled {
                continue;
            }
            for (k, cond, exc) in &r.compiled {
                if *k == kind && cond.eval(&ctx) && !exc.iter().any(|e| e.eval(&ctx)) {
                    hits.push(Hit {
                        rule: i,
                        output: render(&r.output, &ctx),
                    });
                }
            }
        }
        hits
    }

    /// Counts matching rules without rendering output (the benchmark's hot path).
    pub fn count_matches(&self, rec: &Record) -> usize {
        let (kind, ctx) = match rec {
            Record::Process(p) => (
                RecordKind::Process,
                Ctx {
                    process: Some(p),
                    flow: None,
                    listener: None,
                    ancestor: None,
                },
            ),
            Record::Flow(f) => (
                RecordKind::Flow,
                Ctx {
                    process: self.owner(f.pid, f.process_start_time),
                    flow: Some(f),
                    listener: None,
                    ancestor: None,
                },
            ),
            Record::Listener(l) => (
                RecordKind::Listener,
                Ctx {
                    process: self.owner(l.pid, l.process_start_time),
                    flow: None,
                    listener: Some(l),
                    ancestor: None,
                },
            ),
            _ => return 0,
        };
        self.set
            .rules
            .iter()
            .filter(|r| r.spec.enabled)
            .flat_map(|r| r.compiled.iter())
            .filter(|(k, c, e)| *k == kind && c.eval(&ctx) && !e.iter().any(|e| e.eval(&ctx)))
            .count()
    }

    fn owner(&self, pid: Option<u32>, start: Option<UnixNanos>) -> Option<&ProcessRecord> {
        let p = self.procs.get(&pid?)?;
        match start {
            Some(s) if s != p.start_time => None,
            _ => Some(p),
        }
    }

    /// Evaluates one ingested event: alerts to emit now (first of a group, then
    /// at most once per `reemit_ns` per group with the updated count).
    pub fn evaluate(&mut self, event: &Event, now: UnixNanos) -> Vec<AlertRecord> {
        self.remember(&event.record);
        let hits = self.matches(&event.record);
        let mut out = Vec::new();
        for h in hits {
            let rule = &self.set.rules[h.rule];
            let ctx_proc: Option<ProcessRecord> = match &event.record {
                Record::Process(p) => Some(p.clone()),
                Record::Flow(f) => self.owner(f.pid, f.process_start_time).cloned(),
                Record::Listener(l) => self.owner(l.pid, l.process_start_time).cloned(),
                _ => None,
            };
            let flows: Vec<FlowRecord> = match &event.record {
                Record::Flow(f) => vec![f.clone()],
                _ => Vec::new(),
            };
            let mut key = format!(
                "{}|{}|{}",
                rule.spec.id, event.source.pod_namespace, event.source.pod_name
            );
            for g in &rule.spec.group_by {
                let ctx = Ctx {
                    process: ctx_proc.as_ref(),
                    flow: flows.first(),
                    listener: match &event.record {
                        Record::Listener(l) => Some(l),
                        _ => None,
                    },
                    ancestor: None,
                };
                key.push('|');
                key.push_str(&render(&[Piece::Field(g.clone())], &ctx));
            }
            let g = self.groups.entry(key.clone()).or_insert(Group {
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
            self.seq += 1;
            let mut evidence = vec![format!(
                "rule {} matched a {} record",
                rule.spec.id,
                event.record.kind().as_str()
            )];
            if let Some(p) = &ctx_proc {
                let chain: Vec<String> =
                    std::iter::once(format!("{}({})", display_bytes(&p.comm), p.pid))
                        .chain(
                            p.ancestors
                                .iter()
                                .map(|a| format!("{}({})", display_bytes(&a.comm), a.pid)),
                        )
                        .collect();
                evidence.push(format!("lineage: {}", chain.join(" <- ")));
            }
            out.push(AlertRecord {
                id: format!("{}-{}-{}", rule.spec.id, now, self.seq),
                rule_id: rule.spec.id.clone(),
                rule_name: rule.spec.name.clone(),
                severity: rule.spec.severity.into(),
                tags: rule.spec.tags.clone(),
                time: now,
                first_seen: g.first_seen,
                last_seen: now,
                count: g.count,
                output: h.output,
                pod_name: event.source.pod_name.clone(),
                pod_namespace: event.source.pod_namespace.clone(),
                node_name: event.source.node_name.clone(),
                container_id: ctx_proc.as_ref().and_then(|p| p.container_id.clone()),
                process: ctx_proc.map(Box::new),
                flows,
                evidence,
            });
        }
        out
    }
}

fn render(pieces: &[Piece], ctx: &Ctx<'_>) -> String {
    use lang::Val;
    let mut s = String::new();
    for p in pieces {
        match p {
            Piece::Lit(l) => s.push_str(l),
            Piece::Field(name) => {
                let v = lang::field_for_name(name)
                    .map(|f| lang::get(f, ctx))
                    .unwrap_or(Val::Null);
                match v {
                    Val::Null => s.push_str("<NA>"),
                    Val::Bytes(b) => s.push_str(&display_bytes(&b)),
                    Val::Int(i) => s.push_str(&i.to_string()),
                    Val::Bool(b) => s.push_str(if b { "true" } else { "false" }),
                    Val::Ip(ip) => s.push_str(&ip.to_string()),
                }
            }
        }
    }
    s
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

fn chrono_like_rfc3339(secs: u64, nanos: u64) -> String {
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

/// For the benchmark: an engine with the full managed set and a process cache
/// holding the owners of [`bench_records`].
pub fn bench_engine() -> Engine {
    let mut e = Engine::new(RuleSet::managed().unwrap_or_default());
    for r in bench_records() {
        e.remember(&r);
    }
    e
}

/// A mix for throughput measurement: per process (3-deep lineage) seven flows
/// owned by it and one listener (11% / 78% / 11%). Call
/// `engine.count_matches(&rec)` per record to measure one core's rate.
pub fn bench_records() -> Vec<Record> {
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
            stdio_is_socket: Some(false),
            stdio_socket_inodes: vec![],
        };
        out.push(Record::Process(p));
        for j in 0..7u32 {
            out.push(Record::Flow(FlowRecord {
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
            out.push(Record::Listener(ListenerRecord {
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
    }
    out
}

#[cfg(test)]
mod tests;
