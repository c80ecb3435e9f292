//! Records for unit tests: one plain flow and one plain process, which each test adjusts
//! with struct-update syntax to the case it checks.

use crate::model::{
    Attribution, Direction, EndReason, Family, FlowPhase, FlowRecord, ProcessPhase, ProcessRecord,
    Protocol, Scope, Unavailable,
};

/// An outbound TCP START from 10.0.0.5:(40000 + cookie) to 203.0.113.7:443, owned by
/// pid 7 (started at 70) by fd, 0 bytes each way.
pub fn flow(cookie: u64) -> FlowRecord {
    FlowRecord {
        cookie,
        protocol: Protocol::Tcp,
        family: Family::Ipv4,
        local_addr: std::net::IpAddr::from([10, 0, 0, 5]),
        local_port: 40000u16.wrapping_add(cookie as u16),
        remote_addr: Some(std::net::IpAddr::from([203, 0, 113, 7])),
        remote_port: Some(443),
        direction: Direction::Outbound,
        scope: Scope::NorthSouth,
        phase: FlowPhase::Start,
        state: "ESTABLISHED".into(),
        preexisting: false,
        bytes_sent: Some(0),
        bytes_received: Some(0),
        segs_out: None,
        segs_in: None,
        retransmits: None,
        total_retrans: None,
        rtt_us: None,
        first_seen: 1,
        last_seen: 1,
        ended_at: None,
        uid: Some(1000),
        inode: Some(cookie),
        pid: Some(7),
        process_start_time: Some(70),
        attribution: Attribution::Fd,
        end_reason: EndReason::Unspecified,
        reset: false,
        peer_scrubbed: false,
        cgroup_id: None,
    }
}

/// A START of `comm` as pid `pid` (started at 1, parent pid 1), uid 1000, no exe read.
pub fn process(pid: u32, comm: &[u8]) -> ProcessRecord {
    ProcessRecord {
        pid,
        start_time: 1,
        ppid: 1,
        parent_start_time: None,
        phase: ProcessPhase::Start,
        comm: comm.to_vec(),
        exe: None,
        argv: vec![comm.to_vec()],
        cwd: None,
        uid: 1000,
        gid: 1000,
        euid: 1000,
        egid: 1000,
        tty: None,
        session_id: 0,
        pgid: 0,
        container_id: None,
        pod_uid: None,
        exit_time: None,
        ancestors: Vec::new(),
        exe_unavailable: Unavailable::Unspecified,
        cwd_unavailable: Unavailable::Unspecified,
        exe_deleted: false,
        seen_at_exit_only: false,
        preexisting: false,
        stdio_is_socket: None,
        stdio_socket_inodes: Vec::new(),
        forked_no_exec: false,
        exe_replaced: None,
        stdin_pipe: None,
        stdout_pipe: None,
        comm_is_exe_link: false,
    }
}
