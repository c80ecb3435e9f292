//! SQLite's rollup tables: one row per pod-hour, one per hour built (with the pods seen and
//! the sockets carried to the next hour, kept while the hour's raw records are); the same per pod-day
//! and day built (schema version 3), stored with the day's last hour.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::SqliteStore;
use crate::aggregator::store::{
    EventQuery, Grain, Retention, RollupHour, RollupProgress, RollupSegment, RollupStore,
    StoreError,
};

/// Schema version 2: the rollup tables.
pub(super) const V2: &str = "
CREATE TABLE IF NOT EXISTS rollups (
    id INTEGER PRIMARY KEY,
    hour INTEGER NOT NULL,
    namespace TEXT NOT NULL,
    pod TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS rollups_key ON rollups(hour, namespace, pod);
CREATE INDEX IF NOT EXISTS rollups_pod_hour ON rollups(pod, hour);
CREATE TABLE IF NOT EXISTS rollup_hours (
    hour INTEGER PRIMARY KEY,
    built_at INTEGER NOT NULL,
    pods BLOB NOT NULL,
    carry BLOB
);
";

/// Schema version 3: the daily rollups (same columns; `hour` is the day's start).
pub(super) const V3: &str = "
CREATE TABLE IF NOT EXISTS rollup_days (
    id INTEGER PRIMARY KEY,
    hour INTEGER NOT NULL,
    namespace TEXT NOT NULL,
    pod TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS rollup_days_key ON rollup_days(hour, namespace, pod);
CREATE INDEX IF NOT EXISTS rollup_days_pod_hour ON rollup_days(pod, hour);
CREATE TABLE IF NOT EXISTS rollup_days_built (
    hour INTEGER PRIMARY KEY,
    built_at INTEGER NOT NULL,
    pods BLOB NOT NULL
);
";

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl SqliteStore {
    fn rollup_conn(&self, read_only: bool) -> Result<Connection, StoreError> {
        let conn = if read_only {
            Connection::open_with_flags(&self.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        } else {
            Connection::open(&self.path)
        }
        .map_err(|e| self.sqlite(e))?;
        // The writer thread may hold the write lock for a group: wait for it.
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(|e| self.sqlite(e))?;
        Ok(conn)
    }
}

impl RollupStore for SqliteStore {
    fn rollup_progress(&self) -> Result<Option<RollupProgress>, StoreError> {
        let conn = self.rollup_conn(true)?;
        conn.query_row(
            "SELECT hour, COALESCE(carry, x'') FROM rollup_hours ORDER BY hour DESC LIMIT 1",
            [],
            |r| {
                Ok(RollupProgress {
                    hour: r.get::<_, i64>(0)? as u64,
                    carry: r.get(1)?,
                })
            },
        )
        .optional()
        .map_err(|e| self.sqlite(e))
    }

    fn put_rollup(&self, hour: RollupHour) -> Result<bool, StoreError> {
        let mut conn = self.rollup_conn(false)?;
        let put = |conn: &mut Connection| -> Result<bool, rusqlite::Error> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let claimed = tx.execute(
                "INSERT OR IGNORE INTO rollup_hours (hour, built_at, pods, carry) VALUES (?1, ?2, ?3, ?4)",
                params![int(hour.hour), int(crate::model::now_ns()), hour.pods, hour.carry],
            )? == 1;
            if !claimed {
                return Ok(false);
            }
            insert_rows(&tx, "rollups", &hour.segments)?;
            if let Some(day) = &hour.day {
                let built = tx.execute(
                    "INSERT OR IGNORE INTO rollup_days_built (hour, built_at, pods) VALUES (?1, ?2, ?3)",
                    params![int(day.day), int(crate::model::now_ns()), day.pods],
                )? == 1;
                if built {
                    insert_rows(&tx, "rollup_days", &day.segments)?;
                }
            }
            // Carries are read at the last hour (building goes on from it) and at the ends
            // of a window inside the raw retention.
            tx.execute(
                "UPDATE rollup_hours SET carry = NULL WHERE hour < ?1 AND carry IS NOT NULL",
                params![int(super::super::carries_from(self, hour.hour))],
            )?;
            tx.commit()?;
            Ok(true)
        };
        put(&mut conn).map_err(|e| self.sqlite(e))
    }

    fn rollup_carry(&self, hour: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.rollup_conn(true)?;
        conn.query_row(
            "SELECT carry FROM rollup_hours WHERE hour = ?1",
            params![int(hour)],
            |r| r.get::<_, Option<Vec<u8>>>(0),
        )
        .optional()
        .map(Option::flatten)
        .map_err(|e| self.sqlite(e))
    }

    fn scan_rollups(
        &self,
        grain: Grain,
        q: &EventQuery,
        visit: &mut dyn FnMut(RollupSegment) -> bool,
    ) -> Result<bool, StoreError> {
        let conn = self.rollup_conn(true)?;
        let until = if q.until == 0 { u64::MAX } else { q.until };
        let mut sql = format!(
            "SELECT hour, namespace, pod, body FROM {} WHERE hour >= ?1 AND hour <= ?2",
            grain.tables().0
        );
        let mut args: Vec<rusqlite::types::Value> = vec![int(q.since).into(), int(until).into()];
        for (column, values) in [("pod", &q.pods), ("namespace", &q.namespaces)] {
            if values.is_empty() {
                continue;
            }
            let marks: Vec<String> = values
                .iter()
                .map(|v| {
                    args.push(v.clone().into());
                    format!("?{}", args.len())
                })
                .collect();
            sql.push_str(&format!(" AND {column} IN ({})", marks.join(",")));
        }
        sql.push_str(" ORDER BY hour, namespace, pod");
        let mut read = || -> Result<bool, rusqlite::Error> {
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
            while let Some(row) = rows.next()? {
                let segment = RollupSegment {
                    hour: row.get::<_, i64>(0)? as u64,
                    namespace: row.get(1)?,
                    pod: row.get(2)?,
                    body: row.get(3)?,
                };
                if !visit(segment) {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        read().map_err(|e| self.sqlite(e))
    }

    fn rollup_pods(
        &self,
        grain: Grain,
        since: u64,
        until: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let conn = self.rollup_conn(true)?;
        let read = || -> Result<Vec<(u64, Vec<u8>)>, rusqlite::Error> {
            let mut stmt = conn.prepare(&format!(
                "SELECT hour, pods FROM {} WHERE hour >= ?1 AND hour <= ?2 ORDER BY hour",
                grain.tables().1
            ))?;
            let rows = stmt.query_map(params![int(since), int(until)], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })?;
            rows.collect()
        };
        read().map_err(|e| self.sqlite(e))
    }
}

fn insert_rows(
    tx: &rusqlite::Transaction,
    table: &str,
    rows: &[RollupSegment],
) -> Result<(), rusqlite::Error> {
    let mut insert = tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO {table} (hour, namespace, pod, body) VALUES (?1, ?2, ?3, ?4)"
    ))?;
    for s in rows {
        insert.execute(params![int(s.hour), s.namespace, s.pod, s.body])?;
    }
    Ok(())
}

/// Deletes rollups older than their retention (the last hour built always stays: it is
/// where building resumes).
pub(super) fn apply_retention(
    conn: &Connection,
    retention: Retention,
    now: u64,
) -> Result<usize, rusqlite::Error> {
    let cutoff = int(now.saturating_sub(retention.rollups.as_nanos() as u64));
    let rows = conn.execute("DELETE FROM rollups WHERE hour < ?1", params![cutoff])?;
    // A day goes when its last hour is past the retention.
    let day_cutoff = cutoff.saturating_sub(int(crate::investigate::rollup::DAY) - 1);
    conn.execute(
        "DELETE FROM rollup_days WHERE hour < ?1",
        params![day_cutoff],
    )?;
    conn.execute(
        "DELETE FROM rollup_days_built WHERE hour < ?1",
        params![day_cutoff],
    )?;
    conn.execute(
        "DELETE FROM rollup_hours WHERE hour < ?1 AND hour < (SELECT max(hour) FROM rollup_hours)",
        params![cutoff],
    )?;
    Ok(rows)
}
