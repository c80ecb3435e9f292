//! Pure parsers for the kernel's sock_diag bytes: netlink headers ([`netlink`]),
//! `inet_diag_msg` and its attributes ([`inet_diag`]), `struct tcp_info` ([`tcp_info`]), the
//! requests procflow sends ([`request`]), and an AF_UNIX socket's peer ([`unix_diag`]). No
//! I/O here; every accessor runs after a length check, so hostile or truncated input yields
//! a typed error, never a panic.
//!
//! Layouts follow `include/uapi/linux/{netlink,inet_diag,tcp}.h`, each struct's field offsets
//! named once beside its reader. `tcp_info` grows with the kernel (280 bytes on 6.18): fields
//! past the received length are `None`.

mod inet_diag;
mod netlink;
mod request;
mod tcp_info;
mod unix_diag;

use std::ops::Range;

use thiserror::Error;

use crate::model::{Family, Protocol};

pub use inet_diag::{parse_socket, InetDiagMsgBuffer, SocketInfo, INET_DIAG_MSG_LEN};
pub use netlink::{attributes, error_code, messages, NlMsg, NlMsgIter, NLMSG_HDR_LEN};
pub use request::{
    dump_request, lookup_request, tcp_dump_request_both_families, ALL_STATES, INET_DIAG_REQ_V2_LEN,
    TCP_STATES_TRACKED,
};
pub use tcp_info::TcpInfo;
pub use unix_diag::{parse_unix_peer, unix_peer_request};

pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;
pub const SOCK_DIAG_BY_FAMILY: u16 = netlink_packet_sock_diag::constants::SOCK_DIAG_BY_FAMILY;
/// The original inet_diag request type (`TCPDIAG_GETSOCK`, `struct inet_diag_req`): its
/// dumps cover both address families in one walk of the connection hash; the replies carry
/// this type.
pub const TCPDIAG_GETSOCK: u16 = 18;

pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_MULTI: u16 = 0x02;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x300;

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
mod tests;
