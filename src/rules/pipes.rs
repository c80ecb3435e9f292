//! Pipes between a source's processes, from process records (fd access): who writes each
//! pipe (stdout) and who reads it (stdin), and which names the rules ask about reach it
//! through filters (`curl … | base64 -d | sh`: the shell is fed by a download, and the
//! download feeds a shell).
//!
//! Hostile input: a workload chooses how many pipes it shows. The table is bounded; past
//! the bound the oldest pipe is forgotten (counted), never the whole table, so a flood of
//! pipes cannot make the engine forget the download it shows next.

use std::collections::VecDeque;
use std::sync::Arc;

use super::lang::names;
use super::stateful::HashMap as FastMap;
use crate::model::{ProcessRecord, UnixNanos};

/// Pipes remembered per source; past it the oldest goes first.
pub(super) const PIPES_MAX: usize = 65_536;

/// Filter links remembered per source, over all pipes (each filter links two pipes, once
/// each way); past it the oldest pipes go first, with their links (counted). Not a bound
/// per pipe: a workload chooses how many filters read or write a pipe, and a few short
/// ones (`sleep 0 | true` in the group reading curl's pipe) pushed out the one filter
/// between the download and its shell.
const LINKS_MAX: usize = 4 * PIPES_MAX;

/// The names whose passage through pipes the rules ask about, found in the loaded rules'
/// conditions (`proc.stdin_writer_comm in (downloaders)`): writers' names are carried
/// downstream, readers' names upstream. At most 64 of each (a bit each); the rest are
/// seen only as a pipe's direct end.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tracked {
    pub writers: Vec<Vec<u8>>,
    pub readers: Vec<Vec<u8>>,
}

impl Tracked {
    pub(super) fn new(mut writers: Vec<Vec<u8>>, mut readers: Vec<Vec<u8>>) -> Tracked {
        for names in [&mut writers, &mut readers] {
            names.sort();
            names.dedup();
            names.truncate(64);
        }
        Tracked { writers, readers }
    }

    fn bit(names: &[Vec<u8>], comm: &[u8]) -> u64 {
        names
            .iter()
            .position(|n| n.as_slice() == comm)
            .map_or(0, |i| 1 << i)
    }
}

/// One source's pipes by inode, oldest first in `order`.
#[derive(Default)]
pub(super) struct Pipes {
    pipes: FastMap<u64, Pipe>,
    order: VecDeque<u64>,
    tracked: Arc<Tracked>,
    /// Filter links held by the pipes in the table.
    links: usize,
    /// Pipes forgotten at the bounds, so far.
    pub(super) evicted: u64,
}

#[derive(Default)]
struct Pipe {
    /// The first process seen writing / reading it (a forked end that never exec'd gives
    /// way to one that did): the shell setting up a pipeline comes before its commands.
    /// Kept after the process exits: a download of a few ms is over before the shell it
    /// fed is read.
    writer: Option<End>,
    reader: Option<End>,
    /// Tracked writers' names (bits of `Tracked::writers`) that feed it, directly or
    /// through filters.
    fed: u64,
    /// Tracked readers' names (bits of `Tracked::readers`) it feeds, directly or through
    /// filters.
    feeds: u64,
    /// The pipes filters reading this one write to, and those filters writing this one
    /// read from.
    down: Vec<u64>,
    up: Vec<u64>,
}

/// One end of a pipe: its process and name.
struct End {
    pid: u32,
    start_time: UnixNanos,
    comm: [u8; 16],
    comm_len: u8,
    /// A fork still running its parent's image: the shell setting up a pipeline before
    /// each side execs is not yet what runs there.
    forked_no_exec: bool,
    /// A shell or interpreter whose program is on its command line (`python3 -c …`,
    /// `awk '…'`, `bash script.sh`), or a process whose command line was not read: as a
    /// pipe's reader it is not named as what the pipe feeds.
    program_in_argv: bool,
}

impl End {
    fn of(p: &ProcessRecord, program_in_argv: bool) -> End {
        let mut comm = [0u8; 16];
        let len = p.comm.len().min(comm.len());
        comm[..len].copy_from_slice(&p.comm[..len]);
        End {
            pid: p.pid,
            start_time: p.start_time,
            comm,
            comm_len: len as u8,
            forked_no_exec: p.forked_no_exec,
            program_in_argv,
        }
    }

    /// Its name, once it has exec'd, when it is another process than `p`. So `curl | sh`
    /// is judged once, on whichever side's exec the engine sees last.
    fn other_than(&self, p: &ProcessRecord) -> Option<&[u8]> {
        let other = (self.pid, self.start_time) != (p.pid, p.start_time);
        (other && !self.forked_no_exec).then(|| &self.comm[..usize::from(self.comm_len)])
    }

    /// Whether `p` should take this end's place: the same process again (its exec), or an
    /// exec'd process where a fork that never exec'd stood.
    fn yields_to(&self, p: &ProcessRecord) -> bool {
        (self.pid, self.start_time) == (p.pid, p.start_time)
            || (self.forked_no_exec && !p.forked_no_exec)
    }
}

/// Which way a name travels.
#[derive(Clone, Copy)]
enum Way {
    /// Writers' names, to the pipes filters write.
    Down,
    /// Readers' names, to the pipes filters read.
    Up,
}

impl Pipes {
    /// Uses these tracked names from now on; what was carried under other names is
    /// forgotten (the bits would mean other names).
    pub(super) fn track(&mut self, tracked: &Arc<Tracked>) {
        if *self.tracked != **tracked {
            self.pipes.clear();
            self.order.clear();
            self.links = 0;
        }
        self.tracked = Arc::clone(tracked);
    }

    pub(super) fn observe(&mut self, p: &ProcessRecord) {
        let (stdin, stdout) = (p.stdin_pipe, p.stdout_pipe);
        // Both pipes exist before either is touched: making room for one cannot take the
        // other (both are the newest).
        for pipe in [stdout, stdin].into_iter().flatten() {
            self.make_room_for(pipe);
        }
        for (pipe, way) in [(stdout, Way::Down), (stdin, Way::Up)] {
            if let Some(pipe) = pipe {
                self.end(pipe, p, way);
            }
        }
        // A filter, exec'd or a fork (a subshell's `while read` passes data on too).
        if let (Some(inp), Some(out)) = (stdin, stdout) {
            if inp != out {
                self.link(inp, out);
            }
        }
    }

    /// `p` writes (`Way::Down`) or reads (`Way::Up`) the pipe: its end, and its name
    /// carried on when the rules ask about it (exec'd processes only: a fork still runs
    /// its parent's image, whatever its name).
    fn end(&mut self, at: u64, p: &ProcessRecord, way: Way) {
        // Only a reader's program matters (what the pipe feeds), and only to the rules. A
        // process read while exiting shows no command line: whether it exec'd a shell or
        // is a fork of one (a version shim's `$(…)` subshell) cannot be told, and it is
        // not named either.
        let program_in_argv = matches!(way, Way::Up)
            && (p.argv.is_empty() || names::program_in_argv(&p.comm, &p.argv));
        let pipe = self.pipes.entry(at).or_default();
        let (end, names) = match way {
            Way::Down => (&mut pipe.writer, &self.tracked.writers),
            Way::Up => (&mut pipe.reader, &self.tracked.readers),
        };
        match end {
            Some(end) if !end.yields_to(p) => {}
            _ => *end = Some(End::of(p, program_in_argv)),
        }
        let bit = Tracked::bit(names, &p.comm);
        if !p.forked_no_exec && bit != 0 && !program_in_argv {
            self.carry(at, bit, way);
        }
    }

    /// Forgets the oldest pipe when a new one would pass the bound.
    fn make_room_for(&mut self, pipe: u64) {
        if self.pipes.contains_key(&pipe) {
            return;
        }
        while self.pipes.len() >= PIPES_MAX && self.evict_oldest() {}
        self.pipes.insert(pipe, Pipe::default());
        self.order.push_back(pipe);
    }

    /// Forgets the oldest pipe and its links; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        let Some(oldest) = self.order.pop_front() else {
            return false;
        };
        if let Some(pipe) = self.pipes.remove(&oldest) {
            self.links -= pipe.down.len() + pipe.up.len();
            self.evicted += 1;
        }
        true
    }

    /// Records a filter reading `inp` and writing `out`, and carries what each side
    /// already knows across it.
    fn link(&mut self, inp: u64, out: u64) {
        for (at, to, way) in [(inp, out, Way::Down), (out, inp, Way::Up)] {
            let Some(pipe) = self.pipes.get_mut(&at) else {
                continue;
            };
            let links = match way {
                Way::Down => &mut pipe.down,
                Way::Up => &mut pipe.up,
            };
            // A filter's records come one after another (its fork, its exec): a repeat
            // further back only spends the bound (`contains` would cost a long list's
            // length per record).
            if links.last() != Some(&to) {
                links.push(to);
                self.links += 1;
            }
        }
        while self.links > LINKS_MAX && self.evict_oldest() {}
        let fed = self.pipes.get(&inp).map_or(0, |p| p.fed);
        self.carry(out, fed, Way::Down);
        let feeds = self.pipes.get(&out).map_or(0, |p| p.feeds);
        self.carry(inp, feeds, Way::Up);
    }

    /// Adds names to a pipe and, through filters, to the pipes beyond it, however many
    /// filters away (a bound on the distance was a workload's way out: nine `cat`s between
    /// curl and sh). New names only: each pipe gains each name once, so a name's walk
    /// ends, and all walks together cost each pipe's links once per name.
    fn carry(&mut self, start: u64, bits: u64, way: Way) {
        if bits == 0 {
            return;
        }
        let mut work = vec![(start, bits)];
        while let Some((at, bits)) = work.pop() {
            let Some(pipe) = self.pipes.get_mut(&at) else {
                continue;
            };
            let (known, next) = match way {
                Way::Down => (&mut pipe.fed, &pipe.down),
                Way::Up => (&mut pipe.feeds, &pipe.up),
            };
            let new = bits & !*known;
            if new == 0 {
                continue;
            }
            *known |= new;
            work.extend(next.iter().map(|&n| (n, new)));
        }
    }

    /// The names of what writes `p`'s stdin pipe: its first writer, then the tracked
    /// writers feeding it through filters.
    pub(super) fn writers_of<'a>(&'a self, p: &ProcessRecord) -> Names<'a> {
        let pipe = p.stdin_pipe.and_then(|i| self.pipes.get(&i));
        Names {
            first: pipe.and_then(|x| x.writer.as_ref()?.other_than(p)),
            names: &self.tracked.writers,
            bits: pipe.map_or(0, |x| x.fed),
        }
    }

    /// The names of what reads `p`'s stdout pipe: its first reader, then the tracked
    /// readers it feeds through filters.
    pub(super) fn readers_of<'a>(&'a self, p: &ProcessRecord) -> Names<'a> {
        let pipe = p.stdout_pipe.and_then(|o| self.pipes.get(&o));
        Names {
            first: pipe.and_then(|x| {
                x.reader
                    .as_ref()
                    .filter(|r| !r.program_in_argv)?
                    .other_than(p)
            }),
            names: &self.tracked.readers,
            bits: pipe.map_or(0, |x| x.feeds),
        }
    }
}

/// The names at the other side of a pipe: its first end, then the tracked names carried
/// to it.
pub struct Names<'a> {
    first: Option<&'a [u8]>,
    names: &'a [Vec<u8>],
    bits: u64,
}

impl<'a> Names<'a> {
    /// The one name a message shows: a tracked name carried here (the download behind a
    /// filter), else the first end.
    pub fn telling(self) -> Option<&'a [u8]> {
        let tracked = (self.bits != 0)
            .then(|| self.names.get(self.bits.trailing_zeros() as usize))
            .flatten();
        tracked.map(Vec::as_slice).or(self.first)
    }
}

impl<'a> Iterator for Names<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.bits == 0 {
            return None;
        }
        let i = self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        self.names.get(i).map(Vec::as_slice)
    }
}
