//! Processes: /proc parsers, discovery by polling, lineage with tombstones, and the
//! socket → process attribution that the flow table asks for.

pub mod attribute;
pub mod exec_watch;
pub(crate) mod image;
pub(crate) mod links;
pub mod monitor;
pub mod parse;
pub(crate) mod relay;

pub use monitor::{ProcessConfig, ProcessMonitor, ProcessStats};
