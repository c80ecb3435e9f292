//! The gRPC services: Ingest (batches in, acks out), Subscribe (live events), Query
//! (stored events), and the bearer-token check in front of all three. What each request
//! may cost is [`admission`](crate::aggregator::admission)'s to decide.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::aggregator::admission::{identity_key, Admission, Class, Held};
use crate::aggregator::auth::{Principal, WriterIdentity};
use crate::aggregator::detect::Detector;
use crate::aggregator::hub::{Hub, LiveFilter};
use crate::aggregator::liveness::{Liveness, StreamEnd};
use crate::aggregator::peers::Peers;
use crate::aggregator::store::{Appended, EventQuery, Store, StoreError};
use crate::codec::RawBatch;
use crate::model::{now_ns, CollectorIdentity, Event, RecordKind};
use crate::proto::v1 as pb;
use crate::telemetry::aggregator::{
    BatchDeduplicated, BatchRejected, IngestDenied, IngestStreamFailed, RecordsReceived,
    RecordsStored, StoreReadFailed,
};
use crate::telemetry::InternalEvent;
use crate::wire::{self, direct, Limits};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

// === Ingest ===

pub struct IngestService {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    detector: Option<Detector>,
    limits: Limits,
    max_batch_records: usize,
    liveness: Option<Arc<Liveness>>,
    admission: Arc<Admission>,
}

impl IngestService {
    pub fn new(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        detector: Option<Detector>,
        limits: Limits,
        max_batch_records: usize,
        admission: Arc<Admission>,
    ) -> Self {
        IngestService {
            store,
            hub,
            detector,
            limits,
            max_batch_records,
            liveness: None,
            admission,
        }
    }

    /// Streams and heartbeats are watched for silenced collectors.
    pub fn with_liveness(mut self, liveness: Arc<Liveness>) -> Self {
        self.liveness = Some(liveness);
        self
    }
}

/// Why a batch is not stored.
enum BatchError {
    /// Malformed: acknowledged as rejected, the stream goes on.
    Invalid(String),
    /// Claims what the writer may not (another identity, alerts): the stream ends.
    Denied(String),
}

impl From<String> for BatchError {
    fn from(s: String) -> Self {
        BatchError::Invalid(s)
    }
}

/// Validates a batch into events, under the verified `writer` (none for the loopback
/// principal); the error says which field is wrong or what was claimed.
fn decode_batch(
    mut batch: RawBatch,
    limits: &Limits,
    max_records: usize,
    writer: Option<(&WriterIdentity, &str)>,
) -> Result<(Arc<CollectorIdentity>, u64, Vec<Event>), BatchError> {
    if batch.len() > max_records {
        return Err(BatchError::Invalid(format!(
            "batch of {} records exceeds the limit of {max_records}",
            batch.len()
        )));
    }
    let claimed = wire::identity_from_proto(
        batch
            .identity
            .take()
            .ok_or_else(|| "batch.identity: missing".to_owned())?,
        limits,
    )
    .map_err(|e| e.to_string())?;
    let identity = Arc::new(match writer {
        Some((writer, key)) => writer.admit(claimed, key).map_err(BatchError::Denied)?,
        None => claimed,
    });
    let received_at = now_ns();
    let mut events = Vec::with_capacity(batch.len());
    for (i, record) in batch.records().enumerate() {
        let record =
            direct::decode_record(record, limits).map_err(|e| format!("records[{i}].{e}"))?;
        if record.kind() == RecordKind::Audit {
            // Audit events come from the API server through the audit adapters, each bound to
            // its cluster's credential; a collector (perhaps in a compromised pod) that sent
            // one would forge who ran `kubectl exec`.
            return Err(BatchError::Invalid(format!(
                "records[{i}]: a collector may not send audit events"
            )));
        }
        // Alerts are the rules' to raise: a writer's would be believed by every reader.
        if matches!(record, crate::model::Record::Alert(_)) {
            return Err(BatchError::Denied(format!(
                "records[{i}]: writers may not send alerts"
            )));
        }
        events.push(Event {
            source: identity.clone(),
            received_at,
            record,
        });
    }
    Ok((identity, batch.seq, events))
}

/// `Ingest.Stream`, routed by hand instead of through the generated server so that
/// batches arrive as [`RawBatch`] (records decoded one at a time into events) rather than
/// as generated structs; the path, the codec's limits and the status codes are the
/// generated server's.
#[derive(Clone)]
pub struct IngestRoute {
    service: Arc<IngestService>,
    max_decoding_message_size: usize,
}

impl IngestRoute {
    pub fn new(service: IngestService, max_decoding_message_size: usize) -> Self {
        IngestRoute {
            service: Arc::new(service),
            max_decoding_message_size,
        }
    }
}

impl tonic::server::NamedService for IngestRoute {
    const NAME: &'static str = pb::ingest_server::SERVICE_NAME;
}

impl<B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for IngestRoute
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::codegen::http::Request<B>) -> Self::Future {
        if request.uri().path() != crate::codec::ingest_stream_path().path() {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        let (service, limit) = (self.service.clone(), self.max_decoding_message_size);
        let codec = crate::codec::RawBatchCodec {
            max_records: service.max_batch_records,
        };
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(codec).max_decoding_message_size(limit);
            Ok(grpc.streaming(StreamMethod(service), request).await)
        })
    }
}

struct StreamMethod(Arc<IngestService>);

impl tonic::server::StreamingService<RawBatch> for StreamMethod {
    type Response = pb::Ack;
    type ResponseStream = BoxStream<pb::Ack>;
    type Future = tonic::codegen::BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<RawBatch>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.stream(request) })
    }
}

impl IngestService {
    fn stream(
        &self,
        request: Request<Streaming<RawBatch>>,
    ) -> Result<Response<BoxStream<pb::Ack>>, Status> {
        let peer = request.remote_addr();
        let principal = Principal::of(&request)?;
        let writer = principal.require_writer()?.cloned();
        let key = principal.key().to_owned();
        let expires_at = principal.expires_at();
        // Held by the reader for as long as the stream is open.
        let slot = self
            .admission
            .admit(Class::IngestStream, &identity_key(&request))?;
        let mut batches = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let (store, hub, detector, limits, max_records, liveness, admission) = (
            self.store.clone(),
            self.hub.clone(),
            self.detector.clone(),
            self.limits,
            self.max_batch_records,
            self.liveness.clone(),
            self.admission.clone(),
        );
        // Two tasks per stream: the reader decodes batch N+1 while the store writes batch N;
        // the acker awaits the store in order and acknowledges. At most PIPELINE batches of a
        // stream are between the two.
        const PIPELINE: usize = 8;
        let (pending_tx, mut pending_rx) = tokio::sync::mpsc::channel::<Pending>(PIPELINE);
        tokio::spawn(async move {
            let _slot = slot;
            // A stream lives no longer than its credential: the collector reconnects with
            // the rotated one.
            let expiry = expires_at.map(|at| {
                let left = at.saturating_sub(now_ns());
                tokio::time::Instant::now() + std::time::Duration::from_nanos(left)
            });
            // The collectors this stream carried, for the liveness watch.
            let mut carried: Vec<String> = Vec::new();
            let end = loop {
                let next = tokio::select! {
                    next = batches.message() => next,
                    _ = sleep_until_some(expiry) => {
                        let _ = pending_tx.send(Pending::Failed(Status::unauthenticated(
                            "the credential expired: reconnect with the rotated one",
                        ))).await;
                        break StreamEnd::ByServer;
                    }
                };
                let batch = match next {
                    Ok(Some(b)) => b,
                    Ok(None) => break StreamEnd::Closed,
                    Err(status) => {
                        // E.g. a message over the size limit: tell the client why.
                        IngestStreamFailed {
                            peer,
                            status: &status,
                        }
                        .emit();
                        let end = if status.code() == tonic::Code::OutOfRange
                            || status.code() == tonic::Code::ResourceExhausted
                        {
                            StreamEnd::ByServer
                        } else {
                            StreamEnd::Broken
                        };
                        let _ = pending_tx.send(Pending::Failed(status)).await;
                        break end;
                    }
                };
                let seq = batch.seq;
                // Room for the decoded records before decoding them (a batch over the
                // record limit is refused undecoded, and takes none).
                let permit = match batch.len() {
                    n if n <= max_records => Some(admission.reserve_records(n).await),
                    _ => None,
                };
                let writer = writer.as_ref().map(|w| (w, key.as_str()));
                let pending = match decode_batch(batch, &limits, max_records, writer) {
                    Err(BatchError::Denied(why)) => {
                        IngestDenied {
                            peer,
                            principal: &key,
                            seq,
                            why: &why,
                        }
                        .emit();
                        let _ = pending_tx
                            .send(Pending::Failed(Status::permission_denied(why)))
                            .await;
                        break StreamEnd::ByServer;
                    }
                    Err(BatchError::Invalid(error)) => {
                        BatchRejected {
                            peer,
                            seq,
                            error: &error,
                        }
                        .emit();
                        Pending::Rejected(pb::Ack {
                            seq,
                            rejected: true,
                            error,
                        })
                    }
                    Ok((identity, seq, events)) => {
                        RecordsReceived {
                            records: events.len(),
                        }
                        .emit();
                        if let Some(liveness) = &liveness {
                            let first = !carried.contains(&identity.collector_id);
                            if first {
                                carried.push(identity.collector_id.clone());
                            }
                            liveness.observe(&identity, seq, &events, first);
                        }
                        let appended = store.append(identity.collector_id.clone(), seq, events);
                        Pending::Storing {
                            seq,
                            // The records' room in flight is given back once the store has
                            // them (not when the ack is sent: a client that does not read
                            // its acks must not hold it).
                            outcome: Box::pin(async move {
                                let outcome = appended.await;
                                drop(permit);
                                outcome
                            }),
                        }
                    }
                };
                if pending_tx.send(pending).await.is_err() {
                    // The acker stopped: the client is gone, or the store failed (then the
                    // collector reconnects, which the liveness watch forgives).
                    break StreamEnd::Broken;
                }
            };
            if let Some(liveness) = &liveness {
                for collector_id in &carried {
                    liveness.stream_ended(collector_id, end);
                }
            }
        });
        tokio::spawn(async move {
            while let Some(pending) = pending_rx.recv().await {
                let ack = match pending {
                    Pending::Rejected(ack) => ack,
                    Pending::Failed(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                    Pending::Storing { seq, outcome } => match outcome.await {
                        Ok(Ok(Appended::Stored(stored))) => {
                            RecordsStored {
                                records: stored.len(),
                            }
                            .emit();
                            hub.publish(&stored);
                            // Only stored (never duplicate) records are evaluated, so a
                            // resent batch cannot raise its alerts twice.
                            if let Some(detector) = &detector {
                                detector.submit(stored);
                            }
                            pb::Ack {
                                seq,
                                rejected: false,
                                error: String::new(),
                            }
                        }
                        Ok(Ok(Appended::Duplicate)) => {
                            BatchDeduplicated.emit();
                            pb::Ack {
                                seq,
                                rejected: false,
                                error: String::new(),
                            }
                        }
                        Ok(Err(error)) => {
                            tracing::error!(%error, "store failed; the collector will resend");
                            let _ = tx
                                .send(Err(Status::unavailable(format!("store: {error}"))))
                                .await;
                            break;
                        }
                        Err(_) => {
                            let _ = tx
                                .send(Err(Status::unavailable("store writer stopped")))
                                .await;
                            break;
                        }
                    },
                };
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A batch between the reader and the acker of one ingest stream.
enum Pending {
    Rejected(pb::Ack),
    Failed(Status),
    Storing {
        seq: u64,
        outcome: Pin<Box<dyn Future<Output = StoreOutcome> + Send>>,
    },
}

type StoreOutcome = Result<Result<Appended, StoreError>, tokio::sync::oneshot::error::RecvError>;

// === Subscribe ===

pub struct SubscribeService {
    hub: Arc<Hub>,
    admission: Arc<Admission>,
    /// Other replicas on the same store, whose events every subscription merges.
    peers: Option<Arc<Peers>>,
    capacity: usize,
}

impl SubscribeService {
    pub fn new(hub: Arc<Hub>, admission: Arc<Admission>) -> Self {
        SubscribeService {
            hub,
            admission,
            peers: None,
            capacity: 1,
        }
    }

    /// Subscriptions merge the events of these peers (through a queue of `capacity`).
    pub fn with_peers(mut self, peers: Option<Arc<Peers>>, capacity: usize) -> Self {
        self.peers = peers;
        self.capacity = capacity;
        self
    }
}

/// The hub filter of a request's filter, under `namespaces` (already restricted to what the
/// caller may see).
pub(crate) fn live_filter(filter: &pb::Filter, namespaces: Vec<String>) -> LiveFilter {
    LiveFilter::new(
        kinds_of(filter),
        filter.pods.clone(),
        namespaces,
        filter
            .scopes
            .iter()
            .filter_map(|s| pb::Scope::try_from(*s).ok())
            .collect(),
        filter
            .directions
            .iter()
            .filter_map(|d| pb::Direction::try_from(*d).ok())
            .collect(),
    )
}

fn kinds_of(filter: &pb::Filter) -> Vec<RecordKind> {
    filter
        .kinds
        .iter()
        .filter_map(|k| match pb::RecordKind::try_from(*k) {
            Ok(pb::RecordKind::Flow) => Some(RecordKind::Flow),
            Ok(pb::RecordKind::Process) => Some(RecordKind::Process),
            Ok(pb::RecordKind::Listener) => Some(RecordKind::Listener),
            Ok(pb::RecordKind::Heartbeat) => Some(RecordKind::Heartbeat),
            Ok(pb::RecordKind::Alert) => Some(RecordKind::Alert),
            Ok(pb::RecordKind::Audit) => Some(RecordKind::Audit),
            _ => None,
        })
        .collect()
}

#[tonic::async_trait]
impl pb::subscribe_server::Subscribe for SubscribeService {
    type SubscribeStream = BoxStream<pb::SubscribeItem>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let principal = Principal::of(&request)?;
        let scope = principal.read_scope()?;
        let identity = identity_key(&request);
        let filter = request.into_inner().filter.unwrap_or_default();
        self.admission.check_filter(&identity, &filter)?;
        let slot = self.admission.admit(Class::Subscriber, &identity)?;
        let namespaces = scope.restrict(filter.namespaces.clone())?;
        let mut rx = self.hub.subscribe(live_filter(&filter, namespaces.clone()));
        if let Some(peers) = &self.peers {
            // Peers apply the same filter, under the caller's scope (not what it asked).
            let filter = pb::Filter {
                namespaces,
                ..filter
            };
            rx = peers.merge(rx, filter, self.capacity).await;
        }
        let Some(expires_at) = principal.expires_at() else {
            return Ok(Response::new(Box::pin(Held::new(
                ReceiverStream::new(rx).map(Ok),
                slot,
            ))));
        };
        // A subscription lives no longer than its credential.
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_nanos(expires_at.saturating_sub(now_ns()));
        let (tx, out) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let _slot = slot;
            loop {
                tokio::select! {
                    item = rx.recv() => match item {
                        Some(item) => if tx.send(Ok(item)).await.is_err() { return },
                        None => return,
                    },
                    _ = tokio::time::sleep_until(deadline) => {
                        let _ = tx.send(Err(Status::unauthenticated(
                            "the credential expired: subscribe again with the rotated one",
                        ))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}

// === Query ===

pub struct QueryService {
    store: Arc<dyn Store>,
    admission: Arc<Admission>,
}

impl QueryService {
    pub fn new(store: Arc<dyn Store>, admission: Arc<Admission>) -> Self {
        QueryService { store, admission }
    }
}

/// Events of a query's answer buffered between the store and the client.
const QUERY_BUFFER: usize = 1024;

#[tonic::async_trait]
impl pb::query_server::Query for QueryService {
    type RecordsStream = BoxStream<pb::Event>;

    /// Streams the answer as the store reads it: memory holds [`QUERY_BUFFER`] events
    /// whatever the limit, and a client that stops reading ends its query at the deadline.
    async fn records(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<Self::RecordsStream>, Status> {
        let scope = Principal::of(&request)?.read_scope()?;
        let identity = identity_key(&request);
        let req = request.into_inner();
        let filter = req.filter.unwrap_or_default();
        self.admission.check_filter(&identity, &filter)?;
        let limit = self.admission.query_limit(&identity, req.limit)?;
        let slot = self.admission.admit(Class::Read, &identity)?;
        let query = EventQuery {
            kinds: kinds_of(&filter),
            pods: filter.pods,
            namespaces: scope.restrict(filter.namespaces)?,
            since: req.since,
            until: req.until,
            limit,
        };
        let (store, admission) = (self.store.clone(), self.admission.clone());
        let (events_tx, events_rx) = tokio::sync::mpsc::channel(QUERY_BUFFER);
        let (end_tx, end_rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Handle::current();
        let deadline = tokio::time::Instant::now() + admission.args().query_timeout;
        tokio::task::spawn_blocking(move || {
            let mut sent = 0usize;
            let mut timed_out = false;
            let scanned = store.scan(&query, &mut |event| {
                let item = wire::event_to_proto(&event);
                let delivered = match events_tx.try_send(item) {
                    Ok(()) => true,
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
                    // The client is slower than the store: wait for it, until the deadline.
                    Err(tokio::sync::mpsc::error::TrySendError::Full(item)) => {
                        match runtime
                            .block_on(tokio::time::timeout_at(deadline, events_tx.send(item)))
                        {
                            Ok(sent) => sent.is_ok(),
                            Err(_) => {
                                timed_out = true;
                                false
                            }
                        }
                    }
                };
                sent += usize::from(delivered);
                timed_out |= delivered && tokio::time::Instant::now() >= deadline;
                delivered && sent < limit && !timed_out
            });
            let end = match scanned {
                Err(error) => Some(store_read_failed(error, "query")),
                Ok(_) if timed_out => Some(admission.query_timed_out(slot.identity(), sent)),
                Ok(_) => None,
            };
            drop(slot);
            if let Some(status) = end {
                let _ = end_tx.send(status);
            }
        });
        Ok(Response::new(Box::pin(QueryAnswer {
            events: events_rx,
            end: Some(end_rx),
        })))
    }
}

/// A query's answer: its events as the store reads them, then the error that ended it, if
/// one did (delivered after the events already read, whether or not the client kept up).
struct QueryAnswer {
    events: tokio::sync::mpsc::Receiver<pb::Event>,
    end: Option<tokio::sync::oneshot::Receiver<Status>>,
}

impl Stream for QueryAnswer {
    type Item = Result<pb::Event, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        match self.events.poll_recv(cx) {
            Poll::Ready(Some(event)) => return Poll::Ready(Some(Ok(event))),
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {}
        }
        let Some(end) = self.end.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(end).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(status) => {
                self.end = None;
                Poll::Ready(status.ok().map(Err))
            }
        }
    }
}

/// A failed read of the store as the client sees it: logged with the range the error names,
/// counted, and `DATA_LOSS` when the stored data is damaged (not a bare INTERNAL).
pub(crate) fn store_read_failed(error: StoreError, what: &str) -> Status {
    StoreReadFailed {
        error: &error,
        what,
    }
    .emit();
    if error.is_corruption() {
        Status::data_loss(format!("{what}: the store is damaged: {error}"))
    } else {
        Status::internal(format!("{what}: reading the store: {error}"))
    }
}
