//! `ktrack data ls`: the cohorts, splits and fractions the index holds.

use anyhow::Result;

use super::render;
use crate::cli::Env;
use crate::data::catalog;
use crate::output::{Format, Table, pct, thousands};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub fn run(env: &Env, args: Args) -> Result<()> {
    let k = env.open()?;
    let listing = catalog::ls(&k)?;
    if args.format == Format::Json {
        return Ok(env.printer.data(&serde_json::to_string_pretty(&listing)?)?);
    }
    let mut t = Table::new([
        "kind",
        "id",
        "name / parent",
        "samples",
        "patients",
        "details",
    ]);
    for c in &listing.cohorts {
        t.row([
            "cohort".to_string(),
            c.hash.short(),
            c.name.clone(),
            thousands(c.n_samples as u64),
            thousands(c.n_patients as u64),
            c.imported_at.clone(),
        ]);
    }
    for s in &listing.splits {
        t.row([
            "split".to_string(),
            s.hash.short(),
            format!("cohort {}", s.cohort),
            String::new(),
            String::new(),
            format!(
                "{}/{}/{} by {} seed {}",
                s.train,
                s.val,
                s.test,
                s.stratify.as_deref().unwrap_or("none"),
                s.seed
            ),
        ]);
    }
    for f in &listing.fractions {
        t.row([
            "fraction".to_string(),
            f.hash.short(),
            format!("split {}", f.split),
            thousands(f.n_samples as u64),
            thousands(f.n_patients as u64),
            format!("{} by {} seed {}", pct(f.fraction), f.stratify, f.seed),
        ]);
    }
    env.printer.data(&render(&t, args.format))?;
    Ok(())
}
