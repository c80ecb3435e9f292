//! `struct tcp_info`, read by length: a field exists only if the kernel's struct reached it.

use super::{array8, u32_ne};

/// Byte offsets of the `struct tcp_info` fields procflow reads (`include/uapi/linux/tcp.h`).
mod offset {
    pub const STATE: usize = 0;
    pub const RETRANSMITS: usize = 2;
    pub const RTT: usize = 68;
    pub const TOTAL_RETRANS: usize = 100;
    /// Linux 4.1 and later from here on.
    pub const BYTES_ACKED: usize = 120;
    pub const BYTES_RECEIVED: usize = 128;
    pub const SEGS_OUT: usize = 136;
    pub const SEGS_IN: usize = 140;
    pub const DATA_SEGS_IN: usize = 152;
    pub const DATA_SEGS_OUT: usize = 156;
    /// Linux 4.19 and later from here on.
    pub const BYTES_SENT: usize = 200;
    pub const BYTES_RETRANS: usize = 208;
}

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
            state: b.get(offset::STATE).copied().unwrap_or(0),
            retransmits: b.get(offset::RETRANSMITS).copied().unwrap_or(0),
            rtt_us: u32_at(offset::RTT),
            total_retrans: u32_at(offset::TOTAL_RETRANS),
            bytes_acked: u64_at(offset::BYTES_ACKED),
            bytes_received: u64_at(offset::BYTES_RECEIVED),
            segs_out: u32_at(offset::SEGS_OUT),
            segs_in: u32_at(offset::SEGS_IN),
            data_segs_in: u32_at(offset::DATA_SEGS_IN),
            data_segs_out: u32_at(offset::DATA_SEGS_OUT),
            bytes_sent: u64_at(offset::BYTES_SENT),
            bytes_retrans: u64_at(offset::BYTES_RETRANS),
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
