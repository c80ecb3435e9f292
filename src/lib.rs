//! procflow: unprivileged runtime visibility for serverless Kubernetes.
//!
//! See `ARCHITECTURE.md` for the data path and what each module owns. The crate
//! forbids `unsafe` everywhere except in [`sys`], where each block carries a
//! `// SAFETY:` comment.

pub mod aggregator;
pub mod attribution;
pub mod audit;
pub mod cli;
pub mod client;
pub mod codec;
pub mod collector;
pub mod config;
pub mod durable;
// Plain records for tests, public for the benchmark's own tests (a separate crate); two
// small functions, not an API.
#[doc(hidden)]
pub mod fixtures;
pub mod flows;
pub mod investigate;
pub mod model;
pub mod pipeline;
pub mod procs;
pub mod proto;
pub mod rules;
pub mod sockdiag;
#[cfg(test)]
pub(crate) mod socket_holder;
#[allow(unsafe_code)]
pub mod sys;
pub mod telemetry;
pub mod transport;
pub mod wire;
