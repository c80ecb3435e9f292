//! Rollups over the store: [`RollupBuilder`] rolls up each hour once it has closed (on every
//! replica, every minute; the store keeps the first replica's hour and refuses the others'),
//! and with a day's last hour the day folded from its hours; [`activity`] answers a window
//! from them (days for the whole days inside it, hours at its ends), with the raw records
//! of the parts of hours at its ends and after the last hour built (`ends`). The pure folding is `investigate::rollup`; the encoding is
//! `body` (pod-periods) and `codec` (the rest, and pod-hours stored before `body`).

mod body;
mod codec;
mod ends;

use std::sync::Arc;
use std::time::Duration;

use crate::aggregator::investigate::{BaselineCache, BaselineKey, Question};
use crate::aggregator::store::{
    EventQuery, Grain, RollupDay, RollupHour, RollupSegment, RollupStore, Store, StoreError,
};
use crate::investigate::rollup::{
    day_of, fold_day, fold_pods, hour_of, Carry, HourBuilder, Merger, PodAddress, PodHour, DAY,
    HOUR,
};
use crate::investigate::{Activity, Baseline, EdgeOrder, PodDirectory, ProcessNames, Talkers};
use crate::model::{Event, Record, RecordKind};
use ends::{Ends, RawEnds};

/// An hour is rolled up this long after it ends: records are timed by arrival, and a batch
/// received at its end may still be in its transaction.
const GRACE: u64 = 120_000_000_000;

/// What an hour's rollups read.
const KINDS: [RecordKind; 5] = [
    RecordKind::Flow,
    RecordKind::Process,
    RecordKind::Listener,
    RecordKind::Heartbeat,
    RecordKind::Alert,
];

/// Builds the closed hours not rolled up yet, in order.
pub struct RollupBuilder {
    store: Arc<dyn Store>,
    /// Process names from every process record before `names_until`.
    names: ProcessNames,
    names_until: u64,
}

impl RollupBuilder {
    pub fn new(store: Arc<dyn Store>) -> RollupBuilder {
        RollupBuilder {
            store,
            names: ProcessNames::default(),
            names_until: 0,
        }
    }

    /// Rolls up every hour closed at `now` and not rolled up yet (by any replica); returns
    /// how many this call stored. Blocking.
    pub fn catch_up(&mut self, now: u64) -> Result<usize, StoreError> {
        let horizon = self.store.raw_horizon(now);
        let store = self.store.clone();
        let Some(rollups) = store.rollups() else {
            return Ok(0);
        };
        let mut stored = 0;
        loop {
            let (hour, mut carry) = match rollups.rollup_progress()? {
                Some(p) => (p.hour + HOUR, codec::decode_carry(&p.carry)?),
                None => match self.first_hour(horizon)? {
                    Some(hour) => (hour, Carry::new()),
                    None => return Ok(stored),
                },
            };
            // Hours whose raw records are gone cannot be rolled up any more.
            let hour = hour.max(hour_of(horizon));
            if hour + HOUR + GRACE > now {
                return Ok(stored);
            }
            let (pods, addresses) = self.build(hour, &mut carry, hour_of(horizon))?;
            if store_hour(rollups, hour, &pods, &addresses, &carry)? {
                stored += 1;
            }
        }
    }

    /// The hour of the oldest raw record kept, if any.
    fn first_hour(&self, horizon: u64) -> Result<Option<u64>, StoreError> {
        let mut first = None;
        self.store.scan(
            &EventQuery {
                since: horizon,
                ..EventQuery::default()
            },
            &mut |e| {
                first = Some(hour_of(e.received_at));
                false
            },
        )?;
        Ok(first)
    }

    fn build(
        &mut self,
        hour: u64,
        carry: &mut Carry,
        expire_before: u64,
    ) -> Result<(Vec<PodHour>, Vec<PodAddress>), StoreError> {
        if self.names_until < hour {
            let names = &mut self.names;
            self.store.scan(
                &EventQuery {
                    kinds: vec![RecordKind::Process],
                    since: self.names_until,
                    until: hour - 1,
                    ..EventQuery::default()
                },
                &mut |e| {
                    note_process(names, &e);
                    true
                },
            )?;
        }
        let mut builder = HourBuilder::default();
        let names = &mut self.names;
        self.store.scan(
            &EventQuery {
                kinds: KINDS.to_vec(),
                since: hour,
                until: hour + HOUR - 1,
                ..EventQuery::default()
            },
            &mut |e| {
                note_process(names, &e);
                builder.add(&e)
            },
        )?;
        self.names_until = hour + HOUR;
        Ok(builder.finish(hour, &self.names, carry, expire_before))
    }
}

/// Stores one hour's rollups (`pods`, the pods seen with their addresses, the sockets
/// carried to the next hour) unless another replica stored that hour first; when it is
/// the last hour of its day, also the day folded from the day's stored hours and this one.
/// Returns whether the hour was stored. Blocking.
pub fn store_hour(
    rollups: &dyn RollupStore,
    hour: u64,
    pods: &[PodHour],
    addresses: &[PodAddress],
    carry: &Carry,
) -> Result<bool, StoreError> {
    let day = if hour + HOUR == day_of(hour) + DAY {
        Some(fold_stored_day(rollups, hour, pods, addresses)?)
    } else {
        None
    };
    rollups.put_rollup(RollupHour {
        hour,
        segments: segments(hour, pods),
        pods: codec::encode_pods(addresses),
        carry: codec::encode_carry(carry),
        day,
    })
}

fn segments(start: u64, periods: &[PodHour]) -> Vec<RollupSegment> {
    periods
        .iter()
        .map(|p| RollupSegment {
            hour: start,
            namespace: p.pod_namespace.clone(),
            pod: p.pod_name.clone(),
            body: body::encode(p, start),
        })
        .collect()
}

/// The day ending with `last` (whose pod-hours are not stored yet) from its hours.
fn fold_stored_day(
    rollups: &dyn RollupStore,
    last: u64,
    pods: &[PodHour],
    addresses: &[PodAddress],
) -> Result<RollupDay, StoreError> {
    let day = day_of(last);
    let before = EventQuery {
        since: day,
        until: last - 1,
        ..EventQuery::default()
    };
    let mut hours = Vec::new();
    let mut failed = None;
    rollups.scan_rollups(Grain::Hour, &before, &mut |s| match body::decode(&s) {
        Ok(p) => {
            hours.push(p);
            true
        }
        Err(e) => {
            failed = Some(e);
            false
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    hours.extend_from_slice(pods);
    let mut seen = Vec::new();
    for (_, blob) in rollups.rollup_pods(Grain::Hour, day, last - 1)? {
        seen.push(codec::decode_pods(&blob)?);
    }
    seen.push(addresses.to_vec());
    Ok(RollupDay {
        day,
        segments: segments(day, &fold_day(day, hours)),
        pods: codec::encode_pods(&fold_pods(seen)),
    })
}

fn note_process(names: &mut ProcessNames, e: &Event) {
    if let Record::Process(p) = &e.record {
        names.add(&e.source, p);
    }
}

/// Rolls up closed hours every minute on a thread of its own until the handle is dropped
/// (every replica does; the store keeps one copy of each hour).
pub fn spawn(store: Arc<dyn Store>) -> std::io::Result<RollupsHandle> {
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    std::thread::Builder::new()
        .name("rollups".into())
        .spawn(move || {
            let mut builder = RollupBuilder::new(store);
            loop {
                match builder.catch_up(crate::model::now_ns()) {
                    Ok(0) => {}
                    Ok(hours) => tracing::info!(hours, "hours rolled up"),
                    Err(error) => tracing::warn!(%error, "rolling up hours failed"),
                }
                if !matches!(
                    stopped.recv_timeout(Duration::from_secs(60)),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout)
                ) {
                    return;
                }
            }
        })?;
    Ok(RollupsHandle { _stop: stop })
}

/// Stops the rollups thread when dropped (after the hour it may be building).
pub struct RollupsHandle {
    _stop: crossbeam_channel::Sender<()>,
}

/// The activity of the question's window from the rollups of its whole hours and the raw
/// records at its ends (`ends`: the hour it starts in, the hour it ends in, and the hours
/// after the last one built), `observe` seeing those; None when the store holds no rollups,
/// or they would not spare reading the window raw. Outside the raw retention rollups
/// answer whole hours: the window starts at its first hour's start.
/// `firsts`: whether the answer needs executables and listening ports.
pub fn activity(
    store: &dyn Store,
    q: &Question,
    names: &ProcessNames,
    firsts: bool,
    observe: &mut dyn FnMut(&Event),
) -> Result<Option<Activity>, StoreError> {
    let Some((merger, pods)) = merged(store, q, names, firsts, observe)? else {
        return Ok(None);
    };
    merger
        .finish(&pods, body::decode_executable, body::decode_listener)
        .map(Some)
}

/// The question's window as a baseline, read as [`activity`] reads it; its edges are not
/// built. The baseline of its rolled-up hours is kept in `kept` (by those hours: the next
/// question within the hour whose baseline covers the same built hours takes it, however
/// its ends differ), its raw ends are read each time and laid over it
/// ([`Baseline::atop`]): the same baseline as one merger of both gives.
pub(crate) fn baseline(
    store: &dyn Store,
    q: &Question,
    names: &ProcessNames,
    kept: &BaselineCache<Baseline>,
) -> Result<Option<Baseline>, StoreError> {
    let Some((rollups, mut ends)) = ends_of(store, q)? else {
        return Ok(None);
    };
    let plan = ends.plan;
    let raw_ends = move || {
        // A baseline names no peers: the pods that reported are not asked.
        let mut raw = Merger::new(plan.first, q.flows.clone(), true);
        let mut add = |p: PodHour| raw.add(p);
        ends.head(store, q, names, (&mut add, None), &mut |_| {})?;
        ends.tail(store, q, names, (&mut add, None), &mut |_| {})?;
        raw.baseline(body::decode_executable, body::decode_listener)
    };
    let rows = || -> Result<Arc<Baseline>, StoreError> {
        let merger = Merger::new(plan.first, q.flows.clone(), true);
        let mut halves = [merger.apart(), merger];
        let mut pods = PodDirectory::default();
        std::thread::scope(|s| {
            let rows = Rows::read(s, rollups, q, plan);
            merge_rows(rows, q, (&mut halves, &mut 0), &mut pods)
        })?;
        let [apart, mut merger] = halves;
        merger.absorb(apart);
        Ok(Arc::new(merger.baseline(
            body::decode_executable,
            body::decode_listener,
        )?))
    };
    let key = BaselineKey::rows(q, plan.first, plan.last);
    let (raw, rows) = match kept.get(&key) {
        Some(rows) => (raw_ends()?, rows),
        None => {
            // The rows read and merged on threads of their own while this one reads the
            // raw ends: neither needs the other, and one after the other they were most of
            // a first `new` (an hour of raw records, then 22 hours of rows, while the
            // window's reader had finished).
            let (raw, rows) = std::thread::scope(|s| {
                let apart = std::thread::Builder::new()
                    .name("baseline-rows".into())
                    .spawn_scoped(s, rows);
                let raw = raw_ends();
                let rows = match apart {
                    Ok(thread) => thread
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                    // No thread to be had: one after the other.
                    Err(_) => rows(),
                };
                (raw, rows)
            });
            let rows = rows?;
            kept.put(key, rows.clone());
            (raw?, rows)
        }
    };
    Ok(Some(raw.atop(rows)))
}

/// Who talked to whom in the question's window, read as [`activity`] reads it: only the
/// `limit` edges kept are built.
pub fn talkers(
    store: &dyn Store,
    q: &Question,
    names: &ProcessNames,
    (order, limit): (EdgeOrder, usize),
    observe: &mut dyn FnMut(&Event),
) -> Result<Option<Talkers>, StoreError> {
    Ok(merged(store, q, names, false, observe)?
        .map(|(merger, pods)| merger.talkers(&pods, order, limit)))
}

/// The window's rows and raw ends folded, with the pods that name its peers.
fn merged(
    store: &dyn Store,
    q: &Question,
    names: &ProcessNames,
    firsts: bool,
    observe: &mut dyn FnMut(&Event),
) -> Result<Option<(Merger, PodDirectory)>, StoreError> {
    let Some((rollups, ends)) = ends_of(store, q)? else {
        return Ok(None);
    };
    let plan = ends.plan;
    let merger = Merger::new(plan.first, q.flows.clone(), firsts);
    // The window's pods in two halves, each merged apart (`merge_rows`); each piece goes
    // to its pod's half, numbered in the window's order (`Merger::piece`), so the halves
    // absorbed into one give what one merger of every piece gives.
    let mut halves = [merger.apart(), merger];
    let mut seq = 0;
    let mut rows_pods = PodDirectory::default();
    // The rows read and merged on threads of their own while this one reads both raw
    // ends: neither needs the other (an hour of raw records, and a day of rows: one after
    // the other, the merge's second core sat idle while the head was read).
    let mut ends = Some(ends);
    let mut read_ends = || {
        ends.take().map_or_else(
            || Ok(RawEnds::default()),
            |e| e.collect(store, q, names, observe),
        )
    };
    let rows = |halves: &mut [Merger; 2], seq: &mut usize, pods: &mut PodDirectory| {
        std::thread::scope(|s| merge_rows(Rows::read(s, rollups, q, plan), q, (halves, seq), pods))
    };
    let apart = std::thread::scope(|s| {
        let merging = std::thread::Builder::new()
            .name("rows-merge".into())
            .spawn_scoped(s, || rows(&mut halves, &mut seq, &mut rows_pods))
            .ok()?;
        let raw = read_ends();
        let rows = merging
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Some((raw, rows))
    });
    let (raw, rows) = match apart {
        Some(both) => both,
        // No thread to be had: one after the other.
        None => (read_ends(), rows(&mut halves, &mut seq, &mut rows_pods)),
    };
    let RawEnds {
        head,
        mut pods,
        tail,
        tail_pods,
    } = raw?;
    rows?;
    // The head's periods under the rows, last first (`Merger::add_before`); numbered after
    // them, as the head's instants are all before the rows' and the tail's after.
    let first_of_head = seq + 1;
    seq += head.len();
    for (n, period) in head.into_iter().enumerate().rev() {
        let half = &mut halves[Merger::half_of(&period.pod_namespace, &period.pod_name)];
        half.piece(first_of_head + n);
        half.add_before(period);
    }
    for period in tail {
        route(&mut halves, &mut seq, period);
    }
    pods.extend(rows_pods);
    pods.extend(tail_pods);
    let [apart, mut merger] = halves;
    merger.absorb(apart);
    Ok(Some((merger, pods)))
}

/// The store's rollups and the question's plan with the carries its raw ends need; None
/// when the store holds no rollups, or they would not spare reading the window raw.
fn ends_of<'a>(
    store: &'a dyn Store,
    q: &Question,
) -> Result<Option<(&'a dyn RollupStore, Ends)>, StoreError> {
    let Some(rollups) = store.rollups() else {
        return Ok(None);
    };
    let Some(progress) = rollups.rollup_progress()? else {
        return Ok(None);
    };
    let until = match q.query.until {
        0 => u64::MAX,
        until => until,
    };
    let horizon = store.raw_horizon(crate::model::now_ns());
    Ok(Ends::read(rollups, &progress, (q.query.since, until), horizon)?.map(|e| (rollups, e)))
}

/// A window's stored rows, as [`read_rows`] hands them over.
enum Rows<'a> {
    /// Read on a thread of their own, a batch at a time.
    Apart(crossbeam_channel::Receiver<Result<Batch, StoreError>>),
    /// To be read by the merge (no thread was to be had).
    Here {
        rollups: &'a dyn RollupStore,
        q: &'a Question,
        plan: ends::Plan,
    },
}

impl<'a> Rows<'a> {
    /// Starts reading the plan's rows on a thread of `scope`: the first batch is read while
    /// the caller reads the raw head, each next one while the last is merged.
    fn read<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        rollups: &'a dyn RollupStore,
        q: &'a Question,
        plan: ends::Plan,
    ) -> Rows<'a>
    where
        'a: 'scope,
    {
        // One batch waits while the other is merged: two at most held.
        let (send, receive) = crossbeam_channel::bounded(0);
        let reader = std::thread::Builder::new()
            .name("rows".into())
            .spawn_scoped(scope, move || {
                let read = read_rows(rollups, q, plan, &mut |batch| send.send(Ok(batch)).is_ok());
                if let Err(e) = read {
                    let _ = send.send(Err(e));
                }
            });
        match reader {
            Ok(_) => Rows::Apart(receive),
            Err(_) => Rows::here(rollups, q, plan),
        }
    }

    fn here(rollups: &'a dyn RollupStore, q: &'a Question, plan: ends::Plan) -> Rows<'a> {
        Rows::Here { rollups, q, plan }
    }

    /// Hands each batch to `take` in the order read, until it answers false.
    fn each(
        &self,
        take: &mut dyn FnMut(Batch) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        match self {
            Rows::Apart(batches) => {
                for batch in batches {
                    if !take(batch?)? {
                        break;
                    }
                }
                Ok(())
            }
            Rows::Here { rollups, q, plan } => {
                let mut failed = None;
                read_rows(*rollups, q, *plan, &mut |batch| {
                    take(batch).unwrap_or_else(|e| {
                        failed = Some(e);
                        false
                    })
                })?;
                failed.map_or(Ok(()), Err)
            }
        }
    }
}

/// Stored rows handed over pod by pod, each pod's in time order, with the pods blobs of
/// the pieces read since the batch before.
struct Batch {
    rows: Vec<RollupSegment>,
    pods: Vec<Vec<u8>>,
}

/// Merges `rows` into `halves` (pieces numbered after `seq`) and notes their pods in
/// `pods`: while this thread merges one half's pods, a second merges the other's (a day
/// is a million edge rows; the machine has more than one core).
fn merge_rows(
    rows: Rows,
    q: &Question,
    (halves, seq): (&mut [Merger; 2], &mut usize),
    pods: &mut PodDirectory,
) -> Result<(), StoreError> {
    let [mine, theirs] = &mut *halves;
    let apart = std::thread::scope(|s| {
        let (send, receive) = crossbeam_channel::bounded::<(usize, RollupSegment)>(64);
        let worker = std::thread::Builder::new()
            .name("merge".into())
            .spawn_scoped(s, move || {
                let mut failed = None;
                for (n, segment) in receive {
                    if failed.is_none() {
                        theirs.piece(n);
                        failed = body::merge(&segment, theirs).err();
                    }
                }
                failed
            });
        // No thread to be had: this one merges both halves (below).
        let worker = worker.ok()?;
        let read = take_rows(&rows, q, pods, seq, &mut |n, segment| {
            if Merger::half_of(&segment.namespace, &segment.pod) == 0 {
                mine.piece(n);
                body::merge(&segment, mine).map(|()| true)
            } else {
                // Refused only when the worker is gone (a panic, resumed below).
                Ok(send.send((n, segment)).is_ok())
            }
        });
        drop(send);
        let failed = worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Some(read.and_then(|()| failed.map_or(Ok(()), Err)))
    });
    match apart {
        Some(read) => read,
        None => take_rows(&rows, q, pods, seq, &mut |n, segment| {
            let half = &mut halves[Merger::half_of(&segment.namespace, &segment.pod)];
            half.piece(n);
            body::merge(&segment, half).map(|()| true)
        }),
    }
}

/// Hands a pod-period to its pod's half of the window's mergers as the next piece.
fn route(halves: &mut [Merger; 2], seq: &mut usize, period: PodHour) {
    *seq += 1;
    let half = &mut halves[Merger::half_of(&period.pod_namespace, &period.pod_name)];
    half.piece(*seq);
    half.add(period);
}

/// Hands each of `rows` to `merge` with its number in the order handed (after `seq`, which
/// it advances; `merge` returns false to stop), and notes their pods in `pods`.
fn take_rows(
    rows: &Rows,
    q: &Question,
    pods: &mut PodDirectory,
    seq: &mut usize,
    merge: &mut dyn FnMut(usize, RollupSegment) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let peer = |ns: &str| q.peer_namespaces.is_empty() || q.peer_namespaces.iter().any(|p| p == ns);
    rows.each(&mut |batch| {
        for segment in batch.rows {
            *seq += 1;
            if !merge(*seq, segment)? {
                return Ok(false);
            }
        }
        for blob in batch.pods {
            for a in codec::decode_pods(&blob)? {
                if peer(&a.pod_namespace) {
                    pods.note_pod(a.ip, &a.pod_name, &a.pod_namespace);
                }
            }
        }
        Ok(true)
    })
}

/// How many bytes of stored rows [`read_rows`] holds to hand them over pod by pod (a day
/// of 1,000 pods is about 60 MB).
const HELD_ROWS: usize = 64 << 20;

/// Reads the stored rows of the plan's hours for the question (whole days as days, in time
/// order) and hands them to `hand_over` in batches (it returns false to stop). Rows are
/// held up to [`HELD_ROWS`] and handed pod by pod, each pod's in time order: a pod's edge
/// table then stays in the cache while its hours are merged (read hour by hour, a day's
/// thousand tables, a hundred megabytes, were each touched once an hour). A pod's rows keep
/// their order, and pods their order within an hour, so the merge is the same.
fn read_rows(
    rollups: &dyn RollupStore,
    q: &Question,
    plan: ends::Plan,
    hand_over: &mut dyn FnMut(Batch) -> bool,
) -> Result<(), StoreError> {
    let mut batch = Batch {
        rows: Vec::new(),
        pods: Vec::new(),
    };
    let mut held_bytes = 0;
    let mut send = |batch: &mut Batch| {
        // Stable: a pod's rows stay in time order.
        batch
            .rows
            .sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
        hand_over(std::mem::replace(
            batch,
            Batch {
                rows: Vec::new(),
                pods: Vec::new(),
            },
        ))
    };
    // Consecutive hours and days of a steady fleet see the same pods: a blob equal to the
    // one before names nothing new (the first pod noted for an address keeps it).
    let mut last_blob: Vec<u8> = Vec::new();
    let mut note_pods = |batch: &mut Batch, blob: Vec<u8>| {
        if blob != last_blob {
            last_blob.clone_from(&blob);
            batch.pods.push(blob);
        }
    };
    for (grain, from, to, day_pods) in pieces(rollups, plan.first, plan.last)? {
        let mut stopped = false;
        rollups.scan_rollups(
            grain,
            &EventQuery {
                since: from,
                until: to,
                ..q.query.clone()
            },
            &mut |segment| {
                held_bytes += segment.body.len();
                batch.rows.push(segment);
                if held_bytes < HELD_ROWS {
                    return true;
                }
                held_bytes = 0;
                stopped = !send(&mut batch);
                !stopped
            },
        )?;
        if stopped {
            return Ok(());
        }
        match day_pods {
            Some(blobs) => blobs.into_iter().for_each(|b| note_pods(&mut batch, b)),
            None => {
                for (_, blob) in rollups.rollup_pods(Grain::Hour, from, to)? {
                    note_pods(&mut batch, blob);
                }
            }
        }
    }
    send(&mut batch);
    Ok(())
}

/// A stretch of the window read at one grain: its first and last period, and for days
/// the days' pods.
type Piece = (Grain, u64, u64, Option<Vec<Vec<u8>>>);

/// How to read the hours from `first` to `last` (their starts): the whole days built as
/// days, the rest as hours, in time order.
fn pieces(rollups: &dyn RollupStore, first: u64, last: u64) -> Result<Vec<Piece>, StoreError> {
    let mut out: Vec<Piece> = Vec::new();
    if first > last {
        return Ok(out);
    }
    let whole = |d: u64| d >= first && d + DAY - HOUR <= last;
    let days: Vec<(u64, Vec<u8>)> = rollups
        .rollup_pods(Grain::Day, first, last)?
        .into_iter()
        .filter(|(d, _)| d % DAY == 0 && whole(*d))
        .collect();
    let mut next = first;
    for (day, blob) in days {
        if day > next {
            out.push((Grain::Hour, next, day - HOUR, None));
        }
        match out.last_mut() {
            // Consecutive days: one read.
            Some((Grain::Day, _, to, Some(blobs))) if *to + DAY == day => {
                *to = day;
                blobs.push(blob);
            }
            _ => out.push((Grain::Day, day, day, Some(vec![blob]))),
        }
        next = day + DAY;
    }
    if next <= last {
        out.push((Grain::Hour, next, last, None));
    }
    Ok(out)
}
