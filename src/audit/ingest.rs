//! Where decoded audit events go, whichever adapter brought them: each becomes an
//! [`Event`], the store keeps those not stored before, and those are published to live
//! subscribers and offered to detection (audit rules, exec joins). A request is answered
//! only after the store has kept its events, so a success means they are durable.
//!
//! An audit event's source is its cluster (`collector_id` = `k8s-audit/<cluster>`) with the
//! object's namespace and, for a pod, its name: queries and subscriptions filtered by pod
//! or namespace then show the API activity about that pod beside its runtime records. Its
//! time (`received_at`) is the API server's stage timestamp, never later than its arrival,
//! so a backfill lands at the hour it happened.

use std::collections::HashMap;
use std::sync::Arc;

use crate::aggregator::detect::Detector;
use crate::aggregator::store::{Store, StoreError};
use crate::aggregator::Hub;
use crate::model::{now_ns, AuditRecord, CollectorIdentity, Event, Record};
use crate::telemetry::audit::{AuditEventsAppended, AuditRepaired};
use crate::telemetry::InternalEvent;

use super::credentials::Adapter;
use super::event::Notes;

/// The collector id prefix of audit events' sources.
pub const SOURCE_PREFIX: &str = "k8s-audit/";

/// What one request's events came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ingested {
    pub stored: usize,
    pub duplicates: usize,
}

pub struct AuditIngest {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    detector: Option<Detector>,
}

impl AuditIngest {
    pub fn new(store: Arc<dyn Store>, hub: Arc<Hub>, detector: Option<Detector>) -> AuditIngest {
        AuditIngest {
            store,
            hub,
            detector,
        }
    }

    /// Stores, publishes and submits for detection the events not stored before.
    pub async fn ingest(
        &self,
        adapter: Adapter,
        records: Vec<AuditRecord>,
    ) -> Result<Ingested, StoreError> {
        if records.is_empty() {
            return Ok(Ingested::default());
        }
        let events = events_of(records, now_ns());
        let appended = self
            .store
            .append_audit(events)
            .await
            .map_err(|_| StoreError::WriterGone)??;
        AuditEventsAppended {
            adapter: adapter.as_str(),
            stored: appended.stored.len(),
            duplicates: appended.duplicates,
        }
        .emit();
        let done = Ingested {
            stored: appended.stored.len(),
            duplicates: appended.duplicates,
        };
        if !appended.stored.is_empty() {
            self.hub.publish(&appended.stored);
            if let Some(detector) = &self.detector {
                detector.submit(appended.stored);
            }
        }
        Ok(done)
    }
}

/// Counts what decoding repaired, once per request.
pub fn count_notes(notes: Notes) {
    AuditRepaired {
        fields: notes.truncated + notes.bad_addresses,
        unreadable_bodies: notes.unreadable_bodies,
    }
    .emit();
}

/// The source an audit event is stored under.
pub fn source_of(record: &AuditRecord) -> CollectorIdentity {
    let object = record.object.as_ref();
    let namespace = object.and_then(|o| o.namespace.clone()).unwrap_or_default();
    let pod = object
        .filter(|o| o.resource == "pods" && o.api_group.as_deref().unwrap_or("").is_empty())
        .and_then(|o| o.name.clone())
        .unwrap_or_default();
    CollectorIdentity {
        collector_id: format!("{SOURCE_PREFIX}{}", record.cluster),
        pod_name: pod,
        pod_namespace: namespace,
        version: env!("CARGO_PKG_VERSION").into(),
        ..CollectorIdentity::default()
    }
}

/// Events for `records`, sharing one source per (cluster, namespace, pod) of the batch.
pub fn events_of(records: Vec<AuditRecord>, now: u64) -> Vec<Event> {
    let mut sources: HashMap<(String, String, String), Arc<CollectorIdentity>> = HashMap::new();
    records
        .into_iter()
        .map(|record| {
            let identity = source_of(&record);
            let key = (
                identity.collector_id.clone(),
                identity.pod_namespace.clone(),
                identity.pod_name.clone(),
            );
            let source = sources
                .entry(key)
                .or_insert_with(|| Arc::new(identity))
                .clone();
            Event {
                source,
                received_at: record.stage_time.min(now),
                record: Record::Audit(Box::new(record)),
            }
        })
        .collect()
}
