//! A man in the middle against the modes that do not verify the server (`prefer`,
//! `require` without `sslrootcert`): a server with a certificate of its own that asks for
//! the password in clear (AuthenticationCleartextPassword) inside its TLS session. The
//! store only offers SCRAM channel binding (tokio-postgres's `channel_binding=prefer`),
//! which sends the password to whoever asks for it in clear; `channel_binding=require` in
//! the URL refuses such a server.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Serves one connection as a hostile PostgreSQL: TLS with a self-made certificate, then a
/// request for the password in clear. Returns the password message's body, if sent.
async fn hostile(listener: tokio::net::TcpListener) -> Option<Vec<u8>> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("config");
    let (mut tcp, _) = listener.accept().await.ok()?;
    let mut ssl_request = [0u8; 8];
    tcp.read_exact(&mut ssl_request).await.ok()?;
    tcp.write_all(b"S").await.ok()?;
    let mut tls = tokio_rustls::TlsAcceptor::from(Arc::new(config))
        .accept(tcp)
        .await
        .ok()?;
    let mut len = [0u8; 4];
    tls.read_exact(&mut len).await.ok()?;
    let mut startup = vec![0u8; (u32::from_be_bytes(len) as usize).checked_sub(4)?];
    tls.read_exact(&mut startup).await.ok()?;
    // AuthenticationCleartextPassword: 'R', length 8, code 3.
    tls.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await.ok()?;
    tls.flush().await.ok()?;
    let mut tag = [0u8; 1];
    tls.read_exact(&mut tag).await.ok()?;
    tls.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).checked_sub(4)?];
    tls.read_exact(&mut body).await.ok()?;
    (tag[0] == b'p').then_some(body)
}

/// What the store's pool does with `url` against the hostile server: the password message's
/// body it sent, if any.
async fn password_sent(query: &str) -> Option<Vec<u8>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(hostile(listener));
    // As the store's pool makes its connections (check_url, then the password).
    let (mut config, settings) = crate::aggregator::store::postgres::check_url(&format!(
        "postgres://procflow@127.0.0.1:{port}/procflow?{query}"
    ))
    .expect("url");
    config.password("s3cret-password");
    let connector = MakeRustls::new(&settings).expect("connector");
    let _ = tokio::time::timeout(Duration::from_secs(30), config.connect(connector)).await;
    server.await.expect("server")
}

#[tokio::test]
async fn channel_binding_require_keeps_the_password_from_a_server_of_any_certificate() {
    // The mitigation deploy/README.md names for unverified modes.
    for query in [
        "sslmode=require&channel_binding=require",
        "sslmode=prefer&channel_binding=require",
    ] {
        let got = password_sent(query).await;
        assert_eq!(got, None, "{query}: the man in the middle got a password");
    }
}
