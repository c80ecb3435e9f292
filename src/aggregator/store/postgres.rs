//! The fleet backend: PostgreSQL (RDS, Aurora, or Debian's), shared by several aggregator
//! replicas. Segments go in with binary `COPY` into a table partitioned by day; one writer
//! thread per replica groups what is queued into one transaction and answers (the ack)
//! only after its commit. Deduplication is the `batches` table's primary key, so a batch
//! resent to another replica after a crash is still stored once: the second insert waits
//! for the first's commit and then finds the row. Partitions are created ahead and dropped
//! at retention by whichever replica holds an advisory lock; schema migrations run under
//! another. No extension is needed.
//!
//! The backend owns a small tokio runtime, so its blocking face (`scan`, the writer thread)
//! works from any thread; the pool (deadpool) holds a few connections.

mod rollups;
mod schema;
mod shared;
mod tls;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::oneshot;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use super::{
    audit_key, encode_segment, identity_of_segment, request_append, request_audit, segments,
    visit_segment, Appended, AuditAppended, EventQuery, Outcome, ReadRange, Request, Retention,
    Store, StoreError,
};
use crate::model::{CollectorIdentity, Event};
use crate::telemetry::aggregator::StoreExpiredOnArrival;
use crate::telemetry::InternalEvent;
use crate::wire::{self, direct};

/// How the PostgreSQL backend connects.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The password (from a file or the environment; never in the URL).
    pub password: Option<String>,
    /// Connections in the pool: one for the writer, one for maintenance, the rest for reads
    /// (a first `new` reads its window's and its baseline's rows and ends on four at once:
    /// 12 lets two such asks run side by side without waiting on the pool).
    pub pool_size: usize,
    /// How long to wait for the server at start before giving up.
    pub connect_wait: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            password: None,
            pool_size: 12,
            connect_wait: Duration::from_secs(60),
        }
    }
}

pub struct PgStore {
    url: String,
    retention: Retention,
    pool: Pool,
    writer: crossbeam_channel::Sender<Request>,
    handle: tokio::runtime::Handle,
    runtime: Option<tokio::runtime::Runtime>,
}

/// Refuses a URL that carries a password: it would show in logs, `ps` and `--help`. The
/// URL's libpq TLS parameters (`sslmode`, `sslrootcert`) come back beside the rest.
pub(super) fn check_url(url: &str) -> Result<(tokio_postgres::Config, tls::Settings), String> {
    // Not naming the URL: it may carry the password refused below.
    let (rest, settings) = tls::split_url(url).map_err(|e| format!("the store URL: {e}"))?;
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e| format!("{url:?} is not a PostgreSQL URL: {e}"))?;
    if config.get_password().is_some() {
        return Err("the PostgreSQL URL carries a password: give it in \
             --store-password-file or PROCFLOW_STORE_PASSWORD instead (a URL shows in logs \
             and process lists)"
            .into());
    }
    config.ssl_mode(settings.ssl_mode());
    Ok((config, settings))
}

/// A connection-level failure (the server down, starting, or unreachable), worth waiting
/// for; anything else (a wrong password, a missing database) is not.
fn is_transient(error: &tokio_postgres::Error) -> bool {
    if tls::is_refusal(error) {
        return false;
    }
    match error.code() {
        None => true,
        Some(code) => [
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code),
    }
}

/// What the server or the connection said: the driver's `Display` is only "db error".
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    }
}

fn pg(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |source| {
        if source.is_closed() || source.code().is_none() {
            StoreError::Unavailable(format!("{what}: {}", describe(&source)))
        } else {
            StoreError::Postgres {
                what,
                detail: describe(&source),
                source,
            }
        }
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(source) => pg("connecting")(source),
        other => StoreError::Unavailable(format!("connection pool: {other}")),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, StoreError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("store-pg")
        .enable_all()
        .build()
        .map_err(|e| StoreError::Config(format!("starting the store's runtime: {e}")))
}

fn pool(url: &str, options: &PgOptions) -> Result<Pool, StoreError> {
    let (mut config, settings) = check_url(url).map_err(StoreError::Config)?;
    if let Some(password) = &options.password {
        config.password(password.as_bytes());
    }
    if config.get_application_name().is_none() {
        config.application_name("procflow-aggregator");
    }
    config.connect_timeout(Duration::from_secs(5));
    let connector = tls::MakeRustls::new(&settings).map_err(StoreError::Config)?;
    let manager = Manager::from_config(
        config,
        connector,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(options.pool_size.max(3))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| StoreError::Config(format!("connection pool: {e}")))
}

/// A connection from the pool, waiting up to `wait` for a server that is down or starting.
/// A refusal (wrong password, no such database) is an error at once.
async fn first_connection(
    pool: &Pool,
    url: &str,
    wait: Duration,
) -> Result<deadpool_postgres::Object, StoreError> {
    let deadline = Instant::now() + wait;
    let mut logged = false;
    loop {
        match pool.get().await {
            Ok(client) => return Ok(client),
            Err(deadpool_postgres::PoolError::Backend(e)) if !is_transient(&e) => {
                return Err(StoreError::Config(format!("{url}: {}", describe(&e))));
            }
            Err(e) if Instant::now() >= deadline => {
                let e = match e {
                    deadpool_postgres::PoolError::Backend(e) => describe(&e),
                    other => other.to_string(),
                };
                return Err(StoreError::Unavailable(format!(
                    "{url}: not reachable within {wait:?}: {e}"
                )));
            }
            Err(error) => {
                if !logged {
                    tracing::warn!(%url, %error, "waiting for the database");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// `procflow store migrate` against PostgreSQL.
pub(super) fn migrate_only(url: &str, options: &PgOptions) -> Result<(u32, u32), StoreError> {
    let runtime = runtime()?;
    let pool = pool(url, options)?;
    let result = runtime.block_on(async {
        let mut client = first_connection(&pool, url, options.connect_wait).await?;
        schema::migrate(&mut client, schema::LATEST).await
    });
    drop(pool);
    runtime.shutdown_background();
    result
}

impl PgStore {
    /// Connects (waiting for the server up to `options.connect_wait`), runs the
    /// migrations, makes sure today's and the next days' partitions exist, and starts the
    /// writer thread and the maintenance task.
    pub fn open(url: &str, options: &PgOptions, retention: Retention) -> Result<Self, StoreError> {
        Self::open_at(url, options, retention, schema::LATEST)
    }

    /// As `open`, migrating only up to `version` (tests of migrations from older schemas).
    #[doc(hidden)]
    pub fn open_at(
        url: &str,
        options: &PgOptions,
        retention: Retention,
        version: u32,
    ) -> Result<Self, StoreError> {
        let runtime = runtime()?;
        let pool = pool(url, options)?;
        runtime.block_on(async {
            let mut client = first_connection(&pool, url, options.connect_wait).await?;
            schema::migrate(&mut client, version).await?;
            schema::maintain(&mut client, retention, crate::model::now_ns()).await?;
            Ok::<_, StoreError>(())
        })?;
        let maintenance_pool = pool.clone();
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                let result = async {
                    let mut client = maintenance_pool.get().await.map_err(pool_error)?;
                    schema::maintain(&mut client, retention, crate::model::now_ns()).await
                }
                .await;
                if let Err(error) = result {
                    tracing::warn!(%error, "store maintenance (partitions, retention) failed");
                }
            }
        });
        let (writer, requests) = crossbeam_channel::bounded::<Request>(1024);
        let handle = runtime.handle().clone();
        let writer_pool = pool.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(&handle, &writer_pool, requests, retention))
            .map_err(|e| StoreError::Config(format!("starting the store writer: {e}")))?;
        Ok(PgStore {
            url: url.to_owned(),
            retention,
            pool,
            writer,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// The URL (without a password) this store reads and writes.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store's own runtime runs `f` to completion (from a thread outside any runtime,
    /// or a blocking one).
    fn block_on<T>(&self, f: impl std::future::Future<Output = T> + Send) -> T
    where
        T: Send,
    {
        self.handle.block_on(f)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropping a runtime inside another's async context panics: let it wind down alone.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Store for PgStore {
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

    fn stored_after(&self, collector_id: &str, seq: u64) -> Result<bool, StoreError> {
        // Asked from the aggregator's blocking threads, where another runtime's `block_on`
        // panics: the query runs on the store's runtime and its answer comes back.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (pool, collector_id) = (self.pool.clone(), collector_id.to_owned());
        self.handle.spawn(async move {
            let answer = async {
                let client = pool.get().await.map_err(pool_error)?;
                let row = client
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM batches WHERE collector = $1 AND seq > $2)",
                        &[&collector_id, &(seq as i64)],
                    )
                    .await
                    .map_err(pg("asking whether a collector streams to another replica"))?;
                Ok(row.get(0))
            };
            let _ = tx.send(answer.await);
        });
        rx.recv()
            .map_err(|_| StoreError::Unavailable("the store's runtime stopped".into()))?
    }

    fn shared_rule_state(&self) -> Option<Box<dyn crate::rules::shared::SharedState>> {
        Some(Box::new(shared::PgShared::new(
            self.pool.clone(),
            self.handle.clone(),
        )))
    }

    fn maintain(&self, now: u64) -> Result<(), StoreError> {
        let retention = self.retention;
        self.block_on(async {
            let mut client = self.pool.get().await.map_err(pool_error)?;
            schema::maintain(&mut client, retention, now).await
        })?;
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
        let filter = Filter::of(q, until);
        // On the store's runtime (the caller may be on another's blocking thread).
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let pool = self.pool.clone();
        self.handle.spawn(async move {
            let _ = tx.send(first_segments(&pool, &filter).await);
        });
        let segments = rx
            .recv()
            .map_err(|_| StoreError::Unavailable("the store's runtime stopped".into()))??;
        let limits = wire::Limits::default();
        segments
            .into_iter()
            .map(|(id, body)| identity_of_segment(id, body.into(), &limits))
            .collect()
    }

    fn scan(
        &self,
        q: &EventQuery,
        visit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<bool, StoreError> {
        let until = if q.until == 0 { u64::MAX } else { q.until };
        let range = |after| ReadRange {
            store: self.url.clone(),
            since: q.since,
            until,
            after,
        };
        // Rows come from a task on the store's runtime through a small queue, a page at a
        // time (not a row at a time: waking this thread for each row cost more than
        // reading it): the caller decodes and visits at its pace, and stops the read by
        // dropping the queue.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<SegmentRead>(4);
        let pool = self.pool.clone();
        let filter = Filter::of(q, until);
        self.handle.spawn(async move {
            if let Err(e) = read_segments(&pool, &filter, &tx).await {
                let _ = tx.send(Err(e.to_string())).await;
            }
        });
        let limits = wire::Limits::default();
        let mut last = None;
        while let Some(page) = rx.blocking_recv() {
            let page = page.map_err(|e| StoreError::Read {
                range: Box::new(range(last)),
                source: e.into(),
            })?;
            for (id, received_at, body) in page {
                if !visit_segment(id, received_at, body.into(), &limits, visit)? {
                    return Ok(false);
                }
                last = Some((id, received_at));
            }
        }
        Ok(true)
    }
}

/// A page of segments read (id, arrival time, body), or why the read failed.
type SegmentRead = Result<Vec<(i64, i64, Vec<u8>)>, String>;

/// A scan's WHERE clause, owned so the reading task can take it.
struct Filter {
    since: i64,
    until: i64,
    kinds: Vec<String>,
    pods: Vec<String>,
    namespaces: Vec<String>,
}

impl Filter {
    fn of(q: &EventQuery, until: u64) -> Filter {
        Filter {
            since: i64::try_from(q.since).unwrap_or(i64::MAX),
            until: i64::try_from(until).unwrap_or(i64::MAX),
            kinds: q.kinds.iter().map(|k| k.as_str().to_owned()).collect(),
            pods: q.pods.clone(),
            namespaces: q.namespaces.clone(),
        }
    }
}

impl Filter {
    /// `select` with this filter's WHERE clause, and its parameters.
    fn clause(&self, select: &str) -> (String, Vec<&(dyn ToSql + Sync)>) {
        let mut sql = format!("{select} WHERE received_at >= $1 AND received_at <= $2");
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.since, &self.until];
        for (column, values) in [
            ("kind", &self.kinds),
            ("pod", &self.pods),
            ("namespace", &self.namespaces),
        ] {
            if !values.is_empty() {
                params.push(values);
                sql.push_str(&format!(" AND {column} = ANY(${})", params.len()));
            }
        }
        (sql, params)
    }
}

/// Each collector's first segment matching `f`: (id, body), in id order.
///
/// Each first id's body is looked up by the id index, in the window's partitions (a
/// LATERAL lookup, so always a nested loop). Joined plainly, the planner guessed 200
/// collectors (the partitioned parent has no statistics: autovacuum never analyzes it) and
/// merge-joined them against every segment of every partition in id order: on a day of
/// 1.5 M segments, 0.3–1.2 s for a window's 1,000 heartbeat bodies, against 85 ms now.
async fn first_segments(pool: &Pool, f: &Filter) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let (sql, params) = f.clause("SELECT min(id) AS id FROM segments");
    let sql = format!(
        "SELECT f.id, s.body FROM ({sql} GROUP BY collector) f CROSS JOIN LATERAL \
         (SELECT body FROM segments s WHERE s.id = f.id \
         AND s.received_at >= $1 AND s.received_at <= $2) s ORDER BY f.id"
    );
    let rows = client
        .query(&sql, &params)
        .await
        .map_err(pg("reading the window's sources"))?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(pg("reading the window's sources"))
}

/// Reads the matching segments in id order (`read_paged`) into `tx`; returns early when
/// the reader is gone.
async fn read_segments(
    pool: &Pool,
    f: &Filter,
    tx: &tokio::sync::mpsc::Sender<SegmentRead>,
) -> Result<(), StoreError> {
    let (mut sql, params) = f.clause("SELECT id, received_at, body FROM segments");
    sql.push_str(" ORDER BY id");
    read_paged(pool, &sql, &params, "reading segments", |rows| async move {
        let page = rows
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(pg("reading segments"))?;
        Ok(tx.send(Ok(page)).await.is_ok())
    })
    .await
}

/// Rows a page of [`read_paged`] holds.
const PAGE_ROWS: i32 = 256;

/// Reads the rows of `sql` in one read-only snapshot, a page at a time through a portal
/// (so a long read is never held in memory), handing each page to `page` until it answers
/// false. The next page is asked for before this one is handed over, so the server makes
/// it while `page` works: asked for only after, the server idled for each page's round
/// trip and hand-over (a day's rollup rows are ~90 pages: 400–570 ms wall for 150–330 ms
/// of the server's work at load 4). A reader that stops early costs one page more.
async fn read_paged<F, Fut>(
    pool: &Pool,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    what: &'static str,
    mut page: F,
) -> Result<(), StoreError>
where
    F: FnMut(Vec<tokio_postgres::Row>) -> Fut,
    Fut: std::future::Future<Output = Result<bool, StoreError>>,
{
    let mut client = pool.get().await.map_err(pool_error)?;
    let read = client
        .build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(pg("starting a read"))?;
    let statement = read.prepare(sql).await.map_err(pg("preparing a read"))?;
    let portal = read.bind(&statement, params).await.map_err(pg(what))?;
    let mut next = read
        .query_portal_raw(&portal, PAGE_ROWS)
        .await
        .map_err(pg(what))?;
    loop {
        let rows = page_of(next).await.map_err(pg(what))?;
        let done = rows.len() < PAGE_ROWS as usize;
        if done {
            return page(rows).await.map(drop);
        }
        // Sent now; its rows queue behind this page's (an exhausted portal answers none).
        next = read
            .query_portal_raw(&portal, PAGE_ROWS)
            .await
            .map_err(pg(what))?;
        if !page(rows).await? {
            return Ok(());
        }
    }
}

/// The rows of one page's answer.
async fn page_of(
    answer: tokio_postgres::RowStream,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    use tokio_stream::StreamExt;

    let mut answer = std::pin::pin!(answer);
    let mut rows = Vec::with_capacity(PAGE_ROWS as usize);
    while let Some(row) = answer.next().await {
        rows.push(row?);
    }
    Ok(rows)
}

fn write_loop(
    runtime: &tokio::runtime::Handle,
    pool: &Pool,
    requests: crossbeam_channel::Receiver<Request>,
    retention: Retention,
) {
    // Days that have a partition, as this writer last saw them (forgotten after a failure:
    // upkeep may have dropped one meanwhile).
    let mut known_days = std::collections::HashSet::new();
    while let Ok(first) = requests.recv() {
        // Group what is queued into one transaction: one commit (one WAL flush) for many.
        let mut group = vec![first];
        while group.len() < 256 {
            match requests.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        match runtime.block_on(commit(pool, &group, retention, &mut known_days)) {
            Ok(outcomes) => {
                for (request, outcome) in group.into_iter().zip(outcomes) {
                    request.answer(Ok(outcome));
                }
            }
            Err(error) => {
                known_days.clear();
                // Nothing of the group was stored: every sender is told, none is acked.
                let message = error.to_string();
                for request in group {
                    request.answer(Err(StoreError::Unavailable(message.clone())));
                }
            }
        }
    }
}

/// `s` as PostgreSQL can hold it: a `text` value cannot contain NUL, which a writer may put
/// in its collector id (or an audit client in an audit ID). Refused, it would fail the
/// whole group commit, again at every resend; replaced, it cannot: the segment's body keeps
/// the exact value, and a key changed this way can only meet another of the same writer.
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(s)
    }
}

const SEGMENT_TYPES: [Type; 7] = [
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::BYTEA,
];

/// Stores a group in one transaction: claims the batches' (collector, seq) keys and the
/// audit events' keys first (a key claimed before, by this replica or another, makes that
/// request a duplicate), then copies the new requests' segments in.
async fn commit(
    pool: &Pool,
    group: &[Request],
    retention: Retention,
    known_days: &mut std::collections::HashSet<i64>,
) -> Result<Vec<Outcome>, StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg("beginning"))?;
    let now = crate::model::now_ns() as i64;

    // Batch keys, sorted (two replicas claiming overlapping keys lock them in one order).
    let mut keys: Vec<(Cow<'_, str>, i64)> = group
        .iter()
        .filter_map(|r| match r {
            Request::Append {
                collector_id, seq, ..
            } => Some((text(collector_id), *seq as i64)),
            Request::Audit { .. } => None,
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut claimed: std::collections::HashSet<(String, i64)> = std::collections::HashSet::new();
    if !keys.is_empty() {
        let (collectors, seqs): (Vec<&str>, Vec<i64>) =
            keys.iter().map(|(c, s)| (c.as_ref(), *s)).unzip();
        let rows = tx
            .query(
                "INSERT INTO batches (collector, seq, received_at) \
                 SELECT c, s, $3 FROM unnest($1::text[], $2::int8[]) AS k(c, s) \
                 ON CONFLICT DO NOTHING RETURNING collector, seq",
                &[&collectors, &seqs, &now],
            )
            .await
            .map_err(pg("claiming batches"))?;
        for row in rows {
            claimed.insert((
                row.try_get(0).map_err(pg("claiming batches"))?,
                row.try_get(1).map_err(pg("claiming batches"))?,
            ));
        }
    }

    // Audit keys: one per audit event of the group.
    let mut audit_fresh: Vec<Vec<bool>> = Vec::new();
    {
        let mut cluster = Vec::new();
        let mut id = Vec::new();
        let mut stage = Vec::new();
        let mut requested = Vec::new();
        for request in group {
            if let Request::Audit { events, .. } = request {
                for (c, a, s, r) in events.iter().filter_map(audit_key) {
                    cluster.push(text(c));
                    id.push(text(a));
                    stage.push(s);
                    requested.push(r);
                }
            }
        }
        let mut fresh_keys = std::collections::HashSet::new();
        if !cluster.is_empty() {
            let rows = tx
                .query(
                    "INSERT INTO audit_seen (cluster, audit_id, stage, request_received, received_at) \
                     SELECT c, a, s, r, $5 FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[]) AS k(c, a, s, r) \
                     ON CONFLICT DO NOTHING RETURNING cluster, audit_id, stage, request_received",
                    &[&cluster, &id, &stage, &requested, &now],
                )
                .await
                .map_err(pg("claiming audit events"))?;
            for row in rows {
                let key: (String, String, i32, i64) = (
                    row.try_get(0).map_err(pg("claiming audit events"))?,
                    row.try_get(1).map_err(pg("claiming audit events"))?,
                    row.try_get(2).map_err(pg("claiming audit events"))?,
                    row.try_get(3).map_err(pg("claiming audit events"))?,
                );
                fresh_keys.insert(key);
            }
        }
        for request in group {
            if let Request::Audit { events, .. } = request {
                audit_fresh.push(
                    events
                        .iter()
                        .map(|e| match audit_key(e) {
                            // Taken on first use: a key twice in one group is stored once.
                            Some((c, a, s, r)) => fresh_keys.remove(&(
                                text(c).into_owned(),
                                text(a).into_owned(),
                                s,
                                r,
                            )),
                            None => false,
                        })
                        .collect(),
                );
            }
        }
    }

    // What each request stores: its segments (indices into its events), in order.
    let mut outcomes = Vec::with_capacity(group.len());
    let mut chosen: Vec<(&[Event], Vec<Vec<usize>>)> = Vec::with_capacity(group.len());
    let mut audits = audit_fresh.into_iter();
    for request in group {
        match request {
            Request::Append {
                collector_id,
                seq,
                events,
                ..
            } => {
                // Taken on first use: the same batch twice in one group is stored once.
                if claimed.remove(&(text(collector_id).into_owned(), *seq as i64)) {
                    outcomes.push(Outcome::Stored);
                    chosen.push((events, segments(events)));
                } else {
                    outcomes.push(Outcome::Duplicate);
                }
            }
            Request::Audit { events, .. } => {
                let fresh = audits.next().unwrap_or_default();
                let segments = fresh
                    .iter()
                    .enumerate()
                    .filter_map(|(i, f)| f.then_some(vec![i]))
                    .collect();
                outcomes.push(Outcome::Audit(fresh));
                chosen.push((events, segments));
            }
        }
    }

    // Arrival times are the aggregator's clock, but an audit event keeps the API server's
    // (a backfill's may be months old): a segment already past retention is not kept (the
    // next upkeep would drop it), and a day inside it without a partition gets one, so no
    // such event can fail the group at every resend.
    let cutoff =
        now.saturating_sub(i64::try_from(retention.max_age.as_nanos()).unwrap_or(i64::MAX));
    let days: std::collections::BTreeSet<i64> = chosen
        .iter()
        .flat_map(|(events, segments)| segments.iter().map(|s| events[s[0]].received_at as i64))
        .filter(|at| *at >= cutoff)
        .map(|at| at.div_euclid(schema::DAY_NS))
        .collect();
    schema::ensure_days(&tx, &days, known_days).await?;

    let sink = tx
        .copy_in(
            "COPY segments (received_at, kind, pod, namespace, collector, count, body) FROM STDIN BINARY",
        )
        .await
        .map_err(pg("copying segments"))?;
    let writer = BinaryCopyInWriter::new(sink, &SEGMENT_TYPES);
    let mut writer = std::pin::pin!(writer);
    let mut body = Vec::with_capacity(64 * 1024);
    let mut scratch = direct::Scratch::default();
    let mut expired = 0u64;
    for (events, segments) in chosen {
        for segment in segments {
            if (events[segment[0]].received_at as i64) < cutoff {
                expired += segment.len() as u64;
                continue;
            }
            let row = encode_segment(events, &segment, &mut body, &mut scratch);
            let count = i32::try_from(row.count).unwrap_or(i32::MAX);
            writer
                .as_mut()
                .write(&[
                    &row.received_at,
                    &row.kind,
                    &text(row.pod),
                    &text(row.namespace),
                    &text(row.collector),
                    &count,
                    &body.as_slice(),
                ])
                .await
                .map_err(pg("copying segments"))?;
        }
    }
    if expired > 0 {
        StoreExpiredOnArrival { records: expired }.emit();
    }
    writer
        .as_mut()
        .finish()
        .await
        .map_err(pg("copying segments"))?;
    tx.commit().await.map_err(pg("committing"))?;
    Ok(outcomes)
}
