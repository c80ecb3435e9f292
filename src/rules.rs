//! Detection rules (being written).

pub mod cli;
