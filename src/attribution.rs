//! The contract between the flow table (sockets) and the process tracker: who owns a socket.
//!
//! The flow table calls [`OwnerLookup::refresh`] once per dump with the inodes it has not
//! seen before, then [`OwnerLookup::owner`] for each new socket. The process side decides
//! how (fd tables of processes whose fd count changed, processes started since its last
//! poll, the uid table, listeners).

use crate::model::{Attribution, Record, UnixNanos};

/// The process a socket belongs to, and how that was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Owner {
    pub pid: Option<u32>,
    pub start_time: Option<UnixNanos>,
    pub attribution: Attribution,
}

impl Owner {
    pub const NONE: Owner = Owner {
        pid: None,
        start_time: None,
        attribution: Attribution::None,
    };

    pub fn is_known(&self) -> bool {
        self.pid.is_some()
    }

    /// The owner of an accepted socket known only through `listener`, the owner of the
    /// listener it came from (`NONE` when that one is unknown too).
    pub fn through_listener(listener: Owner) -> Owner {
        Owner {
            attribution: if listener.is_known() {
                Attribution::Listener
            } else {
                Attribution::None
            },
            ..listener
        }
    }
}

/// Resolves socket inodes to processes.
pub trait OwnerLookup {
    /// Called once per dump with the inodes first seen in it, before any `owner` call for
    /// them, so that an implementation can rescan fd tables in one pass. A socket may be
    /// dumped before its process was polled: processes found while resolving are reported
    /// into `out`, ahead of the flows they own.
    fn refresh(&mut self, new_inodes: &[u64], now: UnixNanos, out: &mut Vec<Record>);

    /// [`OwnerLookup::refresh`], able to ask whether a socket (by inode) is still held by an
    /// fd: one closed since its dump is in no table, and looking for it reads every table,
    /// for nothing, while the sockets of the next dump wait.
    fn refresh_probed(
        &mut self,
        new_inodes: &[u64],
        _still_held: &mut dyn FnMut(u64) -> bool,
        now: UnixNanos,
        out: &mut Vec<Record>,
    ) {
        self.refresh(new_inodes, now, out);
    }

    /// The owner of a socket by inode (0 when the kernel gave none) and uid.
    /// `listener` is the owner of the local listener an inbound socket was accepted from,
    /// if any: the fallback when the fd table is not readable.
    fn owner(&mut self, inode: u64, uid: Option<u32>, listener: Option<Owner>) -> Owner;

    /// About `expected` sockets just opened and a dump will name them: read their likeliest
    /// owners now, while the sockets are still open (a connection of a few ms closes before
    /// a dump of a big connection hash ends). `reach` says how far to guess. Processes found
    /// are reported into `out`.
    fn prefetch(
        &mut self,
        _expected: u64,
        _reach: PrefetchReach,
        _now: UnixNanos,
        _out: &mut Vec<Record>,
    ) {
    }
}

/// How far a read of owners before a dump guesses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefetchReach {
    /// Only tables known to have grown since their last read (and processes never read):
    /// where the dump comes within a fraction of a ms, the pass after it finds the rest
    /// exactly, for the sockets still open. Without fd counts (before Linux 6.2) no table
    /// is known to have grown: read as `Likeliest`.
    Grown,
    /// Those, then a few earlier openers whose count stayed level (one that closed a
    /// connection and opened the next): the dump takes ms, and a socket of a few ms is gone
    /// before the pass after it.
    Likeliest,
}

/// Attributes nothing: for `--no-attribution` and tests of the socket side alone.
#[derive(Debug, Default)]
pub struct NoAttribution;

impl OwnerLookup for NoAttribution {
    fn refresh(&mut self, _new_inodes: &[u64], _now: UnixNanos, _out: &mut Vec<Record>) {}

    fn owner(&mut self, _inode: u64, _uid: Option<u32>, _listener: Option<Owner>) -> Owner {
        Owner::NONE
    }
}
