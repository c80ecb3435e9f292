//! The requests procflow sends: a dump of one family and protocol (`inet_diag_req_v2` with
//! `NLM_F_DUMP`), a dump of TCP in both families at once (`inet_diag_req`), and a lookup of
//! one TCP socket by its 4-tuple.

use std::net::{IpAddr, SocketAddr};

use super::netlink::NLMSG_HDR_LEN;
use super::{
    Family, Protocol, AF_INET, AF_INET6, INET_DIAG_INFO, IPPROTO_TCP, IPPROTO_UDP, NLM_F_DUMP,
    NLM_F_REQUEST, SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK, TCP_NEW_SYN_RECV, TCP_SYN_RECV,
    TCP_TIME_WAIT,
};

pub const INET_DIAG_REQ_V2_LEN: usize = 56;

/// A request: netlink header and `inet_diag_req_v2`.
type Request = [u8; NLMSG_HDR_LEN + INET_DIAG_REQ_V2_LEN];

/// Field ranges of `struct nlmsghdr` followed by `struct inet_diag_req_v2` (its
/// `inet_diag_sockid` from `SPORT` on), as offsets into the whole request.
mod field {
    use std::ops::Range;
    const BODY: usize = super::NLMSG_HDR_LEN;
    pub const LENGTH: Range<usize> = 0..4;
    pub const KIND: Range<usize> = 4..6;
    pub const FLAGS: Range<usize> = 6..8;
    pub const SEQ: Range<usize> = 8..12;
    pub const FAMILY: usize = BODY;
    pub const PROTOCOL: usize = BODY + 1;
    pub const EXT: usize = BODY + 2;
    pub const STATES: Range<usize> = BODY + 4..BODY + 8;
    pub const SPORT: Range<usize> = BODY + 8..BODY + 10;
    pub const DPORT: Range<usize> = BODY + 10..BODY + 12;
    pub const SRC: usize = BODY + 12;
    pub const DST: usize = BODY + 28;
    pub const INTERFACE: Range<usize> = BODY + 44..BODY + 48;
    pub const COOKIE_LOW: Range<usize> = BODY + 48..BODY + 52;
    pub const COOKIE_HIGH: Range<usize> = BODY + 52..BODY + 56;
}

/// Builds a `SOCK_DIAG_BY_FAMILY` dump request (`inet_diag_req_v2`) for every socket of
/// one family and protocol in the given TCP state mask, asking for `tcp_info`.
pub fn dump_request(family: Family, protocol: Protocol, states: u32, seq: u32) -> Request {
    let mut buf = [0u8; NLMSG_HDR_LEN + INET_DIAG_REQ_V2_LEN];
    dump_header(&mut buf, SOCK_DIAG_BY_FAMILY, seq);
    buf[field::FAMILY] = match family {
        Family::Ipv4 => AF_INET,
        Family::Ipv6 => AF_INET6,
    };
    buf[field::PROTOCOL] = match protocol {
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
        // Not an inet_diag protocol (flows::packet reads /proc/net/packet): never asked;
        // the kernel would refuse protocol 0.
        Protocol::Packet => 0,
    };
    buf[field::EXT] = 1 << (INET_DIAG_INFO - 1); // request INET_DIAG_INFO
    buf[field::STATES].copy_from_slice(&states.to_ne_bytes());
    buf
}

/// The netlink header of a dump request of `kind` filling all of `buf`.
fn dump_header(buf: &mut [u8], kind: u16, seq: u32) {
    let len = buf.len() as u32;
    buf[field::LENGTH].copy_from_slice(&len.to_ne_bytes());
    buf[field::KIND].copy_from_slice(&kind.to_ne_bytes());
    buf[field::FLAGS].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    buf[field::SEQ].copy_from_slice(&seq.to_ne_bytes());
}

/// `struct inet_diag_req`: family, source and destination prefix lengths, extensions, the
/// 48-byte `inet_diag_sockid`, states, `idiag_dbs`.
pub const INET_DIAG_REQ_LEN: usize = 60;

/// Builds a `TCPDIAG_GETSOCK` dump request (`inet_diag_req`) for every TCP socket in the
/// given state mask, asking for `tcp_info`. The kernel serves it with the family left
/// unspecified: one walk of the connection hash answers for IPv4 and IPv6, where two
/// `SOCK_DIAG_BY_FAMILY` dumps walk the whole hash (shared by every namespace) twice. Each
/// reply says its own family.
pub fn tcp_dump_request_both_families(
    states: u32,
    seq: u32,
) -> [u8; NLMSG_HDR_LEN + INET_DIAG_REQ_LEN] {
    const BODY: usize = NLMSG_HDR_LEN;
    let mut buf = [0u8; NLMSG_HDR_LEN + INET_DIAG_REQ_LEN];
    dump_header(&mut buf, TCPDIAG_GETSOCK, seq);
    // The family byte is ignored by the dump (the kernel sets it unspecified).
    buf[BODY] = AF_INET;
    buf[BODY + 3] = 1 << (INET_DIAG_INFO - 1); // request INET_DIAG_INFO
    buf[BODY + 52..BODY + 56].copy_from_slice(&states.to_ne_bytes());
    buf
}

/// Builds a request for the one TCP socket (full or TIME_WAIT) with this 4-tuple, in any
/// state and without attributes: the kernel answers with it or with `ENOENT` (`ESTALE` when
/// a `cookie` is given and the socket on that tuple has another).
pub fn lookup_request(
    family: Family,
    local: SocketAddr,
    remote: SocketAddr,
    interface: u32,
    cookie: Option<u64>,
    seq: u32,
) -> Request {
    let mut buf = dump_request(family, Protocol::Tcp, ALL_STATES, seq);
    buf[field::FLAGS].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    buf[field::EXT] = 0; // no extensions
    buf[field::SPORT].copy_from_slice(&local.port().to_be_bytes());
    buf[field::DPORT].copy_from_slice(&remote.port().to_be_bytes());
    for (at, ip) in [(field::SRC, local.ip()), (field::DST, remote.ip())] {
        match ip {
            IpAddr::V4(v4) => buf[at..at + 4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => buf[at..at + 16].copy_from_slice(&v6.octets()),
        }
    }
    buf[field::INTERFACE].copy_from_slice(&interface.to_ne_bytes());
    match cookie {
        // Two host-order u32 words, low word first, as the kernel reports it.
        Some(c) => {
            buf[field::COOKIE_LOW].copy_from_slice(&(c as u32).to_ne_bytes());
            buf[field::COOKIE_HIGH].copy_from_slice(&((c >> 32) as u32).to_ne_bytes());
        }
        // INET_DIAG_NOCOOKIE: any cookie.
        None => {
            buf[field::COOKIE_LOW].copy_from_slice(&[0xff; 4]);
            buf[field::COOKIE_HIGH].copy_from_slice(&[0xff; 4]);
        }
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
