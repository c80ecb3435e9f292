//! TLS to PostgreSQL (RDS, Aurora, a self-hosted server with a certificate), set the way
//! libpq users already write it: `sslmode` and `sslrootcert` in the store URL. The
//! connector is rustls with ring, the stack tonic already brings (no OpenSSL, no cmake, no
//! new crate: `tokio-postgres-rustls` would add `x509-cert` and `const-oid` for what
//! `x509-parser`, already here, does below).
//!
//! Modes, as libpq's: `disable` (plain), `prefer` (the default: TLS when the server offers
//! it, plain when not), `require` (TLS or nothing), `verify-ca` (and the server's chain
//! must lead to a root of `sslrootcert`), `verify-full` (and its certificate must name the
//! host of the URL). `prefer` and `require` check the chain too when `sslrootcert` is given
//! (as libpq does when it finds a root file); without it they only encrypt, which an active
//! attacker on the path defeats: SCRAM channel binding (`tls-server-end-point`) is offered,
//! which stops the attacker relaying a SCRAM exchange, but not asking for the password in
//! clear and getting it (tokio-postgres's `channel_binding=prefer`, libpq's default too).
//! `channel_binding=require` in the URL refuses a server that does not bind the exchange
//! to its certificate (`mitm_tests`).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Mode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS part of a store URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) mode: Mode,
    /// `sslrootcert`: PEM file of the roots the server's chain must lead to.
    pub(crate) root: Option<PathBuf>,
}

impl Settings {
    /// What tokio-postgres is told (it knows disable, prefer and require; the checks of the
    /// verifying modes are this module's).
    pub(crate) fn ssl_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

/// Splits libpq's TLS parameters off a `postgres://` URL: the URL tokio-postgres can parse
/// (it refuses `verify-ca`, `verify-full` and `sslrootcert`) and the settings.
pub(crate) fn split_url(url: &str) -> Result<(String, Settings), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), Settings::default()));
    };
    let mut settings = Settings::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Keys decoded too, as tokio-postgres decodes them: `%73slmode=require` kept for
        // it would be overridden by this mode (prefer), a silent downgrade.
        let key = percent_encoding::percent_decode_str(key)
            .decode_utf8()
            .map_err(|e| format!("{key}: {e}"))?;
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|e| format!("{key}: {e}"))?;
        match key.as_ref() {
            "sslmode" => {
                settings.mode = match value.as_ref() {
                    "disable" => Mode::Disable,
                    // libpq's `allow` tries plain first; TLS when offered is no weaker.
                    "allow" | "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode={other}: expected disable, prefer, require, verify-ca or \
                             verify-full"
                        ))
                    }
                }
            }
            "sslrootcert" if value == "system" => {
                return Err(
                    "sslrootcert=system is not supported: name the CA bundle's file \
                     (for RDS and Aurora, AWS's global-bundle.pem)"
                        .into(),
                )
            }
            "sslrootcert" => settings.root = Some(PathBuf::from(value.as_ref())),
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                return Err(format!(
                    "{key} is not supported (client certificates, revocation lists): the \
                     store authenticates with a password over TLS"
                ))
            }
            _ => kept.push(pair),
        }
    }
    if matches!(settings.mode, Mode::VerifyCa | Mode::VerifyFull) && settings.root.is_none() {
        return Err(
            "sslmode=verify-ca and verify-full need sslrootcert=FILE (the CA \
             bundle the server's certificate must chain to)"
                .into(),
        );
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, settings))
}

/// The connector the pool uses for every connection: rustls with the settings' checks.
/// With `disable`, or `prefer` against a server without TLS, it is never asked.
#[derive(Clone)]
pub(crate) struct MakeRustls {
    config: Arc<rustls::ClientConfig>,
}

impl MakeRustls {
    /// Reads `sslrootcert` (when given) and builds the client configuration.
    pub(crate) fn new(settings: &Settings) -> Result<MakeRustls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match &settings.root {
            Some(path) => {
                let webpki = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots(path)?),
                    provider.clone(),
                )
                .build()
                .map_err(|e| format!("{}: {e}", path.display()))?;
                if settings.mode == Mode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
            None => {
                if settings.mode != Mode::Disable {
                    // libpq's semantics, kept; but the operator should know what they buy.
                    tracing::warn!(
                        "the store's TLS is not verified (sslmode without sslrootcert): a \
                         man in the middle can ask for the password in clear and get it; \
                         use sslmode=verify-full with sslrootcert, or add \
                         channel_binding=require to the store URL"
                    );
                }
                Arc::new(Unverified(provider.clone()))
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustls {
            config: Arc::new(config),
        })
    }
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let bad = |e: &dyn std::fmt::Display| format!("sslrootcert {}: {e}", path.display());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no certificate in it"));
    }
    Ok(roots)
}

/// `verify-ca`: the chain is checked, the name is not (a server reached by an address
/// its certificate does not list).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is checked after the chain: a name error means the chain held.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root file: any certificate (libpq's behaviour), but
/// the handshake's signatures are still checked against it, so the channel binding below
/// names the key that really holds the session.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, io::Error> {
        // Asked before the server says whether it speaks TLS (and with "" for a Unix
        // socket, which never does): a bad name fails only a handshake that happens.
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?}: {e}")));
        Ok(RustlsConnect {
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
            name,
        })
    }
}

pub(crate) struct RustlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: Result<ServerName<'static>, io::Error>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = self.connector.connect(self.name?, stream).await?;
            Ok(RustlsStream(stream))
        })
    }
}

/// A TLS session to the server.
pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> TlsStream for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        match session
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(end_point)
        {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

/// RFC 5929 `tls-server-end-point`: the certificate's hash with its signature's hash
/// function (SHA-256 for MD5 and SHA-1); `None` for a signature without one (Ed25519,
/// RSA-PSS), so no channel binding is offered, as the server does for those.
fn end_point(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let algorithm = match parsed.signature_algorithm.algorithm.to_id_string().as_str() {
        // md5, sha1, sha256 WithRSAEncryption; ecdsa-with-SHA1, -SHA256.
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.2" => &ring::digest::SHA256,
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => &ring::digest::SHA384,
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => &ring::digest::SHA512,
        _ => return None,
    };
    Some(
        ring::digest::digest(algorithm, cert.as_ref())
            .as_ref()
            .to_vec(),
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Whether a connection failure is TLS refusing this server (a certificate that does not
/// verify, a server without TLS where it is required): waiting does not change it.
pub(crate) fn is_refusal(error: &tokio_postgres::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        // tokio-rustls wraps rustls's error in an io::Error, whose `source` skips it.
        let wrapped = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref());
        if e.downcast_ref::<rustls::Error>().is_some()
            || wrapped.is_some_and(|w| w.downcast_ref::<rustls::Error>().is_some())
            || e.to_string() == "server does not support TLS"
        {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_parameters_are_taken_off_the_url_and_the_rest_kept() {
        let (url, s) = split_url(
            "postgres://u@db.example:5432/p?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20b.pem",
        )
        .expect("split");
        assert_eq!(url, "postgres://u@db.example:5432/p?application_name=x");
        assert_eq!(s.mode, Mode::VerifyFull);
        assert_eq!(s.root.as_deref(), Some(Path::new("/etc/ca b.pem")));
        assert_eq!(s.ssl_mode(), SslMode::Require);
        let (url, s) = split_url("postgres://u@h/p").expect("split");
        assert_eq!((url.as_str(), s), ("postgres://u@h/p", Settings::default()));
        let (url, s) = split_url("postgres://u@h/p?sslmode=disable").expect("split");
        assert_eq!(
            (url.as_str(), s.ssl_mode()),
            ("postgres://u@h/p", SslMode::Disable)
        );
    }

    #[test]
    fn percent_encoded_keys_are_the_keys_they_encode() {
        // tokio-postgres decodes keys: had `%73slmode=require` been passed through, the
        // mode taken here (prefer, the default) would have overridden it.
        let (url, s) = split_url("postgres://u@h/p?%73slmode=require").expect("split");
        assert_eq!(
            (url.as_str(), s.ssl_mode()),
            ("postgres://u@h/p", SslMode::Require)
        );
        assert!(split_url("postgres://u@h/p?ssl%6Dode=verify-full").is_err());
        let (_, s) =
            split_url("postgres://u@h/p?sslmode=verify-ca&%73slrootcert=%2Fca.pem").expect("split");
        assert_eq!(s.root.as_deref(), Some(Path::new("/ca.pem")));
    }

    #[test]
    fn verifying_modes_without_a_root_and_unknown_modes_are_refused() {
        for url in [
            "postgres://u@h/p?sslmode=verify-full",
            "postgres://u@h/p?sslmode=verify-ca",
            "postgres://u@h/p?sslmode=strict",
            "postgres://u@h/p?sslmode=require&sslcert=/c.pem",
            "postgres://u@h/p?sslrootcert=system",
        ] {
            assert!(split_url(url).is_err(), "{url}");
        }
    }
}

#[cfg(test)]
#[path = "tls_mitm_tests.rs"]
mod mitm_tests;
