//! The owners of sockets that just opened, read before the dump that names the sockets.
//!
//! A dump walks the kernel's whole connection hash (shared by every namespace of the node:
//! ≈ 2 ms of CPU per TCP family on a 262,144-bucket hash), and its sockets' owners were read
//! only after it: a connection of a few ms had closed by then, its fd gone from every table.
//! Read at the rise of the trigger instead, the owner's table still holds the socket, and
//! the index keeps it (released sockets stay for a grace period) for the dump to find.

use super::{open_fd_count, SMALL_HOLDER_TABLE};
use crate::attribution::PrefetchReach;
use crate::model::{Record, UnixNanos};
use crate::procs::monitor::ProcessMonitor;

/// fd tables a prefetch reads at most: the engine's tick stays short whatever the host.
const PREFETCH_TABLES_MAX: usize = 16;

/// Of those, tables whose open-fd count did not grow since their last read. Such a process
/// opened a socket only if it also closed an fd in between; the rise also counts sockets
/// that already closed (a sub-ms churn's), which no table will show: reading every earlier
/// opener for those took most of a churning pod's dump budget (16 tables at each of 750
/// rises in 11 s of the lifetime scenario), and the dumps came half as often.
const PREFETCH_UNMOVED_MAX: usize = 4;

impl ProcessMonitor {
    /// About `expected` sockets just opened: reads the fd tables of the processes likeliest
    /// to hold them, until that many sockets new to the index are found. The likeliest:
    /// processes started since the last look (their START records to `out`), then small
    /// tables of processes that held sockets — those whose open-fd count grew first, then
    /// the most recent openers; a daemon holding the same sockets since it was first read
    /// comes last, and the reads stop once the sockets are found. With
    /// [`PrefetchReach::Grown`] no earlier opener whose count stayed level is read (where fd
    /// counts are unknown, before Linux 6.2, it reads as [`PrefetchReach::Likeliest`]).
    /// Returns the tables read.
    pub fn prefetch_owners(
        &mut self,
        expected: u64,
        reach: PrefetchReach,
        now: UnixNanos,
        out: &mut Vec<Record>,
    ) -> usize {
        self.scan_since_last(false, now, out);
        let mut index = std::mem::take(&mut self.index);
        let fd_count_works = self.tidy(&mut index);
        index.incremental_passes += 1;
        let pass = index.incremental_passes;
        // (class, recency, pid): 0 new since the last pass, 1 its count grew, 2 an earlier
        // opener; sorted so that the best is popped first.
        let mut candidates: Vec<(u8, u64, u32)> = Vec::new();
        for (&pid, p) in &self.live {
            let fd = &p.fd;
            if !fd.maybe_readable() || fd.count.unwrap_or(fd.size_hint) > SMALL_HOLDER_TABLE {
                continue;
            }
            if fd.count.is_none() {
                if fd.passes_before_seen + 1 >= pass {
                    candidates.push((0, u64::MAX, pid));
                }
                continue;
            }
            if fd.socket_pass == 0 && fd.gained_pass == 0 {
                continue;
            }
            // A table that grew holds a new fd; one that shrank or stayed level opened one
            // only if it also closed as many (a client closing its connection shrinks).
            let grew = fd_count_works
                && open_fd_count(self.proc_root(), pid)
                    .is_some_and(|c| fd.count.is_some_and(|known| c > known));
            candidates.push((if grew { 1 } else { 2 }, fd.gained_pass, pid));
        }
        candidates.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut found = 0u64;
        // Without fd counts (kernels before 6.2) no table is known to have grown: every
        // earlier opener is a guess alike, and a read of grown tables alone would read none.
        let unmoved_max = match reach {
            PrefetchReach::Grown if fd_count_works => 0,
            _ if fd_count_works => PREFETCH_UNMOVED_MAX,
            _ => PREFETCH_TABLES_MAX,
        };
        let (mut read, mut unmoved) = (0, 0);
        while let Some((class, _, pid)) = candidates.pop() {
            if found >= expected || read >= PREFETCH_TABLES_MAX {
                break;
            }
            if class == 2 {
                if unmoved >= unmoved_max {
                    break;
                }
                unmoved += 1;
            }
            found += self.scan_fds(pid, pass, &mut index) as u64;
            read += 1;
        }
        index.prefetches += 1;
        self.index = index;
        tracing::trace!(target: "procflow::tick", expected, found, read, "owners read at the rise");
        read
    }
}

#[cfg(test)]
mod tests {
    use crate::attribution::{OwnerLookup, PrefetchReach};
    use crate::model::Record;
    use crate::model::{now_ns, Attribution};
    use crate::procs::monitor::{ProcessConfig, ProcessMonitor};
    use crate::socket_holder::SocketHolder;

    /// A socket holder with one socket, and a monitor that has read its table once.
    fn holder_read_once() -> (SocketHolder, ProcessMonitor, Vec<Record>) {
        let (holder, initial) = SocketHolder::start(1);
        let mut monitor = ProcessMonitor::new(ProcessConfig::default()).expect("monitor");
        let mut out = Vec::new();
        monitor.sweep(now_ns(), &mut out);
        monitor.refresh(&initial, now_ns(), &mut out);
        (holder, monitor, out)
    }

    /// A socket opened and closed before the dump that names it is attributed: its owner was
    /// read at the rise. Read only after the dump, its fd is gone from every table.
    #[test]
    fn a_socket_read_at_the_rise_is_owned_after_it_closed() {
        let (mut holder, mut monitor, mut out) = holder_read_once();
        let pid = holder.pid();
        // A prefetch reads new processes first and stops once as many sockets as it was
        // told are found: this test binary's other tests (and the host) start processes
        // holding sockets beside it, which can take the reads of one try. A try that missed
        // is made again (at most five); code that does not read owners at the rise misses
        // every one.
        let mut tries = Vec::new();
        for _ in 0..5 {
            let short = holder.open();
            let read = monitor.prefetch_owners(64, PrefetchReach::Likeliest, now_ns(), &mut out);
            let _next = holder.reopen(); // `short` closes before the dump
            monitor.refresh(&[short], now_ns(), &mut out);
            let owner = monitor.owner(short, None, None);
            tries.push((owner.pid, owner.attribution, read));
            if owner.pid.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let (owner, attribution, _) = *tries.last().expect("a try");
        assert_eq!(
            (owner, attribution),
            (Some(pid), Attribution::Fd),
            "tries (owner, attribution, tables read): {tries:?}"
        );
        drop(holder);
    }

    /// Reaching only grown tables, a prefetch leaves a table whose count stayed level (a
    /// socket closed and another opened in its place) to the pass after the dump, and reads
    /// one that grew; reaching further, it reads the level table of the latest opener.
    #[test]
    fn a_prefetch_of_grown_tables_leaves_level_ones_unread() {
        if std::fs::metadata("/proc/self/fd").map_or(true, |m| m.len() == 0) {
            eprintln!("skipped: this kernel (before 6.2) gives no fd counts");
            return;
        }
        let (mut holder, mut monitor, mut out) = holder_read_once();
        let pid = holder.pid();
        // A socket new to a table read before: the holder is now the latest opener, the
        // first level table a wider reach reads.
        let opened = holder.open();
        monitor.refresh(&[opened], now_ns(), &mut out);
        assert_eq!(monitor.owner(opened, None, None).pid, Some(pid));
        let level = holder.reopen();
        monitor.prefetch_owners(64, PrefetchReach::Grown, now_ns(), &mut out);
        assert_eq!(
            monitor.owner(level, None, None).attribution,
            Attribution::None,
            "a level table was read"
        );
        // Other tests' processes starting beside this one are read first (new processes)
        // and can take a try's reads: up to five tries each.
        let mut tries = Vec::new();
        for reach in [PrefetchReach::Likeliest, PrefetchReach::Grown] {
            for _ in 0..5 {
                let socket = match reach {
                    PrefetchReach::Likeliest => holder.reopen(),
                    PrefetchReach::Grown => holder.open(),
                };
                let read = monitor.prefetch_owners(64, reach, now_ns(), &mut out);
                let owner = monitor.owner(socket, None, None);
                tries.push((reach, owner.pid, read));
                if owner.pid == Some(pid) {
                    break;
                }
            }
            assert_eq!(
                tries.last().and_then(|t| t.1),
                Some(pid),
                "tries (reach, owner, tables read): {tries:?}"
            );
        }
    }
}
