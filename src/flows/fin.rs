//! Whether a closing TCP socket's final counters include the peer's FIN.
//!
//! `tcpi_bytes_received` counts sequence numbers, and a received FIN takes one: the flow's
//! payload is that minus one when a FIN came. The destroy event does not say whether one
//! did; these functions decide it from the last dumped state and counters.

use crate::flows::entry::Counters;
use crate::sockdiag::msg;

/// Whether the final `bytes_received` of a closing TCP socket includes a received FIN's
/// sequence number. A state past CLOSE_WAIT says so; otherwise the counters since the last
/// dump do: no new data segment means any advance is the FIN; new data with a graceful close
/// is taken to carry a FIN (an abortive close without one then over-counts by one byte).
pub(super) fn fin_received(last: Option<&Counters>, now: &Counters, last_state: u8) -> bool {
    const CLOSE_WAIT: u8 = 8;
    const LAST_ACK: u8 = 9;
    const CLOSING: u8 = 11;
    if matches!(
        last_state,
        CLOSE_WAIT | LAST_ACK | CLOSING | msg::TCP_TIME_WAIT
    ) {
        return true;
    }
    match last {
        // No data since the last dump: any advance is the FIN. (A FIN that landed between
        // the dump's state read and its counter read is missed here: one byte too many.)
        Some(last) if now.data_segs_in == last.data_segs_in => {
            now.bytes_received_seq > last.bytes_received_seq
        }
        // No data ever arrived: anything received is the FIN.
        _ if now.data_segs_in == 0 => now.bytes_received_seq > 0,
        _ => true,
    }
}

/// Whether a received FIN may hide in counters that [`fin_received`] found without one: the
/// last dump saw FIN_WAIT1/2 and nothing moved since. A dump reads the state before it takes
/// the socket lock and the counters under it, so a FIN processed in between is counted while
/// the state does not show it; a reset or the orphan timeout ends such a socket without one.
pub(super) fn fin_in_doubt(last: Option<&Counters>, now: &Counters, last_state: u8) -> bool {
    matches!(last_state, msg::TCP_FIN_WAIT1 | msg::TCP_FIN_WAIT2)
        && last.is_some_and(|last| {
            now.data_segs_in == last.data_segs_in
                && now.bytes_received_seq == last.bytes_received_seq
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fin_inference() {
        let last = Counters {
            bytes_sent: 0,
            bytes_received_seq: 100,
            segs_out: 0,
            segs_in: 0,
            data_segs_in: 2,
            total_retrans: 0,
            rtt_us: 0,
            retransmits: 0,
            reported: 0,
        };
        let same = Counters {
            bytes_received_seq: 100,
            ..last
        };
        let plus_fin = Counters {
            bytes_received_seq: 101,
            ..last
        };
        assert!(!fin_received(Some(&last), &same, msg::TCP_ESTABLISHED));
        assert!(fin_received(Some(&last), &plus_fin, msg::TCP_ESTABLISHED));
        // Our FIN acked, none from the peer (an orphan leaving FIN_WAIT2): no FIN counted.
        let acked_only = Counters {
            segs_in: last.segs_in + 1,
            ..last
        };
        assert!(!fin_received(Some(&last), &acked_only, 5)); // FIN_WAIT2
        let only_fin = Counters {
            bytes_received_seq: 1,
            data_segs_in: 0,
            ..last
        };
        assert!(fin_received(None, &only_fin, msg::TCP_ESTABLISHED));
    }
}
