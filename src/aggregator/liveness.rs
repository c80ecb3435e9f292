//! A silenced collector is evidence. A process of the app's uid can kill or stop the
//! sidecar watching it; then it goes quiet rather than reporting what comes next. The
//! aggregator notices a collector whose stream ended without its goodbye (the last
//! heartbeat before a clean shutdown says `stopping`) and did not come back within one
//! heartbeat interval, or whose heartbeats stopped for two intervals, and raises an alert
//! for that pod with the last records it sent. A clean shutdown (SIGTERM drain, pod
//! deletion) raises none. State is per collector id (as admitted: under its writer's
//! prefix), in memory: a restarted aggregator starts afresh. Among replicas on one store, a
//! collector whose stream ended here and whose batches another replica has stored since
//! moved (its replica's connection was cut, the Service sent it elsewhere): no alert.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::model::{now_ns, AlertRecord, CollectorIdentity, Event, Record, Severity};
use crate::telemetry::aggregator::CollectorSilenced;
use crate::telemetry::InternalEvent;

/// The pseudo-collector whose alerts these are.
pub const LIVENESS_SOURCE: &str = "procflow-liveness";
pub const RULE_ID: &str = "PF-COLLECTOR-SILENCED";
/// The heartbeat interval assumed until a collector states its own.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const MIN_INTERVAL: Duration = Duration::from_millis(500);
const MAX_INTERVAL: Duration = Duration::from_secs(600);
/// Records kept per collector to go with the alert.
const RECENT: usize = 16;
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// How a collector's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The collector closed it (after its goodbye, if it said one).
    Closed,
    /// Reset, broken or cancelled: the collector did not close it.
    Broken,
    /// The aggregator ended it (credential expired, refused batch, shutdown).
    ByServer,
}

struct Watch {
    source: Arc<CollectorIdentity>,
    interval: Duration,
    last_heartbeat: Instant,
    last_heartbeat_ns: u64,
    /// Its last heartbeat said goodbye.
    stopping: bool,
    /// The highest batch sequence number read here.
    last_seq: u64,
    /// Streams of this collector open now (a reconnect may overlap the old stream's end).
    streams: usize,
    /// An end without goodbye, waiting one interval for the collector to come back.
    ended: Option<(Instant, &'static str)>,
    /// Alerted for the current silence of its heartbeats.
    silenced: bool,
    recent: VecDeque<Event>,
}

/// Where alerts go: stored, published and delivered like the rules' own.
pub type Raise = Box<dyn Fn(Vec<Event>) + Send + Sync>;

/// Whether another replica on the same store has stored a batch of this collector after
/// this sequence number (the highest this replica read): a stream that ended here and
/// resumed there is no silence. Blocking.
pub type Elsewhere = Box<dyn Fn(&str, u64) -> bool + Send + Sync>;

pub struct Liveness {
    watches: Mutex<HashMap<String, Watch>>,
    raise: Raise,
    elsewhere: Option<Elsewhere>,
    /// The aggregator is shutting down: its own ending of streams is no evidence.
    stopped: AtomicBool,
}

impl Liveness {
    pub fn new(raise: Raise) -> Arc<Liveness> {
        Liveness::with_elsewhere(raise, None)
    }

    /// A watch among replicas: before a collector whose stream ended here is called
    /// silenced, `elsewhere` says whether it came back on another replica.
    pub fn with_elsewhere(raise: Raise, elsewhere: Option<Elsewhere>) -> Arc<Liveness> {
        Arc::new(Liveness {
            watches: Mutex::new(HashMap::new()),
            raise,
            elsewhere,
            stopped: AtomicBool::new(false),
        })
    }

    /// Batch `seq` of `source` (admitted) arrived on a stream; `first` for the stream's first.
    pub fn observe(
        &self,
        source: &Arc<CollectorIdentity>,
        seq: u64,
        events: &[Event],
        first: bool,
    ) {
        let now = Instant::now();
        let Ok(mut watches) = self.watches.lock() else {
            return;
        };
        let watch = match watches.entry(source.collector_id.clone()) {
            Entry::Occupied(watch) => {
                let watch = watch.into_mut();
                if first {
                    watch.streams += 1;
                    // Back within the grace: the end was a network blip, not a silencing.
                    watch.ended = None;
                }
                watch
            }
            // Watched from the first heartbeat that states its interval: a collector that
            // promises heartbeats (a client sending batches by hand, or an older collector,
            // promised nothing).
            Entry::Vacant(vacant) => {
                let promised = events.iter().any(
                    |e| matches!(&e.record, Record::Heartbeat(h) if h.interval_ns > 0 && !h.stopping),
                );
                if !promised {
                    return;
                }
                vacant.insert(Watch {
                    source: source.clone(),
                    interval: DEFAULT_INTERVAL,
                    last_heartbeat: now,
                    last_heartbeat_ns: now_ns(),
                    stopping: false,
                    last_seq: seq,
                    streams: 1,
                    ended: None,
                    silenced: false,
                    recent: VecDeque::with_capacity(RECENT),
                })
            }
        };
        watch.source = source.clone();
        watch.last_seq = watch.last_seq.max(seq);
        for event in events {
            if let Record::Heartbeat(h) = &event.record {
                watch.last_heartbeat = now;
                watch.last_heartbeat_ns = now_ns();
                watch.stopping = h.stopping;
                watch.silenced = false;
                if h.interval_ns > 0 {
                    watch.interval =
                        Duration::from_nanos(h.interval_ns).clamp(MIN_INTERVAL, MAX_INTERVAL);
                }
            }
        }
        // The last records it sent, for the alert: only the batch's tail is looked at.
        let tail = events
            .iter()
            .rev()
            .filter(|e| !matches!(e.record, Record::Heartbeat(_)))
            .take(RECENT)
            .collect::<Vec<_>>();
        for event in tail.into_iter().rev() {
            if watch.recent.len() == RECENT {
                watch.recent.pop_front();
            }
            watch.recent.push_back(event.clone());
        }
    }

    /// A stream that had carried `collector_id` ended.
    pub fn stream_ended(&self, collector_id: &str, end: StreamEnd) {
        let Ok(mut watches) = self.watches.lock() else {
            return;
        };
        let Some(watch) = watches.get_mut(collector_id) else {
            return;
        };
        watch.streams = watch.streams.saturating_sub(1);
        if watch.streams > 0 {
            return;
        }
        match end {
            // It said goodbye: however the connection went down after (a process exiting
            // may close it before its last frames are flushed), the end was expected.
            StreamEnd::Closed | StreamEnd::Broken if watch.stopping => {
                watches.remove(collector_id);
            }
            StreamEnd::Closed => {
                watch.ended = Some((
                    Instant::now(),
                    "its stream ended without the collector's clean-shutdown heartbeat",
                ));
            }
            StreamEnd::Broken => {
                watch.ended = Some((
                    Instant::now(),
                    "its stream broke off (the collector was killed, or its connection cut) and it did not reconnect",
                ));
            }
            // The collector reconnects (a rotated credential) or was refused: no evidence
            // here; a collector that stays away is noticed by its missing heartbeats next
            // time it connects, and the refusal was logged and counted.
            StreamEnd::ByServer => {
                watches.remove(collector_id);
            }
        }
    }

    /// From now on, streams end because the aggregator stops: no alert.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// Raises the alerts that are due at `now`.
    pub fn check(&self, now: Instant) {
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        let mut due = Vec::new();
        // Ended streams due, with the last batch read here, for the other replicas' word.
        let mut ended = Vec::new();
        if let Ok(mut watches) = self.watches.lock() {
            watches.retain(|id, w| {
                if let Some((at, why)) = w.ended {
                    if w.streams == 0 && now.duration_since(at) >= w.interval {
                        ended.push((id.clone(), w.last_seq, alert(w, why.to_owned())));
                        return false;
                    }
                    return true;
                }
                let quiet = now.duration_since(w.last_heartbeat);
                if w.streams > 0 && !w.silenced && !w.stopping && quiet >= 2 * w.interval {
                    w.silenced = true;
                    due.push(alert(
                        w,
                        format!(
                            "its heartbeats stopped ({:.1} s without one, every {:.1} s expected): the collector is stopped or hung",
                            quiet.as_secs_f64(),
                            w.interval.as_secs_f64()
                        ),
                    ));
                }
                true
            });
        }
        for (id, last_seq, alert) in ended {
            let moved = self
                .elsewhere
                .as_ref()
                .is_some_and(|back| back(&id, last_seq));
            if !moved {
                due.push(alert);
            }
        }
        if due.is_empty() {
            return;
        }
        for event in &due {
            if let Record::Alert(a) = &event.record {
                CollectorSilenced {
                    pod: &a.pod_name,
                    namespace: &a.pod_namespace,
                    output: &a.output,
                }
                .emit();
            }
        }
        (self.raise)(due);
    }

    /// Checks every [`CHECK_EVERY`] until the runtime stops.
    pub fn spawn(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK_EVERY);
            loop {
                tick.tick().await;
                let Some(liveness) = this.upgrade() else {
                    return;
                };
                // The other replicas' word comes from the store: off the async threads.
                let now = Instant::now();
                let _ = tokio::task::spawn_blocking(move || liveness.check(now)).await;
            }
        });
    }

    /// Collectors watched now.
    pub fn len(&self) -> usize {
        self.watches.lock().map_or(0, |w| w.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The alert for a silenced collector, with the last records it sent.
fn alert(w: &Watch, why: String) -> Event {
    let now = now_ns();
    let source = &w.source;
    let mut evidence = vec![
        format!("collector: {}", source.collector_id),
        format!("last heartbeat: {} (unix ns)", w.last_heartbeat_ns),
    ];
    let mut process = None;
    let mut flows = Vec::new();
    for event in w.recent.iter().rev() {
        match &event.record {
            Record::Process(p) => {
                evidence.push(format!(
                    "last records: process {} pid {} {:?}",
                    crate::model::display_bytes(&p.comm),
                    p.pid,
                    p.phase
                ));
                if process.is_none() {
                    process = Some(Box::new(p.clone()));
                }
            }
            Record::Flow(f) => {
                evidence.push(format!(
                    "last records: flow {}:{} -> {} {:?} {:?}",
                    f.local_addr,
                    f.local_port,
                    f.remote_addr
                        .zip(f.remote_port)
                        .map_or("(unconnected)".to_owned(), |(a, p)| format!("{a}:{p}")),
                    f.direction,
                    f.phase
                ));
                if flows.len() < 8 {
                    flows.push(f.clone());
                }
            }
            other => evidence.push(format!("last records: {}", other.kind().as_str())),
        }
    }
    let record = AlertRecord {
        id: format!("{RULE_ID}/{}/{now}", source.collector_id),
        rule_id: RULE_ID.into(),
        rule_name: "Collector silenced".into(),
        severity: Severity::High,
        // MITRE ATT&CK: Impair Defenses, Disable or Modify Tools.
        tags: vec!["T1562.001".into()],
        time: now,
        first_seen: now,
        last_seen: now,
        count: 1,
        output: format!(
            "the procflow collector of {}/{} went silent: {why}; what happens in the pod now goes unseen",
            source.pod_namespace, source.pod_name
        ),
        pod_name: source.pod_name.clone(),
        pod_namespace: source.pod_namespace.clone(),
        node_name: source.node_name.clone(),
        container_id: None,
        process,
        flows,
        evidence,
        exec: None,
    };
    Event {
        source: Arc::new(CollectorIdentity {
            collector_id: LIVENESS_SOURCE.into(),
            pod_name: source.pod_name.clone(),
            pod_namespace: source.pod_namespace.clone(),
            pod_uid: source.pod_uid.clone(),
            node_name: source.node_name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..CollectorIdentity::default()
        }),
        received_at: now,
        record: Record::Alert(record),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Heartbeat;

    fn source(id: &str) -> Arc<CollectorIdentity> {
        Arc::new(CollectorIdentity {
            collector_id: id.into(),
            pod_name: "web-1".into(),
            pod_namespace: "shop".into(),
            ..CollectorIdentity::default()
        })
    }

    fn heartbeat(source: &Arc<CollectorIdentity>, interval: Duration, stopping: bool) -> Event {
        Event {
            source: source.clone(),
            received_at: now_ns(),
            record: Record::Heartbeat(Heartbeat {
                interval_ns: interval.as_nanos() as u64,
                stopping,
                ..Heartbeat::default()
            }),
        }
    }

    fn raised() -> (Arc<Liveness>, Arc<Mutex<Vec<Event>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let liveness = Liveness::new(Box::new(move |events| {
            sink.lock().expect("lock").extend(events);
        }));
        (liveness, seen)
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_broken_stream_alerts_after_one_interval_unless_the_collector_returns() {
        let (liveness, seen) = raised();
        let c = source("uid/1");
        liveness.observe(&c, 1, &[heartbeat(&c, SECOND, false)], true);
        liveness.stream_ended("uid/1", StreamEnd::Broken);
        liveness.check(Instant::now());
        assert!(
            seen.lock().expect("lock").is_empty(),
            "not before the grace"
        );
        liveness.check(Instant::now() + SECOND);
        let alerts = seen.lock().expect("lock").clone();
        assert_eq!(alerts.len(), 1);
        let Record::Alert(a) = &alerts[0].record else {
            panic!("an alert")
        };
        assert_eq!(
            (a.rule_id.as_str(), a.pod_name.as_str()),
            (RULE_ID, "web-1")
        );
        assert!(liveness.is_empty());

        // A blip: the collector is back before the grace ends.
        let (liveness, seen) = raised();
        liveness.observe(&c, 1, &[heartbeat(&c, SECOND, false)], true);
        liveness.stream_ended("uid/1", StreamEnd::Broken);
        liveness.observe(&c, 1, &[], true);
        liveness.check(Instant::now() + SECOND + SECOND / 2);
        assert!(seen.lock().expect("lock").is_empty());
    }

    #[test]
    fn a_goodbye_or_the_aggregators_own_shutdown_raises_nothing() {
        let (liveness, seen) = raised();
        let c = source("uid/2");
        liveness.observe(&c, 1, &[heartbeat(&c, SECOND, true)], true);
        liveness.stream_ended("uid/2", StreamEnd::Closed);
        liveness.check(Instant::now() + 10 * SECOND);
        assert!(seen.lock().expect("lock").is_empty());

        // A goodbye, then a connection torn down by the exiting process.
        let e = source("uid/5");
        liveness.observe(&e, 1, &[heartbeat(&e, SECOND, true)], true);
        liveness.stream_ended("uid/5", StreamEnd::Broken);
        liveness.check(Instant::now() + 10 * SECOND);
        assert!(seen.lock().expect("lock").is_empty());

        let d = source("uid/3");
        liveness.observe(&d, 1, &[heartbeat(&d, SECOND, false)], true);
        liveness.stream_ended("uid/3", StreamEnd::Broken);
        liveness.stop();
        liveness.check(Instant::now() + 10 * SECOND);
        assert!(seen.lock().expect("lock").is_empty());
    }

    #[test]
    fn a_client_that_promised_no_heartbeats_is_not_watched() {
        let (liveness, seen) = raised();
        let c = source("bench/1");
        liveness.observe(&c, 1, &[heartbeat(&c, Duration::ZERO, false)], true);
        liveness.stream_ended("bench/1", StreamEnd::Closed);
        liveness.check(Instant::now() + 60 * SECOND);
        assert!(seen.lock().expect("lock").is_empty());
        assert!(liveness.is_empty());
        // Watched from the batch that states the interval, within its stream.
        liveness.observe(&c, 1, &[], true);
        liveness.observe(&c, 1, &[heartbeat(&c, SECOND, false)], false);
        liveness.stream_ended("bench/1", StreamEnd::Broken);
        liveness.check(Instant::now() + SECOND);
        assert_eq!(seen.lock().expect("lock").len(), 1);
    }

    #[test]
    fn stopped_heartbeats_alert_once_per_silence() {
        let (liveness, seen) = raised();
        let c = source("uid/4");
        liveness.observe(&c, 1, &[heartbeat(&c, SECOND, false)], true);
        liveness.check(Instant::now() + SECOND);
        assert!(
            seen.lock().expect("lock").is_empty(),
            "one interval is not silence"
        );
        liveness.check(Instant::now() + 2 * SECOND);
        liveness.check(Instant::now() + 3 * SECOND);
        assert_eq!(seen.lock().expect("lock").len(), 1, "one alert per silence");
        liveness.observe(&c, 1, &[heartbeat(&c, SECOND, false)], false);
        liveness.check(Instant::now() + 3 * SECOND);
        assert_eq!(
            seen.lock().expect("lock").len(),
            2,
            "a new silence after it resumed"
        );
    }
}
