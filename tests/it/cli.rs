//! The command line as users see it: the configuration reference stays true to the binary,
//! and configuration layers apply in the documented order.

use std::process::Command;

const SUBCOMMANDS: [&str; 11] = [
    "collector",
    "aggregator",
    "tail",
    "query",
    "investigate talkers",
    "investigate loud",
    "investigate new",
    "investigate tree",
    "investigate api",
    "rules",
    "audit import",
];

fn procflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_procflow"))
}

fn help(subcommand: &str) -> String {
    let out = procflow()
        .args(subcommand.split(' '))
        .arg("--help")
        .env_clear()
        .output()
        .expect("run procflow --help");
    assert!(out.status.success(), "procflow {subcommand} --help failed");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

fn render_config_reference() -> String {
    let mut doc = String::from(
        "# Configuration reference\n\n\
         Generated from `procflow <command> --help` by `make docs`; a test fails when it drifts.\n\n\
         Every flag is also an environment variable `PROCFLOW_<FLAG>` (shown as `[env: …]`) and a\n\
         key of the TOML file given with `--config` (the flag's name without dashes, e.g.\n\
         `poll-interval = \"500ms\"`). Precedence: flag > environment > file > default.\n\n\
         `procflow-collector` (the sidecar's binary) takes exactly the flags, variables and\n\
         keys of `procflow collector` below (a test holds them equal).\n",
    );
    for sub in SUBCOMMANDS {
        doc.push_str(&format!(
            "\n## procflow {sub}\n\n```text\n{}```\n",
            help(sub)
        ));
    }
    doc
}

#[test]
fn config_reference_matches_the_binary() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md");
    let rendered = render_config_reference();
    if std::env::var_os("PROCFLOW_BLESS").is_some() {
        std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/docs")).expect("mkdir docs");
        std::fs::write(path, &rendered).expect("write docs/CONFIG.md");
        return;
    }
    let current = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        current == rendered,
        "docs/CONFIG.md is out of date with the binary's flags: run `make docs` and commit it"
    );
}

#[test]
fn every_flag_has_an_environment_variable() {
    use clap::CommandFactory;
    let command = procflow::cli::Cli::command();
    let mut missing = Vec::new();
    for sub in command.get_subcommands() {
        for arg in sub.get_arguments().chain(command.get_arguments()) {
            let is_flag = arg.get_long().is_some();
            if is_flag
                && arg.get_env().is_none()
                && !matches!(arg.get_id().as_str(), "help" | "version")
            {
                missing.push(format!(
                    "procflow {} --{}",
                    sub.get_name(),
                    arg.get_long().unwrap_or("?")
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "flags without a PROCFLOW_* variable: {missing:?}"
    );
}

#[test]
fn config_file_rejects_unknown_keys_and_names_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("procflow.toml");
    std::fs::write(&path, "definitely-not-a-flag = 3\n").expect("write config");
    let out = procflow()
        .args(["aggregator", "--config"])
        .arg(&path)
        .env_clear()
        .output()
        .expect("run procflow");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("definitely-not-a-flag"), "{stderr}");
}

#[test]
fn every_metric_is_documented() {
    // The metric names live beside their events, one file per side.
    let source = [
        include_str!("../../src/telemetry/collector.rs"),
        include_str!("../../src/telemetry/aggregator.rs"),
        include_str!("../../src/telemetry/audit.rs"),
    ];
    let docs = include_str!("../../docs/METRICS.md");
    let names: Vec<&str> = source
        .iter()
        .flat_map(|file| file.lines())
        .filter(|l| l.starts_with("pub const ") && l.contains(": &str = \"procflow_"))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert!(names.len() > 10, "found the metric constants");
    for name in names {
        assert!(
            docs.contains(&format!("`{name}`")),
            "metric {name} is missing from docs/METRICS.md"
        );
    }
}

/// The options of a help text, each with its description, sorted (a subcommand's help
/// lists the global flags among its own); `--version` left out (the binary's own).
fn options(help: &str) -> Vec<String> {
    let section = help.split_once("\nOptions:\n").map_or("", |(_, o)| o);
    let mut options: Vec<String> = Vec::new();
    for line in section.lines() {
        match options.last_mut() {
            Some(option) if !line.trim_start().starts_with('-') => option.push_str(line),
            _ => options.push(line.to_owned()),
        }
    }
    options.retain(|o| !o.contains("--version"));
    options.sort();
    options
}

#[test]
fn procflow_collector_takes_the_flags_of_procflow_collector() {
    let out = Command::new(env!("CARGO_BIN_EXE_procflow-collector"))
        .arg("--help")
        .env_clear()
        .output()
        .expect("run procflow-collector --help");
    assert!(out.status.success());
    let alone = String::from_utf8(out.stdout).expect("help is UTF-8");
    let sub = help("collector");
    assert!(options(&sub).len() > 20, "{sub}");
    assert_eq!(options(&alone), options(&sub));
}

fn collector_with_config(path: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_procflow-collector"))
        .arg("--config")
        .arg(path)
        .env_clear()
        .output()
        .expect("run procflow-collector")
}

#[test]
fn procflow_collector_reads_a_config_file_of_procflow_collector_keys() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("collector.toml");
    std::fs::write(
        &path,
        "once = true\nno-processes = true\noutput = \"stdout\"\n",
    )
    .expect("write config");
    let out = collector_with_config(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = String::from_utf8_lossy(&out.stdout);
    assert!(
        records.lines().any(|l| l.contains("\"kind\":\"listener\"")
            && l.contains(&format!("\"local_port\":{port}"))),
        "this test's listener is in the snapshot: {records}"
    );
    std::fs::write(&path, "definitely-not-a-flag = 3\n").expect("write config");
    let out = collector_with_config(&path);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("definitely-not-a-flag"));
}
