//! The collector's data path after the sources: bounded queue → batcher → outputs
//! (gRPC exporter with spool, stdout JSON lines).

pub mod queue;
pub mod stdout;

pub use queue::{record_queue, RecordRx, RecordTx};
