//! Listener memory: which listener a socket was accepted from (its owner attributes the
//! socket when no fd table shows it), and the listeners closed recently, which still make a
//! connection first seen after them inbound (a server shutting down).

use std::net::SocketAddr;
use std::time::Duration;

use super::FlowTable;
use crate::attribution::Owner;
use crate::flows::classify::canonical;
use crate::flows::entry::{nanos, ListenerEntry};
use crate::model::{Protocol, UnixNanos};

/// How long, and how many, closed listeners still decide direction.
const CLOSED_LISTENER_MEMORY: Duration = Duration::from_secs(120);
const CLOSED_LISTENER_MAX: usize = 4096;

impl FlowTable {
    /// The owner of the listener a socket with this local address was accepted from.
    pub(super) fn listener_owner_for(
        &self,
        protocol: Protocol,
        local: SocketAddr,
    ) -> Option<Owner> {
        if protocol != Protocol::Tcp {
            return None;
        }
        let ip = canonical(local.ip());
        self.listeners
            .values()
            .find(|l| {
                l.protocol == protocol
                    && l.local.port() == local.port()
                    && (l.local.ip().is_unspecified() || canonical(l.local.ip()) == ip)
            })
            .map(|l| l.owner)
    }

    pub(super) fn remember_closed_listener(&mut self, l: &ListenerEntry, at: UnixNanos) {
        if self.closed_listeners.len() >= CLOSED_LISTENER_MAX {
            self.closed_listeners.pop_front();
        }
        self.closed_listeners.push_back((at, l.protocol, l.local));
    }

    /// Whether a listener on this address closed within [`CLOSED_LISTENER_MEMORY`].
    pub(super) fn was_listening(
        &mut self,
        protocol: Protocol,
        local: SocketAddr,
        now: UnixNanos,
    ) -> bool {
        let horizon = now.saturating_sub(nanos(CLOSED_LISTENER_MEMORY));
        while self
            .closed_listeners
            .front()
            .is_some_and(|(at, _, _)| *at < horizon)
        {
            self.closed_listeners.pop_front();
        }
        let ip = canonical(local.ip());
        self.closed_listeners.iter().any(|(_, p, l)| {
            *p == protocol
                && l.port() == local.port()
                && (l.ip().is_unspecified() || canonical(l.ip()) == ip)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{dump_one, flows, table, tcp_socket};
    use crate::attribution::NoAttribution;
    use crate::model::Direction;
    use crate::sockdiag::msg;

    #[test]
    fn a_connection_first_seen_after_its_listener_closed_is_inbound() {
        let mut t = table();
        let mut out = Vec::new();
        let listener = tcp_socket(1, "0.0.0.0:9090", "0.0.0.0:0", msg::TCP_LISTEN, 0, 0, 0);
        dump_one(&mut t, &listener, 10, &mut out);
        t.apply_destroy(&listener, 20, &mut out);
        out.clear();
        let accepted = tcp_socket(2, "10.0.0.1:9090", "10.0.0.2:40000", 5, 50, 100, 1);
        let dialed = tcp_socket(3, "10.0.0.1:40001", "10.0.0.2:9090", 1, 50, 100, 1);
        t.apply_dump(&[accepted, dialed], true, 30, &mut NoAttribution, &mut out);
        let directions: Vec<(u16, Direction)> = flows(&out)
            .iter()
            .map(|f| (f.local_port, f.direction))
            .collect();
        assert!(
            directions.contains(&(9090, Direction::Inbound)),
            "{directions:?}"
        );
        assert!(
            directions.contains(&(40001, Direction::Outbound)),
            "{directions:?}"
        );
    }
}
