//! Which incident a record belongs to: the part of an alert group's key (and of an
//! unattributed record's state key) that makes one incident one alert, and two incidents
//! two alerts even within the re-emit interval.
//!
//! - A process with a controlling terminal: its session on that terminal (the session id,
//!   the terminal, and the session leader's start time when the lineage holds it), so a
//!   login's scripts starting shells on one terminal are one incident, and another login
//!   is another.
//! - Any other process: its process tree. A process whose ancestor the same rule hit
//!   joins that ancestor's tree (a reverse shell's login scripts, a payload's children);
//!   otherwise the tree is rooted at the highest ancestor of an unbroken run of forks (the
//!   same image and the same arguments: a shell's subshells, a payload's forked workers).
//!   Trees are named by pid and start time, so a reused pid is another tree, and a new
//!   execution under a process the rule did not hit (`python3 attack.py` under `python3
//!   harness.py`) is a tree of its own.
//! - A flow or listener whose owner is unknown: `na`, the socket's uid (and its pid when
//!   the collector named one the engine has not seen), and an epoch that moves on after
//!   [`UNATTRIBUTED_GAP`] without a record of that owner. Unattributed records never share
//!   a key with attributed ones, nor with each other across uids or across a quiet gap.
//!
//! The key is text appended to the group key; whoever stores groups (the aggregator's
//! alert groups) needs nothing else from this module.

use std::fmt::Write as _;

use super::lang::Ctx;
use super::stateful::HashMap as FastMap;
use crate::model::{ProcessRecord, Record, UnixNanos};

/// After this long without a record, an unattributed owner's next record starts a new
/// incident: the socket's owner cannot be told otherwise, and an hour-long window keyed on
/// "no process" would add one incident's bytes to the next one's.
pub const UNATTRIBUTED_GAP: UnixNanos = 30_000_000_000;

/// Bounds the remembered unattributed owners; beyond it the map starts over (the epochs
/// restart, so at worst a gap is not noticed once).
const OWNERS_MAX: usize = 65_536;

/// The epochs of unattributed owners, by source, uid and pid, and the tree each process a
/// rule hit belongs to, by rule, source, pid and start time. Rules and sources are
/// interned (a hit costs two lookups of short strings, no formatting or allocation).
#[derive(Default)]
pub(super) struct Incidents {
    owners: FastMap<OwnerKey, (u64, UnixNanos)>,
    trees: Trees,
    /// Rule ids and collector ids, as numbers.
    names: FastMap<String, u32>,
}

/// An unattributed socket's owner: (source, uid, pid).
type OwnerKey = (u32, Option<u32>, Option<u32>);

/// A process a rule hit: (rule, source, pid, start time).
type TreeKey = (u32, u32, u32, UnixNanos);

/// One hit's incident, found when the hit happens (trees and epochs move then) and
/// written into a key only when a key needs it: most hits of stateful rules fire nothing.
#[derive(Debug, Clone, Copy)]
pub(super) enum Incident {
    /// Audit records and the rest name no process: their group is their rule's.
    None,
    Session {
        tty: u32,
        sid: u32,
        leader: UnixNanos,
    },
    Tree(u32, UnixNanos),
    Unattributed {
        uid: Option<u32>,
        pid: Option<u32>,
        epoch: u64,
    },
}

impl Incident {
    /// Appends the incident's text to a key.
    pub(super) fn push(self, key: &mut String) {
        let _ = match self {
            Incident::None => Ok(()),
            Incident::Session { tty, sid, leader } => write!(key, "|tty:{tty}:sid:{sid}:{leader}"),
            Incident::Tree(pid, start) => write!(key, "|tree:{pid}:{start}"),
            Incident::Unattributed { uid, pid, epoch } => {
                write!(key, "|na:uid={uid:?}:pid={pid:?}:e{epoch}")
            }
        };
    }
}

impl Incidents {
    /// The incident of `rule`'s hit on `rec`. `rule` and `source` are numbers from
    /// [`Incidents::name`] (`source` tells collectors apart).
    pub(super) fn of(
        &mut self,
        rule: u32,
        source: u32,
        rec: &Record,
        ctx: &Ctx<'_>,
        now: UnixNanos,
    ) -> Incident {
        if let Some(p) = ctx.process {
            return match p.tty {
                Some(tty) => session(p, tty),
                None => {
                    let (pid, start) = self.tree_of(rule, source, p);
                    Incident::Tree(pid, start)
                }
            };
        }
        let (uid, pid) = match rec {
            Record::Flow(f) => (f.uid, f.pid),
            Record::Listener(l) => (l.uid, l.pid),
            _ => return Incident::None,
        };
        let owner = (source, uid, pid);
        if self.owners.len() >= OWNERS_MAX && !self.owners.contains_key(&owner) {
            self.owners.clear();
        }
        let entry = self.owners.entry(owner).or_insert((0, now));
        if now.saturating_sub(entry.1) > UNATTRIBUTED_GAP {
            entry.0 += 1;
        }
        entry.1 = now;
        Incident::Unattributed {
            uid,
            pid,
            epoch: entry.0,
        }
    }

    /// The number standing for a rule id or collector id (the map starts over past its
    /// bound, with the trees and owners keyed on the numbers).
    pub(super) fn name(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.names.get(name) {
            return n;
        }
        if self.names.len() >= OWNERS_MAX {
            self.names.clear();
            self.trees.clear();
            self.owners.clear();
        }
        let n = self.names.len() as u32;
        self.names.insert(name.to_owned(), n);
        n
    }

    /// The root of the tree `rule` hit in: the tree of the nearest ancestor it hit, else
    /// the top of the process's run of forks; remembered for its descendants.
    fn tree_of(&mut self, rule: u32, source: u32, p: &ProcessRecord) -> (u32, UnixNanos) {
        let root = p
            .ancestors
            .iter()
            .find_map(|a| self.trees.get(&(rule, source, a.pid, a.start_time)))
            .unwrap_or_else(|| fork_root(p));
        self.trees.insert((rule, source, p.pid, p.start_time), root);
        root
    }

    /// Processes' tree entries forgotten at the bound, so far.
    pub(super) fn trees_forgotten(&self) -> u64 {
        self.trees.forgotten
    }
}

/// The tree of each process a rule hit, in two generations: an entry read (a descendant
/// joining its tree) moves to the current one, and when the current one is full the
/// previous one is forgotten. So a tree still growing survives however many other hits a
/// busy host makes (stateful rules hit most process records); clearing the whole map
/// there split one apt-get's dpkg children into an alert each.
#[derive(Default)]
struct Trees {
    current: FastMap<TreeKey, (u32, UnixNanos)>,
    previous: FastMap<TreeKey, (u32, UnixNanos)>,
    forgotten: u64,
}

impl Trees {
    fn get(&mut self, key: &TreeKey) -> Option<(u32, UnixNanos)> {
        if let Some(root) = self.current.get(key) {
            return Some(*root);
        }
        let root = self.previous.remove(key)?;
        self.insert(*key, root);
        Some(root)
    }

    fn insert(&mut self, key: TreeKey, root: (u32, UnixNanos)) {
        if self.current.len() >= OWNERS_MAX / 2 && !self.current.contains_key(&key) {
            self.forgotten += self.previous.len() as u64;
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, root);
    }

    fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }
}

fn session(p: &ProcessRecord, tty: u32) -> Incident {
    let leader = std::iter::once((p.pid, p.start_time))
        .chain(p.ancestors.iter().map(|a| (a.pid, a.start_time)))
        .find(|(pid, _)| *pid == p.session_id)
        .map_or(0, |(_, start)| start);
    Incident::Session {
        tty,
        sid: p.session_id,
        leader,
    }
}

/// The highest ancestor of the process's unbroken run of forks (itself if none).
fn fork_root(p: &ProcessRecord) -> (u32, UnixNanos) {
    fn image<'a>(exe: Option<&'a [u8]>, comm: &'a [u8]) -> &'a [u8] {
        match exe {
            Some(e) => e.strip_suffix(b" (deleted)").unwrap_or(e),
            None => comm,
        }
    }
    let own = image(p.exe.as_deref(), &p.comm);
    p.ancestors
        .iter()
        .take_while(|a| a.pid > 1 && a.argv == p.argv && image(a.exe.as_deref(), &a.comm) == own)
        .last()
        .map_or((p.pid, p.start_time), |a| (a.pid, a.start_time))
}
