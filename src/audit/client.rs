//! A small HTTP/1.1 client of the audit endpoints (plain or TLS, one kept-alive
//! connection), for `procflow audit import` and the tests that play the API server or
//! Firehose.

use std::path::Path;
use std::sync::Arc;

use axum::http::{header, Method, Request, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio_rustls::rustls;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("endpoint {0:?}: an http:// or https:// URL with a host is needed")]
    Endpoint(String),
    #[error("{0}: https needs --tls-ca (the CA that signed the aggregator's certificate)")]
    NoCa(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(String),
}

enum Connector {
    Plain,
    Tls(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    ),
}

pub struct AuditClient {
    authority: String,
    base: String,
    connector: Connector,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl AuditClient {
    /// `endpoint` is the aggregator's audit listener (`https://host:port`); `ca` the PEM CA
    /// bundle for https.
    pub fn new(endpoint: &str, ca: Option<&Path>) -> Result<AuditClient, ClientError> {
        let uri: Uri = endpoint
            .parse()
            .map_err(|_| ClientError::Endpoint(endpoint.into()))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(ClientError::Endpoint(endpoint.into()));
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let authority = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(default_port)
        );
        let connector = match scheme {
            "http" => Connector::Plain,
            "https" => {
                let ca = ca.ok_or_else(|| ClientError::NoCa(endpoint.into()))?;
                tls_connector(ca, uri.host().unwrap_or_default())?
            }
            _ => return Err(ClientError::Endpoint(endpoint.into())),
        };
        Ok(AuditClient {
            authority,
            base: uri.path().trim_end_matches('/').to_owned(),
            connector,
            sender: None,
        })
    }

    /// POSTs `body` to `path` (under the endpoint's own path) with `headers`; returns the
    /// status and the body. A connection that broke is opened again once.
    pub async fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let body = Bytes::from(body);
        for attempt in 0..2 {
            let sender = match self.sender.as_mut() {
                Some(s) if !s.is_closed() => s,
                _ => self.sender.insert(self.connect().await?),
            };
            let mut request = Request::builder()
                .method(Method::POST)
                .uri(format!("{}{path}", self.base))
                .header(header::HOST, &self.authority)
                .header(header::CONTENT_TYPE, "application/json");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let request = request
                .body(Full::new(body.clone()))
                .map_err(|e| ClientError::Http(e.to_string()))?;
            match sender.send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    let bytes = response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| ClientError::Http(e.to_string()))?
                        .to_bytes();
                    return Ok((status, bytes.to_vec()));
                }
                Err(e) if attempt == 0 && e.is_canceled() => self.sender = None,
                Err(e) => return Err(ClientError::Http(e.to_string())),
            }
        }
        Err(ClientError::Http("the connection closed twice".into()))
    }

    async fn connect(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError> {
        let connect = |source| ClientError::Connect {
            addr: self.authority.clone(),
            source,
        };
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(connect)?;
        let _ = tcp.set_nodelay(true);
        let http = |e: hyper::Error| ClientError::Http(e.to_string());
        let sender = match &self.connector {
            Connector::Plain => {
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                        .await
                        .map_err(http)?;
                tokio::spawn(conn);
                sender
            }
            Connector::Tls(tls, name) => {
                let stream = tls.connect(name.clone(), tcp).await.map_err(connect)?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .map_err(http)?;
                tokio::spawn(conn);
                sender
            }
        };
        Ok(sender)
    }
}

fn tls_connector(ca: &Path, host: &str) -> Result<Connector, ClientError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ClientError::Tls(format!("{}: {e}", ca.display())))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| ClientError::Tls(format!("{}: {e}", ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .map_err(|e| ClientError::Tls(format!("{host}: {e}")))?;
    Ok(Connector::Tls(
        tokio_rustls::TlsConnector::from(Arc::new(config)),
        name,
    ))
}
