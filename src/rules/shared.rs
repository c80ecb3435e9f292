//! Rule state several aggregator replicas share through their store: alert groups (one
//! group, one count, one emission per re-emit interval across replicas) and the learned
//! sets of new-value rules (a value one replica learned is not new on another). The engine
//! keeps its own copy of both and asks the shared state only when its copy cannot decide:
//! a group about to emit, a value it does not know. Per-process windows (thresholds, rates)
//! stay in the replica that holds the collector's stream.

use crate::model::UnixNanos;

/// What the shared state said about a group about to emit here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Emit, with the group's first time and count over every replica.
    Emit { first_seen: UnixNanos, count: u64 },
    /// Another replica emitted it at `last_emit`, within the re-emit interval: not now.
    Held { last_emit: UnixNanos },
}

/// What the shared state knows of a value unknown here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    /// When any replica first saw the key (its learning period runs from then).
    pub key_first_seen: UnixNanos,
    /// Some replica had learned the value before: it is not new.
    pub known: bool,
}

/// The store's side. Blocking (called from the detection thread); `None` when the store
/// cannot answer, and the engine then decides alone (counted by the implementation).
pub trait SharedState: Send {
    /// A hit of group `key` not emitted here: counted into the group's shared count at the
    /// next [`flush`](SharedState::flush) or claim of the group.
    fn hit(&mut self, key: &str);
    /// Group `key` would emit here now: adds this hit (and those held for it) to its
    /// count and emits it unless another replica did within `reemit_ns`.
    fn claim(&mut self, key: &str, now: UnixNanos, reemit_ns: u64) -> Option<Claim>;
    /// Learns `value` for `key` of new-value rule `rule` for every replica.
    fn learn(&mut self, rule: &str, key: &str, value: &str, now: UnixNanos) -> Option<Learned>;
    /// Writes the hits held since the last flush.
    fn flush(&mut self, now: UnixNanos);
}
