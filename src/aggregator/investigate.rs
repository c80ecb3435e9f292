//! The Investigate gRPC service: feeds stored events to `crate::investigate` and returns its
//! answers. Each question is a few sequential scans of the store on a blocking thread.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::aggregator::auth::{NamespaceScope, Principal};
use crate::aggregator::store::{EventQuery, Store, StoreError};
use crate::investigate::{
    self, EdgeOrder, FlowFilter, Period, PodDirectory, PodProcesses, ProcessNames, Sockets,
    TreeFlows,
};
use crate::model::{Event, Record, RecordKind};
use crate::proto::v1 as pb;
use crate::wire;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

pub struct InvestigateService {
    store: Arc<dyn Store>,
}

impl InvestigateService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        InvestigateService { store }
    }
}

/// The store query and flow filter of a window, checked, within the caller's namespaces.
fn window_parts(
    window: Option<pb::Window>,
    scope: &NamespaceScope,
) -> Result<(EventQuery, FlowFilter), Status> {
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
    Ok((query, flows))
}

fn limit_of(limit: u32) -> usize {
    match limit as usize {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

fn store_status(e: StoreError) -> Status {
    tracing::warn!(error = %e, "investigation failed reading the store");
    Status::internal(format!("reading the store: {e}"))
}

/// One store scan, its error as a gRPC status.
fn scan(
    store: &dyn Store,
    query: &EventQuery,
    mut visit: impl FnMut(Event) -> bool,
) -> Result<bool, Status> {
    store.scan(query, &mut visit).map_err(store_status)
}

/// Runs `work` on a blocking thread (store scans are synchronous SQLite reads).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
}

fn of_kinds(base: &EventQuery, kinds: &[RecordKind]) -> EventQuery {
    EventQuery {
        kinds: kinds.to_vec(),
        ..base.clone()
    }
}

/// Names of the processes of the window's pods, from every process record up to its end
/// (a long-lived process was recorded when it started, perhaps long before the window).
fn process_names(store: &dyn Store, base: &EventQuery) -> Result<ProcessNames, Status> {
    let mut names = ProcessNames::default();
    let query = EventQuery {
        since: 0,
        ..of_kinds(base, &[RecordKind::Process])
    };
    scan(store, &query, |e| {
        if let Record::Process(p) = &e.record {
            names.add(&e.source, p);
        }
        true
    })?;
    Ok(names)
}

/// Every collector that reported in the window (any pod the caller may see): their pod IPs
/// name east-west peers. A viewer's peers outside its namespaces stay bare addresses.
fn pod_directory(
    store: &dyn Store,
    base: &EventQuery,
    scope: &NamespaceScope,
) -> Result<PodDirectory, Status> {
    let mut pods = PodDirectory::default();
    let query = EventQuery {
        kinds: vec![RecordKind::Heartbeat],
        pods: Vec::new(),
        namespaces: scope.restrict(Vec::new())?,
        ..base.clone()
    };
    scan(store, &query, |e| {
        pods.note(&e.source);
        true
    })?;
    Ok(pods)
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
        let req = request.into_inner();
        let (base, filter) = window_parts(req.window, &scope)?;
        let order = order_of(req.order)?;
        let limit = limit_of(req.limit);
        let store = self.store.clone();
        let answer = blocking(move || {
            let names = process_names(store.as_ref(), &base)?;
            let mut pods = pod_directory(store.as_ref(), &base, &scope)?;
            let mut sockets = Sockets::new(filter);
            scan(&*store, &of_kinds(&base, &[RecordKind::Flow]), |e| {
                pods.note(&e.source);
                match &e.record {
                    Record::Flow(f) => sockets.add(&e.source, f),
                    _ => true,
                }
            })?;
            Ok(investigate::talkers(&sockets, &names, &pods, order, limit))
        })
        .await?;
        Ok(Response::new(wire::talkers_to_proto(&answer)))
    }

    async fn new_activity(
        &self,
        request: Request<pb::NewActivityRequest>,
    ) -> Result<Response<pb::NewActivityReply>, Status> {
        let scope = Principal::of(&request)?.read_scope()?;
        let req = request.into_inner();
        let (base, filter) = window_parts(req.window, &scope)?;
        if base.since == 0 {
            return Err(Status::invalid_argument(
                "window.since is required: the baseline ends where the window starts",
            ));
        }
        if req.baseline_since >= base.since {
            return Err(Status::invalid_argument(format!(
                "baseline_since ({}) must be before window.since ({})",
                req.baseline_since, base.since
            )));
        }
        let limit = limit_of(req.limit);
        let store = self.store.clone();
        let answer = blocking(move || {
            let names = process_names(store.as_ref(), &base)?;
            let mut pods = pod_directory(store.as_ref(), &base, &scope)?;
            let kinds = [RecordKind::Flow, RecordKind::Process, RecordKind::Listener];
            let mut fill = |period: &mut Period, query: EventQuery| {
                scan(&*store, &query, |e| {
                    pods.note(&e.source);
                    period.add(&e)
                })
            };
            let mut baseline = Period::new(filter.clone());
            fill(
                &mut baseline,
                EventQuery {
                    since: req.baseline_since,
                    until: base.since - 1,
                    ..of_kinds(&base, &kinds)
                },
            )?;
            let mut window = Period::new(filter);
            fill(&mut window, of_kinds(&base, &kinds))?;
            Ok(investigate::new_activity(
                &baseline, &window, &names, &pods, limit,
            ))
        })
        .await?;
        Ok(Response::new(wire::new_activity_to_proto(&answer)))
    }

    async fn process_tree(
        &self,
        request: Request<pb::ProcessTreeRequest>,
    ) -> Result<Response<pb::ProcessTreeReply>, Status> {
        let scope = Principal::of(&request)?.read_scope()?;
        let req = request.into_inner();
        if req.pod_name.is_empty() {
            return Err(Status::invalid_argument(
                "pod_name is required: pids are per pod",
            ));
        }
        let (base, _) = window_parts(
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
        let store = self.store.clone();
        let tree = blocking(move || {
            let mut processes = PodProcesses::default();
            scan(
                &*store,
                &EventQuery {
                    since: 0,
                    ..of_kinds(&base, &[RecordKind::Process])
                },
                |e| {
                    if let Record::Process(p) = &e.record {
                        processes.add(p);
                    }
                    true
                },
            )?;
            let tree = processes.tree(req.pid, req.start_time).ok_or_else(|| {
                Status::not_found(format!(
                    "no process {} in pod {:?} in the store",
                    req.pid, req.pod_name
                ))
            })?;
            let mut flows = TreeFlows::new(tree);
            scan(&*store, &of_kinds(&base, &[RecordKind::Flow]), |e| {
                if let Record::Flow(f) = &e.record {
                    flows.add(f);
                }
                true
            })?;
            Ok(flows.finish())
        })
        .await?;
        Ok(Response::new(wire::tree_to_proto(&tree)))
    }
}
