//! Destroy events: a socket's END with the kernel's final counters (payload bytes once a
//! received FIN is taken off), the last dumped counters kept after a reset, and the ENDs of
//! sockets born and gone between two dumps, with what their event alone says.

use super::FlowTable;
use crate::flows::entry::{flow_record, is_listener, listener_record, Counters};
use crate::flows::fin::{fin_in_doubt, fin_received};
use crate::model::{
    Attribution, Direction, EndReason, FlowPhase, Protocol, Record, Scope, UnixNanos,
};
use crate::sockdiag::msg::{self, SocketInfo};

impl FlowTable {
    /// Applies a destroy event: the socket's END with the kernel's final counters.
    pub fn apply_destroy(&mut self, s: &SocketInfo, at: UnixNanos, out: &mut Vec<Record>) {
        self.apply_destroy_with(s, at, &mut |_| false, out);
    }

    /// [`Self::apply_destroy`], asking `prove_fin` about a socket whose received FIN is in
    /// doubt (see [`fin_in_doubt`]): only a FIN leaves a TIME_WAIT minisocket behind, which
    /// the caller can look up by 4-tuple. It is asked for no other socket.
    pub fn apply_destroy_with(
        &mut self,
        s: &SocketInfo,
        at: UnixNanos,
        prove_fin: &mut dyn FnMut(&SocketInfo) -> bool,
        out: &mut Vec<Record>,
    ) {
        if let Some(l) = self.listeners.remove(&s.cookie) {
            self.remember_closed_listener(&l, at);
            self.stats.listeners_ended += 1;
            out.push(Record::Listener(listener_record(
                s.cookie,
                &l,
                FlowPhase::End,
                false,
                at,
                Some(at),
                None,
                None,
            )));
            self.remember_ended(s.cookie, at);
            return;
        }
        if self.ended.contains_key(&s.cookie) {
            self.stats.duplicate_ends += 1;
            return;
        }
        if is_listener(s) {
            return; // a listener we never saw alive: nothing to end
        }
        let mut scrubbed = false;
        let mut entry = match self.flows.remove(&s.cookie) {
            Some(mut e) => {
                self.announce_late(s.cookie, &mut e, out);
                // Seen alive, but no fd table showed its owner.
                let uid = e.uid;
                self.infer_from_peer(&mut e, Some(uid), at);
                e
            }
            None => {
                // Born and gone between two dumps: only what the event carries.
                self.stats.destroy_only += 1;
                let mut e = self.new_entry(s, at, self.generation);
                e.preexisting = false;
                // An abortive close clears the peer's port (and the local address) before
                // the event; a connected TCP socket never has port 0.
                let peer_gone = s.remote.port() == 0 || s.remote.ip().is_unspecified();
                if peer_gone && s.protocol == Protocol::Tcp {
                    self.stats.destroy_only_without_peer += 1;
                    scrubbed = true;
                    e.direction = Direction::Unknown;
                    e.scope = Scope::Unspecified;
                }
                e.set_tcp(None);
                if let Some(owner) = self.listener_owner_for(s.protocol, s.local) {
                    if e.direction == Direction::Inbound {
                        e.pid = owner.pid.unwrap_or(0);
                        e.start_time = owner.start_time.unwrap_or(0);
                        e.attribution = Attribution::Listener;
                    }
                }
                // No dump saw it: no uid to check the inference against.
                self.infer_from_peer(&mut e, None, at);
                e
            }
        };
        let mut reset = false;
        if let Some(info) = &s.tcp {
            // Zeroed counters are a reset or a failed connect (any connection sent a SYN).
            reset = info.is_zeroed();
            // A reset socket keeps its last dumped counters, if any.
            if !(reset && entry.has_counters) {
                let mut counters = Counters::from_info(info);
                let inferred = fin_received(entry.tcp(), &counters, entry.state);
                let proved =
                    !inferred && fin_in_doubt(entry.tcp(), &counters, entry.state) && prove_fin(s);
                if proved {
                    self.stats.fin_by_timewait += 1;
                }
                let fin = inferred || proved;
                counters.bytes_received_seq =
                    counters.bytes_received_seq.saturating_sub(u64::from(fin));
                // Stored as payload from here on (state CLOSE means "already adjusted").
                entry.set_tcp(Some(counters));
                entry.state = msg::TCP_CLOSE;
            }
        }
        entry.last_seen = at;
        self.stats.ended_destroy += 1;
        let mut record = flow_record(
            s.cookie,
            &entry,
            FlowPhase::End,
            at,
            Some((EndReason::DestroyEvent, at)),
        );
        record.reset = reset;
        // A socket seen alive keeps the peer its dumps showed; only one no dump saw lost it.
        record.peer_scrubbed = scrubbed;
        if entry.protocol == Protocol::Tcp {
            record.state = msg::tcp_state_name(s.state).into();
        }
        out.push(Record::Flow(record));
        self.remember_ended(s.cookie, at);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{dump_one, flows, table, tcp_socket};
    use crate::attribution::NoAttribution;
    use crate::model::{Direction, EndReason, FlowPhase, Scope};
    use crate::sockdiag::msg::{self, SocketInfo};

    #[test]
    fn start_then_destroy_gives_one_start_one_end_with_payload_bytes() {
        let mut t = table();
        let mut out = Vec::new();
        let listener = tcp_socket(1, "127.0.0.1:80", "0.0.0.0:0", msg::TCP_LISTEN, 0, 0, 0);
        dump_one(&mut t, &listener, 10, &mut out);
        out.clear();
        let s = tcp_socket(
            2,
            "127.0.0.1:80",
            "127.0.0.1:5555",
            msg::TCP_ESTABLISHED,
            333,
            1000,
            1,
        );
        t.apply_dump(
            &[listener, s.clone()],
            true,
            20,
            &mut NoAttribution,
            &mut out,
        );
        let started = flows(&out);
        assert_eq!(started.len(), 1);
        assert_eq!(
            (
                started[0].phase,
                started[0].direction,
                started[0].preexisting
            ),
            (FlowPhase::Start, Direction::Inbound, false)
        );
        out.clear();
        // Final: the peer's FIN took one sequence number, no new data segment.
        let fin = tcp_socket(
            2,
            "127.0.0.1:80",
            "127.0.0.1:5555",
            msg::TCP_CLOSE,
            333,
            1001,
            1,
        );
        t.apply_destroy(&fin, 30, &mut out);
        t.apply_destroy(&fin, 31, &mut out); // a duplicate signal
        let ended = flows(&out);
        assert_eq!(ended.len(), 1, "exactly one END");
        assert_eq!(
            (ended[0].bytes_sent, ended[0].bytes_received),
            (Some(333), Some(1000))
        );
        assert_eq!(ended[0].end_reason, EndReason::DestroyEvent);
        assert_eq!(t.stats().duplicate_ends, 1);
    }

    #[test]
    fn zeroed_counters_keep_the_last_dump_and_mark_reset() {
        let mut t = table();
        let mut out = Vec::new();
        let s = tcp_socket(
            5,
            "10.0.0.2:40000",
            "203.0.113.9:443",
            msg::TCP_ESTABLISHED,
            500,
            700,
            2,
        );
        t.apply_dump(&[], true, 1, &mut NoAttribution, &mut out);
        t.apply_dump(&[s], true, 2, &mut NoAttribution, &mut out);
        out.clear();
        // As the kernel reports it: the local address and the peer's port cleared.
        let mut zeroed = tcp_socket(5, "0.0.0.0:40000", "203.0.113.9:0", msg::TCP_CLOSE, 0, 0, 0);
        if let Some(info) = zeroed.tcp.as_mut() {
            info.bytes_acked = Some(0);
            info.segs_in = Some(0);
            info.segs_out = Some(0);
        }
        t.apply_destroy(&zeroed, 3, &mut out);
        let end = flows(&out)[0];
        assert!(end.reset);
        assert_eq!((end.bytes_sent, end.bytes_received), (Some(500), Some(700)));
        assert_eq!(end.remote_addr, Some("203.0.113.9".parse().expect("ip")));
        assert!(!end.peer_scrubbed, "the dumped peer is kept");
        assert_eq!(
            (end.scope, end.direction),
            (Scope::NorthSouth, Direction::Outbound)
        );
        // Reset before any dump saw it: the record says its peer is unknown.
        out.clear();
        zeroed.cookie = 6;
        t.apply_destroy(&zeroed, 4, &mut out);
        let unseen = flows(&out)[0];
        assert!(unseen.peer_scrubbed && unseen.reset);
        assert_eq!(unseen.direction, Direction::Unknown);
    }

    #[test]
    fn destroy_only_sockets_get_an_end_alone() {
        let mut t = table();
        let mut out = Vec::new();
        t.apply_dump(&[], true, 1, &mut NoAttribution, &mut out);
        let s = tcp_socket(
            9,
            "127.0.0.1:3000",
            "127.0.0.1:4000",
            msg::TCP_CLOSE,
            10,
            21,
            1,
        );
        t.apply_destroy(&s, 2, &mut out);
        let f = flows(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].phase, FlowPhase::End);
        assert_eq!(t.stats().destroy_only, 1);
    }

    /// The last dump saw FIN_WAIT2 with the peer's FIN already counted (it read the state
    /// just before the FIN and the counters just after): only a TIME_WAIT successor says so.
    #[test]
    fn a_fin_counted_behind_a_fin_wait_state_is_taken_off_when_proved() {
        let (local, remote) = ("127.0.0.1:40000", "127.0.0.1:80");
        // The END's bytes received, the FINs proved, and whether the proof was asked for.
        let end = |destroyed: &SocketInfo, proved: bool| {
            let mut t = table();
            let mut out = Vec::new();
            let racy = tcp_socket(5, local, remote, msg::TCP_FIN_WAIT2, 10, 101, 2);
            t.apply_dump(&[racy], true, 10, &mut NoAttribution, &mut out);
            let mut asked = false;
            t.apply_destroy_with(
                destroyed,
                20,
                &mut |_| {
                    asked = true;
                    proved
                },
                &mut out,
            );
            let ends: Vec<Option<u64>> = flows(&out)
                .iter()
                .filter(|f| f.phase == FlowPhase::End)
                .map(|f| f.bytes_received)
                .collect();
            (ends, t.stats().fin_by_timewait, asked)
        };
        let destroyed = tcp_socket(5, local, remote, msg::TCP_CLOSE, 10, 101, 2);
        assert_eq!(
            end(&destroyed, false),
            (vec![Some(101)], 0, true),
            "in doubt; not proved: no FIN"
        );
        assert_eq!(
            end(&destroyed, true),
            (vec![Some(100)], 1, true),
            "a TIME_WAIT successor proves it"
        );
        // Data or a FIN after that dump is no doubt: the counters moved, nobody is asked.
        let moved = tcp_socket(5, local, remote, msg::TCP_CLOSE, 10, 102, 2);
        assert!(!end(&moved, true).2);
    }
}
