//! Full sock_diag dumps over one `NETLINK_SOCK_DIAG` socket, reused across polls.
//!
//! Each dump is read to `NLMSG_DONE`, datagram by datagram, walking every message in each.
//! A message that does not parse is skipped and counted; a kernel error ends the dump with
//! a typed error; `NLM_F_DUMP_INTR` marks the result incomplete (sockets changed during the
//! dump), which the caller must not use to conclude that a socket vanished.

use std::io;
use std::os::fd::AsFd;

use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};
use thiserror::Error;

use super::msg::{
    self, SocketInfo, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_DUMP_INTR,
    SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK,
};
use crate::model::{Family, Protocol};
use crate::telemetry::collector::{DumpInterrupted, SockdiagMalformed};
use crate::telemetry::InternalEvent;

/// Receive buffer per datagram: the kernel sends dump datagrams of at most ~32 KiB.
const RECV_BUF: usize = 64 * 1024;

/// The kernel builds each reply datagram inside our `recv`, so a wait this long means a
/// reply was lost; the engine thread must not block on it forever.
const RECV_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum DumpError {
    #[error("opening a NETLINK_SOCK_DIAG socket: {0}")]
    Open(#[source] io::Error),
    #[error("{table} dump: sending the request: {source}")]
    Send { table: Table, source: io::Error },
    #[error("{table} dump: receiving: {source}")]
    Recv { table: Table, source: io::Error },
    #[error("{table} dump: no reply from the kernel within {RECV_TIMEOUT:?}")]
    TimedOut { table: Table },
    #[error("{table} dump: the kernel answered error {errno} ({})", io::Error::from_raw_os_error(*errno))]
    Kernel { table: Table, errno: i32 },
    #[error("{table} dump: datagram of {len} bytes filled the {RECV_BUF}-byte buffer and may be truncated")]
    Truncated { table: Table, len: usize },
}

/// The sockets one request asks for: a protocol, of one family or of both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// `None`: both families (a `TCPDIAG_GETSOCK` dump).
    pub family: Option<Family>,
    pub protocol: Protocol,
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let family = match self.family {
            Some(Family::Ipv4) => "IPv4",
            Some(Family::Ipv6) => "IPv6",
            None => "IPv4+IPv6",
        };
        write!(f, "{:?}/{family}", self.protocol)
    }
}

/// What one dump saw besides the sockets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DumpStats {
    pub messages: usize,
    pub datagrams: usize,
    /// The kernel flagged the dump as interrupted: it may miss or repeat sockets.
    pub interrupted: bool,
    /// Messages that did not parse (skipped, counted).
    pub malformed: usize,
}

impl DumpStats {
    fn add(&mut self, other: DumpStats) {
        self.messages += other.messages;
        self.datagrams += other.datagrams;
        self.interrupted |= other.interrupted;
        self.malformed += other.malformed;
    }
}

/// The four socket tables procflow follows.
pub const TABLES: [(Family, Protocol); 4] = [
    (Family::Ipv4, Protocol::Tcp),
    (Family::Ipv6, Protocol::Tcp),
    (Family::Ipv4, Protocol::Udp),
    (Family::Ipv6, Protocol::Udp),
];

/// A sock_diag socket for dumps, with its receive buffer kept across dumps.
pub struct Dumper {
    socket: Socket,
    buf: Vec<u8>,
    /// The sockets of the datagram being read.
    batch: Vec<SocketInfo>,
    seq: u32,
    /// Whether the kernel serves `TCPDIAG_GETSOCK` dumps (`None` until the first one).
    tcp_both_families: Option<bool>,
}

impl Dumper {
    pub fn open() -> Result<Self, DumpError> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(DumpError::Open)?;
        socket.bind_auto().map_err(DumpError::Open)?;
        crate::sys::net::set_receive_timeout(socket.as_fd(), RECV_TIMEOUT)
            .map_err(DumpError::Open)?;
        Ok(Dumper {
            socket,
            buf: Vec::with_capacity(RECV_BUF),
            batch: Vec::new(),
            seq: 0,
            tcp_both_families: None,
        })
    }

    /// Dumps every tracked socket of all four tables into `out` (appended).
    pub fn dump_all(&mut self, out: &mut Vec<SocketInfo>) -> Result<DumpStats, DumpError> {
        self.dump_all_with(|batch| out.extend_from_slice(batch))
    }

    /// Dumps every tracked socket of all four tables, handing `each` the sockets of one
    /// datagram at a time: a consumer that takes them there reads them while they are in
    /// cache, and nothing holds the whole dump. TCP's two families come from one walk of
    /// the connection hash where the kernel serves it (the walk is most of a dump's cost).
    pub fn dump_all_with(
        &mut self,
        mut each: impl FnMut(&[SocketInfo]),
    ) -> Result<DumpStats, DumpError> {
        let mut stats = DumpStats::default();
        if self.tcp_both_families != Some(false) {
            self.seq = self.seq.wrapping_add(1);
            let request = msg::tcp_dump_request_both_families(msg::TCP_STATES_TRACKED, self.seq);
            let table = Table {
                family: None,
                protocol: Protocol::Tcp,
            };
            match self.run(&request, table, &mut each) {
                Ok(tcp) => {
                    self.tcp_both_families = Some(true);
                    stats.add(tcp);
                }
                // Refused from the start (no sockets were handed on): one dump per family.
                Err(DumpError::Kernel { errno, .. }) if self.tcp_both_families.is_none() => {
                    tracing::info!(
                        errno,
                        "TCPDIAG_GETSOCK dumps refused; dumping TCP one family at a time"
                    );
                    self.tcp_both_families = Some(false);
                }
                Err(error) => return Err(error),
            }
        }
        for (family, protocol) in TABLES {
            if protocol == Protocol::Tcp && self.tcp_both_families == Some(true) {
                continue;
            }
            let states = match protocol {
                Protocol::Tcp => msg::TCP_STATES_TRACKED,
                Protocol::Udp | Protocol::Packet => msg::ALL_STATES,
            };
            stats.add(self.dump(family, protocol, states, &mut each)?);
        }
        Ok(stats)
    }

    fn send(&self, request: &[u8], table: Table) -> Result<(), DumpError> {
        self.socket
            .send(request, 0)
            .map(|_| ())
            .map_err(|source| DumpError::Send { table, source })
    }

    /// One datagram into the buffer; `None` when a signal interrupted the wait.
    fn recv(&mut self, table: Table) -> Result<Option<usize>, DumpError> {
        self.buf.clear();
        match self.socket.recv(&mut self.buf, 0) {
            Ok(len) => Ok(Some(len)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(DumpError::TimedOut { table }),
            Err(source) => Err(DumpError::Recv { table, source }),
        }
    }

    /// The state of the TCP socket with this 4-tuple (a TIME_WAIT minisocket reports
    /// `TIME_WAIT`), or `None` when there is none.
    pub fn lookup_state(
        &mut self,
        family: Family,
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
    ) -> Result<Option<u8>, DumpError> {
        Ok(self.lookup(family, local, remote, None)?.map(|s| s.state))
    }

    /// The TCP socket with this 4-tuple (and this cookie, when given), or `None` when there
    /// is none: one request and one reply, whatever the number of sockets.
    pub fn lookup(
        &mut self,
        family: Family,
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
        cookie: Option<u64>,
    ) -> Result<Option<SocketInfo>, DumpError> {
        self.lookup_on(family, local, remote, 0, cookie)
    }

    /// The socket a dump showed, now: asked with its device too (one bound to a device,
    /// `SO_BINDTODEVICE` or an IPv6 link-local address, is not found without it).
    pub fn lookup_again(&mut self, s: &SocketInfo) -> Result<Option<SocketInfo>, DumpError> {
        self.lookup_on(s.family, s.local, s.remote, s.interface, Some(s.cookie))
    }

    fn lookup_on(
        &mut self,
        family: Family,
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
        interface: u32,
        cookie: Option<u64>,
    ) -> Result<Option<SocketInfo>, DumpError> {
        let protocol = Protocol::Tcp;
        let table = Table {
            family: Some(family),
            protocol,
        };
        self.seq = self.seq.wrapping_add(1);
        let request = msg::lookup_request(family, local, remote, interface, cookie, self.seq);
        self.send(&request, table)?;
        loop {
            let Some(len) = self.recv(table)? else {
                continue;
            };
            for message in msg::messages(&self.buf[..len]).flatten() {
                if message.seq != self.seq {
                    continue;
                }
                match message.kind {
                    SOCK_DIAG_BY_FAMILY => {
                        // A reply that does not parse says nothing of the socket.
                        return msg::parse_socket(message.payload, protocol)
                            .map(Some)
                            .map_err(|_| DumpError::Kernel {
                                table,
                                errno: libc::EPROTO,
                            });
                    }
                    NLMSG_ERROR => {
                        let errno = msg::error_code(message.payload)
                            .map(|e| -e)
                            .unwrap_or(libc::EPROTO);
                        return match errno {
                            0 => continue,
                            libc::ENOENT | libc::ESTALE => Ok(None),
                            errno => Err(DumpError::Kernel { table, errno }),
                        };
                    }
                    _ => {}
                }
            }
        }
    }

    /// Dumps one table: the sockets of `family`/`protocol` in the `states` bit mask, handed
    /// to `each` a datagram at a time.
    pub fn dump(
        &mut self,
        family: Family,
        protocol: Protocol,
        states: u32,
        each: &mut impl FnMut(&[SocketInfo]),
    ) -> Result<DumpStats, DumpError> {
        self.seq = self.seq.wrapping_add(1);
        let request = msg::dump_request(family, protocol, states, self.seq);
        let table = Table {
            family: Some(family),
            protocol,
        };
        self.run(&request, table, each)
    }

    /// Sends a dump request (its sequence number is `self.seq`) and reads it to the end.
    fn run(
        &mut self,
        request: &[u8],
        table: Table,
        each: &mut impl FnMut(&[SocketInfo]),
    ) -> Result<DumpStats, DumpError> {
        let started = std::time::Instant::now();
        let cpu = crate::sys::clock::thread_cpu_time();
        self.send(request, table)?;
        let mut stats = DumpStats::default();
        loop {
            let Some(len) = self.recv(table)? else {
                continue;
            };
            if len >= RECV_BUF {
                return Err(DumpError::Truncated { table, len });
            }
            stats.datagrams += 1;
            self.batch.clear();
            let done = self.parse_datagram(len, table, &mut stats)?;
            each(&self.batch);
            if done {
                if stats.interrupted {
                    DumpInterrupted.emit();
                }
                tracing::trace!(
                    target: "procflow::tick",
                    %table,
                    us = started.elapsed().as_micros() as u64,
                    cpu_us = crate::sys::clock::thread_cpu_time()
                        .saturating_sub(cpu)
                        .as_micros() as u64,
                    "table dumped"
                );
                return Ok(stats);
            }
        }
    }

    /// Parses the dump datagram in the buffer into `batch`; true once it held `NLMSG_DONE`.
    fn parse_datagram(
        &mut self,
        len: usize,
        table: Table,
        stats: &mut DumpStats,
    ) -> Result<bool, DumpError> {
        let protocol = table.protocol;
        for message in msg::messages(&self.buf[..len]) {
            let message = match message {
                Ok(m) => m,
                Err(error) => {
                    stats.malformed += 1;
                    SockdiagMalformed {
                        what: "datagram",
                        error: &error,
                        family: table.family,
                        protocol: Some(protocol),
                    }
                    .emit();
                    break;
                }
            };
            if message.seq != self.seq {
                continue; // a late reply to an earlier, abandoned dump
            }
            if message.flags & NLM_F_DUMP_INTR != 0 {
                stats.interrupted = true;
            }
            match message.kind {
                SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK => {
                    stats.messages += 1;
                    match msg::parse_socket(message.payload, protocol) {
                        Ok(socket) => self.batch.push(socket),
                        Err(error) => {
                            stats.malformed += 1;
                            SockdiagMalformed {
                                what: "message",
                                error: &error,
                                family: table.family,
                                protocol: Some(protocol),
                            }
                            .emit();
                        }
                    }
                }
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let errno = msg::error_code(message.payload)
                        .map(|e| -e)
                        .unwrap_or(libc::EPROTO);
                    if errno == 0 {
                        continue; // an ACK
                    }
                    return Err(DumpError::Kernel { table, errno });
                }
                NLMSG_NOOP | NLMSG_OVERRUN => {}
                _ => {}
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

    /// A connection waiting in the accept queue has no inode (no file yet); the same socket,
    /// found again by its 4-tuple and cookie once accepted, has one. Another cookie on the
    /// same tuple finds nothing.
    #[test]
    fn lookup_by_cookie_sees_an_accepted_socket_get_its_inode() {
        let mut dumper = Dumper::open().expect("sock_diag");
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let server_addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(server_addr).expect("connect");
        let client_addr = client.local_addr().expect("local");
        let queued = dumper
            .lookup(Family::Ipv4, server_addr, client_addr, None)
            .expect("lookup")
            .expect("the queued connection");
        assert_eq!(queued.inode, 0, "not accepted yet: no inode");
        let (_server, _) = listener.accept().expect("accept");
        let accepted = dumper
            .lookup(Family::Ipv4, server_addr, client_addr, Some(queued.cookie))
            .expect("lookup")
            .expect("the same socket, accepted");
        assert_eq!(accepted.cookie, queued.cookie);
        assert_ne!(accepted.inode, 0, "accepted: the inode of its fd");
        let other = dumper
            .lookup(
                Family::Ipv4,
                server_addr,
                client_addr,
                Some(queued.cookie ^ 1),
            )
            .expect("lookup");
        assert!(other.is_none(), "another cookie: {other:?}");
    }

    /// A socket bound to a device (`SO_BINDTODEVICE`, which any process may set) is found
    /// by a lookup only when asked with that device: asked without it, a live connection
    /// reads as gone (and the owners' search once stopped looking for it).
    #[test]
    fn a_socket_bound_to_a_device_is_found_again_with_its_device() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let server_addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(server_addr).expect("connect");
        let client_addr = client.local_addr().expect("local");
        crate::sys::net::bind_to_device(client.as_fd(), c"lo").expect("SO_BINDTODEVICE");
        let mut dumper = Dumper::open().expect("sock_diag");
        let mut sockets = Vec::new();
        dumper.dump_all(&mut sockets).expect("dump");
        let dumped = sockets
            .iter()
            .find(|s| s.local == client_addr && s.remote == server_addr)
            .expect("the client in the dump")
            .clone();
        assert_ne!(dumped.interface, 0, "the dump names the device");
        let without = dumper
            .lookup(Family::Ipv4, client_addr, server_addr, Some(dumped.cookie))
            .expect("lookup");
        assert!(
            without.is_none(),
            "the kernel wants the device: {without:?}"
        );
        let again = dumper
            .lookup_again(&dumped)
            .expect("lookup")
            .expect("found with its device");
        assert_eq!((again.cookie, again.inode), (dumped.cookie, dumped.inode));
    }

    /// A listener with `TCP_DEFER_ACCEPT` keeps a connection whose handshake completed
    /// without data as a request socket (NEW_SYN_RECV). A dump must not report it: it has a
    /// cookie of its own, and the full socket that replaces it would be a second flow of
    /// the same connection. The client's socket is in the dump from the start, and the
    /// server's full socket once data arrives.
    #[test]
    fn a_request_socket_is_not_in_a_dump_its_full_socket_is() {
        use std::io::Write;
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        crate::sys::net::set_tcp_defer_accept(listener.as_fd(), 30).expect("TCP_DEFER_ACCEPT");
        let server_addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(server_addr).expect("connect");
        let client_addr = client.local_addr().expect("local");
        let mut dumper = Dumper::open().expect("sock_diag");
        let server_side = |dumper: &mut Dumper| {
            let mut sockets = Vec::new();
            dumper.dump_all(&mut sockets).expect("dump");
            let client_seen = sockets
                .iter()
                .any(|s| s.local == client_addr && s.remote == server_addr);
            let server: Vec<(u8, u64)> = sockets
                .iter()
                .filter(|s| s.local == server_addr && s.remote == client_addr)
                .map(|s| (s.state, s.inode))
                .collect();
            (client_seen, server)
        };
        // The request socket is there: a lookup by 4-tuple (all states) finds it.
        let request = dumper
            .lookup(Family::Ipv4, server_addr, client_addr, None)
            .expect("lookup")
            .expect("the request socket the listener holds");
        assert_eq!(request.inode, 0);
        let (client_seen, server) = server_side(&mut dumper);
        assert!(client_seen, "the client's socket is in the dump");
        assert!(server.is_empty(), "request socket dumped: {server:?}");

        client.write_all(b"x").expect("send");
        let (mut accepted, _) = listener.accept().expect("accept once data came");
        let mut byte = [0u8; 1];
        accepted.read_exact(&mut byte).expect("read");
        let (_, server) = server_side(&mut dumper);
        assert_eq!(server.len(), 1, "{server:?}");
        assert_eq!(server[0].0, msg::TCP_ESTABLISHED);
        assert_ne!(server[0].1, 0, "the accepted socket has an inode");
    }

    /// TCP's two families from one `TCPDIAG_GETSOCK` walk: the same sockets, each with its
    /// own family, as two `SOCK_DIAG_BY_FAMILY` dumps give.
    #[test]
    fn one_walk_dumps_both_tcp_families_as_two_dumps_do() {
        let v4 = TcpListener::bind("127.0.0.1:0").expect("listen v4");
        let v6 = TcpListener::bind("[::1]:0").expect("listen v6");
        let _c4 = TcpStream::connect(v4.local_addr().expect("addr")).expect("connect v4");
        let _c6 = TcpStream::connect(v6.local_addr().expect("addr")).expect("connect v6");
        let ours = [
            v4.local_addr().expect("addr").port(),
            v6.local_addr().expect("addr").port(),
        ];
        let tcp = |dumper: &mut Dumper| {
            let mut sockets = Vec::new();
            dumper.dump_all(&mut sockets).expect("dump");
            let mut mine: Vec<(u64, Family, SocketAddr, SocketAddr)> = sockets
                .into_iter()
                .filter(|s| s.protocol == Protocol::Tcp)
                .filter(|s| ours.contains(&s.local.port()) || ours.contains(&s.remote.port()))
                .map(|s| (s.cookie, s.family, s.local, s.remote))
                .collect();
            mine.sort_unstable_by_key(|s| s.0);
            mine
        };
        let mut one_walk = Dumper::open().expect("sock_diag");
        let both = tcp(&mut one_walk);
        assert_eq!(
            one_walk.tcp_both_families,
            Some(true),
            "this kernel serves it"
        );
        let mut per_family = Dumper::open().expect("sock_diag");
        per_family.tcp_both_families = Some(false);
        assert_eq!(both, tcp(&mut per_family));
        // Per family: the listener, the client and the accepted socket (still queued).
        let families: Vec<Family> = both.iter().map(|s| s.1).collect();
        assert_eq!(
            families.iter().filter(|f| **f == Family::Ipv4).count(),
            3,
            "{both:?}"
        );
        assert_eq!(
            families.iter().filter(|f| **f == Family::Ipv6).count(),
            3,
            "{both:?}"
        );
    }

    /// A client that closed first is left in TIME_WAIT once the server's FIN came; the lookup
    /// finds that minisocket by 4-tuple, an open connection in its state, nothing for an
    /// unused tuple. On IPv4 and IPv6 loopback.
    #[test]
    fn lookup_finds_a_socket_and_its_time_wait_successor_by_four_tuple() {
        let mut dumper = Dumper::open().expect("sock_diag");
        for (family, any) in [(Family::Ipv4, "127.0.0.1:0"), (Family::Ipv6, "[::1]:0")] {
            let listener = TcpListener::bind(any).expect("listen");
            let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
            let (mut server, _) = listener.accept().expect("accept");
            let (local, remote) = (
                client.local_addr().expect("local"),
                client.peer_addr().expect("peer"),
            );
            let state = dumper.lookup_state(family, local, remote).expect("lookup");
            assert_eq!(state, Some(msg::TCP_ESTABLISHED), "{family:?}");

            client.shutdown(Shutdown::Write).expect("shutdown");
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).expect("read to the FIN");
            drop(server); // the server's FIN moves the client to TIME_WAIT
            let mut waited = 0;
            let state = loop {
                let state = dumper.lookup_state(family, local, remote).expect("lookup");
                if state == Some(msg::TCP_TIME_WAIT) || waited >= 100 {
                    break state;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
                waited += 1;
            };
            assert_eq!(state, Some(msg::TCP_TIME_WAIT), "{family:?}");
            drop(client);

            let unused: SocketAddr = match family {
                Family::Ipv4 => "127.0.0.1:9".parse(),
                Family::Ipv6 => "[::1]:9".parse(),
            }
            .expect("addr");
            let state = dumper.lookup_state(family, unused, remote).expect("lookup");
            assert_eq!(state, None, "{family:?}");
        }
    }
}
