//! What both sides of the aggregator's gRPC connection share: the connection flags of the
//! clients (the collector's exporter and `procflow tail`/`query`/`investigate`), reading a
//! bearer credential, building the endpoint (TLS for `https://`), and the server's TLS set-up.
//!
//! A credential is read from its file each time a connection is made, so a rotated file
//! (a projected service-account token the kubelet refreshes) is picked up on the next
//! connection; an empty one is an error, never "no token".

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use thiserror::Error;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {0} is empty: refusing to send an empty credential")]
    EmptyTokenFile(PathBuf),
    #[error("the token is empty: refusing to send an empty credential")]
    EmptyToken,
    #[error("the token is not valid header text (control characters or non-ASCII bytes)")]
    BadToken,
    #[error("invalid aggregator URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] tonic::transport::Error),
}

// === Flags ===

/// Where the aggregator is and how its certificate is checked; shared by every client.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EndpointArgs {
    /// Aggregator URL (`https://` for TLS).
    #[arg(
        long,
        env = "PROCFLOW_AGGREGATOR",
        default_value = "http://127.0.0.1:7410"
    )]
    pub aggregator: String,
    /// CA bundle that signed the aggregator's certificate.
    #[arg(long, env = "PROCFLOW_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for an aggregator that requires one (with --tls-key).
    #[arg(long, env = "PROCFLOW_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, env = "PROCFLOW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The connection flags of `procflow tail`, `query` and `investigate`: the endpoint and a
/// bearer token, from a file or (for people at a terminal) the flag or environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// File holding the bearer token (re-read at each connection).
    #[arg(long, env = "PROCFLOW_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The bearer token itself (prefer --token-file: a flag is visible in the process list).
    #[arg(
        long,
        env = "PROCFLOW_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
}

impl ConnectArgs {
    pub fn token_source(&self) -> TokenSource {
        TokenSource::new(self.token_file.clone(), self.token.clone())
    }

    /// A connected channel to the aggregator.
    pub async fn connect(&self) -> Result<tonic::transport::Channel, ConnectError> {
        let url = &self.endpoint.aggregator;
        let token = self.token_source().read()?;
        warn_if_plaintext(url, token.is_some());
        endpoint(url, &TlsFiles::of(&self.endpoint))?
            .connect()
            .await
            .map_err(|source| ConnectError::Connect {
                url: url.clone(),
                source,
            })
    }

    /// `message` as a request carrying this client's credential.
    pub fn request<T>(&self, message: T) -> Result<tonic::Request<T>, TransportError> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = self.token_source().read()? {
            token.authorize(&mut request);
        }
        Ok(request)
    }
}

#[derive(Debug, Error)]
pub enum ConnectError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("connecting to {url}: {source}")]
    Connect {
        url: String,
        source: tonic::transport::Error,
    },
}

// === Credentials ===

/// Where a bearer token comes from.
#[derive(Clone, Default)]
pub enum TokenSource {
    #[default]
    None,
    /// Read at each connection (rotation).
    File(PathBuf),
    Value(String),
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::None => f.write_str("None"),
            TokenSource::File(path) => f.debug_tuple("File").field(path).finish(),
            TokenSource::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

impl TokenSource {
    pub fn new(file: Option<PathBuf>, value: Option<String>) -> TokenSource {
        match (file, value) {
            (Some(path), _) => TokenSource::File(path),
            (None, Some(value)) => TokenSource::Value(value),
            (None, None) => TokenSource::None,
        }
    }

    /// The current token: `None` when none is configured; an empty file or value is an
    /// error (an empty token would otherwise be sent as `Bearer ` and match an empty one).
    pub fn read(&self) -> Result<Option<Token>, TransportError> {
        let text = match self {
            TokenSource::None => return Ok(None),
            TokenSource::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| TransportError::Read {
                        what: "token file",
                        path: path.clone(),
                        source,
                    })?;
                if text.trim().is_empty() {
                    return Err(TransportError::EmptyTokenFile(path.clone()));
                }
                text
            }
            TokenSource::Value(value) => value.clone(),
        };
        Token::new(text.trim()).map(Some)
    }
}

/// A bearer token: non-empty, valid header text; never printed.
#[derive(Clone)]
pub struct Token(MetadataValue<tonic::metadata::Ascii>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    pub fn new(token: &str) -> Result<Token, TransportError> {
        if token.is_empty() {
            return Err(TransportError::EmptyToken);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TransportError::BadToken);
        }
        let mut value: MetadataValue<tonic::metadata::Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| TransportError::BadToken)?;
        value.set_sensitive(true);
        Ok(Token(value))
    }

    /// The token itself, for a server comparing it.
    pub fn secret(&self) -> &str {
        self.0
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
    }

    /// Adds `authorization: Bearer <token>` to `request`.
    pub fn authorize<T>(&self, request: &mut tonic::Request<T>) {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
    }
}

// === Endpoints ===

/// The client's TLS files.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    pub fn of(args: &EndpointArgs) -> TlsFiles {
        TlsFiles {
            ca: args.tls_ca.clone(),
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
        }
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|source| TransportError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// An endpoint for the aggregator at `url`: TLS for `https://` URLs, trusting `tls.ca`,
/// presenting the client certificate if given.
pub fn endpoint(url: &str, tls: &TlsFiles) -> Result<Endpoint, TransportError> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| TransportError::BadUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5));
    if url.starts_with("https://") {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &tls.ca {
            config = config.ca_certificate(Certificate::from_pem(read_file("CA bundle", ca)?));
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            config = config.identity(Identity::from_pem(
                read_file("client certificate", cert)?,
                read_file("client key", key)?,
            ));
        }
        endpoint = endpoint.tls_config(config)?;
    }
    Ok(endpoint)
}

/// Whether `url` reaches this host only (`localhost` or a loopback address).
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<tonic::codegen::http::Uri>() else {
        return false;
    };
    match uri.host() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Warns (once per process) when a credential is about to travel in clear text to another
/// host: anyone on the path could read and replay it.
pub fn warn_if_plaintext(url: &str, has_token: bool) -> bool {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let plaintext = has_token && url.starts_with("http://") && !is_loopback_url(url);
    if plaintext && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            aggregator = url,
            "sending a bearer token over plaintext HTTP to a non-loopback address: anyone on the path can read and replay it; use https://"
        );
    }
    plaintext
}

// === Server side ===

/// The aggregator's TLS: its certificate and key, and when `client_ca` is set, client
/// certificates that CA signed are required (mutual TLS).
pub fn server_tls(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerTlsConfig, TransportError> {
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
        read_file("certificate", cert)?,
        read_file("key", key)?,
    ));
    if let Some(ca) = client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read_file("client CA bundle", ca)?));
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_blank_token_file_is_an_error_not_an_empty_token() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("token");
        for blank in ["", "\n", "  \n\t"] {
            std::fs::write(&path, blank).expect("write");
            let err = TokenSource::File(path.clone()).read().expect_err("empty");
            assert!(matches!(err, TransportError::EmptyTokenFile(_)), "{err}");
        }
        assert!(matches!(
            TokenSource::Value(String::new()).read(),
            Err(TransportError::EmptyToken)
        ));
        assert!(matches!(
            TokenSource::Value("a b".into()).read(),
            Err(TransportError::BadToken)
        ));
    }

    #[test]
    fn a_token_file_is_reread_so_rotation_is_picked_up() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("token");
        let source = TokenSource::File(path.clone());
        let header = |source: &TokenSource| {
            let mut request = tonic::Request::new(());
            source
                .read()
                .expect("read")
                .expect("some")
                .authorize(&mut request);
            request
                .metadata()
                .get("authorization")
                .cloned()
                .expect("set")
        };
        std::fs::write(&path, "first\n").expect("write");
        assert_eq!(header(&source), "Bearer first");
        std::fs::write(&path, "second").expect("write");
        assert_eq!(header(&source), "Bearer second");
        assert_eq!(TokenSource::None.read().expect("none").map(|_| ()), None);
    }

    #[test]
    fn tokens_never_show_in_debug_output() {
        let source = TokenSource::Value("hunter2".into());
        assert!(!format!("{source:?}").contains("hunter2"));
        let token = source.read().expect("ok").expect("some");
        assert!(!format!("{token:?}").contains("hunter2"));
    }

    #[test]
    fn plaintext_is_flagged_only_for_a_token_to_another_host() {
        assert!(is_loopback_url("http://127.0.0.1:7410"));
        assert!(is_loopback_url("http://localhost:7410"));
        assert!(is_loopback_url("http://[::1]:7410"));
        assert!(!is_loopback_url("http://10.0.0.1:7410"));
        assert!(!is_loopback_url(
            "http://procflow-aggregator.procflow.svc:7410"
        ));
        assert!(warn_if_plaintext("http://10.0.0.1:7410", true));
        assert!(!warn_if_plaintext("http://10.0.0.1:7410", false));
        assert!(!warn_if_plaintext("https://10.0.0.1:7410", true));
        assert!(!warn_if_plaintext("http://127.0.0.1:7410", true));
    }
}
