//! Authentication in front of every service: the request's credential — a client
//! certificate's SPIFFE ID, a service-account token, a reader's token, or on loopback the
//! shared token — becomes the [`Principal`] the service finds in the request's extensions.
//! A service is wrapped in [`Authenticated`] with its [`Purpose`]: writers for Ingest,
//! readers for everything else.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use super::jwt::{self, Expectations, JwtError};
use super::keys::IssuerKeys;
use super::readers::ReadersFile;
use super::spiffe::{self, SpiffeError, Workload};
use super::{digest, digests_equal, Credential, Principal, ReaderGrant, WriterIdentity};
use crate::telemetry::aggregator::RequestRefused;
use crate::telemetry::InternalEvent;

/// What a service does, and so which principals it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Ingest: writers.
    Write,
    /// Query, Subscribe, Investigate and every later reader: readers.
    Read,
}

/// Service-account tokens: the issuer's keys and what the tokens must say.
pub struct ServiceAccountTokens {
    pub keys: Arc<IssuerKeys>,
    pub expect: Expectations,
}

/// Everything a request can authenticate with.
pub struct Authenticator {
    /// SHA-256 of the shared token (accepted on a loopback listener only).
    shared: Option<[u8; 32]>,
    service_accounts: Option<ServiceAccountTokens>,
    /// Client certificates name workloads in this SPIFFE trust domain.
    trust_domain: Option<String>,
    readers: Option<Arc<ReadersFile>>,
    /// No credential is configured and the listener is loopback: every request is the
    /// local principal (`make run`).
    open: bool,
}

fn unauthenticated(peer: Option<SocketAddr>, why: String) -> Status {
    let status = Status::unauthenticated(why);
    RequestRefused {
        denied: false,
        peer,
        principal: "",
        status: &status,
    }
    .emit();
    status
}

fn denied(peer: Option<SocketAddr>, principal: &str, why: String) -> Status {
    let status = Status::permission_denied(why);
    RequestRefused {
        denied: true,
        peer,
        principal,
        status: &status,
    }
    .emit();
    status
}

/// The bearer token of a request: `None` without an `authorization` header, with an empty
/// token (`Bearer ` alone is no credential), or with one that is not a token's printable
/// ASCII (nothing is trimmed: a credential is compared exactly as presented).
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Authenticator {
    pub fn new(
        shared: Option<crate::transport::Token>,
        service_accounts: Option<ServiceAccountTokens>,
        trust_domain: Option<String>,
        readers: Option<Arc<ReadersFile>>,
        loopback: bool,
    ) -> Authenticator {
        let open = loopback
            && shared.is_none()
            && service_accounts.is_none()
            && trust_domain.is_none()
            && readers.is_none();
        Authenticator {
            shared: shared.map(|t| digest(t.secret().as_bytes())),
            service_accounts,
            trust_domain,
            readers,
            open,
        }
    }

    /// Every request is the local principal: nothing is configured, on loopback.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The reader a bearer token is (the console's sign-in): a token of the readers file, a
    /// reader's service-account token, or the shared token.
    pub async fn reader_for_token(&self, token: &str) -> Result<Principal, Status> {
        let mut headers = http::HeaderMap::new();
        let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| unauthenticated(None, "the credential is not header text".into()))?;
        headers.insert("authorization", value);
        self.authenticate(Purpose::Read, &headers, &http::Extensions::new())
            .await
    }

    /// Who is calling, and may it call a service of `purpose`.
    pub async fn authenticate(
        &self,
        purpose: Purpose,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<Principal, Status> {
        let (peer, certs) = connection(extensions);
        if let (Some(trust_domain), Some(cert)) =
            (&self.trust_domain, certs.as_ref().and_then(|c| c.first()))
        {
            match spiffe::spiffe_id(cert) {
                Ok(id) => match spiffe::parse(&id, trust_domain) {
                    Ok(workload) => return self.certificate_principal(purpose, peer, id, workload),
                    Err(error) => return Err(unauthenticated(peer, error.to_string())),
                },
                // A certificate without an SVID authenticates the channel only.
                Err(SpiffeError::Missing) => {}
                Err(error) => return Err(unauthenticated(peer, error.to_string())),
            }
        }
        let Some(token) = bearer(headers) else {
            if self.open {
                return Ok(Principal::local());
            }
            return Err(unauthenticated(
                peer,
                "missing credential: `authorization: Bearer <token>` or a client certificate"
                    .into(),
            ));
        };
        if let Some(sa) = self
            .service_accounts
            .as_ref()
            .filter(|_| jwt::looks_like_jwt(token))
        {
            return self.token_principal(purpose, peer, sa, token).await;
        }
        if let Some((key, grant)) = self
            .readers
            .as_ref()
            .and_then(|r| r.current().by_token(token))
        {
            return reader(purpose, peer, key, grant);
        }
        if let Some(shared) = &self.shared {
            if digests_equal(&digest(token.as_bytes()), shared) {
                return Ok(Principal::local());
            }
        }
        Err(unauthenticated(peer, "invalid bearer token".into()))
    }

    async fn token_principal(
        &self,
        purpose: Purpose,
        peer: Option<SocketAddr>,
        sa: &ServiceAccountTokens,
        token: &str,
    ) -> Result<Principal, Status> {
        let mut keys = sa.keys.current();
        if keys.is_empty() && !sa.keys.refresh_for_unknown_key().await {
            return Err(Status::unavailable(
                "the cluster issuer's keys are not loaded yet; retry",
            ));
        }
        let mut verified = jwt::verify(token, &keys, &sa.expect, now_secs());
        if matches!(verified, Err(JwtError::UnknownKey(_)))
            && sa.keys.refresh_for_unknown_key().await
        {
            keys = sa.keys.current();
            verified = jwt::verify(token, &keys, &sa.expect, now_secs());
        }
        let account =
            verified.map_err(|e| unauthenticated(peer, format!("service-account token: {e}")))?;
        let expires_at = account.expires_at.saturating_mul(1_000_000_000);
        match purpose {
            Purpose::Write => {
                let Some(pod) = account.pod else {
                    return Err(denied(
                        peer,
                        &account.subject,
                        format!("{}'s token is not bound to a pod: a writer needs the projected token mounted into its pod", account.subject),
                    ));
                };
                Ok(Principal::writer(
                    format!("pod:{}/{}", account.namespace, pod.name),
                    WriterIdentity {
                        namespace: account.namespace,
                        pod_name: Some(pod.name),
                        pod_uid: Some(pod.uid),
                        credential: Credential::ServiceAccountToken,
                    },
                )
                .expiring_at(expires_at))
            }
            Purpose::Read => {
                let found = self.readers.as_ref().and_then(|r| {
                    r.current()
                        .by_service_account(&account.namespace, &account.name)
                });
                match found {
                    Some((key, grant)) => {
                        reader(purpose, peer, key, grant).map(|p| p.expiring_at(expires_at))
                    }
                    None => Err(denied(
                        peer,
                        &account.subject,
                        format!("{} is not a reader", account.subject),
                    )),
                }
            }
        }
    }

    fn certificate_principal(
        &self,
        purpose: Purpose,
        peer: Option<SocketAddr>,
        id: String,
        workload: Workload,
    ) -> Result<Principal, Status> {
        match (purpose, workload) {
            (Purpose::Write, Workload::Pod { namespace, pod }) => Ok(Principal::writer(
                id,
                WriterIdentity {
                    namespace,
                    pod_name: Some(pod),
                    pod_uid: None,
                    credential: Credential::ClientCertificate,
                },
            )),
            (Purpose::Write, Workload::ServiceAccount { namespace, .. }) => Ok(Principal::writer(
                id,
                WriterIdentity {
                    namespace,
                    pod_name: None,
                    pod_uid: None,
                    credential: Credential::ClientCertificate,
                },
            )),
            (Purpose::Write, Workload::Other) => Err(denied(
                peer,
                &id,
                format!("{id} names no workload (/ns/<namespace>/pod/<pod> or /ns/<namespace>/sa/<name>)"),
            )),
            (Purpose::Read, _) => match self.readers.as_ref().and_then(|r| r.current().by_spiffe(&id)) {
                Some((key, grant)) => reader(purpose, peer, key, grant),
                None => Err(denied(peer, &id, format!("{id} is not a reader"))),
            },
        }
    }
}

fn reader(
    purpose: Purpose,
    peer: Option<SocketAddr>,
    key: String,
    grant: ReaderGrant,
) -> Result<Principal, Status> {
    match purpose {
        Purpose::Read => Ok(Principal::reader(key, grant)),
        Purpose::Write => Err(denied(
            peer,
            &key,
            format!("{key} is a reader: it may not write records"),
        )),
    }
}

/// The peer's address and TLS certificates, as the transport put them in the extensions.
fn connection(
    extensions: &http::Extensions,
) -> (
    Option<SocketAddr>,
    Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
) {
    if let Some(tls) = extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        return (tls.get_ref().remote_addr(), tls.peer_certs());
    }
    let peer = extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr);
    (peer, None)
}

// === Authenticated ===

/// A gRPC service behind authentication: each request reaches it with its [`Principal`], or
/// is answered with the refusal.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Arc<Authenticator>,
    purpose: Purpose,
}

impl<S> Authenticated<S> {
    pub fn new(inner: S, auth: Arc<Authenticator>, purpose: Purpose) -> Self {
        Authenticated {
            inner,
            auth,
            purpose,
        }
    }
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Authenticated<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready serves this request.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let (auth, purpose) = (self.auth.clone(), self.purpose);
        Box::pin(async move {
            match auth
                .authenticate(purpose, request.headers(), request.extensions())
                .await
            {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}
