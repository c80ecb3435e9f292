//! Socket → process attribution from fd tables, incremental: only processes whose open-fd
//! count changed are rescanned (`stat("/proc/<pid>/fd").st_size` is the count on Linux ≥ 6.2),
//! and a full pass runs only when an inode is still unresolved after that. Processes whose
//! fd table is unreadable (another uid without ptrace access) are skipped and counted; their
//! sockets fall back to the listener's owner, or to the only process of the socket's uid.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;

use crate::attribution::{Owner, OwnerLookup};
use crate::model::{Attribution, UnixNanos};
use crate::procs::monitor::ProcessMonitor;
use crate::procs::parse;
use crate::telemetry;

/// inode → owning (pid, start time).
#[derive(Debug, Default)]
pub struct InodeIndex {
    owners: HashMap<u64, (u32, UnixNanos)>,
    /// Whether `st_size` of /proc/<pid>/fd counts fds on this kernel (≥ 6.2).
    fd_count_works: Option<bool>,
    pub full_passes: u64,
    pub incremental_passes: u64,
    pub misses: u64,
}

impl ProcessMonitor {
    /// Rescans the fd tables of processes whose fd count changed, then every readable one
    /// if some of `wanted` is still unknown.
    pub fn refresh_inodes(&mut self, wanted: &[u64]) {
        let mut index = std::mem::take(&mut self.index);
        let fd_count_works = *index.fd_count_works.get_or_insert_with(|| {
            fs::metadata(self.proc_root().join("self/fd"))
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        });
        index.incremental_passes += 1;
        let pids: Vec<u32> = self.live.keys().copied().collect();
        for &pid in &pids {
            let changed = match self.live.get(&pid) {
                Some(p) if p.fd_unreadable => false,
                Some(p) if fd_count_works => {
                    let count = fs::metadata(self.proc_root().join(pid.to_string()).join("fd"))
                        .map(|m| m.len())
                        .ok();
                    count.is_some() && count != p.fd_count
                }
                Some(_) => true,
                None => false,
            };
            if changed {
                self.scan_fds(pid, &mut index);
            }
        }
        if wanted.iter().any(|i| !index.owners.contains_key(i)) {
            index.full_passes += 1;
            for &pid in &pids {
                if self.live.get(&pid).is_some_and(|p| !p.fd_unreadable) {
                    self.scan_fds(pid, &mut index);
                }
            }
        }
        self.index = index;
    }

    fn scan_fds(&mut self, pid: u32, index: &mut InodeIndex) {
        let dir = self.proc_root().join(pid.to_string()).join("fd");
        let Some(p) = self.live.get_mut(&pid) else {
            return;
        };
        let start_time = p.record.start_time;
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    p.fd_unreadable = true;
                    metrics::counter!(telemetry::PROC_PERMISSION_DENIED).increment(1);
                }
                return;
            }
        };
        let mut count = 0u64;
        for entry in entries.flatten() {
            count += 1;
            if let Ok(link) = fs::read_link(entry.path()) {
                if let Some(inode) = parse::socket_inode(link.as_os_str().as_bytes()) {
                    index.owners.insert(inode, (pid, start_time));
                }
            }
        }
        p.fd_count = fs::metadata(&dir).map(|m| m.len()).ok().or(Some(count));
    }

    /// The only live process with this uid, if there is exactly one.
    fn only_process_of(&self, uid: u32) -> Option<(u32, UnixNanos)> {
        let mut found = None;
        for p in self.live.values().filter(|p| p.record.uid == uid) {
            if found.is_some() {
                return None;
            }
            found = Some((p.record.pid, p.record.start_time));
        }
        found
    }
}

impl OwnerLookup for ProcessMonitor {
    fn refresh(&mut self, new_inodes: &[u64]) {
        self.refresh_inodes(new_inodes);
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
        metrics::counter!(telemetry::ATTRIBUTION_MISSES).increment(1);
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
