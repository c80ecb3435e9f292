//! Flow and listener records straight to JSON, byte for byte what serde writes for them
//! (`{"kind":"flow",…}`, fields in declaration order, `null` for `None`, the cookie as a
//! string), without serde's machinery: `--once` at 100k sockets spent a fifth of its CPU
//! in serde_json, most of it escaping strings that cannot need it (enum names, addresses)
//! and formatting numbers through `fmt`. Only the kernel's state name is a free string,
//! escaped as serde_json escapes. Every other record kind (processes carry hostile names)
//! takes serde's path. The functions destructure the records whole, so a field added to
//! either stops the build until it is written here; tests compare both paths.

use std::net::IpAddr;

use crate::model::{FlowRecord, ListenerRecord, Record};

/// Appends `record` and a newline to `out`.
pub fn push_record_line(out: &mut Vec<u8>, record: &Record) -> serde_json::Result<()> {
    match record {
        Record::Flow(flow) => push_flow(out, flow)?,
        Record::Listener(listener) if listener.packet.is_none() => push_listener(out, listener),
        other => serde_json::to_writer(&mut *out, other)?,
    }
    out.push(b'\n');
    Ok(())
}

fn push_flow(out: &mut Vec<u8>, flow: &FlowRecord) -> serde_json::Result<()> {
    let FlowRecord {
        cookie,
        protocol,
        family,
        local_addr,
        local_port,
        remote_addr,
        remote_port,
        direction,
        scope,
        phase,
        state,
        preexisting,
        bytes_sent,
        bytes_received,
        segs_out,
        segs_in,
        retransmits,
        total_retrans,
        rtt_us,
        first_seen,
        last_seen,
        ended_at,
        uid,
        inode,
        pid,
        process_start_time,
        attribution,
        end_reason,
        reset,
        peer_scrubbed,
        cgroup_id,
    } = flow;
    push_head(
        out,
        b"flow",
        *cookie,
        protocol.name(),
        family.name(),
        local_addr,
        *local_port,
    );
    out.extend_from_slice(br#","remote_addr":"#);
    push_ip(out, remote_addr.as_ref());
    out.extend_from_slice(br#","remote_port":"#);
    push_opt(out, remote_port.map(u64::from));
    out.extend_from_slice(br#","direction":""#);
    out.extend_from_slice(direction.name().as_bytes());
    out.extend_from_slice(br#"","scope":""#);
    out.extend_from_slice(scope.name().as_bytes());
    out.extend_from_slice(br#"","phase":""#);
    out.extend_from_slice(phase.name().as_bytes());
    out.extend_from_slice(br#"","state":"#);
    push_str(out, state)?;
    out.extend_from_slice(br#","preexisting":"#);
    push_bool(out, *preexisting);
    push_opts(
        out,
        &[
            (&br#","bytes_sent":"#[..], *bytes_sent),
            (br#","bytes_received":"#, *bytes_received),
            (br#","segs_out":"#, *segs_out),
            (br#","segs_in":"#, *segs_in),
            (br#","retransmits":"#, retransmits.map(u64::from)),
            (br#","total_retrans":"#, total_retrans.map(u64::from)),
            (br#","rtt_us":"#, rtt_us.map(u64::from)),
            (br#","first_seen":"#, Some(*first_seen)),
            (br#","last_seen":"#, Some(*last_seen)),
            (br#","ended_at":"#, *ended_at),
            (br#","uid":"#, uid.map(u64::from)),
            (br#","inode":"#, *inode),
            (br#","pid":"#, pid.map(u64::from)),
            (br#","process_start_time":"#, *process_start_time),
        ],
    );
    out.extend_from_slice(br#","attribution":""#);
    out.extend_from_slice(attribution.name().as_bytes());
    out.extend_from_slice(br#"","end_reason":""#);
    out.extend_from_slice(end_reason.name().as_bytes());
    out.extend_from_slice(br#"","reset":"#);
    push_bool(out, *reset);
    out.extend_from_slice(br#","peer_scrubbed":"#);
    push_bool(out, *peer_scrubbed);
    out.extend_from_slice(br#","cgroup_id":"#);
    push_opt(out, *cgroup_id);
    out.push(b'}');
    Ok(())
}

/// A listener without a packet socket's details (those take serde's path).
fn push_listener(out: &mut Vec<u8>, listener: &ListenerRecord) {
    let ListenerRecord {
        cookie,
        protocol,
        family,
        local_addr,
        local_port,
        phase,
        preexisting,
        first_seen,
        ended_at,
        uid,
        inode,
        pid,
        process_start_time,
        attribution,
        backlog,
        packet: _,
    } = listener;
    push_head(
        out,
        b"listener",
        *cookie,
        protocol.name(),
        family.name(),
        local_addr,
        *local_port,
    );
    out.extend_from_slice(br#","phase":""#);
    out.extend_from_slice(phase.name().as_bytes());
    out.extend_from_slice(br#"","preexisting":"#);
    push_bool(out, *preexisting);
    push_opts(
        out,
        &[
            (&br#","first_seen":"#[..], Some(*first_seen)),
            (br#","ended_at":"#, *ended_at),
            (br#","uid":"#, uid.map(u64::from)),
            (br#","inode":"#, *inode),
            (br#","pid":"#, pid.map(u64::from)),
            (br#","process_start_time":"#, *process_start_time),
        ],
    );
    out.extend_from_slice(br#","attribution":""#);
    out.extend_from_slice(attribution.name().as_bytes());
    out.extend_from_slice(br#"","backlog":"#);
    push_opt(out, backlog.map(u64::from));
    out.push(b'}');
}

/// `{"kind":KIND,"cookie":"…","protocol":…,"family":…,"local_addr":…,"local_port":…`, the
/// fields flows and listeners open with.
fn push_head(
    out: &mut Vec<u8>,
    kind: &[u8],
    cookie: u64,
    protocol: &str,
    family: &str,
    local_addr: &IpAddr,
    local_port: u16,
) {
    out.extend_from_slice(br#"{"kind":""#);
    out.extend_from_slice(kind);
    out.extend_from_slice(br#"","cookie":""#);
    push_u64(out, cookie);
    out.extend_from_slice(br#"","protocol":""#);
    out.extend_from_slice(protocol.as_bytes());
    out.extend_from_slice(br#"","family":""#);
    out.extend_from_slice(family.as_bytes());
    out.extend_from_slice(br#"","local_addr":"#);
    push_ip(out, Some(local_addr));
    out.extend_from_slice(br#","local_port":"#);
    push_u64(out, u64::from(local_port));
}

/// Each `,"name":` with its number or `null`.
fn push_opts(out: &mut Vec<u8>, fields: &[(&[u8], Option<u64>)]) {
    for &(name, value) in fields {
        out.extend_from_slice(name);
        push_opt(out, value);
    }
}

fn push_bool(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}

fn push_opt(out: &mut Vec<u8>, value: Option<u64>) {
    match value {
        Some(n) => push_u64(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// An address as a JSON string (its `Display` form, as serde writes it), or `null`.
fn push_ip(out: &mut Vec<u8>, ip: Option<&IpAddr>) {
    match ip {
        None => out.extend_from_slice(b"null"),
        Some(IpAddr::V4(v4)) => {
            out.push(b'"');
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(octet));
            }
            out.push(b'"');
        }
        Some(IpAddr::V6(v6)) => {
            use std::io::Write;
            out.push(b'"');
            // Display of an address writes only hex digits, colons, dots and digits.
            let _ = write!(out, "{v6}");
            out.push(b'"');
        }
    }
}

/// `text` as a JSON string, escaped by serde_json itself (the only free string here).
fn push_str(out: &mut Vec<u8>, text: &str) -> serde_json::Result<()> {
    serde_json::to_writer(&mut *out, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use std::borrow::Cow;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn flow(state: Cow<'static, str>) -> FlowRecord {
        FlowRecord {
            cookie: u64::MAX,
            protocol: Protocol::Tcp,
            family: Family::Ipv4,
            local_addr: IpAddr::V4(Ipv4Addr::new(127, 0, 1, 255)),
            local_port: 65535,
            remote_addr: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            remote_port: Some(0),
            direction: Direction::Inbound,
            scope: Scope::EastWest,
            phase: FlowPhase::Start,
            state,
            preexisting: true,
            bytes_sent: Some(0),
            bytes_received: Some(1 << 40),
            segs_out: Some(9),
            segs_in: Some(10),
            retransmits: Some(u32::MAX),
            total_retrans: Some(0),
            rtt_us: Some(37),
            first_seen: 1_765_000_000_123_456_789,
            last_seen: 1_765_000_000_123_456_790,
            ended_at: None,
            uid: Some(0),
            inode: Some(4_000_000_001),
            pid: Some(4_194_304),
            process_start_time: Some(17),
            attribution: Attribution::InferredFromPeer,
            end_reason: EndReason::DestroyEvent,
            reset: false,
            peer_scrubbed: true,
            cgroup_id: None,
        }
    }

    fn serde_line(record: &Record) -> Vec<u8> {
        let mut line = serde_json::to_vec(record).expect("serde");
        line.push(b'\n');
        line
    }

    fn direct_line(record: &Record) -> Vec<u8> {
        let mut line = Vec::new();
        push_record_line(&mut line, record).expect("direct");
        line
    }

    /// Hostile text: newlines, every control character, quotes and backslashes, HTML,
    /// right-to-left marks, astral characters, and bytes that were not UTF-8 (carried as
    /// `\xNN` escapes, as the model carries kernel bytes).
    fn hostile() -> Vec<String> {
        let controls: String = (0u8..0x20).map(char::from).collect();
        vec![
            "ESTABLISHED".to_owned(),
            String::new(),
            "line\nbreak\r\n\ttab".to_owned(),
            controls,
            r#"quote " and \ backslash \\" end"#.to_owned(),
            "<script>alert('x')</script>&amp;</pre>".to_owned(),
            "\u{202e}gnp.exe\u{200f}\u{2066}rtl\u{2069}".to_owned(),
            "astral 𝕏 😀 and DEL \u{7f} and NBSP \u{a0}".to_owned(),
            escape_bytes(b"invalid \xff\xfe\xc3 utf-8 \x1b[31m red"),
        ]
    }

    #[test]
    fn flows_and_listeners_are_written_as_serde_writes_them() {
        let mut records = Vec::new();
        for state in hostile() {
            records.push(Record::Flow(flow(Cow::Owned(state))));
        }
        let mut udp = flow(Cow::Borrowed("UNCONN"));
        udp.protocol = Protocol::Udp;
        udp.family = Family::Ipv6;
        udp.local_addr = IpAddr::V6(Ipv6Addr::LOCALHOST);
        udp.remote_addr = None;
        udp.remote_port = None;
        udp.bytes_sent = None;
        udp.bytes_received = None;
        udp.segs_out = None;
        udp.segs_in = None;
        udp.retransmits = None;
        udp.total_retrans = None;
        udp.rtt_us = None;
        udp.ended_at = Some(0);
        udp.uid = None;
        udp.inode = None;
        udp.pid = None;
        udp.process_start_time = None;
        udp.attribution = Attribution::None;
        udp.end_reason = EndReason::Unspecified;
        udp.reset = true;
        udp.cgroup_id = Some(u64::MAX);
        records.push(Record::Flow(udp.clone()));
        for (v6, mapped) in [
            ("fe80::1:2", None),
            ("2001:db8::ff00:42:8329", None),
            ("::ffff:10.1.2.3", Some(())),
        ] {
            let mut f = udp.clone();
            f.local_addr = v6.parse().expect("v6");
            f.remote_addr = mapped.map(|()| IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            f.remote_port = Some(443);
            records.push(Record::Flow(f));
        }
        let listener = ListenerRecord {
            cookie: 0,
            protocol: Protocol::Tcp,
            family: Family::Ipv4,
            local_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            local_port: 8080,
            phase: FlowPhase::End,
            preexisting: false,
            first_seen: 5,
            ended_at: Some(6),
            uid: Some(1000),
            inode: None,
            pid: Some(1),
            process_start_time: None,
            attribution: Attribution::Listener,
            backlog: Some(4096),
            packet: None,
        };
        records.push(Record::Listener(listener.clone()));
        records.push(Record::Listener(ListenerRecord {
            backlog: None,
            uid: None,
            ..listener.clone()
        }));
        // A packet socket's listener goes through serde, whole.
        records.push(Record::Listener(ListenerRecord {
            protocol: Protocol::Packet,
            packet: Some(PacketSocket {
                sock_type: 3,
                ethertype: 3,
                ifindex: 0,
            }),
            ..listener
        }));
        for record in &records {
            let direct = direct_line(record);
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&serde_line(record))
            );
            assert_eq!(direct.iter().filter(|&&b| b == b'\n').count(), 1);
            let back: Record = serde_json::from_slice(&direct).expect("parses back");
            assert_eq!(&back, record);
        }
    }

    /// Processes are written by serde: a hostile name still comes out as one line of valid
    /// JSON that gives the original bytes back.
    #[test]
    fn hostile_process_names_come_out_as_one_line_of_valid_json() {
        let name = b"evil\n\xff\xfe\xe2\x80\xae<b>\"x\"</b>\\".to_vec();
        let record = Record::Process(ProcessRecord {
            comm: name.clone(),
            exe: Some(name.clone()),
            argv: vec![name.clone(), b"\x00\x01\r\n".to_vec()],
            cwd: Some(name.clone()),
            ..crate::fixtures::process(7, b"x")
        });
        let line = direct_line(&record);
        assert_eq!(line, serde_line(&record));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(std::str::from_utf8(&line).is_ok());
        let Record::Process(back) = serde_json::from_slice(&line).expect("parses back") else {
            panic!("not a process");
        };
        assert_eq!(back.comm, name);
        assert_eq!(back.argv[1], b"\x00\x01\r\n");
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        let around_powers = (0..20).flat_map(|p| {
            let power = 10u64.pow(p);
            [power - 1, power, power + 1]
        });
        for n in around_powers.chain([4_294_967_295, u64::MAX - 1, u64::MAX]) {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
