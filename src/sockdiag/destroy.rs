//! The destroy-event stream: every socket of the network namespace that dies is reported
//! once by the kernel on the `SKNLGRP_*_DESTROY` multicast groups, with its final counters.
//!
//! A dedicated thread reads it and never blocks on anything else: events go into a bounded
//! channel. Every loss is counted in [`DestroyStats`]: events the kernel drops (`ENOBUFS`,
//! the exact count from `SO_MEMINFO`) and events the channel had no room for. The engine
//! reads those counts and resynchronises with a full dump when they move (a notice sent
//! through the channel could itself find it full).

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

use super::msg::{self, SocketInfo, SOCK_DIAG_BY_FAMILY};
use crate::model::{Protocol, UnixNanos};
use crate::telemetry::collector::{
    DestroyEventDropped, DestroyEventReceived, DestroyEventsLost, DestroyReceiveFailed,
    SockdiagMalformed,
};
use crate::telemetry::InternalEvent;

/// `SKNLGRP_*` group numbers from `include/uapi/linux/sock_diag.h`.
const SKNLGRP_INET_TCP_DESTROY: u32 = 1;
const SKNLGRP_INET_UDP_DESTROY: u32 = 2;
const SKNLGRP_INET6_TCP_DESTROY: u32 = 3;
const SKNLGRP_INET6_UDP_DESTROY: u32 = 4;

/// Default receive buffer asked for; unprivileged sockets get at most 2 × `net.core.rmem_max`.
pub const DEFAULT_RCVBUF: usize = 32 * 1024 * 1024;
const RECV_BUF: usize = 64 * 1024;
/// How often the reader looks at its stop flag while idle.
const STOP_POLL: Duration = Duration::from_millis(500);
/// After the first overflow is logged, later ones are summed into one line at most this often.
const OVERFLOW_LOG_EVERY: Duration = Duration::from_secs(60);

/// A socket the kernel reported destroyed, with its final counters, and when it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestroyEvent {
    pub socket: SocketInfo,
    pub at: UnixNanos,
}

/// What the reader lost, for the collector's heartbeat (the metrics count the same).
#[derive(Debug, Default)]
pub struct DestroyStats {
    /// Times the kernel reported `ENOBUFS` on the stream.
    pub overflows: AtomicU64,
    /// Events the kernel dropped (`SO_MEMINFO` drop count; at least one per overflow).
    pub events_lost: AtomicU64,
    /// Events dropped because the engine's queue was full.
    pub queue_dropped: AtomicU64,
}

impl DestroyStats {
    /// Moves whenever events were lost, by the kernel or on the way to the engine.
    pub fn losses(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed) + self.queue_dropped.load(Ordering::Relaxed)
    }
}

/// Handle on the reader thread; dropping it does not stop the thread, `stop` does.
pub struct DestroyListener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Receive buffer the kernel granted.
    pub rcvbuf: usize,
    pub stats: Arc<DestroyStats>,
}

impl DestroyListener {
    /// Joins the four destroy groups and starts the reader thread. Events arrive on the
    /// returned channel, which holds at most `capacity` events; the socket asks for a
    /// receive buffer of `rcvbuf` bytes.
    pub fn start(
        capacity: usize,
        rcvbuf: usize,
    ) -> io::Result<(DestroyListener, Receiver<DestroyEvent>)> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        let rcvbuf = crate::sys::net::set_receive_buffer(socket.as_fd(), rcvbuf)?;
        crate::sys::net::set_receive_timeout(socket.as_fd(), STOP_POLL)?;
        for group in [
            SKNLGRP_INET_TCP_DESTROY,
            SKNLGRP_INET_UDP_DESTROY,
            SKNLGRP_INET6_TCP_DESTROY,
            SKNLGRP_INET6_UDP_DESTROY,
        ] {
            socket.add_membership(group)?;
        }
        // Bounded by its one sender (`send`), not by a bounded channel: that one writes
        // every slot when made (16,384 × 256 B: 4 MiB resident from start-up in a pod
        // that may never see a burst); this one allocates as events come, frees as read.
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(DestroyStats::default());
        let thread = std::thread::Builder::new()
            .name("destroy-events".into())
            .spawn({
                let stop = stop.clone();
                let stats = stats.clone();
                move || read_loop(socket, Bounded { tx, capacity }, stop, &stats)
            })?;
        Ok((
            DestroyListener {
                stop,
                thread: Some(thread),
                rcvbuf,
                stats,
            },
            rx,
        ))
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for DestroyListener {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_loop(socket: Socket, tx: Bounded, stop: Arc<AtomicBool>, stats: &DestroyStats) {
    let mut buf = Vec::with_capacity(RECV_BUF);
    let mut kernel_drops_seen = 0u32;
    let mut overflow_log = OverflowLog::default();
    while !stop.load(Ordering::Relaxed) {
        buf.clear();
        let (len, from) = match socket.recv_from(&mut buf, 0) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                let drops =
                    crate::sys::net::socket_drops(socket.as_fd()).unwrap_or(kernel_drops_seen);
                let lost = u64::from(drops.wrapping_sub(kernel_drops_seen)).max(1);
                kernel_drops_seen = drops;
                DestroyEventsLost { lost }.emit();
                stats.overflows.fetch_add(1, Ordering::Relaxed);
                stats.events_lost.fetch_add(lost, Ordering::Relaxed);
                overflow_log.note(lost, Instant::now());
                continue;
            }
            Err(error) => {
                DestroyReceiveFailed { error: &error }.emit();
                std::thread::sleep(STOP_POLL);
                continue;
            }
        };
        let at = crate::model::now_ns();
        // The group bit tells TCP from UDP: the message itself does not say.
        let protocol = if from.multicast_groups()
            & (bit(SKNLGRP_INET_UDP_DESTROY) | bit(SKNLGRP_INET6_UDP_DESTROY))
            != 0
        {
            Protocol::Udp
        } else {
            Protocol::Tcp
        };
        for message in msg::messages(&buf[..len.min(buf.len())]) {
            let parsed = message.map_err(|e| e.to_string()).and_then(|m| {
                if m.kind != SOCK_DIAG_BY_FAMILY {
                    return Err(format!("unexpected message type {}", m.kind));
                }
                msg::parse_socket(m.payload, protocol).map_err(|e| e.to_string())
            });
            match parsed {
                Ok(socket) => {
                    DestroyEventReceived.emit();
                    tx.send(DestroyEvent { socket, at }, stats);
                }
                Err(error) => {
                    SockdiagMalformed {
                        what: "destroy event",
                        error: &error,
                        family: None,
                        protocol: Some(protocol),
                    }
                    .emit();
                    break;
                }
            }
        }
    }
}

fn bit(group: u32) -> u32 {
    1 << (group - 1)
}

/// Logs the first overflow at once and later ones as one summed line per
/// [`OVERFLOW_LOG_EVERY`]: a stream that overflows under load must not flood the log too.
#[derive(Default)]
struct OverflowLog {
    last_logged: Option<Instant>,
    overflows_since: u64,
    lost_since: u64,
}

impl OverflowLog {
    fn note(&mut self, lost: u64, now: Instant) {
        self.overflows_since += 1;
        self.lost_since += lost;
        let due = self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= OVERFLOW_LOG_EVERY);
        if !due {
            return;
        }
        tracing::warn!(
            overflows = self.overflows_since,
            lost = self.lost_since,
            "destroy-event stream overflowed (ENOBUFS): events lost, resynchronising with a full dump (flows that went missing end as RECOVERED)"
        );
        self.last_logged = Some(now);
        self.overflows_since = 0;
        self.lost_since = 0;
    }
}

/// The reader's end of the channel: at most `capacity` events wait in it. The reader is
/// its only sender, so the length it reads can only shrink before its own send.
struct Bounded {
    tx: Sender<DestroyEvent>,
    capacity: usize,
}

impl Bounded {
    /// Queues `event`, or counts it dropped when `capacity` events already wait.
    fn send(&self, event: DestroyEvent, stats: &DestroyStats) {
        if self.tx.len() >= self.capacity.max(1) {
            DestroyEventDropped.emit();
            stats.queue_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Disconnected: the engine is gone, and the reader stops with it.
        let _ = self.tx.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(cookie: u64) -> DestroyEvent {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 80));
        let socket = SocketInfo {
            cookie,
            protocol: Protocol::Tcp,
            family: crate::model::Family::Ipv4,
            state: 7,
            local: addr,
            remote: addr,
            rqueue: 0,
            wqueue: 0,
            uid: 0,
            inode: 0,
            interface: 0,
            tcp: None,
            cgroup_id: None,
            timewait: false,
        };
        DestroyEvent { socket, at: 0 }
    }

    #[test]
    fn a_full_channel_drops_and_counts_and_takes_events_again_once_read() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let tx = Bounded { tx, capacity: 2 };
        let stats = DestroyStats::default();
        for cookie in 1..=3 {
            tx.send(event(cookie), &stats);
        }
        assert_eq!(stats.queue_dropped.load(Ordering::Relaxed), 1);
        assert_eq!(rx.recv().map(|e| e.socket.cookie), Ok(1));
        tx.send(event(4), &stats);
        let left: Vec<u64> = rx.try_iter().map(|e| e.socket.cookie).collect();
        assert_eq!(left, [2, 4]);
        assert_eq!(stats.queue_dropped.load(Ordering::Relaxed), 1);
    }
}
