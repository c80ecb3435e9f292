//! Admission: how much of the aggregator any one client may hold, decided in one place
//! before a request costs anything. Every bound is a flag (`AdmissionArgs`); every refusal
//! is counted (`procflow_admission_refused_total{limit}`) and logged, sampled:
//! - records decoded and not yet stored, across every ingest stream: a batch that does not
//!   fit waits for room (its collector's acks slow down), so a thousand collectors sending
//!   at once cost bounded memory;
//! - concurrent ingest streams, subscribers and store reads (queries, investigations) per
//!   identity: more are refused with `RESOURCE_EXHAUSTED`;
//! - a query's `limit` (larger is `INVALID_ARGUMENT`) and how long its answer may take to
//!   stream (a reader that stalls must not pin the store's snapshot);
//! - the values of a filter list (pods, namespaces): larger is `INVALID_ARGUMENT`.
//!
//! What the request body itself may cost is bounded before this layer: the gRPC message
//! size, and a batch's record count is checked before any record is decoded
//! ([`crate::codec::RawBatch::parse_bounded`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::{Request, Status};

use crate::aggregator::auth::{Principal, PrincipalKind};
use crate::config::parse_duration;
use crate::proto::v1 as pb;
use crate::telemetry;
use crate::telemetry::aggregator::{AdmissionRefused, IngestAdmissionWaited, RecordsInFlight};
use crate::telemetry::InternalEvent;

#[derive(Debug, Clone, clap::Args)]
pub struct AdmissionArgs {
    /// Records decoded and not yet stored, across all ingest streams: a batch that does not
    /// fit waits for room, so memory stays bounded however many collectors send at once.
    #[arg(
        long,
        env = "PROCFLOW_MAX_RECORDS_IN_FLIGHT",
        default_value_t = 262_144
    )]
    pub max_records_in_flight: usize,
    /// Concurrent ingest streams per identity (a collector needs one); more are refused.
    #[arg(
        long,
        env = "PROCFLOW_MAX_INGEST_STREAMS_PER_IDENTITY",
        default_value_t = 8
    )]
    pub max_ingest_streams_per_identity: usize,
    /// Concurrent live subscriptions per identity; more are refused.
    #[arg(
        long,
        env = "PROCFLOW_MAX_SUBSCRIBERS_PER_IDENTITY",
        default_value_t = 16
    )]
    pub max_subscribers_per_identity: usize,
    /// Concurrent store reads (queries, investigations) per identity; more are refused.
    #[arg(long, env = "PROCFLOW_MAX_READS_PER_IDENTITY", default_value_t = 4)]
    pub max_reads_per_identity: usize,
    /// Largest `limit` a query may ask for; 0 asks for this many. A larger limit is refused
    /// (narrow the time range instead).
    #[arg(long, env = "PROCFLOW_MAX_QUERY_LIMIT", default_value_t = 100_000)]
    pub max_query_limit: u32,
    /// Most values in one list of a filter (pods, namespaces, kinds...) of a query,
    /// subscription or investigation.
    #[arg(long, env = "PROCFLOW_MAX_FILTER_VALUES", default_value_t = 10_000)]
    pub max_filter_values: usize,
    /// A query still streaming its answer after this long is ended (DEADLINE_EXCEEDED): a
    /// reader that stalls must not hold the store's snapshot open.
    #[arg(long, env = "PROCFLOW_QUERY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub query_timeout: Duration,
}

impl Default for AdmissionArgs {
    fn default() -> Self {
        AdmissionArgs {
            max_records_in_flight: 262_144,
            max_ingest_streams_per_identity: 8,
            max_subscribers_per_identity: 16,
            max_reads_per_identity: 4,
            max_query_limit: 100_000,
            max_filter_values: 10_000,
            query_timeout: Duration::from_secs(60),
        }
    }
}

/// Which bound refused a request (the `limit` label of the refusal counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    IngestStreams,
    Subscribers,
    Reads,
    QueryLimit,
    FilterValues,
    QueryTimeout,
}

impl Limit {
    const ALL: [Limit; 6] = [
        Limit::IngestStreams,
        Limit::Subscribers,
        Limit::Reads,
        Limit::QueryLimit,
        Limit::FilterValues,
        Limit::QueryTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::IngestStreams => "ingest_streams",
            Limit::Subscribers => "subscribers",
            Limit::Reads => "reads",
            Limit::QueryLimit => "query_limit",
            Limit::FilterValues => "filter_values",
            Limit::QueryTimeout => "query_timeout",
        }
    }

    fn index(self) -> usize {
        Limit::ALL.iter().position(|l| *l == self).unwrap_or(0)
    }
}

/// What a held [`Slot`] counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    IngestStream,
    Subscriber,
    Read,
}

impl Class {
    fn limit(self) -> Limit {
        match self {
            Class::IngestStream => Limit::IngestStreams,
            Class::Subscriber => Limit::Subscribers,
            Class::Read => Limit::Reads,
        }
    }
}

/// The identity a request's limits count against: its verified principal's key. The
/// loopback principal (`make run`, the shared token) is counted per source address, so that
/// local clients on different addresses have bounds of their own; a request that carries no
/// principal (in-process) is counted by its peer address.
pub fn identity_key<T>(request: &Request<T>) -> Arc<str> {
    let peer = || {
        request
            .remote_addr()
            .map_or_else(|| "in-process".to_owned(), |a| a.ip().to_string())
    };
    match request.extensions().get::<Principal>() {
        Some(p) if matches!(p.kind(), PrincipalKind::Local) => {
            Arc::from(format!("{}/{}", p.key(), peer()))
        }
        Some(p) => Arc::from(p.key()),
        None => Arc::from(format!("peer/{}", peer())),
    }
}

pub struct Admission {
    args: AdmissionArgs,
    in_flight: Arc<Semaphore>,
    held: Mutex<HashMap<(Class, Arc<str>), usize>>,
    logs: [telemetry::LogSampler; Limit::ALL.len()],
}

impl Admission {
    pub fn new(args: AdmissionArgs) -> Arc<Admission> {
        let permits = args.max_records_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Admission {
            in_flight: Arc::new(Semaphore::new(permits)),
            held: Mutex::new(HashMap::new()),
            logs: std::array::from_fn(|_| telemetry::LogSampler::new(1, Duration::from_secs(10))),
            args,
        })
    }

    pub fn args(&self) -> &AdmissionArgs {
        &self.args
    }

    /// Takes one of `identity`'s slots of `class` for as long as the returned [`Slot`]
    /// lives, or refuses when it holds them all.
    pub fn admit(self: &Arc<Self>, class: Class, identity: &Arc<str>) -> Result<Slot, Status> {
        let max = match class {
            Class::IngestStream => self.args.max_ingest_streams_per_identity,
            Class::Subscriber => self.args.max_subscribers_per_identity,
            Class::Read => self.args.max_reads_per_identity,
        };
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry((class, identity.clone())).or_insert(0);
        if *count >= max {
            drop(held);
            let what = match class {
                Class::IngestStream => "ingest streams",
                Class::Subscriber => "subscriptions",
                Class::Read => "queries and investigations",
            };
            return Err(self.refuse(
                class.limit(),
                identity,
                Status::resource_exhausted(format!(
                    "{identity} already has {max} {what} open, the most one identity may hold"
                )),
            ));
        }
        *count += 1;
        Ok(Slot {
            admission: Arc::clone(self),
            class,
            identity: identity.clone(),
        })
    }

    /// Room for `records` decoded records, waiting for it when ingest is at its bound. A
    /// batch larger than the whole bound takes all of it.
    pub async fn reserve_records(&self, records: usize) -> RecordsPermit {
        let n = u32::try_from(records.clamp(1, self.args.max_records_in_flight.max(1)))
            .unwrap_or(u32::MAX);
        let permit = match self.in_flight.clone().try_acquire_many_owned(n) {
            Ok(permit) => permit,
            Err(_) => {
                IngestAdmissionWaited.emit();
                match self.in_flight.clone().acquire_many_owned(n).await {
                    Ok(permit) => permit,
                    // The semaphore is never closed.
                    Err(_) => unreachable!("the in-flight semaphore is never closed"),
                }
            }
        };
        self.report_in_flight();
        RecordsPermit {
            permit: Some(permit),
            semaphore: self.in_flight.clone(),
            max: self.args.max_records_in_flight,
        }
    }

    fn report_in_flight(&self) {
        report_in_flight(&self.in_flight, self.args.max_records_in_flight);
    }

    /// The number of events a query may return: its `limit`, 0 meaning the maximum.
    pub fn query_limit(&self, identity: &str, limit: u32) -> Result<usize, Status> {
        let max = self.args.max_query_limit;
        match limit {
            0 => Ok(max as usize),
            n if n <= max => Ok(n as usize),
            n => Err(self.refuse(
                Limit::QueryLimit,
                identity,
                Status::invalid_argument(format!(
                    "limit {n} is over the aggregator's maximum of {max}: narrow the time range"
                )),
            )),
        }
    }

    /// Refuses a filter with a list longer than the bound.
    pub fn check_filter(&self, identity: &str, filter: &pb::Filter) -> Result<(), Status> {
        let max = self.args.max_filter_values;
        let lists = [
            ("kinds", filter.kinds.len()),
            ("pods", filter.pods.len()),
            ("namespaces", filter.namespaces.len()),
            ("scopes", filter.scopes.len()),
            ("directions", filter.directions.len()),
        ];
        match lists.into_iter().find(|(_, len)| *len > max) {
            None => Ok(()),
            Some((list, len)) => Err(self.refuse(
                Limit::FilterValues,
                identity,
                Status::invalid_argument(format!(
                    "filter.{list} has {len} values, over the maximum of {max}"
                )),
            )),
        }
    }

    /// A query ended at its deadline: counted and logged like a refusal.
    pub fn query_timed_out(&self, identity: &str, sent: usize) -> Status {
        self.refuse(
            Limit::QueryTimeout,
            identity,
            Status::deadline_exceeded(format!(
                "the query's answer was still streaming after {:?} ({sent} events sent): narrow the time range or read faster",
                self.args.query_timeout
            )),
        )
    }

    /// Counts a refusal and logs it, at most one line per limit every ten seconds (with
    /// how many went unlogged): a client hammering a limit cannot flood the log.
    fn refuse(&self, limit: Limit, identity: &str, status: Status) -> Status {
        AdmissionRefused {
            limit: limit.as_str(),
            sampler: &self.logs[limit.index()],
            identity,
            reason: status.message(),
        }
        .emit();
        status
    }

    fn release(&self, class: Class, identity: &Arc<str>) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let key = (class, identity.clone());
        if let Some(count) = held.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&key);
            }
        }
    }

    /// Slots of `class` that `identity` holds now.
    pub fn held(&self, class: Class, identity: &str) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(&(class, Arc::from(identity)))
            .copied()
            .unwrap_or(0)
    }

    /// Decoded records not yet stored.
    pub fn records_in_flight(&self) -> usize {
        self.args
            .max_records_in_flight
            .saturating_sub(self.in_flight.available_permits())
    }
}

fn report_in_flight(semaphore: &Semaphore, max: usize) {
    let in_flight = max.saturating_sub(semaphore.available_permits());
    RecordsInFlight { records: in_flight }.emit();
}

/// One concurrent stream, subscription or read of an identity, given back on drop.
pub struct Slot {
    admission: Arc<Admission>,
    class: Class,
    identity: Arc<str>,
}

impl Slot {
    pub fn identity(&self) -> &Arc<str> {
        &self.identity
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.release(self.class, &self.identity);
    }
}

/// Room for a batch's records between decoding and the store, given back on drop.
pub struct RecordsPermit {
    permit: Option<OwnedSemaphorePermit>,
    semaphore: Arc<Semaphore>,
    max: usize,
}

impl Drop for RecordsPermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        report_in_flight(&self.semaphore, self.max);
    }
}

/// A response stream that holds its [`Slot`] until the client is done with it.
pub struct Held<S> {
    stream: S,
    _slot: Slot,
}

impl<S> Held<S> {
    pub fn new(stream: S, slot: Slot) -> Held<S> {
        Held {
            stream,
            _slot: slot,
        }
    }
}

impl<S: Stream + Unpin> Stream for Held<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.stream).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(args: AdmissionArgs) -> Arc<Admission> {
        Admission::new(args)
    }

    #[test]
    fn slots_are_per_identity_and_class_and_come_back_on_drop() {
        let a = admission(AdmissionArgs {
            max_ingest_streams_per_identity: 2,
            max_reads_per_identity: 1,
            ..AdmissionArgs::default()
        });
        let (x, y): (Arc<str>, Arc<str>) = (Arc::from("x"), Arc::from("y"));
        let first = a.admit(Class::IngestStream, &x).expect("first");
        let _second = a.admit(Class::IngestStream, &x).expect("second");
        let refused = a
            .admit(Class::IngestStream, &x)
            .err()
            .expect("third refused");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("2 ingest streams"),
            "{refused:?}"
        );
        // Another identity, another class: their own budgets.
        let _other = a.admit(Class::IngestStream, &y).expect("y");
        let _read = a.admit(Class::Read, &x).expect("read");
        assert!(a.admit(Class::Read, &x).is_err());
        drop(first);
        assert_eq!(a.held(Class::IngestStream, "x"), 1);
        a.admit(Class::IngestStream, &x)
            .expect("a slot given back is free again");
    }

    #[test]
    fn query_limits_and_filters_are_bounded() {
        let a = admission(AdmissionArgs {
            max_query_limit: 1000,
            max_filter_values: 3,
            ..AdmissionArgs::default()
        });
        assert_eq!(a.query_limit("x", 0).expect("default"), 1000);
        assert_eq!(a.query_limit("x", 10).expect("small"), 10);
        let e = a.query_limit("x", u32::MAX).expect_err("huge");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let mut filter = pb::Filter {
            pods: vec!["a".into(), "b".into(), "c".into()],
            ..pb::Filter::default()
        };
        a.check_filter("x", &filter).expect("at the bound");
        filter.namespaces = vec!["n".into(); 4];
        let e = a.check_filter("x", &filter).expect_err("over");
        assert!(e.message().contains("filter.namespaces has 4"), "{e:?}");
    }

    #[tokio::test]
    async fn records_in_flight_wait_for_room() {
        let a = admission(AdmissionArgs {
            max_records_in_flight: 100,
            ..AdmissionArgs::default()
        });
        let big = a.reserve_records(80).await;
        assert_eq!(a.records_in_flight(), 80);
        // 30 more do not fit until the 80 are stored.
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move { a.reserve_records(30).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(big);
        let small = waiting.await.expect("joined");
        assert_eq!(a.records_in_flight(), 30);
        // A batch larger than the whole bound takes all of it rather than waiting forever.
        drop(small);
        let all = a.reserve_records(1_000).await;
        assert_eq!(a.records_in_flight(), 100);
        drop(all);
        assert_eq!(a.records_in_flight(), 0);
    }
}
