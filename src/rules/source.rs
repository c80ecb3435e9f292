//! What the engine knows of each source (collector) beyond the record at hand: its
//! processes by pid, which of them own a listener, and which share a pipe. A record's
//! rules see it through a [`SourceView`], read only when a rule asks (whether a process's
//! parent serves, what writes to a shell's stdin), never for every record.

use super::listening::Listening;
use super::stateful::HashMap as FastMap;
use crate::model::{ProcessRecord, UnixNanos};

/// One source's processes, listeners and pipes.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) procs: FastMap<u32, ProcessRecord>,
    pub(super) listening: Listening,
    pub(super) pipes: Pipes,
}

/// Slots by source: a slot per collector id, so a record whose source is the previous
/// record's reaches its processes without hashing the id.
#[derive(Default)]
pub(super) struct SourceProcs {
    pub(super) slots: FastMap<String, usize>,
    pub(super) by_slot: Vec<Slot>,
}

impl SourceProcs {
    pub(super) fn slot(&mut self, source: &str) -> usize {
        let next = self.by_slot.len();
        let slot = *self.slots.entry_ref(source).or_insert(next);
        if slot == next {
            self.by_slot.push(Slot::default());
        }
        slot
    }
}

/// A source's knowledge, lent to the evaluation of one of its records.
#[derive(Clone, Copy)]
pub struct SourceView<'a> {
    slot: &'a Slot,
}

impl<'a> SourceView<'a> {
    pub(super) fn new(slot: &'a Slot) -> Self {
        SourceView { slot }
    }

    /// Whether the process's parent (or the forks it descends from) owns a listener.
    pub(crate) fn parent_listens(self, p: &ProcessRecord) -> bool {
        self.slot.listening.parent_listens(p)
    }

    /// The name of the process whose stdout is `p`'s stdin pipe (`curl` in `curl … | sh`).
    pub(crate) fn stdin_writer(self, p: &ProcessRecord) -> Option<&'a [u8]> {
        self.slot.pipes.writers.get(&p.stdin_pipe?)?.other_than(p)
    }

    /// The name of the process whose stdin is `p`'s stdout pipe (`sh` in `curl … | sh`).
    pub(crate) fn stdout_reader(self, p: &ProcessRecord) -> Option<&'a [u8]> {
        self.slot.pipes.readers.get(&p.stdout_pipe?)?.other_than(p)
    }
}

/// Beyond this many pipe ends per source the knowledge starts over (ends still open are
/// learned again from their processes' next records).
const PIPES_MAX: usize = 65_536;

/// Pipe ends by pipe inode, from process records (fd access): the first process seen
/// writing (stdout) and reading (stdin) each pipe, as its latest record shows it. The
/// first, because a pipeline's shell comes before the commands it runs, which inherit its
/// stdin; kept after it exits, because a download of a few ms is over before the shell
/// it fed is read.
#[derive(Default)]
pub(super) struct Pipes {
    writers: FastMap<u64, End>,
    readers: FastMap<u64, End>,
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
}

impl End {
    fn of(p: &ProcessRecord) -> End {
        let mut comm = [0u8; 16];
        let len = p.comm.len().min(comm.len());
        comm[..len].copy_from_slice(&p.comm[..len]);
        End {
            pid: p.pid,
            start_time: p.start_time,
            comm,
            comm_len: len as u8,
            forked_no_exec: p.forked_no_exec,
        }
    }

    /// Its name, once it has exec'd, when it is another process than `p`. So `curl | sh`
    /// is judged once, on whichever side's exec the engine sees last.
    fn other_than(&self, p: &ProcessRecord) -> Option<&[u8]> {
        let other = (self.pid, self.start_time) != (p.pid, p.start_time);
        (other && !self.forked_no_exec).then(|| &self.comm[..usize::from(self.comm_len)])
    }
}

impl Pipes {
    pub(super) fn observe(&mut self, p: &ProcessRecord) {
        for (ends, pipe) in [
            (&mut self.writers, p.stdout_pipe),
            (&mut self.readers, p.stdin_pipe),
        ] {
            let Some(pipe) = pipe else { continue };
            if ends.len() >= PIPES_MAX && !ends.contains_key(&pipe) {
                ends.clear();
            }
            let end = ends.entry(pipe).or_insert_with(|| End::of(p));
            // The same process again (its exec): what it runs now.
            if (end.pid, end.start_time) == (p.pid, p.start_time) {
                *end = End::of(p);
            }
        }
    }
}
