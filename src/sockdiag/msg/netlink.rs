//! Netlink framing: the messages of a datagram, `NLMSG_ERROR` codes, and `rtattr` attributes.

use super::{align4, u16_ne, u32_ne, ParseError};

pub const NLMSG_HDR_LEN: usize = 16;

/// Field ranges of `struct nlmsghdr` (host byte order).
mod field {
    use std::ops::Range;
    pub const LENGTH: Range<usize> = 0..4;
    pub const KIND: Range<usize> = 4..6;
    pub const FLAGS: Range<usize> = 6..8;
    pub const SEQ: Range<usize> = 8..12;
}

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

impl<'a> NlMsgIter<'a> {
    /// Ends the walk with `error`: nothing after a malformed header can be trusted.
    fn fail(&mut self, error: ParseError) -> Option<Result<NlMsg<'a>, ParseError>> {
        self.buf = &[];
        Some(Err(error))
    }
}

impl<'a> Iterator for NlMsgIter<'a> {
    type Item = Result<NlMsg<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let available = self.buf.len();
        if available < NLMSG_HDR_LEN {
            return self.fail(ParseError::Truncated {
                claimed: NLMSG_HDR_LEN,
                available,
            });
        }
        let len = u32_ne(self.buf, field::LENGTH) as usize;
        if len < NLMSG_HDR_LEN {
            return self.fail(ParseError::BadLength(len));
        }
        if len > available {
            return self.fail(ParseError::Truncated {
                claimed: len,
                available,
            });
        }
        let msg = NlMsg {
            kind: u16_ne(self.buf, field::KIND),
            flags: u16_ne(self.buf, field::FLAGS),
            seq: u32_ne(self.buf, field::SEQ),
            payload: &self.buf[NLMSG_HDR_LEN..len],
        };
        let advance = align4(len).min(available);
        self.buf = &self.buf[advance..];
        Some(Ok(msg))
    }
}

/// The errno carried by an `NLMSG_ERROR` payload (0 is an ACK).
pub fn error_code(payload: &[u8]) -> Result<i32, ParseError> {
    if payload.len() < 4 {
        return Err(ParseError::ShortError(payload.len()));
    }
    Ok(u32_ne(payload, 0..4) as i32)
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
