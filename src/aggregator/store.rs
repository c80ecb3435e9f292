//! Storage behind the aggregator: the [`Store`] contract that ingest, query, investigation,
//! the console, retention and deduplication go through, and its backends, chosen by
//! `--store`: [`SqliteStore`] (`sqlite` or `sqlite:PATH`, the embedded default),
//! [`PgStore`] (`postgres://…`, for a fleet and several replicas) and [`NullStore`]
//! (`none`). Events are kept as segments: the records of one batch of one kind from one
//! source, encoded together as a `procflow.v1.Batch`, beside the indexed columns.
//! Deduplication on (verified collector id, batch seq) is a table written in the same
//! transaction as the events, so a batch is stored exactly once however often it comes.

pub mod cli;
mod postgres;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use thiserror::Error;
use tokio::sync::oneshot;

use crate::codec::{RawBatch, BATCH_RECORDS_FIELD};
use crate::model::{CollectorIdentity, Event, Record, RecordKind};
use crate::proto::v1 as pb;
use crate::wire::{self, direct};

pub use postgres::{PgOptions, PgStore};
pub use sqlite::SqliteStore;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// A PostgreSQL statement failed; `what` says which step, `detail` what the server
    /// said (the driver's own message is only "db error").
    #[error("postgres {what}: {detail}")]
    Postgres {
        what: &'static str,
        detail: String,
        source: tokio_postgres::Error,
    },
    /// The database cannot be reached (down, starting, no connection free in time).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The configuration is wrong (bad `--store`, unreadable password file, a schema newer
    /// than this binary): retrying does not help.
    #[error("store configuration: {0}")]
    Config(String),
    #[error("the store's writer has stopped")]
    WriterGone,
    #[error("stored event {id} does not decode: {reason}")]
    Corrupt { id: i64, reason: String },
    /// Reading a range failed part-way (a damaged page, an I/O error, a lost connection):
    /// says which range and where, so an operator can tell what is lost.
    #[error("{range}: {source}")]
    Read {
        range: Box<ReadRange>,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Which read of the store failed, and where in it.
#[derive(Debug)]
pub struct ReadRange {
    /// The database: a file path, or a PostgreSQL URL (never with a password).
    pub store: String,
    pub since: u64,
    pub until: u64,
    /// The last segment read whole (id, arrival time), if any.
    pub after: Option<(i64, i64)>,
}

impl std::fmt::Display for ReadRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "database {}: reading events received in [{}, {}] ns failed ",
            self.store, self.since, self.until
        )?;
        match self.after {
            None => write!(f, "before its first segment"),
            Some((id, at)) => write!(f, "after segment {id} (received at {at} ns)"),
        }
    }
}

impl StoreError {
    /// Whether the stored data itself is damaged (rather than the store being busy or gone).
    pub fn is_corruption(&self) -> bool {
        let sqlite = match self {
            StoreError::Corrupt { .. } => return true,
            StoreError::Sqlite { source, .. } => source,
            StoreError::Read { source, .. } => match source.downcast_ref::<rusqlite::Error>() {
                Some(source) => source,
                None => return false,
            },
            _ => return false,
        };
        matches!(
            sqlite.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        )
    }
}

/// What happened to an appended batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// Stored; the events come back so the caller can publish them without a copy.
    Stored(Vec<Event>),
    Duplicate,
}

/// What an appended batch of audit events came to.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditAppended {
    /// The events stored now, in order (the caller publishes and evaluates these).
    pub stored: Vec<Event>,
    /// Events stored before (a redelivery), left out.
    pub duplicates: usize,
}

/// A filter over stored events; empty lists match everything.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub kinds: Vec<RecordKind>,
    pub pods: Vec<String>,
    pub namespaces: Vec<String>,
    pub since: u64,
    pub until: u64,
    pub limit: usize,
}

/// The storage contract of the aggregator.
pub trait Store: Send + Sync {
    /// Stores a batch's events unless (collector_id, seq) was stored before.
    fn append(
        &self,
        collector_id: String,
        seq: u64,
        events: Vec<Event>,
    ) -> oneshot::Receiver<Result<Appended, StoreError>>;
    /// Stores the audit events (`Record::Audit`) not stored before. Deduplication keys on
    /// (cluster, audit ID, stage, request-received time): the audit ID alone may come from
    /// the client's `Audit-ID` header, so a client reusing one cannot make its request pass
    /// for a redelivery of another.
    fn append_audit(
        &self,
        events: Vec<Event>,
    ) -> oneshot::Receiver<Result<AuditAppended, StoreError>>;
    /// Stored events matching `query`, oldest first, at most `query.limit` (0: 100,000).
    fn query(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError> {
        let limit = if query.limit == 0 {
            100_000
        } else {
            query.limit
        };
        let mut out = Vec::new();
        self.scan(query, &mut |event| {
            out.push(event);
            out.len() < limit
        })?;
        Ok(out)
    }
    /// Visits stored events matching `query` (its `limit` ignored), oldest first (in the
    /// order they were stored), until `visit` returns false; returns whether every
    /// matching event was visited. Blocking: call it from a blocking thread.
    fn scan(
        &self,
        query: &EventQuery,
        visit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<bool, StoreError>;
    /// The identities that sent events matching `query` (its kinds, pods, namespaces and
    /// window), one per collector, in the order they first appear: who reported in a
    /// window, without reading every record (a pod's heartbeats are thousands a day).
    /// Blocking.
    fn sources(&self, query: &EventQuery) -> Result<Vec<Arc<CollectorIdentity>>, StoreError> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        self.scan(query, &mut |e| {
            if seen.insert(e.source.collector_id.clone()) {
                out.push(e.source.clone());
            }
            true
        })?;
        Ok(out)
    }
    /// Whether a batch of `collector_id` with a sequence number above `seq` is stored (the
    /// silenced-collector watch asks before it alerts: batches past the last one a replica
    /// read were stored by another); a store one replica owns answers false — the collector
    /// did not come back here, so it came back nowhere. Blocking.
    fn stored_after(&self, collector_id: &str, seq: u64) -> Result<bool, StoreError> {
        let _ = (collector_id, seq);
        Ok(false)
    }
    /// Rule state several replicas share (alert groups, learned values), for a store
    /// several replicas write to; `None` (the default) keeps it in the replica.
    fn shared_rule_state(&self) -> Option<Box<dyn crate::rules::shared::SharedState>> {
        None
    }
    /// Applies retention (and, where the backend has them, makes the coming days'
    /// partitions) now, as if the time were `now` (ns). The backends also do it on their
    /// own every minute. Blocking.
    fn maintain(&self, now: u64) -> Result<(), StoreError> {
        let _ = now;
        Ok(())
    }
    /// Raw records received before this time (ns) may be gone at `now`: questions reaching
    /// further back read rollups. 0: the store keeps no rollups.
    fn raw_horizon(&self, now: u64) -> u64 {
        let _ = now;
        0
    }
    /// The backend's hourly rollups, if it keeps them.
    fn rollups(&self) -> Option<&dyn RollupStore> {
        None
    }
}

/// Where a backend keeps rollups (`aggregator::rollups` builds and reads them): one row per
/// pod and hour, and one per pod and UTC day folded from a day's hours once it has closed.
pub trait RollupStore: Send + Sync {
    /// The last hour rolled up (its start, ns) and what it carries to the next, if any.
    /// Blocking.
    fn rollup_progress(&self) -> Result<Option<RollupProgress>, StoreError>;
    /// Stores one hour's rollups (and the day it closes) unless that hour was rolled up
    /// before (by this replica or another): returns whether they were stored. Carries are
    /// kept while their hour's raw records are (a window's ends read raw records beside
    /// them). Blocking.
    fn put_rollup(&self, hour: RollupHour) -> Result<bool, StoreError>;
    /// What the hour starting at `hour` carried to the next (its open sockets), if that
    /// hour was built and its carry is still kept. Blocking.
    fn rollup_carry(&self, hour: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Visits the rows of `grain` of periods starting in `[q.since, q.until]` of the pods
    /// and namespaces asked, in time order, until `visit` returns false. Blocking.
    fn scan_rollups(
        &self,
        grain: Grain,
        q: &EventQuery,
        visit: &mut dyn FnMut(RollupSegment) -> bool,
    ) -> Result<bool, StoreError>;
    /// The periods of `grain` built that start in `[since, until]`, each with its encoded
    /// pod addresses, in time order. Blocking.
    fn rollup_pods(
        &self,
        grain: Grain,
        since: u64,
        until: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
}

/// The first hour whose carry is kept once `hour` is stored: the hour of the oldest raw
/// record kept, or `hour` itself.
fn carries_from(store: &dyn Store, hour: u64) -> u64 {
    let horizon = store.raw_horizon(crate::model::now_ns());
    hour.min(crate::investigate::rollup::hour_of(horizon))
}

/// The two grains of rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Hour,
    Day,
}

impl Grain {
    /// The table of its rows and the table of its periods built.
    pub fn tables(self) -> (&'static str, &'static str) {
        match self {
            Grain::Hour => ("rollups", "rollup_hours"),
            Grain::Day => ("rollup_days", "rollup_days_built"),
        }
    }
}

/// One pod's hour or day of rollups, encoded (`aggregator::rollups` owns the encoding);
/// `hour` is the period's start.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupSegment {
    pub hour: u64,
    pub namespace: String,
    pub pod: String,
    pub body: Vec<u8>,
}

/// One hour's rollups: its pod-hours, the pods seen (with addresses) and the sockets it
/// carries to the next hour, encoded; with the day's pod-days when it is a day's last hour.
#[derive(Debug, Clone, Default)]
pub struct RollupHour {
    pub hour: u64,
    pub segments: Vec<RollupSegment>,
    pub pods: Vec<u8>,
    pub carry: Vec<u8>,
    pub day: Option<RollupDay>,
}

/// One day's pod-days and the pods seen in it.
#[derive(Debug, Clone, Default)]
pub struct RollupDay {
    pub day: u64,
    pub segments: Vec<RollupSegment>,
    pub pods: Vec<u8>,
}

/// Where rollups stand: the last hour built and its carry.
#[derive(Debug, Clone)]
pub struct RollupProgress {
    pub hour: u64,
    pub carry: Vec<u8>,
}

/// Retention: events older than `max_age` are deleted; then the oldest until under
/// `max_bytes`. Hourly rollups are kept `rollups` long.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age: Duration,
    pub max_bytes: u64,
    pub rollups: Duration,
}

/// How long rollups are kept unless configured: 13 months.
pub const ROLLUP_RETENTION: Duration = Duration::from_secs(396 * 86_400);

/// Which store `--store` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `sqlite` (the database in --data-dir) or `sqlite:PATH` (that database file).
    Sqlite(Option<PathBuf>),
    /// `postgres://user@host:port/db` (the password never in the URL).
    Postgres(String),
    /// `none`: nothing kept.
    None,
}

impl std::str::FromStr for StoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "sqlite" {
            return Ok(StoreSpec::Sqlite(None));
        }
        if s == "none" {
            return Ok(StoreSpec::None);
        }
        if let Some(path) = s.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err("sqlite: needs a database file path".into());
            }
            return Ok(StoreSpec::Sqlite(Some(PathBuf::from(path))));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            postgres::check_url(s)?;
            return Ok(StoreSpec::Postgres(s.to_owned()));
        }
        Err(format!(
            "{s:?}: expected sqlite, sqlite:PATH, postgres://USER@HOST[:PORT]/DB or none"
        ))
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Sqlite(None) => write!(f, "sqlite"),
            StoreSpec::Sqlite(Some(path)) => write!(f, "sqlite:{}", path.display()),
            StoreSpec::Postgres(url) => write!(f, "{url}"),
            StoreSpec::None => write!(f, "none"),
        }
    }
}

/// Everything needed to open the store `--store` names.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub spec: StoreSpec,
    /// Where `sqlite` (without a path) keeps its database.
    pub data_dir: PathBuf,
    pub retention: Retention,
    pub postgres: PgOptions,
}

/// Opens the store (running its migrations). Blocking: for PostgreSQL it waits for the
/// server up to `postgres.connect_wait`.
pub fn open(options: &OpenOptions) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match &options.spec {
        StoreSpec::Sqlite(path) => {
            let path = path
                .clone()
                .unwrap_or_else(|| options.data_dir.join("procflow.db"));
            let sqlite = SqliteStore::open_file(&path, options.retention)?;
            tracing::info!(path = %path.display(), "embedded store ready");
            Arc::new(sqlite)
        }
        StoreSpec::Postgres(url) => {
            let pg = PgStore::open(url, &options.postgres, options.retention)?;
            tracing::info!(%url, "postgres store ready");
            Arc::new(pg)
        }
        StoreSpec::None => {
            tracing::warn!("--store none: events are not kept");
            Arc::new(NullStore::default())
        }
    })
}

/// Runs the store's schema migrations alone (`procflow store migrate`); returns the
/// schema version before and after.
pub fn migrate(options: &OpenOptions) -> Result<(u32, u32), StoreError> {
    match &options.spec {
        StoreSpec::Sqlite(path) => {
            let path = path
                .clone()
                .unwrap_or_else(|| options.data_dir.join("procflow.db"));
            sqlite::migrate_file(&path)
        }
        StoreSpec::Postgres(url) => postgres::migrate_only(url, &options.postgres),
        StoreSpec::None => Ok((0, 0)),
    }
}

// === Segments, shared by the backends ===

/// What a transaction did with one request.
#[derive(Debug, Clone)]
enum Outcome {
    Stored,
    Duplicate,
    /// Per audit event: stored now (true) or stored before.
    Audit(Vec<bool>),
}

/// A request to a backend's writer.
enum Request {
    Append {
        collector_id: String,
        seq: u64,
        events: Vec<Event>,
        reply: oneshot::Sender<Result<Appended, StoreError>>,
    },
    Audit {
        events: Vec<Event>,
        reply: oneshot::Sender<Result<AuditAppended, StoreError>>,
    },
}

impl Request {
    /// Answers the request with what its transaction did (`Err`: nothing was stored).
    fn answer(self, outcome: Result<Outcome, StoreError>) {
        match self {
            Request::Append { reply, events, .. } => {
                let _ = reply.send(match outcome {
                    Ok(Outcome::Stored) => Ok(Appended::Stored(events)),
                    Ok(_) => Ok(Appended::Duplicate),
                    Err(e) => Err(e),
                });
            }
            Request::Audit { reply, events } => {
                let _ = reply.send(match outcome {
                    Ok(Outcome::Audit(fresh)) => {
                        let duplicates = fresh.iter().filter(|f| !**f).count();
                        let stored = events
                            .into_iter()
                            .zip(fresh)
                            .filter_map(|(e, f)| f.then_some(e))
                            .collect();
                        Ok(AuditAppended { stored, duplicates })
                    }
                    Ok(_) => Ok(AuditAppended {
                        stored: Vec::new(),
                        duplicates: events.len(),
                    }),
                    Err(e) => Err(e),
                });
            }
        }
    }

    /// Fails the request at once: the writer is gone.
    fn gone(self) {
        self.answer(Err(StoreError::WriterGone));
    }
}

/// Sends `request` to a writer thread, answering it at once when the writer is gone.
/// Blocking when the writer is behind is the backpressure: acks wait, collectors buffer.
fn send_request(writer: &crossbeam_channel::Sender<Request>, request: Request) {
    if let Err(crossbeam_channel::SendError(request)) = writer.send(request) {
        request.gone();
    }
}

/// [`Store::append`] for a backend whose writer thread takes [`Request`]s: both do.
fn request_append(
    writer: &crossbeam_channel::Sender<Request>,
    collector_id: String,
    seq: u64,
    events: Vec<Event>,
) -> oneshot::Receiver<Result<Appended, StoreError>> {
    let (reply, rx) = oneshot::channel();
    send_request(
        writer,
        Request::Append {
            collector_id,
            seq,
            events,
            reply,
        },
    );
    rx
}

/// [`Store::append_audit`] for a backend whose writer thread takes [`Request`]s.
fn request_audit(
    writer: &crossbeam_channel::Sender<Request>,
    events: Vec<Event>,
) -> oneshot::Receiver<Result<AuditAppended, StoreError>> {
    let (reply, rx) = oneshot::channel();
    send_request(writer, Request::Audit { events, reply });
    rx
}

/// One segment's indexed columns and its body.
struct SegmentRow<'a> {
    received_at: i64,
    kind: &'static str,
    pod: &'a str,
    namespace: &'a str,
    collector: &'a str,
    count: i64,
}

/// Encodes the events at `segment` (one kind, one source, one arrival time) into `body`
/// and returns the segment's columns.
fn encode_segment<'a>(
    events: &'a [Event],
    segment: &[usize],
    body: &mut Vec<u8>,
    scratch: &mut direct::Scratch,
) -> SegmentRow<'a> {
    let first = &events[segment[0]];
    let header = pb::Batch {
        identity: Some(wire::identity_to_proto(&first.source)),
        seq: 0,
        sent_at: first.received_at,
        records: Vec::new(),
    };
    body.clear();
    header.encode_raw(body);
    for &i in segment {
        direct::put_record_field(body, BATCH_RECORDS_FIELD, &events[i].record, scratch);
    }
    SegmentRow {
        received_at: first.received_at as i64,
        kind: first.record.kind().as_str(),
        pod: &first.source.pod_name,
        namespace: &first.source.pod_namespace,
        collector: &first.source.collector_id,
        count: segment.len() as i64,
    }
}

/// Decodes a stored segment and visits its events; false when `visit` asked to stop.
fn visit_segment(
    id: i64,
    received_at: i64,
    body: bytes::Bytes,
    limits: &wire::Limits,
    visit: &mut dyn FnMut(Event) -> bool,
) -> Result<bool, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { id, reason };
    let mut segment = RawBatch::parse(body).map_err(|e| corrupt(e.to_string()))?;
    let source = segment_source(id, &mut segment, limits)?;
    for record in segment.records() {
        let event = Event {
            source: source.clone(),
            received_at: received_at as u64,
            record: direct::decode_record(record, limits).map_err(|e| corrupt(e.to_string()))?,
        };
        if !visit(event) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The identity a stored segment's events share.
fn segment_source(
    id: i64,
    segment: &mut RawBatch,
    limits: &wire::Limits,
) -> Result<Arc<CollectorIdentity>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { id, reason };
    let identity = segment
        .identity
        .take()
        .ok_or_else(|| corrupt("segment without identity".into()))?;
    Ok(Arc::new(
        wire::identity_from_proto(identity, limits).map_err(|e| corrupt(e.to_string()))?,
    ))
}

/// The identity of a stored segment, its records not read.
fn identity_of_segment(
    id: i64,
    body: bytes::Bytes,
    limits: &wire::Limits,
) -> Result<Arc<CollectorIdentity>, StoreError> {
    let mut segment = RawBatch::parse_bounded(body, 0).map_err(|e| StoreError::Corrupt {
        id,
        reason: e.to_string(),
    })?;
    segment_source(id, &mut segment, limits)
}

/// Indices of `events` grouped by (record kind, source, arrival time), in order of first
/// appearance: one segment each.
fn segments(events: &[Event]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let same = |g: &Vec<usize>| {
            let f = &events[g[0]];
            f.record.kind() == e.record.kind()
                && f.received_at == e.received_at
                && (Arc::ptr_eq(&f.source, &e.source) || f.source == e.source)
        };
        match groups.iter_mut().find(|g| same(g)) {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups
}

/// The dedupe key of an audit event, or None for any other record.
fn audit_key(event: &Event) -> Option<(&str, &str, i32, i64)> {
    match &event.record {
        Record::Audit(a) => Some((
            a.cluster.as_str(),
            a.audit_id.as_str(),
            i32::from(a.stage.ordinal()),
            a.request_received as i64,
        )),
        _ => None,
    }
}

/// The path a `sqlite` store keeps its database at, for callers that name the directory.
pub fn sqlite_path(dir: &Path) -> PathBuf {
    dir.join("procflow.db")
}

/// `--store none`: keeps nothing (deduplication only), to measure transport and detection
/// without the database. Queries return nothing.
#[derive(Default)]
pub struct NullStore {
    seen: std::sync::Mutex<std::collections::HashSet<(String, u64)>>,
    audit_seen: std::sync::Mutex<std::collections::HashSet<(String, String, u8, u64)>>,
}

impl Store for NullStore {
    fn append(
        &self,
        collector_id: String,
        seq: u64,
        events: Vec<Event>,
    ) -> oneshot::Receiver<Result<Appended, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let fresh = match self.seen.lock() {
            Ok(mut seen) => seen.insert((collector_id, seq)),
            Err(_) => true,
        };
        let _ = reply.send(Ok(if fresh {
            Appended::Stored(events)
        } else {
            Appended::Duplicate
        }));
        rx
    }

    fn append_audit(
        &self,
        events: Vec<Event>,
    ) -> oneshot::Receiver<Result<AuditAppended, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let mut duplicates = 0;
        let stored = match self.audit_seen.lock() {
            Ok(mut seen) => events
                .into_iter()
                .filter(|e| {
                    let fresh = match &e.record {
                        Record::Audit(a) => seen.insert((
                            a.cluster.clone(),
                            a.audit_id.clone(),
                            a.stage.ordinal(),
                            a.request_received,
                        )),
                        _ => false,
                    };
                    duplicates += usize::from(!fresh);
                    fresh
                })
                .collect(),
            Err(_) => events,
        };
        let _ = reply.send(Ok(AuditAppended { stored, duplicates }));
        rx
    }

    fn scan(
        &self,
        _query: &EventQuery,
        _visit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }
}
