//! Detection in the aggregator: stored events go to a rule-engine thread; its alerts are
//! stored like records (queryable), published to live subscribers, and delivered to the
//! configured outputs. Ingest never waits for detection: a full queue drops the batch from
//! detection only (stored all the same), counted and logged.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::aggregator::alert_out::Outputs;
use crate::aggregator::store::{Appended, Store};
use crate::aggregator::Hub;
use crate::audit::correlate::{self, Correlator, JoinConfig};
use crate::model::{now_ns, AlertRecord, CollectorIdentity, Event, Record};
use crate::rules::stateful::StateError;
use crate::rules::{Engine, RuleSet};
use crate::telemetry::aggregator::{
    AlertsRaised, AlertsUnstored, DetectDropped, DetectQueued, RulePipesForgotten,
    RuleReloadFailed, RuleStateKeysRefused, RuleStateQuarantined, RuleTreesForgotten,
    RulesEvaluated, RulesReloaded,
};
use crate::telemetry::InternalEvent;

/// The pseudo-collector whose "batches" are alerts; its sequence numbers start from the
/// clock so they never repeat across restarts (the store deduplicates on them).
pub const RULES_SOURCE: &str = "procflow-rules";

pub struct DetectConfig {
    pub rules_dir: Option<PathBuf>,
    pub with_managed: bool,
    pub state_path: PathBuf,
    pub reemit: Duration,
    pub outputs: Outputs,
    /// How exec audit events are joined with process trees.
    pub join: JoinConfig,
    /// This replica's id: the rules' batches are deduplicated per replica (their sequence
    /// numbers start from each replica's clock and could meet another's).
    pub replica: String,
}

#[derive(Clone)]
pub struct Detector {
    tx: Sender<Vec<Event>>,
    /// Records submitted and not yet taken by the engine thread.
    queued: Arc<AtomicUsize>,
    loaded: LoadedRules,
}

/// A rule as loaded in the engine, for readers (the console's Rules page).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedRule {
    pub id: String,
    pub name: String,
    pub description: String,
    pub severity: crate::model::Severity,
    pub tags: Vec<String>,
    pub enabled: bool,
    /// Shipped with procflow (`managed/…`) rather than read from `--rules`.
    pub managed: bool,
    pub file: String,
    pub kinds: Vec<String>,
    /// `threshold`, `new_value` or `rate` for a stateful rule.
    pub stateful: Option<&'static str>,
}

/// The rule set in force, replaced whole by the engine thread on each successful reload.
#[derive(Clone, Default)]
pub struct LoadedRules(Arc<std::sync::RwLock<Arc<Vec<LoadedRule>>>>);

impl LoadedRules {
    pub fn get(&self) -> Arc<Vec<LoadedRule>> {
        self.0.read().map(|r| r.clone()).unwrap_or_default()
    }

    fn set(&self, set: &RuleSet) {
        let rules = set
            .rules
            .iter()
            .map(|r| LoadedRule {
                id: r.spec.id.clone(),
                name: r.spec.name.clone(),
                description: r.spec.description.clone(),
                severity: r.spec.severity.into(),
                tags: r.spec.tags.clone(),
                enabled: r.spec.enabled,
                managed: r.file.starts_with("managed/"),
                file: r.file.clone(),
                kinds: r.spec.kinds.clone(),
                stateful: r.stateful.as_ref().map(|k| match k {
                    crate::rules::stateful::Kind::Threshold(_) => "threshold",
                    crate::rules::stateful::Kind::NewValue(_) => "new_value",
                    crate::rules::stateful::Kind::Rate(_) => "rate",
                }),
            })
            .collect();
        if let Ok(mut current) = self.0.write() {
            *current = Arc::new(rules);
        }
    }
}

/// The detection backlog is bounded in records (a batch holds 1 to thousands): about two
/// seconds of the managed set's rate on this class of machine, some 350 MB of events.
/// Beyond it, stored records go unevaluated and are counted.
const MAX_QUEUED_RECORDS: usize = 1 << 20;
const QUEUE_BATCHES: usize = 4096;
const STATE_SAVE_EVERY: Duration = Duration::from_secs(5);
const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(2);
/// Group hits that did not emit reach the shared count this often.
const SHARED_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Why detection could not start: the rules do not load, the saved state cannot be read
/// or set aside, or the engine thread cannot be started.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Rules(#[from] crate::rules::RuleError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("moving corrupt rule state {path} aside: {source}")]
    Quarantine {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("starting the detection thread: {0}")]
    Thread(std::io::Error),
}

impl Detector {
    /// Loads the rules (an error here stops the aggregator: a typo must not mean no
    /// detection) and the saved state, and starts the engine thread.
    pub fn start(
        config: DetectConfig,
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
    ) -> Result<(Detector, std::thread::JoinHandle<()>), DetectError> {
        // Read before the rules are: a file changed from here on is reloaded.
        let rules_mtime = newest_mtime(config.rules_dir.as_deref());
        let set = RuleSet::load(config.rules_dir.as_deref(), config.with_managed)?;
        tracing::info!(rules = set.rules.len(), dir = ?config.rules_dir, "detection rules loaded");
        let loaded = LoadedRules::default();
        loaded.set(&set);
        let mut engine = Engine::new(set);
        engine.reemit_ns = u64::try_from(config.reemit.as_nanos()).unwrap_or(u64::MAX);
        load_state(&mut engine, &config.state_path)?;
        if let Some(shared) = store.shared_rule_state() {
            tracing::info!("alert groups and learned values are shared through the store");
            engine.share_state(shared);
        }
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_BATCHES);
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = queued.clone();
        let reloaded = loaded.clone();
        let handle = std::thread::Builder::new()
            .name("detect".into())
            .spawn(move || run(engine, config, rx, taken, store, hub, reloaded, rules_mtime))
            .map_err(DetectError::Thread)?;
        Ok((Detector { tx, queued, loaded }, handle))
    }

    /// The rules in force, kept current across reloads.
    pub fn loaded_rules(&self) -> LoadedRules {
        self.loaded.clone()
    }

    /// Offers stored events to detection without waiting.
    pub fn submit(&self, events: Vec<Event>) {
        let n = events.len() as u64;
        let before = self.queued.fetch_add(events.len(), Ordering::Relaxed);
        DetectQueued {
            records: before + events.len(),
        }
        .emit();
        let sent = if before + events.len() > MAX_QUEUED_RECORDS {
            Err(TrySendError::Full(events))
        } else {
            self.tx.try_send(events)
        };
        if sent.is_err() {
            self.queued.fetch_sub(n as usize, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => DetectDropped {
                records: n,
                stopped: false,
            }
            .emit(),
            Err(TrySendError::Disconnected(_)) => DetectDropped {
                records: n,
                stopped: true,
            }
            .emit(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    mut engine: Engine,
    config: DetectConfig,
    rx: Receiver<Vec<Event>>,
    queued: Arc<AtomicUsize>,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    loaded: LoadedRules,
    mut rules_mtime: Option<SystemTime>,
) {
    let mut seq = now_ns();
    let mut last_save = Instant::now();
    let mut dirty = false;
    // What the engine had forgotten at its bounds when last reported: pipes, trees.
    let mut forgotten = (0u64, 0u64);
    let mut last_reload_check = Instant::now();
    let identity = CollectorIdentity {
        collector_id: RULES_SOURCE.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..CollectorIdentity::default()
    };
    let mut correlator = Correlator::new(config.join);
    let mut last_expire = Instant::now();
    let mut last_flush = Instant::now();
    let batch_key = format!("{RULES_SOURCE}/{}", config.replica);
    loop {
        let batch = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(batch) => Some(batch),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let now = now_ns();
        let mut raised: Vec<AlertRecord> = Vec::new();
        let mut passed: Vec<Event> = Vec::new();
        if let Some(events) = batch {
            let left = queued.fetch_sub(events.len(), Ordering::Relaxed) - events.len();
            DetectQueued { records: left }.emit();
            for event in &events {
                // Joins first: a root arriving after its exec request is joined before the
                // alerts on it are raised, so they carry who started it.
                for join in correlator.observe(event, now) {
                    raised.push(correlate::join_alert(&join, now));
                    raised.extend(join.amended);
                }
                match &event.record {
                    // Alerts the aggregator raises itself (a silenced collector): stored,
                    // published and delivered as the rules' own. Writers cannot send alerts
                    // (ingest refuses them), so none of these comes from a collector.
                    Record::Alert(_) => {
                        passed.push(event.clone());
                        continue;
                    }
                    Record::Heartbeat(_) => continue,
                    _ => {}
                }
                // An audit record runs on the API server's clock (never ahead of arrival): a
                // backfill's windows and 45-day baselines follow the hours it happened.
                let at = match &event.record {
                    Record::Audit(a) => a.stage_time.min(now),
                    _ => now,
                };
                let mut fired = engine.evaluate(event, at);
                correlator.annotate(&event.source.collector_id, &mut fired, now);
                raised.extend(fired);
            }
            RulesEvaluated {
                records: events.len(),
            }
            .emit();
            dirty = true;
        }
        if last_flush.elapsed() >= SHARED_FLUSH_EVERY {
            last_flush = Instant::now();
            engine.flush_shared(now);
        }
        if last_expire.elapsed() >= Duration::from_secs(1) {
            last_expire = Instant::now();
            raised.extend(
                correlator
                    .expire(now)
                    .iter()
                    .filter_map(|miss| correlate::miss_alert(miss, now)),
            );
        }
        if !raised.is_empty() || !passed.is_empty() {
            let mut alerts = passed;
            alerts.extend(raised.into_iter().map(|alert| Event {
                source: Arc::new(CollectorIdentity {
                    pod_name: alert.pod_name.clone(),
                    pod_namespace: alert.pod_namespace.clone(),
                    node_name: alert.node_name.clone(),
                    ..identity.clone()
                }),
                received_at: now,
                record: Record::Alert(alert),
            }));
            AlertsRaised {
                alerts: alerts.len(),
            }
            .emit();
            seq += 1;
            match store
                .append(batch_key.clone(), seq, alerts.clone())
                .blocking_recv()
            {
                Ok(Ok(Appended::Stored(_) | Appended::Duplicate)) => {}
                Ok(Err(error)) => AlertsUnstored {
                    alerts: alerts.len(),
                    error: Some(&error),
                }
                .emit(),
                Err(_) => AlertsUnstored {
                    alerts: alerts.len(),
                    error: None,
                }
                .emit(),
            }
            hub.publish(&alerts);
            config.outputs.deliver(&alerts);
        }
        if last_reload_check.elapsed() >= RELOAD_CHECK_EVERY {
            last_reload_check = Instant::now();
            let mtime = newest_mtime(config.rules_dir.as_deref());
            if mtime != rules_mtime {
                rules_mtime = mtime;
                match engine.reload(config.rules_dir.as_deref(), config.with_managed) {
                    Ok(()) => {
                        loaded.set(engine.rules());
                        RulesReloaded {
                            rules: engine.rules().rules.len(),
                        }
                        .emit();
                    }
                    Err(error) => {
                        RuleReloadFailed { error: &error }.emit();
                    }
                }
            }
        }
        if dirty && last_save.elapsed() >= STATE_SAVE_EVERY {
            save(&engine, &config.state_path, &mut forgotten);
            dirty = false;
            last_save = Instant::now();
        }
    }
    save(&engine, &config.state_path, &mut forgotten);
    config.outputs.close();
}

/// Restores the saved rule state. A file that does not parse (torn by a crash, emptied, edited
/// by hand) is renamed aside, logged and counted, and the rules start fresh: losing windows
/// and learned values costs some alerts' context, refusing to start costs all detection.
/// A file that cannot be read at all is an error for the operator.
fn load_state(engine: &mut Engine, path: &Path) -> Result<(), DetectError> {
    // A save interrupted by a crash leaves its temporary file; the real one is whole.
    let leftover = path.with_extension(crate::durable::TEMP_EXTENSION);
    if std::fs::remove_file(&leftover).is_ok() {
        tracing::info!(path = %leftover.display(), "removed an interrupted rule-state save");
    }
    match engine.load_state(path) {
        Ok(()) => Ok(()),
        Err(StateError::Corrupt { reason, .. }) => {
            let aside =
                crate::durable::quarantine(path).map_err(|source| DetectError::Quarantine {
                    path: path.to_owned(),
                    source,
                })?;
            RuleStateQuarantined {
                path,
                kept_as: &aside,
                reason: &reason,
            }
            .emit();
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// Saves the rule state, and reports what the engine forgot at its bounds since the last
/// save (`forgotten`: its pipes and trees forgotten so far when last reported).
fn save(engine: &Engine, path: &Path, forgotten: &mut (u64, u64)) {
    RuleStateKeysRefused {
        keys: engine.state_keys_refused(),
    }
    .emit();
    let now = (engine.pipes_evicted(), engine.trees_forgotten());
    if now.0 > forgotten.0 {
        RulePipesForgotten {
            forgotten: now.0 - forgotten.0,
            total: now.0,
        }
        .emit();
    }
    if now.1 > forgotten.1 {
        RuleTreesForgotten {
            forgotten: now.1 - forgotten.1,
        }
        .emit();
    }
    *forgotten = now;
    if let Err(error) = engine.save_state(path) {
        tracing::error!(%error, "saving rule state failed; a restart would lose windows and learned values");
    }
}

/// The newest modification time among the rule files: a change triggers a reload.
fn newest_mtime(dir: Option<&Path>) -> Option<SystemTime> {
    let entries = std::fs::read_dir(dir?).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
}
