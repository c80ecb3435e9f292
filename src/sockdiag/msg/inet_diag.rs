//! `struct inet_diag_msg`: a checked view over its bytes ([`InetDiagMsgBuffer`], in the manner
//! of rust-netlink's buffers: the length is validated once in `new_checked`, then every
//! accessor reads a named field range), and the socket procflow takes from it ([`SocketInfo`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::netlink::attributes;
use super::{
    array8, u32_ne, ParseError, TcpInfo, AF_INET, AF_INET6, INET_DIAG_CGROUP_ID, INET_DIAG_INFO,
};
use crate::model::{Family, Protocol};

pub const INET_DIAG_MSG_LEN: usize = 72;

/// Field ranges of `struct inet_diag_msg`. Ports are network order, the cookie is two
/// host-order u32 words (low word first), everything else host order.
mod field {
    use std::ops::Range;
    pub const FAMILY: usize = 0;
    pub const STATE: usize = 1;
    pub const TIMER: usize = 2;
    pub const RETRANS: usize = 3;
    pub const SPORT: Range<usize> = 4..6;
    pub const DPORT: Range<usize> = 6..8;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
    pub const INTERFACE: Range<usize> = 40..44;
    pub const COOKIE_LOW: Range<usize> = 44..48;
    pub const COOKIE_HIGH: Range<usize> = 48..52;
    pub const EXPIRES: Range<usize> = 52..56;
    pub const RQUEUE: Range<usize> = 56..60;
    pub const WQUEUE: Range<usize> = 60..64;
    pub const UID: Range<usize> = 64..68;
    pub const INODE: Range<usize> = 68..72;
    pub const ATTRIBUTES: usize = super::INET_DIAG_MSG_LEN;
}

/// `idiag_timer` of TIME_WAIT minisockets (`inet_twsk_diag_fill`).
pub(super) const TIMER_TIMEWAIT: u8 = 3;

/// The bytes of one `inet_diag_msg` and its attributes, at least [`INET_DIAG_MSG_LEN`] long.
#[derive(Debug, Clone, Copy)]
pub struct InetDiagMsgBuffer<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> InetDiagMsgBuffer<T> {
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let len = buffer.as_ref().len();
        if len < INET_DIAG_MSG_LEN {
            return Err(ParseError::ShortDiagMsg(len));
        }
        Ok(InetDiagMsgBuffer { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn family(&self) -> u8 {
        self.bytes()[field::FAMILY]
    }
    pub fn state(&self) -> u8 {
        self.bytes()[field::STATE]
    }
    pub fn timer(&self) -> u8 {
        self.bytes()[field::TIMER]
    }
    pub fn retrans(&self) -> u8 {
        self.bytes()[field::RETRANS]
    }
    pub fn source_port(&self) -> u16 {
        let b = &self.bytes()[field::SPORT];
        u16::from_be_bytes([b[0], b[1]])
    }
    pub fn destination_port(&self) -> u16 {
        let b = &self.bytes()[field::DPORT];
        u16::from_be_bytes([b[0], b[1]])
    }
    /// The source address field: an IPv4 address in its first four bytes.
    pub fn source(&self) -> [u8; 16] {
        array16(&self.bytes()[field::SRC])
    }
    pub fn destination(&self) -> [u8; 16] {
        array16(&self.bytes()[field::DST])
    }
    pub fn interface(&self) -> u32 {
        u32_ne(self.bytes(), field::INTERFACE)
    }
    pub fn cookie(&self) -> u64 {
        u64::from(u32_ne(self.bytes(), field::COOKIE_LOW))
            | (u64::from(u32_ne(self.bytes(), field::COOKIE_HIGH)) << 32)
    }
    pub fn expires(&self) -> u32 {
        u32_ne(self.bytes(), field::EXPIRES)
    }
    pub fn rqueue(&self) -> u32 {
        u32_ne(self.bytes(), field::RQUEUE)
    }
    pub fn wqueue(&self) -> u32 {
        u32_ne(self.bytes(), field::WQUEUE)
    }
    pub fn uid(&self) -> u32 {
        u32_ne(self.bytes(), field::UID)
    }
    pub fn inode(&self) -> u32 {
        u32_ne(self.bytes(), field::INODE)
    }
    /// The `rtattr`s after the fixed part (walk them with [`attributes`]).
    pub fn attribute_bytes(&self) -> &[u8] {
        &self.bytes()[field::ATTRIBUTES..]
    }
}

/// Writers, for emitting messages (fixtures, round trips).
impl<T: AsRef<[u8]> + AsMut<[u8]>> InetDiagMsgBuffer<T> {
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    pub fn set_family(&mut self, value: u8) {
        self.bytes_mut()[field::FAMILY] = value;
    }
    pub fn set_state(&mut self, value: u8) {
        self.bytes_mut()[field::STATE] = value;
    }
    pub fn set_timer(&mut self, value: u8) {
        self.bytes_mut()[field::TIMER] = value;
    }
    pub fn set_retrans(&mut self, value: u8) {
        self.bytes_mut()[field::RETRANS] = value;
    }
    pub fn set_source_port(&mut self, value: u16) {
        self.bytes_mut()[field::SPORT].copy_from_slice(&value.to_be_bytes());
    }
    pub fn set_destination_port(&mut self, value: u16) {
        self.bytes_mut()[field::DPORT].copy_from_slice(&value.to_be_bytes());
    }
    pub fn set_source(&mut self, value: [u8; 16]) {
        self.bytes_mut()[field::SRC].copy_from_slice(&value);
    }
    pub fn set_destination(&mut self, value: [u8; 16]) {
        self.bytes_mut()[field::DST].copy_from_slice(&value);
    }
    pub fn set_interface(&mut self, value: u32) {
        self.bytes_mut()[field::INTERFACE].copy_from_slice(&value.to_ne_bytes());
    }
    pub fn set_cookie(&mut self, value: u64) {
        let bytes = self.bytes_mut();
        bytes[field::COOKIE_LOW].copy_from_slice(&(value as u32).to_ne_bytes());
        bytes[field::COOKIE_HIGH].copy_from_slice(&((value >> 32) as u32).to_ne_bytes());
    }
    pub fn set_expires(&mut self, value: u32) {
        self.bytes_mut()[field::EXPIRES].copy_from_slice(&value.to_ne_bytes());
    }
    pub fn set_rqueue(&mut self, value: u32) {
        self.bytes_mut()[field::RQUEUE].copy_from_slice(&value.to_ne_bytes());
    }
    pub fn set_wqueue(&mut self, value: u32) {
        self.bytes_mut()[field::WQUEUE].copy_from_slice(&value.to_ne_bytes());
    }
    pub fn set_uid(&mut self, value: u32) {
        self.bytes_mut()[field::UID].copy_from_slice(&value.to_ne_bytes());
    }
    pub fn set_inode(&mut self, value: u32) {
        self.bytes_mut()[field::INODE].copy_from_slice(&value.to_ne_bytes());
    }
}

fn array16(b: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&b[..16]);
    out
}

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
    /// The device the socket is bound to (`idiag_if`, 0 when none): a lookup of a bound
    /// socket finds it only when asked with it.
    pub interface: u32,
    pub tcp: Option<TcpInfo>,
    pub cgroup_id: Option<u64>,
    /// A TIME_WAIT minisocket (`idiag_timer == 3`): what remains of a closed socket, under
    /// a cookie of its own, with no counters. Its connection was already reported.
    pub timewait: bool,
}

/// Parses a `SOCK_DIAG_BY_FAMILY` payload. `protocol` comes from the request (dumps) or the
/// multicast group (destroy events): the message itself does not carry it.
pub fn parse_socket(payload: &[u8], protocol: Protocol) -> Result<SocketInfo, ParseError> {
    let msg = InetDiagMsgBuffer::new_checked(payload)?;
    let family = match msg.family() {
        AF_INET => Family::Ipv4,
        AF_INET6 => Family::Ipv6,
        other => return Err(ParseError::UnknownFamily(other)),
    };
    let addr = |b: [u8; 16]| -> IpAddr {
        match family {
            Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
            Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(b)),
        }
    };
    let mut info = SocketInfo {
        cookie: msg.cookie(),
        protocol,
        family,
        state: msg.state(),
        local: SocketAddr::new(addr(msg.source()), msg.source_port()),
        remote: SocketAddr::new(addr(msg.destination()), msg.destination_port()),
        rqueue: msg.rqueue(),
        wqueue: msg.wqueue(),
        uid: msg.uid(),
        inode: u64::from(msg.inode()),
        interface: msg.interface(),
        tcp: None,
        cgroup_id: None,
        timewait: msg.timer() == TIMER_TIMEWAIT,
    };
    for attr in attributes(msg.attribute_bytes()) {
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
