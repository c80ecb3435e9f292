//! Alert outputs: JSON lines on stdout, and a webhook (procflow JSON or a Falco-compatible
//! payload for falcosidekick) POSTed from its own thread with retries. A slow or dead
//! webhook never blocks detection: its queue is bounded, and what it cannot deliver is
//! dropped, counted and logged.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use crate::model::{Event, Record};
use crate::telemetry::aggregator::{AlertDelivered, AlertDropped};
use crate::telemetry::InternalEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WebhookFormat {
    /// The alert event as procflow JSON (same shape as `procflow tail --json`).
    Procflow,
    /// Falco's JSON output (`output`, `priority`, `rule`, `time`, `output_fields`): point
    /// it at falcosidekick to reach its destinations.
    Falco,
}

/// Why a webhook URL was refused at start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookUrlError {
    #[error("webhook URL {0:?}: only http:// is supported (run falcosidekick or a TLS proxy beside the aggregator)")]
    Scheme(String),
    #[error("webhook URL {url:?}: bad port {port:?}")]
    Port { url: String, port: String },
    #[error("webhook URL {0:?}: no host")]
    Host(String),
}

/// A plain-HTTP endpoint, parsed once at start so a bad URL stops the aggregator.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    host: String,
    port: u16,
    path: String,
}

impl HttpTarget {
    pub fn parse(url: &str) -> Result<HttpTarget, WebhookUrlError> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(WebhookUrlError::Scheme(url.to_owned()));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_matches(['[', ']']).to_owned(),
                p.parse().map_err(|_| WebhookUrlError::Port {
                    url: url.to_owned(),
                    port: p.to_owned(),
                })?,
            ),
            _ => (authority.to_owned(), 80),
        };
        if host.is_empty() {
            return Err(WebhookUrlError::Host(url.to_owned()));
        }
        Ok(HttpTarget {
            host,
            port,
            path: path.to_owned(),
        })
    }

    /// One POST; Ok when the server answered 2xx.
    fn post(&self, body: &[u8]) -> Result<(), String> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("resolving {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", self.host))?;
        let timeout = Duration::from_secs(5);
        let mut stream =
            TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
        stream.set_read_timeout(Some(timeout)).ok();
        stream.set_write_timeout(Some(timeout)).ok();
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: procflow/{}\r\nConnection: close\r\n\r\n",
            self.path,
            self.host,
            self.port,
            body.len(),
            env!("CARGO_PKG_VERSION")
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .map_err(|e| format!("send: {e}"))?;
        let mut status = [0u8; 12];
        stream
            .read_exact(&mut status)
            .map_err(|e| format!("no response: {e}"))?;
        // "HTTP/1.1 204"
        match status.get(9) {
            Some(b'2') => Ok(()),
            _ => Err(format!(
                "answered {}",
                String::from_utf8_lossy(&status[9..]).trim()
            )),
        }
    }
}

pub struct Outputs {
    stdout: bool,
    webhook: Option<Sender<Vec<u8>>>,
    format: WebhookFormat,
    worker: Option<std::thread::JoinHandle<()>>,
}

const WEBHOOK_QUEUE: usize = 10_000;
const WEBHOOK_ATTEMPTS: u32 = 5;

impl Outputs {
    pub fn new(
        stdout: bool,
        webhook: Option<HttpTarget>,
        format: WebhookFormat,
    ) -> std::io::Result<Outputs> {
        let (webhook, worker) = match webhook {
            None => (None, None),
            Some(target) => {
                let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(WEBHOOK_QUEUE);
                let handle = std::thread::Builder::new()
                    .name("alert-webhook".into())
                    .spawn(move || {
                        for body in rx {
                            deliver_with_retry(&target, &body);
                        }
                    })?;
                (Some(tx), Some(handle))
            }
        };
        Ok(Outputs {
            stdout,
            webhook,
            format,
            worker,
        })
    }

    pub fn none() -> Outputs {
        Outputs {
            stdout: false,
            webhook: None,
            format: WebhookFormat::Procflow,
            worker: None,
        }
    }

    pub fn deliver(&self, alerts: &[Event]) {
        for event in alerts {
            let Record::Alert(alert) = &event.record else {
                continue;
            };
            if self.stdout {
                match serde_json::to_string(event) {
                    Ok(line) => {
                        println!("{line}");
                        AlertDelivered { output: "stdout" }.emit();
                    }
                    Err(error) => tracing::error!(%error, "alert not serialisable"),
                }
            }
            if let Some(tx) = &self.webhook {
                let body = match self.format {
                    WebhookFormat::Procflow => serde_json::to_vec(event),
                    WebhookFormat::Falco => serde_json::to_vec(&crate::rules::falco_payload(alert)),
                };
                let Ok(body) = body else { continue };
                if let Err(e) = tx.try_send(body) {
                    let why = match e {
                        TrySendError::Full(_) => "not queued: queue full",
                        TrySendError::Disconnected(_) => "not queued: worker stopped",
                    };
                    AlertDropped {
                        output: "webhook",
                        rule: Some(&alert.rule_id),
                        why: &why,
                    }
                    .emit();
                }
            }
        }
    }

    /// Lets the webhook worker drain what is queued, then stops it.
    pub fn close(mut self) {
        self.webhook = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn deliver_with_retry(target: &HttpTarget, body: &[u8]) {
    let mut delay = Duration::from_millis(250);
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        match target.post(body) {
            Ok(()) => {
                AlertDelivered { output: "webhook" }.emit();
                return;
            }
            Err(error) if attempt < WEBHOOK_ATTEMPTS => {
                tracing::warn!(%error, attempt, "alert webhook failed; retrying");
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(error) => {
                AlertDropped {
                    output: "webhook",
                    rule: None,
                    why: &format_args!("failed {attempt} times: {error}"),
                }
                .emit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_urls_and_refuses_others() {
        let t = HttpTarget::parse("http://sidekick.ns.svc:2801/").expect("url");
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("sidekick.ns.svc", 2801, "/")
        );
        let t = HttpTarget::parse("http://127.0.0.1/hook?x=1").expect("url");
        assert_eq!((t.port, t.path.as_str()), (80, "/hook?x=1"));
        let t = HttpTarget::parse("http://[::1]:9000").expect("url");
        assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
        assert!(HttpTarget::parse("https://x").is_err());
        assert!(HttpTarget::parse("http://:80/").is_err());
        assert!(HttpTarget::parse("http://h:notaport/").is_err());
    }
}
