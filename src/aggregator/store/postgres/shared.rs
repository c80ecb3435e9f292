//! The rules' shared state in PostgreSQL (schema version 2): alert groups and new-value
//! rules' learned sets, one row each whichever replica wrote it. A group's emission is
//! claimed in one statement (its count added, `last_emit` moved only when the re-emit
//! interval has passed since any replica's emission), so two replicas cannot both emit it;
//! a value is learned by inserting it, so exactly one replica finds it new. Keys are
//! stored with their SHA-256 (a rendered key can be longer than an index entry may be).
//! Hits that do not emit are held here and written once a second, in key order (two
//! replicas' flushes lock rows in the same order, so they cannot deadlock).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

use crate::model::UnixNanos;
use crate::rules::shared::{Claim, Learned, SharedState};
use crate::telemetry::aggregator::SharedStateUnavailable;
use crate::telemetry::InternalEvent;

/// Version 2 of the schema: the rules' shared state.
pub(super) const V2: &str = "
CREATE TABLE alert_groups (
    key_hash bytea PRIMARY KEY,
    key text NOT NULL,
    first_seen bigint NOT NULL,
    last_seen bigint NOT NULL,
    count bigint NOT NULL,
    last_emit bigint NOT NULL
);
CREATE INDEX alert_groups_last_seen ON alert_groups (last_seen);
CREATE TABLE rule_learned_keys (
    key_hash bytea PRIMARY KEY,
    first_seen bigint NOT NULL
);
CREATE TABLE rule_learned_values (
    key_hash bytea NOT NULL,
    value_hash bytea NOT NULL,
    value text NOT NULL,
    first_seen bigint NOT NULL,
    PRIMARY KEY (key_hash, value_hash)
);
";

/// A statement that takes longer than this leaves the replica deciding alone.
const STATEMENT_WAIT: Duration = Duration::from_secs(2);
/// After a failure the store is not asked again for this long (detection must not wait
/// two seconds per record on a database that is down).
const BACK_OFF: Duration = Duration::from_secs(5);
/// Groups no replica has hit for this long are deleted; a later hit opens a new group.
const GROUP_IDLE_NS: i64 = 24 * 3_600_000_000_000;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub(super) struct PgShared {
    pool: Pool,
    handle: tokio::runtime::Handle,
    /// Hits not yet written, by key hash (sorted: the flush's lock order).
    held: BTreeMap<[u8; 32], (String, u64)>,
    down_until: Option<Instant>,
    last_prune: Instant,
}

fn sha(parts: &[&str]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A separator no rendered text holds: ("a", "b|c") and ("a|b", "c") differ.
            ctx.update(&[0]);
        }
        ctx.update(part.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl PgShared {
    pub(super) fn new(pool: Pool, handle: tokio::runtime::Handle) -> PgShared {
        PgShared {
            pool,
            handle,
            held: BTreeMap::new(),
            down_until: None,
            last_prune: Instant::now(),
        }
    }

    /// Runs `f` with a connection, bounded by [`STATEMENT_WAIT`]; `None` (counted, logged
    /// sampled, and the store left alone a while) when it fails.
    fn run<T, F, Fut>(&mut self, what: &'static str, f: F) -> Option<T>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        if self.down_until.is_some_and(|t| Instant::now() < t) {
            SharedStateUnavailable { what, error: None }.emit();
            return None;
        }
        let pool = self.pool.clone();
        let outcome = self.handle.block_on(async move {
            tokio::time::timeout(STATEMENT_WAIT, async move {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                f(client).await.map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
        });
        match outcome {
            Ok(value) => {
                self.down_until = None;
                Some(value)
            }
            Err(error) => {
                self.down_until = Some(Instant::now() + BACK_OFF);
                SharedStateUnavailable {
                    what,
                    error: Some(&error),
                }
                .emit();
                None
            }
        }
    }
}

impl SharedState for PgShared {
    fn hit(&mut self, key: &str) {
        let entry = self
            .held
            .entry(sha(&[key]))
            .or_insert_with(|| (key.to_owned(), 0));
        entry.1 += 1;
    }

    fn claim(&mut self, key: &str, now: UnixNanos, reemit_ns: u64) -> Option<Claim> {
        let hash = sha(&[key]);
        let held = self.held.get(&hash).map_or(0, |(_, n)| *n);
        let (now, reemit) = (now as i64, i64::try_from(reemit_ns).unwrap_or(i64::MAX));
        let key = key.to_owned();
        let row = self.run("claiming an alert group", move |client| async move {
            client
                .query_one(
                    "INSERT INTO alert_groups AS g (key_hash, key, first_seen, last_seen, count, last_emit)
                     VALUES ($1, $2, $3, $3, $4, $3)
                     ON CONFLICT (key_hash) DO UPDATE SET
                         count = g.count + EXCLUDED.count,
                         last_seen = GREATEST(g.last_seen, EXCLUDED.last_seen),
                         last_emit = CASE WHEN EXCLUDED.last_emit - g.last_emit >= $5
                                          THEN EXCLUDED.last_emit ELSE g.last_emit END
                     RETURNING first_seen, count, last_emit",
                    &[&hash.as_slice(), &key, &now, &(held as i64 + 1), &reemit],
                )
                .await
        })?;
        self.held.remove(&hash);
        let (first_seen, count, last_emit): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        Some(if last_emit == now {
            Claim::Emit {
                first_seen: first_seen as u64,
                count: count as u64,
            }
        } else {
            Claim::Held {
                last_emit: last_emit as u64,
            }
        })
    }

    fn learn(&mut self, rule: &str, key: &str, value: &str, now: UnixNanos) -> Option<Learned> {
        let key_hash = sha(&[rule, key]);
        let value_hash = sha(&[value]);
        let (value, now) = (value.to_owned(), now as i64);
        let row = self.run("learning a value", move |client| async move {
            client
                .query_one(
                    "WITH k AS (
                         INSERT INTO rule_learned_keys AS k (key_hash, first_seen) VALUES ($1, $3)
                         ON CONFLICT (key_hash) DO UPDATE SET first_seen = LEAST(k.first_seen, EXCLUDED.first_seen)
                         RETURNING first_seen),
                     v AS (
                         INSERT INTO rule_learned_values (key_hash, value_hash, value, first_seen)
                         VALUES ($1, $2, $4, $3)
                         ON CONFLICT DO NOTHING RETURNING 1)
                     SELECT (SELECT first_seen FROM k), EXISTS (SELECT 1 FROM v)",
                    &[&key_hash.as_slice(), &value_hash.as_slice(), &now, &value],
                )
                .await
        })?;
        let (first_seen, inserted): (i64, bool) = (row.get(0), row.get(1));
        Some(Learned {
            key_first_seen: first_seen as u64,
            known: !inserted,
        })
    }

    fn flush(&mut self, now: UnixNanos) {
        let now = now as i64;
        if self.last_prune.elapsed() >= PRUNE_EVERY {
            self.last_prune = Instant::now();
            let horizon = now - GROUP_IDLE_NS;
            self.run("pruning idle alert groups", move |client| async move {
                client
                    .execute("DELETE FROM alert_groups WHERE last_seen < $1", &[&horizon])
                    .await
            });
        }
        if self.held.is_empty() {
            return;
        }
        let hashes: Vec<Vec<u8>> = self.held.keys().map(|h| h.to_vec()).collect();
        let keys: Vec<String> = self.held.values().map(|(k, _)| k.clone()).collect();
        let counts: Vec<i64> = self.held.values().map(|(_, n)| *n as i64).collect();
        let written = self.run("counting alert group hits", move |client| async move {
            client
                .execute(
                    "INSERT INTO alert_groups AS g (key_hash, key, first_seen, last_seen, count, last_emit)
                     SELECT h, k, $4, $4, c, 0 FROM unnest($1::bytea[], $2::text[], $3::bigint[]) AS u(h, k, c)
                     ON CONFLICT (key_hash) DO UPDATE SET
                         count = g.count + EXCLUDED.count,
                         last_seen = GREATEST(g.last_seen, EXCLUDED.last_seen)",
                    &[&hashes, &keys, &counts, &now],
                )
                .await
        });
        // Kept for the next flush when the store did not take them.
        if written.is_some() {
            self.held.clear();
        }
    }
}
