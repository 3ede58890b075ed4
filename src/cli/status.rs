//! `ktrack status [SWEEP]`: runs by status; failed runs show their error.

use anyhow::Result;

use super::Env;
use crate::output::{Format, Table};
use crate::runner::status;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A sweep name (default: every run).
    pub sweep: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub fn run(env: &Env, args: Args) -> Result<()> {
    let k = env.open()?;
    let rows = status::rows(&k, args.sweep.as_deref())?;
    if let Some(s) = &args.sweep
        && rows.is_empty()
    {
        anyhow::bail!("sweep `{s}` has no runs (run `ktrack run experiments/{s}.toml` first)");
    }
    if args.format == Format::Json {
        return Ok(env.printer.data(&serde_json::to_string_pretty(&rows)?)?);
    }
    env.printer.status(
        "Status",
        status::counts(&rows)
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let mut t = Table::new(["run", "kind", "what", "status", "test metric", "error"]);
    for r in &rows {
        t.row([
            r.id[..12].to_string(),
            r.kind.clone(),
            r.label.clone(),
            r.status_text(),
            r.headline(),
            r.error.clone().unwrap_or_default(),
        ]);
    }
    env.printer.data(&super::data::render(&t, args.format))?;
    Ok(())
}
