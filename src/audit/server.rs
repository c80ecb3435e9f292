//! The aggregator's audit endpoints (`--audit-listen`), on their own listener beside gRPC:
//!
//! - `POST /audit/webhook/{cluster}`: the kube-apiserver audit webhook backend (batch mode),
//!   an `EventList` body, `Authorization: Bearer <cluster's webhook token>`. Answered with
//!   JSON `{"stored", "duplicates", "rejected", "errors"}`.
//! - `POST /audit/firehose/{cluster}`: a Kinesis Data Firehose HTTP endpoint destination fed
//!   by the cluster's CloudWatch Logs subscription, `X-Amz-Firehose-Access-Key: <cluster's
//!   key>`. Answered in Firehose's response format ([`super::firehose::Response`]).
//!
//! The credential is checked before the body is read; bodies are bounded
//! (`--audit-max-body-bytes`, also after `Content-Encoding: gzip`), decoding runs on a
//! blocking thread, a few requests at a time, and the answer comes once the store has kept
//! the events. TLS uses the aggregator's certificate (`--tls-cert`, `--tls-key`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::net::TcpListener;
use tokio_rustls::rustls;

use super::credentials::{Adapter, Credentials, CredentialsError};
use super::event::{self, Notes};
use super::firehose;
use super::ingest::{count_notes, AuditIngest};
use crate::telemetry::audit::{
    AuditRecordsSkipped, AuditRejected, AuditRequestAnswered, AuditTrouble,
};
use crate::telemetry::InternalEvent;

/// Requests decoded and stored at once; others wait (up to [`BUSY_WAIT`]) for a turn.
const CONCURRENT_REQUESTS: usize = 4;
const BUSY_WAIT: Duration = Duration::from_secs(30);
/// Open connections; beyond, new ones are closed at once.
const MAX_CONNECTIONS: usize = 512;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A body must arrive within this (a slow sender holds a connection, not the server).
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Firehose request IDs remembered per aggregator, to answer a replay without work.
const REMEMBERED_REQUESTS: usize = 16_384;
const CREDENTIALS_CHECK_EVERY: Duration = Duration::from_secs(5);
/// Rejections spelled out in a webhook answer (all are counted).
const ERRORS_SHOWN: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {path}: {msg}")]
    Tls { path: PathBuf, msg: String },
    #[error("audit credentials: {0}")]
    Credentials(#[from] CredentialsError),
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub clusters_file: PathBuf,
    /// PEM certificate chain and key; plain HTTP without.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub max_body_bytes: usize,
    pub firehose_bounds: firehose::Bounds,
}

struct Shared {
    ingest: AuditIngest,
    credentials: RwLock<Arc<Credentials>>,
    max_body_bytes: usize,
    firehose_bounds: firehose::Bounds,
    turns: tokio::sync::Semaphore,
    firehose_seen: Mutex<Recent>,
}

/// The audit listener, bound and ready; inert until [`AuditServer::serve`].
pub struct AuditServer {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    clusters_file: PathBuf,
}

impl AuditServer {
    /// Loads the credentials and the certificate and binds the listener.
    pub async fn bind(
        config: ServerConfig,
        ingest: AuditIngest,
    ) -> Result<AuditServer, ServerError> {
        let credentials = Credentials::load(&config.clusters_file)?;
        let tls = config
            .tls
            .as_ref()
            .map(|(cert, key)| tls_acceptor(cert, key))
            .transpose()?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        tracing::info!(
            listen = %listener.local_addr().unwrap_or(config.listen),
            tls = tls.is_some(),
            clusters = ?credentials.cluster_names().collect::<Vec<_>>(),
            "audit endpoints serving: POST /audit/webhook/{{cluster}}, /audit/firehose/{{cluster}}"
        );
        if tls.is_none() && !config.listen.ip().is_loopback() {
            tracing::warn!(listen = %config.listen, "audit endpoints without TLS: credentials and audit events cross the network in clear (Firehose requires https)");
        }
        Ok(AuditServer {
            listener,
            tls,
            shared: Arc::new(Shared {
                ingest,
                credentials: RwLock::new(Arc::new(credentials)),
                max_body_bytes: config.max_body_bytes,
                firehose_bounds: config.firehose_bounds,
                turns: tokio::sync::Semaphore::new(CONCURRENT_REQUESTS),
                firehose_seen: Mutex::new(Recent::default()),
            }),
            clusters_file: config.clusters_file,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets open requests finish (10 s at most).
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let router = router(self.shared.clone());
        let reload = tokio::spawn(reload_credentials(self.shared.clone(), self.clusters_file));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        let builder = Arc::new(builder);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(%error, "audit listener accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "audit listener at {MAX_CONNECTIONS} connections: closing a new one");
                continue;
            };
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            let (tls, builder, watcher) = (self.tls.clone(), builder.clone(), graceful.watcher());
            tokio::spawn(async move {
                let _permit = permit;
                let served = match tls {
                    Some(acceptor) => {
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        else {
                            tracing::debug!(%peer, "audit TLS handshake failed or timed out");
                            return;
                        };
                        let io = hyper_util::rt::TokioIo::new(stream);
                        watcher.watch(builder.serve_connection(io, service)).await
                    }
                    None => {
                        let io = hyper_util::rt::TokioIo::new(stream);
                        watcher.watch(builder.serve_connection(io, service)).await
                    }
                };
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "audit connection ended with an error");
                }
            });
        }
        reload.abort();
        if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("audit requests still open after 10 s: dropped");
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/audit/webhook/{cluster}", post(webhook))
        .route("/audit/firehose/{cluster}", post(firehose_endpoint))
        .with_state(shared)
}

/// A server configuration from the aggregator's PEM files (ring, as tonic's).
fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |path: &Path, msg: String| ServerError::Tls {
        path: path.to_owned(),
        msg,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(cert, "no certificate".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad(key, e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Re-reads the credentials when the file or a secret it names changes (rotation without
/// a restart); a file that no longer loads keeps the previous credentials in force.
async fn reload_credentials(shared: Arc<Shared>, file: PathBuf) {
    let stamp = |files: &[PathBuf]| -> Vec<Option<SystemTime>> {
        files
            .iter()
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect()
    };
    let files_of = |c: &Credentials| {
        std::iter::once(file.clone())
            .chain(c.files().iter().cloned())
            .collect::<Vec<_>>()
    };
    let mut files = files_of(&credentials(&shared));
    let mut seen = stamp(&files);
    loop {
        tokio::time::sleep(CREDENTIALS_CHECK_EVERY).await;
        let now = stamp(&files);
        if now == seen {
            continue;
        }
        seen = now;
        match Credentials::load(&file) {
            Ok(loaded) => {
                files = files_of(&loaded);
                seen = stamp(&files);
                tracing::info!(clusters = ?loaded.cluster_names().collect::<Vec<_>>(), "audit credentials reloaded");
                if let Ok(mut c) = shared.credentials.write() {
                    *c = Arc::new(loaded);
                }
            }
            Err(error) => {
                tracing::error!(%error, "audit credentials reload failed; the previous ones stay in force")
            }
        }
    }
}

fn credentials(shared: &Shared) -> Arc<Credentials> {
    match shared.credentials.read() {
        Ok(c) => c.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn count_request(adapter: Adapter, outcome: &'static str) {
    AuditRequestAnswered {
        adapter: adapter.as_str(),
        outcome,
    }
    .emit();
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let text = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(text),
    )
        .into_response()
}

/// Why a body was not read.
enum BodyError {
    TooLarge,
    Timeout,
    Broken(String),
    Encoding(String),
}

/// Reads the body within the bound and the time limit, gunzipping it when it says gzip.
async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Vec<u8>, BodyError> {
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, max)).await {
        Err(_) => return Err(BodyError::Timeout),
        Ok(Err(e)) => {
            // axum reports the length limit as an error whose source is LengthLimitError.
            let mut source: Option<&dyn std::error::Error> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(BodyError::TooLarge);
                }
                source = s.source();
            }
            return Err(BodyError::Broken(e.to_string()));
        }
        Ok(Ok(b)) => b,
    };
    match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"))
    {
        None | Some("identity") => Ok(bytes.to_vec()),
        Some("gzip") => {
            use std::io::Read;
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&bytes[..])
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| BodyError::Encoding(format!("gzip body: {e}")))?;
            if out.len() > max {
                return Err(BodyError::TooLarge);
            }
            Ok(out)
        }
        Some(other) => Err(BodyError::Encoding(format!(
            "content-encoding {:?} (gzip or none)",
            other.chars().take(32).collect::<String>()
        ))),
    }
}

async fn turn(shared: &Shared) -> Option<tokio::sync::SemaphorePermit<'_>> {
    tokio::time::timeout(BUSY_WAIT, shared.turns.acquire())
        .await
        .ok()?
        .ok()
}

// === Webhook ===

#[derive(serde::Serialize)]
struct WebhookAnswer {
    stored: usize,
    duplicates: usize,
    rejected: usize,
    errors: Vec<String>,
}

#[derive(serde::Serialize)]
struct ErrorAnswer {
    error: String,
}

fn webhook_error(status: StatusCode, outcome: &'static str, error: String) -> Response {
    count_request(Adapter::Webhook, outcome);
    json_response(status, &ErrorAnswer { error })
}

async fn webhook(
    State(shared): State<Arc<Shared>>,
    UrlPath(cluster): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    if let Err(why) = credentials(&shared).verify(&cluster, Adapter::Webhook, presented) {
        AuditRejected {
            trouble: AuditTrouble::WebhookRefused,
            rejected_events: 0,
            cluster: &cluster,
            detail: &why.to_string(),
        }
        .emit();
        return webhook_error(StatusCode::UNAUTHORIZED, "unauthorized", why.to_string());
    }
    let body = match read_body(&headers, body, shared.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            return body_error(Adapter::Webhook, e, shared.max_body_bytes, |s, o, m| {
                webhook_error(s, o, m)
            })
        }
    };
    let Some(_turn) = turn(&shared).await else {
        return webhook_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "busy: retry".into(),
        );
    };
    let decode_for = cluster.clone();
    let decoded = tokio::task::spawn_blocking(move || {
        let mut notes = Notes::default();
        event::decode_event_list(&body, &decode_for, &mut notes).map(|items| (items, notes))
    })
    .await;
    let (items, notes) = match decoded {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            AuditRejected {
                trouble: AuditTrouble::WebhookBodyRejected,
                rejected_events: 0,
                cluster: &cluster,
                detail: &e.to_string(),
            }
            .emit();
            return webhook_error(StatusCode::BAD_REQUEST, "invalid", e.to_string());
        }
        Err(e) => {
            return webhook_error(StatusCode::INTERNAL_SERVER_ERROR, "invalid", e.to_string())
        }
    };
    count_notes(notes);
    let mut records = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    let mut rejected = 0;
    for item in items {
        match item {
            Ok(r) => records.push(r),
            Err(e) => {
                rejected += 1;
                if errors.len() < ERRORS_SHOWN {
                    errors.push(e.to_string());
                }
            }
        }
    }
    if rejected > 0 {
        AuditRejected {
            trouble: AuditTrouble::WebhookEventsRejected,
            rejected_events: rejected as u64,
            cluster: &cluster,
            detail: &format!("{rejected} events, first: {}", errors[0]),
        }
        .emit();
    }
    match shared.ingest.ingest(Adapter::Webhook, records).await {
        Ok(done) => {
            count_request(Adapter::Webhook, "ok");
            json_response(
                StatusCode::OK,
                &WebhookAnswer {
                    stored: done.stored,
                    duplicates: done.duplicates,
                    rejected,
                    errors,
                },
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "audit events not stored; the sender will retry");
            webhook_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_error",
                format!("store: {e}"),
            )
        }
    }
}

fn body_error(
    adapter: Adapter,
    e: BodyError,
    max: usize,
    answer: impl FnOnce(StatusCode, &'static str, String) -> Response,
) -> Response {
    let _ = adapter;
    match e {
        BodyError::TooLarge => answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body exceeds {max} bytes (--audit-max-body-bytes)"),
        ),
        BodyError::Timeout => answer(
            StatusCode::REQUEST_TIMEOUT,
            "invalid",
            format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        ),
        BodyError::Broken(m) => answer(StatusCode::BAD_REQUEST, "invalid", m),
        BodyError::Encoding(m) => answer(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid", m),
    }
}

// === Firehose ===

async fn firehose_endpoint(
    State(shared): State<Arc<Shared>>,
    UrlPath(cluster): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let header_id = headers
        .get("x-amz-firehose-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let answer = |status: StatusCode, outcome: &'static str, id: &str, error: Option<String>| {
        count_request(Adapter::Firehose, outcome);
        json_response(status, &firehose::Response::new(id, error))
    };
    let id = header_id.clone().unwrap_or_default();
    let credentials = credentials(&shared);
    let presented = headers
        .get("x-amz-firehose-access-key")
        .map(|v| v.as_bytes());
    if let Err(why) = credentials.verify(&cluster, Adapter::Firehose, presented) {
        AuditRejected {
            trouble: AuditTrouble::FirehoseRefused,
            rejected_events: 0,
            cluster: &cluster,
            detail: &why.to_string(),
        }
        .emit();
        return answer(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            &id,
            Some(why.to_string()),
        );
    }
    let replay_key = header_id.as_ref().map(|id| format!("{cluster}\n{id}"));
    if let Some(key) = &replay_key {
        if shared.firehose_seen.lock().is_ok_and(|s| s.contains(key)) {
            // Firehose retries with the same ID after a lost answer; everything was stored.
            return answer(StatusCode::OK, "replayed", &id, None);
        }
    }
    let body = match read_body(&headers, body, shared.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            return body_error(Adapter::Firehose, e, shared.max_body_bytes, |s, o, m| {
                answer(s, o, &id, Some(m))
            })
        }
    };
    let Some(_turn) = turn(&shared).await else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            &id,
            Some("busy: retry".into()),
        );
    };
    let eks_cluster = credentials
        .eks_cluster(&cluster)
        .unwrap_or(&cluster)
        .to_owned();
    let (decode_for, bounds) = (cluster.clone(), shared.firehose_bounds);
    let decoded = tokio::task::spawn_blocking(move || {
        firehose::decode(&body, &decode_for, &eks_cluster, bounds)
    })
    .await;
    let decoded = match decoded {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            AuditRejected {
                trouble: AuditTrouble::FirehoseRequestRejected,
                rejected_events: 0,
                cluster: &cluster,
                detail: &e.to_string(),
            }
            .emit();
            let status = match e {
                // Permanent for Firehose: the batch goes to its error output, not retried.
                firehose::FirehoseError::TooLarge(_)
                | firehose::FirehoseError::TooManyRecords { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                firehose::FirehoseError::Envelope(_) => StatusCode::BAD_REQUEST,
            };
            return answer(status, "invalid", &id, Some(e.to_string()));
        }
        Err(e) => {
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid",
                &id,
                Some(e.to_string()),
            )
        }
    };
    let id = header_id.unwrap_or_else(|| decoded.request_id.clone());
    count_notes(decoded.notes);
    for (reason, n) in [
        ("control_message", decoded.control_messages),
        ("other_stream", decoded.other_streams),
    ] {
        if n > 0 {
            AuditRecordsSkipped { reason, records: n }.emit();
        }
    }
    if !decoded.rejected.is_empty() {
        AuditRejected {
            trouble: AuditTrouble::FirehoseEventsRejected,
            rejected_events: decoded.rejected.len() as u64,
            cluster: &cluster,
            detail: &format!(
                "request {id}: {} rejected, first: {}",
                decoded.rejected.len(),
                decoded.rejected[0]
            ),
        }
        .emit();
    }
    match shared
        .ingest
        .ingest(Adapter::Firehose, decoded.records)
        .await
    {
        Ok(_) => {
            if let (Some(key), Ok(mut seen)) = (replay_key, shared.firehose_seen.lock()) {
                seen.insert(key);
            }
            answer(StatusCode::OK, "ok", &id, None)
        }
        Err(e) => {
            tracing::error!(error = %e, request = %id, "audit events not stored; Firehose will retry");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_error",
                &id,
                Some(format!("store: {e}")),
            )
        }
    }
}

/// Request IDs in arrival order, the oldest forgotten past the bound.
#[derive(Default)]
struct Recent {
    order: std::collections::VecDeque<String>,
    set: std::collections::HashSet<String>,
}

impl Recent {
    fn contains(&self, key: &str) -> bool {
        self.set.contains(key)
    }

    fn insert(&mut self, key: String) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > REMEMBERED_REQUESTS {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}
