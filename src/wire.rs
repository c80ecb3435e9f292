//! The only conversion between domain records (`model`) and the protobuf contract
//! (`proto::v1`). Outbound conversion cannot fail; inbound conversion validates everything a
//! remote peer controls (addresses, enums, sizes) and names the offending field.

use thiserror::Error;

pub mod answers;
pub mod api;
pub mod audit;
pub mod direct;
mod fields;
pub mod records;

pub use answers::*;
pub use fields::{direction_from_proto, direction_to_proto, scope_from_proto, scope_to_proto};
pub use records::*;

/// Bounds on what a peer may send, checked on every inbound record.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_string_bytes: usize,
    pub max_argv: usize,
    pub max_ancestors: usize,
    pub max_flows_per_alert: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_string_bytes: 64 * 1024,
            max_argv: 4096,
            max_ancestors: 128,
            max_flows_per_alert: 1024,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("{0}: missing")]
    Missing(&'static str),
    #[error("{field}: invalid IP address {value:?}")]
    BadAddress { field: &'static str, value: String },
    #[error("{0}: not UTF-8")]
    NotUtf8(&'static str),
    #[error("{field}: unknown or unspecified value {value}")]
    BadEnum { field: &'static str, value: i32 },
    #[error("{field}: {len} exceeds the limit of {limit}")]
    TooLarge {
        field: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("{field}: port {value} out of range")]
    BadPort { field: &'static str, value: u32 },
}
