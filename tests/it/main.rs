//! All integration tests in one binary: real sockets, processes, network namespaces,
//! gRPC connections and databases. Each module asserts only on what it created.

mod admission;
mod aggregator;
mod audit;
mod audit_investigate;
mod audit_join;
mod bench;
mod cli;
mod console;
mod credentials;
mod detections;
mod exec_image;
mod failover;
mod faults;
mod fidelity;
mod identity;
mod investigate;
mod pg;
mod pipeline;
mod procs;
mod readers;
mod replicas;
mod rollup_ends;
mod rollups;
mod rules;
mod sandbox;
mod silenced;
mod sockets;
mod store;
mod store_live;
mod store_tls;
mod util;
