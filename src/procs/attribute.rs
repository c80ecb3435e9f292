//! Socket → process attribution from fd tables, incremental: only processes whose open-fd
//! count changed are rescanned (`stat("/proc/<pid>/fd").st_size` is the count on Linux ≥ 6.2),
//! processes started since the last poll are read first (a socket can be dumped before its
//! process was polled), then the other holders of sockets (a count can stay level across a
//! close and an open), and a full pass runs only when an inode is still unresolved after
//! that. Processes whose
//! fd table is unreadable (another uid without ptrace access) are skipped and counted; their
//! sockets fall back to the listener's owner, or to the only process of the socket's uid.

// Keys are kernel inode numbers and pids, not attacker-chosen strings: the fast hash is safe.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs;

use crate::attribution::{Owner, OwnerLookup, PrefetchReach};
use crate::model::{Attribution, Record, UnixNanos};
use crate::procs::monitor::ProcessMonitor;
use crate::procs::parse;
use crate::telemetry::collector::{AttributionMissed, ProcReadDenied};
use crate::telemetry::InternalEvent;

mod prefetch;
mod walk;

pub use walk::WholeWalk;

/// What attribution knows of one process's fd table.
#[derive(Debug, Clone)]
pub(crate) struct FdTable {
    /// Open-fd count at the last read; `None` until the table is read.
    pub count: Option<u64>,
    /// How big the table looked before it was first read, so that the biggest are read
    /// first: status `FDSize` (its capacity), then, for a table above the smallest
    /// capacity, the open count from one stat.
    pub size_hint: u64,
    /// Whether `size_hint` is that stat's count (taken once per image).
    pub size_counted: bool,
    /// Attribution passes run before this image was seen: one seen since the last pass is
    /// the likeliest owner of a new socket, one an earlier pass left unread is not.
    pub passes_before_seen: u64,
    /// The pass in which the count last changed: recent changers are read first when a
    /// new socket needs its owner.
    pub changed_pass: u64,
    /// The last pass whose read found a socket in the table (0: none yet). A client between
    /// two connections holds none, and is still where the next one will be.
    pub socket_pass: u64,
    /// The last pass whose read found a socket the previous read of this table did not
    /// (0: none yet; a first read is no sign of a new socket): the processes opening
    /// connections now, whose new sockets a rise of the trigger most likely is.
    pub gained_pass: u64,
    /// When reading the table was last denied. A process can become readable (a privilege
    /// drop: `setpriv`, `su`, a runtime starting the app as its user), so a denied table is
    /// tried again after an exec and after `FD_DENIED_RETRY`.
    pub denied: Option<std::time::Instant>,
}

/// How long a denied fd table is left alone before it is tried again.
const FD_DENIED_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

impl FdTable {
    /// The table of an image not read yet, with status' capacity, seen after `passes`.
    pub fn unread(capacity: u64, passes: u64) -> FdTable {
        FdTable {
            count: None,
            size_hint: capacity,
            size_counted: false,
            passes_before_seen: passes,
            changed_pass: 0,
            socket_pass: 0,
            gained_pass: 0,
            denied: None,
        }
    }

    /// Whether the table is worth reading: never denied, or denied long enough ago.
    pub fn maybe_readable(&self) -> bool {
        self.denied.is_none_or(|at| at.elapsed() >= FD_DENIED_RETRY)
    }
}

impl InodeIndex {
    /// Releases what `pid` held at its last scan: the entries stay for the grace period.
    fn forget(&mut self, pid: u32) {
        let now = std::time::Instant::now();
        for inode in self.held.remove(&pid).unwrap_or_default() {
            if self.released.len() >= RELEASED_MAX {
                self.expire_one();
            }
            self.released.push_back((now, inode, pid));
        }
    }

    /// Drops released entries older than the grace period, unless held again since.
    fn expire_released(&mut self) {
        while self
            .released
            .front()
            .is_some_and(|(at, _, _)| at.elapsed() >= RELEASE_GRACE)
        {
            self.expire_one();
        }
    }

    fn expire_one(&mut self) {
        let Some((_, inode, pid)) = self.released.pop_front() else {
            return;
        };
        // Socket inodes are not reused while the socket lives, so a released inode is only
        // held again by another process (a shared socket), which its next scan re-adds.
        if self.owners.get(&inode).is_some_and(|o| o.0 == pid) {
            self.owners.remove(&inode);
        }
    }

    /// Records what `pid` holds now; what it held before and no longer does is released.
    fn replace_held(&mut self, pid: u32, now_held: Vec<u64>) {
        if let Some(before) = self.held.remove(&pid) {
            let current: HashSet<u64> = now_held.iter().copied().collect();
            let at = std::time::Instant::now();
            for inode in before.into_iter().filter(|i| !current.contains(i)) {
                if self.released.len() >= RELEASED_MAX {
                    self.expire_one();
                }
                self.released.push_back((at, inode, pid));
            }
        }
        self.held.insert(pid, now_held);
    }

    /// Sockets currently indexed (bounded by the sockets open in readable fd tables).
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
}

/// The tick trace of one attribution pass: sockets wanted and left unknown, tables read,
/// wall time.
fn trace_refresh(
    index: &InodeIndex,
    unknown: usize,
    (started, read, wanted): (std::time::Instant, u64, usize),
) {
    tracing::trace!(
        target: "procflow::tick",
        wanted,
        unknown,
        closed_unread = index.closed_unread,
        read = index.tables_read - read,
        us = started.elapsed().as_micros() as u64,
        "owners read after the dump"
    );
}

/// `stat("/proc/<pid>/fd").st_size`: the open-fd count on Linux ≥ 6.2.
fn open_fd_count(proc_root: &std::path::Path, pid: u32) -> Option<u64> {
    fs::metadata(proc_root.join(pid.to_string()).join("fd"))
        .map(|m| m.len())
        .ok()
}

/// Sockets still unknown that a pass asks the kernel about, one lookup each; past it the
/// pass reads on (a first pass, every socket of the pod unknown, reads every table anyway).
const PROBED_MAX: usize = 64;

/// Leaves out of `unknown` the sockets no fd holds any more (`still_held` false).
fn probe_unknown(
    unknown: &mut HashSet<u64>,
    still_held: &mut dyn FnMut(u64) -> bool,
    index: &mut InodeIndex,
) {
    if unknown.is_empty() || unknown.len() > PROBED_MAX {
        return;
    }
    let before = unknown.len();
    unknown.retain(|&inode| still_held(inode));
    index.closed_unread += (before - unknown.len()) as u64;
}

/// The shortest gap between two full passes of an incremental attribution.
const FULL_PASS_GAP: std::time::Duration = std::time::Duration::from_secs(1);

/// Tables of socket holders up to this many fds are read first by every pass, whatever
/// their count: tens of µs each, and where a churn's new sockets are.
const SMALL_HOLDER_TABLE: u64 = 256;

/// A new fd table's capacity (`NR_OPEN_DEFAULT`): a process whose status shows no more holds
/// at most this many fds.
const SMALLEST_FD_TABLE: u64 = 64;

const RELEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
const RELEASED_MAX: usize = 500_000;

/// uid → its only live process (pid, start time), `None` when it has several.
type UidOwners = HashMap<u32, Option<(u32, UnixNanos)>>;

/// inode → owning (pid, start time).
#[derive(Debug, Default)]
pub struct InodeIndex {
    owners: HashMap<u64, (u32, UnixNanos)>,
    /// The socket inodes each process held at its last scan.
    held: HashMap<u32, Vec<u64>>,
    /// Inodes a process no longer holds, kept for a grace period: a connection that closed
    /// just before the dump that reported it (or before its destroy event) is still
    /// attributed to the process that held it at the previous scan. After the grace the
    /// entry goes, so the index stays bounded by the sockets open in the last seconds.
    released: std::collections::VecDeque<(std::time::Instant, u64, u32)>,
    /// Whether `st_size` of /proc/<pid>/fd counts fds on this kernel (≥ 6.2).
    fd_count_works: Option<bool>,
    pub full_passes: u64,
    /// When the last full pass ran, and the passes left out since they came too soon.
    last_full_pass: Option<std::time::Instant>,
    pub full_passes_deferred: u64,
    /// uid → its only live process (`None`: several), as of the monitor's `live_changes`.
    only_process_of_uid: (Option<u64>, UidOwners),
    pub incremental_passes: u64,
    /// fd tables read (each a directory walk and one readlink per fd).
    pub tables_read: u64,
    pub misses: u64,
    /// Sockets whose owner was not yet read when a pass found them closed (no fd left to
    /// read): not looked for further.
    pub closed_unread: u64,
    /// Reads of likely owners at a rise of the trigger, before the dump.
    pub prefetches: u64,
}

impl ProcessMonitor {
    /// Finds the owners of `wanted` (inodes first seen in a dump), the likeliest first and
    /// stopping once every one is known: the small tables of processes that held sockets,
    /// the most recent holders first, whatever their count (a client closes one connection
    /// and opens the next: its count stays level) — a connection of a few ms is found only
    /// if its table is read before it closes, so these come before anything slower; then
    /// the processes started since the last poll (read now, their START records to `out`);
    /// then the tables whose open-fd count changed — new processes (biggest first), holders
    /// of sockets (most recently changed first), tables an earlier pass left unread; then
    /// the big tables of holders; every readable table only if some are still unknown.
    /// Nothing is read when nothing is wanted.
    pub fn refresh_inodes(&mut self, wanted: &[u64], now: UnixNanos, out: &mut Vec<Record>) {
        self.refresh_inodes_probed(wanted, &mut |_| true, now, out);
    }

    /// [`ProcessMonitor::refresh_inodes`]; after the small tables of socket holders,
    /// `still_held` is asked of each socket still unknown (a kernel lookup of that socket,
    /// µs), and one no fd holds any more is no longer looked for: every table would be read
    /// for it. Under a churn of short connections that search held the engine for tens of
    /// ms after a dump, while the next connections opened and closed unseen.
    pub fn refresh_inodes_probed(
        &mut self,
        wanted: &[u64],
        still_held: &mut dyn FnMut(u64) -> bool,
        now: UnixNanos,
        out: &mut Vec<Record>,
    ) {
        let mut index = std::mem::take(&mut self.index);
        let fd_count_works = self.tidy(&mut index);
        // Sized up front: a first pass wants every socket of the pod, and growing a map of
        // 100k entries by doubling rehashes it a dozen times.
        let mut unknown: HashSet<u64> =
            HashSet::with_capacity_and_hasher(wanted.len(), Default::default());
        unknown.extend(
            wanted
                .iter()
                .copied()
                .filter(|i| !index.owners.contains_key(i)),
        );
        if unknown.is_empty() {
            self.index = index;
            return;
        }
        index.owners.reserve(unknown.len());
        // For `RUST_LOG=procflow::tick=trace`: what the pass wanted and what it cost.
        let trace = (std::time::Instant::now(), index.tables_read, unknown.len());
        // Sockets that closed between the dump and now are in no table: asked first (µs
        // each) and again after the small tables, before anything slower.
        probe_unknown(&mut unknown, still_held, &mut index);
        index.incremental_passes += 1;
        let pass = index.incremental_passes;
        let mut scanned = HashSet::default();
        // Those that opened sockets most recently first: a daemon holding the same sockets
        // for hours is read last.
        let mut small_holders: Vec<(u64, u64, u32)> = self
            .live
            .iter()
            .filter_map(|(&pid, p)| {
                let fd = &p.fd;
                (fd.socket_pass > 0
                    && fd.maybe_readable()
                    && fd.count.is_some_and(|c| c <= SMALL_HOLDER_TABLE))
                .then_some((fd.gained_pass, fd.socket_pass, pid))
            })
            .collect();
        small_holders.sort_unstable_by(|a, b| b.cmp(a));
        for (_, _, pid) in small_holders {
            if unknown.is_empty() {
                break;
            }
            self.scan_fds(pid, pass, &mut index);
            scanned.insert(pid);
            for inode in index.held.get(&pid).into_iter().flatten() {
                unknown.remove(inode);
            }
        }
        probe_unknown(&mut unknown, still_held, &mut index);
        if unknown.is_empty() {
            trace_refresh(&index, unknown.len(), trace);
            self.index = index;
            return;
        }
        // The tick polled processes before dumping, but one started in between may own a
        // new socket: a new process has no fd count yet, so the pass below reads it.
        self.index = index;
        self.scan_since_last(false, now, out);
        let mut index = std::mem::take(&mut self.index);
        let proc_root = self.proc_root().to_path_buf();
        // Best first, from a max-heap keyed (class, size, last change). Never read, the
        // biggest tables first: after a start most sockets sit in a few servers' tables. An
        // image seen since the last pass is the likeliest owner of a new socket; one an
        // earlier pass left unread (it stopped once every socket it wanted was found) comes
        // after the known holders.
        let mut heap: BinaryHeap<(Reverse<u8>, u64, u64, Reverse<u32>)> = self
            .readable_except(&scanned)
            .map(|(pid, p)| {
                let fd = &p.fd;
                let (class, size) = if fd.count.is_none() && fd.passes_before_seen + 1 >= pass {
                    (0, fd.size_hint)
                } else if fd.count.is_none() {
                    (3, fd.size_hint)
                } else if index.held.get(&pid).is_some_and(|h| !h.is_empty()) {
                    (1, 0)
                } else {
                    (2, 0)
                };
                (Reverse(class), size, fd.changed_pass, Reverse(pid))
            })
            .collect();
        while let Some((class, size, changed_pass, Reverse(pid))) = heap.pop() {
            let Some(fd) = self.live.get_mut(&pid).map(|p| &mut p.fd) else {
                continue;
            };
            // A never-read table's size is its capacity from status: free, but only an upper
            // bound (inherited across fork, never shrinking). Above the smallest capacity,
            // a stat sizes it exactly, once per image, when it reaches the top; it goes back
            // in at that size. So the tables are read in the order of their real sizes while
            // only those near the top are ever stat'ed.
            if fd_count_works && fd.count.is_none() && !fd.size_counted && size > SMALLEST_FD_TABLE
            {
                fd.size_hint = open_fd_count(&proc_root, pid).unwrap_or(size);
                fd.size_counted = true;
                heap.push((class, fd.size_hint, changed_pass, Reverse(pid)));
                continue;
            }
            let changed = match fd.count {
                // Never read: nothing to compare a count with.
                None => true,
                Some(known) if fd_count_works => {
                    open_fd_count(&proc_root, pid).is_some_and(|count| count != known)
                }
                Some(_) => true,
            };
            if changed {
                self.scan_fds(pid, pass, &mut index);
                scanned.insert(pid);
                // What this table holds is known now (to it, or to an older holder).
                for inode in index.held.get(&pid).into_iter().flatten() {
                    unknown.remove(inode);
                }
                if unknown.is_empty() {
                    break;
                }
            }
        }
        // A big table that closed one socket and opened another shows the same count: the
        // holders of sockets, most recently changed first, are read before every other one.
        if !unknown.is_empty() {
            let mut holders: Vec<(u64, u32)> = index
                .held
                .iter()
                .filter(|(pid, held)| !held.is_empty() && !scanned.contains(*pid))
                .filter_map(|(&pid, _)| {
                    let p = self.live.get(&pid)?;
                    p.fd.maybe_readable().then_some((p.fd.changed_pass, pid))
                })
                .collect();
            holders.sort_unstable_by(|a, b| b.cmp(a));
            for (_, pid) in holders {
                self.scan_fds(pid, pass, &mut index);
                scanned.insert(pid);
                for inode in index.held.get(&pid).into_iter().flatten() {
                    unknown.remove(inode);
                }
                if unknown.is_empty() {
                    break;
                }
            }
        }
        // A socket closed before its owner was read is in no table: under a churn of short
        // connections a full pass after each would read every table hundreds of times a
        // second and starve the engine. One per `FULL_PASS_GAP`; the others are counted.
        let full_pass_due = index
            .last_full_pass
            .is_none_or(|at| at.elapsed() >= FULL_PASS_GAP);
        if !unknown.is_empty() && !full_pass_due {
            index.full_passes_deferred += 1;
        }
        if !unknown.is_empty() && full_pass_due {
            index.full_passes += 1;
            index.last_full_pass = Some(std::time::Instant::now());
            // Whoever was just read is not read twice: an fd table is the pass's whole cost.
            let rest: Vec<u32> = self.readable_except(&scanned).map(|(pid, _)| pid).collect();
            for pid in rest {
                self.scan_fds(pid, pass, &mut index);
            }
        }
        trace_refresh(&index, unknown.len(), trace);
        self.index = index;
    }

    /// The live processes whose fd table may be readable, but for those in `read`.
    fn readable_except<'a>(
        &'a self,
        read: &'a HashSet<u32>,
    ) -> impl Iterator<Item = (u32, &'a crate::procs::monitor::Proc)> + 'a {
        self.live
            .iter()
            .filter(move |(pid, p)| p.fd.maybe_readable() && !read.contains(*pid))
            .map(|(&pid, p)| (pid, p))
    }

    /// Whether the open-fd count of a table shows in its directory's size (checked once),
    /// after the processes gone since the last pass took their sockets out of the index and
    /// the released sockets past their grace left it.
    fn tidy(&self, index: &mut InodeIndex) -> bool {
        let fd_count_works = *index.fd_count_works.get_or_insert_with(|| {
            fs::metadata(self.proc_root().join("self/fd"))
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        });
        let gone: Vec<u32> = index
            .held
            .keys()
            .filter(|pid| !self.live.contains_key(pid))
            .copied()
            .collect();
        for pid in gone {
            index.forget(pid);
        }
        index.expire_released();
        fd_count_works
    }

    /// Reads every readable fd table into the index: a snapshot wants the owner of every
    /// socket and knows none of their inodes before its dump, which then finds each owner
    /// without a pass of its own.
    pub fn index_every_table(&mut self) {
        let pids = self
            .live
            .iter()
            .filter(|(_, p)| p.fd.maybe_readable())
            .map(|(&pid, _)| pid)
            .collect();
        let walk = self.start_whole_walk(pids);
        self.index_whole_walk(walk);
    }

    /// Starts reading the fd table of every pid /proc lists now, before the monitor has
    /// read the processes (`--once` sweeps meanwhile); [`Self::index_whole_walk`] keeps the
    /// tables of the processes the sweep found.
    pub fn start_walk_of_every_pid(&self) -> WholeWalk {
        self.start_whole_walk(self.list_pids())
    }

    /// Starts reading the fd tables of `pids` on as many threads as there are cores; the
    /// caller may go on (with the process sweep) meanwhile. The walks are nearly all system
    /// calls on tables no one else holds: spread over the cores, they finish in a fraction
    /// of the time.
    fn start_whole_walk(&self, pids: Vec<u32>) -> WholeWalk {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_WALK_THREADS);
        WholeWalk::start(self.proc_root().to_path_buf(), pids, threads)
    }

    /// Puts the tables of a whole walk into the index, for the processes the monitor knows
    /// (a pid that exited meanwhile is left out); a readable process the walk did not cover
    /// (one started after its pids were listed) is read here.
    pub fn index_whole_walk(&mut self, walk: WholeWalk) {
        let mut index = std::mem::take(&mut self.index);
        index.incremental_passes += 1;
        index.full_passes += 1;
        let pass = index.incremental_passes;
        let tables = walk.join();
        // One allocation for the whole index, not a rehash at every doubling.
        let sockets = tables
            .iter()
            .filter_map(|(_, t)| Some(t.as_ref().ok()?.socket_inodes.len()))
            .sum();
        index.owners.reserve(sockets);
        let mut walked = HashSet::default();
        for (pid, table) in tables {
            let readable = self.live.get(&pid).is_some_and(|p| p.fd.maybe_readable());
            if readable && walked.insert(pid) {
                self.index_fd_table(pid, table, pass, &mut index);
            }
        }
        let missed: Vec<u32> = self.readable_except(&walked).map(|(pid, _)| pid).collect();
        for pid in missed {
            self.scan_fds(pid, pass, &mut index);
        }
        self.index = index;
    }

    /// fd tables read by attribution passes so far.
    pub fn fd_tables_read(&self) -> u64 {
        self.index.tables_read
    }

    /// Reads `pid`'s fd table into the index. Returns how many of its sockets the index did
    /// not know.
    fn scan_fds(&mut self, pid: u32, pass: u64, index: &mut InodeIndex) -> usize {
        if !self.live.contains_key(&pid) {
            return 0;
        }
        let table = read_fd_table(self.proc_root(), pid);
        self.index_fd_table(pid, table, pass, index)
    }

    /// Puts one fd table, as read, into the index. Returns how many of its sockets the
    /// index did not know.
    fn index_fd_table(
        &mut self,
        pid: u32,
        walked: std::io::Result<FdsRead>,
        pass: u64,
        index: &mut InodeIndex,
    ) -> usize {
        let Some(p) = self.live.get_mut(&pid) else {
            return 0;
        };
        let start_time = p.record.start_time;
        index.tables_read += 1;
        if walked.is_ok() {
            p.fd.denied = None;
        }
        let (count, inodes) = match walked {
            // The walk's own directory fd is not one the process holds.
            Ok(t) if Some(pid) == self.own_pid => (t.count.saturating_sub(1), t.socket_inodes),
            Ok(t) => (t.count, t.socket_inodes),
            Err(e) => {
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    p.fd.denied = Some(std::time::Instant::now());
                    ProcReadDenied.emit();
                }
                return 0;
            }
        };
        // The walk's own count is what st_size of the fd directory reports (kernel ≥ 6.2),
        // for the table as it was read: no second stat per process.
        if p.fd.count != Some(count) {
            p.fd.changed_pass = pass;
        }
        p.fd.count = Some(count);
        if !inodes.is_empty() {
            p.fd.socket_pass = pass;
        }
        let mut unknown = 0;
        for &inode in &inodes {
            // A socket shared across fork (a shell's /dev/tcp fd inherited by its children,
            // a pre-fork server's listener) belongs to its oldest holder: the one that most
            // likely created it.
            index
                .owners
                .entry(inode)
                .and_modify(|owner| {
                    if start_time < owner.1 {
                        *owner = (pid, start_time);
                    }
                })
                .or_insert_with(|| {
                    unknown += 1;
                    (pid, start_time)
                });
        }
        // A socket new to the index in a table read before: this process opens sockets.
        if unknown > 0 && index.held.contains_key(&pid) {
            p.fd.gained_pass = pass;
        }
        index.replace_held(pid, inodes);
        unknown
    }

    /// The only live process with this uid, if there is exactly one. Asked once per socket
    /// whose fd table is unreadable, so the answer for every uid is kept until a process
    /// starts, execs or exits.
    fn only_process_of(&mut self, uid: u32) -> Option<(u32, UnixNanos)> {
        let changes = self.live_changes;
        let by_uid = &mut self.index.only_process_of_uid;
        if by_uid.0 != Some(changes) {
            by_uid.1.clear();
            for p in self.live.values() {
                by_uid
                    .1
                    .entry(p.record.uid)
                    .and_modify(|only| *only = None)
                    .or_insert(Some((p.record.pid, p.record.start_time)));
            }
            by_uid.0 = Some(changes);
        }
        by_uid.1.get(&uid).copied().flatten()
    }
}

/// Threads reading fd tables at once for a whole index (`--once`).
const MAX_WALK_THREADS: usize = 4;

/// One process's fd table as read: how many fds it held and which were sockets.
#[derive(Default)]
struct FdsRead {
    count: u64,
    socket_inodes: Vec<u64>,
}

fn read_fd_table(proc_root: &std::path::Path, pid: u32) -> std::io::Result<FdsRead> {
    let dir = proc_root.join(pid.to_string()).join("fd");
    let mut socket_inodes = Vec::new();
    let count = crate::sys::proc::for_each_fd_link(&dir, |link| {
        if let Some(inode) = parse::socket_inode(link) {
            socket_inodes.push(inode);
        }
    })?;
    Ok(FdsRead {
        count,
        socket_inodes,
    })
}

impl OwnerLookup for ProcessMonitor {
    fn refresh(&mut self, new_inodes: &[u64], now: UnixNanos, out: &mut Vec<Record>) {
        self.refresh_probed(new_inodes, &mut |_| true, now, out);
    }

    fn refresh_probed(
        &mut self,
        new_inodes: &[u64],
        still_held: &mut dyn FnMut(u64) -> bool,
        now: UnixNanos,
        out: &mut Vec<Record>,
    ) {
        self.refresh_inodes_probed(new_inodes, still_held, now, out);
        // A socket is judged with its owner's current image: an exec since the owner was
        // last read (a shim's `exec python3` that then listens) goes out before the socket.
        let owners: Vec<u32> = new_inodes
            .iter()
            .filter_map(|inode| self.index.owners.get(inode).map(|owner| owner.0))
            .collect();
        self.recheck_owners(owners, now, out);
    }

    fn prefetch(
        &mut self,
        expected: u64,
        reach: PrefetchReach,
        now: UnixNanos,
        out: &mut Vec<Record>,
    ) {
        self.prefetch_owners(expected, reach, now, out);
    }

    fn owner(&mut self, inode: u64, uid: Option<u32>, listener: Option<Owner>) -> Owner {
        if let Some(&(pid, start_time)) = self.index.owners.get(&inode) {
            if self
                .live
                .get(&pid)
                .is_some_and(|p| p.record.start_time == start_time)
            {
                return Owner {
                    pid: Some(pid),
                    start_time: Some(start_time),
                    attribution: Attribution::Fd,
                };
            }
        }
        self.index.misses += 1;
        AttributionMissed.emit();
        if let Some(owner) = listener.filter(Owner::is_known) {
            return Owner {
                attribution: Attribution::Listener,
                ..owner
            };
        }
        if let Some((pid, start_time)) = uid.and_then(|u| self.only_process_of(u)) {
            return Owner {
                pid: Some(pid),
                start_time: Some(start_time),
                attribution: Attribution::Uid,
            };
        }
        Owner::NONE
    }
}

#[cfg(test)]
mod tests;
