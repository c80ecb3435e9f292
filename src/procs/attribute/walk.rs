//! A whole fd pass on several threads (`--once`): every table of a list of pids read, the
//! work shared out by fd rather than by table. A pod whose one server holds most sockets
//! has one table of tens of thousands of fds among hundreds of small ones; split by pid, a
//! walker got that table alone while the others idled (and fixed halves of six equal
//! tables left one walker 59 % of the fds). Here each walker takes the next pid; a table
//! larger than [`PART_FDS`] is cut into ranges of fd numbers that any walker takes, and the
//! walk starts as soon as the pids are listed, beside whatever the caller does meanwhile
//! (the process sweep).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::procs::parse;
use crate::sys::proc::FdDir;

use super::FdsRead;

/// fd numbers per part of a large table: about 5 ms of `readlinkat`, so walkers end within
/// a few ms of each other, and few enough parts that sharing them out costs nothing.
pub(super) const PART_FDS: u64 = 2048;

/// A whole pass under way; [`WholeWalk::join`] waits for its tables.
pub struct WholeWalk {
    walkers: Vec<std::thread::JoinHandle<Vec<Walked>>>,
    shared: Arc<Shared>,
}

struct Shared {
    proc_root: PathBuf,
    pids: Vec<u32>,
    next_pid: AtomicUsize,
    /// Walkers between taking a pid and queueing its parts: the others wait for them
    /// before they stop, so the last large table is still shared.
    opening: AtomicUsize,
    parts: Mutex<Vec<Part>>,
    /// Every table cut into parts, finished by `join`.
    split: Mutex<Vec<Arc<SplitTable>>>,
}

struct SplitTable {
    pid: u32,
    dir: FdDir,
}

/// A range of fd numbers of a large table.
struct Part {
    table: Arc<SplitTable>,
    fds: std::ops::Range<u64>,
}

enum Walked {
    Whole(u32, std::io::Result<FdsRead>),
    Part {
        pid: u32,
        answered: u64,
        socket_inodes: Vec<u64>,
    },
}

impl WholeWalk {
    /// Starts reading the fd table of each of `pids` under `proc_root` on `threads`
    /// walkers.
    pub(super) fn start(proc_root: PathBuf, pids: Vec<u32>, threads: usize) -> WholeWalk {
        let shared = Arc::new(Shared {
            proc_root,
            pids,
            next_pid: AtomicUsize::new(0),
            opening: AtomicUsize::new(0),
            parts: Mutex::new(Vec::new()),
            split: Mutex::new(Vec::new()),
        });
        let walkers = (0..threads.clamp(1, shared.pids.len().max(1)))
            .filter_map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("fd-walk-{i}"))
                    .spawn(move || shared.walk())
                    // No thread: the others (or `join`, reading what is left) do its share.
                    .ok()
            })
            .collect();
        WholeWalk { walkers, shared }
    }

    /// Waits for the walkers; each pid's table as read (its fd count and socket inodes),
    /// or the error that stopped its read.
    pub(super) fn join(self) -> Vec<(u32, std::io::Result<FdsRead>)> {
        let mut walked: Vec<Walked> = Vec::new();
        for walker in self.walkers {
            walked.extend(walker.join().unwrap_or_default());
        }
        // Whatever no walker took (none could start, or one panicked): read here.
        walked.extend(self.shared.walk());
        let split = std::mem::take(
            &mut *self
                .shared
                .split
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let mut tables = Vec::with_capacity(self.shared.pids.len());
        let mut parts: std::collections::HashMap<u32, FdsRead> = Default::default();
        for w in walked {
            match w {
                Walked::Whole(pid, table) => tables.push((pid, table)),
                Walked::Part {
                    pid,
                    answered,
                    socket_inodes,
                } => {
                    let t = parts.entry(pid).or_default();
                    t.count += answered;
                    t.socket_inodes.extend(socket_inodes);
                }
            }
        }
        for table in split {
            let read = parts.remove(&table.pid).unwrap_or_default();
            // The parts covered fds 0 to the open count; a sparse table (or one that changed
            // meanwhile) has fds above, read as a single walk reads them.
            tables.push((table.pid, finish(&table.dir, table.dir.open_fds(), read)));
        }
        tables
    }
}

/// `read`, the fds of `dir` below `probed_below`, completed with the rest of the table.
fn finish(dir: &FdDir, probed_below: u64, mut read: FdsRead) -> std::io::Result<FdsRead> {
    read.count = dir.finish(probed_below, read.count, |link| {
        if let Some(inode) = parse::socket_inode(link) {
            read.socket_inodes.push(inode);
        }
    })?;
    Ok(read)
}

impl Shared {
    /// One walker: parts of large tables first, then the next pid, until both run out.
    fn walk(&self) -> Vec<Walked> {
        let mut walked = Vec::new();
        loop {
            let part = self
                .parts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            if let Some(part) = part {
                walked.push(part.walk());
                continue;
            }
            self.opening.fetch_add(1, Ordering::AcqRel);
            let next = self.next_pid.fetch_add(1, Ordering::AcqRel);
            let Some(&pid) = self.pids.get(next) else {
                self.opening.fetch_sub(1, Ordering::AcqRel);
                // Another walker may be about to queue a large table's parts.
                if self.opening.load(Ordering::Acquire) == 0
                    && self
                        .parts
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .is_empty()
                {
                    return walked;
                }
                std::thread::yield_now();
                continue;
            };
            let first = self.open(pid, &mut walked);
            self.opening.fetch_sub(1, Ordering::AcqRel);
            if let Some(part) = first {
                walked.push(part.walk());
            }
        }
    }

    /// Opens `pid`'s table: a small one is read at once; a large one is cut into parts,
    /// all queued but the first, which is returned for the caller to walk.
    fn open(&self, pid: u32, walked: &mut Vec<Walked>) -> Option<Part> {
        let path = self.proc_root.join(pid.to_string()).join("fd");
        let dir = match FdDir::open(&path) {
            Ok(dir) => dir,
            Err(e) => {
                walked.push(Walked::Whole(pid, Err(e)));
                return None;
            }
        };
        let open_fds = dir.open_fds();
        if open_fds <= PART_FDS {
            walked.push(Walked::Whole(pid, finish(&dir, 0, FdsRead::default())));
            return None;
        }
        let table = Arc::new(SplitTable { pid, dir });
        self.split
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(table.clone());
        let mut parts: Vec<Part> = (PART_FDS..open_fds)
            .step_by(PART_FDS as usize)
            .map(|from| Part {
                table: table.clone(),
                fds: from..(from + PART_FDS).min(open_fds),
            })
            .collect();
        self.parts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append(&mut parts);
        Some(Part {
            table,
            fds: 0..PART_FDS,
        })
    }
}

impl Part {
    fn walk(self) -> Walked {
        let mut socket_inodes = Vec::new();
        let answered = self.table.dir.probe(self.fds, |link| {
            if let Some(inode) = parse::socket_inode(link) {
                socket_inodes.push(inode);
            }
        });
        Walked::Part {
            pid: self.table.pid,
            answered,
            socket_inodes,
        }
    }
}
