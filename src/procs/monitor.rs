//! Process discovery by polling /proc, cheaply: the last-pid field of /proc/loadavg moves
//! whenever the pid namespace allocates a pid, so a tick that sees it unchanged costs one
//! small read. Only then are new pids read; a slower sweep finds exits and execs of older
//! processes. Very young processes are re-checked on every tick for a short while, because
//! fork-then-exec changes the image without allocating a pid (and forks that still run
//! their parent's image for longer, until they exec or [`FORK_WATCH`] passes); after an
//! exec wake-up, every known process is (see `procs::image`, which also reads each record
//! from one image).
//!
//! Processes are keyed by (pid, start time). Exited ones stay as tombstones (bounded in count
//! and age) so the lineage of a short-lived chain resolves after its members are gone.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::model::{Ancestor, ProcessPhase, ProcessRecord, Record, Unavailable, UnixNanos};
use crate::procs::attribute::FdTable;
use crate::procs::image::ExecChecks;
use crate::procs::parse::{self, Stat};
use crate::telemetry::collector::ProcessStarted;
use crate::telemetry::InternalEvent;

#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// /proc of the pid namespace to watch.
    pub proc_root: PathBuf,
    /// Full sweep (exits, execs of older processes) at least this often.
    pub sweep_interval: Duration,
    /// Processes younger than this are re-read on every tick to catch fork-then-exec.
    pub young_age: Duration,
    pub tombstone_max: usize,
    pub tombstone_age: Duration,
    pub max_argv_bytes: usize,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            proc_root: PathBuf::from("/proc"),
            sweep_interval: Duration::from_millis(500),
            young_age: Duration::from_millis(50),
            tombstone_max: 10_000,
            tombstone_age: Duration::from_secs(600),
            max_argv_bytes: 64 * 1024,
        }
    }
}

/// Counters of what discovery saw and missed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStats {
    pub started: u64,
    pub execs: u64,
    pub exits: u64,
    pub scans: u64,
    pub sweeps: u64,
    /// New pids listed in /proc that exited before their `stat` was read: processes lost
    /// but for their pid. (A known process whose read fails has simply exited.)
    pub raced_exit: u64,
    /// exe / cwd / fd reads denied (ptrace access).
    pub permission_denied: u64,
    /// Pids allocated (loadavg) that were never seen as a process: threads, or processes
    /// that lived and died between two ticks.
    pub pids_unseen: u64,
    /// Records held for a command line that stayed empty (ARGV_WAIT) and went out so.
    pub argv_unsettled: u64,
    /// Records read again because the process exec'd while they were read.
    pub image_rereads: u64,
    /// Checks of every known process after an exec wake-up, and the execs they found.
    pub exec_checks: u64,
    pub execs_found_by_check: u64,
    /// Records that went out never read whole (the process exited or exec'd again first),
    /// whose executable did not match their name and was left out.
    pub exe_unverified: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Proc {
    pub record: ProcessRecord,
    /// The `stat` the record was read with: later reads are compared with it to find an
    /// exec (its start time tells a reused pid).
    pub image: Stat,
    /// The tick (`ProcessMonitor::ticks`) of the last read.
    pub read_tick: u64,
    /// What attribution knows of its fd table.
    pub fd: crate::procs::attribute::FdTable,
}

pub struct ProcessMonitor {
    pub(crate) config: ProcessConfig,
    boot_time_ns: u64,
    tick_ns: u64,
    /// When the monitor was made, in clock ticks since boot: a process started earlier
    /// is preexisting, its exec not witnessed. A process started in that same tick
    /// counts as new, so that exec rules judge it.
    started_ticks: u64,
    /// Keyed by pid (kernel-chosen): the fast hash is safe, and an attribution pass looks
    /// up an owner per socket.
    pub(crate) live: std::collections::HashMap<u32, Proc, foldhash::fast::RandomState>,
    tombstones: HashMap<(u32, UnixNanos), Tombstone>,
    tombstone_order: VecDeque<(Instant, (u32, UnixNanos))>,
    last_pid: Option<u32>,
    /// The last pid before the latest move of `last_pid`: a scan lists /proc from the pid
    /// after it. Not from the latest's: a pid shows in /proc only once its process is
    /// attached, µs after loadavg counts it, so one listed during that gap is listed again.
    scan_floor: Option<u32>,
    /// Whether /proc can be listed from a pid on ([`crate::sys::proc::pid_seek_works`]):
    /// a thread-per-connection server moves the last pid at every connection, and listing
    /// every process each time took a tenth of a churning collector's CPU. Checked at the
    /// first scan that would use it, not at start (`--once` never does; the check lists /proc).
    pid_seek: Option<bool>,
    /// The pid counter wraps past this (`/proc/sys/kernel/pid_max`), back to 300.
    pid_max: u32,
    last_sweep: Option<Instant>,
    loadavg: fs::File,
    loadavg_buf: Vec<u8>,
    pub(crate) buf: Vec<u8>,
    pub(crate) stats: ProcessStats,
    pub(crate) pod_uid_env: Option<String>,
    /// Processes started since the last tick, to count pids never seen.
    new_since_last: u64,
    pub(crate) index: crate::procs::attribute::InodeIndex,
    /// Judges stdio socketpairs relayed to a connection.
    pub(crate) relays: crate::procs::relay::Relays,
    /// This process's pid as the scanned /proc names it (none when /proc is another pid
    /// namespace's): walking its own fd table opens one fd more than it holds.
    pub(crate) own_pid: Option<u32>,
    /// Containers seen so far, and a process of each new one whose root is yet to be
    /// handed out (for exec watches in that container's filesystem).
    containers: HashSet<String>,
    new_container_pids: Vec<u32>,
    /// Processes whose START or EXEC record is held: read mid-exec, after the kernel set
    /// the new comm and before it set the new arguments, their command line was empty.
    pub(crate) held: Vec<(u32, Instant)>,
    /// Processes first seen within `young_age`, oldest first: re-read every tick without
    /// walking every live process (thousands in a big pod) to find them.
    young: VecDeque<(Instant, u32)>,
    /// Moves whenever a process starts, execs or exits (what derived views key on).
    pub(crate) live_changes: u64,
    /// Polls so far: a process read in this one is current.
    pub(crate) ticks: u64,
    pub(crate) exec_checks: ExecChecks,
}

/// A fork still running its parent's image is re-read on every tick for up to this long,
/// so that its exec is seen even where no exec wake-up comes (a static binary outside the
/// watched directories).
const FORK_WATCH: Duration = Duration::from_secs(1);

/// The kernel's ceiling for pid_max (64-bit), when the sysctl cannot be read.
const PID_MAX_LIMIT: u32 = 1 << 22;
/// Where the pid counter starts again after it wraps (the kernel's RESERVED_PIDS).
const RESERVED_PIDS: u32 = 300;

/// Pids handed out between two readings of the last pid, across a wrap of the counter.
fn pids_allocated(before: u32, after: u32, pid_max: u32) -> u64 {
    if after >= before {
        u64::from(after - before)
    } else {
        u64::from(pid_max.saturating_sub(before + 1))
            + u64::from(after.saturating_sub(RESERVED_PIDS) + 1)
    }
}

/// The pid a listing of new processes starts from: the one after `floor` (the last pid at
/// the look before the last), while the counter moved forward from `floor` through
/// `before` (the last look's) to `after` (now) by less than a quarter of `pid_max`. `None`
/// (list every process) after a wrap, a large move, or without a floor: a pid below the
/// floor may be new then.
fn listing_start(
    floor: Option<u32>,
    before: Option<u32>,
    after: Option<u32>,
    pid_max: u32,
) -> Option<u32> {
    let (floor, before, after) = (floor?, before?, after?);
    (floor < before
        && before < after
        && pids_allocated(floor, after, pid_max) < u64::from(pid_max / 4))
    .then(|| floor + 1)
}

/// An exited process, kept for the lineage of its descendants.
#[derive(Debug, Clone)]
struct Tombstone {
    ancestor: Ancestor,
    ppid: u32,
    parent_start_time: Option<UnixNanos>,
}

impl ProcessMonitor {
    pub fn new(config: ProcessConfig) -> io::Result<Self> {
        let boot_time_ns =
            procfs::boot_time_secs().map_err(|e| io::Error::other(e.to_string()))? * 1_000_000_000;
        let ticks = procfs::ticks_per_second().max(1);
        let loadavg = fs::File::open(config.proc_root.join("loadavg"))?;
        let pid_max = fs::read_to_string(config.proc_root.join("sys/kernel/pid_max"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(PID_MAX_LIMIT);
        let own_pid = fs::read_link(config.proc_root.join("self"))
            .ok()
            .and_then(|p| p.to_str()?.parse().ok());
        let started_ticks = u64::try_from(
            crate::sys::clock::since_boot().as_nanos() * u128::from(ticks) / 1_000_000_000,
        )
        .unwrap_or(u64::MAX);
        Ok(ProcessMonitor {
            config,
            boot_time_ns,
            tick_ns: 1_000_000_000 / ticks,
            started_ticks,
            live: Default::default(),
            tombstones: HashMap::new(),
            tombstone_order: VecDeque::new(),
            last_pid: None,
            scan_floor: None,
            pid_seek: None,
            pid_max,
            last_sweep: None,
            loadavg,
            loadavg_buf: Vec::new(),
            buf: Vec::with_capacity(4096),
            stats: ProcessStats::default(),
            pod_uid_env: std::env::var("POD_UID").ok().filter(|s| !s.is_empty()),
            new_since_last: 0,
            index: Default::default(),
            relays: Default::default(),
            own_pid,
            containers: HashSet::new(),
            new_container_pids: Vec::new(),
            held: Vec::new(),
            young: VecDeque::new(),
            live_changes: 0,
            ticks: 0,
            exec_checks: ExecChecks::default(),
        })
    }

    /// The root directories (`<proc>/<pid>/root`) of containers first seen since the last
    /// call.
    pub fn take_new_container_roots(&mut self) -> Vec<std::path::PathBuf> {
        self.new_container_pids
            .drain(..)
            .map(|pid| self.config.proc_root.join(pid.to_string()).join("root"))
            .collect()
    }

    pub(crate) fn proc_root(&self) -> &std::path::Path {
        &self.config.proc_root
    }

    pub fn stats(&self) -> ProcessStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// One tick: cheap when nothing happened. Returns whether /proc was scanned.
    pub fn poll(&mut self, now: UnixNanos, out: &mut Vec<Record>) -> bool {
        self.ticks += 1;
        let sweep_due = self
            .last_sweep
            .is_none_or(|t| t.elapsed() >= self.config.sweep_interval);
        let scanned = self.scan_since_last(sweep_due, now, out);
        if !sweep_due {
            self.check_known(now, out);
        }
        self.recheck_young(now, out);
        self.release_held(out);
        scanned
    }

    /// Reads the processes started since the last look (the last pid of `/proc/loadavg`
    /// moved), or every process when `sweep`; counts pids allocated but never seen.
    /// Returns whether /proc was scanned.
    pub(crate) fn scan_since_last(
        &mut self,
        sweep: bool,
        now: UnixNanos,
        out: &mut Vec<Record>,
    ) -> bool {
        let last_pid = self.read_last_pid();
        let mut scanned = false;
        if sweep {
            self.sweep_all(now, out);
            scanned = true;
        } else if last_pid.is_some() && last_pid != self.last_pid {
            let window = listing_start(self.scan_floor, self.last_pid, last_pid, self.pid_max);
            let from = window.filter(|_| self.pid_seek_works());
            self.scan_new(from, now, out);
            scanned = true;
        }
        if last_pid.is_some() && last_pid != self.last_pid {
            self.scan_floor = self.last_pid;
        }
        if let (Some(before), Some(after)) = (self.last_pid, last_pid) {
            let allocated = pids_allocated(before, after, self.pid_max);
            self.stats.pids_unseen += allocated.saturating_sub(self.new_since_last);
        }
        self.new_since_last = 0;
        self.last_pid = last_pid.or(self.last_pid);
        scanned
    }

    /// Reads every process now (start-up snapshot and the periodic safety net). The next
    /// tick looks for processes started after it, not since before it.
    pub fn sweep(&mut self, now: UnixNanos, out: &mut Vec<Record>) {
        self.scan_since_last(true, now, out);
    }

    fn sweep_all(&mut self, now: UnixNanos, out: &mut Vec<Record>) {
        self.stats.sweeps += 1;
        self.last_sweep = Some(Instant::now());
        let pids = self.list_pids();
        let present: HashSet<u32> = pids.iter().copied().collect();
        let gone: Vec<u32> = self
            .live
            .keys()
            .copied()
            .filter(|p| !present.contains(p))
            .collect();
        for pid in gone {
            self.exit(pid, now, out);
        }
        self.observe_all(&pids, now, out);
        self.expire_tombstones();
    }

    /// Reads only pids not yet known (after the last-pid trigger moved), listing /proc from
    /// `from` when given.
    fn scan_new(&mut self, from: Option<u32>, now: UnixNanos, out: &mut Vec<Record>) {
        self.stats.scans += 1;
        let mut pids = match from {
            Some(first) => crate::sys::proc::pids_from(&self.config.proc_root, first)
                .unwrap_or_else(|_| self.list_pids()),
            None => self.list_pids(),
        };
        pids.retain(|pid| !self.live.contains_key(pid));
        self.observe_all(&pids, now, out);
    }

    fn recheck_young(&mut self, now: UnixNanos, out: &mut Vec<Record>) {
        let (young_age, live, ticks) = (self.config.young_age, &self.live, self.ticks);
        // Past the young age, only forks still showing their parent's image stay.
        self.young.retain(|&(at, pid)| {
            let age = at.elapsed();
            age < young_age
                || (age < FORK_WATCH && live.get(&pid).is_some_and(|p| p.image.forked_no_exec()))
        });
        let young: Vec<u32> = self
            .young
            .iter()
            .map(|&(_, pid)| pid)
            // Gone since (its exit was already reported), or read in this tick already.
            .filter(|pid| live.get(pid).is_some_and(|p| p.read_tick != ticks))
            .collect();
        for pid in young {
            self.observe(pid, now, out);
        }
    }

    /// Whether /proc lists from a pid on, checked once. loadavg's last pid is of this
    /// process's pid namespace, a listing's position of the proc root's: the floor means
    /// something only when they are the same one.
    fn pid_seek_works(&mut self) -> bool {
        let (own_pid, root) = (self.own_pid, &self.config.proc_root);
        *self.pid_seek.get_or_insert_with(|| {
            own_pid == Some(std::process::id()) && crate::sys::proc::pid_seek_works(root)
        })
    }

    pub(crate) fn list_pids(&self) -> Vec<u32> {
        let Ok(dir) = fs::read_dir(&self.config.proc_root) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    fn read_last_pid(&mut self) -> Option<u32> {
        let n = crate::sys::proc::reread(&self.loadavg, &mut self.loadavg_buf).ok()?;
        parse::loadavg_last_pid(&self.loadavg_buf[..n])
    }

    /// Reads one pid and emits START, EXEC, or EXIT+START (pid reuse) as it finds it.
    fn observe(&mut self, pid: u32, now: UnixNanos, out: &mut Vec<Record>) {
        let stat = self.read_stat(pid);
        self.observe_stat(pid, stat, now, out);
    }

    /// Reads the `stat` of every pid first (comm, parent, start time: what lineage needs, a
    /// few µs each), then handles each. A scan after a busy spell finds dozens of new pids,
    /// and reading each one's details (command line, cgroup, exe) before the next pid's
    /// stat let the short-lived ones exit unseen.
    pub(crate) fn observe_all(&mut self, pids: &[u32], now: UnixNanos, out: &mut Vec<Record>) {
        let stats: Vec<Option<Stat>> = pids.iter().map(|&pid| self.read_stat(pid)).collect();
        for (&pid, stat) in pids.iter().zip(stats) {
            self.observe_stat(pid, stat, now, out);
        }
    }

    pub(crate) fn observe_stat(
        &mut self,
        pid: u32,
        stat: Option<Stat>,
        now: UnixNanos,
        out: &mut Vec<Record>,
    ) {
        let stat = match stat {
            Some(stat) => stat,
            None => {
                if self.live.contains_key(&pid) {
                    self.exit(pid, now, out);
                } else {
                    self.stats.raced_exit += 1;
                }
                return;
            }
        };
        let ticks = self.ticks;
        if let Some(known) = self.live.get_mut(&pid) {
            if known.image.starttime == stat.starttime {
                known.read_tick = ticks;
                if stat.pid == 2 || stat.ppid == 2 {
                    // Kernel workers rename themselves all the time (kworker/0:1-events →
                    // kworker/0:1-mm_percpu_wq): that is not an exec, and reporting it would
                    // keep an idle host's collector busy.
                    known.record.comm.clone_from(&stat.comm);
                    known.image = stat;
                } else if stat.exec_since(&known.image) {
                    self.exec(pid, stat, now, out);
                } else if known.image.layout().is_none() && stat.layout().is_some() {
                    // Visible from now on (access gained, or the exec's second half ran):
                    // kept to tell a later exec that keeps the name.
                    known.image.mm = stat.mm;
                }
                return;
            }
            self.exit(pid, now, out); // the pid was reused
        }
        self.start(stat, now, out);
    }

    fn start(&mut self, mut stat: Stat, now: UnixNanos, out: &mut Vec<Record>) {
        let start_time = self.boot_time_ns + stat.starttime * self.tick_ns;
        let parent_start_time = self
            .live
            .get(&stat.ppid)
            .map(|p| p.record.start_time)
            .filter(|t| *t <= start_time);
        let mut record = ProcessRecord {
            pid: stat.pid,
            start_time,
            ppid: stat.ppid,
            parent_start_time,
            phase: ProcessPhase::Start,
            comm: Vec::new(), // with the rest of the image, below
            exe: None,
            argv: Vec::new(),
            cwd: None,
            uid: 0,
            gid: 0,
            euid: 0,
            egid: 0,
            tty: None,
            session_id: 0,
            pgid: 0,
            container_id: None,
            pod_uid: None,
            exit_time: None,
            ancestors: Vec::new(),
            exe_unavailable: Unavailable::Unspecified,
            cwd_unavailable: Unavailable::Unspecified,
            exe_deleted: false,
            seen_at_exit_only: false,
            preexisting: stat.starttime < self.started_ticks,
            stdio_is_socket: None,
            stdio_socket_inodes: Vec::new(),
            forked_no_exec: false,
            exe_replaced: None,
            stdin_pipe: None,
            stdout_pipe: None,
            comm_is_exe_link: false,
        };
        let read = self.read_image(&mut record, &mut stat, true);
        self.recheck_parent(record.ppid, now, out);
        record.ancestors = self.ancestors_of(record.ppid, record.parent_start_time);
        self.stats.started += 1;
        self.new_since_last += 1;
        if let Some(id) = &record.container_id {
            if !self.containers.contains(id) {
                self.containers.insert(id.clone());
                self.new_container_pids.push(record.pid);
            }
        }
        ProcessStarted.emit();
        self.emit_or_hold(read.settled, &record, out);
        self.young.push_back((Instant::now(), record.pid));
        self.live_changes += 1;
        self.live.insert(
            record.pid,
            Proc {
                image: stat,
                read_tick: self.ticks,
                record,
                fd: FdTable::unread(read.fd_capacity, self.index.incremental_passes),
            },
        );
    }

    /// Reads a known parent again when it was not read this tick: a shell forks right
    /// after its own exec (`sh -c "cd /dev/shm/x && ./agent"` was a fork of its caller a
    /// moment before), and its child's lineage must carry the image that started it, its
    /// EXEC record going out first. One `stat` per new process with a known parent.
    fn recheck_parent(&mut self, ppid: u32, now: UnixNanos, out: &mut Vec<Record>) {
        let stale = self
            .live
            .get(&ppid)
            .is_some_and(|parent| parent.read_tick != self.ticks);
        if stale {
            let stat = self.read_stat(ppid);
            self.observe_stat(ppid, stat, now, out);
        }
    }

    fn exec(&mut self, pid: u32, mut stat: Stat, _now: UnixNanos, out: &mut Vec<Record>) {
        let Some(mut p) = self.live.remove(&pid) else {
            return;
        };
        self.release_now(&p.record, out);
        p.record.phase = ProcessPhase::Exec;
        p.record.preexisting = false; // this exec was witnessed
                                      // An exec does not move a process between cgroups: a known container is kept (a
                                      // process first read before its runtime moved it into one is read again).
        let reread_cgroup = p.record.container_id.is_none();
        let read = self.read_image(&mut p.record, &mut stat, reread_cgroup);
        p.image = stat;
        p.read_tick = self.ticks;
        p.record.ancestors = self.ancestors_of(p.record.ppid, p.record.parent_start_time);
        // A new image may run with other credentials and hold other fds.
        p.fd = FdTable::unread(read.fd_capacity, self.index.incremental_passes);
        self.stats.execs += 1;
        self.live_changes += 1;
        self.emit_or_hold(read.settled, &p.record, out);
        self.live.insert(pid, p);
    }

    fn exit(&mut self, pid: u32, now: UnixNanos, out: &mut Vec<Record>) {
        let Some(mut p) = self.live.remove(&pid) else {
            return;
        };
        self.release_now(&p.record, out);
        p.record.phase = ProcessPhase::Exit;
        p.record.exit_time = Some(now);
        p.record.ancestors = self.ancestors_of(p.record.ppid, p.record.parent_start_time);
        self.stats.exits += 1;
        self.live_changes += 1;
        let key = (pid, p.record.start_time);
        self.tombstones.insert(
            key,
            Tombstone {
                ancestor: ancestor_of(&p.record, true),
                ppid: p.record.ppid,
                parent_start_time: p.record.parent_start_time,
            },
        );
        self.tombstone_order.push_back((Instant::now(), key));
        out.push(Record::Process(p.record));
    }

    /// The chain of ancestors, parent first, through live processes and tombstones.
    pub fn ancestors_of(
        &self,
        mut ppid: u32,
        mut parent_start: Option<UnixNanos>,
    ) -> Vec<Ancestor> {
        let mut chain = Vec::new();
        while ppid != 0 && chain.len() < 64 {
            let link = match (self.live.get(&ppid), parent_start) {
                (Some(p), Some(t)) if p.record.start_time == t => Some((
                    ancestor_of(&p.record, false),
                    p.record.ppid,
                    p.record.parent_start_time,
                )),
                (Some(p), None) => Some((
                    ancestor_of(&p.record, false),
                    p.record.ppid,
                    p.record.parent_start_time,
                )),
                _ => parent_start
                    .and_then(|t| self.tombstones.get(&(ppid, t)))
                    .map(|t| (t.ancestor.clone(), t.ppid, t.parent_start_time)),
            };
            let Some((ancestor, next_ppid, next_start)) = link else {
                break;
            };
            chain.push(ancestor);
            ppid = next_ppid;
            parent_start = next_start;
        }
        chain
    }

    fn expire_tombstones(&mut self) {
        while let Some((at, key)) = self.tombstone_order.front().copied() {
            if self.tombstone_order.len() <= self.config.tombstone_max
                && at.elapsed() < self.config.tombstone_age
            {
                break;
            }
            self.tombstone_order.pop_front();
            self.tombstones.remove(&key);
        }
    }
}

pub(crate) fn ancestor_of(r: &ProcessRecord, exited: bool) -> Ancestor {
    Ancestor {
        pid: r.pid,
        start_time: r.start_time,
        comm: r.comm.clone(),
        exe: r.exe.clone(),
        argv: r.argv.clone(),
        exited,
        uid: Some(r.uid),
    }
}

/// Reads a /proc file into `buf` (cleared first), at most `limit` bytes.
pub(crate) fn read_into(path: &std::path::Path, buf: &mut Vec<u8>, limit: usize) -> io::Result<()> {
    buf.clear();
    let file = fs::File::open(path)?;
    file.take(limit as u64).read_to_end(buf)?;
    Ok(())
}

#[cfg(test)]
mod tests;
