//! Synthesized messages (each field set by name) and hostile bytes; the kernel's own bytes
//! are replayed in [`captured`].

mod captured;

use super::inet_diag::TIMER_TIMEWAIT;
use super::*;
use crate::model::{Family, Protocol};
use proptest::prelude::*;

/// A dump reply for one IPv4 TCP socket, in this kernel's layout (6.18, x86_64), cut to the
/// fields that matter: 127.0.0.1:40000 → 127.0.0.1:5000, ESTABLISHED, uid 1000, inode
/// 123456, cookie 0x0000_0001_0000_0042, a 232-byte tcp_info and a cgroup id.
fn fixture_tcp_v4() -> Vec<u8> {
    let mut header = InetDiagMsgBuffer::new_checked(vec![0u8; INET_DIAG_MSG_LEN]).expect("long");
    header.set_family(AF_INET);
    header.set_state(TCP_ESTABLISHED);
    header.set_source_port(40000);
    header.set_destination_port(5000);
    header.set_source(v4_field([127, 0, 0, 1]));
    header.set_destination(v4_field([127, 0, 0, 1]));
    header.set_cookie(0x0000_0001_0000_0042);
    header.set_uid(1000);
    header.set_inode(123456);
    let mut msg = header.into_inner();
    let mut info = vec![0u8; 232];
    info[0] = TCP_ESTABLISHED;
    info[68..72].copy_from_slice(&55u32.to_ne_bytes()); // tcpi_rtt
    info[120..128].copy_from_slice(&1001u64.to_ne_bytes()); // tcpi_bytes_acked
    info[128..136].copy_from_slice(&2001u64.to_ne_bytes()); // tcpi_bytes_received
    info[200..208].copy_from_slice(&1000u64.to_ne_bytes()); // tcpi_bytes_sent
    push_attr(&mut msg, INET_DIAG_INFO, &info);
    push_attr(&mut msg, INET_DIAG_CGROUP_ID, &77u64.to_ne_bytes());
    wrap(SOCK_DIAG_BY_FAMILY, NLM_F_MULTI, &msg)
}

/// An IPv4 address as `inet_diag_sockid` holds it: the first four of sixteen bytes.
fn v4_field(octets: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&octets);
    out
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(align4(buf.len()), 0);
}

fn wrap(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((NLMSG_HDR_LEN + payload.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&7u32.to_ne_bytes()); // seq
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id
    out.extend_from_slice(payload);
    out.resize(align4(out.len()), 0);
    out
}

#[test]
fn timewait_minisockets_are_marked() {
    let mut datagram = fixture_tcp_v4();
    let msg = messages(&datagram).next().expect("one").expect("valid");
    let plain = parse_socket(msg.payload, Protocol::Tcp).expect("parses");
    assert!(!plain.timewait);
    let mut header = InetDiagMsgBuffer::new_checked(&mut datagram[NLMSG_HDR_LEN..]).expect("long");
    header.set_timer(TIMER_TIMEWAIT);
    let msg = messages(&datagram).next().expect("one").expect("valid");
    assert!(
        parse_socket(msg.payload, Protocol::Tcp)
            .expect("parses")
            .timewait
    );
}

#[test]
fn parses_a_tcp_dump_message_field_by_field() {
    let datagram = fixture_tcp_v4();
    let msg = messages(&datagram)
        .next()
        .expect("one message")
        .expect("valid");
    assert_eq!(
        (msg.kind, msg.flags, msg.seq),
        (SOCK_DIAG_BY_FAMILY, NLM_F_MULTI, 7)
    );
    let s = parse_socket(msg.payload, Protocol::Tcp).expect("parse");
    assert_eq!(s.local, "127.0.0.1:40000".parse().expect("addr"));
    assert_eq!(s.remote, "127.0.0.1:5000".parse().expect("addr"));
    assert_eq!((s.state, s.uid, s.inode), (TCP_ESTABLISHED, 1000, 123456));
    assert_eq!(s.cookie, 0x0000_0001_0000_0042);
    assert_eq!(s.cgroup_id, Some(77));
    let tcp = s.tcp.expect("tcp_info");
    assert_eq!(tcp.rtt_us, Some(55));
    assert_eq!(tcp.payload_sent(), Some(1000));
    assert_eq!(tcp.payload_received(true), Some(2000));
    // 232 bytes: bytes_retrans (offset 208) is there, fields past 232 would not be.
    assert_eq!(tcp.bytes_retrans, Some(0));
}

#[test]
fn walks_multi_message_datagrams_to_done() {
    let mut datagram = fixture_tcp_v4();
    datagram.extend(fixture_tcp_v4());
    datagram.extend(wrap(NLMSG_DONE, NLM_F_MULTI, &0i32.to_ne_bytes()));
    let kinds: Vec<u16> = messages(&datagram)
        .map(|m| m.expect("valid").kind)
        .collect();
    assert_eq!(
        kinds,
        vec![SOCK_DIAG_BY_FAMILY, SOCK_DIAG_BY_FAMILY, NLMSG_DONE]
    );
}

#[test]
fn error_messages_carry_the_errno() {
    let mut payload = (-libc::EPERM).to_ne_bytes().to_vec();
    payload.extend_from_slice(&[0u8; 16]); // the offending request's header
    let datagram = wrap(NLMSG_ERROR, 0, &payload);
    let msg = messages(&datagram).next().expect("one").expect("valid");
    assert_eq!(msg.kind, NLMSG_ERROR);
    assert_eq!(error_code(msg.payload), Ok(-libc::EPERM));
}

#[test]
fn truncated_inputs_are_typed_errors() {
    let datagram = fixture_tcp_v4();
    let cut = &datagram[..datagram.len() - 10];
    assert!(matches!(
        messages(cut).next(),
        Some(Err(ParseError::Truncated { .. }))
    ));
    assert_eq!(
        parse_socket(&[0u8; 10], Protocol::Tcp),
        Err(ParseError::ShortDiagMsg(10))
    );
    assert!(matches!(
        InetDiagMsgBuffer::new_checked(&[0u8; INET_DIAG_MSG_LEN - 1][..]),
        Err(ParseError::ShortDiagMsg(71))
    ));
    let mut bad_family = vec![0u8; INET_DIAG_MSG_LEN];
    bad_family[0] = 99;
    assert_eq!(
        parse_socket(&bad_family, Protocol::Tcp),
        Err(ParseError::UnknownFamily(99))
    );
}

#[test]
fn request_fields_land_where_the_kernel_reads_them() {
    let req = dump_request(Family::Ipv6, Protocol::Udp, ALL_STATES, 9);
    assert_eq!(u32_ne(&req, 0..4) as usize, req.len());
    assert_eq!(req[NLMSG_HDR_LEN], AF_INET6);
    assert_eq!(req[NLMSG_HDR_LEN + 1], IPPROTO_UDP);
    assert_eq!(req[NLMSG_HDR_LEN + 2], 2, "asks for INET_DIAG_INFO");
    let local: std::net::SocketAddr = "[::1]:40000".parse().expect("addr");
    let remote: std::net::SocketAddr = "[::1]:5000".parse().expect("addr");
    let lookup = lookup_request(Family::Ipv6, local, remote, 7, Some(0x1_0000_0042), 3);
    let body = &lookup[NLMSG_HDR_LEN..];
    // inet_diag_sockid from byte 8 of inet_diag_req_v2 has inet_diag_msg's id layout.
    let id = InetDiagMsgBuffer::new_checked([&[0u8; 4][..], &body[8..], &[0u8; 20][..]].concat())
        .expect("long");
    assert_eq!(
        (id.source_port(), id.destination_port(), id.cookie()),
        (40000, 5000, 0x1_0000_0042)
    );
    assert_eq!(
        id.interface(),
        7,
        "a bound socket is found only with its device"
    );
    assert_eq!(id.source(), std::net::Ipv6Addr::LOCALHOST.octets());
    assert_eq!(
        u16::from_ne_bytes([lookup[6], lookup[7]]),
        NLM_F_REQUEST,
        "a lookup is not a dump"
    );
}

proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for msg in messages(&bytes).flatten() {
            let _ = parse_socket(msg.payload, Protocol::Tcp);
            let _ = error_code(msg.payload);
        }
        let _ = parse_socket(&bytes, Protocol::Tcp);
        let _ = TcpInfo::parse(&bytes);
    }

    #[test]
    fn mutated_fixture_never_panics(pos in 0usize..400, byte in any::<u8>()) {
        let mut datagram = fixture_tcp_v4();
        let at = pos % datagram.len();
        datagram[at] = byte;
        for msg in messages(&datagram).flatten() {
            let _ = parse_socket(msg.payload, Protocol::Tcp);
        }
    }
}
