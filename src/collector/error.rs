//! Why the collector's engine could not start, or could not take a whole snapshot.

use std::io;

use crate::sockdiag::DumpError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("opening sock_diag: {0}")]
    OpenSockDiag(#[source] DumpError),
    #[error("dumping the sockets: {0}")]
    Dump(#[source] DumpError),
    #[error("joining the sock_diag destroy groups: {0}")]
    DestroyGroups(#[source] io::Error),
    #[error("opening /proc/net/sockstat and snmp: {0}")]
    Trigger(#[source] io::Error),
    #[error("reading /proc: {0}")]
    Proc(#[source] io::Error),
    #[error("starting a thread: {0}")]
    Thread(#[source] io::Error),
}
