//! Fan-out between aggregator replicas on one store. Each replica's hub carries only what
//! that replica stored or raised itself; a subscriber's replica merges its own hub with
//! every peer's (`Peer.Local`), so the subscriber sees each event once whichever replica a
//! collector streams to. Peers are found the way Hubble Relay finds its peers: the names
//! in `--peers` (a headless Service's DNS name) are resolved every `--peer-refresh` to all
//! their addresses; the replica itself is among them and is recognised by the id it
//! answers with. A peer link is a credential of its own (`--peer-token-file`, a secret only
//! the aggregator's pods mount): no reader or writer credential opens `Peer.Local`, and the
//! peer token opens nothing else.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::aggregator::auth::authenticate::bearer;
use crate::aggregator::auth::{digest, digests_equal};
use crate::aggregator::hub::Hub;
use crate::config::parse_duration;
use crate::proto::v1 as pb;
use crate::telemetry::aggregator::{
    PeerEventReceived, PeerLinkFailed, PeerLinkRefused, PeerLinkStreaming, PeerLookupFailed,
};
use crate::telemetry::InternalEvent;
use crate::transport::TokenSource;

/// The response header naming the replica that answers `Peer.Local`.
const REPLICA_HEADER: &str = "procflow-replica";
/// How long a new subscription waits for its peer links before it is answered: once it
/// is, events any replica stores from then on reach it.
const LINK_WAIT: Duration = Duration::from_secs(3);
/// A broken link is retried this often while its peer is still resolved.
const RELINK_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, clap::Args)]
pub struct PeerArgs {
    /// Other replicas on the same store, as HOST:PORT names resolved to all their
    /// addresses every --peer-refresh (a headless Service, e.g.
    /// `procflow-aggregator-peers.procflow.svc.cluster.local:7410`); comma-separated. A
    /// subscriber on any replica then sees every replica's events. Needs --peer-token-file.
    #[arg(long, env = "PROCFLOW_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// The replicas' shared peer credential (a Secret only the aggregator mounts): peer
    /// links present it, and `Peer.Local` takes nothing else. Re-read per link.
    #[arg(long, env = "PROCFLOW_PEER_TOKEN_FILE")]
    pub peer_token_file: Option<PathBuf>,
    /// How often the --peers names are resolved again.
    #[arg(long, env = "PROCFLOW_PEER_REFRESH", default_value = "5s", value_parser = parse_duration)]
    pub peer_refresh: Duration,
    /// Dial peers over TLS trusting this CA bundle (with --peer-tls-server-name: replicas
    /// are dialled by address, which their certificates do not name).
    #[arg(long, env = "PROCFLOW_PEER_TLS_CA", requires = "peer_tls_server_name")]
    pub peer_tls_ca: Option<PathBuf>,
    /// The name the replicas' certificates carry.
    #[arg(long, env = "PROCFLOW_PEER_TLS_SERVER_NAME")]
    pub peer_tls_server_name: Option<String>,
}

/// This replica's view of its peers.
pub struct Peers {
    /// This replica's id (random per process): a link that reaches it is dropped.
    replica: String,
    token: TokenSource,
    addrs: watch::Receiver<BTreeSet<SocketAddr>>,
    /// Addresses found to be this replica.
    own: Mutex<HashSet<SocketAddr>>,
    tls: Option<tonic::transport::ClientTlsConfig>,
}

/// A new random replica id.
pub fn replica_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Why the peer links could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("--peers needs --peer-token-file: peer links carry every namespace's events and must be authenticated")]
    NoToken,
    #[error("--peer-token-file: {0}")]
    Token(#[from] crate::transport::TransportError),
    #[error("--peer-tls-ca {path}: {source}")]
    Ca {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Peers {
    /// Resolves the peers once and keeps them resolved; `None` without `--peers`.
    pub async fn start(args: &PeerArgs, replica: String) -> Result<Option<Arc<Peers>>, PeerError> {
        if args.peers.is_empty() {
            return Ok(None);
        }
        let Some(file) = &args.peer_token_file else {
            return Err(PeerError::NoToken);
        };
        let token = TokenSource::new(Some(file.clone()), None);
        token.read()?;
        let tls = match (&args.peer_tls_ca, &args.peer_tls_server_name) {
            (Some(ca), Some(name)) => {
                let pem = std::fs::read(ca).map_err(|source| PeerError::Ca {
                    path: ca.clone(),
                    source,
                })?;
                Some(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                        .domain_name(name.clone()),
                )
            }
            _ => None,
        };
        let (tx, addrs) = watch::channel(resolve(&args.peers).await.unwrap_or_default());
        tracing::info!(peers = ?*addrs.borrow(), replica, "peer replicas resolved");
        tokio::spawn(refresh(args.peers.clone(), tx, args.peer_refresh));
        Ok(Some(Arc::new(Peers {
            replica,
            token,
            addrs,
            own: Mutex::default(),
            tls,
        })))
    }

    /// A subscription's stream: `local` (this replica's hub) merged with every peer's
    /// `Local` under `filter`; peers resolved later join it. Answers once the peers known
    /// now are linked (or have failed to link, logged), at most [`LINK_WAIT`].
    /// `namespaces` (empty: all) is checked again on what peers send.
    pub async fn merge(
        self: &Arc<Self>,
        mut local: mpsc::Receiver<pb::SubscribeItem>,
        filter: pb::Filter,
        capacity: usize,
    ) -> mpsc::Receiver<pb::SubscribeItem> {
        let (tx, out) = mpsc::channel(capacity.max(1));
        let forward = tx.clone();
        tokio::spawn(async move {
            // Waiting on a slow subscriber fills the hub's queue for it: the hub counts
            // what it misses and sends the gap, as without peers.
            while let Some(item) = local.recv().await {
                if forward.send(item).await.is_err() {
                    return;
                }
            }
        });
        let filter = Arc::new(filter);
        let mut links: HashMap<SocketAddr, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut waits = Vec::new();
        let mut addrs = self.addrs.clone();
        let current = addrs.borrow_and_update().clone();
        for addr in current {
            let (ready, linked) = oneshot::channel();
            waits.push(linked);
            links.insert(
                addr,
                self.spawn_link(addr, filter.clone(), tx.clone(), Some(ready)),
            );
        }
        let _ = tokio::time::timeout(LINK_WAIT, futures_all(waits)).await;
        let peers = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = addrs.changed() => {
                        if changed.is_err() { break; }
                        let now = addrs.borrow_and_update().clone();
                        links.retain(|addr, link| {
                            let keep = now.contains(addr) && !link.is_finished();
                            if !keep { link.abort(); }
                            keep
                        });
                        for addr in now {
                            links.entry(addr).or_insert_with(|| {
                                peers.spawn_link(addr, filter.clone(), tx.clone(), None)
                            });
                        }
                    }
                    _ = tx.closed() => break,
                }
            }
            for link in links.values() {
                link.abort();
            }
        });
        out
    }

    fn spawn_link(
        self: &Arc<Self>,
        addr: SocketAddr,
        filter: Arc<pb::Filter>,
        tx: mpsc::Sender<pb::SubscribeItem>,
        ready: Option<oneshot::Sender<()>>,
    ) -> tokio::task::JoinHandle<()> {
        let peers = self.clone();
        tokio::spawn(async move { peers.link(addr, &filter, tx, ready).await })
    }

    /// One peer's events into `tx`, relinked after a failure, until the subscriber leaves,
    /// the address is this replica, or it is no longer resolved (the task is aborted).
    async fn link(
        &self,
        addr: SocketAddr,
        filter: &pb::Filter,
        tx: mpsc::Sender<pb::SubscribeItem>,
        mut ready: Option<oneshot::Sender<()>>,
    ) {
        let allowed: HashSet<&str> = filter.namespaces.iter().map(String::as_str).collect();
        loop {
            if self.own.lock().is_ok_and(|own| own.contains(&addr)) {
                return;
            }
            let opened = tokio::select! {
                opened = self.open(addr, filter) => opened,
                _ = tx.closed() => return,
            };
            let failure = match opened {
                Ok((replica, _)) if replica == self.replica => {
                    if let Ok(mut own) = self.own.lock() {
                        own.insert(addr);
                    }
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                    return;
                }
                Ok((_, mut stream)) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                    PeerLinkStreaming { up: true }.emit();
                    let ended = loop {
                        let item = tokio::select! {
                            item = stream.message() => item,
                            _ = tx.closed() => break None,
                        };
                        match item {
                            Ok(Some(item)) => {
                                if !in_scope(&item, &allowed) {
                                    // A peer applies the same filter: this is a bug or a
                                    // forged link, never shown.
                                    PeerEventReceived { in_scope: false }.emit();
                                    continue;
                                }
                                PeerEventReceived { in_scope: true }.emit();
                                if tx.send(item).await.is_err() {
                                    break None;
                                }
                            }
                            Ok(None) => break Some("the peer ended the stream".to_owned()),
                            Err(status) => break Some(status.to_string()),
                        }
                    };
                    PeerLinkStreaming { up: false }.emit();
                    match ended {
                        Some(why) => why,
                        None => return,
                    }
                }
                Err(why) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                    why
                }
            };
            PeerLinkFailed {
                addr,
                why: &failure,
            }
            .emit();
            tokio::select! {
                _ = tokio::time::sleep(RELINK_EVERY) => {}
                _ = tx.closed() => return,
            }
        }
    }

    /// Opens `Peer.Local` on `addr`: the replica id it answers with, and its stream.
    async fn open(
        &self,
        addr: SocketAddr,
        filter: &pb::Filter,
    ) -> Result<(String, tonic::Streaming<pb::SubscribeItem>), String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2));
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| e.to_string())?;
        }
        let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
        let token = self
            .token
            .read()
            .map_err(|e| e.to_string())?
            .ok_or("the peer token file is empty")?;
        let mut request = Request::new(pb::SubscribeRequest {
            filter: Some(filter.clone()),
        });
        token.authorize(&mut request);
        let response = pb::peer_client::PeerClient::new(channel)
            .local(request)
            .await
            .map_err(|s| s.to_string())?;
        let replica = response
            .metadata()
            .get(REPLICA_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok((replica, response.into_inner()))
    }
}

/// Whether a peer's event is in the subscriber's namespaces (`allowed` empty: all).
fn in_scope(item: &pb::SubscribeItem, allowed: &HashSet<&str>) -> bool {
    match &item.item {
        Some(pb::subscribe_item::Item::Event(e)) => {
            allowed.is_empty()
                || e.source
                    .as_ref()
                    .is_some_and(|s| allowed.contains(s.pod_namespace.as_str()))
        }
        _ => true,
    }
}

async fn futures_all(waits: Vec<oneshot::Receiver<()>>) {
    for wait in waits {
        let _ = wait.await;
    }
}

/// Every address of every name; `None` when a lookup failed (the last good set stays:
/// a DNS hiccup must not cut live links).
async fn resolve(names: &[String]) -> Option<BTreeSet<SocketAddr>> {
    let mut all = BTreeSet::new();
    for name in names {
        match tokio::net::lookup_host(name.as_str()).await {
            Ok(addrs) => all.extend(addrs),
            Err(error) => {
                PeerLookupFailed {
                    name,
                    error: &error,
                }
                .emit();
                return None;
            }
        }
    }
    Some(all)
}

async fn refresh(names: Vec<String>, tx: watch::Sender<BTreeSet<SocketAddr>>, every: Duration) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tx.closed() => return,
        }
        if let Some(now) = resolve(&names).await {
            tx.send_if_modified(|addrs| {
                let changed = *addrs != now;
                if changed {
                    tracing::info!(peers = ?now, "peer replicas changed");
                    *addrs = now;
                }
                changed
            });
        }
    }
}

// === impl PeerService ===

/// `Peer.Local`: this replica's own events, for its peers only.
pub struct PeerService {
    replica: String,
    hub: Arc<Hub>,
    token: TokenSource,
}

impl PeerService {
    pub fn new(replica: String, hub: Arc<Hub>, token_file: PathBuf) -> PeerService {
        PeerService {
            replica,
            hub,
            token: TokenSource::new(Some(token_file), None),
        }
    }

    /// Whether the request carries the peer token (compared in constant time).
    fn authorized<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let expected = match self.token.read() {
            Ok(Some(token)) => digest(token.secret().as_bytes()),
            _ => return Err(Status::unavailable("the peer token cannot be read")),
        };
        let presented = bearer(request.metadata().as_ref());
        let ok = presented.is_some_and(|t| digests_equal(&digest(t.as_bytes()), &expected));
        if !ok {
            PeerLinkRefused {
                peer: request.remote_addr(),
            }
            .emit();
            return Err(Status::unauthenticated(
                "Peer.Local takes the peer credential only",
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    type LocalStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::SubscribeItem, Status>> + Send>,
    >;

    async fn local(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::LocalStream>, Status> {
        self.authorized(&request)?;
        let filter = request.into_inner().filter.unwrap_or_default();
        let namespaces = filter.namespaces.clone();
        let rx = self
            .hub
            .subscribe(crate::aggregator::service::live_filter(&filter, namespaces));
        let mut response: Response<Self::LocalStream> =
            Response::new(Box::pin(ReceiverStream::new(rx).map(Ok)));
        if let Ok(value) = self.replica.parse() {
            response.metadata_mut().insert(REPLICA_HEADER, value);
        }
        Ok(response)
    }
}
