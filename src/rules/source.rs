//! What the engine knows of each source (collector) beyond the record at hand: its
//! processes by pid, which of them own a listener, and which share a pipe
//! ([`super::pipes`]). A record's
//! rules see it through a [`SourceView`], read only when a rule asks (whether a process's
//! parent serves, what writes to a shell's stdin), never for every record.

use std::sync::Arc;

use super::listening::Listening;
use super::pipes::{Names, Pipes, Tracked};
use super::stateful::HashMap as FastMap;
use crate::model::ProcessRecord;

/// One source's processes, listeners and pipes.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) procs: FastMap<u32, ProcessRecord>,
    /// Per pid, the start time and comm of the image the process ran before its last exec
    /// (`cargo run` becomes the program it built, in place).
    pub(super) exec_from: FastMap<u32, (u64, Vec<u8>)>,
    pub(super) listening: Listening,
    pub(super) pipes: Pipes,
}

/// Slots by source: a slot per collector id, so a record whose source is the previous
/// record's reaches its processes without hashing the id.
#[derive(Default)]
pub(super) struct SourceProcs {
    pub(super) slots: FastMap<String, usize>,
    pub(super) by_slot: Vec<Slot>,
    /// The names the loaded rules ask pipes about.
    tracked: Arc<Tracked>,
}

impl SourceProcs {
    pub(super) fn slot(&mut self, source: &str) -> usize {
        let next = self.by_slot.len();
        let slot = *self.slots.entry_ref(source).or_insert(next);
        if slot == next {
            let mut new = Slot::default();
            new.pipes.track(&self.tracked);
            self.by_slot.push(new);
        }
        slot
    }

    /// The names the loaded rules ask pipes about, for every source.
    pub(super) fn track(&mut self, tracked: Tracked) {
        self.tracked = Arc::new(tracked);
        for slot in &mut self.by_slot {
            slot.pipes.track(&self.tracked);
        }
    }

    /// Pipes and filter links forgotten at their bounds, over all sources, so far.
    pub(super) fn pipes_evicted(&self) -> u64 {
        self.by_slot.iter().map(|s| s.pipes.evicted).sum()
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

    /// The comm of the image `p` ran before its last exec, as its records said.
    pub(crate) fn exec_from(self, p: &ProcessRecord) -> Option<&'a [u8]> {
        self.slot
            .exec_from
            .get(&p.pid)
            .filter(|(start, _)| *start == p.start_time)
            .map(|(_, comm)| comm.as_slice())
    }

    /// The names of what writes `p`'s stdin pipe (`curl` in `curl … | sh`), also through
    /// filters (`curl … | base64 -d | sh`) for the names the rules ask about.
    pub(crate) fn stdin_writers(self, p: &ProcessRecord) -> Names<'a> {
        self.slot.pipes.writers_of(p)
    }

    /// The names of what reads `p`'s stdout pipe (`sh` in `curl … | sh`), also through
    /// filters for the names the rules ask about.
    pub(crate) fn stdout_readers(self, p: &ProcessRecord) -> Names<'a> {
        self.slot.pipes.readers_of(p)
    }

    /// The command lines of `p` and its running siblings (children of the same parent),
    /// in the order they started, joined by ` | `: a pipeline's commands run side by side
    /// under one shell, so this is the pipeline as far as it can be told without reading
    /// its pipes (the siblings nearest `p`, [`PIPELINE_MAX`] at most).
    pub(crate) fn pipeline(self, p: &ProcessRecord) -> Vec<u8> {
        let mut siblings: Vec<&ProcessRecord> = self
            .slot
            .procs
            .values()
            .filter(|q| q.ppid == p.ppid && q.parent_start_time == p.parent_start_time)
            .collect();
        siblings.sort_unstable_by_key(|q| (q.start_time, q.pid));
        let at = siblings
            .iter()
            .position(|q| q.pid == p.pid)
            .unwrap_or_default();
        let from = at.saturating_sub(PIPELINE_MAX / 2);
        let mut out = Vec::new();
        for (i, q) in siblings.iter().skip(from).take(PIPELINE_MAX).enumerate() {
            if i > 0 {
                out.extend_from_slice(b" | ");
            }
            out.extend_from_slice(&q.argv.join(&b' '));
        }
        out
    }
}

/// How many siblings a pipeline is told from (a server's hundred workers are not one).
pub(crate) const PIPELINE_MAX: usize = 8;
