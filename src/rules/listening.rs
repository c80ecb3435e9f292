//! Which processes own a listening socket, per source, from the listener records the
//! engine sees: a shell started by a server is judged by whether its parent serves.

use super::stateful::HashMap as FastMap;
use crate::model::{FlowPhase, ListenerRecord, ProcessRecord, Protocol, UnixNanos};

/// Beyond this many open listeners per source the oldest knowledge is dropped (a reset:
/// listeners still open are learned again from their next record).
const LISTENERS_MAX: usize = 65_536;

/// Open listeners by cookie, and how many each owner holds.
#[derive(Default)]
pub(super) struct Listening {
    by_cookie: FastMap<u64, (u32, UnixNanos)>,
    owners: FastMap<(u32, UnixNanos), u32>,
}

impl Listening {
    pub(super) fn observe(&mut self, l: &ListenerRecord) {
        // A packet socket serves nobody: its owner's children are not a server's.
        if l.protocol == Protocol::Packet {
            return;
        }
        let owner = l.pid.map(|pid| (pid, l.process_start_time.unwrap_or(0)));
        let known = self.by_cookie.get(&l.cookie).copied();
        if l.phase == FlowPhase::End || known != owner {
            if let Some(old) = self.by_cookie.remove(&l.cookie) {
                if let Some(n) = self.owners.get_mut(&old) {
                    *n -= 1;
                    if *n == 0 {
                        self.owners.remove(&old);
                    }
                }
            }
        }
        let Some(owner) = owner.filter(|_| l.phase != FlowPhase::End) else {
            return;
        };
        if known == Some(owner) {
            return;
        }
        if self.by_cookie.len() >= LISTENERS_MAX {
            self.by_cookie.clear();
            self.owners.clear();
        }
        self.by_cookie.insert(l.cookie, owner);
        *self.owners.entry(owner).or_insert(0) += 1;
    }

    fn owns(&self, pid: u32, start: UnixNanos) -> bool {
        // A listener whose owner's start time was not reported matches the pid alone.
        self.owners.contains_key(&(pid, start)) || self.owners.contains_key(&(pid, 0))
    }

    /// Whether the process's parent serves: it, or the forks it descends from (the
    /// same image and arguments: a pre-fork server's workers hold the master's socket and
    /// the collector names one of them), owns an open listener.
    pub(super) fn parent_listens(&self, p: &ProcessRecord) -> bool {
        let Some(parent) = p.ancestors.first() else {
            return false;
        };
        p.ancestors
            .iter()
            .take_while(|a| a.pid > 1 && a.exe == parent.exe && a.argv == parent.argv)
            .any(|a| self.owns(a.pid, a.start_time))
    }
}
