//! `unix_diag`: the question "which socket is the other end of this AF_UNIX socket?" by
//! inode (`struct unix_diag_req` with `UDIAG_SHOW_PEER`, answered by `struct unix_diag_msg`
//! and a `UNIX_DIAG_PEER` attribute). The kernel answers it without a capability, for the
//! sockets of the asker's network namespace.

use super::netlink::{attributes, NLMSG_HDR_LEN};
use super::{u32_ne, ParseError, NLM_F_REQUEST, SOCK_DIAG_BY_FAMILY};

/// `struct unix_diag_req`: family, protocol, pad, states, inode, show, cookie[2].
pub const UNIX_DIAG_REQ_LEN: usize = 24;
/// `struct unix_diag_msg`: family, type, state, pad, inode, cookie[2].
pub const UNIX_DIAG_MSG_LEN: usize = 16;

const AF_UNIX: u8 = libc::AF_UNIX as u8;
const UDIAG_SHOW_PEER: u32 = 0x4;
/// Attribute types of `unix_diag_msg` (`enum { UNIX_DIAG_NAME, UNIX_DIAG_VFS, ... }`).
const UNIX_DIAG_PEER: u16 = 2;

/// Field offsets of the request, into the whole message (after the netlink header).
mod field {
    use std::ops::Range;
    const BODY: usize = super::NLMSG_HDR_LEN;
    pub const FAMILY: usize = BODY;
    pub const INODE: Range<usize> = BODY + 8..BODY + 12;
    pub const SHOW: Range<usize> = BODY + 12..BODY + 16;
    pub const COOKIE: Range<usize> = BODY + 16..BODY + 24;
    /// In the reply's `unix_diag_msg`.
    pub const MSG_INODE: Range<usize> = 4..8;
}

/// A request for the one AF_UNIX socket with `inode` (not a dump), with its peer.
pub fn unix_peer_request(inode: u32, seq: u32) -> [u8; NLMSG_HDR_LEN + UNIX_DIAG_REQ_LEN] {
    let mut buf = [0u8; NLMSG_HDR_LEN + UNIX_DIAG_REQ_LEN];
    let len = buf.len() as u32;
    buf[0..4].copy_from_slice(&len.to_ne_bytes());
    buf[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    buf[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    buf[8..12].copy_from_slice(&seq.to_ne_bytes());
    buf[field::FAMILY] = AF_UNIX;
    buf[field::INODE].copy_from_slice(&inode.to_ne_bytes());
    buf[field::SHOW].copy_from_slice(&UDIAG_SHOW_PEER.to_ne_bytes());
    // INET_DIAG_NOCOOKIE: any cookie.
    buf[field::COOKIE].fill(0xff);
    buf
}

/// The reply's socket inode and its peer's (`None`: unconnected, or a kernel that sent no
/// peer attribute).
pub fn parse_unix_peer(payload: &[u8]) -> Result<(u64, Option<u64>), ParseError> {
    if payload.len() < UNIX_DIAG_MSG_LEN {
        return Err(ParseError::ShortDiagMsg(payload.len()));
    }
    let inode = u64::from(u32_ne(payload, field::MSG_INODE));
    let mut peer = None;
    for attribute in attributes(&payload[UNIX_DIAG_MSG_LEN..]) {
        let (kind, value) = attribute?;
        if kind == UNIX_DIAG_PEER {
            if value.len() < 4 {
                return Err(ParseError::BadAttribute {
                    kind,
                    len: value.len() + 4,
                });
            }
            peer = Some(u64::from(u32_ne(value, 0..4))).filter(|&p| p != 0);
        }
    }
    Ok((inode, peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as 6.18 sends it for one end of a socketpair: unix_diag_msg (AF_UNIX,
    /// SOCK_STREAM, TCP_ESTABLISHED, inode 26370177, cookie) and UNIX_DIAG_PEER 26370178.
    fn reply() -> Vec<u8> {
        let mut b = vec![AF_UNIX, 1, 1, 0];
        b.extend_from_slice(&26_370_177u32.to_ne_bytes()); // udiag_ino
        b.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0]); // udiag_cookie
        b.extend_from_slice(&8u16.to_ne_bytes()); // nla_len
        b.extend_from_slice(&UNIX_DIAG_PEER.to_ne_bytes()); // nla_type
        b.extend_from_slice(&26_370_178u32.to_ne_bytes());
        b
    }

    #[test]
    fn a_reply_names_the_socket_and_its_peer() {
        assert_eq!(
            parse_unix_peer(&reply()),
            Ok((26_370_177, Some(26_370_178)))
        );
        // No peer attribute: an unconnected socket.
        assert_eq!(parse_unix_peer(&reply()[..16]), Ok((26_370_177, None)));
    }

    #[test]
    fn hostile_replies_are_errors_not_panics() {
        let full = reply();
        for cut in 0..full.len() {
            let _ = parse_unix_peer(&full[..cut]);
        }
        assert!(parse_unix_peer(&full[..8]).is_err());
        let mut short_attribute = full[..16].to_vec();
        short_attribute.extend_from_slice(&[6, 0, 2, 0, 1, 2, 0, 0]);
        assert!(parse_unix_peer(&short_attribute).is_err());
    }

    #[test]
    fn the_request_asks_for_one_socket_and_its_peer() {
        let r = unix_peer_request(26_370_177, 9);
        assert_eq!(
            u32::from_ne_bytes([r[0], r[1], r[2], r[3]]) as usize,
            r.len()
        );
        assert_eq!(
            u16::from_ne_bytes([r[6], r[7]]),
            NLM_F_REQUEST,
            "not a dump"
        );
        assert_eq!(r[16], AF_UNIX);
        assert_eq!(&r[24..28], &26_370_177u32.to_ne_bytes());
        assert_eq!(&r[28..32], &UDIAG_SHOW_PEER.to_ne_bytes());
        assert_eq!(&r[32..40], &[0xff; 8]);
    }
}
