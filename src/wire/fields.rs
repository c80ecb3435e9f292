//! Field-level conversions shared by records and answers: bounds, addresses, ports and the
//! enum mappings.

use std::net::IpAddr;

use super::WireError;
use crate::model;
use crate::proto::v1 as pb;

pub(super) fn check_len(field: &'static str, len: usize, limit: usize) -> Result<(), WireError> {
    if len > limit {
        return Err(WireError::TooLarge { field, len, limit });
    }
    Ok(())
}

pub(super) fn addr(field: &'static str, value: &str) -> Result<IpAddr, WireError> {
    addr_bytes(field, value.as_bytes())
}

pub(super) fn addr_bytes(field: &'static str, value: &[u8]) -> Result<IpAddr, WireError> {
    if let Some(v4) = parse_ipv4(value) {
        return Ok(IpAddr::V4(v4));
    }
    let text = std::str::from_utf8(value).map_err(|_| WireError::NotUtf8(field))?;
    text.parse().map_err(|_| WireError::BadAddress {
        field,
        value: text.chars().take(64).collect(),
    })
}

/// A dotted quad exactly as std accepts it (four decimal octets up to 255, no leading
/// zeros), without std's generic parser (a visible share of ingest in `perf record` of
/// `procflow-bench transport`); anything else (IPv6, malformed text) is left to std.
pub(super) fn parse_ipv4(text: &[u8]) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut at = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if text.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
        let start = at;
        let mut value = 0u32;
        while let Some(digit) = text.get(at).filter(|c| c.is_ascii_digit()) {
            if at - start == 3 {
                return None;
            }
            value = value * 10 + u32::from(digit - b'0');
            at += 1;
        }
        let digits = at - start;
        if digits == 0 || (digits > 1 && text[start] == b'0') || value > 255 {
            return None;
        }
        *octet = value as u8;
    }
    (at == text.len()).then_some(std::net::Ipv4Addr::from(octets))
}

pub(super) fn port(field: &'static str, value: u32) -> Result<u16, WireError> {
    u16::try_from(value).map_err(|_| WireError::BadPort { field, value })
}

pub(super) fn protocol_to_proto(p: model::Protocol) -> pb::Protocol {
    match p {
        model::Protocol::Tcp => pb::Protocol::Tcp,
        model::Protocol::Udp => pb::Protocol::Udp,
        model::Protocol::Packet => pb::Protocol::Packet,
    }
}

pub(super) fn protocol_from_proto(v: i32) -> Result<model::Protocol, WireError> {
    match pb::Protocol::try_from(v) {
        Ok(pb::Protocol::Tcp) => Ok(model::Protocol::Tcp),
        Ok(pb::Protocol::Udp) => Ok(model::Protocol::Udp),
        Ok(pb::Protocol::Packet) => Ok(model::Protocol::Packet),
        _ => Err(WireError::BadEnum {
            field: "protocol",
            value: v,
        }),
    }
}

pub(super) fn family_to_proto(f: model::Family) -> pb::Family {
    match f {
        model::Family::Ipv4 => pb::Family::Ipv4,
        model::Family::Ipv6 => pb::Family::Ipv6,
    }
}

pub(super) fn family_from_proto(v: i32) -> Result<model::Family, WireError> {
    match pb::Family::try_from(v) {
        Ok(pb::Family::Ipv4) => Ok(model::Family::Ipv4),
        Ok(pb::Family::Ipv6) => Ok(model::Family::Ipv6),
        _ => Err(WireError::BadEnum {
            field: "family",
            value: v,
        }),
    }
}

pub fn direction_to_proto(d: model::Direction) -> pb::Direction {
    match d {
        model::Direction::Unknown => pb::Direction::Unknown,
        model::Direction::Inbound => pb::Direction::Inbound,
        model::Direction::Outbound => pb::Direction::Outbound,
        model::Direction::Listen => pb::Direction::Listen,
    }
}

pub fn direction_from_proto(v: i32, field: &'static str) -> Result<model::Direction, WireError> {
    Ok(match pb::Direction::try_from(v) {
        Ok(pb::Direction::Unknown) => model::Direction::Unknown,
        Ok(pb::Direction::Inbound) => model::Direction::Inbound,
        Ok(pb::Direction::Outbound) => model::Direction::Outbound,
        Ok(pb::Direction::Listen) => model::Direction::Listen,
        Err(_) => return Err(WireError::BadEnum { field, value: v }),
    })
}

pub fn scope_from_proto(v: i32, field: &'static str) -> Result<model::Scope, WireError> {
    Ok(match pb::Scope::try_from(v) {
        Ok(pb::Scope::Unspecified) => model::Scope::Unspecified,
        Ok(pb::Scope::Local) => model::Scope::Local,
        Ok(pb::Scope::EastWest) => model::Scope::EastWest,
        Ok(pb::Scope::NorthSouth) => model::Scope::NorthSouth,
        Err(_) => return Err(WireError::BadEnum { field, value: v }),
    })
}

pub fn scope_to_proto(s: model::Scope) -> pb::Scope {
    match s {
        model::Scope::Unspecified => pb::Scope::Unspecified,
        model::Scope::Local => pb::Scope::Local,
        model::Scope::EastWest => pb::Scope::EastWest,
        model::Scope::NorthSouth => pb::Scope::NorthSouth,
    }
}

pub(super) fn flow_phase_to_proto(p: model::FlowPhase) -> pb::FlowPhase {
    match p {
        model::FlowPhase::Start => pb::FlowPhase::Start,
        model::FlowPhase::Update => pb::FlowPhase::Update,
        model::FlowPhase::End => pb::FlowPhase::End,
    }
}

pub(super) fn flow_phase_from_proto(v: i32) -> Result<model::FlowPhase, WireError> {
    match pb::FlowPhase::try_from(v) {
        Ok(pb::FlowPhase::Start) => Ok(model::FlowPhase::Start),
        Ok(pb::FlowPhase::Update) => Ok(model::FlowPhase::Update),
        Ok(pb::FlowPhase::End) => Ok(model::FlowPhase::End),
        _ => Err(WireError::BadEnum {
            field: "phase",
            value: v,
        }),
    }
}

pub(super) fn attribution_to_proto(a: model::Attribution) -> pb::Attribution {
    match a {
        model::Attribution::None => pb::Attribution::None,
        model::Attribution::Fd => pb::Attribution::Fd,
        model::Attribution::Uid => pb::Attribution::Uid,
        model::Attribution::Listener => pb::Attribution::Listener,
        model::Attribution::InferredFromPeer => pb::Attribution::InferredFromPeer,
    }
}

pub(super) fn attribution_from_proto(v: i32) -> Result<model::Attribution, WireError> {
    match pb::Attribution::try_from(v) {
        Ok(pb::Attribution::None) => Ok(model::Attribution::None),
        Ok(pb::Attribution::Fd) => Ok(model::Attribution::Fd),
        Ok(pb::Attribution::Uid) => Ok(model::Attribution::Uid),
        Ok(pb::Attribution::Listener) => Ok(model::Attribution::Listener),
        Ok(pb::Attribution::InferredFromPeer) => Ok(model::Attribution::InferredFromPeer),
        Err(_) => Err(WireError::BadEnum {
            field: "attribution",
            value: v,
        }),
    }
}

pub(super) fn end_reason_to_proto(r: model::EndReason) -> pb::EndReason {
    match r {
        model::EndReason::Unspecified => pb::EndReason::Unspecified,
        model::EndReason::DestroyEvent => pb::EndReason::DestroyEvent,
        model::EndReason::Vanished => pb::EndReason::Vanished,
        model::EndReason::Recovered => pb::EndReason::Recovered,
        model::EndReason::Shutdown => pb::EndReason::Shutdown,
    }
}

pub(super) fn unavailable_to_proto(u: model::Unavailable) -> pb::Unavailable {
    match u {
        model::Unavailable::Unspecified => pb::Unavailable::Unspecified,
        model::Unavailable::PermissionDenied => pb::Unavailable::PermissionDenied,
        model::Unavailable::ProcessGone => pb::Unavailable::ProcessGone,
        model::Unavailable::None => pb::Unavailable::None,
    }
}

pub(super) fn unavailable_from_proto(
    v: i32,
    field: &'static str,
) -> Result<model::Unavailable, WireError> {
    match pb::Unavailable::try_from(v) {
        Ok(pb::Unavailable::Unspecified) => Ok(model::Unavailable::Unspecified),
        Ok(pb::Unavailable::PermissionDenied) => Ok(model::Unavailable::PermissionDenied),
        Ok(pb::Unavailable::ProcessGone) => Ok(model::Unavailable::ProcessGone),
        Ok(pb::Unavailable::None) => Ok(model::Unavailable::None),
        Err(_) => Err(WireError::BadEnum { field, value: v }),
    }
}

pub(super) fn severity_to_proto(s: model::Severity) -> pb::Severity {
    match s {
        model::Severity::Info => pb::Severity::Info,
        model::Severity::Low => pb::Severity::Low,
        model::Severity::Medium => pb::Severity::Medium,
        model::Severity::High => pb::Severity::High,
        model::Severity::Critical => pb::Severity::Critical,
    }
}

pub(super) fn severity_from_proto(v: i32) -> Result<model::Severity, WireError> {
    match pb::Severity::try_from(v) {
        Ok(pb::Severity::Info) => Ok(model::Severity::Info),
        Ok(pb::Severity::Low) => Ok(model::Severity::Low),
        Ok(pb::Severity::Medium) => Ok(model::Severity::Medium),
        Ok(pb::Severity::High) => Ok(model::Severity::High),
        Ok(pb::Severity::Critical) => Ok(model::Severity::Critical),
        _ => Err(WireError::BadEnum {
            field: "alert.severity",
            value: v,
        }),
    }
}

/// An address as the schema's text.
pub(super) fn ip_text(ip: std::net::IpAddr) -> String {
    let mut text = String::with_capacity(15);
    crate::model::push_ip(&mut text, ip);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    proptest::proptest! {
        #[test]
        fn ipv4_text_parses_as_std_parses_it(text in "[0-9.]{0,18}|[0-9]{1,3}(\\.[0-9]{1,3}){3}") {
            proptest::prop_assert_eq!(super::parse_ipv4(text.as_bytes()), text.parse().ok());
        }
    }

    /// Every attribution kind crosses the wire and comes back as itself (an inferred owner
    /// never arrives as another kind).
    #[test]
    fn attributions_round_trip() {
        use model::Attribution as A;
        for a in [A::None, A::Fd, A::Uid, A::Listener, A::InferredFromPeer] {
            let wire = attribution_to_proto(a) as i32;
            assert_eq!(attribution_from_proto(wire).expect("known"), a);
        }
        assert!(attribution_from_proto(99).is_err());
    }

    #[test]
    fn ipv4_edges_parse_as_std_parses_them() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.",
            "1..2.3",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1.2.3.04",
            "10.0.0.1",
            "1.2.3.1000",
            "",
            ".",
            "::1",
        ] {
            assert_eq!(
                super::parse_ipv4(text.as_bytes()),
                text.parse().ok(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "100.64.9.255",
            "255.255.255.255",
            "192.168.10.100",
            "::1",
            "fd00::a:1",
            "::ffff:10.1.2.3",
        ] {
            let ip: std::net::IpAddr = ip.parse().expect("address");
            assert_eq!(ip_text(ip), ip.to_string());
        }
        for n in 0..=255u8 {
            let ip = std::net::IpAddr::from([n, 255 - n, n / 2, n % 10]);
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
}
