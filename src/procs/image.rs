//! One consistent image per process record, current within a tick.
//!
//! An exec changes what /proc shows of a process one piece at a time: the executable and
//! the memory first (the command line reads empty from then on), then the fork flag
//! (`PF_FORKNOEXEC`), the name, and last the arguments. A record read over several files
//! can straddle it and pair one image's name with another's executable. So every record is
//! read between two readings of `stat` and read again when they show an exec in between
//! ([`Stat::exec_since`]); a record whose command line is still empty is held until a
//! whole image can be read.
//!
//! What tells an exec that keeps both the name and the executable (`sh` exec'ing
//! `/bin/sh`), checked on 6.18 without privileges:
//! - `PF_FORKNOEXEC` in stat's `flags` (field 9, shown to everyone): set by fork, cleared
//!   by the exec. It tells every fork that execs, whatever it execs: the shape of every
//!   `sh -c` chain and entrypoint script.
//! - `startcode endcode startstack` (fields 26–28) move with every exec (ASLR), but only a
//!   reader with ptrace access sees them (others read `1 1 0`): they tell a second exec of
//!   a process that exec'd already, for a collector running as the app's user.
//! - Not usable: `self_exec_id` is not shown; `minflt` is the task's and survives the exec;
//!   `exe`'s inode is the same binary's and needs ptrace access; the status high-water
//!   marks (`VmPeak`, `VmHWM`) drop only when the new image is smaller; the command line
//!   also changes by `setproctitle`, so it is read, never taken for an exec.
//!
//! Left unseen: a process that exec'd already, exec'ing the same name again, read without
//! ptrace access (its record keeps the first image's arguments until it exits).
//!
//! Which known process exec'd: the exec wake-up (inotify) names no pid and comes early,
//! when the binary is opened, before the image changes. After a wake-up, the `stat` of
//! every known user process (a few µs each) is read once, within a CPU budget
//! ([`CHECK_BUDGET_SHARE`]), and compared with the image its records carry; the processes
//! then running are read again on every tick for [`EXEC_FOLLOW`]. The owners of new
//! sockets are read the same way before their sockets are judged, so a listener opened by a shim's new image is never reported with
//! the shim's.

use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use crate::model::{ProcessRecord, Record, Unavailable, UnixNanos};
use crate::procs::monitor::{read_into, ProcessMonitor};
use crate::procs::parse::{self, Stat};
use crate::sys::proc::PidDir;
use crate::telemetry::collector::ProcReadDenied;
use crate::telemetry::InternalEvent;

/// Reads of one record before it is held as unsettled: each retry follows an exec that
/// happened during the previous read, so a third one in a row is a process exec'ing in a loop.
const IMAGE_READS: u32 = 3;

/// How long a record read mid-exec waits for its command line before it goes out as read.
pub(crate) const ARGV_WAIT: Duration = Duration::from_millis(50);

/// After an exec wake-up, known processes are checked on every tick for this long: the
/// wake-up comes when the binary is opened, and the exec may complete only a few ms later
/// on a loaded machine.
pub(crate) const EXEC_FOLLOW: Duration = Duration::from_millis(30);

/// The checks of known processes may take at most this share of the time between them
/// (1/20: 5 % of a core at worst, however many processes a host holds).
const CHECK_BUDGET_SHARE: u32 = 20;

/// What one read of a process's image found.
pub(crate) struct ImageRead {
    /// The fd table's capacity from status (0 when unread).
    pub fd_capacity: u64,
    /// Read whole from one image; false while the exec's arguments are not in place yet
    /// (or the process kept exec'ing during every read).
    pub settled: bool,
}

/// When checks of known processes are due, and what the last one cost.
#[derive(Debug, Default)]
pub(crate) struct ExecChecks {
    /// The last exec wake-up: candidates are followed until `EXEC_FOLLOW` after it.
    woken: Option<Instant>,
    /// A check of every known process is owed to the last wake-up.
    pending: bool,
    last: Option<Instant>,
    last_cost: Duration,
    /// Processes running (or in the kernel) at the last full check: the one in `execve`
    /// is among them, and only they are read again on the ticks that follow.
    candidates: Vec<u32>,
}

impl ExecChecks {
    pub fn woken(&mut self) {
        self.woken = Some(Instant::now());
        self.pending = true;
    }

    fn following(&self) -> bool {
        self.woken.is_some_and(|w| w.elapsed() < EXEC_FOLLOW)
    }

    /// What the budget still asks to wait before a full check.
    fn budget_left(&self) -> Duration {
        (self.last_cost * CHECK_BUDGET_SHARE)
            .saturating_sub(self.last.map_or(Duration::MAX, |l| l.elapsed()))
    }

    /// How soon the engine should tick again: for a full check the budget put off, or to
    /// read the candidates again while following a wake-up. `None` otherwise: a wake-up by
    /// an exec elsewhere (another container, the host) costs one check, no extra ticks.
    pub fn next_within(&self) -> Option<Duration> {
        if self.pending {
            return Some(self.budget_left());
        }
        (self.following() && !self.candidates.is_empty()).then_some(Duration::ZERO)
    }
}

impl ProcessMonitor {
    /// An exec happened somewhere (the engine's watch woke): find which known process it
    /// was on this and the next ticks.
    pub fn exec_woken(&mut self) {
        self.exec_checks.woken();
    }

    /// How soon the engine should tick again to follow an exec wake-up; `None` when no
    /// wake-up is being followed.
    pub fn tick_wanted_within(&self) -> Option<Duration> {
        self.exec_checks.next_within()
    }

    /// After a wake-up, reads the `stat` of every known user process (kernel threads
    /// never exec) once the budget allows, and reports the execs found; the processes then
    /// running are read again on the following ticks, since the wake-up (the binary's
    /// open) comes before the exec completes.
    pub(crate) fn check_known(&mut self, now: UnixNanos, out: &mut Vec<Record>) {
        let execs = self.stats.execs;
        if self.exec_checks.pending && self.exec_checks.budget_left().is_zero() {
            let started = Instant::now();
            let pids: Vec<u32> = self
                .live
                .iter()
                .filter(|(_, p)| p.image.pid != 2 && p.image.ppid != 2)
                .map(|(&pid, _)| pid)
                .collect();
            let stats: Vec<Option<Stat>> = pids.iter().map(|&pid| self.read_stat(pid)).collect();
            let own = self.own_pid;
            self.exec_checks.candidates = pids
                .iter()
                .zip(&stats)
                .filter(|(&pid, stat)| {
                    Some(pid) != own
                        && stat
                            .as_ref()
                            .is_some_and(|s| matches!(s.state, b'R' | b'D'))
                })
                .map(|(&pid, _)| pid)
                .collect();
            for (&pid, stat) in pids.iter().zip(stats) {
                self.observe_stat(pid, stat, now, out);
            }
            self.stats.exec_checks += 1;
            self.exec_checks.pending = false;
            self.exec_checks.last = Some(Instant::now());
            self.exec_checks.last_cost = started.elapsed();
        } else if self.exec_checks.following() {
            let candidates = self.exec_checks.candidates.clone();
            self.observe_all(&candidates, now, out);
        } else {
            self.exec_checks.candidates.clear();
        }
        self.stats.execs_found_by_check += self.stats.execs - execs;
    }

    /// Reads again the processes that own `inodes` (sockets about to be reported), so that
    /// a socket is judged with its owner's current image: an exec since the owner was last
    /// read goes out first.
    pub(crate) fn recheck_owners(
        &mut self,
        mut pids: Vec<u32>,
        now: UnixNanos,
        out: &mut Vec<Record>,
    ) {
        pids.sort_unstable();
        pids.dedup();
        // Already read in this tick: current.
        pids.retain(|pid| {
            self.live
                .get(pid)
                .is_some_and(|p| p.read_tick != self.ticks)
        });
        self.observe_all(&pids, now, out);
    }

    /// Fills `r` from one image of the process whose `stat` was just read: details, then
    /// `stat` again; if an exec happened in between, the details are read again from the
    /// newer `stat`. `stat` ends as the image the record shows.
    pub(crate) fn read_image(
        &mut self,
        r: &mut ProcessRecord,
        stat: &mut Stat,
        cgroup: bool,
    ) -> ImageRead {
        let mut reads = 0;
        loop {
            r.comm.clone_from(&stat.comm);
            r.tty = (stat.tty_nr != 0).then_some(stat.tty_nr);
            r.session_id = stat.session;
            r.pgid = stat.pgrp;
            r.forked_no_exec = stat.forked_no_exec();
            let (fd_capacity, after) = self.fill_details(r, cgroup);
            reads += 1;
            let after = match after {
                Some(after) if after.starttime == stat.starttime => after,
                // Exited (or its pid already reused): the record keeps what was read.
                _ => {
                    return ImageRead {
                        fd_capacity,
                        settled: true,
                    }
                }
            };
            if after.exec_since(stat) {
                self.stats.image_rereads += 1;
                *stat = after;
                if reads < IMAGE_READS {
                    continue;
                }
                return ImageRead {
                    fd_capacity,
                    settled: false,
                };
            }
            // The layout becomes visible once the exec's second half ran, or when a
            // privilege change gave access: keep it to compare later reads with.
            if stat.layout().is_none() && after.layout().is_some() {
                stat.mm = after.mm;
            }
            return ImageRead {
                fd_capacity,
                settled: !(may_be_mid_exec(stat) && r.argv.is_empty()),
            };
        }
    }

    /// Emits a START or EXEC, or holds it when it was not read whole (mid-exec).
    pub(crate) fn emit_or_hold(
        &mut self,
        settled: bool,
        record: &ProcessRecord,
        out: &mut Vec<Record>,
    ) {
        if settled {
            out.push(Record::Process(record.clone()));
        } else {
            self.held.push((record.pid, Instant::now()));
        }
    }

    /// A held record goes out before anything newer of its process (an EXEC, the EXIT),
    /// never read whole: its executable may be the next image's while its name is still
    /// the last one's, so an executable that does not match the name is not reported (a
    /// false masquerade otherwise).
    pub(crate) fn release_now(&mut self, record: &ProcessRecord, out: &mut Vec<Record>) {
        if let Some(i) = self.held.iter().position(|(pid, _)| *pid == record.pid) {
            self.held.swap_remove(i);
            let mut record = record.clone();
            if record
                .exe
                .as_deref()
                .is_some_and(|exe| !comm_matches(&record.comm, exe))
            {
                record.exe = None;
                record.exe_unavailable = Unavailable::ProcessGone;
                self.stats.exe_unverified += 1;
            }
            out.push(Record::Process(record));
        }
    }

    /// Held records are read again, whole; those now settled, or that waited long enough,
    /// go out (the latter as read: a process may really have an empty command line).
    pub(crate) fn release_held(&mut self, out: &mut Vec<Record>) {
        let mut i = 0;
        while i < self.held.len() {
            let (pid, since) = self.held[i];
            let Some(mut p) = self.live.remove(&pid) else {
                // Unreachable by construction: an exit or exec releases a held record
                // before the process leaves `live`.
                debug_assert!(false, "held record of pid {pid} without its process");
                tracing::warn!(pid, "dropping a held process record whose process is gone");
                self.held.swap_remove(i);
                continue;
            };
            let settled = match self.read_stat(pid) {
                Some(mut stat) if stat.starttime == p.image.starttime => {
                    let cgroup = p.record.container_id.is_none();
                    let read = self.read_image(&mut p.record, &mut stat, cgroup);
                    p.image = stat;
                    p.read_tick = self.ticks;
                    read.settled
                }
                // Gone: its exit comes with the next look, after this record.
                _ => true,
            };
            let waited = since.elapsed() >= ARGV_WAIT;
            if settled || waited {
                if !settled {
                    self.stats.argv_unsettled += 1;
                }
                out.push(Record::Process(p.record.clone()));
                self.held.swap_remove(i);
            } else {
                i += 1;
            }
            self.live.insert(pid, p);
        }
    }

    pub(crate) fn read_stat(&mut self, pid: u32) -> Option<Stat> {
        let path = self.config.proc_root.join(pid.to_string()).join("stat");
        match read_into(&path, &mut self.buf, 4096) {
            Ok(()) => parse::parse_stat(&self.buf),
            Err(_) => None,
        }
    }

    /// Fills what needs more reads: ids, argv, identity (with `cgroup`), and the
    /// ptrace-guarded exe, cwd, stdio; then reads `stat` again. Returns the fd table's
    /// capacity (0 when unread) and that second `stat` (`None`: the process is gone).
    fn fill_details(&mut self, r: &mut ProcessRecord, cgroup: bool) -> (u64, Option<Stat>) {
        let dir = match PidDir::open(&self.config.proc_root, r.pid) {
            Ok(dir) => dir,
            Err(e) => {
                // Exited since its stat was read: the record keeps what stat gave.
                (r.exe, r.cwd) = (None, None);
                r.exe_unavailable = self.unavailable(&e, r.ppid);
                r.cwd_unavailable = r.exe_unavailable;
                return (0, None);
            }
        };
        let mut fd_size = 0;
        if dir.read(c"status", &mut self.buf, 16 * 1024).is_ok() {
            if let Some(status) = parse::parse_status(&self.buf) {
                let ids = status.ids;
                (r.uid, r.euid, r.gid, r.egid) = (ids.uid, ids.euid, ids.gid, ids.egid);
                fd_size = status.fd_size.unwrap_or(0);
            }
        }
        if cgroup && dir.read(c"cgroup", &mut self.buf, 16 * 1024).is_ok() {
            let identity = parse::parse_cgroup(&self.buf);
            r.container_id = identity.container_id;
            r.pod_uid = identity.pod_uid.or_else(|| self.pod_uid_env.clone());
        }
        // The executable before the arguments: the exec replaces it first, so arguments of
        // the new image are never paired with the old executable (see the module doc).
        match dir.read_link(c"exe", <[u8]>::to_vec) {
            Ok(bytes) => {
                r.exe_deleted = bytes.ends_with(b" (deleted)") || bytes.starts_with(b"/memfd:");
                r.exe_replaced = bytes
                    .strip_suffix(b" (deleted)")
                    .and_then(|path| self.replaced(r.pid, path));
                r.exe = Some(bytes);
                r.exe_unavailable = Unavailable::Unspecified;
            }
            Err(e) => {
                r.exe = None;
                r.exe_unavailable = self.unavailable(&e, r.ppid);
            }
        }
        r.argv = match dir.read(c"cmdline", &mut self.buf, self.config.max_argv_bytes) {
            Ok(()) => parse::parse_cmdline(&self.buf),
            Err(_) => Vec::new(),
        };
        r.comm_is_exe_link = match &r.exe {
            Some(exe) if !r.exe_deleted && !comm_matches(&r.comm, exe) => {
                let root = self.config.proc_root.join(r.pid.to_string()).join("root");
                crate::procs::links::names_link_to(&root, exe, started_as(r))
            }
            _ => false,
        };
        match dir.read_link(c"cwd", <[u8]>::to_vec) {
            Ok(bytes) => {
                r.cwd = Some(bytes);
                r.cwd_unavailable = Unavailable::Unspecified;
            }
            Err(e) => {
                r.cwd = None;
                r.cwd_unavailable = self.unavailable(&e, r.ppid);
            }
        }
        r.stdio_socket_inodes.clear();
        (r.stdin_pipe, r.stdout_pipe) = (None, None);
        let mut readable = false;
        // The AF_UNIX sockets on stdin and stdout.
        let mut unix = [None; 2];
        for (n, fd) in [c"fd/0", c"fd/1", c"fd/2"].into_iter().enumerate() {
            let Ok((socket, pipe)) =
                dir.read_link(fd, |l| (parse::socket_inode(l), parse::pipe_inode(l)))
            else {
                continue;
            };
            readable = true;
            if let Some(inode) = socket {
                match stdio_socket(&dir, fd, inode) {
                    StdioSocket::Connected => r.stdio_socket_inodes.push(inode),
                    StdioSocket::Unix if n < 2 => unix[n] = Some(inode),
                    StdioSocket::Unix | StdioSocket::Other => {}
                }
            }
            match n {
                0 => r.stdin_pipe = pipe,
                1 => r.stdout_pipe = pipe,
                _ => {}
            }
        }
        // One AF_UNIX socket as stdin and stdout: a relay's socketpair, when the ancestor
        // holding its other end holds a connection (procs::relay); that connection then
        // stands for the stdio socket.
        if let [Some(inn), Some(out)] = unix {
            if inn == out && r.stdio_socket_inodes.is_empty() {
                let proc_root = &self.config.proc_root;
                r.stdio_socket_inodes
                    .extend(self.relays.connection(proc_root, r.ppid, inn));
            }
        }
        r.stdio_is_socket = readable.then_some(!r.stdio_socket_inodes.is_empty());
        let after = match dir.read(c"stat", &mut self.buf, 4096) {
            Ok(()) => parse::parse_stat(&self.buf),
            Err(_) => None,
        };
        (fd_size, after)
    }

    /// Whether the path of a deleted executable now holds another file, seen from the
    /// process's own root (`/proc/PID/root`, so the app container's file system): a
    /// root-owned regular file there is what a package upgrade leaves (a non-root runner
    /// cannot make one); nothing there is a removed binary. `None` when unreadable.
    fn replaced(&self, pid: u32, path: &[u8]) -> Option<bool> {
        use std::os::unix::ffi::OsStrExt as _;
        use std::os::unix::fs::MetadataExt as _;
        let rel = std::ffi::OsStr::from_bytes(path.strip_prefix(b"/")?);
        let full = self
            .config
            .proc_root
            .join(pid.to_string())
            .join("root")
            .join(rel);
        match std::fs::metadata(full) {
            Ok(m) => Some(m.is_file() && m.uid() == 0),
            Err(e) if e.kind() == ErrorKind::NotFound => Some(false),
            Err(_) => None,
        }
    }

    fn unavailable(&mut self, e: &io::Error, ppid: u32) -> Unavailable {
        match e.kind() {
            ErrorKind::PermissionDenied => {
                self.stats.permission_denied += 1;
                ProcReadDenied.emit();
                Unavailable::PermissionDenied
            }
            // Kernel threads (children of kthreadd, pid 2) have no executable.
            ErrorKind::NotFound if ppid == 2 || ppid == 0 => Unavailable::None,
            _ => Unavailable::ProcessGone,
        }
    }
}

/// How many lines of a `net/tcp`-like table are read looking for one socket: past them
/// (a namespace with tens of thousands of sockets) the socket counts as having a peer.
pub(crate) const NET_TABLE_LINES: usize = 65_536;

/// What a socket on a stdio fd is.
enum StdioSocket {
    /// An internet socket with a remote peer: what a reverse shell's stdio is.
    Connected,
    /// AF_UNIX: what Node, npm, systemd and docker give their children, and what a relay
    /// such as socat's `EXEC:` gives its shell (told apart by procs::relay).
    Unix,
    /// A listener handed over by inetd, netlink, packet, vsock…
    Other,
}

/// What the socket on stdio fd `fd` is. The protocol comes from sockfs's
/// `system.sockprotoname`, the peer from the process's own network namespace's table
/// (`/proc/<pid>/net/tcp`…, read only for an inet socket on stdio, a rare sight). What
/// cannot be told (an unreadable table, a socket not found in it, a protocol with no table
/// such as MPTCP or SCTP) counts as a peer, as it did before.
fn stdio_socket(dir: &PidDir, fd: &std::ffi::CStr, inode: u64) -> StdioSocket {
    use std::io::BufRead as _;
    let mut buf = [0u8; 32];
    let table = match dir.socket_protocol(fd, &mut buf) {
        Ok(b"TCP") => c"net/tcp",
        Ok(b"TCPv6") => c"net/tcp6",
        Ok(b"UDP") => c"net/udp",
        Ok(b"UDPv6") => c"net/udp6",
        Ok(b"UDP-Lite") => c"net/udplite",
        Ok(b"UDPLITEv6") => c"net/udplite6",
        Ok(name) if name.starts_with(b"MPTCP") || name.starts_with(b"SCTP") => {
            return StdioSocket::Connected
        }
        Ok(name) if name.starts_with(b"UNIX") => return StdioSocket::Unix,
        // Netlink, packet, vsock…: not a connection to a peer elsewhere.
        Ok(_) => return StdioSocket::Other,
        // The link was readable, its attribute is not (a kernel without it): as before.
        Err(_) => return StdioSocket::Connected,
    };
    let Ok(file) = dir.open_file(table) else {
        return StdioSocket::Connected;
    };
    let mut lines = std::io::BufReader::with_capacity(16 * 1024, file).split(b'\n');
    let peer = lines
        .by_ref()
        .take(NET_TABLE_LINES)
        .map_while(Result::ok)
        .find_map(|line| parse::inet_line_has_peer(&line, inode))
        .unwrap_or(true);
    if peer {
        StdioSocket::Connected
    } else {
        StdioSocket::Other
    }
}

/// The name a process was started under: its comm, or argv[0]'s basename when comm is
/// that name cut to 15 bytes.
fn started_as(r: &ProcessRecord) -> &[u8] {
    let argv0 = r
        .argv
        .first()
        .map_or(&[][..], |a| a.rsplit(|&b| b == b'/').next().unwrap_or(a));
    if r.comm.len() == 15 && argv0.starts_with(&r.comm) {
        argv0
    } else {
        &r.comm
    }
}

/// Whether `comm` is what the kernel names an image run from `exe`: its basename, cut to
/// 15 bytes (as `proc.comm_matches_exe` in the rules).
fn comm_matches(comm: &[u8], exe: &[u8]) -> bool {
    let exe = exe.strip_suffix(b" (deleted)").unwrap_or(exe);
    let base = exe.rsplit(|&b| b == b'/').next().unwrap_or(exe);
    base.get(..15).unwrap_or(base) == comm
}

/// A process that can be caught between an exec's new memory and its new arguments: not a
/// zombie (whose command line is empty for good) nor a kernel thread (which has none).
pub(crate) fn may_be_mid_exec(stat: &Stat) -> bool {
    stat.state != b'Z' && stat.pid != 2 && stat.ppid != 2
}
