//! `procflow tail` and `procflow query` (being written).

#[derive(Debug, clap::Args)]
pub struct TailArgs {}

#[derive(Debug, clap::Args)]
pub struct QueryArgs {}

pub fn run_tail(_args: TailArgs) -> anyhow::Result<()> {
    anyhow::bail!("`procflow tail` is not built yet")
}

pub fn run_query(_args: QueryArgs) -> anyhow::Result<()> {
    anyhow::bail!("`procflow query` is not built yet")
}
