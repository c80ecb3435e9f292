//! What the table's tests share: a TCP socket as a dump shows it, a default table, and the
//! flow records of an output.

use super::{FlowConfig, FlowTable};
use crate::attribution::NoAttribution;
use crate::flows::classify::Scoper;
use crate::model::{Family, FlowRecord, Protocol, Record, UnixNanos};
use crate::sockdiag::msg::{SocketInfo, TcpInfo};

pub(super) fn tcp_socket(
    cookie: u64,
    local: &str,
    remote: &str,
    state: u8,
    sent: u64,
    received: u64,
    data_in: u32,
) -> SocketInfo {
    SocketInfo {
        cookie,
        protocol: Protocol::Tcp,
        family: Family::Ipv4,
        state,
        local: local.parse().expect("addr"),
        remote: remote.parse().expect("addr"),
        rqueue: 0,
        wqueue: 0,
        uid: 1000,
        inode: cookie + 1000,
        interface: 0,
        tcp: Some(TcpInfo {
            len: 232,
            state,
            bytes_sent: Some(sent),
            bytes_retrans: Some(0),
            bytes_received: Some(received),
            bytes_acked: Some(sent + 1),
            segs_out: Some(3),
            segs_in: Some(3),
            data_segs_in: Some(data_in),
            ..TcpInfo::default()
        }),
        cgroup_id: None,
        timewait: false,
    }
}

pub(super) fn flows(out: &[Record]) -> Vec<&FlowRecord> {
    out.iter()
        .filter_map(|r| match r {
            Record::Flow(f) => Some(f),
            _ => None,
        })
        .collect()
}

pub(super) fn table() -> FlowTable {
    FlowTable::new(FlowConfig::default(), Scoper::default())
}

/// Applies a complete dump of one socket, attributing nothing.
pub(super) fn dump_one(t: &mut FlowTable, s: &SocketInfo, now: UnixNanos, out: &mut Vec<Record>) {
    t.apply_dump(std::slice::from_ref(s), true, now, &mut NoAttribution, out);
}
