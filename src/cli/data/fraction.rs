//! `ktrack data fraction`: nested, stratified label fractions of a split's train partition.

use anyhow::{Context, Result};

use super::render;
use crate::cli::Env;
use crate::data::Label;
use crate::data::catalog;
use crate::data::fraction::{self, FractionOptions};
use crate::index::IdKind;
use crate::output::{Format, Table, pct, thousands};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Split id (any unique prefix).
    split: String,
    /// Comma-separated fractions in (0, 1].
    #[arg(long, value_delimiter = ',', default_value = "0.01,0.1,0.25,0.5,1.0")]
    fractions: Vec<f64>,
    /// The task label: kl, incidence_4y or progression_4y.
    #[arg(long, default_value = "kl")]
    stratify: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub fn run(env: &Env, args: Args) -> Result<()> {
    let k = env.open()?;
    let split = catalog::resolve(&k, &args.split, IdKind::Split)?;
    let label: Label = args.stratify.parse().map_err(anyhow::Error::msg)?;
    let opts = FractionOptions {
        split,
        fractions: args.fractions,
        stratify: label,
        seed: args.seed,
    };
    let report = fraction::fraction(&k, &opts)
        .with_context(|| format!("could not take label fractions of split {split}"))?;
    if args.format == Format::Json {
        return Ok(env.printer.data(&serde_json::to_string_pretty(&report)?)?);
    }
    let classes = label.classes();
    let mut t = Table::new(
        ["fraction", "id", "patients", "samples"]
            .into_iter()
            .map(String::from)
            .chain(classes.iter().map(|c| format!("{label}={c}"))),
    );
    for f in &report.fractions {
        env.printer.status(
            if f.new { "Fraction" } else { "Found" },
            format!(
                "{:>5} of split {} → {}",
                pct(f.fraction),
                report.split,
                f.id
            ),
        );
        let mut row = vec![
            pct(f.fraction),
            f.id.short(),
            thousands(f.patients as u64),
            thousands(f.samples as u64),
        ];
        row.extend(
            classes
                .iter()
                .map(|c| f.classes.get(c).copied().unwrap_or(0).to_string()),
        );
        t.rows.push(row);
    }
    env.printer.data(&render(&t, args.format))?;
    Ok(())
}
