//! Pure parsers for the kernel's sock_diag bytes: netlink headers, `inet_diag_msg`, its
//! attributes and `struct tcp_info`. No I/O here; every accessor runs after a length check,
//! so hostile or truncated input yields a typed error, never a panic.
//!
//! Layouts follow `include/uapi/linux/{netlink,inet_diag,tcp}.h`. `tcp_info` grows with the
//! kernel (280 bytes on 6.18): fields past the received length are `None`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use thiserror::Error;

use crate::model::{Family, Protocol};

pub const NLMSG_HDR_LEN: usize = 16;
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;
pub const SOCK_DIAG_BY_FAMILY: u16 = netlink_packet_sock_diag::constants::SOCK_DIAG_BY_FAMILY;

pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_MULTI: u16 = 0x02;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x300;

pub const INET_DIAG_MSG_LEN: usize = 72;
pub const INET_DIAG_REQ_V2_LEN: usize = 56;

/// Attribute types of `inet_diag_msg` (`enum { INET_DIAG_NONE, ... }`).
pub const INET_DIAG_INFO: u16 = 2;
pub const INET_DIAG_SHUTDOWN: u16 = 8;
pub const INET_DIAG_CGROUP_ID: u16 = 21;

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_SYN_SENT: u8 = 2;
pub const TCP_SYN_RECV: u8 = 3;
pub const TCP_FIN_WAIT1: u8 = 4;
pub const TCP_FIN_WAIT2: u8 = 5;
pub const TCP_TIME_WAIT: u8 = 6;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_LISTEN: u8 = 10;
pub const TCP_NEW_SYN_RECV: u8 = 12;

const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
const IPPROTO_TCP: u8 = libc::IPPROTO_TCP as u8;
const IPPROTO_UDP: u8 = libc::IPPROTO_UDP as u8;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("netlink message truncated: header says {claimed} bytes, {available} available")]
    Truncated { claimed: usize, available: usize },
    #[error("netlink message length {0} is shorter than its header")]
    BadLength(usize),
    #[error("inet_diag_msg too short: {0} bytes, need {INET_DIAG_MSG_LEN}")]
    ShortDiagMsg(usize),
    #[error("unknown address family {0}")]
    UnknownFamily(u8),
    #[error("attribute of type {kind} has bad length {len}")]
    BadAttribute { kind: u16, len: usize },
    #[error("NLMSG_ERROR too short ({0} bytes)")]
    ShortError(usize),
}

// === Netlink header ===

/// One netlink message inside a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NlMsg<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Walks every netlink message of a datagram (messages are 4-byte aligned).
pub struct NlMsgIter<'a> {
    buf: &'a [u8],
}

pub fn messages(datagram: &[u8]) -> NlMsgIter<'_> {
    NlMsgIter { buf: datagram }
}

impl<'a> Iterator for NlMsgIter<'a> {
    type Item = Result<NlMsg<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        if self.buf.len() < NLMSG_HDR_LEN {
            let available = self.buf.len();
            self.buf = &[];
            return Some(Err(ParseError::Truncated {
                claimed: NLMSG_HDR_LEN,
                available,
            }));
        }
        let len = u32_ne(self.buf, 0..4) as usize;
        if len < NLMSG_HDR_LEN {
            self.buf = &[];
            return Some(Err(ParseError::BadLength(len)));
        }
        if len > self.buf.len() {
            let available = self.buf.len();
            self.buf = &[];
            return Some(Err(ParseError::Truncated {
                claimed: len,
                available,
            }));
        }
        let msg = NlMsg {
            kind: u16_ne(self.buf, 4..6),
            flags: u16_ne(self.buf, 6..8),
            seq: u32_ne(self.buf, 8..12),
            payload: &self.buf[NLMSG_HDR_LEN..len],
        };
        let advance = align4(len).min(self.buf.len());
        self.buf = &self.buf[advance..];
        Some(Ok(msg))
    }
}

/// The errno carried by an `NLMSG_ERROR` payload (0 is an ACK).
pub fn error_code(payload: &[u8]) -> Result<i32, ParseError> {
    if payload.len() < 4 {
        return Err(ParseError::ShortError(payload.len()));
    }
    Ok(i32::from_ne_bytes([
        payload[0], payload[1], payload[2], payload[3],
    ]))
}

// === inet_diag_msg ===

/// One socket as the kernel describes it in a dump or a destroy event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketInfo {
    pub cookie: u64,
    pub protocol: Protocol,
    pub family: Family,
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Receive queue; for listeners, the current accept-queue length.
    pub rqueue: u32,
    /// Send queue; for listeners, the accept-queue limit (backlog).
    pub wqueue: u32,
    pub uid: u32,
    pub inode: u64,
    pub tcp: Option<TcpInfo>,
    pub cgroup_id: Option<u64>,
    /// A TIME_WAIT minisocket (`idiag_timer == 3`): what remains of a closed socket, under
    /// a cookie of its own, with no counters. Its connection was already reported.
    pub timewait: bool,
}

// Offsets inside `struct inet_diag_msg`.
const F_FAMILY: usize = 0;
const F_STATE: usize = 1;
const F_TIMER: usize = 2;
/// `idiag_timer` of TIME_WAIT minisockets (`inet_twsk_diag_fill`).
const TIMER_TIMEWAIT: u8 = 3;
const F_SPORT: Range<usize> = 4..6;
const F_DPORT: Range<usize> = 6..8;
const F_SRC: Range<usize> = 8..24;
const F_DST: Range<usize> = 24..40;
const F_COOKIE: Range<usize> = 44..52;
const F_RQUEUE: Range<usize> = 56..60;
const F_WQUEUE: Range<usize> = 60..64;
const F_UID: Range<usize> = 64..68;
const F_INODE: Range<usize> = 68..72;

/// Parses a `SOCK_DIAG_BY_FAMILY` payload. `protocol` comes from the request (dumps) or the
/// multicast group (destroy events): the message itself does not carry it.
pub fn parse_socket(payload: &[u8], protocol: Protocol) -> Result<SocketInfo, ParseError> {
    if payload.len() < INET_DIAG_MSG_LEN {
        return Err(ParseError::ShortDiagMsg(payload.len()));
    }
    let family = match payload[F_FAMILY] {
        AF_INET => Family::Ipv4,
        AF_INET6 => Family::Ipv6,
        other => return Err(ParseError::UnknownFamily(other)),
    };
    let addr = |range: Range<usize>| -> IpAddr {
        let b = &payload[range];
        match family {
            Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
            Family::Ipv6 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(b);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
        }
    };
    let port =
        |range: Range<usize>| u16::from_be_bytes([payload[range.start], payload[range.start + 1]]);
    // The cookie is two host-order u32 words, low word first.
    let cookie = u64::from(u32_ne(payload, 44..48)) | (u64::from(u32_ne(payload, 48..52)) << 32);
    debug_assert_eq!(F_COOKIE, 44..52);

    let mut info = SocketInfo {
        cookie,
        protocol,
        family,
        state: payload[F_STATE],
        local: SocketAddr::new(addr(F_SRC), port(F_SPORT)),
        remote: SocketAddr::new(addr(F_DST), port(F_DPORT)),
        rqueue: u32_ne(payload, F_RQUEUE),
        wqueue: u32_ne(payload, F_WQUEUE),
        uid: u32_ne(payload, F_UID),
        inode: u64::from(u32_ne(payload, F_INODE)),
        tcp: None,
        cgroup_id: None,
        timewait: payload[F_TIMER] == TIMER_TIMEWAIT,
    };
    for attr in attributes(&payload[INET_DIAG_MSG_LEN..]) {
        let (kind, value) = attr?;
        match kind {
            INET_DIAG_INFO if protocol == Protocol::Tcp => info.tcp = Some(TcpInfo::parse(value)),
            INET_DIAG_CGROUP_ID => {
                if value.len() < 8 {
                    return Err(ParseError::BadAttribute {
                        kind,
                        len: value.len(),
                    });
                }
                info.cgroup_id = Some(u64::from_ne_bytes(array8(&value[..8])));
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Walks `struct rtattr` attributes: (type, value).
pub fn attributes(mut buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), ParseError>> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None; // trailing padding
        }
        let len = usize::from(u16_ne(buf, 0..2));
        let kind = u16_ne(buf, 2..4) & 0x3fff; // strip NLA_F_NESTED / NLA_F_NET_BYTEORDER
        if len < 4 || len > buf.len() {
            let err = ParseError::BadAttribute { kind, len };
            buf = &[];
            return Some(Err(err));
        }
        let value = &buf[4..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some(Ok((kind, value)))
    })
}

// === tcp_info ===

/// The `struct tcp_info` fields procflow uses. Fields the kernel did not send (older,
/// shorter struct) are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpInfo {
    /// Length of the struct as received: tells which fields exist.
    pub len: usize,
    pub state: u8,
    pub retransmits: u8,
    pub rtt_us: Option<u32>,
    pub total_retrans: Option<u32>,
    pub bytes_acked: Option<u64>,
    /// Sequence space received: payload plus 1 for a received FIN.
    pub bytes_received: Option<u64>,
    pub segs_out: Option<u32>,
    pub segs_in: Option<u32>,
    pub data_segs_in: Option<u32>,
    pub data_segs_out: Option<u32>,
    /// Payload bytes transmitted, retransmissions included.
    pub bytes_sent: Option<u64>,
    pub bytes_retrans: Option<u64>,
}

impl TcpInfo {
    pub fn parse(b: &[u8]) -> TcpInfo {
        let u32_at = |off: usize| (b.len() >= off + 4).then(|| u32_ne(b, off..off + 4));
        let u64_at =
            |off: usize| (b.len() >= off + 8).then(|| u64::from_ne_bytes(array8(&b[off..off + 8])));
        TcpInfo {
            len: b.len(),
            state: b.first().copied().unwrap_or(0),
            retransmits: b.get(2).copied().unwrap_or(0),
            rtt_us: u32_at(68),
            total_retrans: u32_at(100),
            bytes_acked: u64_at(120),
            bytes_received: u64_at(128),
            segs_out: u32_at(136),
            segs_in: u32_at(140),
            data_segs_in: u32_at(152),
            data_segs_out: u32_at(156),
            bytes_sent: u64_at(200),
            bytes_retrans: u64_at(208),
        }
    }

    /// Payload bytes the application wrote and the kernel sent (first transmissions only).
    pub fn payload_sent(&self) -> Option<u64> {
        Some(
            self.bytes_sent?
                .saturating_sub(self.bytes_retrans.unwrap_or(0)),
        )
    }

    /// Payload bytes received. `bytes_received` counts sequence space, in which a received
    /// FIN takes one number; `fin_received` says whether to take it off.
    pub fn payload_received(&self, fin_received: bool) -> Option<u64> {
        Some(self.bytes_received?.saturating_sub(u64::from(fin_received)))
    }

    /// A reset or failed connect zeroes every counter before the destroy event.
    pub fn is_zeroed(&self) -> bool {
        self.bytes_acked.unwrap_or(0) == 0
            && self.bytes_received.unwrap_or(0) == 0
            && self.segs_out.unwrap_or(0) == 0
            && self.segs_in.unwrap_or(0) == 0
    }
}

// === Requests ===

/// Builds a `SOCK_DIAG_BY_FAMILY` dump request (`inet_diag_req_v2`) for every socket of
/// one family and protocol in the given TCP state mask, asking for `tcp_info`.
pub fn dump_request(
    family: Family,
    protocol: Protocol,
    states: u32,
    seq: u32,
) -> [u8; NLMSG_HDR_LEN + INET_DIAG_REQ_V2_LEN] {
    let mut buf = [0u8; NLMSG_HDR_LEN + INET_DIAG_REQ_V2_LEN];
    let len = buf.len() as u32;
    buf[0..4].copy_from_slice(&len.to_ne_bytes());
    buf[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    buf[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    buf[8..12].copy_from_slice(&seq.to_ne_bytes());
    let body = &mut buf[NLMSG_HDR_LEN..];
    body[0] = match family {
        Family::Ipv4 => AF_INET,
        Family::Ipv6 => AF_INET6,
    };
    body[1] = match protocol {
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
    };
    body[2] = 1 << (INET_DIAG_INFO - 1); // idiag_ext: request INET_DIAG_INFO
    body[4..8].copy_from_slice(&states.to_ne_bytes());
    buf
}

/// Builds a request for the one TCP socket (full or TIME_WAIT) with this 4-tuple, in any
/// state and without attributes: the kernel answers with it or with `ENOENT` (`ESTALE` when
/// a `cookie` is given and the socket on that tuple has another).
pub fn lookup_request(
    family: Family,
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
    cookie: Option<u64>,
    seq: u32,
) -> [u8; NLMSG_HDR_LEN + INET_DIAG_REQ_V2_LEN] {
    let mut buf = dump_request(family, Protocol::Tcp, ALL_STATES, seq);
    buf[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    let body = &mut buf[NLMSG_HDR_LEN..];
    body[2] = 0; // no extensions
    body[8..10].copy_from_slice(&local.port().to_be_bytes());
    body[10..12].copy_from_slice(&remote.port().to_be_bytes());
    for (at, ip) in [(12, local.ip()), (28, remote.ip())] {
        match ip {
            std::net::IpAddr::V4(v4) => body[at..at + 4].copy_from_slice(&v4.octets()),
            std::net::IpAddr::V6(v6) => body[at..at + 16].copy_from_slice(&v6.octets()),
        }
    }
    match cookie {
        // Two host-order u32 words, low word first, as the kernel reports it.
        Some(c) => {
            body[48..52].copy_from_slice(&(c as u32).to_ne_bytes());
            body[52..56].copy_from_slice(&((c >> 32) as u32).to_ne_bytes());
        }
        None => body[48..56].copy_from_slice(&[0xff; 8]), // INET_DIAG_NOCOOKIE: any cookie
    }
    buf
}

/// Every TCP state but TIME_WAIT, NEW_SYN_RECV and SYN_RECV. TIME_WAIT and NEW_SYN_RECV are
/// kernel mini-sockets with their own cookies, no owner and no counters: the full socket's
/// life already ended (or has not begun) when they exist. SYN_RECV goes too, because asking
/// for it makes the kernel add every NEW_SYN_RECV request socket (`tcp_diag_dump`), which
/// would start a flow of its own and end, unanswered by any destroy event, as a second END
/// of the connection. A full socket is in SYN_RECV only during a Fast Open handshake; the
/// next dump or its destroy event finds it.
pub const TCP_STATES_TRACKED: u32 =
    !((1 << TCP_TIME_WAIT) | (1 << TCP_NEW_SYN_RECV) | (1 << TCP_SYN_RECV)) & 0x1ffe;
pub const ALL_STATES: u32 = 0xffff_ffff;

/// Kernel names of the TCP states, by number (0 is unused).
const TCP_STATE_NAMES: [&str; 13] = [
    "UNKNOWN",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

/// Kernel name of a TCP state.
pub fn tcp_state_name(state: u8) -> &'static str {
    TCP_STATE_NAMES
        .get(usize::from(state))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// What an unconnected UDP socket's state is called (as `ss` does).
pub const UDP_UNCONNECTED: &str = "UNCONN";

/// The static copy of a state name, for one read off the wire or a file: no allocation
/// for any name a collector sends.
pub fn static_state_name(name: &[u8]) -> Option<&'static str> {
    TCP_STATE_NAMES
        .iter()
        .copied()
        .chain([UDP_UNCONNECTED])
        .find(|known| known.as_bytes() == name)
}

// === Byte helpers (callers have checked lengths) ===

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn u16_ne(b: &[u8], r: Range<usize>) -> u16 {
    u16::from_ne_bytes([b[r.start], b[r.start + 1]])
}

fn u32_ne(b: &[u8], r: Range<usize>) -> u32 {
    u32::from_ne_bytes([b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3]])
}

fn array8(b: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&b[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A dump reply for one IPv4 TCP socket, as this kernel (6.18, x86_64) sends it, cut to
    /// the fields that matter: 127.0.0.1:40000 → 127.0.0.1:5000, ESTABLISHED, uid 1000,
    /// inode 123456, cookie 0x0000_0001_0000_0042, a 232-byte tcp_info and a cgroup id.
    fn fixture_tcp_v4() -> Vec<u8> {
        let mut msg = vec![0u8; INET_DIAG_MSG_LEN];
        msg[0] = AF_INET; // idiag_family
        msg[1] = TCP_ESTABLISHED; // idiag_state
        msg[4..6].copy_from_slice(&40000u16.to_be_bytes()); // id.idiag_sport (big endian)
        msg[6..8].copy_from_slice(&5000u16.to_be_bytes()); // id.idiag_dport
        msg[8..12].copy_from_slice(&[127, 0, 0, 1]); // id.idiag_src[0]
        msg[24..28].copy_from_slice(&[127, 0, 0, 1]); // id.idiag_dst[0]
        msg[44..48].copy_from_slice(&0x42u32.to_ne_bytes()); // id.idiag_cookie[0]
        msg[48..52].copy_from_slice(&1u32.to_ne_bytes()); // id.idiag_cookie[1]
        msg[64..68].copy_from_slice(&1000u32.to_ne_bytes()); // idiag_uid
        msg[68..72].copy_from_slice(&123456u32.to_ne_bytes()); // idiag_inode
        let mut info = vec![0u8; 232];
        info[0] = TCP_ESTABLISHED;
        info[68..72].copy_from_slice(&55u32.to_ne_bytes()); // tcpi_rtt
        info[120..128].copy_from_slice(&1001u64.to_ne_bytes()); // tcpi_bytes_acked
        info[128..136].copy_from_slice(&2001u64.to_ne_bytes()); // tcpi_bytes_received
        info[200..208].copy_from_slice(&1000u64.to_ne_bytes()); // tcpi_bytes_sent
        push_attr(&mut msg, INET_DIAG_INFO, &info);
        push_attr(&mut msg, INET_DIAG_CGROUP_ID, &77u64.to_ne_bytes());
        wrap(SOCK_DIAG_BY_FAMILY, NLM_F_MULTI, &msg)
    }

    fn array4(b: &[u8]) -> [u8; 4] {
        [b[0], b[1], b[2], b[3]]
    }

    fn push_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
        buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(value);
        buf.resize(align4(buf.len()), 0);
    }

    fn wrap(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((NLMSG_HDR_LEN + payload.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&7u32.to_ne_bytes()); // seq
        out.extend_from_slice(&0u32.to_ne_bytes()); // port id
        out.extend_from_slice(payload);
        out.resize(align4(out.len()), 0);
        out
    }

    #[test]
    fn timewait_minisockets_are_marked() {
        let mut datagram = fixture_tcp_v4();
        let payload_at = NLMSG_HDR_LEN;
        let msg = messages(&datagram).next().expect("one").expect("valid");
        let plain = parse_socket(msg.payload, Protocol::Tcp).expect("parses");
        assert!(!plain.timewait);
        datagram[payload_at + F_TIMER] = TIMER_TIMEWAIT;
        let msg = messages(&datagram).next().expect("one").expect("valid");
        assert!(
            parse_socket(msg.payload, Protocol::Tcp)
                .expect("parses")
                .timewait
        );
    }

    #[test]
    fn parses_a_tcp_dump_message_field_by_field() {
        let datagram = fixture_tcp_v4();
        let msg = messages(&datagram)
            .next()
            .expect("one message")
            .expect("valid");
        assert_eq!(
            (msg.kind, msg.flags, msg.seq),
            (SOCK_DIAG_BY_FAMILY, NLM_F_MULTI, 7)
        );
        let s = parse_socket(msg.payload, Protocol::Tcp).expect("parse");
        assert_eq!(s.local, "127.0.0.1:40000".parse().expect("addr"));
        assert_eq!(s.remote, "127.0.0.1:5000".parse().expect("addr"));
        assert_eq!((s.state, s.uid, s.inode), (TCP_ESTABLISHED, 1000, 123456));
        assert_eq!(s.cookie, 0x0000_0001_0000_0042);
        assert_eq!(s.cgroup_id, Some(77));
        let tcp = s.tcp.expect("tcp_info");
        assert_eq!(tcp.rtt_us, Some(55));
        assert_eq!(tcp.payload_sent(), Some(1000));
        assert_eq!(tcp.payload_received(true), Some(2000));
        // 232 bytes: bytes_retrans (offset 208) is there, fields past 232 would not be.
        assert_eq!(tcp.bytes_retrans, Some(0));
    }

    #[test]
    fn the_crate_parser_agrees_on_the_fixture() {
        use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
        use netlink_packet_sock_diag::{inet::nlas::Nla, SockDiagMessage};
        let datagram = fixture_tcp_v4();
        let parsed =
            NetlinkMessage::<SockDiagMessage>::deserialize(&datagram).expect("crate parses it");
        let NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(resp)) = parsed.payload
        else {
            panic!("not an inet response: {:?}", parsed.payload);
        };
        assert_eq!(resp.header.socket_id.source_port, 40000);
        assert_eq!(resp.header.uid, 1000);
        assert_eq!(resp.header.inode, 123456);
        let ours = parse_socket(&datagram[NLMSG_HDR_LEN..], Protocol::Tcp).expect("parse");
        assert_eq!(
            u64::from(u32::from_ne_bytes(array4(
                &resp.header.socket_id.cookie[..4]
            ))) | u64::from(u32::from_ne_bytes(array4(
                &resp.header.socket_id.cookie[4..]
            ))) << 32,
            ours.cookie
        );
        assert!(
            resp.nlas.iter().any(|n| !matches!(n, Nla::Other(_))),
            "{:?}",
            resp.nlas
        );
    }

    #[test]
    fn walks_multi_message_datagrams_to_done() {
        let mut datagram = fixture_tcp_v4();
        datagram.extend(fixture_tcp_v4());
        datagram.extend(wrap(NLMSG_DONE, NLM_F_MULTI, &0i32.to_ne_bytes()));
        let kinds: Vec<u16> = messages(&datagram)
            .map(|m| m.expect("valid").kind)
            .collect();
        assert_eq!(
            kinds,
            vec![SOCK_DIAG_BY_FAMILY, SOCK_DIAG_BY_FAMILY, NLMSG_DONE]
        );
    }

    #[test]
    fn error_messages_carry_the_errno() {
        let mut payload = (-libc::EPERM).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0u8; 16]); // the offending request's header
        let datagram = wrap(NLMSG_ERROR, 0, &payload);
        let msg = messages(&datagram).next().expect("one").expect("valid");
        assert_eq!(msg.kind, NLMSG_ERROR);
        assert_eq!(error_code(msg.payload), Ok(-libc::EPERM));
    }

    #[test]
    fn truncated_inputs_are_typed_errors() {
        let datagram = fixture_tcp_v4();
        let cut = &datagram[..datagram.len() - 10];
        assert!(matches!(
            messages(cut).next(),
            Some(Err(ParseError::Truncated { .. }))
        ));
        assert_eq!(
            parse_socket(&[0u8; 10], Protocol::Tcp),
            Err(ParseError::ShortDiagMsg(10))
        );
        let mut bad_family = vec![0u8; INET_DIAG_MSG_LEN];
        bad_family[0] = 99;
        assert_eq!(
            parse_socket(&bad_family, Protocol::Tcp),
            Err(ParseError::UnknownFamily(99))
        );
    }

    #[test]
    fn short_tcp_info_leaves_newer_fields_absent() {
        let old = TcpInfo::parse(&[0u8; 104]); // a 4.x-era struct without byte counters
        assert_eq!(old.bytes_sent, None);
        assert_eq!(old.payload_sent(), None);
        assert_eq!(old.total_retrans, Some(0));
    }

    #[test]
    fn request_matches_the_crate_encoding() {
        let req = dump_request(Family::Ipv6, Protocol::Udp, ALL_STATES, 9);
        assert_eq!(u32_ne(&req, 0..4) as usize, req.len());
        assert_eq!(req[NLMSG_HDR_LEN], AF_INET6);
        assert_eq!(req[NLMSG_HDR_LEN + 1], IPPROTO_UDP);
        assert_eq!(req[NLMSG_HDR_LEN + 2], 2, "asks for INET_DIAG_INFO");
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            for msg in messages(&bytes).flatten() {
                let _ = parse_socket(msg.payload, Protocol::Tcp);
                let _ = error_code(msg.payload);
            }
            let _ = parse_socket(&bytes, Protocol::Tcp);
            let _ = TcpInfo::parse(&bytes);
        }

        #[test]
        fn mutated_fixture_never_panics(pos in 0usize..400, byte in any::<u8>()) {
            let mut datagram = fixture_tcp_v4();
            let at = pos % datagram.len();
            datagram[at] = byte;
            for msg in messages(&datagram).flatten() {
                let _ = parse_socket(msg.payload, Protocol::Tcp);
            }
        }
    }

    /// Bytes this kernel sent (scripts/capture-sockdiag-fixtures.py): one loopback TCP
    /// connection, client 127.0.0.1:59442 → 127.0.0.1:34683; the client sent 1,000 bytes and
    /// received 2,000, then closed first.
    mod captured {
        use super::*;

        const DUMP: &[u8] = include_bytes!("fixtures/dump-tcp4.bin");
        const DONE: &[u8] = include_bytes!("fixtures/done.bin");
        const ERROR: &[u8] = include_bytes!("fixtures/error.bin");
        const DESTROY: &[u8] = include_bytes!("fixtures/destroy-tcp4.bin");

        fn only(datagram: &[u8]) -> NlMsg<'_> {
            let mut all = messages(datagram);
            let msg = all.next().expect("a message").expect("valid header");
            assert!(all.next().is_none(), "one message");
            msg
        }

        #[test]
        fn dump_reply() {
            let msg = only(DUMP);
            assert_eq!(msg.kind, SOCK_DIAG_BY_FAMILY);
            let s = parse_socket(msg.payload, Protocol::Tcp).expect("parses");
            assert_eq!(s.local, "127.0.0.1:59442".parse().expect("addr"));
            assert_eq!(s.remote, "127.0.0.1:34683".parse().expect("addr"));
            assert_eq!(
                (s.family, s.state, s.timewait),
                (Family::Ipv4, TCP_ESTABLISHED, false)
            );
            assert!(s.inode != 0 && s.cookie != 0);
            let tcp = s.tcp.expect("INET_DIAG_INFO was asked for");
            assert_eq!(tcp.state, TCP_ESTABLISHED);
            // The kernel's counters: sent/acked 1,000 (+1 for the SYN in bytes_acked), received 2,000.
            assert_eq!(
                (tcp.bytes_sent, tcp.bytes_acked, tcp.bytes_received),
                (Some(1000), Some(1001), Some(2000))
            );
        }

        #[test]
        fn destroy_event() {
            let msg = only(DESTROY);
            let s = parse_socket(msg.payload, Protocol::Tcp).expect("parses");
            assert_eq!(s.local, "127.0.0.1:59442".parse().expect("addr"));
            // The app had closed it: no inode any more, state CLOSE.
            assert_eq!((s.inode, s.state), (0, 7));
            let tcp = s.tcp.expect("final counters");
            assert_eq!(tcp.bytes_sent, Some(1000));
        }

        #[test]
        fn done_and_error() {
            assert_eq!(only(DONE).kind, NLMSG_DONE);
            let error = only(ERROR);
            assert_eq!(error.kind, NLMSG_ERROR);
            assert_eq!(error_code(error.payload).expect("code"), -libc::EINVAL);
        }

        #[test]
        fn cut_anywhere_is_an_error_not_a_panic() {
            for datagram in [DUMP, DONE, ERROR, DESTROY] {
                for cut in 0..datagram.len() {
                    for msg in messages(&datagram[..cut]).flatten() {
                        let _ = parse_socket(msg.payload, Protocol::Tcp);
                    }
                }
            }
        }
    }
}
