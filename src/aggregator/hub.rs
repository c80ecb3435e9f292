//! Live fan-out of stored events to subscribers. Each subscriber has a bounded queue; when
//! it is full the event is dropped for that subscriber only and counted, and the subscriber
//! is sent a `Gap{missed}` marker as soon as its queue has room. Publishing never waits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::model::{Event, Record, RecordKind};
use crate::proto::v1 as pb;
use crate::telemetry;
use crate::wire;

/// Which live events a subscriber wants; empty lists match everything.
#[derive(Debug, Clone, Default)]
pub struct LiveFilter {
    pub kinds: Vec<RecordKind>,
    pub pods: Vec<String>,
    pub namespaces: Vec<String>,
    pub scopes: Vec<pb::Scope>,
    pub directions: Vec<pb::Direction>,
}

impl LiveFilter {
    pub fn matches(&self, e: &Event) -> bool {
        let ok = |empty: bool, hit: bool| empty || hit;
        let (scope, direction) = match &e.record {
            Record::Flow(f) => (
                Some(wire::scope_to_proto(f.scope)),
                Some(wire::direction_to_proto(f.direction)),
            ),
            _ => (None, None),
        };
        ok(self.kinds.is_empty(), self.kinds.contains(&e.record.kind()))
            && ok(self.pods.is_empty(), self.pods.contains(&e.source.pod_name))
            && ok(
                self.namespaces.is_empty(),
                self.namespaces.contains(&e.source.pod_namespace),
            )
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
            for event in events.iter().filter(|e| sub.filter.matches(e)) {
                let missed = sub.missed.load(Ordering::Relaxed);
                if missed > 0 {
                    let gap = pb::SubscribeItem {
                        item: Some(pb::subscribe_item::Item::Gap(pb::Gap { missed })),
                    };
                    if sub.tx.try_send(gap).is_ok() {
                        sub.missed.store(0, Ordering::Relaxed);
                    } else {
                        sub.missed.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(telemetry::SUBSCRIBER_DROPPED).increment(1);
                        continue;
                    }
                }
                let item = pb::SubscribeItem {
                    item: Some(pb::subscribe_item::Item::Event(wire::event_to_proto(event))),
                };
                if sub.tx.try_send(item).is_err() {
                    sub.missed.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(telemetry::SUBSCRIBER_DROPPED).increment(1);
                }
            }
        }
    }
}
