//! One tracked socket as the flow table keeps it (compact: the table holds every socket of
//! the pod), and the records made from it. Shared by the flow table and the one-shot
//! snapshot (`flows::snapshot`), so both describe a socket the same way.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::attribution::Owner;
use crate::flows::classify::{canonical, Scoper};
use crate::model::{
    Attribution, Direction, EndReason, Family, FlowPhase, FlowRecord, ListenerRecord, Protocol,
    Scope, UnixNanos,
};
use crate::sockdiag::msg::{self, SocketInfo, TcpInfo};

/// Last known state of one tracked socket, kept compact (the table holds every socket):
/// addresses packed by family, counters inline with a presence flag, and the two deadline
/// clocks in 32 bits.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) local_ip: PackedIp,
    pub(crate) remote_ip: PackedIp,
    pub(crate) local_port: u16,
    pub(crate) remote_port: u16,
    pub(crate) protocol: Protocol,
    pub(crate) family: Family,
    pub(crate) state: u8,
    pub(crate) direction: Direction,
    pub(crate) scope: Scope,
    pub(crate) attribution: Attribution,
    pub(crate) preexisting: bool,
    /// START has been emitted. A socket still in a listener's accept queue has no inode
    /// (no fd yet): its START waits for the inode, so that it can be attributed.
    pub(crate) announced: bool,
    /// Counters moved since the last record.
    pub(crate) dirty: bool,
    /// `counters` holds tcp_info values (TCP sockets whose dumps carried it).
    pub(crate) has_counters: bool,
    /// Missing from complete dumps since `missing_since`.
    pub(crate) missing: bool,
    pub(crate) generation: u32,
    pub(crate) uid: u32,
    pub(crate) inode: u32,
    pub(crate) pid: u32,
    pub(crate) start_time: UnixNanos,
    pub(crate) first_seen: UnixNanos,
    pub(crate) last_seen: UnixNanos,
    pub(crate) last_emit: Tick,
    pub(crate) missing_since: Tick,
    pub(crate) counters: Counters,
    /// Dumps that found the socket only through its listener, the START held back: the
    /// kernel gives an accepted socket its inode just before `accept` installs the fd, so
    /// a dump in between finds the inode in no table yet.
    pub(crate) fd_retries: u8,
}

impl Entry {
    /// A socket first seen at `now`, and what can be told of it from its own addresses:
    /// `accepted` (TCP) when a local listener has its local address, so it came from
    /// `accept`; otherwise a TCP socket is outbound, a connected UDP socket too. Its scope
    /// comes from the peer (`scoper` learns the pod's own addresses as it goes).
    pub(crate) fn new(
        s: &SocketInfo,
        accepted: bool,
        scoper: &mut Scoper,
        now: UnixNanos,
        generation: u32,
        preexisting: bool,
    ) -> Entry {
        scoper.learn_local(s.local.ip());
        let connected = !(s.remote.ip().is_unspecified() && s.remote.port() == 0);
        let direction = match s.protocol {
            Protocol::Tcp if accepted => Direction::Inbound,
            Protocol::Tcp => Direction::Outbound,
            Protocol::Udp if connected => Direction::Outbound,
            // Packet sockets never come from sock_diag (see flows::packet).
            Protocol::Udp | Protocol::Packet => Direction::Unknown,
        };
        let scope = if connected {
            scoper.scope(s.remote.ip())
        } else if canonical(s.local.ip()).is_loopback() {
            Scope::Local
        } else {
            Scope::Unspecified
        };
        let counters = s
            .tcp
            .as_ref()
            .filter(|_| s.protocol == Protocol::Tcp)
            .map(Counters::from_info);
        let mut entry = Entry {
            local_ip: PackedIp::pack(s.local.ip()),
            remote_ip: PackedIp::pack(s.remote.ip()),
            local_port: s.local.port(),
            remote_port: s.remote.port(),
            protocol: s.protocol,
            family: s.family,
            state: s.state,
            direction,
            scope,
            attribution: Attribution::None,
            fd_retries: 0,
            preexisting,
            announced: false,
            dirty: false,
            generation,
            uid: s.uid,
            inode: u32::try_from(s.inode).unwrap_or(0),
            pid: 0,
            start_time: 0,
            first_seen: now,
            last_seen: now,
            last_emit: Tick::at(now),
            missing: false,
            missing_since: Tick::default(),
            has_counters: false,
            counters: Counters::default(),
        };
        entry.set_tcp(counters);
        entry.mark_reported();
        entry
    }

    /// Takes `owner` as the socket's process.
    pub(crate) fn set_owner(&mut self, owner: Owner) {
        self.pid = owner.pid.unwrap_or(0);
        self.start_time = owner.start_time.unwrap_or(0);
        self.attribution = owner.attribution;
    }

    /// Bytes moved both ways since the last record (to 64 KiB; more than 4 GiB between
    /// two dumps wraps, and only delays an early UPDATE to the next dump).
    pub(crate) fn unreported_bytes(&self) -> u64 {
        u64::from(self.counters.level().wrapping_sub(self.counters.reported)) << 16
    }

    /// The counters as they are now have been reported.
    pub(crate) fn mark_reported(&mut self) {
        self.counters.reported = self.counters.level();
    }

    pub(crate) fn tcp(&self) -> Option<&Counters> {
        self.has_counters.then_some(&self.counters)
    }

    /// Takes the state and counters of a dump that found the socket. A counter set that the
    /// kernel zeroed (a reset) keeps the last values.
    pub(crate) fn refresh_from(&mut self, s: &SocketInfo) {
        // tcp_info's own state is read after the message header's, closer to the counters:
        // it narrows the window in which the counters already hold a FIN the state does not
        // show yet.
        self.state = s.tcp.as_ref().map_or(s.state, |info| info.state);
        if let Some(info) = &s.tcp {
            let counters = Counters {
                reported: self.counters.reported,
                ..Counters::from_info(info)
            };
            if self.tcp() != Some(&counters) && !info.is_zeroed() {
                self.set_tcp(Some(counters));
                self.dirty = true;
            }
        }
    }

    pub(crate) fn set_tcp(&mut self, counters: Option<Counters>) {
        self.has_counters = counters.is_some();
        self.counters = counters.unwrap_or_default();
    }

    pub(crate) fn local(&self) -> IpAddr {
        self.local_ip.unpack(self.family)
    }

    pub(crate) fn remote(&self) -> IpAddr {
        self.remote_ip.unpack(self.family)
    }
}

/// An address in 16 bytes, its kind given by the socket's family (the parser makes IPv4
/// addresses for `AF_INET` and IPv6 ones, mapped or not, for `AF_INET6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackedIp(pub(crate) [u8; 16]);

impl PackedIp {
    pub(crate) fn pack(ip: IpAddr) -> PackedIp {
        match ip {
            IpAddr::V4(v4) => {
                let mut bytes = [0; 16];
                bytes[..4].copy_from_slice(&v4.octets());
                PackedIp(bytes)
            }
            IpAddr::V6(v6) => PackedIp(v6.octets()),
        }
    }

    pub(crate) fn unpack(self, family: Family) -> IpAddr {
        match family {
            Family::Ipv4 => IpAddr::from([self.0[0], self.0[1], self.0[2], self.0[3]]),
            Family::Ipv6 => IpAddr::from(self.0),
        }
    }

    pub(crate) fn is_unspecified(self) -> bool {
        self.0 == [0; 16]
    }
}

/// A wrapping microsecond clock for an entry's deadlines (active timeout, vanish grace),
/// half the size of a timestamp. An interval is read modulo 2^32 µs (71 minutes): a
/// deadline that far out can only be seen late, by at most its own length, never early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tick(pub(crate) u32);

impl Tick {
    pub(crate) fn at(t: UnixNanos) -> Tick {
        Tick((t / 1_000) as u32) // truncation is the wrap
    }

    pub(crate) fn elapsed(self, now: UnixNanos) -> u64 {
        u64::from(Tick::at(now).0.wrapping_sub(self.0)) * 1_000
    }
}

/// The tcp_info fields carried between dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counters {
    pub(crate) bytes_sent: u64,
    /// Sequence space received (payload + 1 after a FIN).
    pub(crate) bytes_received_seq: u64,
    pub(crate) segs_out: u32,
    pub(crate) segs_in: u32,
    pub(crate) data_segs_in: u32,
    pub(crate) total_retrans: u32,
    pub(crate) rtt_us: u32,
    pub(crate) retransmits: u8,
    /// Not the kernel's: the bytes both ways at the flow's last record, in 64 KiB units
    /// ([`Entry::unreported_bytes`]); kept here, in the padding after `retransmits`, so the
    /// table's entry stays within its size budget.
    pub(crate) reported: u16,
}

impl Counters {
    /// Bytes both ways (received as sequence space: a FIN counts one), in 64 KiB units,
    /// wrapping.
    fn level(&self) -> u16 {
        (self.bytes_sent.saturating_add(self.bytes_received_seq) >> 16) as u16 // the wrap
    }

    pub(crate) fn from_info(info: &TcpInfo) -> Counters {
        Counters {
            bytes_sent: info.payload_sent().unwrap_or(0),
            bytes_received_seq: info.bytes_received.unwrap_or(0),
            segs_out: info.segs_out.unwrap_or(0),
            segs_in: info.segs_in.unwrap_or(0),
            data_segs_in: info.data_segs_in.unwrap_or(0),
            total_retrans: info.total_retrans.unwrap_or(0),
            rtt_us: info.rtt_us.unwrap_or(0),
            retransmits: info.retransmits,
            reported: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ListenerEntry {
    pub(crate) local: SocketAddr,
    pub(crate) protocol: Protocol,
    pub(crate) family: Family,
    pub(crate) generation: u32,
    pub(crate) missing_since: UnixNanos,
    pub(crate) owner: Owner,
}

pub(crate) fn is_listener(s: &SocketInfo) -> bool {
    s.protocol == Protocol::Tcp && s.state == msg::TCP_LISTEN
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn opt(v: u32) -> Option<u32> {
    (v != 0).then_some(v)
}

pub(crate) fn flow_record(
    cookie: u64,
    e: &Entry,
    phase: FlowPhase,
    now: UnixNanos,
    end: Option<(EndReason, UnixNanos)>,
) -> FlowRecord {
    let connected = !(e.remote_ip.is_unspecified() && e.remote_port == 0);
    let state = match e.protocol {
        Protocol::Tcp => msg::tcp_state_name(e.state),
        Protocol::Udp if connected => "ESTABLISHED",
        Protocol::Udp | Protocol::Packet => msg::UDP_UNCONNECTED,
    };
    // While alive, bytes_received_seq may include a FIN (states past CLOSE_WAIT); at END it
    // has been adjusted already.
    let fin_now = end.is_none() && matches!(e.state, 6 | 8 | 9 | 11);
    let tcp = e.tcp();
    FlowRecord {
        cookie,
        protocol: e.protocol,
        family: e.family,
        local_addr: e.local(),
        local_port: e.local_port,
        remote_addr: connected.then(|| e.remote()),
        remote_port: connected.then_some(e.remote_port),
        direction: e.direction,
        scope: e.scope,
        phase,
        state: state.into(),
        preexisting: e.preexisting,
        bytes_sent: tcp.map(|c| c.bytes_sent),
        bytes_received: tcp.map(|c| c.bytes_received_seq.saturating_sub(u64::from(fin_now))),
        segs_out: tcp.map(|c| u64::from(c.segs_out)),
        segs_in: tcp.map(|c| u64::from(c.segs_in)),
        retransmits: tcp.map(|c| u32::from(c.retransmits)),
        total_retrans: tcp.map(|c| c.total_retrans),
        rtt_us: tcp.map(|c| c.rtt_us),
        first_seen: e.first_seen,
        last_seen: if end.is_some() { now } else { e.last_seen },
        ended_at: end.map(|(_, at)| at),
        uid: (e.inode != 0 || e.uid != 0).then_some(e.uid),
        inode: (e.inode != 0).then_some(u64::from(e.inode)),
        pid: opt(e.pid),
        process_start_time: (e.start_time != 0).then_some(e.start_time),
        attribution: e.attribution,
        end_reason: end.map(|(r, _)| r).unwrap_or_default(),
        reset: false,
        peer_scrubbed: false,
        cgroup_id: None,
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn listener_record(
    cookie: u64,
    l: &ListenerEntry,
    phase: FlowPhase,
    preexisting: bool,
    now: UnixNanos,
    ended_at: Option<UnixNanos>,
    uid: Option<u32>,
    inode: Option<u64>,
) -> ListenerRecord {
    ListenerRecord {
        cookie,
        protocol: l.protocol,
        family: l.family,
        local_addr: l.local.ip(),
        local_port: l.local.port(),
        phase,
        preexisting,
        first_seen: now,
        ended_at,
        uid,
        inode,
        pid: l.owner.pid,
        process_start_time: l.owner.start_time,
        attribution: l.owner.attribution,
        backlog: None,
        packet: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_ticks_read_intervals_across_their_wrap() {
        let wrap = (1u64 << 32) * 1_000; // nanoseconds in 2^32 microseconds
        let before = wrap - 2_000_000; // 2 ms before the tick wraps
        let tick = Tick::at(before);
        assert_eq!(tick.elapsed(before), 0);
        assert_eq!(tick.elapsed(before + 5_000_000), 5_000_000);
        // One whole wrap later the interval reads short: a deadline is late, never early.
        assert_eq!(tick.elapsed(before + wrap + 7_000), 7_000);
    }

    #[test]
    fn packed_addresses_come_back_as_their_family_gave_them() {
        for (ip, family) in [
            ("10.1.2.3", Family::Ipv4),
            ("0.0.0.0", Family::Ipv4),
            ("2001:db8::1", Family::Ipv6),
            ("::ffff:10.1.2.3", Family::Ipv6),
            ("::", Family::Ipv6),
        ] {
            let ip: IpAddr = ip.parse().expect("address");
            let packed = PackedIp::pack(ip);
            assert_eq!(packed.unpack(family), ip);
            assert_eq!(packed.is_unspecified(), ip.is_unspecified());
        }
    }
}
