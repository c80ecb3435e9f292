//! `procflow rules`: validate, test and list rule sets.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;

use super::{Engine, RuleSet};
use crate::model::{Event, Record};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Compile every rule file of DIR (with the managed set); errors name file, rule and line:column.
    Validate {
        dir: PathBuf,
        /// Validate DIR alone, without the managed rules.
        #[arg(long)]
        no_managed: bool,
    },
    /// Run rules over a JSONL file of model::Event or model::Record lines; print what fires and why.
    Test {
        /// Extra rule directory (the managed set is always loaded unless --no-managed).
        #[arg(long)]
        rules: Option<PathBuf>,
        #[arg(long)]
        no_managed: bool,
        file: PathBuf,
    },
    /// List the loaded rules.
    List {
        #[arg(long)]
        rules: Option<PathBuf>,
        #[arg(long)]
        no_managed: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Validate { dir, no_managed } => {
            let set = RuleSet::load(Some(&dir), !no_managed)?;
            println!("ok: {} rules", set.rules.len());
        }
        Command::List { rules, no_managed } => {
            let set = RuleSet::load(rules.as_deref(), !no_managed)?;
            for r in &set.rules {
                println!(
                    "{}\t{:?}\t{}\t[{}]\t{}\t{}",
                    r.spec.id,
                    r.spec.severity,
                    if r.spec.enabled {
                        "enabled"
                    } else {
                        "disabled"
                    },
                    r.spec.kinds.join(","),
                    r.spec.name,
                    r.file
                );
            }
        }
        Command::Test {
            rules,
            no_managed,
            file,
        } => {
            let set = RuleSet::load(rules.as_deref(), !no_managed)?;
            let mut engine = Engine::new(set);
            engine.reemit_ns = 0;
            let f =
                std::fs::File::open(&file).with_context(|| format!("open {}", file.display()))?;
            let (mut n, mut fired) = (0u64, 0u64);
            for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let event = match serde_json::from_str::<Event>(&line) {
                    Ok(e) => e,
                    Err(_) => {
                        let record: Record = serde_json::from_str(&line).with_context(|| {
                            format!("{}:{}: not an Event or Record", file.display(), i + 1)
                        })?;
                        Event {
                            source: Default::default(),
                            received_at: 0,
                            record,
                        }
                    }
                };
                n += 1;
                let now = if event.received_at > 0 {
                    event.received_at
                } else {
                    crate::model::now_ns()
                };
                for a in engine.evaluate(&event, now) {
                    fired += 1;
                    println!(
                        "line {}: {} [{:?}] {} (count {})",
                        i + 1,
                        a.rule_id,
                        a.severity,
                        a.output,
                        a.count
                    );
                    for e in &a.evidence {
                        println!("    {e}");
                    }
                }
            }
            println!("{n} records, {fired} alerts");
        }
    }
    Ok(())
}
