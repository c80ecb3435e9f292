//! A window's raw ends beside its rolled-up hours. Rollups answer whole hours; a window that
//! starts inside an hour (`--since 24h`) or ends inside one reads the raw records there, and
//! each socket still counts once, with its last counters in the window:
//! - the head, from the window's start to the end of its hour: a socket still open there that
//!   a rolled-up hour of the window saw again is left to that hour's row, which names the
//!   head's hour as the one it was last seen before and so counts in full (the rolled-up
//!   hours' window starts after the head's hour) with the socket's counters then; the
//!   others count in the head with their last counters there.
//! - the tail, from the start of its hour: folded as an hour is, on what the last hour read
//!   from rollups carried, so a socket seen before in the window adds only its growth; the
//!   head's sockets that no rolled-up hour saw again are marked as seen in the window.
//!
//! Which of the head's open sockets a rolled-up hour saw again the carries tell: carried out
//! of the head's hour, and at the end of the last hour read from rollups either gone (it
//! ended) or last seen after the head's hour. Counters only grow over a socket's life (the
//! collector keeps the last values on a reset): a record with smaller counters in the hour
//! a head socket is seen again would lose the head's larger ones here.

use crate::aggregator::investigate::Question;
use crate::aggregator::store::{EventQuery, RollupProgress, RollupStore, Store, StoreError};
use crate::investigate::rollup::{hour_of, Carry, HourBuilder, PodHour, HOUR};
use crate::investigate::{PodDirectory, ProcessNames};
use crate::model::{Event, RecordKind};

use super::codec;

/// What the ends read: what a window's answer counts. An hour's rollups read heartbeats and
/// alerts too, but a window's answer takes neither (its pods come from one heartbeat per
/// collector: an hour holds a minute's heartbeat from every pod, 60,000 for 1,000 pods,
/// and they were read twice, more segments than the hour's flows).
const KINDS: [RecordKind; 3] = [RecordKind::Flow, RecordKind::Process, RecordKind::Listener];

/// How a window `[since, until]` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    /// The window's start, when its first hour is read raw from there.
    pub head: Option<u64>,
    /// The first and last hour read from rollups (none when `first > last`).
    pub first: u64,
    pub last: u64,
    /// Where the raw tail starts (an hour's start, or the window's), if there is one.
    pub tail: Option<u64>,
}

impl Plan {
    /// The plan of `[since, until]` (`u64::MAX`: open) when the hours before `built_end`
    /// are rolled up and raw records are kept from `horizon`.
    pub fn of(since: u64, until: u64, built_end: u64, horizon: u64) -> Plan {
        let hour = hour_of(since);
        // Saturating: a reader's window may start in the last hour u64 holds.
        let next = hour.saturating_add(HOUR);
        let head = (since % HOUR != 0 && since >= horizon && next <= built_end).then_some(since);
        let first = if head.is_some() { next } else { hour };
        let last_built = built_end.saturating_sub(HOUR);
        if until >= built_end {
            return Plan {
                head,
                first,
                last: last_built,
                tail: Some(since.max(built_end)),
            };
        }
        let partial = until.saturating_add(1) % HOUR != 0 && until >= horizon;
        Plan {
            head,
            first,
            last: if partial {
                hour_of(until).saturating_sub(HOUR)
            } else {
                hour_of(until)
            },
            tail: partial.then(|| hour_of(until)),
        }
    }
}

/// A window's raw ends read ([`Ends::collect`]): the head's and the tail's pod-periods,
/// each with the pods that reported then.
#[derive(Default)]
pub(super) struct RawEnds {
    pub head: Vec<PodHour>,
    pub pods: PodDirectory,
    pub tail: Vec<PodHour>,
    pub tail_pods: PodDirectory,
}

/// A window's plan with the carries its raw ends need.
pub(super) struct Ends {
    pub plan: Plan,
    /// What the head's hour carried on.
    carried_in: Carry,
    /// What the last hour read from rollups carried on.
    carried_out: Carry,
}

impl Ends {
    /// The window's plan and carries; None when the raw records answer it better (its
    /// head's hour is the only one rolled up, or a carry it needs is no longer kept while
    /// its raw records are).
    pub fn read(
        rollups: &dyn RollupStore,
        progress: &RollupProgress,
        (since, until): (u64, u64),
        horizon: u64,
    ) -> Result<Option<Ends>, StoreError> {
        let mut plan = Plan::of(since, until, progress.hour + HOUR, horizon);
        if plan.head.is_some() && plan.first > plan.last {
            return Ok(None);
        }
        let carry = |hour: u64| -> Result<Option<Carry>, StoreError> {
            let blob = if hour == progress.hour {
                Some(progress.carry.clone())
            } else {
                rollups.rollup_carry(hour)?
            };
            blob.map(|b| codec::decode_carry(&b)).transpose()
        };
        let carried_out = if plan.head.is_some() || plan.tail.is_some() {
            match carry(plan.last)? {
                Some(c) => c,
                None if since >= horizon => return Ok(None),
                // Past the raw retention there is no other answer: the window's last hour
                // is read whole from rollups, as before the carries were kept.
                None => {
                    plan.last = hour_of(until);
                    plan.tail = None;
                    Carry::new()
                }
            }
        } else {
            Carry::new()
        };
        let carried_in = match plan.head {
            Some(head) => match carry(hour_of(head))? {
                Some(c) => c,
                None => return Ok(None),
            },
            None => Carry::new(),
        };
        Ok(Some(Ends {
            plan,
            carried_in,
            carried_out,
        }))
    }

    /// The head and the tail read apart from the rows ([`Ends::head`], then
    /// [`Ends::tail`]); `observe` sees their records.
    pub fn collect(
        mut self,
        store: &dyn Store,
        q: &Question,
        names: &ProcessNames,
        observe: &mut dyn FnMut(&Event),
    ) -> Result<RawEnds, StoreError> {
        let mut raw = RawEnds::default();
        let head = &mut raw.head;
        self.head(
            store,
            q,
            names,
            (&mut |p| head.push(p), Some(&mut raw.pods)),
            observe,
        )?;
        let tail = &mut raw.tail;
        self.tail(
            store,
            q,
            names,
            (&mut |p| tail.push(p), Some(&mut raw.tail_pods)),
            observe,
        )?;
        Ok(raw)
    }

    /// Hands the head's raw records to `merge` as pod-hours (call it first: rows come in
    /// time order) and their pods to `pods` (if wanted); `observe` sees them.
    pub fn head(
        &mut self,
        store: &dyn Store,
        q: &Question,
        names: &ProcessNames,
        (merge, pods): (&mut dyn FnMut(PodHour), Option<&mut PodDirectory>),
        observe: &mut dyn FnMut(&Event),
    ) -> Result<(), StoreError> {
        let Some(since) = self.plan.head else {
            return Ok(());
        };
        let first = self.plan.first;
        let mut builder = HourBuilder::default();
        read_raw(store, q, (since, first - 1), &mut builder, pods, observe)?;
        let (carried_in, carried_out) = (&self.carried_in, &self.carried_out);
        let mut id = (String::new(), 0);
        builder.forget_open(|collector, cookie| {
            id.0.clear();
            id.0.push_str(collector);
            id.1 = cookie;
            carried_in.contains_key(&id) && carried_out.get(&id).is_none_or(|c| c.hour >= first)
        });
        let mut kept = Carry::new();
        let (hours, _) = builder.finish(hour_of(since), names, &mut kept, 0);
        hours.into_iter().for_each(&mut *merge);
        // Counted here: the tail adds only what they grew.
        for (id, _) in kept {
            if let Some(c) = self.carried_out.get_mut(&id) {
                c.hour = c.hour.max(first);
            }
        }
        Ok(())
    }

    /// Hands the tail's raw records to `merge` as pod-hours and their pods to `pods` (if
    /// wanted); `observe` sees them.
    pub fn tail(
        mut self,
        store: &dyn Store,
        q: &Question,
        names: &ProcessNames,
        (merge, pods): (&mut dyn FnMut(PodHour), Option<&mut PodDirectory>),
        observe: &mut dyn FnMut(&Event),
    ) -> Result<(), StoreError> {
        let Some(from) = self.plan.tail else {
            return Ok(());
        };
        let from = from.max(q.query.since);
        let mut builder = HourBuilder::default();
        read_raw(store, q, (from, q.query.until), &mut builder, pods, observe)?;
        let (hours, _) = builder.finish(hour_of(from), names, &mut self.carried_out, 0);
        hours.into_iter().for_each(&mut *merge);
        Ok(())
    }
}

/// The question's raw records in `[from, to]` (0: open) into `builder`, `observe` seeing
/// them, and every pod that reported then (in the namespaces that may name peers) into
/// `pods`, if wanted: a baseline names no peers, and each collector's first heartbeat of
/// an end was a scan of the end's heartbeats (60,000 an hour for 1,000 pods).
fn read_raw(
    store: &dyn Store,
    q: &Question,
    (from, to): (u64, u64),
    builder: &mut HourBuilder,
    pods: Option<&mut PodDirectory>,
    observe: &mut dyn FnMut(&Event),
) -> Result<(), StoreError> {
    let part = EventQuery {
        kinds: KINDS.to_vec(),
        since: from,
        until: to,
        ..q.query.clone()
    };
    store.scan(&part, &mut |e| {
        observe(&e);
        builder.add(&e)
    })?;
    let Some(pods) = pods else {
        return Ok(());
    };
    let reported = store.sources(&EventQuery {
        kinds: vec![RecordKind::Heartbeat],
        pods: Vec::new(),
        namespaces: q.peer_namespaces.clone(),
        ..part
    })?;
    for source in reported {
        pods.note(&source);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = HOUR;

    #[test]
    fn plans_read_whole_hours_from_rollups_and_the_ends_raw() {
        let m = 60_000_000_000;
        // Built through hour 9; raw records kept from hour 2.
        let plan = |since, until| Plan::of(since, until, 10 * H, 2 * H);
        // Hour-aligned, closed: rollups only.
        assert_eq!(
            plan(3 * H, 6 * H - 1),
            Plan {
                head: None,
                first: 3 * H,
                last: 5 * H,
                tail: None
            }
        );
        // `--since 24h`: a raw head, rollups, the raw tail after the hours built.
        assert_eq!(
            plan(3 * H + 20 * m, u64::MAX),
            Plan {
                head: Some(3 * H + 20 * m),
                first: 4 * H,
                last: 9 * H,
                tail: Some(10 * H)
            }
        );
        // Both ends inside built hours.
        assert_eq!(
            plan(3 * H + 20 * m, 7 * H + 5 * m),
            Plan {
                head: Some(3 * H + 20 * m),
                first: 4 * H,
                last: 6 * H,
                tail: Some(7 * H)
            }
        );
        // Before the raw horizon: read whole, as before.
        assert_eq!(
            plan(H + 20 * m, 7 * H + 5 * m),
            Plan {
                head: None,
                first: H,
                last: 6 * H,
                tail: Some(7 * H)
            }
        );
        assert_eq!(plan(H + 20 * m, H + 30 * m).tail, None);
        // A reader's window in the last hour u64 holds (window.since = u64::MAX - 1, open):
        // nothing rolled up, nothing raw before it. Before, `hour + HOUR` overflowed: a
        // panic in a debug build, and in a release build a head whose rolled-up hours ran
        // from the epoch, so the far future's answer was the whole history.
        for since in [u64::MAX - 1, u64::MAX - 30 * m] {
            let far = plan(since, u64::MAX);
            assert_eq!(far.head, None);
            assert!(far.first > far.last, "{far:?}");
            assert_eq!(far.tail, Some(since));
        }
        // The head's hour not built: no head.
        assert_eq!(plan(10 * H + 20 * m, u64::MAX).head, None);
        assert_eq!(plan(10 * H + 20 * m, u64::MAX).tail, Some(10 * H + 20 * m));
    }
}
