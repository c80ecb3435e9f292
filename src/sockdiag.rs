//! Talking to the kernel's sock_diag: full dumps of the pod's TCP/UDP sockets, the
//! destroy-event multicast stream, and the cheap change check that decides when to dump.
//! Parsing of the kernel's bytes lives in [`msg`], which does no I/O.

pub mod destroy;
pub mod dump;
pub mod msg;
pub mod trigger;

pub use destroy::{DestroyEvent, DestroyListener};
pub use dump::{DumpError, DumpStats, Dumper};
pub use msg::{SocketInfo, TcpInfo};
