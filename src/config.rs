//! Layered configuration: command-line flag > `PROCFLOW_*` environment > `--config` file > default.
//!
//! Every flag is declared once with clap (`#[arg(long, env = "PROCFLOW_...")]`). A config
//! file is a TOML table whose keys are flag names (`poll-interval` or `poll_interval`);
//! [`apply_config_file`] exports each key as its `PROCFLOW_*` variable unless that variable
//! is already set, so the one clap definition handles all three layers.

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("config file {path}: unknown key {key:?} for `procflow {command}` (known: {known})")]
    UnknownKey {
        path: PathBuf,
        key: String,
        command: String,
        known: String,
    },
    #[error("config file {path}: key {key:?} must be a string, number, boolean or list of those")]
    BadValue { path: PathBuf, key: String },
}

/// The environment variable a config key maps to: `poll-interval` → `PROCFLOW_POLL_INTERVAL`.
pub fn env_name(key: &str) -> String {
    format!("PROCFLOW_{}", key.replace('-', "_").to_ascii_uppercase())
}

/// Reads `path` and exports its keys as `PROCFLOW_*` variables that are not already set.
/// `known_env` lists the variables the subcommand declares; any other key is an error.
/// Must run before clap parses and before any thread starts (it mutates the environment).
pub fn apply_config_file(
    path: &Path,
    command: &str,
    known_env: &[String],
) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })?;
    for (key, value) in table {
        let var = env_name(&key);
        if !known_env.contains(&var) {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
                command: command.to_owned(),
                known: known_env.join(", "),
            });
        }
        let rendered = render(&value).ok_or_else(|| ConfigError::BadValue {
            path: path.to_owned(),
            key: key.clone(),
        })?;
        if std::env::var_os(&var).is_none() {
            std::env::set_var(var, rendered);
        }
    }
    Ok(())
}

fn render(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(items) => {
            let parts: Option<Vec<String>> = items.iter().map(render).collect();
            Some(parts?.join(","))
        }
        _ => None,
    }
}

/// Parses durations like `500ms`, `2s`, `1m30s` (humantime syntax) for clap.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_flags() {
        assert_eq!(env_name("poll-interval"), "PROCFLOW_POLL_INTERVAL");
        assert_eq!(env_name("data_dir"), "PROCFLOW_DATA_DIR");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "no-such-flag = 1\n").expect("write");
        let err = apply_config_file(&path, "collector", &["PROCFLOW_ONCE".into()])
            .expect_err("unknown key must fail");
        assert!(err.to_string().contains("no-such-flag"), "{err}");
    }

    #[test]
    fn lists_render_comma_separated() {
        let v: toml::Table = "a = [\"10.0.0.0/8\", \"fc00::/7\"]".parse().expect("toml");
        assert_eq!(render(&v["a"]).as_deref(), Some("10.0.0.0/8,fc00::/7"));
    }
}
