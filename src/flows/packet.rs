//! Packet sockets (`AF_PACKET`): what a sniffer opens (T1040). sock_diag's dumps cover
//! TCP and UDP only; `/proc/net/packet` lists every packet socket of the reader's network
//! namespace to any user, with its type, EtherType, interface, uid and inode. The
//! collector reads it on its dumps' cadence ([`READ_EVERY`] at most) and this table turns
//! successive reads into listener records (protocol `Packet`): START when a socket is
//! first seen, its owner looked up by inode like any socket's, END when it is gone.
//!
//! The file shows no cookie (its `sk` column is a kernel address, zeros for a reader
//! without CAP_SYSLOG): a packet socket's cookie is [`COOKIE_BIT`] + its inode, kept
//! apart from the kernel's cookies of the flows and listeners beside it.

use std::time::Duration;

use crate::attribution::OwnerLookup;
use crate::model::{Family, FlowPhase, ListenerRecord, PacketSocket, Protocol, Record, UnixNanos};

/// The high bit of a packet socket's cookie (the kernel's cookies count up from 1).
pub const COOKIE_BIT: u64 = 1 << 63;

/// The table is read at a dump at most this often: a dump can come every few ms while
/// sockets open, and a sniffer lives far longer than this.
pub const READ_EVERY: Duration = Duration::from_millis(500);

/// One line of /proc/net/packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketLine {
    pub sock_type: u16,
    pub ethertype: u16,
    pub ifindex: u32,
    pub uid: u32,
    pub inode: u64,
}

/// Parses /proc/net/packet (`sk RefCnt Type Proto Iface R Rmem User Inode`, Proto in hex)
/// into `out`; the header and malformed lines are skipped. Returns how many lines were
/// skipped besides the header.
pub fn parse_packet_table(text: &[u8], out: &mut Vec<PacketLine>) -> usize {
    out.clear();
    let mut malformed = 0;
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if i == 0 || line.iter().all(u8::is_ascii_whitespace) {
            continue; // the header, the last newline
        }
        match parse_line(line) {
            Some(l) => out.push(l),
            None => malformed += 1,
        }
    }
    malformed
}

fn parse_line(line: &[u8]) -> Option<PacketLine> {
    let text = std::str::from_utf8(line).ok()?;
    let mut f = text.split_ascii_whitespace();
    let _sk = f.next()?;
    let _refcnt = f.next()?;
    let sock_type = f.next()?.parse().ok()?;
    let ethertype = u16::from_str_radix(f.next()?, 16).ok()?;
    let ifindex = f.next()?.parse().ok()?;
    let _running = f.next()?;
    let _rmem = f.next()?;
    let uid = f.next()?.parse().ok()?;
    let inode = f.next()?.parse().ok()?;
    Some(PacketLine {
        sock_type,
        ethertype,
        ifindex,
        uid,
        inode,
    })
}

/// The packet sockets open at the last read, by inode, with their START records.
#[derive(Debug, Default)]
pub struct PacketTable {
    open: std::collections::HashMap<u64, ListenerRecord>,
    /// Scratch: the inodes first seen in a read.
    new_inodes: Vec<u64>,
}

impl PacketTable {
    /// One read of the table: a START for each socket first seen (its owner looked up by
    /// inode, processes found on the way reported ahead of it) and, when the read was whole,
    /// an END for each socket no longer listed.
    pub fn observe(
        &mut self,
        lines: &[PacketLine],
        whole: bool,
        now: UnixNanos,
        lookup: &mut dyn OwnerLookup,
        out: &mut Vec<Record>,
    ) {
        self.new_inodes.clear();
        self.new_inodes.extend(
            lines
                .iter()
                .map(|l| l.inode)
                .filter(|i| *i != 0 && !self.open.contains_key(i)),
        );
        if !self.new_inodes.is_empty() {
            lookup.refresh(&self.new_inodes, now, out);
        }
        for l in lines {
            if l.inode == 0 || self.open.contains_key(&l.inode) {
                continue;
            }
            let owner = lookup.owner(l.inode, Some(l.uid), None);
            let record = ListenerRecord {
                cookie: COOKIE_BIT | l.inode,
                protocol: Protocol::Packet,
                family: Family::Ipv4,
                local_addr: std::net::Ipv4Addr::UNSPECIFIED.into(),
                local_port: 0,
                phase: FlowPhase::Start,
                preexisting: false,
                first_seen: now,
                ended_at: None,
                uid: Some(l.uid),
                inode: Some(l.inode),
                pid: owner.pid,
                process_start_time: owner.start_time,
                attribution: owner.attribution,
                backlog: None,
                packet: Some(PacketSocket {
                    sock_type: l.sock_type,
                    ethertype: l.ethertype,
                    ifindex: l.ifindex,
                }),
            };
            out.push(Record::Listener(record.clone()));
            self.open.insert(l.inode, record);
        }
        if whole && !self.open.is_empty() {
            let listed: std::collections::HashSet<u64> = lines.iter().map(|l| l.inode).collect();
            let gone: Vec<u64> = self
                .open
                .keys()
                .filter(|i| !listed.contains(*i))
                .copied()
                .collect();
            for inode in gone {
                if let Some(r) = self.open.remove(&inode) {
                    out.push(ended(r, now));
                }
            }
        }
    }

    /// Ends every socket still open (the collector is stopping).
    pub fn shutdown(&mut self, now: UnixNanos, out: &mut Vec<Record>) {
        out.extend(self.open.drain().map(|(_, r)| ended(r, now)));
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

fn ended(mut r: ListenerRecord, now: UnixNanos) -> Record {
    r.phase = FlowPhase::End;
    r.ended_at = Some(now);
    Record::Listener(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{NoAttribution, Owner};
    use crate::model::Attribution;
    use proptest::prelude::*;

    const TABLE: &[u8] = b"sk               RefCnt Type Proto  Iface R Rmem   User   Inode
00000000581ead98 3      3    0003   0     1 0      0      16057431
0000000000000000 3      2    0800   2     1 0      1000   77
";

    #[test]
    fn the_table_parses_field_by_field() {
        let mut lines = Vec::new();
        assert_eq!(parse_packet_table(TABLE, &mut lines), 0);
        assert_eq!(
            lines,
            [
                PacketLine {
                    sock_type: 3,
                    ethertype: 0x0003,
                    ifindex: 0,
                    uid: 0,
                    inode: 16057431
                },
                PacketLine {
                    sock_type: 2,
                    ethertype: 0x0800,
                    ifindex: 2,
                    uid: 1000,
                    inode: 77
                },
            ]
        );
        let empty = b"sk               RefCnt Type Proto  Iface R Rmem   User   Inode\n";
        assert_eq!(parse_packet_table(empty, &mut lines), 0);
        assert!(lines.is_empty());
        assert_eq!(
            parse_packet_table(b"h\nx 1 2 zz 0 1 0 0 5\n1 2\n", &mut lines),
            2
        );
    }

    /// Owns every socket of uid 1000 by pid 42.
    struct ByUid;
    impl OwnerLookup for ByUid {
        fn refresh(&mut self, _: &[u64], _: UnixNanos, _: &mut Vec<Record>) {}
        fn owner(&mut self, _: u64, uid: Option<u32>, _: Option<Owner>) -> Owner {
            match uid {
                Some(1000) => Owner {
                    pid: Some(42),
                    start_time: Some(7),
                    attribution: Attribution::Uid,
                },
                _ => Owner::NONE,
            }
        }
    }

    #[test]
    fn a_socket_starts_once_and_ends_when_gone_from_a_whole_read() {
        let mut lines = Vec::new();
        parse_packet_table(TABLE, &mut lines);
        let mut table = PacketTable::default();
        let mut out = Vec::new();
        table.observe(&lines, true, 10, &mut ByUid, &mut out);
        assert_eq!(out.len(), 2);
        let Record::Listener(l) = &out[1] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (l.cookie, l.protocol, l.phase, l.pid, l.attribution),
            (
                COOKIE_BIT | 77,
                Protocol::Packet,
                FlowPhase::Start,
                Some(42),
                Attribution::Uid
            )
        );
        assert_eq!(l.packet.map(|p| p.ethertype), Some(0x0800));
        out.clear();
        table.observe(&lines, true, 20, &mut ByUid, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // A truncated read concludes nothing from what it did not list.
        table.observe(&lines[..1], false, 30, &mut ByUid, &mut out);
        assert!(out.is_empty(), "{out:?}");
        table.observe(&lines[..1], true, 40, &mut ByUid, &mut out);
        assert!(
            matches!(&out[..], [Record::Listener(l)] if l.phase == FlowPhase::End && l.inode == Some(77) && l.ended_at == Some(40)),
            "{out:?}"
        );
        out.clear();
        table.shutdown(50, &mut out);
        assert!(
            matches!(&out[..], [Record::Listener(l)] if l.phase == FlowPhase::End && l.inode == Some(16057431)),
            "{out:?}"
        );
        assert!(table.is_empty());
        // Without attribution the socket still starts, with its uid.
        out.clear();
        table.observe(&lines, true, 60, &mut NoAttribution, &mut out);
        assert!(out
            .iter()
            .all(|r| matches!(r, Record::Listener(l) if l.pid.is_none() && l.uid.is_some())));
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut lines = Vec::new();
            let _ = parse_packet_table(&bytes, &mut lines);
        }
    }
}
