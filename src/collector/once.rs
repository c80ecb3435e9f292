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
use crate::sockdiag::msg::SocketInfo;
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
///
/// With processes, three things run at once from the start: the process sweep (this
/// thread), the fd walks of every pid listed (one walker per core) and the dump (a thread
/// of its own, which holds its sockets until the walks are indexed). They are nearly all
/// system calls on different objects, so on two cores they pack; in turn, the sweep and the
/// dump each left a core idle. The sockets then become records while the output thread
/// writes them.
pub fn take_snapshot(config: &EngineConfig, tx: &RecordTx) -> Result<SnapshotCounts, EngineError> {
    let mut dumper = Dumper::open().map_err(EngineError::OpenSockDiag)?;
    let mut counts = SnapshotCounts::default();
    let mut snapshot;
    let mut send = |record| {
        tx.send(record);
    };
    let stats = match &config.processes {
        None => {
            snapshot = Snapshot::new(Scoper::new(config.cluster_cidrs.clone()), now_ns());
            let mut no_attribution = crate::attribution::NoAttribution;
            dumper.dump_all_with(|batch| snapshot.take(batch, &mut no_attribution, &mut send))
        }
        Some(pc) => {
            let mut procs = ProcessMonitor::new(pc.clone()).map_err(EngineError::Proc)?;
            let walk = procs.start_walk_of_every_pid();
            let (batches, dumped) = crossbeam_channel::unbounded::<Vec<SocketInfo>>();
            let dump = std::thread::Builder::new()
                .name("dump".to_owned())
                .spawn(move || dumper.dump_all_with(|batch| drop(batches.send(batch.to_vec()))))
                .map_err(EngineError::Thread)?;
            let now = now_ns();
            let mut out = Vec::new();
            procs.sweep(now, &mut out);
            counts.processes = out.len() as u64;
            tx.send_all(&mut out);
            procs.index_whole_walk(walk);
            snapshot = Snapshot::new(Scoper::new(config.cluster_cidrs.clone()), now);
            // Batches in dump order (listeners before the connections they accepted), as
            // the dump handed them over; the channel ends with the dump.
            for batch in dumped {
                snapshot.take(&batch, &mut procs, &mut send);
            }
            dump.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }
    }
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
