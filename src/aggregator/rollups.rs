//! Hourly rollups over the store: [`RollupBuilder`] rolls up each hour once it has closed
//! (on every replica, every minute; the store keeps the first replica's hour and refuses the
//! others'), and [`activity`] answers a window from them, with the raw records after the
//! last hour built. The pure folding is `investigate::rollup`; the encoding is `codec`.

mod codec;

use std::sync::Arc;
use std::time::Duration;

use crate::aggregator::investigate::Question;
use crate::aggregator::store::{EventQuery, RollupHour, RollupSegment, Store, StoreError};
use crate::investigate::rollup::{hour_of, Carry, HourBuilder, Merger, PodAddress, PodHour, HOUR};
use crate::investigate::{Activity, PodDirectory, ProcessNames};
use crate::model::{Event, Record, RecordKind};

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
            let rollup = self.build(hour, &mut carry, hour_of(horizon))?;
            if rollups.put_rollup(rollup)? {
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
    ) -> Result<RollupHour, StoreError> {
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
        let (pods, addresses) = builder.finish(hour, &self.names, carry, expire_before);
        Ok(encode_hour(hour, &pods, &addresses, carry))
    }
}

/// One hour's rollups as the store keeps them.
pub fn encode_hour(
    hour: u64,
    pods: &[PodHour],
    addresses: &[PodAddress],
    carry: &Carry,
) -> RollupHour {
    RollupHour {
        hour,
        segments: pods
            .iter()
            .map(|p| RollupSegment {
                hour,
                namespace: p.pod_namespace.clone(),
                pod: p.pod_name.clone(),
                body: codec::encode_pod_hour(p),
            })
            .collect(),
        pods: codec::encode_pods(addresses),
        carry: codec::encode_carry(carry),
    }
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

/// The activity of the question's window from the rollups of its hours and the raw
/// records after the last hour built (`observe` sees those); None when the store holds
/// no rollups. Rollups answer whole hours: the window starts at its first hour's start.
pub fn activity(
    store: &dyn Store,
    q: &Question,
    names: &ProcessNames,
    observe: &mut dyn FnMut(&Event),
) -> Result<Option<Activity>, StoreError> {
    let Some(rollups) = store.rollups() else {
        return Ok(None);
    };
    let Some(progress) = rollups.rollup_progress()? else {
        return Ok(None);
    };
    let built_end = progress.hour + HOUR;
    let since = q.query.since;
    let until = match q.query.until {
        0 => u64::MAX,
        until => until,
    };
    let mut merger = Merger::new(since, q.flows.clone());
    let rolled_until = until.min(built_end - 1);
    let mut failed = None;
    rollups.scan_rollups(
        &EventQuery {
            since: hour_of(since),
            until: rolled_until,
            ..q.query.clone()
        },
        &mut |segment| match codec::decode_pod_hour(&segment) {
            Ok(hour) => {
                merger.add(hour);
                true
            }
            Err(e) => {
                failed = Some(e);
                false
            }
        },
    )?;
    if let Some(e) = failed {
        return Err(e);
    }
    let mut pods = PodDirectory::default();
    let peer = |ns: &str| q.peer_namespaces.is_empty() || q.peer_namespaces.iter().any(|p| p == ns);
    for blob in rollups.rollup_pods(hour_of(since), rolled_until)? {
        for a in codec::decode_pods(&blob)? {
            if peer(&a.pod_namespace) {
                pods.note_pod(a.ip, &a.pod_name, &a.pod_namespace);
            }
        }
    }
    if until >= built_end {
        let mut carry = codec::decode_carry(&progress.carry)?;
        let mut builder = HourBuilder::default();
        let tail = EventQuery {
            kinds: KINDS.to_vec(),
            since: since.max(built_end),
            ..q.query.clone()
        };
        store.scan(&tail, &mut |e| {
            observe(&e);
            builder.add(&e)
        })?;
        // The tail's peers: every pod that reported in it.
        store.scan(
            &EventQuery {
                kinds: vec![RecordKind::Heartbeat],
                pods: Vec::new(),
                namespaces: q.peer_namespaces.clone(),
                ..tail
            },
            &mut |e| {
                pods.note(&e.source);
                true
            },
        )?;
        let (hours, _) = builder.finish(built_end, names, &mut carry, 0);
        for hour in hours {
            merger.add(hour);
        }
    }
    Ok(Some(merger.finish(&pods)))
}
