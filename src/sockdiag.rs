//! Talking to the kernel's sock_diag: full dumps of the pod's TCP/UDP sockets, the
//! destroy-event multicast stream, the cheap change check that decides when to dump, and
//! the peer of an AF_UNIX socket (`unix`).
//! Parsing of the kernel's bytes lives in [`msg`], which does no I/O.

pub mod destroy;
pub mod dump;
pub mod msg;
pub mod trigger;
pub mod unix;

pub use destroy::{DestroyEvent, DestroyListener};
pub use dump::{DumpError, DumpStats, Dumper};
pub use msg::{SocketInfo, TcpInfo};
