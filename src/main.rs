//! The `procflow` binary: all of it lives in the library (`procflow::cli`).

fn main() -> anyhow::Result<()> {
    procflow::cli::main_with_args(std::env::args_os().collect())
}
