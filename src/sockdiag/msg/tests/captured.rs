//! Bytes this kernel sent (Linux 6.18, x86_64; `scripts/capture-sockdiag-fixtures.py`): for
//! TCP and UDP over IPv4 and IPv6, one loopback connection's client socket in a dump reply and
//! in its destroy event. TCP clients sent 1,000 bytes and received 2,000, then closed first;
//! UDP clients sent one 100-byte datagram on a connected socket.

use super::*;

const DUMP_TCP4: &[u8] = include_bytes!("../../fixtures/dump-tcp4.bin");
const DUMP_TCP6: &[u8] = include_bytes!("../../fixtures/dump-tcp6.bin");
const DUMP_UDP4: &[u8] = include_bytes!("../../fixtures/dump-udp4.bin");
const DUMP_UDP6: &[u8] = include_bytes!("../../fixtures/dump-udp6.bin");
const DESTROY_TCP4: &[u8] = include_bytes!("../../fixtures/destroy-tcp4.bin");
const DESTROY_TCP6: &[u8] = include_bytes!("../../fixtures/destroy-tcp6.bin");
const DESTROY_UDP4: &[u8] = include_bytes!("../../fixtures/destroy-udp4.bin");
const DESTROY_UDP6: &[u8] = include_bytes!("../../fixtures/destroy-udp6.bin");
const DONE: &[u8] = include_bytes!("../../fixtures/done.bin");
const ERROR: &[u8] = include_bytes!("../../fixtures/error.bin");

/// Every captured socket message with the protocol its request or group implies.
const SOCKETS: [(&[u8], Protocol); 8] = [
    (DUMP_TCP4, Protocol::Tcp),
    (DUMP_TCP6, Protocol::Tcp),
    (DUMP_UDP4, Protocol::Udp),
    (DUMP_UDP6, Protocol::Udp),
    (DESTROY_TCP4, Protocol::Tcp),
    (DESTROY_TCP6, Protocol::Tcp),
    (DESTROY_UDP4, Protocol::Udp),
    (DESTROY_UDP6, Protocol::Udp),
];

fn only(datagram: &[u8]) -> NlMsg<'_> {
    let mut all = messages(datagram);
    let msg = all.next().expect("a message").expect("valid header");
    assert!(all.next().is_none(), "one message");
    msg
}

fn socket(datagram: &[u8], protocol: Protocol) -> SocketInfo {
    let msg = only(datagram);
    assert_eq!(msg.kind, SOCK_DIAG_BY_FAMILY);
    parse_socket(msg.payload, protocol).expect("parses")
}

fn addr(s: &str) -> std::net::SocketAddr {
    s.parse().expect("addr")
}

#[test]
fn tcp_dump_replies() {
    for (datagram, family, local, remote) in [
        (
            DUMP_TCP4,
            Family::Ipv4,
            "127.0.0.1:54536",
            "127.0.0.1:41279",
        ),
        (DUMP_TCP6, Family::Ipv6, "[::1]:50754", "[::1]:48079"),
    ] {
        assert_eq!(only(datagram).flags, NLM_F_MULTI);
        let s = socket(datagram, Protocol::Tcp);
        assert_eq!((s.local, s.remote), (addr(local), addr(remote)));
        assert_eq!(
            (s.family, s.state, s.timewait),
            (family, TCP_ESTABLISHED, false)
        );
        assert!(s.inode != 0 && s.cookie != 0);
        assert!(s.cgroup_id.is_some(), "cgroup id attribute (Linux >= 5.8)");
        let tcp = s.tcp.expect("INET_DIAG_INFO was asked for");
        assert_eq!((tcp.state, tcp.len), (TCP_ESTABLISHED, 280));
        // The kernel's counters: sent/acked 1,000 (+1 for the SYN in bytes_acked), received 2,000.
        assert_eq!(
            (tcp.bytes_sent, tcp.bytes_acked, tcp.bytes_received),
            (Some(1000), Some(1001), Some(2000))
        );
    }
}

#[test]
fn tcp_destroy_events() {
    for (datagram, dumped) in [(DESTROY_TCP4, DUMP_TCP4), (DESTROY_TCP6, DUMP_TCP6)] {
        let s = socket(datagram, Protocol::Tcp);
        let alive = socket(dumped, Protocol::Tcp);
        assert_eq!(
            (s.cookie, s.local, s.remote),
            (alive.cookie, alive.local, alive.remote)
        );
        // The app had closed it: no inode, no uid, no cgroup id any more; state CLOSE.
        assert_eq!(
            (s.inode, s.uid, s.state, s.cgroup_id),
            (0, 0, TCP_CLOSE, None)
        );
        let tcp = s.tcp.expect("final counters");
        // The peer's FIN now counts in bytes_received, ours in bytes_acked.
        assert_eq!(
            (tcp.bytes_sent, tcp.bytes_acked, tcp.bytes_received),
            (Some(1000), Some(1002), Some(2001))
        );
    }
}

#[test]
fn udp_dump_replies_and_destroy_events() {
    for (dump, destroy, family, local, remote) in [
        (
            DUMP_UDP4,
            DESTROY_UDP4,
            Family::Ipv4,
            "127.0.0.1:38337",
            "127.0.0.1:55423",
        ),
        (
            DUMP_UDP6,
            DESTROY_UDP6,
            Family::Ipv6,
            "[::1]:48547",
            "[::1]:44047",
        ),
    ] {
        let alive = socket(dump, Protocol::Udp);
        assert_eq!((alive.local, alive.remote), (addr(local), addr(remote)));
        // A connected UDP socket reports TCP_ESTABLISHED's number; UDP has no tcp_info.
        assert_eq!(
            (alive.family, alive.state, alive.tcp),
            (family, TCP_ESTABLISHED, None)
        );
        assert!(alive.inode != 0 && alive.cgroup_id.is_some());
        let gone = socket(destroy, Protocol::Udp);
        assert_eq!(
            (gone.cookie, gone.local, gone.remote),
            (alive.cookie, alive.local, alive.remote)
        );
        assert_eq!((gone.inode, gone.tcp, gone.cgroup_id), (0, None, None));
    }
}

#[test]
fn done_and_error() {
    assert_eq!(only(DONE).kind, NLMSG_DONE);
    let error = only(ERROR);
    assert_eq!(error.kind, NLMSG_ERROR);
    assert_eq!(error_code(error.payload).expect("code"), -libc::EINVAL);
}

/// A kernel older than 4.1 sends a 104-byte tcp_info. No such kernel runs here, so this is the
/// captured TCPv4 reply with its INET_DIAG_INFO attribute cut to that length (the fields
/// before it are laid out the same in every version).
fn dump_tcp4_with_short_tcp_info(len: usize) -> Vec<u8> {
    let msg = only(DUMP_TCP4);
    let header = InetDiagMsgBuffer::new_checked(msg.payload).expect("long");
    let mut payload = msg.payload[..INET_DIAG_MSG_LEN].to_vec();
    for attr in attributes(header.attribute_bytes()) {
        let (kind, value) = attr.expect("valid attribute");
        let value = if kind == INET_DIAG_INFO {
            &value[..len]
        } else {
            value
        };
        super::push_attr(&mut payload, kind, value);
    }
    super::wrap(SOCK_DIAG_BY_FAMILY, NLM_F_MULTI, &payload)
}

#[test]
fn a_short_tcp_info_keeps_its_fields_and_leaves_the_newer_ones_absent() {
    let full = socket(DUMP_TCP4, Protocol::Tcp).tcp.expect("tcp_info");
    let old = socket(&dump_tcp4_with_short_tcp_info(104), Protocol::Tcp)
        .tcp
        .expect("tcp_info");
    assert_eq!(old.len, 104);
    assert_eq!(
        (old.state, old.rtt_us, old.total_retrans),
        (full.state, full.rtt_us, full.total_retrans)
    );
    assert_eq!(
        (old.bytes_acked, old.bytes_sent, old.payload_sent()),
        (None, None, None)
    );
    // 4.1 to 4.18: byte counts in and acknowledged, but not yet bytes_sent.
    let mid = socket(&dump_tcp4_with_short_tcp_info(160), Protocol::Tcp)
        .tcp
        .expect("tcp_info");
    assert_eq!(
        (mid.bytes_acked, mid.bytes_received),
        (Some(1001), Some(2000))
    );
    assert_eq!(mid.bytes_sent, None);
}

/// Bytes → view → bytes: every field the view names, written back through its setter into a
/// zeroed message, rebuilds the kernel's header exactly (so no field range overlaps another
/// or misses a byte the kernel sets), and the attributes follow unchanged.
#[test]
fn every_header_round_trips_through_the_view() {
    for (datagram, _) in SOCKETS {
        let payload = only(datagram).payload;
        let read = InetDiagMsgBuffer::new_checked(payload).expect("long");
        let mut written = InetDiagMsgBuffer::new_checked(vec![0u8; payload.len()]).expect("long");
        written.set_family(read.family());
        written.set_state(read.state());
        written.set_timer(read.timer());
        written.set_retrans(read.retrans());
        written.set_source_port(read.source_port());
        written.set_destination_port(read.destination_port());
        written.set_source(read.source());
        written.set_destination(read.destination());
        written.set_interface(read.interface());
        written.set_cookie(read.cookie());
        written.set_expires(read.expires());
        written.set_rqueue(read.rqueue());
        written.set_wqueue(read.wqueue());
        written.set_uid(read.uid());
        written.set_inode(read.inode());
        let mut rebuilt = written.into_inner();
        rebuilt[INET_DIAG_MSG_LEN..].copy_from_slice(read.attribute_bytes());
        assert_eq!(rebuilt, payload);
    }
}

/// Value → bytes → value: a socket emitted through the view's setters parses back equal.
#[test]
fn every_socket_round_trips_through_its_bytes() {
    for (datagram, protocol) in SOCKETS {
        let original = socket(datagram, protocol);
        let ip_field = |ip: std::net::IpAddr| match ip {
            std::net::IpAddr::V4(v4) => v4_field(v4.octets()),
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        let mut out = InetDiagMsgBuffer::new_checked(vec![0u8; INET_DIAG_MSG_LEN]).expect("long");
        out.set_family(match original.family {
            Family::Ipv4 => AF_INET,
            Family::Ipv6 => AF_INET6,
        });
        out.set_state(original.state);
        out.set_source_port(original.local.port());
        out.set_destination_port(original.remote.port());
        out.set_source(ip_field(original.local.ip()));
        out.set_destination(ip_field(original.remote.ip()));
        out.set_cookie(original.cookie);
        out.set_rqueue(original.rqueue);
        out.set_wqueue(original.wqueue);
        out.set_uid(original.uid);
        out.set_inode(original.inode as u32);
        let mut bytes = out.into_inner();
        // The attributes procflow reads, carried over as the kernel sent them.
        let header = InetDiagMsgBuffer::new_checked(only(datagram).payload).expect("long");
        for attr in attributes(header.attribute_bytes()) {
            let (kind, value) = attr.expect("valid attribute");
            if kind == INET_DIAG_INFO || kind == INET_DIAG_CGROUP_ID {
                super::push_attr(&mut bytes, kind, value);
            }
        }
        assert_eq!(parse_socket(&bytes, protocol).expect("parses"), original);
    }
}

#[test]
fn the_crate_parser_agrees_on_every_capture() {
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
    use netlink_packet_sock_diag::SockDiagMessage;
    for (datagram, protocol) in SOCKETS {
        let parsed =
            NetlinkMessage::<SockDiagMessage>::deserialize(datagram).expect("crate parses it");
        let NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(resp)) = parsed.payload
        else {
            panic!("not an inet response: {:?}", parsed.payload);
        };
        let ours = socket(datagram, protocol);
        let id = &resp.header.socket_id;
        assert_eq!(
            (id.source_port, id.destination_port),
            (ours.local.port(), ours.remote.port())
        );
        assert_eq!(
            (id.source_address, id.destination_address),
            (ours.local.ip(), ours.remote.ip())
        );
        assert_eq!(
            (resp.header.uid, u64::from(resp.header.inode)),
            (ours.uid, ours.inode)
        );
        let cookie = |w: &[u8]| u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
        assert_eq!(
            cookie(&id.cookie[..4]) | cookie(&id.cookie[4..]) << 32,
            ours.cookie
        );
    }
}

#[test]
fn cut_anywhere_is_an_error_not_a_panic() {
    for datagram in SOCKETS.iter().map(|(d, _)| *d).chain([DONE, ERROR]) {
        for cut in 0..datagram.len() {
            for msg in messages(&datagram[..cut]).flatten() {
                let _ = parse_socket(msg.payload, Protocol::Tcp);
            }
        }
    }
}
