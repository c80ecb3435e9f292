//! Live fan-out of stored events to subscribers. Each subscriber has a bounded queue; when
//! it is full the event is dropped for that subscriber only and counted, and the subscriber
//! is sent a `Gap{missed}` marker as soon as its queue has room. Publishing never waits.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::model::{CollectorIdentity, Event, Record, RecordKind};
use crate::proto::v1 as pb;
use crate::telemetry::aggregator::SubscriberMissed;
use crate::telemetry::InternalEvent;
use crate::wire;

/// Which live events a subscriber wants; empty sets match everything. Every publish tests
/// every subscriber's filter against every event, so pods and namespaces are hash sets (a
/// filter of thousands of names costs one lookup) and the enum lists hold each value once.
#[derive(Debug, Clone, Default)]
pub struct LiveFilter {
    kinds: Vec<RecordKind>,
    pods: HashSet<String>,
    namespaces: HashSet<String>,
    scopes: Vec<pb::Scope>,
    directions: Vec<pb::Direction>,
}

impl LiveFilter {
    pub fn new(
        kinds: Vec<RecordKind>,
        pods: Vec<String>,
        namespaces: Vec<String>,
        mut scopes: Vec<pb::Scope>,
        mut directions: Vec<pb::Direction>,
    ) -> LiveFilter {
        let mut kinds = kinds;
        kinds.sort_by_key(|k| k.as_str());
        kinds.dedup();
        scopes.sort();
        scopes.dedup();
        directions.sort();
        directions.dedup();
        LiveFilter {
            kinds,
            pods: pods.into_iter().collect(),
            namespaces: namespaces.into_iter().collect(),
            scopes,
            directions,
        }
    }

    /// Whether the filter's pods and namespaces admit events of `source`.
    fn matches_source(&self, source: &CollectorIdentity) -> bool {
        (self.pods.is_empty() || self.pods.contains(&source.pod_name))
            && (self.namespaces.is_empty() || self.namespaces.contains(&source.pod_namespace))
    }

    /// Whether the filter's kinds, scopes and directions admit `record`.
    fn matches_record(&self, record: &Record) -> bool {
        let ok = |empty: bool, hit: bool| empty || hit;
        let (scope, direction) = match record {
            Record::Flow(f) => (
                Some(wire::scope_to_proto(f.scope)),
                Some(wire::direction_to_proto(f.direction)),
            ),
            _ => (None, None),
        };
        ok(self.kinds.is_empty(), self.kinds.contains(&record.kind()))
            && ok(
                self.scopes.is_empty(),
                scope.is_some_and(|s| self.scopes.contains(&s)),
            )
            && ok(
                self.directions.is_empty(),
                direction.is_some_and(|d| self.directions.contains(&d)),
            )
    }
}

struct Subscriber {
    filter: LiveFilter,
    tx: mpsc::Sender<pb::SubscribeItem>,
    missed: AtomicU64,
}

pub struct Hub {
    capacity: usize,
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
}

impl Hub {
    pub fn new(capacity: usize) -> Hub {
        Hub {
            capacity: capacity.max(1),
            subscribers: Mutex::new(Vec::new()),
        }
    }

    /// Registers a subscriber; its items arrive on the returned receiver.
    pub fn subscribe(&self, filter: LiveFilter) -> mpsc::Receiver<pb::SubscribeItem> {
        let (tx, rx) = mpsc::channel(self.capacity);
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.push(Arc::new(Subscriber {
                filter,
                tx,
                missed: AtomicU64::new(0),
            }));
        }
        rx
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Offers events to every subscriber without waiting.
    pub fn publish(&self, events: &[Event]) {
        let subs: Vec<Arc<Subscriber>> = match self.subscribers.lock() {
            Ok(mut subs) => {
                subs.retain(|s| !s.tx.is_closed());
                subs.clone()
            }
            Err(_) => return,
        };
        for sub in subs {
            // A batch's events share one source: its pods and namespaces are looked up once.
            let mut source: Option<(&Arc<CollectorIdentity>, bool)> = None;
            for event in events {
                let source_ok = match source {
                    Some((s, ok)) if Arc::ptr_eq(s, &event.source) => ok,
                    _ => {
                        let ok = sub.filter.matches_source(&event.source);
                        source = Some((&event.source, ok));
                        ok
                    }
                };
                if !source_ok || !sub.filter.matches_record(&event.record) {
                    continue;
                }
                // A subscriber that does not read costs a counter, not a conversion.
                if sub.tx.capacity() == 0 {
                    sub.missed.fetch_add(1, Ordering::Relaxed);
                    SubscriberMissed.emit();
                    continue;
                }
                let missed = sub.missed.load(Ordering::Relaxed);
                if missed > 0 {
                    let gap = pb::SubscribeItem {
                        item: Some(pb::subscribe_item::Item::Gap(pb::Gap { missed })),
                    };
                    if sub.tx.try_send(gap).is_ok() {
                        sub.missed.store(0, Ordering::Relaxed);
                    } else {
                        sub.missed.fetch_add(1, Ordering::Relaxed);
                        SubscriberMissed.emit();
                        continue;
                    }
                }
                let item = pb::SubscribeItem {
                    item: Some(pb::subscribe_item::Item::Event(wire::event_to_proto(event))),
                };
                if sub.tx.try_send(item).is_err() {
                    sub.missed.fetch_add(1, Ordering::Relaxed);
                    SubscriberMissed.emit();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Heartbeat;

    fn event(source: &Arc<CollectorIdentity>, time: u64) -> Event {
        Event {
            source: source.clone(),
            received_at: 0,
            record: Record::Heartbeat(Heartbeat {
                time,
                ..Heartbeat::default()
            }),
        }
    }

    fn time_of(item: pb::SubscribeItem) -> Result<u64, u64> {
        match item.item {
            Some(pb::subscribe_item::Item::Event(e)) => match e.record.and_then(|r| r.kind) {
                Some(pb::record::Kind::Heartbeat(h)) => Ok(h.time),
                other => panic!("{other:?}"),
            },
            Some(pb::subscribe_item::Item::Gap(g)) => Err(g.missed),
            None => panic!("empty item"),
        }
    }

    #[test]
    fn filters_match_their_pods_across_mixed_sources_and_a_full_queue_counts_misses() {
        let hub = Hub::new(2);
        let pods = (0..5_000).map(|i| format!("pod-{i}")).chain(["b".into()]);
        let mut rx = hub.subscribe(LiveFilter::new(
            vec![],
            pods.collect(),
            vec![],
            vec![],
            vec![],
        ));
        let source = |pod: &str| {
            Arc::new(CollectorIdentity {
                pod_name: pod.into(),
                ..CollectorIdentity::default()
            })
        };
        let (a, b) = (source("a"), source("b"));
        // Sources alternate within one publish: each event is judged by its own source.
        hub.publish(&[
            event(&a, 1),
            event(&b, 2),
            event(&a, 3),
            event(&b, 4),
            event(&b, 5),
        ]);
        assert_eq!(time_of(rx.try_recv().expect("first")), Ok(2));
        assert_eq!(time_of(rx.try_recv().expect("second")), Ok(4));
        assert!(rx.try_recv().is_err(), "the queue held two: 5 was missed");
        hub.publish(&[event(&b, 6)]);
        assert_eq!(time_of(rx.try_recv().expect("gap")), Err(1));
        assert_eq!(time_of(rx.try_recv().expect("next")), Ok(6));
    }
}
