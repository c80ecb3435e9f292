//! `procflow collector --once`: one snapshot of every current process and socket, written
//! whole (the record queue waits for its outputs; nothing is dropped), as fast as a command
//! can take it. Only what a snapshot needs is started: no destroy stream, no change
//! trigger, no exec watch. Processes are read first, then every readable fd table (a
//! snapshot wants every socket's owner), then one dump whose sockets become records as the
//! kernel hands them over ([`Snapshot`]) while the output thread writes them.

use crate::flows::snapshot::Snapshot;
use crate::flows::Scoper;
use crate::model::now_ns;
use crate::pipeline::RecordTx;
use crate::procs::ProcessMonitor;
use crate::sockdiag::Dumper;

use super::{EngineConfig, EngineError};

/// What one snapshot wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotCounts {
    pub processes: u64,
    pub flows: u64,
    pub listeners: u64,
}

/// Takes the snapshot into `tx`. Fails when the sockets cannot be dumped (the snapshot
/// would not be whole); a dump the kernel flagged as interrupted is reported but kept.
pub fn take_snapshot(config: &EngineConfig, tx: &RecordTx) -> Result<SnapshotCounts, EngineError> {
    let mut dumper = Dumper::open().map_err(EngineError::OpenSockDiag)?;
    let mut counts = SnapshotCounts::default();
    let mut procs = match &config.processes {
        Some(pc) => Some(ProcessMonitor::new(pc.clone()).map_err(EngineError::Proc)?),
        None => None,
    };
    let now = now_ns();
    if let Some(p) = procs.as_mut() {
        let mut out = Vec::new();
        p.sweep(now, &mut out);
        counts.processes = out.len() as u64;
        tx.send_all(&mut out);
        p.index_every_table();
    }
    let mut snapshot = Snapshot::new(Scoper::new(config.cluster_cidrs.clone()), now);
    let mut no_attribution = crate::attribution::NoAttribution;
    let lookup: &mut dyn crate::attribution::OwnerLookup = match procs.as_mut() {
        Some(p) => p,
        None => &mut no_attribution,
    };
    let mut send = |record| {
        tx.send(record);
    };
    let stats = dumper
        .dump_all_with(|batch| snapshot.take(batch, lookup, &mut send))
        .map_err(EngineError::Dump)?;
    if stats.interrupted {
        tracing::warn!(
            "the kernel flagged the dump as interrupted (sockets changed during it): a socket may be missing or repeated"
        );
    }
    counts.flows = snapshot.flows;
    counts.listeners = snapshot.listener_count;
    Ok(counts)
}
