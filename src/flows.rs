//! The flow table: turns successive sock_diag dumps and destroy events into flow records
//! with phases START / UPDATE / END (exactly one END per socket), listener records, and
//! each flow's direction and scope.

pub mod classify;
pub mod cookie_order;
mod entry;
mod fin;
pub mod packet;
pub mod snapshot;
pub mod table;

pub use classify::{ClusterCidrs, Scoper};
pub use table::{FlowConfig, FlowStats, FlowTable, PEER_MEMORY};
