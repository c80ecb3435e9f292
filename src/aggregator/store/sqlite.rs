//! The embedded backend: SQLite in WAL mode, one writer thread that commits many batches
//! per transaction; retention by age and by live pages. Not for a network file system
//! (WAL needs shared memory on a local one): several replicas use PostgreSQL.

mod rollups;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::{
    audit_key, encode_segment, identity_of_segment, request_append, request_audit, segments,
    visit_segment, Appended, AuditAppended, EventQuery, Outcome, ReadRange, Request, Retention,
    Store, StoreError,
};
use crate::model::{CollectorIdentity, Event};
use crate::telemetry::aggregator::StoreTrimmed;
use crate::telemetry::InternalEvent;
use crate::wire::{self, direct};

pub struct SqliteStore {
    path: PathBuf,
    retention: Retention,
    writer: crossbeam_channel::Sender<Request>,
}

/// Events are stored in segments: one row per (batch, record kind, source), its records
/// encoded together as a `procflow.v1.Batch`. Every event of a batch shares its arrival time,
/// source and, within a segment, its kind, so the filters stay exact while inserts and index
/// updates happen per segment rather than per record.
const PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;";

/// Schema migrations, in order: version N is `MIGRATIONS[N - 1]`, recorded in
/// `PRAGMA user_version`. Version 1 is the schema from before versioning (all `IF NOT
/// EXISTS`, so a database of that time migrates in place).
const MIGRATIONS: &[&str] = &[V1, rollups::V2, rollups::V3];

const V1: &str = "
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
    /// A read-only connection inside a transaction: its statements see one snapshot.
    fn read_transaction(&self) -> Result<Connection, rusqlite::Error> {
        let conn =
            Connection::open_with_flags(&self.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.execute_batch("BEGIN")?;
        Ok(conn)
    }

    /// Opens (or creates) `dir/procflow.db` and starts the writer thread.
    pub fn open(dir: &Path, retention: Retention) -> Result<SqliteStore, StoreError> {
        Self::open_file(&super::sqlite_path(dir), retention)
    }

    /// Opens (or creates) the database at `path`, migrates it, and starts the writer thread.
    pub fn open_file(path: &Path, retention: Retention) -> Result<SqliteStore, StoreError> {
        let path = path.to_path_buf();
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(sqlite)?;
        conn.execute_batch(PRAGMAS).map_err(sqlite)?;
        migrate(&mut conn, MIGRATIONS.len()).map_err(|e| e.at(&path))?;
        let (writer, requests) = crossbeam_channel::bounded::<Request>(1024);
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(conn, requests, thread_path, retention))
            .map_err(|e| StoreError::Sqlite {
                path: path.clone(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(SqliteStore {
            path,
            retention,
            writer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

/// A migration that failed, or a database newer than this binary.
enum MigrateError {
    Sqlite(rusqlite::Error),
    TooNew(u32),
}

impl MigrateError {
    fn at(self, path: &Path) -> StoreError {
        match self {
            MigrateError::Sqlite(source) => StoreError::Sqlite {
                path: path.to_path_buf(),
                source,
            },
            MigrateError::TooNew(version) => StoreError::Config(format!(
                "{}: schema version {version} is newer than this binary's {}",
                path.display(),
                MIGRATIONS.len()
            )),
        }
    }
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sqlite(e)
    }
}

/// Brings the schema to version `target` (each step in its own transaction); returns the
/// version found.
fn migrate(conn: &mut Connection, target: usize) -> Result<u32, MigrateError> {
    let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found as usize > MIGRATIONS.len() {
        return Err(MigrateError::TooNew(found));
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target)
        .skip(found as usize)
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
        tracing::info!(version = i + 1, "store schema migrated");
    }
    Ok(found)
}

/// `procflow store migrate` for a SQLite database.
pub(super) fn migrate_file(path: &Path) -> Result<(u32, u32), StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open(path).map_err(sqlite)?;
    conn.execute_batch(PRAGMAS).map_err(sqlite)?;
    let found = migrate(&mut conn, MIGRATIONS.len()).map_err(|e| e.at(path))?;
    Ok((found, MIGRATIONS.len() as u32))
}

impl Store for SqliteStore {
    fn append(
        &self,
        collector_id: String,
        seq: u64,
        events: Vec<Event>,
    ) -> oneshot::Receiver<Result<Appended, StoreError>> {
        request_append(&self.writer, collector_id, seq, events)
    }

    fn append_audit(
        &self,
        events: Vec<Event>,
    ) -> oneshot::Receiver<Result<AuditAppended, StoreError>> {
        request_audit(&self.writer, events)
    }

    fn maintain(&self, now: u64) -> Result<(), StoreError> {
        let sqlite = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let conn = Connection::open(&self.path).map_err(sqlite)?;
        // The writer thread may hold the write lock for a group: wait for it.
        conn.busy_timeout(Duration::from_secs(30)).map_err(sqlite)?;
        apply_retention(&conn, self.retention, now).map_err(sqlite)?;
        Ok(())
    }

    fn raw_horizon(&self, now: u64) -> u64 {
        now.saturating_sub(self.retention.max_age.as_nanos() as u64)
    }

    fn rollups(&self) -> Option<&dyn super::RollupStore> {
        Some(self)
    }

    fn sources(&self, q: &EventQuery) -> Result<Vec<Arc<CollectorIdentity>>, StoreError> {
        let until = if q.until == 0 { u64::MAX } else { q.until };
        let sqlite = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let conn = self.read_transaction().map_err(sqlite)?;
        // Each collector's first segment in the window: its identity, one body read.
        let (mut sql, args) = where_clause(q, until, "SELECT min(id) FROM segments");
        sql.push_str(" GROUP BY collector ORDER BY 1");
        let ids: Vec<i64> = conn
            .prepare(&sql)
            .map_err(sqlite)?
            .query_map(rusqlite::params_from_iter(args), |row| row.get(0))
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        let mut body_of = conn
            .prepare("SELECT body FROM segments WHERE id = ?1")
            .map_err(sqlite)?;
        let limits = wire::Limits::default();
        ids.into_iter()
            .map(|id| {
                let body: Vec<u8> = body_of
                    .query_row(params![id], |row| row.get(0))
                    .map_err(sqlite)?;
                identity_of_segment(id, body.into(), &limits)
            })
            .collect()
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
                store: self.path.display().to_string(),
                since: q.since,
                until,
                after,
            }),
            source: Box::new(source) as Box<dyn std::error::Error + Send + Sync>,
        };
        let sqlite = |source| read_failed(None, source);
        // The matching segments' ids first, sorted, then each body by id: sorting whole rows
        // would copy every body through SQLite's sorter (temporary files for a long window).
        // One read transaction, so both statements see the same snapshot.
        let conn = self.read_transaction().map_err(sqlite)?;
        let (mut sql, args) = where_clause(q, until, "SELECT id, received_at FROM segments");
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
            if !visit_segment(id, received_at, body.into(), &limits, visit)? {
                return Ok(false);
            }
            last = Some((id, received_at));
        }
        Ok(true)
    }
}

/// `select` with the WHERE clause of `q` (its window to `until`, kinds, pods and
/// namespaces), and its arguments.
fn where_clause(q: &EventQuery, until: u64, select: &str) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = format!("{select} WHERE received_at >= ?1 AND received_at <= ?2");
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
    (sql, args)
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
        match commit(&mut conn, &group) {
            Ok(outcomes) => {
                for (request, outcome) in group.into_iter().zip(outcomes) {
                    request.answer(Ok(outcome));
                }
            }
            Err(source) => {
                for request in group {
                    request.answer(Err(StoreError::Sqlite {
                        path: path.clone(),
                        source: rusqlite::Error::ToSqlConversionFailure(source.to_string().into()),
                    }));
                }
            }
        }
        if last_retention.elapsed() > Duration::from_secs(60) {
            last_retention = std::time::Instant::now();
            if let Err(error) = apply_retention(&conn, retention, crate::model::now_ns()) {
                tracing::warn!(%error, "retention pass failed");
            }
        }
    }
}

/// Stores a group of requests in one transaction; per-request outcomes (all fail together
/// if the transaction fails).
fn commit(conn: &mut Connection, group: &[Request]) -> Result<Vec<Outcome>, rusqlite::Error> {
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
            let row = encode_segment(events, segment, &mut body, &mut scratch);
            insert.execute(params![
                row.received_at,
                row.kind,
                row.pod,
                row.namespace,
                row.collector,
                row.count,
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
                        let Some((cluster, audit_id, stage, request_received)) = audit_key(event)
                        else {
                            fresh.push(false);
                            continue;
                        };
                        let new =
                            seen.execute(params![cluster, audit_id, stage, request_received, now])?
                                == 1;
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
fn apply_retention(
    conn: &Connection,
    retention: Retention,
    now: u64,
) -> Result<Trimmed, rusqlite::Error> {
    let cutoff = now.saturating_sub(retention.max_age.as_nanos() as u64) as i64;
    let mut trimmed = Trimmed {
        by_age: conn.execute(
            "DELETE FROM segments WHERE received_at < ?1",
            params![cutoff],
        )?,
        ..Trimmed::default()
    };
    rollups::apply_retention(conn, retention, now)?;
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
        StoreTrimmed {
            count: trimmed.by_size,
            unit: "segments",
            max_bytes: retention.max_bytes,
        }
        .emit();
    }
    let _ = conn
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        .optional();
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of `n` segments of `body` bytes each, received 1 ns apart, each batch
    /// with its deduplication row.
    fn filled(n: i64, body: usize) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = Connection::open(dir.path().join("procflow.db")).expect("open");
        migrate(&mut conn, MIGRATIONS.len()).ok().expect("schema");
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
            rollups: crate::aggregator::store::ROLLUP_RETENTION,
        };
        let first = apply_retention(&conn, retention, crate::model::now_ns()).expect("first pass");
        assert!(first.by_size > 0 && first.by_age == 0, "{first:?}");
        assert!(live_bytes(&conn).expect("size") <= before / 2);
        let left = count(&conn, "segments");
        assert!(
            left >= 800,
            "trimmed a tenth at a time, not more: {left} left"
        );
        // The file did not shrink, but its live pages are under the bound: nothing more goes.
        for _ in 0..3 {
            let again =
                apply_retention(&conn, retention, crate::model::now_ns()).expect("next pass");
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
                rollups: crate::aggregator::store::ROLLUP_RETENTION,
            },
            crate::model::now_ns(),
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
