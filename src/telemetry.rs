//! The daemons' own telemetry: logging setup, sampled logging, the internal events of each
//! side (`collector`, `aggregator`: each event counts its metric and logs in one place,
//! beside the metric names), and the Prometheus and health endpoint.

pub mod aggregator;
pub mod audit;
pub mod collector;

use tracing_subscriber::EnvFilter;

/// Logs go to stderr (stdout carries records with `--output stdout`). `RUST_LOG` filters.
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Something that happened inside procflow: emitting it counts it and, where it needs a
/// reader, logs it (sampled wherever it can repeat at a client's will).
pub trait InternalEvent {
    fn emit(self);
}

// === Sampled logging ===

/// A log line that a client can provoke at will (a wrong credential, a forged batch) is
/// written for the first `burst` occurrences of each `period` and then held back; the next
/// line written says how many were. The counter beside it counts them all.
pub struct LogSampler {
    burst: u64,
    period_ms: u64,
    window: std::sync::atomic::AtomicU64,
    seen: std::sync::atomic::AtomicU64,
}

impl LogSampler {
    pub const fn new(burst: u64, period: std::time::Duration) -> LogSampler {
        LogSampler {
            burst,
            period_ms: period.as_millis() as u64,
            window: std::sync::atomic::AtomicU64::new(0),
            seen: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last line written)` when this occurrence is to be logged.
    pub fn sample(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now_ms = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64;
        // Window numbers start at 1 so the first call opens a window.
        let window = now_ms / self.period_ms.max(1) + 1;
        if self.window.swap(window, Relaxed) != window {
            let before = self.seen.swap(1, Relaxed);
            return Some(before.saturating_sub(self.burst));
        }
        let n = self.seen.fetch_add(1, Relaxed) + 1;
        (n <= self.burst).then_some(0)
    }
}

// === Prometheus + health endpoint ===

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("installing the metrics recorder: {0}")]
    Recorder(#[from] metrics_exporter_prometheus::BuildError),
    #[error("metrics endpoint {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics endpoint thread: {0}")]
    Thread(std::io::Error),
}

/// Serves `GET /metrics` (Prometheus text), `/healthz` (alive) and `/readyz` (ready once
/// `ready` is set) over a deliberately tiny HTTP/1.1 implementation: one request per
/// connection, bounded request size, no body.
pub struct HealthServer {
    handle: metrics_exporter_prometheus::PrometheusHandle,
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HealthServer {
    /// Installs the global Prometheus recorder (once per process).
    pub fn install() -> Result<HealthServer, HealthError> {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
        Ok(HealthServer {
            handle,
            ready: Default::default(),
        })
    }

    pub fn ready_flag(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.ready.clone()
    }

    /// Accepts connections until the process exits.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let handle = self.handle.clone();
            let ready = self.ready.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let n = match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    stream.read(&mut buf),
                )
                .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let path = std::str::from_utf8(&buf[..n])
                    .ok()
                    .and_then(|req| req.split_whitespace().nth(1))
                    .unwrap_or("");
                let (status, body) = match path {
                    "/metrics" => ("200 OK", handle.render()),
                    "/healthz" => ("200 OK", "ok\n".to_owned()),
                    "/readyz" if ready.load(std::sync::atomic::Ordering::Relaxed) => {
                        ("200 OK", "ready\n".to_owned())
                    }
                    "/readyz" => ("503 Service Unavailable", "starting\n".to_owned()),
                    _ => ("404 Not Found", "not found\n".to_owned()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    }
}

/// Starts the endpoint on its own thread when `listen` is set; returns the ready flag.
pub fn start_health_endpoint(
    listen: Option<std::net::SocketAddr>,
) -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>, HealthError> {
    let Some(addr) = listen else {
        return Ok(Default::default());
    };
    let server = HealthServer::install()?;
    let ready = server.ready_flag();
    let listen_error = |source| HealthError::Listen { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(listen_error)?;
    std_listener.set_nonblocking(true).map_err(listen_error)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(error) => {
                    tracing::error!(%error, "metrics endpoint runtime");
                    return;
                }
            };
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(listener) => server.serve(listener).await,
                    Err(error) => tracing::error!(%error, "metrics endpoint"),
                }
            });
        })
        .map_err(HealthError::Thread)?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    Ok(ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_a_burst_at_a_time_and_the_rest_is_reported_held_back() {
        let sampler = LogSampler::new(3, std::time::Duration::from_secs(3600));
        let logged: Vec<Option<u64>> = (0..1000).map(|_| sampler.sample()).collect();
        assert_eq!(logged.iter().filter(|l| l.is_some()).count(), 3);
        assert_eq!(&logged[..4], &[Some(0), Some(0), Some(0), None]);
        let short = LogSampler::new(1, std::time::Duration::from_millis(1));
        assert_eq!(short.sample(), Some(0));
        for _ in 0..9 {
            short.sample();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        // The first line of the next window says how many were held back (at most the 9).
        assert!(short.sample().is_some_and(|held| held <= 9));
    }
}
