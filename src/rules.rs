//! Detection rules: YAML rule files compiled into typed condition trees
//! ([`lang`]), evaluated per record, alerts grouped per rule + workload.

mod alert;
mod alert_key;
pub mod cli;
mod engine;
mod falco;
pub mod ka;
pub mod lang;
mod listening;
mod load;
mod pipes;
pub mod shared;
pub mod source;
pub mod stateful;

pub use engine::{Engine, Hit};
pub use falco::falco_payload;
pub use load::{Rule, RuleSet, RuleSpec, SeveritySpec};

/// The managed rule set, embedded so a container image carries it.
pub const MANAGED: &[(&str, &str)] = &[
    (
        "managed/shell.yaml",
        include_str!("../rules/managed/shell.yaml"),
    ),
    (
        "managed/network.yaml",
        include_str!("../rules/managed/network.yaml"),
    ),
    (
        "managed/exec.yaml",
        include_str!("../rules/managed/exec.yaml"),
    ),
    (
        "managed/behavior.yaml",
        include_str!("../rules/managed/behavior.yaml"),
    ),
    (
        "managed/k8s_audit.yaml",
        include_str!("../rules/managed/k8s_audit.yaml"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{file}: {msg}")]
    File { file: String, msg: String },
    #[error("{file}: rule {rule}: condition {pos}")]
    Condition {
        file: String,
        rule: String,
        pos: lang::ParseError,
    },
    #[error("{file}: rule {rule}: {msg}")]
    Rule {
        file: String,
        rule: String,
        msg: String,
    },
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod audit_tests;

#[cfg(test)]
mod detect_tests;

#[cfg(test)]
mod evasion_tests;

#[cfg(test)]
mod pipe_tests;
