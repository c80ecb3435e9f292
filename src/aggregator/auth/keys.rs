//! The cluster issuer's signing keys, kept current: fetched by OpenID discovery
//! (`<issuer>/.well-known/openid-configuration` → `jwks_uri`, over HTTPS, as EKS publishes
//! them) or read from a file (`kubectl get --raw /openid/v1/jwks`, for an issuer the
//! aggregator cannot reach). Refreshed periodically, and at once (rate-limited) when a token
//! names a key not in the set — which is how a rotation shows up.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Buf as _;
use http_body_util::{BodyExt as _, Empty, Limited};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use thiserror::Error;

use super::jwt::{JwtError, KeySet};
use crate::telemetry::aggregator::{IssuerKeysChanged, IssuerKeysFailed};
use crate::telemetry::InternalEvent;

/// Largest discovery document or key set read.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Periodic refresh of discovered keys.
const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// Checks of a key file for changes.
const FILE_CHECK_EVERY: Duration = Duration::from_secs(2);
/// On-demand refreshes (a token naming an unknown key) happen at most this often: a client
/// inventing key ids cannot make the aggregator hammer the issuer.
const MIN_REFRESH_GAP: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum KeysError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("issuer URL {0:?} must be https://")]
    NotHttps(String),
    #[error("fetching {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url}: {source}")]
    Document { url: String, source: JwtError },
    #[error("CA bundle {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
}

/// Where the keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    File(PathBuf),
    /// Discovery from the issuer URL, trusting the CA bundle at `ca`.
    Issuer {
        url: String,
        ca: PathBuf,
    },
}

pub struct IssuerKeys {
    source: KeySource,
    tls: Option<Arc<rustls::ClientConfig>>,
    current: RwLock<Arc<KeySet>>,
    file_mtime: Mutex<Option<SystemTime>>,
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
}

impl IssuerKeys {
    /// Loads the keys once. A key file that does not load is an error; an issuer that does
    /// not answer yet is not (the aggregator starts, tokens are refused as `UNAVAILABLE`
    /// until the keys arrive, and the refresher keeps trying).
    pub async fn start(source: KeySource) -> Result<Arc<IssuerKeys>, KeysError> {
        let tls = match &source {
            KeySource::Issuer { url, ca } => {
                if !url.starts_with("https://") {
                    return Err(KeysError::NotHttps(url.clone()));
                }
                Some(client_tls(ca)?)
            }
            KeySource::File(_) => None,
        };
        let keys = Arc::new(IssuerKeys {
            source,
            tls,
            current: RwLock::new(Arc::new(KeySet::default())),
            file_mtime: Mutex::new(None),
            last_refresh: tokio::sync::Mutex::new(None),
        });
        match keys.load().await {
            Ok(set) => keys.install(set),
            Err(error @ KeysError::Read { .. }) | Err(error @ KeysError::Document { .. })
                if matches!(keys.source, KeySource::File(_)) =>
            {
                return Err(error)
            }
            Err(error) => {
                IssuerKeysFailed {
                    error: &error,
                    at_start: true,
                }
                .emit();
            }
        }
        keys.spawn_refresher();
        Ok(keys)
    }

    pub fn current(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn install(&self, set: KeySet) {
        tracing::info!(keys = set.len(), source = ?self.source, "issuer keys loaded");
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(set);
        }
    }

    /// A refresh because a token named an unknown key: at most one per [`MIN_REFRESH_GAP`];
    /// returns whether the keys changed.
    pub async fn refresh_for_unknown_key(&self) -> bool {
        let mut last = self.last_refresh.lock().await;
        if last.is_some_and(|t| t.elapsed() < MIN_REFRESH_GAP) {
            return false;
        }
        *last = Some(Instant::now());
        drop(last);
        self.refresh().await
    }

    async fn refresh(&self) -> bool {
        match self.load().await {
            Ok(set) => {
                let changed = *self.current() != set;
                if changed {
                    IssuerKeysChanged.emit();
                    self.install(set);
                }
                changed
            }
            Err(error) => {
                IssuerKeysFailed {
                    error: &error,
                    at_start: false,
                }
                .emit();
                false
            }
        }
    }

    async fn load(&self) -> Result<KeySet, KeysError> {
        match &self.source {
            KeySource::File(path) => {
                let mtime = modified(path);
                let bytes = std::fs::read(path).map_err(|source| KeysError::Read {
                    path: path.clone(),
                    source,
                })?;
                let set = KeySet::parse(&bytes).map_err(|source| KeysError::Document {
                    url: path.display().to_string(),
                    source,
                })?;
                if let Ok(mut m) = self.file_mtime.lock() {
                    *m = mtime;
                }
                Ok(set)
            }
            KeySource::Issuer { url, .. } => {
                let tls = self
                    .tls
                    .clone()
                    .ok_or_else(|| KeysError::NotHttps(url.clone()))?;
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    url.trim_end_matches('/')
                );
                let document = get(&discovery, tls.clone()).await?;
                let jwks_uri = serde_json::from_slice::<serde_json::Value>(&document)
                    .ok()
                    .and_then(|d| d["jwks_uri"].as_str().map(str::to_owned))
                    .ok_or_else(|| KeysError::Fetch {
                        url: discovery.clone(),
                        reason: "no jwks_uri in the discovery document".into(),
                    })?;
                if !jwks_uri.starts_with("https://") {
                    return Err(KeysError::NotHttps(jwks_uri));
                }
                let jwks = get(&jwks_uri, tls).await?;
                KeySet::parse(&jwks).map_err(|source| KeysError::Document {
                    url: jwks_uri,
                    source,
                })
            }
        }
    }

    fn spawn_refresher(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        let every = match self.source {
            KeySource::File(_) => FILE_CHECK_EVERY,
            KeySource::Issuer { .. } => REFRESH_EVERY,
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(keys) = this.upgrade() else { return };
                let due = match &keys.source {
                    KeySource::File(path) => {
                        let seen = keys.file_mtime.lock().map(|m| *m).ok().flatten();
                        modified(path) != seen
                    }
                    KeySource::Issuer { .. } => true,
                };
                if due {
                    keys.refresh().await;
                }
            }
        });
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// TLS to the issuer, trusting the roots in `ca` (by default the system bundle).
fn client_tls(ca: &Path) -> Result<Arc<rustls::ClientConfig>, KeysError> {
    let bad = |reason: String| KeysError::Ca {
        path: ca.to_owned(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One HTTPS GET, body capped at [`MAX_DOCUMENT_BYTES`], within [`FETCH_TIMEOUT`].
async fn get(url: &str, tls: Arc<rustls::ClientConfig>) -> Result<Vec<u8>, KeysError> {
    let fail = |reason: String| KeysError::Fetch {
        url: url.to_owned(),
        reason,
    };
    let fetch = async {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| fail(e.to_string()))?;
        let host = uri.host().ok_or_else(|| fail("no host".into()))?.to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let name = ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
        .map_err(|e| fail(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| fail(format!("TLS: {e}")))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(connection);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = hyper::Request::get(path)
            .header(
                hyper::header::HOST,
                uri.authority().map_or(host.as_str(), |a| a.as_str()),
            )
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut bytes = body.aggregate();
        Ok(bytes.copy_to_bytes(bytes.remaining()).to_vec())
    };
    tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .map_err(|_| fail(format!("no answer within {FETCH_TIMEOUT:?}")))?
}
