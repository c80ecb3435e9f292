//! TLS to PostgreSQL against the real server: a server of `scripts/pg.sh` serving a
//! certificate for `localhost` from a CA this test makes. `verify-full` with that CA
//! connects (and the server sees TLS on every connection of the store), and refuses a
//! server reached by a name its certificate does not carry or signed by another CA, at
//! once rather than after the wait for a database that is down; `verify-ca` accepts the
//! name; `require` without a CA encrypts; `require` against a server without TLS is
//! refused. An aggregator process given such a URL ingests and answers.

use std::time::{Duration, Instant};

use procflow::aggregator::store::{PgStore, StoreError};

use crate::pg::{self, PgServer};
use crate::pipeline::{batch, identity, ingest, times_of, Aggregator, TestPki};
use crate::store::{append, pg_options, retention};

/// `url` reached as `host`, with the query `tls` (libpq's parameters).
fn with(url: &str, host: &str, tls: &str) -> String {
    format!("{}?{tls}", url.replacen("127.0.0.1", host, 1))
}

fn open(url: &str, password: &str) -> Result<PgStore, StoreError> {
    PgStore::open(url, &pg_options(password), retention(14))
}

/// The store's connections the server sees, as (with TLS, without).
fn store_sessions(server: &PgServer) -> (u64, u64) {
    let count = |ssl: bool| {
        pg::psql(
            &server.url,
            &server.password,
            &format!(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = 'procflow-aggregator' AND s.ssl = {ssl}"
            ),
        )
        .parse()
        .expect("a count")
    };
    (count(true), count(false))
}

/// Opening fails at once (well within the 30 s a down server is waited for), as a
/// configuration error naming the certificate.
fn refused(url: &str, password: &str) -> String {
    let started = Instant::now();
    let err = match open(url, password) {
        Ok(_) => panic!("{url}: connected"),
        Err(e) => e,
    };
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{url}: waited {:?}",
        started.elapsed()
    );
    assert!(matches!(err, StoreError::Config(_)), "{url}: {err}");
    err.to_string()
}

#[test]
fn postgres_over_tls_verifies_the_server_as_asked() {
    let pki = TestPki::new();
    pki.leaf("db", &["localhost"], true);
    let stranger = TestPki::new();
    let server = PgServer::start_with(&["--tls", &pki.path("db.pem"), &pki.path("db.key")]);
    let url = server.database();
    let ca = pki.path("ca.pem");

    let full = with(
        &url,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let store = open(&full, &server.password).expect("verify-full with the server's CA");
    let now = procflow::model::now_ns();
    append(
        &store,
        "uid-web-0/c",
        1,
        crate::store::batch("shop", "web-0", 1, 2, now),
    );
    let (tls, plain) = store_sessions(&server);
    assert!(tls >= 1 && plain == 0, "{tls} over TLS, {plain} in clear");
    drop(store);

    // The certificate names localhost, not 127.0.0.1.
    let err = refused(
        &with(
            &url,
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        &server.password,
    );
    assert!(err.contains("certificate"), "{err}");
    // verify-ca checks the chain only.
    drop(
        open(
            &with(
                &url,
                "127.0.0.1",
                &format!("sslmode=verify-ca&sslrootcert={ca}"),
            ),
            &server.password,
        )
        .expect("verify-ca by address"),
    );
    // Another CA's roots do not vouch for it, whatever the mode that checks.
    for mode in ["verify-full", "verify-ca", "require"] {
        let err = refused(
            &with(
                &url,
                "localhost",
                &format!("sslmode={mode}&sslrootcert={}", stranger.path("ca.pem")),
            ),
            &server.password,
        );
        assert!(err.contains("certificate"), "{mode}: {err}");
    }
    // require without roots encrypts without checking (libpq's meaning).
    drop(
        open(
            &with(&url, "127.0.0.1", "sslmode=require"),
            &server.password,
        )
        .expect("require"),
    );

    // The aggregator takes the same URL from --store.
    let password = server.password_file();
    let agg = Aggregator::start(&[
        "--store",
        &full,
        "--store-password-file",
        password.to_str().expect("utf-8 path"),
        "--no-detection",
    ]);
    let id = identity("over-tls");
    let acks = ingest(&agg.url(), None, vec![batch(&id, 1, 10, 5)]).expect("ingest");
    assert!(acks.iter().all(|a| !a.rejected), "{acks:?}");
    assert_eq!(
        times_of(&agg.query("heartbeat"), "over-tls"),
        (10..15).collect::<Vec<u64>>()
    );
    let (tls, plain) = store_sessions(&server);
    assert!(tls >= 1 && plain == 0, "{tls} over TLS, {plain} in clear");
}

#[test]
fn require_against_a_server_without_tls_is_refused() {
    let url = pg::fresh_database();
    let err = refused(
        &with(&url, "127.0.0.1", "sslmode=require"),
        &pg::shared().password,
    );
    assert!(err.contains("TLS"), "{err}");
}
