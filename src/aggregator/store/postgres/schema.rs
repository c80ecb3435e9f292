//! The PostgreSQL schema: versioned migrations (run at start under an advisory lock, so
//! replicas starting together migrate once), and upkeep: daily partitions created ahead,
//! dropped at retention, and the deduplication rows that guard nothing any more deleted —
//! by one replica at a time, under another advisory lock.

use deadpool_postgres::Object;

use super::pg;
use crate::aggregator::store::{Retention, StoreError};
use crate::telemetry::aggregator::StoreTrimmed;
use crate::telemetry::InternalEvent;

/// Advisory lock keys ("procflo" and a number): one for migrations, one for upkeep.
const MIGRATE_LOCK: i64 = 0x7072_6f63_666c_6f01;
const MAINTAIN_LOCK: i64 = 0x7072_6f63_666c_6f02;

pub(crate) const DAY_NS: i64 = 86_400_000_000_000;
/// Partitions made ahead of today: a day's ingest never waits for upkeep.
const DAYS_AHEAD: i64 = 2;

/// Migrations in order: version N is `MIGRATIONS[N - 1]`, recorded in `procflow_schema`.
const MIGRATIONS: &[&str] = &[
    V1,
    super::shared::V2,
    super::rollups::V3,
    super::rollups::V4,
];
pub(crate) const LATEST: u32 = MIGRATIONS.len() as u32;

/// Version 1: segments partitioned by arrival time (daily partitions are made by upkeep),
/// the deduplication tables. Segment ids come from one sequence, so reads keep the order
/// rows were stored in across partitions and replicas.
const V1: &str = "
CREATE SEQUENCE segments_id_seq CACHE 64;
CREATE TABLE segments (
    id bigint NOT NULL DEFAULT nextval('segments_id_seq'),
    received_at bigint NOT NULL,
    kind text NOT NULL,
    pod text NOT NULL,
    namespace text NOT NULL,
    collector text NOT NULL,
    count integer NOT NULL,
    body bytea NOT NULL
) PARTITION BY RANGE (received_at);
CREATE INDEX segments_id ON segments (id);
CREATE INDEX segments_received ON segments (received_at);
CREATE INDEX segments_kind_received ON segments (kind, received_at);
CREATE INDEX segments_pod_received ON segments (pod, received_at);
CREATE INDEX segments_namespace_received ON segments (namespace, received_at);
CREATE TABLE batches (
    collector text NOT NULL,
    seq bigint NOT NULL,
    received_at bigint NOT NULL,
    PRIMARY KEY (collector, seq)
);
CREATE INDEX batches_received ON batches (received_at);
CREATE TABLE audit_seen (
    cluster text NOT NULL,
    audit_id text NOT NULL,
    stage integer NOT NULL,
    request_received bigint NOT NULL,
    received_at bigint NOT NULL,
    PRIMARY KEY (cluster, audit_id, stage, request_received)
);
CREATE INDEX audit_seen_received ON audit_seen (received_at);
";

/// Brings the schema to `target` in one transaction; returns (found, now).
pub(crate) async fn migrate(client: &mut Object, target: u32) -> Result<(u32, u32), StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(pg("migrating: beginning"))?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({MIGRATE_LOCK});
         CREATE TABLE IF NOT EXISTS procflow_schema (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(pg("migrating: locking"))?;
    let found: i32 = tx
        .query_one("SELECT COALESCE(max(version), 0) FROM procflow_schema", &[])
        .await
        .map_err(pg("migrating: reading the version"))?
        .get(0);
    let found = u32::try_from(found).unwrap_or(0);
    if found > LATEST {
        return Err(StoreError::Config(format!(
            "the database's schema version {found} is newer than this binary's {LATEST}: \
             upgrade the aggregator"
        )));
    }
    for version in found + 1..=target.min(LATEST) {
        tx.batch_execute(MIGRATIONS[version as usize - 1])
            .await
            .map_err(pg("migrating"))?;
        tx.execute(
            "INSERT INTO procflow_schema (version) VALUES ($1)",
            &[&(version as i32)],
        )
        .await
        .map_err(pg("migrating: recording the version"))?;
        tracing::info!(version, "store schema migrated");
    }
    tx.commit().await.map_err(pg("migrating: committing"))?;
    Ok((found, found.max(target.min(LATEST))))
}

/// A day partition of `table`: its name and bounds (ns, upper exclusive).
#[derive(Debug, Clone, PartialEq)]
struct Partition {
    name: String,
    from: i64,
    to: i64,
}

/// `segments_20261206` for the day starting at `day * DAY_NS`.
fn partition_name(table: &str, day: i64) -> String {
    let start =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs((day.max(0) as u64) * 86_400);
    let date = humantime::format_rfc3339_seconds(start).to_string();
    format!("{table}_{}", date[..10].replace('-', ""))
}

/// The bounds in a partition's `FOR VALUES FROM ('a') TO ('b')`.
fn bounds(expr: &str) -> Option<(i64, i64)> {
    let mut numbers = expr
        .split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .filter(|s| !s.is_empty() && *s != "-")
        .filter_map(|s| s.parse::<i64>().ok());
    Some((numbers.next()?, numbers.next()?))
}

async fn partitions(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
) -> Result<Vec<Partition>, StoreError> {
    let rows = tx
        .query(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = $1::text::regclass",
            &[&table],
        )
        .await
        .map_err(pg("listing partitions"))?;
    let mut out: Vec<Partition> = rows
        .iter()
        .filter_map(|row| {
            // A partition another replica drops meanwhile shows without its bound (NULL):
            // it is gone, not an error (reading it as a string panicked the writer).
            let name: String = row.try_get(0).ok()?;
            let expr: Option<String> = row.try_get(1).ok()?;
            let (from, to) = bounds(&expr?)?;
            Some(Partition { name, from, to })
        })
        .collect();
    out.sort_by_key(|p| p.from);
    Ok(out)
}

/// Makes sure each of `days` has its partition, creating the missing ones in `tx`;
/// `known` caches the days seen to exist.
pub(crate) async fn ensure_days(
    tx: &deadpool_postgres::Transaction<'_>,
    days: &std::collections::BTreeSet<i64>,
    known: &mut std::collections::HashSet<i64>,
) -> Result<(), StoreError> {
    if days.iter().all(|d| known.contains(d)) {
        return Ok(());
    }
    known.extend(
        partitions(tx, "segments")
            .await?
            .iter()
            .map(|p| p.from.div_euclid(DAY_NS)),
    );
    let missing: Vec<i64> = days
        .iter()
        .copied()
        .filter(|d| !known.contains(d))
        .collect();
    for day in missing {
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF segments FOR VALUES FROM ({}) TO ({})",
            partition_name("segments", day),
            day * DAY_NS,
            (day + 1) * DAY_NS
        ))
        .await
        .map_err(pg("creating a partition"))?;
        known.insert(day);
    }
    Ok(())
}

/// Partition upkeep and retention as at `now` (ns): today's and the next days' partitions
/// made, those wholly older than the retention dropped (then the oldest while over the
/// size bound, never today's), stale deduplication rows deleted. Returns false when
/// another replica holds the upkeep lock (it does the work).
pub(crate) async fn maintain(
    client: &mut Object,
    retention: Retention,
    now: u64,
) -> Result<bool, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(pg("upkeep: beginning"))?;
    let held: bool = tx
        .query_one(
            &format!("SELECT pg_try_advisory_xact_lock({MAINTAIN_LOCK})"),
            &[],
        )
        .await
        .map_err(pg("upkeep: locking"))?
        .get(0);
    if !held {
        return Ok(false);
    }
    // A partition's creation or drop locks the parent briefly; never stall ingest long.
    tx.batch_execute("SET LOCAL lock_timeout = '5s'")
        .await
        .map_err(pg("upkeep"))?;
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let cutoff =
        now.saturating_sub(i64::try_from(retention.max_age.as_nanos()).unwrap_or(i64::MAX));
    let today = now.div_euclid(DAY_NS);
    let existing = partitions(&tx, "segments").await?;
    for day in today - 1..=today + DAYS_AHEAD {
        let (from, to) = (day * DAY_NS, (day + 1) * DAY_NS);
        if to <= cutoff || existing.iter().any(|p| p.from == from) {
            continue;
        }
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF segments FOR VALUES FROM ({from}) TO ({to})",
            partition_name("segments", day)
        ))
        .await
        .map_err(pg("upkeep: creating a partition"))?;
    }
    let mut dropped = 0usize;
    for p in existing.iter().filter(|p| p.to <= cutoff) {
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", p.name))
            .await
            .map_err(pg("upkeep: dropping a partition"))?;
        dropped += 1;
    }
    let mut by_size = 0usize;
    let mut left: Vec<Partition> = existing.into_iter().filter(|p| p.to > cutoff).collect();
    while left.len() > 1 && left[0].to <= today * DAY_NS {
        let size: i64 = tx
            .query_one(
                "SELECT COALESCE(sum(pg_total_relation_size(i.inhrelid)), 0)::int8 \
                 FROM pg_inherits i WHERE i.inhparent = 'segments'::regclass",
                &[],
            )
            .await
            .map_err(pg("upkeep: measuring"))?
            .get(0);
        if u64::try_from(size).unwrap_or(0) <= retention.max_bytes {
            break;
        }
        let oldest = left.remove(0);
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", oldest.name))
            .await
            .map_err(pg("upkeep: dropping a partition"))?;
        by_size += 1;
    }
    // A batch's row is written after its events were received, so a row older than the
    // oldest stored event guards nothing any more: a resend finds no copy to duplicate.
    let mut dedupe_rows = 0;
    for table in ["batches", "audit_seen"] {
        dedupe_rows += tx
            .execute(
                &format!(
                    "DELETE FROM {table} WHERE received_at < $1 OR received_at < \
                     (SELECT COALESCE(min(received_at), $2) FROM segments)"
                ),
                &[&cutoff, &now],
            )
            .await
            .map_err(pg("upkeep: deleting dedupe rows"))?;
    }
    super::rollups::apply_retention(&tx, retention, now).await?;
    tx.commit().await.map_err(pg("upkeep: committing"))?;
    if by_size > 0 {
        StoreTrimmed {
            count: by_size,
            unit: "daily partitions",
            max_bytes: retention.max_bytes,
        }
        .emit();
    }
    if dropped > 0 || dedupe_rows > 0 {
        tracing::info!(partitions = dropped, dedupe_rows, "retention applied");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_are_dates_and_bounds_parse() {
        assert_eq!(partition_name("segments", 0), "segments_19700101");
        assert_eq!(partition_name("segments", 20_793), "segments_20261206");
        assert_eq!(
            bounds("FOR VALUES FROM ('1765065600000000000') TO ('1765152000000000000')"),
            Some((1_765_065_600_000_000_000, 1_765_152_000_000_000_000))
        );
        assert_eq!(bounds("DEFAULT"), None);
    }
}
