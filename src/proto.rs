//! Generated protobuf and gRPC code for `procflow.v1` (see `proto/procflow/v1/procflow.proto`).

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("procflow.v1");
}
