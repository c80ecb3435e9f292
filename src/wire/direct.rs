//! Flow records straight to and from protobuf bytes, without the generated structs: the
//! hot path of the batcher, the ingest service and the store. A generated `pb::Record` is
//! 616 bytes with three heap strings; building one per flow, encoding it and dropping it (or
//! decoding into one, converting and dropping it) cost more than the bytes themselves.
//!
//! The output is byte for byte what prost writes for `record_to_proto` (fields in number
//! order, proto3 defaults left out, `optional` fields by presence), and the decoder accepts
//! exactly the flows the generated path accepts: anything it does not expect (a wire type,
//! a repeated oneof, invalid UTF-8, a truncated field) goes to the generated decoder, which
//! gives the error or the merge semantics. The other record kinds always take the
//! generated path. Tests compare both paths; `flow_from_proto` destructures `pb::Flow`
//! exhaustively, so a field added to the schema stops the build until it is handled here.

use bytes::BufMut;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;

use super::{FlowView, Limits, WireError};
use crate::model::{FlowRecord, Record};
use crate::proto::v1 as pb;

/// `Record.flow`'s field number.
const RECORD_FLOW_FIELD: u32 = 1;

/// Reused between records so that encoding allocates nothing once warm.
#[derive(Debug, Default)]
pub struct Scratch {
    body: Vec<u8>,
    text: String,
}

/// Appends `record` as the length-delimited message field `field` (a `procflow.v1.Record`)
/// of the message being written to `out`.
pub fn put_record_field(out: &mut impl BufMut, field: u32, record: &Record, scratch: &mut Scratch) {
    let Record::Flow(flow) = record else {
        prost::encoding::message::encode(field, &super::record_to_proto(record), out);
        return;
    };
    let body = flow_body(flow, scratch);
    let record_len = 1 + encoded_len_varint(body.len() as u64) + body.len();
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint(record_len as u64, out);
    put_flow_field(out, body);
}

/// A `procflow.v1.Record` message (no field key) holding `record`.
pub fn encode_record(record: &Record, scratch: &mut Scratch) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    match record {
        Record::Flow(flow) => put_flow_field(&mut out, flow_body(flow, scratch)),
        _ => super::record_to_proto(record).encode_raw(&mut out),
    }
    out
}

/// A flow's `procflow.v1.Flow` message, in the scratch buffer.
fn flow_body<'s>(flow: &FlowRecord, scratch: &'s mut Scratch) -> &'s [u8] {
    scratch.body.clear();
    scratch.body.reserve(256);
    put_flow(&mut scratch.body, flow, &mut scratch.text);
    &scratch.body
}

/// `Record.flow` = `body`: the whole of a flow's `Record` message.
fn put_flow_field(out: &mut impl BufMut, body: &[u8]) {
    encode_key(RECORD_FLOW_FIELD, WireType::LengthDelimited, out);
    encode_varint(body.len() as u64, out);
    out.put_slice(body);
}

fn put_flow(out: &mut Vec<u8>, f: &FlowRecord, text: &mut String) {
    put_u64(out, 1, f.cookie);
    put_enum(out, 2, super::fields::protocol_to_proto(f.protocol) as i32);
    put_enum(out, 3, super::fields::family_to_proto(f.family) as i32);
    text.clear();
    crate::model::push_ip(text, f.local_addr);
    put_str(out, 4, text);
    put_u64(out, 5, u64::from(f.local_port));
    if let Some(remote) = f.remote_addr {
        text.clear();
        crate::model::push_ip(text, remote);
        put_str(out, 6, text);
    }
    put_some(out, 7, f.remote_port.map(u64::from));
    put_enum(
        out,
        8,
        super::fields::direction_to_proto(f.direction) as i32,
    );
    put_enum(out, 9, super::fields::scope_to_proto(f.scope) as i32);
    put_enum(out, 10, super::fields::flow_phase_to_proto(f.phase) as i32);
    if !f.state.is_empty() {
        put_str(out, 11, &f.state);
    }
    put_u64(out, 12, u64::from(f.preexisting));
    put_some(out, 13, f.bytes_sent);
    put_some(out, 14, f.bytes_received);
    put_some(out, 15, f.segs_out);
    put_some(out, 16, f.segs_in);
    put_some(out, 17, f.retransmits.map(u64::from));
    put_some(out, 18, f.rtt_us.map(u64::from));
    put_u64(out, 19, f.first_seen);
    put_u64(out, 20, f.last_seen);
    put_some(out, 21, f.ended_at);
    put_some(out, 22, f.uid.map(u64::from));
    put_some(out, 23, f.inode);
    put_some(out, 24, f.pid.map(u64::from));
    put_some(out, 25, f.process_start_time);
    put_enum(
        out,
        26,
        super::fields::attribution_to_proto(f.attribution) as i32,
    );
    put_enum(
        out,
        27,
        super::fields::end_reason_to_proto(f.end_reason) as i32,
    );
    put_u64(out, 28, u64::from(f.reset));
    put_some(out, 29, f.cgroup_id);
    put_some(out, 30, f.total_retrans.map(u64::from));
    put_u64(out, 31, u64::from(f.peer_scrubbed));
}

/// A proto3 scalar: left out when zero.
#[inline(always)]
fn put_u64(out: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        put_varint(out, u64::from(tag << 3 | WireType::Varint as u32));
        put_varint(out, value);
    }
}

/// An `optional` scalar: written whenever present, zero included.
#[inline(always)]
fn put_some(out: &mut Vec<u8>, tag: u32, value: Option<u64>) {
    if let Some(value) = value {
        put_varint(out, u64::from(tag << 3 | WireType::Varint as u32));
        put_varint(out, value);
    }
}

/// prost's `encode_varint`, inlined: with the keys constant, most of a flow's varints are
/// one byte and cost a compare and a push; longer ones are pushed byte by byte (a slice
/// copy would call `memmove` for a few bytes).
#[inline(always)]
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Enums are int32 on the wire: sign-extended, as prost writes them.
fn put_enum(out: &mut Vec<u8>, tag: u32, value: i32) {
    put_u64(out, tag, i64::from(value) as u64);
}

fn put_str(out: &mut Vec<u8>, tag: u32, value: &str) {
    put_varint(out, u64::from(tag << 3 | WireType::LengthDelimited as u32));
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

/// Why a record did not decode.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("decoding: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("{0}")]
    Invalid(#[from] WireError),
}

/// Decodes and validates one `procflow.v1.Record` message.
pub fn decode_record(bytes: &[u8], limits: &Limits) -> Result<Record, RecordError> {
    if let Some(view) = lone_flow(bytes).and_then(flow_view) {
        return Ok(Record::Flow(super::flow_from_view(view, limits)?));
    }
    Ok(super::record_from_proto(
        pb::Record::decode(bytes)?,
        limits,
    )?)
}

/// The body of a `Record` that is exactly one `flow` field; anything else is for the
/// generated decoder.
fn lone_flow(bytes: &[u8]) -> Option<&[u8]> {
    let mut reader = Reader(bytes);
    let (field, wire_type) = reader.key()?;
    if field != RECORD_FLOW_FIELD || wire_type != WireType::LengthDelimited {
        return None;
    }
    let body = reader.bytes()?;
    reader.0.is_empty().then_some(body)
}

fn flow_view(bytes: &[u8]) -> Option<FlowView<'_>> {
    in_order(bytes).or_else(|| any_order(bytes))
}

/// The fields as every known encoder writes them: each at most once, in number order, none
/// unknown. Checking for each expected key in turn takes predictable branches; the
/// general loop's dispatch on the field number is an indirect jump per field, which this
/// class of VM does not predict (5–7 ns each: scripts/cpu-speed.c). Text fields stay
/// bytes; `flow_from_view` validates them as it converts them.
fn in_order<'a>(bytes: &'a [u8]) -> Option<FlowView<'a>> {
    let mut r = Reader(bytes);
    let mut f = FlowView::default();
    if r.at(1, WireType::Varint) {
        f.cookie = r.varint()?;
    }
    if r.at(2, WireType::Varint) {
        f.protocol = r.varint()? as i32;
    }
    if r.at(3, WireType::Varint) {
        f.family = r.varint()? as i32;
    }
    if r.at(4, WireType::LengthDelimited) {
        f.local_addr = r.bytes()?;
    }
    if r.at(5, WireType::Varint) {
        f.local_port = r.varint()? as u32;
    }
    if r.at(6, WireType::LengthDelimited) {
        f.remote_addr = Some(r.bytes()?);
    }
    if r.at(7, WireType::Varint) {
        f.remote_port = Some(r.varint()? as u32);
    }
    if r.at(8, WireType::Varint) {
        f.direction = r.varint()? as i32;
    }
    if r.at(9, WireType::Varint) {
        f.scope = r.varint()? as i32;
    }
    if r.at(10, WireType::Varint) {
        f.phase = r.varint()? as i32;
    }
    if r.at(11, WireType::LengthDelimited) {
        f.state = r.bytes()?;
    }
    if r.at(12, WireType::Varint) {
        f.preexisting = r.varint()? != 0;
    }
    if r.at(13, WireType::Varint) {
        f.bytes_sent = Some(r.varint()?);
    }
    if r.at(14, WireType::Varint) {
        f.bytes_received = Some(r.varint()?);
    }
    if r.at(15, WireType::Varint) {
        f.segs_out = Some(r.varint()?);
    }
    if r.at(16, WireType::Varint) {
        f.segs_in = Some(r.varint()?);
    }
    if r.at(17, WireType::Varint) {
        f.retransmits = Some(r.varint()? as u32);
    }
    if r.at(18, WireType::Varint) {
        f.rtt_us = Some(r.varint()? as u32);
    }
    if r.at(19, WireType::Varint) {
        f.first_seen = r.varint()?;
    }
    if r.at(20, WireType::Varint) {
        f.last_seen = r.varint()?;
    }
    if r.at(21, WireType::Varint) {
        f.ended_at = Some(r.varint()?);
    }
    if r.at(22, WireType::Varint) {
        f.uid = Some(r.varint()? as u32);
    }
    if r.at(23, WireType::Varint) {
        f.inode = Some(r.varint()?);
    }
    if r.at(24, WireType::Varint) {
        f.pid = Some(r.varint()? as u32);
    }
    if r.at(25, WireType::Varint) {
        f.process_start_time = Some(r.varint()?);
    }
    if r.at(26, WireType::Varint) {
        f.attribution = r.varint()? as i32;
    }
    if r.at(27, WireType::Varint) {
        f.end_reason = r.varint()? as i32;
    }
    if r.at(28, WireType::Varint) {
        f.reset = r.varint()? != 0;
    }
    if r.at(29, WireType::Varint) {
        f.cgroup_id = Some(r.varint()?);
    }
    if r.at(30, WireType::Varint) {
        f.total_retrans = Some(r.varint()? as u32);
    }
    if r.at(31, WireType::Varint) {
        f.peer_scrubbed = r.varint()? != 0;
    }
    r.0.is_empty().then_some(f)
}

/// Any order, repeats (the last wins) and unknown fields, as the generated decoder takes them.
fn any_order(bytes: &[u8]) -> Option<FlowView<'_>> {
    let mut f = FlowView::default();
    let mut reader = Reader(bytes);
    while !reader.0.is_empty() {
        let (field, wire_type) = reader.key()?;
        match (field, wire_type) {
            (4 | 6 | 11, WireType::LengthDelimited) => {
                // Each occurrence is checked, as the generated decoder checks it, even one
                // that a later repeat replaces.
                let text = std::str::from_utf8(reader.bytes()?).ok()?.as_bytes();
                match field {
                    4 => f.local_addr = text,
                    6 => f.remote_addr = Some(text),
                    _ => f.state = text,
                }
            }
            (1..=31, WireType::Varint) => {
                let v = reader.varint()?;
                // Narrowing as prost does: uint32 and int32 keep the low 32 bits.
                let (u32v, i32v) = (v as u32, v as i32);
                match field {
                    1 => f.cookie = v,
                    2 => f.protocol = i32v,
                    3 => f.family = i32v,
                    5 => f.local_port = u32v,
                    7 => f.remote_port = Some(u32v),
                    8 => f.direction = i32v,
                    9 => f.scope = i32v,
                    10 => f.phase = i32v,
                    12 => f.preexisting = v != 0,
                    13 => f.bytes_sent = Some(v),
                    14 => f.bytes_received = Some(v),
                    15 => f.segs_out = Some(v),
                    16 => f.segs_in = Some(v),
                    17 => f.retransmits = Some(u32v),
                    18 => f.rtt_us = Some(u32v),
                    19 => f.first_seen = v,
                    20 => f.last_seen = v,
                    21 => f.ended_at = Some(v),
                    22 => f.uid = Some(u32v),
                    23 => f.inode = Some(v),
                    24 => f.pid = Some(u32v),
                    25 => f.process_start_time = Some(v),
                    26 => f.attribution = i32v,
                    27 => f.end_reason = i32v,
                    28 => f.reset = v != 0,
                    29 => f.cgroup_id = Some(v),
                    30 => f.total_retrans = Some(u32v),
                    31 => f.peer_scrubbed = v != 0,
                    // A string field sent as a varint: the generated decoder says why not.
                    _ => return None,
                }
            }
            // A field from a newer schema: skipped, as the generated decoder would.
            (32.., WireType::Varint) => {
                reader.varint()?;
            }
            (32.., WireType::LengthDelimited) => {
                reader.bytes()?;
            }
            (32.., WireType::SixtyFourBit) => {
                reader.take(8)?;
            }
            (32.., WireType::ThirtyTwoBit) => {
                reader.take(4)?;
            }
            _ => return None,
        }
    }
    Some(f)
}

/// A cursor over protobuf bytes; `None` on anything malformed.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    #[inline(always)]
    fn varint(&mut self) -> Option<u64> {
        // Most of a flow's varints are one byte.
        if let Some((&byte, rest)) = self.0.split_first() {
            if byte < 0x80 {
                self.0 = rest;
                return Some(u64::from(byte));
            }
        }
        let mut value = 0u64;
        for (i, &byte) in self.0.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                // A tenth byte may only carry the top bit.
                if i == 9 && byte > 1 {
                    return None;
                }
                self.0 = &self.0[i + 1..];
                return Some(value);
            }
        }
        None
    }

    fn key(&mut self) -> Option<(u32, WireType)> {
        let key = u32::try_from(self.varint()?).ok()?;
        let field = Some(key >> 3).filter(|&f| f > 0)?;
        let wire_type = WireType::try_from(u64::from(key & 7)).ok()?;
        Some((field, wire_type))
    }

    /// Consumes the key of `field` if it comes next (fields 1 to 30: one or two bytes).
    #[inline(always)]
    fn at(&mut self, field: u32, wire_type: WireType) -> bool {
        let key = field << 3 | wire_type as u32;
        let matched = if key < 0x80 {
            self.0.first() == Some(&(key as u8))
        } else {
            self.0.get(..2) == Some(&[(key as u8) | 0x80, (key >> 7) as u8])
        };
        if matched {
            self.0 = &self.0[if key < 0x80 { 1 } else { 2 }..];
        }
        matched
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..len)?, self.0.get(len..)?);
        self.0 = tail;
        Some(head)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::model::*;

    /// Flows that exercise every field's edge: absent and zero optionals, maxima, IPv6,
    /// unconnected UDP, an empty state.
    fn flows() -> Vec<FlowRecord> {
        let base = fixtures::flow(42);
        vec![
            base.clone(),
            FlowRecord {
                cookie: 0,
                local_port: 0,
                state: "".into(),
                first_seen: 0,
                last_seen: 0,
                bytes_sent: None,
                bytes_received: None,
                uid: None,
                inode: None,
                pid: None,
                process_start_time: None,
                remote_addr: None,
                remote_port: None,
                protocol: Protocol::Udp,
                direction: Direction::Unknown,
                attribution: Attribution::None,
                ..base.clone()
            },
            FlowRecord {
                cookie: u64::MAX,
                family: Family::Ipv6,
                local_addr: "fd00::a:1".parse().expect("ip"),
                remote_addr: Some("::ffff:10.1.2.3".parse().expect("ip")),
                local_port: u16::MAX,
                remote_port: Some(0),
                phase: FlowPhase::End,
                preexisting: true,
                bytes_sent: Some(u64::MAX),
                bytes_received: Some(0),
                segs_out: Some(1),
                segs_in: Some(0),
                retransmits: Some(u32::MAX),
                total_retrans: Some(0),
                rtt_us: Some(120),
                ended_at: Some(9),
                uid: Some(0),
                pid: Some(u32::MAX),
                end_reason: EndReason::Recovered,
                reset: true,
                peer_scrubbed: true,
                cgroup_id: Some(0),
                scope: Scope::EastWest,
                ..base
            },
        ]
    }

    #[test]
    fn encodes_exactly_what_the_generated_code_encodes() {
        let mut scratch = Scratch::default();
        for flow in flows() {
            let record = Record::Flow(flow);
            let generated = super::super::record_to_proto(&record).encode_to_vec();
            assert_eq!(
                encode_record(&record, &mut scratch),
                generated,
                "{record:?}"
            );
            let mut field = Vec::new();
            put_record_field(&mut field, 4, &record, &mut scratch);
            let mut expected = Vec::new();
            prost::encoding::message::encode(
                4,
                &super::super::record_to_proto(&record),
                &mut expected,
            );
            assert_eq!(field, expected);
        }
    }

    #[test]
    fn decodes_what_the_generated_code_decodes() {
        let limits = Limits::default();
        let mut scratch = Scratch::default();
        for flow in flows() {
            let bytes = encode_record(&Record::Flow(flow.clone()), &mut scratch);
            assert!(lone_flow(&bytes).and_then(flow_view).is_some(), "fast path");
            let decoded = decode_record(&bytes, &limits).expect("decodes");
            assert_eq!(decoded, Record::Flow(flow));
        }
        // Other kinds take the generated path and come back whole.
        let process = Record::Process(fixtures::process(9, b"sh"));
        let bytes = encode_record(&process, &mut scratch);
        assert_eq!(decode_record(&bytes, &limits).expect("decodes"), process);
    }

    /// Every prefix, every single-byte corruption and a few hand-made oddities: the direct
    /// decoder accepts exactly what the generated one accepts, with the same result.
    #[test]
    fn agrees_with_the_generated_decoder_on_damaged_input() {
        let limits = Limits::default();
        let mut scratch = Scratch::default();
        let generated = |bytes: &[u8]| -> Option<Record> {
            super::super::record_from_proto(pb::Record::decode(bytes).ok()?, &limits).ok()
        };
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for flow in flows() {
            let good = encode_record(&Record::Flow(flow), &mut scratch);
            for cut in 0..good.len() {
                cases.push(good[..cut].to_vec());
            }
            for i in 0..good.len() {
                for byte in [0x00, 0x01, 0x08, 0x0a, 0x7f, 0x80, 0xff] {
                    let mut bad = good.clone();
                    bad[i] = byte;
                    cases.push(bad);
                }
            }
            // The flow twice (protobuf merges the two), and a field from a newer schema.
            cases.push([good.clone(), good.clone()].concat());
            let mut body = lone_flow(&good).expect("one flow field").to_vec();
            prost::encoding::uint64::encode(99, &5, &mut body);
            prost::encoding::string::encode(100, &"x".to_owned(), &mut body);
            let mut newer = Vec::new();
            prost::encoding::bytes::encode(RECORD_FLOW_FIELD, &body, &mut newer);
            assert!(lone_flow(&newer).and_then(flow_view).is_some());
            cases.push(newer);
        }
        let mut fast = 0;
        for case in &cases {
            let direct = decode_record(case, &limits).ok();
            assert_eq!(direct, generated(case), "{case:02x?}");
            fast += usize::from(lone_flow(case).and_then(flow_view).is_some());
        }
        assert!(
            fast > cases.len() / 4,
            "most cases take the direct path: {fast}"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::model::*;
    use proptest::prelude::*;

    fn any_flow() -> impl Strategy<Value = FlowRecord> {
        let addrs =
            (any::<[u8; 4]>(), any::<[u8; 16]>(), any::<bool>()).prop_map(|(v4, v6, six)| {
                if six {
                    std::net::IpAddr::from(v6)
                } else {
                    std::net::IpAddr::from(v4)
                }
            });
        (
            (any::<u64>(), any::<bool>(), addrs.clone(), any::<u16>()),
            (
                proptest::option::of(addrs),
                proptest::option::of(any::<u16>()),
            ),
            ("[A-Z_]{0,12}", any::<bool>(), any::<bool>()),
            proptest::array::uniform6(proptest::option::of(any::<u64>())),
            proptest::array::uniform5(proptest::option::of(any::<u32>())),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::option::of(any::<u64>()),
            ),
        )
            .prop_map(
                |((cookie, udp, local, lport), (remote, rport), (state, pre, reset), w, n, t)| {
                    FlowRecord {
                        cookie,
                        protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
                        local_addr: local,
                        local_port: lport,
                        remote_addr: remote,
                        remote_port: rport,
                        state: state.into(),
                        preexisting: pre,
                        reset,
                        bytes_sent: w[0],
                        bytes_received: w[1],
                        segs_out: w[2],
                        segs_in: w[3],
                        inode: w[4],
                        cgroup_id: w[5],
                        retransmits: n[0],
                        total_retrans: n[1],
                        rtt_us: n[2],
                        uid: n[3],
                        pid: n[4],
                        first_seen: t.0,
                        last_seen: t.1,
                        ended_at: t.2,
                        process_start_time: t.2.map(|v| v / 2),
                        ..crate::fixtures::flow(0)
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn any_flow_encodes_as_generated_and_decodes_back(flow in any_flow()) {
            let record = Record::Flow(flow);
            let mut scratch = Scratch::default();
            let bytes = encode_record(&record, &mut scratch);
            prop_assert_eq!(&bytes, &super::super::record_to_proto(&record).encode_to_vec());
            let decoded = decode_record(&bytes, &Limits::default()).expect("decodes");
            prop_assert_eq!(decoded, record);
        }

        #[test]
        fn any_bytes_decode_as_generated(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
            let limits = Limits::default();
            let generated = pb::Record::decode(bytes.as_slice())
                .ok()
                .and_then(|r| super::super::record_from_proto(r, &limits).ok());
            prop_assert_eq!(decode_record(&bytes, &limits).ok(), generated);
        }
    }
}
