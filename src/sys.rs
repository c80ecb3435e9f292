//! Every `unsafe` block of the crate lives under this module, each with a `// SAFETY:`
//! comment; the rest of the crate denies `unsafe_code`.

pub mod clock;
pub mod code_pages;
pub mod inotify;
pub mod net;
pub mod ns;
pub mod proc;
pub mod protect;
