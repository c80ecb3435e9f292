//! The gRPC exporter: batches go out on one `Ingest.Stream`, and stay buffered until the
//! aggregator acknowledges their sequence number. After a disconnect everything unacknowledged
//! is sent again (the aggregator deduplicates), after an exponential backoff with jitter.
//! Batches wait in a bounded memory buffer, then in the on-disk spool (FIFO across both);
//! when the spool is full its oldest batch is dropped and counted. Without a spool, a full
//! memory buffer stops intake and tells the record queue's senders so ([`Outlet`]): only
//! then do they drop records instead of waiting for room.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::codec::{ingest_stream_path, EncodedBatch, EncodedBatchCodec, INGEST_METHOD};
use crate::pipeline::queue::Outlet;
use crate::pipeline::spool::Spool;
use crate::proto::v1 as pb;
use crate::telemetry::collector::BatchDropped;
use crate::telemetry::InternalEvent;
use crate::transport::{warn_if_plaintext, TlsFiles, TokenSource};

/// Process-wide exporter counters, reported in the collector's heartbeat.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub batches_sent: AtomicU64,
    pub batches_acked: AtomicU64,
    pub batches_rejected: AtomicU64,
    pub batches_spooled: AtomicU64,
    pub records_dropped: AtomicU64,
    pub reconnects: AtomicU64,
}

pub static EXPORT_STATS: ExportStats = ExportStats {
    batches_sent: AtomicU64::new(0),
    batches_acked: AtomicU64::new(0),
    batches_rejected: AtomicU64::new(0),
    batches_spooled: AtomicU64::new(0),
    records_dropped: AtomicU64::new(0),
    reconnects: AtomicU64::new(0),
};

impl ExportStats {
    pub fn counters(&self) -> Vec<(String, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("export_batches_sent".into(), get(&self.batches_sent)),
            ("export_batches_acked".into(), get(&self.batches_acked)),
            (
                "export_batches_rejected".into(),
                get(&self.batches_rejected),
            ),
            ("export_batches_spooled".into(), get(&self.batches_spooled)),
            ("export_records_dropped".into(), get(&self.records_dropped)),
            ("export_reconnects".into(), get(&self.reconnects)),
        ]
    }
}

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct ExporterConfig {
    pub endpoint: String,
    /// Read at each connection: a rotated token file is picked up on the next one.
    pub token: TokenSource,
    pub tls: TlsFiles,
    /// Batches held in memory before the spool takes over.
    pub memory_batches: usize,
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: u64,
    /// How long shutdown waits for the last acknowledgements before spooling the rest.
    pub drain_timeout: Duration,
}

/// Batches waiting for an acknowledgement: memory first, then the spool, in order.
struct Buffer {
    memory: VecDeque<EncodedBatch>,
    capacity: usize,
    spool: Option<Spool>,
}

impl Buffer {
    fn push(&mut self, batch: EncodedBatch) {
        let spool_has_older = self.spool.as_ref().is_some_and(|s| !s.is_empty());
        if self.memory.len() < self.capacity && !spool_has_older {
            self.memory.push_back(batch);
            return;
        }
        match &mut self.spool {
            Some(spool) => {
                EXPORT_STATS.batches_spooled.fetch_add(1, Ordering::Relaxed);
                if let Err(error) = spool.push(&batch) {
                    drop_batch(&batch, &format!("spool write failed: {error}"));
                }
            }
            None => {
                // No spool: the oldest unacknowledged batch makes room.
                if let Some(oldest) = self.memory.pop_front() {
                    drop_batch(&oldest, "memory buffer full and no spool configured");
                }
                self.memory.push_back(batch);
            }
        }
    }

    /// Moves spooled batches into memory as room frees up.
    fn refill(&mut self) {
        let Some(spool) = &mut self.spool else { return };
        while self.memory.len() < self.capacity {
            match spool.pop() {
                Ok(Some(batch)) => self.memory.push_back(batch),
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "unreadable spool entry skipped (counted)");
                    EXPORT_STATS.records_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.memory.is_empty() && self.spool.as_ref().is_none_or(Spool::is_empty)
    }

    /// Without a spool, a full memory buffer stops intake (the batcher, then the record queue
    /// behind it, absorb and count the overflow) rather than dropping batches in flight.
    fn has_room(&self) -> bool {
        self.spool.is_some() || self.memory.len() < self.capacity
    }

    /// Shutdown: what is still in memory goes to the spool for the next run.
    fn persist(&mut self) {
        if let Some(spool) = &mut self.spool {
            let rest: Vec<EncodedBatch> = self.memory.drain(..).collect();
            if let Err(error) = spool.push_front_all(&rest) {
                tracing::warn!(%error, "could not spool unacknowledged batches at shutdown");
            }
        }
        for batch in self.memory.drain(..) {
            drop_batch(&batch, "shutdown without a spool before acknowledgement");
        }
    }
}

pub(crate) fn drop_batch(batch: &EncodedBatch, why: &str) {
    let records = batch.records as u64;
    EXPORT_STATS
        .records_dropped
        .fetch_add(records, Ordering::Relaxed);
    BatchDropped {
        seq: batch.seq,
        records,
        why,
    }
    .emit();
}

/// Why the exporter could not start. Once running it does not fail: a lost connection is
/// retried with backoff while memory and the spool buffer.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("opening spool {path}: {source}")]
    Spool {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Endpoint(#[from] crate::transport::TransportError),
}

/// Why one connection to the aggregator ended (logged, then retried).
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connecting: {0}")]
    Connect(tonic::transport::Error),
    #[error("connection not ready: {0}")]
    NotReady(tonic::transport::Error),
    #[error("opening the ingest stream: {0}")]
    Open(tonic::Status),
    #[error("the aggregator closed the stream")]
    Closed,
    #[error("stream failed: {0}")]
    Stream(tonic::Status),
    /// The credential file could not be read (it is re-read per connection, for rotation).
    #[error(transparent)]
    Credential(#[from] crate::transport::TransportError),
}

/// Runs until `batches` closes and everything is acknowledged or spooled (or the drain
/// timeout passes).
pub async fn run(
    config: ExporterConfig,
    batches: mpsc::Receiver<EncodedBatch>,
) -> Result<(), ExportError> {
    run_with_outlet(config, batches, Outlet::default()).await
}

/// [`run`], saying through `outlet` whether it can take more batches: the record queue's
/// senders wait for room while it can, and drop (counted) only while it cannot.
pub async fn run_with_outlet(
    config: ExporterConfig,
    mut batches: mpsc::Receiver<EncodedBatch>,
    outlet: Outlet,
) -> Result<(), ExportError> {
    let spool =
        match &config.spool_dir {
            Some(dir) => Some(Spool::open(dir, config.spool_max_bytes).map_err(|source| {
                ExportError::Spool {
                    path: dir.clone(),
                    source,
                }
            })?),
            None => None,
        };
    let mut buffer = Buffer {
        memory: VecDeque::new(),
        capacity: config.memory_batches.max(1),
        spool,
    };
    buffer.refill();
    let endpoint = endpoint(&config)?;
    let mut backoff = Backoff::new();
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        if closing.is_some() && buffer.is_empty() {
            return Ok(());
        }
        if closing.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
            buffer.persist();
            return Ok(());
        }
        match session(
            &endpoint,
            &config,
            &mut buffer,
            &mut batches,
            &mut closing,
            &outlet,
        )
        .await
        {
            Ok(()) => return Ok(()),
            Err(error) => {
                EXPORT_STATS.reconnects.fetch_add(1, Ordering::Relaxed);
                let wait = backoff.next();
                tracing::warn!(%error, retry_in = ?wait, "aggregator unreachable; buffering");
                // Keep accepting batches while waiting.
                let mut intake = Intake {
                    buffer: &mut buffer,
                    batches: &mut batches,
                    closing: &mut closing,
                    outlet: &outlet,
                    drain_timeout: config.drain_timeout,
                };
                if intake.during(tokio::time::sleep(wait)).await.is_none() {
                    buffer.persist();
                    return Ok(());
                }
            }
        }
    }
}

/// One connection: send what is buffered, then new batches; pop what is acknowledged.
async fn session(
    endpoint: &Endpoint,
    config: &ExporterConfig,
    buffer: &mut Buffer,
    batches: &mut mpsc::Receiver<EncodedBatch>,
    closing: &mut Option<tokio::time::Instant>,
    outlet: &Outlet,
) -> Result<(), SessionError> {
    let mut intake = Intake {
        buffer,
        batches,
        closing,
        outlet,
        drain_timeout: config.drain_timeout,
    };
    let Some(channel) = intake.during(endpoint.connect()).await else {
        intake.buffer.persist();
        return Ok(());
    };
    let channel: Channel = channel.map_err(SessionError::Connect)?;
    // The generated client's call, with a codec that sends the batches' bytes as they are.
    let mut client = tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<EncodedBatch>(256);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.extensions_mut().insert(tonic::GrpcMethod::new(
        pb::ingest_server::SERVICE_NAME,
        INGEST_METHOD,
    ));
    if let Some(token) = config.token.read()? {
        warn_if_plaintext(&config.endpoint, true);
        token.authorize(&mut request);
    }
    // Sending may block on the window: send the buffered head before awaiting the response.
    let mut sent = 0usize;
    while sent < intake.buffer.memory.len()
        && tx.try_send(intake.buffer.memory[sent].clone()).is_ok()
    {
        sent += 1;
    }
    let Some(ready) = intake.during(client.ready()).await else {
        intake.buffer.persist();
        return Ok(());
    };
    ready.map_err(SessionError::NotReady)?;
    let opening = client.streaming(request, ingest_stream_path(), EncodedBatchCodec);
    let Some(opened) = intake.during(opening).await else {
        intake.buffer.persist();
        return Ok(());
    };
    let mut acks = opened.map_err(SessionError::Open)?.into_inner();
    let Intake {
        buffer,
        batches,
        closing,
        ..
    } = intake;
    tracing::info!(endpoint = %config.endpoint, "connected to the aggregator");
    loop {
        while sent < buffer.memory.len() {
            match tx.try_send(buffer.memory[sent].clone()) {
                Ok(()) => {
                    sent += 1;
                    EXPORT_STATS.batches_sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => break,
            }
        }
        if closing.is_some() && buffer.is_empty() {
            return Ok(());
        }
        outlet.set_blocked(!buffer.has_room());
        let deadline =
            closing.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            b = batches.recv(), if closing.is_none() && buffer.has_room() => match b {
                Some(b) => buffer.push(b),
                None => *closing = Some(tokio::time::Instant::now() + config.drain_timeout),
            },
            ack = acks.message() => match ack {
                Ok(Some(ack)) => {
                    if ack.rejected {
                        EXPORT_STATS.batches_rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(seq = ack.seq, error = %ack.error, "aggregator rejected a batch (not resent)");
                    }
                    while buffer.memory.front().is_some_and(|b| b.seq <= ack.seq) {
                        if let Some(acked) = buffer.memory.pop_front() {
                            if ack.rejected && acked.seq == ack.seq {
                                drop_batch(&acked, "rejected by the aggregator");
                            }
                        }
                        sent = sent.saturating_sub(1);
                        EXPORT_STATS.batches_acked.fetch_add(1, Ordering::Relaxed);
                    }
                    buffer.refill();
                }
                Ok(None) => return Err(SessionError::Closed),
                Err(status) => return Err(SessionError::Stream(status)),
            },
            _ = tokio::time::sleep_until(deadline), if closing.is_some() => {
                buffer.persist();
                return Ok(());
            }
        }
    }
}

/// What keeps taking batches while the exporter waits on something else (connecting,
/// opening the stream, backing off), so a slow or unreachable aggregator does not hold up
/// the record queue's senders while memory or the spool can still buffer.
struct Intake<'a> {
    buffer: &'a mut Buffer,
    batches: &'a mut mpsc::Receiver<EncodedBatch>,
    closing: &'a mut Option<tokio::time::Instant>,
    outlet: &'a Outlet,
    drain_timeout: Duration,
}

impl Intake<'_> {
    /// Awaits `work` while buffering new batches. `None` when shutdown's drain deadline
    /// passed first.
    async fn during<T>(&mut self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::pin!(work);
        loop {
            self.outlet.set_blocked(!self.buffer.has_room());
            let deadline = self
                .closing
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                out = &mut work => return Some(out),
                b = self.batches.recv(), if self.closing.is_none() && self.buffer.has_room() => match b {
                    Some(b) => self.buffer.push(b),
                    None => *self.closing = Some(tokio::time::Instant::now() + self.drain_timeout),
                },
                _ = tokio::time::sleep_until(deadline), if self.closing.is_some() => return None,
            }
        }
    }
}

fn endpoint(config: &ExporterConfig) -> Result<Endpoint, ExportError> {
    Ok(crate::transport::endpoint(&config.endpoint, &config.tls)?
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30)))
}

/// Exponential backoff from 100 ms to 10 s with full jitter.
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn new() -> Self {
        Backoff { attempt: 0 }
    }

    fn next(&mut self) -> Duration {
        let ceiling = 100u64.saturating_mul(1 << self.attempt.min(7)).min(10_000);
        self.attempt += 1;
        Duration::from_millis(fastrand::u64(ceiling / 2..=ceiling))
    }
}
