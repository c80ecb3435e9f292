//! The Investigate answers over the store, with two faces: the gRPC service below and the web
//! console (`aggregator::console`). [`Investigator`] runs the scans (synchronous SQLite reads:
//! call it on a blocking thread) and feeds them to the pure graph code in `crate::investigate`;
//! the service only converts requests and answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};

use crate::aggregator::admission::{identity_key, Admission, Class};
use crate::aggregator::auth::{NamespaceScope, Principal};
use crate::aggregator::rollups;
use crate::aggregator::store::{EventQuery, Store, StoreError};
use crate::investigate::api::{self, ApiActivity, ApiBaseline, ApiWindow};
use crate::investigate::rollup::HOUR;
use crate::investigate::{
    self, Activity, Baseline, Comparison, EdgeOrder, FlowFilter, NewActivity, Period, PodDirectory,
    PodProcesses, ProcessNames, ProcessTree, Sockets, Talkers, TreeFlows,
};
use crate::model::{now_ns, Direction, Event, Record, RecordKind, Scope, UnixNanos};
use crate::proto::v1 as pb;
use crate::wire;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

/// Which stored records a question looks at: the store's filter (pods, namespaces, time; its
/// kinds and limit are set per scan) and the flows' scopes and directions.
#[derive(Debug, Clone, Default)]
pub struct Question {
    pub query: EventQuery,
    pub flows: FlowFilter,
    /// Namespaces whose pods may name an east-west peer (empty: every namespace). A reader
    /// limited to some namespaces must not learn pod names from others.
    pub peer_namespaces: Vec<String>,
}

/// Runs the questions against a store.
#[derive(Clone)]
pub struct Investigator {
    store: Arc<dyn Store>,
    baselines: Arc<BaselineCache<Baseline>>,
    /// The baselines of rolled-up hours, by the hours (`rollups::baseline`).
    row_baselines: Arc<BaselineCache<Baseline>>,
    api_baselines: Arc<BaselineCache<ApiBaseline>>,
    names: Arc<Mutex<NamesCache>>,
}

/// Process names from every process record stored, kept between questions: a month's store
/// holds hundreds of thousands of process records, and every question needs their names
/// (for the sockets of its raw records), so each scans only what arrived since the last
/// (from a little before it: batches still committing then). Rebuilt from the store every
/// hour, so names of records gone at retention do not pile up; the console's hourly warm-up
/// takes that scan.
#[derive(Default)]
struct NamesCache {
    /// Lent to each question: the lock is held only to bring it up to date, so one long
    /// question (a viewer's month over raw records) does not hold every other one back.
    names: Arc<ProcessNames>,
    scan_from: UnixNanos,
    built: Option<Instant>,
}

const NAMES_MARGIN: UnixNanos = 120_000_000_000;

/// Baselines wholly in the past, kept for an hour: a scope's baseline is weeks of records
/// (45 days before a 24-hour scope is 45 times the scope), and the next question over the
/// same scope within the hour asks for exactly the same one. The store only grows at the
/// present (records are timed by arrival), so a past window's summary stays true, until
/// retention deletes part of it (hence the hour). Both faces share it.
pub(crate) struct BaselineCache<T> {
    entries: Mutex<HashMap<BaselineKey, (Instant, Arc<T>)>>,
}

impl<T> Default for BaselineCache<T> {
    fn default() -> Self {
        BaselineCache {
            entries: Mutex::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct BaselineKey {
    pods: Vec<String>,
    namespaces: Vec<String>,
    scopes: Vec<Scope>,
    directions: Vec<Direction>,
    peer_namespaces: Vec<String>,
    since: UnixNanos,
    until: UnixNanos,
}

const BASELINE_TTL: Duration = Duration::from_secs(3600);
const BASELINES_KEPT: usize = 64;

impl<T> BaselineCache<T> {
    pub(crate) fn get(&self, key: &BaselineKey) -> Option<Arc<T>> {
        let entries = self.entries.lock().ok()?;
        let (at, baseline) = entries.get(key)?;
        (at.elapsed() < BASELINE_TTL).then(|| baseline.clone())
    }

    pub(crate) fn put(&self, key: BaselineKey, baseline: Arc<T>) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, (at, _)| at.elapsed() < BASELINE_TTL);
            if entries.len() >= BASELINES_KEPT {
                if let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
                {
                    entries.remove(&oldest);
                }
            }
            entries.insert(key, (Instant::now(), baseline));
        }
    }
}

impl Investigator {
    pub fn new(store: Arc<dyn Store>) -> Investigator {
        Investigator {
            store,
            baselines: Arc::default(),
            row_baselines: Arc::default(),
            api_baselines: Arc::default(),
            names: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Who talked to whom; `observe` also sees every flow event of the window (a caller that
    /// draws the same window's activity needs no second scan).
    pub fn talkers(
        &self,
        q: &Question,
        order: EdgeOrder,
        limit: usize,
        observe: &mut dyn FnMut(&Event),
    ) -> Result<Talkers, StoreError> {
        let names = self.process_names()?;
        let names = &*names;
        if self.reads_rollups(q) {
            if let Some(talkers) =
                rollups::talkers(&*self.store, q, names, (order, limit), observe)?
            {
                return Ok(talkers);
            }
        }
        let mut pods = self.pod_directory(q)?;
        let mut sockets = Sockets::new(q.flows.clone());
        self.store
            .scan(&of_kinds(&q.query, &[RecordKind::Flow]), &mut |e| {
                observe(&e);
                note_peer(&mut pods, q, &e);
                match &e.record {
                    Record::Flow(f) => sockets.add(&e.source, f),
                    _ => true,
                }
            })?;
        Ok(investigate::talkers(&sockets, names, &pods, order, limit))
    }

    /// Whether the question reads rollups (where the store keeps them): when raw records of
    /// its window may be gone, and when its window holds a whole hour (the console's
    /// scopes, Detective's, `--since 24h`): rollups then give the raw records' answer for
    /// the hours built, and the raw records give the rest (`rollups::activity`).
    fn reads_rollups(&self, q: &Question) -> bool {
        let (since, until) = (q.query.since, q.query.until);
        let first_whole = since.div_ceil(HOUR).saturating_mul(HOUR);
        let holds_an_hour = until == 0 || first_whole.saturating_add(HOUR - 1) <= until;
        holds_an_hour || since < self.store.raw_horizon(now_ns())
    }

    /// The activity of the question's window: from rollups when [`Self::reads_rollups`],
    /// from the raw records otherwise; `observe` sees the raw events. `pods` is the pod
    /// directory of `scope`'s window, made the first time raw records need it (rollups
    /// keep their own: a month's directory is a scan of every heartbeat segment).
    fn activity(
        &self,
        q: &Question,
        names: &ProcessNames,
        (scope, pods): (&Question, &mut Option<PodDirectory>),
        observe: &mut dyn FnMut(&Event),
    ) -> Result<Activity, StoreError> {
        if self.reads_rollups(q) {
            if let Some(activity) = rollups::activity(&*self.store, q, names, true, observe)? {
                return Ok(activity);
            }
        }
        self.raw_activity(q, names, (scope, pods), observe)
    }

    /// The activity of the question's window from its raw records.
    fn raw_activity(
        &self,
        q: &Question,
        names: &ProcessNames,
        (scope, pods): (&Question, &mut Option<PodDirectory>),
        observe: &mut dyn FnMut(&Event),
    ) -> Result<Activity, StoreError> {
        let pods = match pods {
            Some(pods) => pods,
            None => pods.insert(self.pod_directory(scope)?),
        };
        let kinds = [RecordKind::Flow, RecordKind::Process, RecordKind::Listener];
        let mut period = Period::new(q.flows.clone());
        self.store.scan(&of_kinds(&q.query, &kinds), &mut |e| {
            observe(&e);
            note_peer(pods, q, &e);
            period.add(&e)
        })?;
        Ok(period.activity(names, pods))
    }

    /// The question's window as a baseline, read as [`Self::activity`] reads it.
    fn baseline(
        &self,
        q: &Question,
        names: &ProcessNames,
        scope: (&Question, &mut Option<PodDirectory>),
    ) -> Result<Baseline, StoreError> {
        if self.reads_rollups(q) {
            if let Some(baseline) = rollups::baseline(&*self.store, q, names, &self.row_baselines)?
            {
                return Ok(baseline);
            }
        }
        let activity = self.raw_activity(q, names, scope, &mut |_| {})?;
        Ok(Baseline::of(&activity))
    }

    /// The window against its baseline `[baseline_since, window.since)`: what is new, and
    /// which edges moved significantly more; `observe` sees every raw event of the window.
    pub fn compare(
        &self,
        q: &Question,
        baseline_since: UnixNanos,
        limit: usize,
        observe: &mut dyn FnMut(&Event),
    ) -> Result<Comparison, StoreError> {
        let names = self.process_names()?;
        let names = &*names;
        let mut pods = None;
        let until = q.query.since.saturating_sub(1);
        let key = BaselineKey::of(q, baseline_since);
        let past = until < now_ns();
        let (baseline, window) = match self.baselines.get(&key).filter(|_| past) {
            Some(known) => (known, self.activity(q, names, (q, &mut pods), observe)?),
            None => {
                let before = Question {
                    query: EventQuery {
                        since: baseline_since,
                        until,
                        ..q.query.clone()
                    },
                    ..q.clone()
                };
                // The baseline on a second thread while this one reads the window: neither
                // needs the other, and a day's `new` is both (a day of rollups and an hour of
                // raw records, then another hour raw). Each makes its own pod directory if
                // it reads raw records.
                let (baseline, window) = std::thread::scope(|s| {
                    let before = &before;
                    let read = move || self.baseline(before, names, (q, &mut None));
                    let apart = std::thread::Builder::new()
                        .name("baseline".into())
                        .spawn_scoped(s, read);
                    let window = self.activity(q, names, (q, &mut pods), observe);
                    let baseline = match apart {
                        Ok(thread) => thread
                            .join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                        // No thread to be had: one after the other.
                        Err(_) => self.baseline(before, names, (q, &mut pods)),
                    };
                    (baseline, window)
                });
                let summary = Arc::new(baseline?);
                if past {
                    self.baselines.put(key, summary.clone());
                }
                (summary, window?)
            }
        };
        Ok(investigate::compare(
            &baseline,
            &window,
            limit,
            spans(q, baseline_since),
        ))
    }

    /// The Kubernetes API in the window against its baseline `[baseline_since,
    /// window.since)`: calls with their outcomes, new calls, subjects that grew; and when the
    /// question names pods and namespaces, who changed those pods and their controllers.
    pub fn api_activity(
        &self,
        q: &Question,
        baseline_since: UnixNanos,
        limit: usize,
    ) -> Result<ApiActivity, StoreError> {
        let until = q.query.since.saturating_sub(1);
        let key = BaselineKey::of(q, baseline_since);
        let past = until < now_ns();
        let baseline = match self.api_baselines.get(&key).filter(|_| past) {
            Some(known) => known,
            None => {
                let mut baseline = ApiBaseline::default();
                self.store.scan(
                    &EventQuery {
                        since: baseline_since,
                        until,
                        ..of_kinds(&q.query, &[RecordKind::Audit])
                    },
                    &mut |e| baseline.add(&e),
                )?;
                let baseline = Arc::new(baseline);
                if past {
                    self.api_baselines.put(key, baseline.clone());
                }
                baseline
            }
        };
        let mut window = ApiWindow::default();
        self.store
            .scan(&of_kinds(&q.query, &[RecordKind::Audit]), &mut |e| {
                window.add(&e)
            })?;
        let changes = if q.query.pods.is_empty() || q.query.namespaces.is_empty() {
            Vec::new()
        } else {
            self.workload_changes(q, baseline_since)?
        };
        Ok(api::activity(
            &baseline,
            window,
            limit,
            spans(q, baseline_since),
            changes,
        ))
    }

    /// The requests from `since` to the window's end that created, changed, deleted or
    /// exec'd into the question's pods or their controllers (in its namespaces), oldest
    /// first: a workload's API activity beside its runtime activity.
    pub fn workload_changes(
        &self,
        q: &Question,
        since: UnixNanos,
    ) -> Result<Vec<crate::model::AuditRecord>, StoreError> {
        let mut changes = api::Changes::new(&q.query.pods);
        // A controller's events are stored under its namespace, not a pod: every audit
        // event of the namespaces is looked at.
        self.store.scan(
            &EventQuery {
                kinds: vec![RecordKind::Audit],
                pods: Vec::new(),
                since,
                ..q.query.clone()
            },
            &mut |e| changes.add(&e),
        )?;
        Ok(changes.finish())
    }

    /// What the window holds that the baseline does not.
    pub fn new_activity(
        &self,
        q: &Question,
        baseline_since: UnixNanos,
        limit: usize,
    ) -> Result<NewActivity, StoreError> {
        Ok(self.compare(q, baseline_since, limit, &mut |_| {})?.new)
    }

    /// A process of one pod (`q.query.pods`), its ancestry and descendants with the flows of
    /// the window; `None` when the store holds no such process.
    pub fn process_tree(
        &self,
        q: &Question,
        pid: u32,
        start_time: Option<UnixNanos>,
    ) -> Result<Option<ProcessTree>, StoreError> {
        let mut processes = PodProcesses::default();
        self.store.scan(
            &EventQuery {
                since: 0,
                ..of_kinds(&q.query, &[RecordKind::Process])
            },
            &mut |e| {
                if let Record::Process(p) = &e.record {
                    processes.add(p);
                }
                true
            },
        )?;
        let Some(tree) = processes.tree(pid, start_time) else {
            return Ok(None);
        };
        let mut flows = TreeFlows::new(tree);
        self.store
            .scan(&of_kinds(&q.query, &[RecordKind::Flow]), &mut |e| {
                if let Record::Flow(f) = &e.record {
                    flows.add(f);
                }
                true
            })?;
        Ok(Some(flows.finish()))
    }

    /// Names of processes, from every process record stored (a long-lived process was
    /// recorded when it started, perhaps long before the window). A question still reading
    /// the previous names keeps them: what arrived since goes into a copy.
    fn process_names(&self) -> Result<Arc<ProcessNames>, StoreError> {
        let mut cache = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if cache.built.is_none_or(|at| at.elapsed() > BASELINE_TTL) {
            *cache = NamesCache {
                built: Some(Instant::now()),
                ..NamesCache::default()
            };
        }
        let started = now_ns();
        let mut fresh = Vec::new();
        self.store.scan(
            &EventQuery {
                kinds: vec![RecordKind::Process],
                since: cache.scan_from,
                ..EventQuery::default()
            },
            &mut |e| {
                if matches!(e.record, Record::Process(_)) {
                    fresh.push(e);
                }
                true
            },
        )?;
        if !fresh.is_empty() {
            let names = Arc::make_mut(&mut cache.names);
            for e in &fresh {
                if let Record::Process(p) = &e.record {
                    names.add(&e.source, p);
                }
            }
        }
        cache.scan_from = started.saturating_sub(NAMES_MARGIN);
        Ok(cache.names.clone())
    }

    /// Every collector that reported in the window (of any pod the question may name): their
    /// pod IPs name east-west peers.
    fn pod_directory(&self, q: &Question) -> Result<PodDirectory, StoreError> {
        let mut pods = PodDirectory::default();
        let query = EventQuery {
            kinds: vec![RecordKind::Heartbeat],
            pods: Vec::new(),
            namespaces: q.peer_namespaces.clone(),
            ..q.query.clone()
        };
        // One identity per collector: a day of a fleet's heartbeats is millions of rows.
        for source in self.store.sources(&query)? {
            pods.note(&source);
        }
        Ok(pods)
    }
}

impl BaselineKey {
    fn of(q: &Question, baseline_since: UnixNanos) -> BaselineKey {
        BaselineKey {
            pods: q.query.pods.clone(),
            namespaces: q.query.namespaces.clone(),
            scopes: q.flows.scopes.clone(),
            directions: q.flows.directions.clone(),
            peer_namespaces: q.peer_namespaces.clone(),
            since: baseline_since,
            until: q.query.since.saturating_sub(1),
        }
    }

    /// The key of the question's rolled-up hours from `first` to `last` (their starts).
    pub(crate) fn rows(q: &Question, first: u64, last: u64) -> BaselineKey {
        BaselineKey {
            since: first,
            until: last,
            ..BaselineKey::of(q, 0)
        }
    }
}

/// The baseline's and the window's lengths in ns.
fn spans(q: &Question, baseline_since: UnixNanos) -> (u64, u64) {
    let until = match q.query.until {
        0 => now_ns(),
        until => until,
    };
    (
        q.query.since.saturating_sub(baseline_since),
        until.saturating_sub(q.query.since),
    )
}

fn note_peer(pods: &mut PodDirectory, q: &Question, e: &Event) {
    if q.peer_namespaces.is_empty() || q.peer_namespaces.contains(&e.source.pod_namespace) {
        pods.note_source(&e.source);
    }
}

fn of_kinds(base: &EventQuery, kinds: &[RecordKind]) -> EventQuery {
    EventQuery {
        kinds: kinds.to_vec(),
        ..base.clone()
    }
}

// === The gRPC face ===

pub struct InvestigateService {
    investigator: Investigator,
    admission: Arc<Admission>,
}

impl InvestigateService {
    pub fn new(store: Arc<dyn Store>, admission: Arc<Admission>) -> Self {
        InvestigateService {
            investigator: Investigator::new(store),
            admission,
        }
    }

    /// Answers a "what is new since the baseline" question: the request's window, baseline
    /// start and limit (`parts`) checked, then `ask` run on a blocking thread while the
    /// caller's admission slot is held.
    async fn since_baseline<R: Clone, A: Send + 'static>(
        &self,
        request: Request<R>,
        parts: fn(R) -> (Option<pb::Window>, UnixNanos, u32),
        ask: fn(&Investigator, &Question, UnixNanos, usize) -> Result<A, StoreError>,
    ) -> Result<A, Status> {
        let scope = Principal::of(&request)?.read_scope()?;
        let (window, baseline_since, limit) = parts(request.get_ref().clone());
        let _slot = self.admit(&request, window.as_ref())?;
        let question = question_of(window, &scope)?;
        check_baseline(&question, baseline_since)?;
        let limit = limit_of(limit);
        let investigator = self.investigator.clone();
        blocking(move || ask(&investigator, &question, baseline_since, limit)).await
    }

    /// Admits one investigation of the request's identity (held until the answer is
    /// built) and checks the filter of its window.
    fn admit<T>(
        &self,
        request: &Request<T>,
        window: Option<&pb::Window>,
    ) -> Result<crate::aggregator::admission::Slot, Status> {
        let identity = identity_key(request);
        if let Some(filter) = window.and_then(|w| w.filter.as_ref()) {
            self.admission.check_filter(&identity, filter)?;
        }
        self.admission.admit(Class::Read, &identity)
    }
}

/// The question of a window, checked, within the caller's namespaces.
fn question_of(window: Option<pb::Window>, scope: &NamespaceScope) -> Result<Question, Status> {
    let window = window.unwrap_or_default();
    if window.until != 0 && window.since > window.until {
        return Err(Status::invalid_argument(format!(
            "window.since ({}) is after window.until ({})",
            window.since, window.until
        )));
    }
    let filter = window.filter.unwrap_or_default();
    let flows = FlowFilter {
        scopes: filter
            .scopes
            .iter()
            .map(|s| wire::scope_from_proto(*s, "window.filter.scopes"))
            .collect::<Result<_, _>>()
            .map_err(|e| Status::invalid_argument(e.to_string()))?,
        directions: filter
            .directions
            .iter()
            .map(|d| wire::direction_from_proto(*d, "window.filter.directions"))
            .collect::<Result<_, _>>()
            .map_err(|e| Status::invalid_argument(e.to_string()))?,
    };
    let query = EventQuery {
        kinds: Vec::new(),
        pods: filter.pods,
        namespaces: scope.restrict(filter.namespaces)?,
        since: window.since,
        until: window.until,
        limit: 0,
    };
    Ok(Question {
        query,
        flows,
        // A viewer's peers outside its namespaces stay bare addresses.
        peer_namespaces: scope.restrict(Vec::new())?,
    })
}

fn limit_of(limit: u32) -> usize {
    match limit as usize {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

fn store_status(e: StoreError) -> Status {
    crate::aggregator::service::store_read_failed(e, "investigation")
}

/// Runs `work` on a blocking thread (store scans are synchronous SQLite reads).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(store_status)
}

/// A baseline ends where the window starts, so both must be set and in order.
fn check_baseline(question: &Question, baseline_since: UnixNanos) -> Result<(), Status> {
    if question.query.since == 0 {
        return Err(Status::invalid_argument(
            "window.since is required: the baseline ends where the window starts",
        ));
    }
    if baseline_since >= question.query.since {
        return Err(Status::invalid_argument(format!(
            "baseline_since ({baseline_since}) must be before window.since ({})",
            question.query.since
        )));
    }
    Ok(())
}

fn order_of(order: i32) -> Result<EdgeOrder, Status> {
    match pb::EdgeOrder::try_from(order) {
        Ok(pb::EdgeOrder::Bytes) => Ok(EdgeOrder::Bytes),
        Ok(pb::EdgeOrder::Connections) => Ok(EdgeOrder::Connections),
        Ok(pb::EdgeOrder::Recent) => Ok(EdgeOrder::Recent),
        Err(_) => Err(Status::invalid_argument(format!("unknown order {order}"))),
    }
}

#[tonic::async_trait]
impl pb::investigate_server::Investigate for InvestigateService {
    async fn talkers(
        &self,
        request: Request<pb::TalkersRequest>,
    ) -> Result<Response<pb::TalkersReply>, Status> {
        let scope = Principal::of(&request)?.read_scope()?;
        let _slot = self.admit(&request, request.get_ref().window.as_ref())?;
        let req = request.into_inner();
        let question = question_of(req.window, &scope)?;
        let order = order_of(req.order)?;
        let limit = limit_of(req.limit);
        let investigator = self.investigator.clone();
        let answer =
            blocking(move || investigator.talkers(&question, order, limit, &mut |_| {})).await?;
        Ok(Response::new(wire::talkers_to_proto(&answer)))
    }

    async fn new_activity(
        &self,
        request: Request<pb::NewActivityRequest>,
    ) -> Result<Response<pb::NewActivityReply>, Status> {
        let answer = self
            .since_baseline(
                request,
                |r| (r.window, r.baseline_since, r.limit),
                Investigator::new_activity,
            )
            .await?;
        Ok(Response::new(wire::new_activity_to_proto(&answer)))
    }

    async fn api_activity(
        &self,
        request: Request<pb::ApiActivityRequest>,
    ) -> Result<Response<pb::ApiActivityReply>, Status> {
        let answer = self
            .since_baseline(
                request,
                |r| (r.window, r.baseline_since, r.limit),
                Investigator::api_activity,
            )
            .await?;
        Ok(Response::new(wire::api::api_activity_to_proto(&answer)))
    }

    async fn process_tree(
        &self,
        request: Request<pb::ProcessTreeRequest>,
    ) -> Result<Response<pb::ProcessTreeReply>, Status> {
        let scope = Principal::of(&request)?.read_scope()?;
        let _slot = self.admit(&request, None)?;
        let req = request.into_inner();
        if req.pod_name.is_empty() {
            return Err(Status::invalid_argument(
                "pod_name is required: pids are per pod",
            ));
        }
        let question = question_of(
            Some(pb::Window {
                filter: Some(pb::Filter {
                    pods: vec![req.pod_name.clone()],
                    namespaces: if req.pod_namespace.is_empty() {
                        Vec::new()
                    } else {
                        vec![req.pod_namespace.clone()]
                    },
                    ..pb::Filter::default()
                }),
                since: req.since,
                until: req.until,
            }),
            &scope,
        )?;
        let investigator = self.investigator.clone();
        let (pid, start_time) = (req.pid, req.start_time);
        let tree = blocking(move || investigator.process_tree(&question, pid, start_time))
            .await?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no process {} in pod {:?} in the store",
                    req.pid, req.pod_name
                ))
            })?;
        Ok(Response::new(wire::tree_to_proto(&tree)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::store::SqliteStore;
    use crate::model::{CollectorIdentity, FlowPhase};

    fn flow_event(at: u64, cookie: u64, port: u16, sent: u64) -> Event {
        Event {
            source: Arc::new(CollectorIdentity {
                collector_id: "c1".into(),
                pod_name: "web-0".into(),
                pod_namespace: "shop".into(),
                ..CollectorIdentity::default()
            }),
            received_at: at,
            record: Record::Flow(crate::model::FlowRecord {
                remote_port: Some(port),
                phase: FlowPhase::End,
                bytes_sent: Some(sent),
                first_seen: at,
                last_seen: at,
                ..crate::fixtures::flow(cookie)
            }),
        }
    }

    /// A store of nine baseline hours and one scope hour of flows, and the scope's question.
    fn flows_store() -> (tempfile::TempDir, Arc<dyn Store>, Question) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            SqliteStore::open(
                dir.path(),
                crate::aggregator::store::Retention {
                    max_age: Duration::from_secs(1 << 40),
                    max_bytes: u64::MAX,
                    rollups: crate::aggregator::store::ROLLUP_RETENTION,
                },
            )
            .expect("store"),
        );
        let hour = 3_600_000_000_000u64;
        let start = 10 * hour;
        let batches = vec![
            // Baseline: port 443 at 1 MiB an hour for 9 hours.
            (0..9u64)
                .map(|h| flow_event(hour * (h + 1), h + 1, 443, 1 << 20))
                .collect::<Vec<_>>(),
            // Scope: 443 at 8 MiB, 8080 new.
            vec![
                flow_event(start + 10, 100, 443, 8 << 20),
                flow_event(start + 20, 101, 8080, 10),
            ],
        ];
        for (seq, batch) in batches.into_iter().enumerate() {
            store
                .append("c1".into(), seq as u64, batch)
                .blocking_recv()
                .expect("reply")
                .expect("stored");
        }
        let store: Arc<dyn Store> = store;
        let question = Question {
            query: EventQuery {
                since: start,
                until: start + hour - 1,
                ..EventQuery::default()
            },
            ..Question::default()
        };
        (dir, store, question)
    }

    #[test]
    fn a_kept_baseline_gives_the_answer_a_fresh_scan_gives() {
        let (_dir, store, question) = flows_store();
        let kept = Investigator::new(store.clone());
        let first = kept.compare(&question, 0, 10, &mut |_| {}).expect("first");
        let again = kept.compare(&question, 0, 10, &mut |_| {}).expect("again");
        let fresh = Investigator::new(store)
            .compare(&question, 0, 10, &mut |_| {})
            .expect("fresh");
        assert_eq!(first, again);
        assert_eq!(again, fresh);
        assert_eq!(fresh.new.edges.len(), 1);
        assert_eq!(fresh.new.edges[0].port, 8080);
        assert_eq!(fresh.increased.len(), 1, "{:?}", fresh.increased);
        assert_eq!(fresh.increased[0].edge.port, 443);
        assert_eq!(kept.baselines.entries.lock().expect("lock").len(), 1);
    }

    #[test]
    fn a_question_in_progress_does_not_hold_back_another() {
        // A viewer's long question (a month of raw records) ran under the process-names
        // lock, so every other question, a console page or an API call, waited for it.
        let (_dir, store, question) = flows_store();
        let investigator = Investigator::new(store);
        let (done, finished) = std::sync::mpsc::channel();
        let mut other = None;
        investigator
            .compare(&question, 0, 10, &mut |_| {
                if other.is_none() {
                    let (inv, q, done) = (investigator.clone(), question.clone(), done.clone());
                    other = Some(std::thread::spawn(move || {
                        let talkers = inv.talkers(&q, EdgeOrder::Bytes, 10, &mut |_| {});
                        let _ = done.send(talkers.is_ok());
                    }));
                    // A deadline, not a measurement: the other question needs milliseconds.
                    let answered = finished.recv_timeout(Duration::from_secs(60));
                    assert_eq!(answered, Ok(true), "the other question waited");
                }
            })
            .expect("compare");
        other.expect("observed").join().expect("other question");
    }
}
