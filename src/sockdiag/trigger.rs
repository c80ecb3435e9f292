//! The cheap change check that decides when to dump. Two per-namespace signals, read every
//! few milliseconds: the socket counts of `/proc/net/sockstat{,6}` (`inuse`, ≈4 µs a read) and
//! the TCP open counters of `/proc/net/snmp` (`ActiveOpens`, `PassiveOpens`, ≈20 µs). Only a
//! rise wakes a dump: a new socket is what a dump must catch alive (uid, inode for
//! attribution), while a close reaches us through its destroy event with final counters.
//! The open counters only ever grow, so a connection that opens in the same tick as another
//! closes cannot net out, as the socket counts alone would.
//! (Not sockstat's `alloc`: it counts the whole node and would wake every pod's collector
//! for every other pod's socket.)

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

/// Reads the counters into reused buffers and says whether any of them rose.
pub struct Trigger {
    files: Vec<(File, Vec<u8>)>,
    last: Vec<u64>,
    current: Vec<u64>,
}

/// The files whose counters move when sockets open.
const SOURCES: [&str; 3] = [
    "/proc/net/sockstat",
    "/proc/net/sockstat6",
    "/proc/net/snmp",
];

impl Trigger {
    pub fn new() -> io::Result<Self> {
        let mut files = Vec::new();
        for path in SOURCES {
            match File::open(path) {
                Ok(f) => files.push((f, Vec::with_capacity(4096))),
                // No IPv6 in the namespace: nothing to watch there.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let mut trigger = Trigger {
            files,
            last: Vec::new(),
            current: Vec::new(),
        };
        trigger.read()?;
        trigger.last = trigger.current.clone();
        Ok(trigger)
    }

    /// True when a socket count or an open counter rose since the previous call.
    pub fn changed(&mut self) -> io::Result<bool> {
        self.read()?;
        let rose = rose(&self.last, &self.current);
        std::mem::swap(&mut self.current, &mut self.last);
        Ok(rose)
    }

    fn read(&mut self) -> io::Result<()> {
        self.current.clear();
        for (file, buf) in &mut self.files {
            buf.clear();
            file.seek(SeekFrom::Start(0))?;
            file.read_to_end(buf)?;
            extract(buf, &mut self.current);
        }
        Ok(())
    }
}

/// Whether any counter grew. A different shape (a protocol line appeared or vanished) counts
/// as a rise: better one dump too many than a socket missed.
fn rose(last: &[u64], current: &[u64]) -> bool {
    last.len() != current.len() || current.iter().zip(last).any(|(now, before)| now > before)
}

/// Pulls the counters that rise with new sockets out of sockstat / snmp text:
/// `inuse` of every sockstat line, `ActiveOpens`/`PassiveOpens` of snmp's Tcp.
pub fn extract(text: &[u8], out: &mut Vec<u64>) {
    let mut tcp_header: Option<&[u8]> = None;
    for line in text.split(|&b| b == b'\n') {
        if line.starts_with(b"Tcp: ") {
            match tcp_header {
                None => tcp_header = Some(line),
                Some(header) => {
                    // Second Tcp line: values under the header's names.
                    for (name, value) in
                        header.split(|&b| b == b' ').zip(line.split(|&b| b == b' '))
                    {
                        if name == b"ActiveOpens" || name == b"PassiveOpens" {
                            out.push(parse_u64(value));
                        }
                    }
                }
            }
            continue;
        }
        let mut words = line.split(|&b| b == b' ').peekable();
        while let Some(word) = words.next() {
            if word == b"inuse" {
                if let Some(value) = words.peek() {
                    out.push(parse_u64(value));
                }
            }
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
        extract(sockstat, &mut out);
        extract(snmp, &mut out);
        assert_eq!(out, vec![5, 3, 41, 17]);
    }

    #[test]
    fn only_a_rise_counts() {
        assert!(rose(&[5, 3, 41, 17], &[5, 4, 41, 17]));
        assert!(rose(&[5, 3, 41, 17], &[4, 3, 42, 17]));
        assert!(!rose(&[5, 3, 41, 17], &[4, 2, 41, 17]));
        assert!(rose(&[5, 3], &[5, 3, 0]));
    }

    #[test]
    fn a_new_connection_moves_the_trigger() {
        let mut trigger = Trigger::new().expect("proc files");
        let _ = trigger.changed().expect("read");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let _client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        assert!(trigger.changed().expect("read"));
    }

    #[test]
    fn an_open_and_a_close_in_one_tick_do_not_net_out() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let old = TcpStream::connect(addr).expect("connect");
        let (old_peer, _) = listener.accept().expect("accept");
        let mut trigger = Trigger::new().expect("proc files");
        let _ = trigger.changed().expect("read");
        // Two sockets close and two open between reads: the socket counts stay level.
        drop(old);
        drop(old_peer);
        let _new = TcpStream::connect(addr).expect("connect");
        let _new_peer = listener.accept().expect("accept");
        assert!(trigger.changed().expect("read"));
    }
}
