//! Stateful rule kinds: *threshold* (a sum or count over a sliding window per key), *new
//! value* (a value never seen for a key after its learning period), *rate* (many distinct
//! values per key in a window: scans). A rule's condition selects the records; the state
//! decides whether they fire. The state serialises to JSON so an aggregator restart keeps
//! windows, learned values and learning clocks.

use std::collections::VecDeque;

/// State maps are hashed per record: a fast hasher (keys are not attacker-chosen in bulk:
/// bounded per rule, see MAX_KEYS_PER_RULE).
pub(crate) type HashMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = hashbrown::HashSet<K, foldhash::fast::RandomState>;
use hashbrown::hash_map::EntryRef;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{FlowPhase, Record, UnixNanos};

/// Why saved rule state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file is there but cannot be read (permissions, I/O): not a reason to forget it.
    #[error("reading rule state {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The file does not parse (torn, emptied, edited): its windows are lost either way.
    #[error("rule state {path} is corrupt: {reason}")]
    Corrupt {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("writing rule state {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// `threshold:` in a rule file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    /// A numeric field to add up (flow counters add what the socket moved since its
    /// previous record); absent: count matching records.
    #[serde(default)]
    pub sum: Option<String>,
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// Fires when the window's total exceeds this.
    pub above: u64,
    /// Fields that make the key, beside the workload.
    #[serde(default)]
    pub by: Vec<String>,
}

/// `new_value:` in a rule file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewValueSpec {
    pub value: String,
    #[serde(default)]
    pub by: Vec<String>,
    /// Values seen during this long after a key's first record are learned, not alerted.
    #[serde(deserialize_with = "duration")]
    pub learning: Duration,
    /// Values never alerted on.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `rate:` in a rule file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    pub distinct: String,
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// Fires when more distinct values than this were seen in the window.
    pub above: u64,
    #[serde(default)]
    pub by: Vec<String>,
}

/// The stateful part of a compiled rule.
#[derive(Debug, Clone)]
pub enum Kind {
    Threshold(ThresholdSpec),
    NewValue(NewValueSpec),
    Rate(RateSpec),
}

impl Kind {
    /// The fields it reads, for validation at load.
    pub fn fields(&self) -> Vec<&str> {
        let (extra, by): (Option<&str>, &[String]) = match self {
            Kind::Threshold(t) => (t.sum.as_deref(), &t.by),
            Kind::NewValue(n) => (Some(&n.value), &n.by),
            Kind::Rate(r) => (Some(&r.distinct), &r.by),
        };
        extra
            .into_iter()
            .chain(by.iter().map(String::as_str))
            .collect()
    }

    pub fn by(&self) -> &[String] {
        match self {
            Kind::Threshold(t) => &t.by,
            Kind::NewValue(n) => &n.by,
            Kind::Rate(r) => &r.by,
        }
    }
}

/// Bounds: keys per rule and remembered sockets. Past them new keys are not tracked (and
/// counted), so hostile cardinality cannot grow the aggregator without limit.
pub const MAX_KEYS_PER_RULE: usize = 100_000;
const MAX_SOCKETS: usize = 500_000;
const MAX_VALUES_PER_KEY: usize = 10_000;

/// A threshold's sliding window for one key: at most [`WINDOW_SLICES`] + 1 entries, so a
/// busy key costs the same as a quiet one (an entry per record grew without bound over a
/// 10-minute window at ingest rates). Records in one slice of the window share an entry
/// stamped with the latest of them; the entry leaves the window with that record, so a
/// record counts up to one slice (1/32 of the window) longer than the window, never less.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Window {
    events: VecDeque<(UnixNanos, u64)>,
    total: u64,
}

const WINDOW_SLICES: u64 = 32;

impl Window {
    fn add(&mut self, now: UnixNanos, amount: u64, window: u64) {
        let slice = (window / WINDOW_SLICES).max(1);
        self.total += amount;
        match self.events.back_mut() {
            Some((at, sum)) if *at / slice == now / slice => {
                *at = (*at).max(now);
                *sum += amount;
            }
            _ => self.events.push_back((now, amount)),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Learned {
    first_seen: UnixNanos,
    values: HashSet<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Distinct {
    events: VecDeque<(UnixNanos, String)>,
    counts: HashMap<String, u32>,
    /// The process that last sent each value in the window.
    #[serde(default)]
    senders: HashMap<String, Contributor>,
    /// Values in the window per sender, few per key (rebuilt from `senders` at load).
    #[serde(skip)]
    per_sender: Vec<(Contributor, u32)>,
}

impl Distinct {
    fn credit(&mut self, value: &str, sender: Option<Sender<'_>>) {
        let Some(sender) = sender else { return };
        if self.senders.get(value).is_some_and(|c| sender.is(c)) {
            return;
        }
        if let Some(before) = self.senders.insert(value.to_owned(), sender.to_owned()) {
            self.debit(&before);
        }
        match self.per_sender.iter_mut().find(|(c, _)| sender.is(c)) {
            Some((_, n)) => *n += 1,
            None => self.per_sender.push((sender.to_owned(), 1)),
        }
    }

    /// `per_sender` from `senders` (after a load: it is not saved).
    fn rebuild_per_sender(&mut self) {
        self.per_sender.clear();
        for c in self.senders.values() {
            match self.per_sender.iter_mut().find(|(known, _)| known == c) {
                Some((_, n)) => *n += 1,
                None => self.per_sender.push((c.clone(), 1)),
            }
        }
    }

    fn forget(&mut self, value: &str) {
        if let Some(sender) = self.senders.remove(value) {
            self.debit(&sender);
        }
    }

    fn debit(&mut self, sender: &Contributor) {
        if let Some(i) = self.per_sender.iter().position(|(c, _)| c == sender) {
            self.per_sender[i].1 -= 1;
            if self.per_sender[i].1 == 0 {
                self.per_sender.swap_remove(i);
            }
        }
    }

    /// The sender of the most values in the window; `current` wins a tie.
    fn top_sender(&self, current: Option<Sender<'_>>) -> Option<&(Contributor, u32)> {
        let own = current.and_then(|s| self.per_sender.iter().find(|(c, _)| s.is(c)));
        let top = self.per_sender.iter().max_by_key(|(_, n)| *n)?;
        Some(match own {
            Some(mine) if mine.1 >= top.1 => mine,
            _ => top,
        })
    }
}

/// Who sent a record: its collector and process (a rate alert names the process behind
/// most of the distinct values, not whichever sent the one that crossed the limit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contributor {
    pub source: String,
    pub pid: u32,
    pub start_time: UnixNanos,
}

/// A [`Contributor`] borrowed from the record at hand (no allocation per record).
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub source: &'a str,
    pub pid: u32,
    pub start_time: UnixNanos,
}

impl Sender<'_> {
    pub fn is(&self, c: &Contributor) -> bool {
        self.pid == c.pid && self.start_time == c.start_time && self.source == c.source
    }

    fn to_owned(self) -> Contributor {
        Contributor {
            source: self.source.to_owned(),
            pid: self.pid,
            start_time: self.start_time,
        }
    }
}

/// Every stateful rule's state, keyed by rule id then key.
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    windows: HashMap<String, HashMap<String, Window>>,
    learned: HashMap<String, HashMap<String, Learned>>,
    distinct: HashMap<String, HashMap<String, Distinct>>,
    /// Last counter value per socket (see [`socket_id`]), to add deltas of cumulative
    /// counters.
    sockets: HashMap<u64, u64>,
    /// The scheme of the ids in `sockets` (absent in files from before it had a number);
    /// ids of another scheme are dropped at load.
    #[serde(default)]
    socket_ids: u32,
    /// A socket first seen before this time and not in `sockets` lost its baseline when
    /// the ids were dropped: its next record sets one and adds nothing, so a long-lived
    /// socket's whole history is not counted again as one burst.
    #[serde(default)]
    untracked_before: UnixNanos,
    /// Keys not tracked because a rule was at its bound.
    pub keys_refused: u64,
}

/// The current [`socket_id`] scheme (1: FNV-1a over bytes, before it was numbered).
const SOCKET_IDS: u32 = 2;

impl Default for State {
    fn default() -> Self {
        State {
            windows: HashMap::default(),
            learned: HashMap::default(),
            distinct: HashMap::default(),
            sockets: HashMap::default(),
            socket_ids: SOCKET_IDS,
            untracked_before: 0,
            keys_refused: 0,
        }
    }
}

/// What the state said about one matching record.
pub struct Verdict {
    pub fire: bool,
    /// A line for the alert's evidence.
    pub evidence: String,
    /// For a rate that fired: the process behind most of the distinct values, when it is
    /// not the record's own.
    pub culprit: Option<Contributor>,
}

impl State {
    /// Loads saved state; a missing file is a fresh start, a corrupt one an error.
    pub fn load(path: &Path) -> Result<State, StateError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let mut state: State =
                    serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    })?;
                if state.socket_ids != SOCKET_IDS {
                    tracing::info!(
                        sockets = state.sockets.len(),
                        "rule state from an older socket-id scheme: socket baselines reset"
                    );
                    state.sockets.clear();
                    state.socket_ids = SOCKET_IDS;
                    state.untracked_before = crate::model::now_ns();
                }
                for d in state
                    .distinct
                    .values_mut()
                    .flat_map(|keys| keys.values_mut())
                {
                    d.rebuild_per_sender();
                }
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(StateError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes atomically and durably ([`crate::durable::write_atomic`]): a crash or a power
    /// cut leaves the old copy or the new one, never a torn file.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let write = |source| StateError::Write {
            path: path.to_owned(),
            source,
        };
        let bytes = serde_json::to_vec(self).map_err(|e| write(std::io::Error::other(e)))?;
        crate::durable::write_atomic(path, &bytes).map_err(write)
    }

    /// Forgets rules that are no longer loaded (after a reload).
    pub fn retain_rules(&mut self, ids: &std::collections::HashSet<&str>) {
        self.windows.retain(|k, _| ids.contains(k.as_str()));
        self.learned.retain(|k, _| ids.contains(k.as_str()));
        self.distinct.retain(|k, _| ids.contains(k.as_str()));
    }

    /// Whether `value` is unknown for `key` of new-value rule `rule_id` and there is room
    /// to learn it (a value the bounds refuse is not asked about again and again).
    pub fn learnable(&self, rule_id: &str, key: &str, value: &str) -> bool {
        let Some(per_rule) = self.learned.get(rule_id) else {
            return true;
        };
        match per_rule.get(key) {
            Some(l) => !l.values.contains(value) && l.values.len() < MAX_VALUES_PER_KEY,
            None => per_rule.len() < MAX_KEYS_PER_RULE,
        }
    }

    /// What the replicas' shared state knows of `value` for `key`: the key's learning
    /// clock starts when any replica first saw it, and a value another replica learned is
    /// known here.
    pub fn seed(
        &mut self,
        rule_id: &str,
        key: &str,
        value: &str,
        learned: crate::rules::shared::Learned,
    ) {
        let refused = &mut self.keys_refused;
        let per_rule = per_rule(&mut self.learned, rule_id);
        let Some(l) = bounded_entry(per_rule, key, refused) else {
            return;
        };
        if l.first_seen == 0 || learned.key_first_seen < l.first_seen {
            l.first_seen = learned.key_first_seen;
        }
        if learned.known && l.values.len() < MAX_VALUES_PER_KEY {
            l.values.insert(value.to_owned());
        }
    }

    /// Applies one matching record. `key` is the rendered key; `value` the rendered value
    /// field (new value, rate) and `amount` the numeric field (threshold sum).
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        rule_id: &str,
        kind: &Kind,
        key: &str,
        value: Option<&str>,
        amount: Option<u64>,
        socket: Option<(&str, &Record)>,
        sender: Option<Sender<'_>>,
        now: UnixNanos,
    ) -> Verdict {
        match kind {
            Kind::Threshold(t) => {
                let add = match (&t.sum, amount) {
                    (None, _) => 1,
                    (Some(field), Some(total)) => match socket {
                        Some((source, record)) => self.delta(source, record, field, total),
                        None => total,
                    },
                    (Some(_), None) => 0,
                };
                let refused = &mut self.keys_refused;
                let per_rule = per_rule(&mut self.windows, rule_id);
                let Some(w) = bounded_entry(per_rule, key, refused) else {
                    return quiet();
                };
                let window = nanos(t.window);
                let horizon = now.saturating_sub(window);
                while w.events.front().is_some_and(|(at, _)| *at <= horizon) {
                    let (_, old) = w.events.pop_front().unwrap_or_default();
                    w.total -= old;
                }
                if add > 0 {
                    w.add(now, add, window);
                }
                let fire = w.total > t.above;
                Verdict {
                    culprit: None,
                    fire,
                    evidence: lazy(fire, || {
                        format!(
                            "{} {} over {} (threshold {})",
                            t.sum.as_deref().unwrap_or("records"),
                            w.total,
                            humantime::format_duration(t.window),
                            t.above
                        )
                    }),
                }
            }
            Kind::NewValue(n) => {
                let Some(value) = value else { return quiet() };
                let refused = &mut self.keys_refused;
                let per_rule = per_rule(&mut self.learned, rule_id);
                let Some(l) = bounded_entry(per_rule, key, refused) else {
                    return quiet();
                };
                if l.first_seen == 0 {
                    l.first_seen = now;
                }
                let learning = now < l.first_seen.saturating_add(nanos(n.learning));
                let known = l.values.contains(value) || n.allow.iter().any(|a| a == value);
                if !known && l.values.len() < MAX_VALUES_PER_KEY {
                    l.values.insert(value.to_owned());
                }
                let fire = !learning && !known;
                Verdict {
                    culprit: None,
                    fire,
                    evidence: lazy(fire, || {
                        format!(
                        "{} = {value} is new for this key after {} of learning ({} values known)",
                        n.value,
                        humantime::format_duration(n.learning),
                        l.values.len()
                    )
                    }),
                }
            }
            Kind::Rate(r) => {
                let Some(value) = value else { return quiet() };
                let refused = &mut self.keys_refused;
                let per_rule = per_rule(&mut self.distinct, rule_id);
                let Some(d) = bounded_entry(per_rule, key, refused) else {
                    return quiet();
                };
                let horizon = now.saturating_sub(nanos(r.window));
                while d.events.front().is_some_and(|(at, _)| *at <= horizon) {
                    if let Some((_, old)) = d.events.pop_front() {
                        if let Some(c) = d.counts.get_mut(&old) {
                            *c -= 1;
                            if *c == 0 {
                                d.counts.remove(&old);
                                d.forget(&old);
                            }
                        }
                    }
                }
                if d.events.len() < MAX_VALUES_PER_KEY {
                    d.events.push_back((now, value.to_owned()));
                    *d.counts.entry_ref(value).or_default() += 1;
                    d.credit(value, sender);
                }
                let fire = d.counts.len() as u64 > r.above;
                let top = if fire { d.top_sender(sender) } else { None };
                Verdict {
                    culprit: top
                        .filter(|(c, _)| !sender.is_some_and(|s| s.is(c)))
                        .map(|(c, _)| c.clone()),
                    fire,
                    evidence: lazy(fire, || {
                        format!(
                            "{} distinct {} in {} (threshold {}){}",
                            d.counts.len(),
                            r.distinct,
                            humantime::format_duration(r.window),
                            r.above,
                            top.map_or(String::new(), |(c, n)| format!(
                                "; {n} of them last sent by pid {}",
                                c.pid
                            ))
                        )
                    }),
                }
            }
        }
    }

    /// What a cumulative flow counter added since the socket's previous record.
    fn delta(&mut self, source: &str, record: &Record, field: &str, total: u64) -> u64 {
        let Record::Flow(f) = record else {
            return total;
        };
        let id = socket_id(source, f.cookie, field);
        let before = if f.phase == FlowPhase::End {
            self.sockets.remove(&id)
        } else if self.sockets.len() < MAX_SOCKETS || self.sockets.contains_key(&id) {
            self.sockets.insert(id, total)
        } else {
            None
        };
        match before {
            Some(before) => total.saturating_sub(before),
            None if f.phase != FlowPhase::Start && f.first_seen < self.untracked_before => 0,
            None => total,
        }
    }
}

/// A socket's id in `sockets`: (collector, cookie, counter field), 8 bytes per step
/// (FxHash's rotate-xor-multiply; FNV-1a before went byte by byte, a serial multiply per
/// byte on every flow). Stable across restarts, as the ids are saved. For one collector and field, the
/// steps after the cookie are bijections, so distinct cookies never collide.
fn socket_id(source: &str, cookie: u64, field: &str) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let step = |h: u64, word: u64| (h.rotate_left(5) ^ word).wrapping_mul(K);
    let words = |h: u64, bytes: &[u8]| {
        let whole = bytes.chunks_exact(8);
        let tail = whole.remainder();
        let h = whole.fold(h, |h, chunk| {
            step(h, u64::from_le_bytes(chunk.try_into().unwrap_or_default()))
        });
        let h = step(
            h,
            tail.iter()
                .enumerate()
                .fold(0, |word, (i, &b)| word | u64::from(b) << (8 * i)),
        );
        step(h, bytes.len() as u64)
    };
    words(step(words(0, source.as_bytes()), cookie), field.as_bytes())
}

/// The map of one rule, allocating its id only the first time.
fn per_rule<'a, T>(
    maps: &'a mut HashMap<String, HashMap<String, T>>,
    rule_id: &str,
) -> &'a mut HashMap<String, T> {
    maps.entry_ref(rule_id).or_default()
}

fn bounded_entry<'a, T: Default>(
    map: &'a mut HashMap<String, T>,
    key: &str,
    refused: &mut u64,
) -> Option<&'a mut T> {
    let full = map.len() >= MAX_KEYS_PER_RULE;
    match map.entry_ref(key) {
        EntryRef::Occupied(e) => Some(e.into_mut()),
        EntryRef::Vacant(_) if full => {
            *refused += 1;
            None
        }
        EntryRef::Vacant(e) => Some(e.insert(T::default())),
    }
}

/// Evidence is only written for a verdict that fires (formatting is most of the cost).
fn lazy(fire: bool, text: impl FnOnce() -> String) -> String {
    if fire {
        text()
    } else {
        String::new()
    }
}

fn quiet() -> Verdict {
    Verdict {
        culprit: None,
        fire: false,
        evidence: String::new(),
    }
}

/// Durations are written as in the CLI: `30s`, `10m`, `1h 30m`.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids are saved: a change to the function must come with a new SOCKET_IDS number.
    #[test]
    fn socket_ids_are_pinned_to_their_scheme() {
        assert_eq!(SOCKET_IDS, 2);
        let pinned = socket_id("c-web-7c9f8d6b5-x2k4q", 7, "fd.bytes_sent");
        assert_eq!(
            pinned, PINNED,
            "socket_id changed: bump SOCKET_IDS and PINNED"
        );
        let ids: std::collections::HashSet<u64> = (0..10_000u64)
            .map(|cookie| socket_id("c-web", cookie, "fd.bytes_sent"))
            .collect();
        assert_eq!(ids.len(), 10_000);
        assert_ne!(
            socket_id("c-web", 1, "fd.bytes_sent"),
            socket_id("c-web", 1, "fd.bytes_received")
        );
        assert_ne!(
            socket_id("c-web", 1, "fd.bytes_sent"),
            socket_id("c-weB", 1, "fd.bytes_sent")
        );
    }

    const PINNED: u64 = 18_206_879_043_095_905_613;

    #[test]
    fn a_busy_window_stays_small_and_counts_a_slice_at_most_too_long() {
        let window = 32_000u64; // slices of 1,000 ns
        let mut w = Window::default();
        for at in 0..100_000u64 {
            w.add(at, 1, window);
        }
        assert_eq!(w.total, 100_000);
        assert_eq!(w.events.len(), 100, "one entry per slice, not per record");
        // The slice 5,000..5,999 leaves with its last record, not before.
        let mut w = Window::default();
        w.add(5_000, 7, window);
        w.add(5_999, 3, window);
        w.add(6_000, 1, window);
        assert_eq!(
            w.events.iter().copied().collect::<Vec<_>>(),
            [(5_999, 10), (6_000, 1)]
        );
    }
}
