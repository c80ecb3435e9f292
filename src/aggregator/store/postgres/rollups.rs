//! PostgreSQL's rollup tables: one row per pod-hour, one per hour built (with the pods seen
//! and the sockets carried to the next hour, kept while the hour's raw records are). An hour is
//! claimed by inserting its row in the same transaction as its pod-hours, so replicas
//! building the same hour store it once: the second waits for the first's commit, finds
//! the row, and rolls back.

use tokio_postgres::types::ToSql;

use super::{pg, pool_error, PgStore};
use crate::aggregator::store::{
    EventQuery, Grain, Retention, RollupHour, RollupProgress, RollupSegment, RollupStore,
    StoreError,
};

/// Schema version 3: the rollup tables. Not partitioned: one row per pod-hour is small
/// beside the raw records, and retention deletes by hour through the primary key.
pub(super) const V3: &str = "
CREATE TABLE rollups (
    hour bigint NOT NULL,
    namespace text NOT NULL,
    pod text NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (hour, namespace, pod)
);
CREATE INDEX rollups_pod_hour ON rollups (pod, hour);
CREATE TABLE rollup_hours (
    hour bigint PRIMARY KEY,
    built_at bigint NOT NULL,
    pods bytea NOT NULL,
    carry bytea
);
";

/// Schema version 4: the daily rollups (same columns; `hour` is the day's start).
pub(super) const V4: &str = "
CREATE TABLE rollup_days (
    hour bigint NOT NULL,
    namespace text NOT NULL,
    pod text NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (hour, namespace, pod)
);
CREATE INDEX rollup_days_pod_hour ON rollup_days (pod, hour);
CREATE TABLE rollup_days_built (
    hour bigint PRIMARY KEY,
    built_at bigint NOT NULL,
    pods bytea NOT NULL
);
";

fn segment_of(row: &tokio_postgres::Row) -> Result<RollupSegment, tokio_postgres::Error> {
    Ok(RollupSegment {
        hour: row.try_get::<_, i64>(0)? as u64,
        namespace: row.try_get(1)?,
        pod: row.try_get(2)?,
        body: row.try_get(3)?,
    })
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl RollupStore for PgStore {
    fn rollup_progress(&self) -> Result<Option<RollupProgress>, StoreError> {
        self.block_on(async {
            let client = self.pool.get().await.map_err(pool_error)?;
            let row = client
                .query_opt(
                    "SELECT hour, COALESCE(carry, '') FROM rollup_hours ORDER BY hour DESC LIMIT 1",
                    &[],
                )
                .await
                .map_err(pg("reading rollup progress"))?;
            Ok(row.map(|r| RollupProgress {
                hour: r.get::<_, i64>(0) as u64,
                carry: r.get(1),
            }))
        })
    }

    fn put_rollup(&self, hour: RollupHour) -> Result<bool, StoreError> {
        self.block_on(async {
            let mut client = self.pool.get().await.map_err(pool_error)?;
            let tx = client
                .transaction()
                .await
                .map_err(pg("rollups: beginning"))?;
            let claimed = tx
                .execute(
                    "INSERT INTO rollup_hours (hour, built_at, pods, carry) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                    &[
                        &int(hour.hour),
                        &int(crate::model::now_ns()),
                        &hour.pods,
                        &hour.carry,
                    ],
                )
                .await
                .map_err(pg("rollups: claiming the hour"))?
                == 1;
            if !claimed {
                return Ok(false);
            }
            insert_rows(&tx, "rollups", &hour.segments).await?;
            if let Some(day) = &hour.day {
                let built = tx
                    .execute(
                        "INSERT INTO rollup_days_built (hour, built_at, pods) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING",
                        &[&int(day.day), &int(crate::model::now_ns()), &day.pods],
                    )
                    .await
                    .map_err(pg("rollups: claiming the day"))?
                    == 1;
                if built {
                    insert_rows(&tx, "rollup_days", &day.segments).await?;
                }
            }
            // Carries are read at the last hour (building goes on from it) and at the ends
            // of a window inside the raw retention.
            tx.execute(
                "UPDATE rollup_hours SET carry = NULL WHERE hour < $1 AND carry IS NOT NULL",
                &[&int(super::super::carries_from(self, hour.hour))],
            )
            .await
            .map_err(pg("rollups: trimming carries"))?;
            tx.commit().await.map_err(pg("rollups: committing"))?;
            Ok(true)
        })
    }

    fn rollup_carry(&self, hour: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.block_on(async {
            let client = self.pool.get().await.map_err(pool_error)?;
            let row = client
                .query_opt(
                    "SELECT carry FROM rollup_hours WHERE hour = $1",
                    &[&int(hour)],
                )
                .await
                .map_err(pg("reading a rollup carry"))?;
            Ok(row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0)))
        })
    }

    fn scan_rollups(
        &self,
        grain: Grain,
        q: &EventQuery,
        visit: &mut dyn FnMut(RollupSegment) -> bool,
    ) -> Result<bool, StoreError> {
        let until = if q.until == 0 { u64::MAX } else { q.until };
        let (since, until) = (int(q.since), int(until));
        let (pods, namespaces) = (q.pods.clone(), q.namespaces.clone());
        let table = grain.tables().0;
        // Rows come a page at a time from a task on the store's runtime, so the caller
        // folds one page while the server reads the next (a month's question is thousands
        // of pod-days); the caller stops the read by dropping the queue. Handed over a
        // page at a time: a row at a time, waking the caller for each row was most of the
        // task's time (a day is 23,000 rows). One page queued: with the page being read and
        // the one being folded, three pages of bodies at most are held.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let pool = self.pool.clone();
        self.handle.spawn(async move {
            let mut sql = format!(
                "SELECT hour, namespace, pod, body FROM {table} WHERE hour >= $1 AND hour <= $2"
            );
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&since, &until];
            for (column, values) in [("pod", &pods), ("namespace", &namespaces)] {
                if !values.is_empty() {
                    params.push(values);
                    sql.push_str(&format!(" AND {column} = ANY(${})", params.len()));
                }
            }
            sql.push_str(" ORDER BY hour, namespace, pod");
            let tx = &tx;
            let read =
                super::read_paged(&pool, &sql, &params, "reading rollups", |rows| async move {
                    let page = rows
                        .iter()
                        .map(segment_of)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(pg("reading rollups"))?;
                    Ok(tx.send(Ok(page)).await.is_ok())
                })
                .await;
            if let Err(e) = read {
                let _ = tx.send(Err(e)).await;
            }
        });
        while let Some(page) = rx.blocking_recv() {
            for segment in page? {
                if !visit(segment) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn rollup_pods(
        &self,
        grain: Grain,
        since: u64,
        until: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.block_on(async {
            let client = self.pool.get().await.map_err(pool_error)?;
            let rows = client
                .query(
                    &format!(
                        "SELECT hour, pods FROM {} WHERE hour >= $1 AND hour <= $2 ORDER BY hour",
                        grain.tables().1
                    ),
                    &[&int(since), &int(until)],
                )
                .await
                .map_err(pg("reading rollup pods"))?;
            Ok(rows
                .into_iter()
                .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
                .collect())
        })
    }
}

async fn insert_rows(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    rows: &[RollupSegment],
) -> Result<(), StoreError> {
    let insert = tx
        .prepare(&format!(
            "INSERT INTO {table} (hour, namespace, pod, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (hour, namespace, pod) DO UPDATE SET body = EXCLUDED.body"
        ))
        .await
        .map_err(pg("rollups: preparing"))?;
    for s in rows {
        tx.execute(&insert, &[&int(s.hour), &s.namespace, &s.pod, &s.body])
            .await
            .map_err(pg("rollups: storing"))?;
    }
    Ok(())
}

/// Deletes rollups older than their retention (the last hour built always stays: it is
/// where building resumes); inside upkeep's transaction.
pub(super) async fn apply_retention(
    tx: &tokio_postgres::Transaction<'_>,
    retention: Retention,
    now: i64,
) -> Result<u64, StoreError> {
    let cutoff =
        now.saturating_sub(i64::try_from(retention.rollups.as_nanos()).unwrap_or(i64::MAX));
    let rows = tx
        .execute("DELETE FROM rollups WHERE hour < $1", &[&cutoff])
        .await
        .map_err(pg("upkeep: deleting rollups"))?;
    // A day goes when its last hour is past the retention.
    let day_cutoff = cutoff
        .saturating_sub(i64::try_from(crate::investigate::rollup::DAY).unwrap_or(i64::MAX) - 1);
    for table in ["rollup_days", "rollup_days_built"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE hour < $1"),
            &[&day_cutoff],
        )
        .await
        .map_err(pg("upkeep: deleting daily rollups"))?;
    }
    tx.execute(
        "DELETE FROM rollup_hours WHERE hour < $1 AND hour < (SELECT max(hour) FROM rollup_hours)",
        &[&cutoff],
    )
    .await
    .map_err(pg("upkeep: deleting rollup hours"))?;
    Ok(rows)
}
