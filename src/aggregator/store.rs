//! Storage behind the aggregator. [`Store`] is what a distributed backend would implement;
//! [`SqliteStore`] is the embedded default: SQLite in WAL mode, one writer thread that
//! commits many batches per transaction, events as encoded protobuf plus indexed columns.
//! Deduplication on (collector id, batch seq) is a table in the same transaction as the
//! events, so a batch is stored exactly once however often it is delivered, across restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use rusqlite::{params, Connection, OptionalExtension};
use thiserror::Error;
use tokio::sync::oneshot;

use crate::codec::{RawBatch, BATCH_RECORDS_FIELD};
use crate::model::{Event, Record, RecordKind};
use crate::proto::v1 as pb;
use crate::telemetry;
use crate::wire::{self, direct};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the store's writer has stopped")]
    WriterGone,
    #[error("stored event {id} does not decode: {reason}")]
    Corrupt { id: i64, reason: String },
    /// Reading a range failed part-way (a damaged page, an I/O error): says which range
    /// and where, so an operator can tell what is lost.
    #[error("{range}: {source}")]
    Read {
        range: Box<ReadRange>,
        source: rusqlite::Error,
    },
}

/// Which read of the store failed, and where in it.
#[derive(Debug)]
pub struct ReadRange {
    pub path: PathBuf,
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
            self.path.display(),
            self.since,
            self.until
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
            StoreError::Sqlite { source, .. } | StoreError::Read { source, .. } => source,
            StoreError::WriterGone => return false,
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

/// What the transaction did with one request.
#[derive(Debug, Clone)]
enum Outcome {
    Stored,
    Duplicate,
    /// Per audit event: stored now (true) or stored before.
    Audit(Vec<bool>),
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
    /// Visits stored events matching `query` (its `limit` ignored), oldest first, until
    /// `visit` returns false; returns whether every matching event was visited.
    fn scan(
        &self,
        query: &EventQuery,
        visit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<bool, StoreError>;
}

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

pub struct SqliteStore {
    path: PathBuf,
    writer: crossbeam_channel::Sender<Request>,
}

/// Retention: events older than `max_age` are deleted; then the oldest until under `max_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age: Duration,
    pub max_bytes: u64,
}

/// Events are stored in segments: one row per (batch, record kind, source), its records
/// encoded together as a `procflow.v1.Batch`. Every event of a batch shares its arrival time,
/// source and, within a segment, its kind, so the filters stay exact while inserts and index
/// updates happen per segment rather than per record.
const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    pod TEXT NOT NULL,
    namespace TEXT NOT NULL,
    collector TEXT NOT NULL,
    count INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_received ON segments(received_at);
CREATE INDEX IF NOT EXISTS segments_kind_received ON segments(kind, received_at);
CREATE INDEX IF NOT EXISTS segments_pod_received ON segments(pod, received_at);
CREATE TABLE IF NOT EXISTS audit_seen (
    cluster TEXT NOT NULL,
    audit_id TEXT NOT NULL,
    stage INTEGER NOT NULL,
    request_received INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (cluster, audit_id, stage, request_received)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_seen_received ON audit_seen(received_at);
CREATE TABLE IF NOT EXISTS batches (
    collector TEXT NOT NULL,
    seq INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (collector, seq)
) WITHOUT ROWID;
";

impl SqliteStore {
    /// Opens (or creates) `dir/procflow.db` and starts the writer thread.
    pub fn open(dir: &Path, retention: Retention) -> Result<SqliteStore, StoreError> {
        let path = dir.join("procflow.db");
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(sqlite)?;
        conn.execute_batch(SCHEMA).map_err(sqlite)?;
        let (writer, requests) = crossbeam_channel::bounded::<Request>(1024);
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(conn, requests, thread_path, retention))
            .map_err(|e| StoreError::Sqlite {
                path: path.clone(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(SqliteStore { path, writer })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Store for SqliteStore {
    fn append(
        &self,
        collector_id: String,
        seq: u64,
        events: Vec<Event>,
    ) -> oneshot::Receiver<Result<Appended, StoreError>> {
        let (reply, rx) = oneshot::channel();
        // Blocking when the writer is behind is the backpressure: acks wait, collectors buffer.
        if let Err(crossbeam_channel::SendError(Request::Append { reply, .. })) =
            self.writer.send(Request::Append {
                collector_id,
                seq,
                events,
                reply,
            })
        {
            let _ = reply.send(Err(StoreError::WriterGone));
        }
        rx
    }

    fn append_audit(
        &self,
        events: Vec<Event>,
    ) -> oneshot::Receiver<Result<AuditAppended, StoreError>> {
        let (reply, rx) = oneshot::channel();
        if let Err(crossbeam_channel::SendError(Request::Audit { reply, .. })) =
            self.writer.send(Request::Audit { events, reply })
        {
            let _ = reply.send(Err(StoreError::WriterGone));
        }
        rx
    }

    fn scan(
        &self,
        q: &EventQuery,
        visit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<bool, StoreError> {
        let until = if q.until == 0 { u64::MAX } else { q.until };
        // The last segment read whole: a failure names the range and where in it.
        let mut last: Option<(i64, i64)> = None;
        let read_failed = |after: Option<(i64, i64)>, source| StoreError::Read {
            range: Box::new(ReadRange {
                path: self.path.clone(),
                since: q.since,
                until,
                after,
            }),
            source,
        };
        let sqlite = |source| read_failed(None, source);
        let conn =
            Connection::open_with_flags(&self.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(sqlite)?;
        // The matching segments' ids first, sorted, then each body by id: sorting whole rows
        // would copy every body through SQLite's sorter (temporary files for a long window).
        // One read transaction, so both statements see the same snapshot.
        conn.execute_batch("BEGIN").map_err(sqlite)?;
        let mut sql = String::from(
            "SELECT id, received_at FROM segments WHERE received_at >= ?1 AND received_at <= ?2",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![
            i64::try_from(q.since).unwrap_or(i64::MAX).into(),
            i64::try_from(until).unwrap_or(i64::MAX).into(),
        ];
        let mut in_list = |column: &str, values: Vec<String>| {
            if values.is_empty() {
                return;
            }
            let marks: Vec<String> = values
                .into_iter()
                .map(|v| {
                    args.push(v.into());
                    format!("?{}", args.len())
                })
                .collect();
            sql.push_str(&format!(" AND {column} IN ({})", marks.join(",")));
        };
        in_list(
            "kind",
            q.kinds.iter().map(|k| k.as_str().to_owned()).collect(),
        );
        in_list("pod", q.pods.clone());
        in_list("namespace", q.namespaces.clone());
        sql.push_str(" ORDER BY id");
        let mut stmt = conn.prepare(&sql).map_err(sqlite)?;
        let segments: Vec<(i64, i64)> = stmt
            .query_map(rusqlite::params_from_iter(args), |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        let mut body_of = conn
            .prepare("SELECT body FROM segments WHERE id = ?1")
            .map_err(sqlite)?;
        let limits = wire::Limits::default();
        for (id, received_at) in segments {
            let body: Vec<u8> = body_of
                .query_row(params![id], |row| row.get(0))
                .map_err(|e| read_failed(last, e))?;
            let corrupt = |reason: String| StoreError::Corrupt { id, reason };
            let mut segment = RawBatch::parse(body.into()).map_err(|e| corrupt(e.to_string()))?;
            let source = Arc::new(
                wire::identity_from_proto(
                    segment
                        .identity
                        .take()
                        .ok_or_else(|| corrupt("segment without identity".into()))?,
                    &limits,
                )
                .map_err(|e| corrupt(e.to_string()))?,
            );
            for record in segment.records() {
                let event = Event {
                    source: source.clone(),
                    received_at: received_at as u64,
                    record: direct::decode_record(record, &limits)
                        .map_err(|e| corrupt(e.to_string()))?,
                };
                if !visit(event) {
                    return Ok(false);
                }
            }
            last = Some((id, received_at));
        }
        Ok(true)
    }
}

fn write_loop(
    mut conn: Connection,
    requests: crossbeam_channel::Receiver<Request>,
    path: PathBuf,
    retention: Retention,
) {
    let mut last_retention = std::time::Instant::now();
    while let Ok(first) = requests.recv() {
        // Group what is queued into one transaction: one fsync for many batches.
        let mut group = vec![first];
        while group.len() < 256 {
            match requests.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        let result = commit(&mut conn, &group);
        let failed = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        for (request, outcome) in group.into_iter().zip(result.iter_outcomes()) {
            match request {
                Request::Append { reply, events, .. } => {
                    let _ = reply.send(match outcome {
                        Ok(Outcome::Stored) => Ok(Appended::Stored(events)),
                        Ok(_) => Ok(Appended::Duplicate),
                        Err(source) => Err(failed(source)),
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
                        Err(source) => Err(failed(source)),
                    });
                }
            }
        }
        if last_retention.elapsed() > Duration::from_secs(60) {
            last_retention = std::time::Instant::now();
            if let Err(error) = apply_retention(&conn, retention) {
                tracing::warn!(%error, "retention pass failed");
            }
        }
    }
}

/// Per-request outcomes of one group commit (all fail together if the transaction fails).
struct GroupResult(Result<Vec<Outcome>, rusqlite::Error>, usize);

impl GroupResult {
    fn iter_outcomes(&self) -> Vec<Result<Outcome, rusqlite::Error>> {
        match &self.0 {
            Ok(v) => v.iter().map(|a| Ok(a.clone())).collect(),
            Err(e) => (0..self.1).map(|_| Err(clone_err(e))).collect(),
        }
    }
}

fn clone_err(e: &rusqlite::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(e.to_string().into())
}

fn commit(conn: &mut Connection, group: &[Request]) -> GroupResult {
    let mut run = || -> Result<Vec<Outcome>, rusqlite::Error> {
        let tx = conn.transaction()?;
        let mut outcomes = Vec::with_capacity(group.len());
        {
            let mut dedupe = tx.prepare_cached(
                "INSERT OR IGNORE INTO batches (collector, seq, received_at) VALUES (?1, ?2, ?3)",
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO segments (received_at, kind, pod, namespace, collector, count, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut seen = tx.prepare_cached(
                "INSERT OR IGNORE INTO audit_seen (cluster, audit_id, stage, request_received, received_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut body = Vec::with_capacity(64 * 1024);
            let mut scratch = direct::Scratch::default();
            let mut put = |events: &[Event], segment: &[usize]| {
                let first = &events[segment[0]];
                let header = pb::Batch {
                    identity: Some(wire::identity_to_proto(&first.source)),
                    seq: 0,
                    sent_at: first.received_at,
                    records: Vec::new(),
                };
                body.clear();
                header.encode_raw(&mut body);
                for &i in segment {
                    direct::put_record_field(
                        &mut body,
                        BATCH_RECORDS_FIELD,
                        &events[i].record,
                        &mut scratch,
                    );
                }
                insert.execute(params![
                    first.received_at as i64,
                    first.record.kind().as_str(),
                    first.source.pod_name,
                    first.source.pod_namespace,
                    first.source.collector_id,
                    segment.len() as i64,
                    body
                ])
            };
            for request in group {
                let now = crate::model::now_ns() as i64;
                match request {
                    Request::Append {
                        collector_id,
                        seq,
                        events,
                        ..
                    } => {
                        if dedupe.execute(params![collector_id, *seq as i64, now])? == 0 {
                            outcomes.push(Outcome::Duplicate);
                            continue;
                        }
                        for segment in segments(events) {
                            put(events, &segment)?;
                        }
                        outcomes.push(Outcome::Stored);
                    }
                    Request::Audit { events, .. } => {
                        // One row per event: each keeps its own time (the API server's).
                        let mut fresh = Vec::with_capacity(events.len());
                        for (i, event) in events.iter().enumerate() {
                            let Record::Audit(a) = &event.record else {
                                fresh.push(false);
                                continue;
                            };
                            let new = seen.execute(params![
                                a.cluster,
                                a.audit_id,
                                a.stage.ordinal(),
                                a.request_received as i64,
                                now
                            ])? == 1;
                            if new {
                                put(events, &[i])?;
                            }
                            fresh.push(new);
                        }
                        outcomes.push(Outcome::Audit(fresh));
                    }
                }
            }
        }
        tx.commit()?;
        Ok(outcomes)
    };
    GroupResult(run(), group.len())
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

/// What a retention pass deleted.
#[derive(Debug, Default, PartialEq)]
struct Trimmed {
    by_age: usize,
    by_size: usize,
    dedupe_rows: usize,
}

/// The database's live size: its pages minus the free ones. Deleting rows frees pages for
/// reuse without shrinking the file, so the file's size says nothing once a trim has run.
fn live_bytes(conn: &Connection) -> Result<u64, rusqlite::Error> {
    let live: i64 = conn.query_row(
        "SELECT (page_count - freelist_count) * page_size FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
        [],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(live).unwrap_or(0))
}

/// Deletes events older than the retention, then the oldest tenth at a time while the live
/// size is over the bound (at most ten times a pass, so the writer is not held long), then
/// the deduplication rows of batches whose events are all gone.
fn apply_retention(conn: &Connection, retention: Retention) -> Result<Trimmed, rusqlite::Error> {
    let now = crate::model::now_ns();
    let cutoff = now.saturating_sub(retention.max_age.as_nanos() as u64) as i64;
    let mut trimmed = Trimmed {
        by_age: conn.execute(
            "DELETE FROM segments WHERE received_at < ?1",
            params![cutoff],
        )?,
        ..Trimmed::default()
    };
    for _ in 0..10 {
        if live_bytes(conn)? <= retention.max_bytes {
            break;
        }
        let total: i64 = conn.query_row("SELECT count(*) FROM segments", [], |r| r.get(0))?;
        if total == 0 {
            break;
        }
        trimmed.by_size += conn.execute(
            "DELETE FROM segments WHERE id IN (SELECT id FROM segments ORDER BY id LIMIT ?1)",
            params![(total / 10).max(1)],
        )?;
    }
    // A batch's row (an audit event's) is written after its events were received, so a row
    // older than the oldest stored event guards nothing any more: a resend of that batch
    // finds no copy to duplicate.
    for table in ["batches", "audit_seen"] {
        trimmed.dedupe_rows += conn.execute(
            &format!("DELETE FROM {table} WHERE received_at < ?1 OR received_at < (SELECT COALESCE(MIN(received_at), ?2) FROM segments)"),
            params![cutoff, now as i64],
        )?;
    }
    if trimmed.by_size > 0 {
        metrics::counter!(telemetry::STORE_SEGMENTS_TRIMMED).increment(trimmed.by_size as u64);
        tracing::info!(
            segments = trimmed.by_size,
            max_bytes = retention.max_bytes,
            "store over its size limit: deleted the oldest segments"
        );
    }
    let _ = conn
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        .optional();
    Ok(trimmed)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of `n` segments of `body` bytes each, received 1 ns apart, each batch
    /// with its deduplication row.
    fn filled(n: i64, body: usize) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = Connection::open(dir.path().join("procflow.db")).expect("open");
        conn.execute_batch(SCHEMA).expect("schema");
        let now = crate::model::now_ns() as i64;
        let tx = conn.transaction().expect("tx");
        for i in 0..n {
            tx.execute(
                "INSERT INTO segments (received_at, kind, pod, namespace, collector, count, body) VALUES (?1, 'flow', 'p', 'n', 'c', 1, ?2)",
                params![now - n + i, vec![7u8; body]],
            )
            .expect("segment");
            tx.execute(
                "INSERT INTO batches (collector, seq, received_at) VALUES ('c', ?1, ?2)",
                params![i, now - n + i],
            )
            .expect("batch");
        }
        tx.commit().expect("commit");
        (dir, conn)
    }

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    }

    #[test]
    fn size_retention_trims_to_the_bound_by_live_pages_then_stops() {
        let (_dir, conn) = filled(2000, 4096);
        let before = live_bytes(&conn).expect("size");
        let retention = Retention {
            max_age: Duration::from_secs(86_400),
            max_bytes: before / 2,
        };
        let first = apply_retention(&conn, retention).expect("first pass");
        assert!(first.by_size > 0 && first.by_age == 0, "{first:?}");
        assert!(live_bytes(&conn).expect("size") <= before / 2);
        let left = count(&conn, "segments");
        assert!(
            left >= 800,
            "trimmed a tenth at a time, not more: {left} left"
        );
        // The file did not shrink, but its live pages are under the bound: nothing more goes.
        for _ in 0..3 {
            let again = apply_retention(&conn, retention).expect("next pass");
            assert_eq!(again.by_size, 0, "{again:?}");
        }
        assert_eq!(count(&conn, "segments"), left);
        // The dedupe rows of trimmed batches went with them; the others stay.
        assert_eq!(count(&conn, "batches"), left);
        let oldest_guard: i64 = conn
            .query_row("SELECT MIN(received_at) FROM batches", [], |r| r.get(0))
            .expect("min");
        let oldest_event: i64 = conn
            .query_row("SELECT MIN(received_at) FROM segments", [], |r| r.get(0))
            .expect("min");
        assert_eq!(oldest_guard, oldest_event);
    }

    #[test]
    fn age_retention_removes_events_and_their_dedupe_rows() {
        let (_dir, conn) = filled(100, 16);
        let trimmed = apply_retention(
            &conn,
            Retention {
                max_age: Duration::ZERO,
                max_bytes: u64::MAX,
            },
        )
        .expect("pass");
        assert_eq!(
            trimmed,
            Trimmed {
                by_age: 100,
                by_size: 0,
                dedupe_rows: 100
            }
        );
        assert_eq!(count(&conn, "batches"), 0);
    }
}
