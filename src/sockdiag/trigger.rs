//! The cheap change check that decides when to dump. Two per-namespace signals, read every
//! few milliseconds: the socket counts of `/proc/net/sockstat{,6}` (`inuse`, ≈4 µs a read) and
//! the TCP open counters of `/proc/net/snmp` (`ActiveOpens`, `PassiveOpens`, ≈20 µs). Only a
//! rise wakes a dump: a new socket is what a dump must catch alive (uid, inode for
//! attribution), while a close reaches us through its destroy event with final counters.
//! The open counters only ever grow, so a connection that opens in the same tick as another
//! closes cannot net out, as the socket counts alone would: both are read on every check,
//! busy or idle (an idle check every 100 ms spends ≈ 0.03 % of a core on them). A check
//! that read only the socket counts while idle missed a new connection whose socket count
//! a close had netted out.
//! (Not sockstat's `alloc`: it counts the whole node and would wake every pod's collector
//! for every other pod's socket.)

use std::fs::File;
use std::io;

/// Reads the counters into reused buffers and says whether any of them rose.
pub struct Trigger {
    sources: Vec<Source>,
    scratch: Vec<u64>,
}

struct Source {
    file: File,
    buf: Vec<u8>,
    kind: Kind,
    last: Vec<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `/proc/net/sockstat{,6}`: the `inuse` socket counts.
    Sockstat,
    /// `/proc/net/snmp`: the Tcp open counters (five times the cost of sockstat to read).
    Snmp,
}

/// The files whose counters move when sockets open.
const SOURCES: [(&str, Kind); 3] = [
    ("/proc/net/sockstat", Kind::Sockstat),
    ("/proc/net/sockstat6", Kind::Sockstat),
    ("/proc/net/snmp", Kind::Snmp),
];

impl Trigger {
    pub fn new() -> io::Result<Self> {
        let mut sources = Vec::new();
        for (path, kind) in SOURCES {
            match File::open(path) {
                Ok(file) => sources.push(Source {
                    file,
                    buf: Vec::new(),
                    kind,
                    last: Vec::new(),
                }),
                // No IPv6 in the namespace: nothing to watch there.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let mut trigger = Trigger {
            sources,
            scratch: Vec::new(),
        };
        trigger.changed()?;
        Ok(trigger)
    }

    /// How much the socket counts or the TCP open counters rose since they were last read
    /// (0: none did): of each file, the sum of its counters' rises, and of the files the
    /// largest. Roughly the sockets opened since (a loopback connection is two): how many
    /// new sockets their owners' fd tables should show before the dump names them.
    pub fn changed(&mut self) -> io::Result<u64> {
        let mut rise = 0;
        for source in &mut self.sources {
            let n = crate::sys::proc::reread(&source.file, &mut source.buf)?;
            self.scratch.clear();
            match source.kind {
                Kind::Sockstat => extract_inuse(&source.buf[..n], &mut self.scratch),
                Kind::Snmp => extract_tcp_opens(&source.buf[..n], &mut self.scratch),
            }
            rise = rise.max(risen(&source.last, &self.scratch));
            std::mem::swap(&mut source.last, &mut self.scratch);
        }
        Ok(rise)
    }
}

/// The sum of the counters' rises (falls are closes: not counted). A different shape (a
/// protocol line appeared or vanished) counts as a rise of one: better one dump too many
/// than a socket missed.
fn risen(last: &[u64], current: &[u64]) -> u64 {
    if last.len() != current.len() {
        return 1;
    }
    current
        .iter()
        .zip(last)
        .map(|(now, before)| now.saturating_sub(*before))
        .fold(0, u64::saturating_add)
}

/// The `inuse` count of every protocol line of sockstat text.
pub fn extract_inuse(text: &[u8], out: &mut Vec<u64>) {
    for line in text.split(|&b| b == b'\n') {
        let mut words = line.split(|&b| b == b' ');
        while let Some(word) = words.next() {
            if word == b"inuse" {
                out.extend(words.next().map(parse_u64));
                break;
            }
        }
    }
}

/// `ActiveOpens` and `PassiveOpens` of snmp's Tcp lines (a header line of names, then one
/// of values); the other protocols' lines are skipped unread.
pub fn extract_tcp_opens(text: &[u8], out: &mut Vec<u64>) {
    let mut tcp = text
        .split(|&b| b == b'\n')
        .filter(|line| line.starts_with(b"Tcp: "));
    let (Some(header), Some(values)) = (tcp.next(), tcp.next()) else {
        return;
    };
    for (name, value) in header
        .split(|&b| b == b' ')
        .zip(values.split(|&b| b == b' '))
    {
        if name == b"ActiveOpens" || name == b"PassiveOpens" {
            out.push(parse_u64(value));
        }
    }
}

fn parse_u64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |acc, b| {
            acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn extracts_socket_counts_and_tcp_opens() {
        let sockstat =
            b"sockets: used 150\nTCP: inuse 5 orphan 0 tw 2 alloc 9 mem 1\nUDP: inuse 3 mem 2\n";
        let snmp = b"Tcp: RtoAlgorithm RtoMin ActiveOpens PassiveOpens\nTcp: 1 200 41 17\nUdp: InDatagrams\nUdp: 5\n";
        let mut out = Vec::new();
        extract_inuse(sockstat, &mut out);
        extract_tcp_opens(snmp, &mut out);
        assert_eq!(out, vec![5, 3, 41, 17]);
    }

    #[test]
    fn only_a_rise_counts() {
        assert_eq!(risen(&[5, 3, 41, 17], &[5, 4, 41, 17]), 1);
        assert_eq!(risen(&[5, 3, 41, 17], &[4, 3, 42, 18]), 2, "rises add up");
        assert_eq!(risen(&[5, 3, 41, 17], &[4, 2, 41, 17]), 0);
        assert_eq!(risen(&[5, 3], &[5, 3, 0]), 1);
    }

    #[test]
    fn a_new_connection_moves_the_trigger() {
        let mut trigger = Trigger::new().expect("proc files");
        let _ = trigger.changed().expect("read");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let _client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        assert!(trigger.changed().expect("read") > 0);
    }

    /// A first read, then one connection closes and another opens, so the socket counts
    /// stay level; returns the read after it.
    fn read_across_a_close_and_an_open() -> u64 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let old = TcpStream::connect(addr).expect("connect");
        let (old_peer, _) = listener.accept().expect("accept");
        let mut trigger = Trigger::new().expect("proc files");
        let _ = trigger.changed().expect("read");
        drop(old);
        drop(old_peer);
        let _new = TcpStream::connect(addr).expect("connect");
        let _new_peer = listener.accept().expect("accept");
        trigger.changed().expect("read")
    }

    #[test]
    fn an_open_and_a_close_in_one_tick_do_not_net_out() {
        assert!(read_across_a_close_and_an_open() > 0);
    }
}
