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

use crate::aggregator::investigate::Question;
use crate::aggregator::store::{
    EventQuery, Grain, RollupDay, RollupHour, RollupSegment, RollupStore, Store, StoreError,
};
use crate::investigate::rollup::{
    day_of, fold_day, fold_pods, hour_of, Carry, HourBuilder, Merger, PodAddress, PodHour, DAY,
    HOUR,
};
use crate::investigate::{Activity, Baseline, EdgeOrder, PodDirectory, ProcessNames, Talkers};
use crate::model::{Event, Record, RecordKind};
use ends::Ends;

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
/// built.
pub fn baseline(
    store: &dyn Store,
    q: &Question,
    names: &ProcessNames,
) -> Result<Option<Baseline>, StoreError> {
    let Some((merger, _)) = merged(store, q, names, true, &mut |_| {})? else {
        return Ok(None);
    };
    merger
        .baseline(body::decode_executable, body::decode_listener)
        .map(Some)
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
    let Some(mut ends) = Ends::read(rollups, &progress, (q.query.since, until), horizon)? else {
        return Ok(None);
    };
    let plan = ends.plan;
    let mut merger = Merger::new(plan.first, q.flows.clone(), firsts);
    let mut pods = PodDirectory::default();
    ends.head(store, q, names, (&mut merger, &mut pods), observe)?;
    let peer = |ns: &str| q.peer_namespaces.is_empty() || q.peer_namespaces.iter().any(|p| p == ns);
    // Consecutive hours and days of a steady fleet see the same pods: a blob equal to the
    // one before names nothing new (the first pod noted for an address keeps it).
    let mut last_blob: Vec<u8> = Vec::new();
    let mut note_pods = |pods: &mut PodDirectory, blob: &[u8]| -> Result<(), StoreError> {
        if blob == last_blob.as_slice() {
            return Ok(());
        }
        last_blob = blob.to_vec();
        for a in codec::decode_pods(blob)? {
            if peer(&a.pod_namespace) {
                pods.note_pod(a.ip, &a.pod_name, &a.pod_namespace);
            }
        }
        Ok(())
    };
    for (grain, from, to, day_pods) in pieces(rollups, plan.first, plan.last)? {
        let mut failed = None;
        rollups.scan_rollups(
            grain,
            &EventQuery {
                since: from,
                until: to,
                ..q.query.clone()
            },
            &mut |segment| match body::merge(&segment, &mut merger) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            },
        )?;
        if let Some(e) = failed {
            return Err(e);
        }
        match day_pods {
            Some(blobs) => blobs.iter().try_for_each(|b| note_pods(&mut pods, b))?,
            None => {
                for (_, blob) in rollups.rollup_pods(Grain::Hour, from, to)? {
                    note_pods(&mut pods, &blob)?;
                }
            }
        }
    }
    ends.tail(store, q, names, (&mut merger, &mut pods), observe)?;
    Ok(Some((merger, pods)))
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
