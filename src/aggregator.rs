//! The aggregator: the gRPC service that collectors stream into. Ingest validates and
//! deduplicates batches, stores them, and fans them out to live subscribers; Query reads
//! the store. Every request is authenticated into a verified principal (`auth`); TLS is
//! rustls.

pub mod admission;
pub mod alert_out;
pub mod auth;
pub mod console;
pub mod detect;
pub mod hub;
pub mod investigate;
pub mod liveness;
pub mod peers;
pub mod rollups;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::parse_duration;
use crate::proto::v1 as pb;
use crate::wire::Limits;
use auth::authenticate::ServiceAccountTokens;
use auth::keys::{IssuerKeys, KeySource};
use auth::{Authenticated, Authenticator, Purpose};

pub use hub::Hub;
pub use service::{IngestService, QueryService, SubscribeService};
pub use store::{SqliteStore, Store};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// gRPC listen address. A non-loopback address requires per-identity writer
    /// authentication (--sa-token-issuer, or --tls-client-ca with --spiffe-trust-domain).
    #[arg(long, env = "PROCFLOW_LISTEN", default_value = "127.0.0.1:7410")]
    pub listen: SocketAddr,
    /// Directory of the embedded store (SQLite, WAL mode).
    #[arg(long, env = "PROCFLOW_DATA_DIR", default_value = ".procflow")]
    pub data_dir: PathBuf,
    /// File holding the single shared token (loopback listeners only, e.g. `make run`):
    /// whoever holds it writes as any collector and reads everything.
    #[arg(long, env = "PROCFLOW_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The shared token itself (loopback listeners only).
    #[arg(
        long,
        env = "PROCFLOW_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// PEM certificate chain for TLS (with --tls-key).
    #[arg(long, env = "PROCFLOW_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, env = "PROCFLOW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: when set, clients must present a certificate it signed (mTLS).
    #[arg(long, env = "PROCFLOW_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Issuer of the cluster's service-account tokens (EKS: the cluster's OpenID Connect
    /// issuer URL). Collectors then authenticate with a projected token (audience
    /// --sa-token-audience) bound to their pod, which names their pod and namespace. Its
    /// keys come from OpenID discovery at this URL, or from --sa-token-jwks.
    #[arg(long, env = "PROCFLOW_SA_TOKEN_ISSUER")]
    pub sa_token_issuer: Option<String>,
    /// The issuer's keys (JWKS) from this file instead of discovery, e.g. saved from
    /// `kubectl get --raw /openid/v1/jwks`; re-read when it changes.
    #[arg(long, env = "PROCFLOW_SA_TOKEN_JWKS", requires = "sa_token_issuer")]
    pub sa_token_jwks: Option<PathBuf>,
    /// Audience a service-account token must be issued for.
    #[arg(long, env = "PROCFLOW_SA_TOKEN_AUDIENCE", default_value = "procflow")]
    pub sa_token_audience: String,
    /// CA bundle trusted for the issuer's HTTPS (discovery).
    #[arg(
        long,
        env = "PROCFLOW_SA_TOKEN_ISSUER_CA",
        default_value = "/etc/ssl/certs/ca-certificates.crt"
    )]
    pub sa_token_issuer_ca: PathBuf,
    /// SPIFFE trust domain of client certificates (with --tls-client-ca): a certificate
    /// whose URI SAN is spiffe://<domain>/ns/<namespace>/pod/<pod> writes as that pod,
    /// .../ns/<namespace>/sa/<name> as a workload of that namespace; readers are matched by
    /// their SPIFFE ID in --readers.
    #[arg(long, env = "PROCFLOW_SPIFFE_TRUST_DOMAIN", requires = "tls_client_ca")]
    pub spiffe_trust_domain: Option<String>,
    /// Readers file (YAML): which token, service account, group or SPIFFE ID may read, as
    /// `viewer` of some namespaces or `admin`. Re-read when it changes. See
    /// deploy/README.md.
    #[arg(long, env = "PROCFLOW_READERS")]
    pub readers: Option<PathBuf>,
    /// Raw records older than this are deleted (questions further back read the hourly
    /// rollups).
    #[arg(long, env = "PROCFLOW_RETENTION", default_value = "14d", value_parser = parse_duration)]
    pub retention: Duration,
    /// Hourly rollups (edges, executables, listeners, alert counts) older than this are
    /// deleted.
    #[arg(long, env = "PROCFLOW_ROLLUP_RETENTION", default_value = "396d", value_parser = parse_duration)]
    pub rollup_retention: Duration,
    /// The store is trimmed (oldest first) above this size.
    #[arg(long, env = "PROCFLOW_MAX_DB_BYTES", default_value_t = 10 << 30)]
    pub max_db_bytes: u64,
    /// Largest accepted gRPC message (one batch).
    #[arg(long, env = "PROCFLOW_MAX_MESSAGE_BYTES", default_value_t = 16 << 20)]
    pub max_message_bytes: usize,
    /// Most records accepted in one batch.
    #[arg(long, env = "PROCFLOW_MAX_BATCH_RECORDS", default_value_t = 65_536)]
    pub max_batch_records: usize,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long, env = "PROCFLOW_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Live events buffered per subscriber before it is sent a gap marker.
    #[arg(long, env = "PROCFLOW_SUBSCRIBER_QUEUE", default_value_t = 4096)]
    pub subscriber_queue: usize,
    /// Where events go: `sqlite` (the embedded database in --data-dir), `sqlite:PATH`,
    /// `postgres://USER@HOST[:PORT]/DB` (several replicas may share it; password from
    /// --store-password-file or PROCFLOW_STORE_PASSWORD; TLS as libpq's
    /// `?sslmode=verify-full&sslrootcert=CA.pem`), or `none` (nothing kept, for measuring
    /// transport and detection alone; queries then return nothing).
    #[arg(long, env = "PROCFLOW_STORE", default_value = "sqlite")]
    pub store: store::StoreSpec,
    #[command(flatten)]
    pub store_connect: store::cli::ConnectArgs,
    /// Directory of custom rule files (*.yaml), loaded beside the managed set and reloaded
    /// when they change (a failed reload keeps the previous set).
    #[arg(long, env = "PROCFLOW_RULES")]
    pub rules: Option<PathBuf>,
    /// Do not load the managed rule set.
    #[arg(long, env = "PROCFLOW_NO_MANAGED_RULES")]
    pub no_managed_rules: bool,
    /// Turn detection off entirely.
    #[arg(long, env = "PROCFLOW_NO_DETECTION")]
    pub no_detection: bool,
    /// A repeat of an alert group is emitted (with its count) at most this often.
    #[arg(long, env = "PROCFLOW_ALERT_REEMIT", default_value = "1m", value_parser = parse_duration)]
    pub alert_reemit: Duration,
    /// Print alerts as JSON lines on stdout.
    #[arg(long, env = "PROCFLOW_ALERT_STDOUT")]
    pub alert_stdout: bool,
    /// POST each alert to this http:// URL (retried with backoff; e.g. falcosidekick).
    #[arg(long, env = "PROCFLOW_ALERT_WEBHOOK")]
    pub alert_webhook: Option<String>,
    /// Body of the webhook POST.
    #[arg(
        long,
        env = "PROCFLOW_ALERT_WEBHOOK_FORMAT",
        value_enum,
        default_value = "procflow"
    )]
    pub alert_webhook_format: alert_out::WebhookFormat,
    /// Serve the web console here (HTTP). Sign-in takes a reader credential: a token of
    /// --readers, a reader's service-account token, or on loopback the shared token. Plain
    /// HTTP is for loopback or a TLS proxy in front: a non-loopback address needs
    /// --ui-behind-tls-proxy.
    #[arg(long, env = "PROCFLOW_UI_LISTEN")]
    pub ui_listen: Option<SocketAddr>,
    /// The console is reached through a TLS-terminating proxy: allow a non-loopback
    /// --ui-listen and mark the session cookie Secure.
    #[arg(long, env = "PROCFLOW_UI_BEHIND_TLS_PROXY")]
    pub ui_behind_tls_proxy: bool,
    /// A console session ends after this long unused (and after 12 h in any case).
    #[arg(long, env = "PROCFLOW_UI_SESSION_IDLE", default_value = "8h", value_parser = parse_duration)]
    pub ui_session_idle: Duration,
    /// The console's default baseline: the window before the scope that "new" and
    /// "increased" compare with (1h to 1y; each page's URL can set its own).
    #[arg(long, env = "PROCFLOW_UI_BASELINE", default_value = "45d", value_parser = parse_duration)]
    pub ui_baseline: Duration,
    #[command(flatten)]
    pub audit: crate::audit::AuditArgs,
    #[command(flatten)]
    pub admission: admission::AdmissionArgs,
    #[command(flatten)]
    pub peers: peers::PeerArgs,
}

/// `procflow aggregator`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args, shutdown_signal()))
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Who may call, from the flags. A non-loopback listener needs per-identity writers; the
/// shared token is for loopback only.
async fn authenticator(args: &Args) -> anyhow::Result<Authenticator> {
    let loopback = args.listen.ip().is_loopback();
    let shared = crate::transport::TokenSource::new(args.token_file.clone(), args.token.clone())
        .read()
        .context("the shared token")?;
    if shared.is_some() && !loopback {
        anyhow::bail!(
            "refusing the shared token on {}: whoever holds it could write as any pod and read everything, so it serves a loopback listener only (`make run`). \
             Give writers per-pod identities (--sa-token-issuer, or --tls-client-ca with --spiffe-trust-domain) and readers entries in --readers",
            args.listen
        );
    }
    let service_accounts = match &args.sa_token_issuer {
        Some(issuer) => {
            let source = match &args.sa_token_jwks {
                Some(file) => KeySource::File(file.clone()),
                None => KeySource::Issuer {
                    url: issuer.clone(),
                    ca: args.sa_token_issuer_ca.clone(),
                },
            };
            Some(ServiceAccountTokens {
                keys: IssuerKeys::start(source)
                    .await
                    .context("the service-account token issuer")?,
                expect: auth::jwt::Expectations {
                    issuer: issuer.clone(),
                    audience: args.sa_token_audience.clone(),
                },
            })
        }
        None => None,
    };
    let writers_identified = service_accounts.is_some() || args.spiffe_trust_domain.is_some();
    if !loopback && !writers_identified {
        anyhow::bail!(
            "refusing to listen on {} without per-identity writer authentication (--sa-token-issuer, or --tls-client-ca with --spiffe-trust-domain): anyone who can reach it could write records as any pod",
            args.listen
        );
    }
    if !loopback && args.tls_cert.is_none() {
        tracing::warn!(listen = %args.listen, "serving plaintext gRPC on a non-loopback address: credentials and records travel in clear text; use --tls-cert/--tls-key");
    }
    let readers = match &args.readers {
        Some(path) => {
            let file = auth::readers::ReadersFile::open(path)?;
            file.spawn_reloader();
            Some(file)
        }
        None => None,
    };
    let auth = Authenticator::new(
        shared,
        service_accounts,
        args.spiffe_trust_domain.clone(),
        readers,
        loopback,
    );
    if auth.is_open() {
        tracing::warn!(listen = %args.listen, "no credential configured: accepting unauthenticated clients on loopback only");
    }
    Ok(auth)
}

/// Runs the aggregator until `shutdown` completes.
pub async fn serve(
    args: Args,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let auth = Arc::new(authenticator(&args).await?);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let ready = crate::telemetry::start_health_endpoint(args.metrics_listen)?;
    let options = store::OpenOptions {
        spec: args.store.clone(),
        data_dir: args.data_dir.clone(),
        retention: store::Retention {
            max_age: args.retention,
            max_bytes: args.max_db_bytes,
            rollups: args.rollup_retention,
        },
        postgres: args.store_connect.pg_options()?,
    };
    // Opening may wait for a database that is starting: off the async threads.
    let store: Arc<dyn Store> = tokio::task::spawn_blocking(move || store::open(&options))
        .await
        .context("opening the store")?
        .context("opening the store")?;
    let _rollups = rollups::spawn(store.clone()).context("starting the rollups thread")?;
    if args.max_batch_records > args.admission.max_records_in_flight {
        anyhow::bail!(
            "--max-batch-records ({}) must not exceed --max-records-in-flight ({})",
            args.max_batch_records,
            args.admission.max_records_in_flight
        );
    }
    let admission = admission::Admission::new(args.admission.clone());
    let replica = peers::replica_id();
    let hub = Arc::new(Hub::new(args.subscriber_queue));
    let console_credentials = console::auth::Credentials::new(auth.clone());
    let limits = Limits::default();
    let (detector, detect_thread) = if args.no_detection {
        tracing::warn!("--no-detection: records are stored but no rule runs");
        (None, None)
    } else {
        let webhook = args
            .alert_webhook
            .as_deref()
            .map(alert_out::HttpTarget::parse)
            .transpose()?;
        let outputs =
            alert_out::Outputs::new(args.alert_stdout, webhook, args.alert_webhook_format)?;
        let (detector, handle) = detect::Detector::start(
            detect::DetectConfig {
                rules_dir: args.rules.clone(),
                with_managed: !args.no_managed_rules,
                state_path: args.data_dir.join("rule-state.json"),
                reemit: args.alert_reemit,
                outputs,
                join: crate::audit::correlate::JoinConfig {
                    window_ns: u64::try_from(args.audit.audit_join_window.as_nanos())
                        .unwrap_or(u64::MAX),
                    wait_ns: u64::try_from(args.audit.audit_join_wait.as_nanos())
                        .unwrap_or(u64::MAX),
                },
                replica: replica.clone(),
            },
            store.clone(),
            hub.clone(),
        )
        .context("loading detection rules")?;
        (Some(detector), Some(handle))
    };
    let loaded_rules = detector.as_ref().map(detect::Detector::loaded_rules);
    let (stop_audit, audit_stopped) = tokio::sync::oneshot::channel::<()>();
    let audit_task = match args.audit.audit_listen {
        Some(listen) => {
            let server = crate::audit::server::AuditServer::bind(
                crate::audit::server::ServerConfig {
                    listen,
                    clusters_file: args.audit.audit_clusters.clone().unwrap_or_default(),
                    tls: args.tls_cert.clone().zip(args.tls_key.clone()),
                    max_body_bytes: args.audit.audit_max_body_bytes,
                    firehose_bounds: Default::default(),
                },
                crate::audit::ingest::AuditIngest::new(
                    store.clone(),
                    hub.clone(),
                    detector.clone(),
                ),
            )
            .await
            .context("starting the audit endpoints")?;
            Some(tokio::spawn(server.serve(async {
                let _ = audit_stopped.await;
            })))
        }
        None => None,
    };
    let liveness = silenced_collector_watch(store.clone(), hub.clone(), detector.clone(), &replica);
    let ingest = IngestService::new(
        store.clone(),
        hub.clone(),
        detector,
        limits,
        args.max_batch_records,
        admission.clone(),
    )
    .with_liveness(liveness.clone());
    let peer_links = peers::Peers::start(&args.peers, replica.clone()).await?;
    let peer_service = args
        .peers
        .peer_token_file
        .clone()
        .map(|file| peers::PeerService::new(replica, hub.clone(), file));
    let subscribe = SubscribeService::new(hub.clone(), admission.clone())
        .with_peers(peer_links, args.subscriber_queue);
    let query = QueryService::new(store.clone(), admission.clone());
    let investigate = investigate::InvestigateService::new(store.clone(), admission);
    let (stop_console, console_stopped) = tokio::sync::oneshot::channel::<()>();
    let console_task = match args.ui_listen {
        Some(addr) => Some(
            start_console(
                &args,
                addr,
                console_credentials,
                store,
                hub,
                loaded_rules,
                async {
                    let _ = console_stopped.await;
                },
            )
            .await?,
        ),
        None => None,
    };

    // Windows of several batches per stream (hyper's default is 1 MiB, about five 2,048-record
    // batches): a collector keeps sending while the aggregator decodes.
    let mut builder = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20));
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let tls = crate::transport::server_tls(cert, key, args.tls_client_ca.as_deref())?;
        builder = builder.tls_config(tls).context("TLS configuration")?;
    }
    let max = args.max_message_bytes;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "aggregator serving");
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    builder
        .add_service(Authenticated::new(
            service::IngestRoute::new(ingest, max),
            auth.clone(),
            Purpose::Write,
        ))
        .add_service(Authenticated::new(
            pb::subscribe_server::SubscribeServer::new(subscribe),
            auth.clone(),
            Purpose::Read,
        ))
        .add_service(Authenticated::new(
            pb::query_server::QueryServer::new(query),
            auth.clone(),
            Purpose::Read,
        ))
        .add_service(Authenticated::new(
            pb::investigate_server::InvestigateServer::new(investigate),
            auth,
            Purpose::Read,
        ))
        // Not behind the reader/writer authentication: it takes the peer token alone.
        .add_optional_service(peer_service.map(pb::peer_server::PeerServer::new))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async move {
                shutdown.await;
                // Streams end now because the aggregator stops: no collector was silenced.
                liveness.stop();
            },
        )
        .await
        .context("serving gRPC")?;
    let _ = stop_console.send(());
    let _ = stop_audit.send(());
    if let Some(task) = console_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    if let Some(task) = audit_task {
        // The audit server gives open requests 10 s.
        let _ = tokio::time::timeout(Duration::from_secs(12), task).await;
    }
    if let Some(handle) = detect_thread {
        // The services (and with them the detector's sender) are gone: the thread drains,
        // saves its state and stops.
        let joined = tokio::task::spawn_blocking(move || handle.join());
        if tokio::time::timeout(Duration::from_secs(10), joined)
            .await
            .is_err()
        {
            tracing::warn!("detection did not stop within 10 s");
        }
    }
    tracing::info!("aggregator stopped");
    Ok(())
}

/// The watch for silenced collectors: its alerts go through detection (stored, published,
/// delivered to the outputs) or, without detection, to the store and subscribers.
fn silenced_collector_watch(
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    detector: Option<detect::Detector>,
    replica: &str,
) -> Arc<liveness::Liveness> {
    // Deduplicated per replica: sequence numbers from two replicas' clocks could meet.
    let batch_key = format!("{}/{replica}", liveness::LIVENESS_SOURCE);
    let asked = store.clone();
    let elsewhere: liveness::Elsewhere = Box::new(move |collector, seq| {
        // Unanswered (the database is down): the alert goes out, as with one replica.
        asked.stored_after(collector, seq).unwrap_or(false)
    });
    let watch = liveness::Liveness::with_elsewhere(
        Box::new(move |alerts| match &detector {
            Some(detector) => detector.submit(alerts),
            None => {
                // The writer's answer is not awaited: the alert is published either way.
                drop(store.append(batch_key.clone(), crate::model::now_ns(), alerts.clone()));
                hub.publish(&alerts);
            }
        }),
        Some(elsewhere),
    );
    watch.spawn();
    watch
}

/// Starts the web console on `addr`; it stops when `shutdown` completes.
async fn start_console(
    args: &Args,
    addr: SocketAddr,
    credentials: console::auth::Credentials,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    rules: Option<detect::LoadedRules>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    if credentials.is_empty() {
        anyhow::bail!(
            "--ui-listen needs a reader credential to sign in with: give --readers (or, on loopback, --token-file)"
        );
    }
    if !addr.ip().is_loopback() && !args.ui_behind_tls_proxy {
        anyhow::bail!(
            "refusing to serve the console on {addr} over plain HTTP: credentials and session cookies would cross the network in clear. Listen on loopback (e.g. behind kubectl port-forward), or put a TLS proxy in front and pass --ui-behind-tls-proxy"
        );
    }
    let hours = |d: Duration| d.as_secs() / 3600;
    let baseline_hours = hours(args.ui_baseline);
    if !(1..=console::scope::MAX_HOURS).contains(&baseline_hours)
        || args.ui_baseline.as_secs() % 3600 != 0
    {
        anyhow::bail!("--ui-baseline must be whole hours from 1h to 1y (365d)");
    }
    let console = Arc::new(console::Console::new(
        investigate::Investigator::new(store),
        hub,
        rules,
        console::ConsoleConfig {
            credentials,
            session_idle: args.ui_session_idle,
            secure_cookies: args.ui_behind_tls_proxy,
            default_baseline_hours: baseline_hours,
        },
    ));
    let (local, task) = console::start(console, addr, shutdown)
        .await
        .with_context(|| format!("console listening on {addr}"))?;
    tracing::info!(url = %format!("http://{local}/"), "web console serving");
    Ok(task)
}
