//! The cheap change check that decides when to dump: the per-namespace socket counts of
//! `/proc/net/sockstat{,6}` (≈1 µs a read) move while a new socket is alive, so a dump right
//! after catches sockets that live only milliseconds, with the uid and inode that attribution
//! needs. (`/proc/net/snmp`'s open counters would also see connections that opened and closed
//! within one tick, but those are gone before any dump and reach us through their destroy
//! event anyway, and snmp costs ten times more to read.)

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

/// Reads the counters into reused buffers and says whether anything moved.
pub struct Trigger {
    files: Vec<(File, Vec<u8>)>,
    last: Vec<u64>,
    current: Vec<u64>,
}

/// The files and the fields of them that move when sockets open or close.
const SOURCES: [&str; 2] = ["/proc/net/sockstat", "/proc/net/sockstat6"];

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

    /// True when a socket count or an open counter changed since the previous call.
    pub fn changed(&mut self) -> io::Result<bool> {
        self.read()?;
        let changed = self.current != self.last;
        std::mem::swap(&mut self.current, &mut self.last);
        Ok(changed)
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

/// Pulls the counters that move with socket life out of sockstat / snmp text:
/// `inuse` and `alloc` of every sockstat line, `ActiveOpens`/`PassiveOpens` of snmp's Tcp.
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
            // `inuse` is per network namespace; `alloc` counts the whole node (it also wakes
            // a pod's collector for other pods' sockets, which in tests here makes up for
            // opens and closes that net out within one tick).
            if word == b"inuse" || word == b"alloc" {
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

    #[test]
    fn extracts_socket_counts_and_tcp_opens() {
        let sockstat =
            b"sockets: used 150\nTCP: inuse 5 orphan 0 tw 2 alloc 9 mem 1\nUDP: inuse 3 mem 2\n";
        let snmp = b"Tcp: RtoAlgorithm RtoMin ActiveOpens PassiveOpens\nTcp: 1 200 41 17\nUdp: InDatagrams\nUdp: 5\n";
        let mut out = Vec::new();
        extract(sockstat, &mut out);
        extract(snmp, &mut out);
        assert_eq!(out, vec![5, 9, 3, 41, 17]);
    }

    #[test]
    fn a_new_connection_moves_the_trigger() {
        let mut trigger = Trigger::new().expect("proc files");
        let _ = trigger.changed().expect("read");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let _client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        assert!(trigger.changed().expect("read"));
    }
}
