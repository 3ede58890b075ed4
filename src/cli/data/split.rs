//! `ktrack data split`: split a cohort by patient into train/val/test.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::render;
use crate::cli::Env;
use crate::data::catalog;
use crate::data::split::{self, PartitionCounts, SplitOptions};
use crate::data::{Label, Partition};
use crate::output::{Format, Table, thousands};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cohort id (any unique prefix) or name (newest version).
    cohort: String,
    #[arg(long, default_value_t = 0.7)]
    train: f64,
    #[arg(long, default_value_t = 0.1)]
    val: f64,
    #[arg(long, default_value_t = 0.2)]
    test: f64,
    /// Label to stratify by: kl, incidence_4y, progression_4y, or none.
    #[arg(long, default_value = "kl")]
    stratify: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub fn run(env: &Env, args: Args) -> Result<()> {
    let k = env.open()?;
    let cohort = catalog::resolve_cohort(&k, &args.cohort)?;
    let stratify = if args.stratify == "none" {
        None
    } else {
        Some(args.stratify.parse::<Label>().map_err(anyhow::Error::msg)?)
    };
    let opts = SplitOptions {
        cohort,
        train: args.train,
        val: args.val,
        test: args.test,
        stratify,
        seed: args.seed,
    };
    let report =
        split::split(&k, &opts).with_context(|| format!("could not split cohort {cohort}"))?;
    env.printer.status(
        if report.new { "Split" } else { "Found" },
        format!("cohort {} → split {}", report.cohort, report.id),
    );
    match args.format {
        Format::Json => env.printer.data(&serde_json::to_string_pretty(&report)?)?,
        format => {
            let t = partition_table(&report.partitions, report.stratify);
            env.printer.data(&render(&t, format))?;
        }
    }
    Ok(())
}

/// Patients, samples and samples per class of each partition.
pub(crate) fn partition_table(
    parts: &BTreeMap<Partition, PartitionCounts>,
    label: Option<Label>,
) -> Table {
    let mut classes: Vec<String> = parts
        .values()
        .flat_map(|c| c.classes.keys().cloned())
        .collect();
    classes.sort_by(|a, b| (a == "none").cmp(&(b == "none")).then(a.cmp(b)));
    classes.dedup();
    let name = label.map_or("class", Label::name);
    let mut t = Table::new(
        ["partition", "patients", "samples"]
            .into_iter()
            .map(String::from)
            .chain(classes.iter().map(|c| format!("{name}={c}"))),
    );
    for (part, c) in parts {
        let mut row = vec![
            part.name().to_string(),
            thousands(c.patients as u64),
            thousands(c.samples as u64),
        ];
        row.extend(
            classes
                .iter()
                .map(|k| c.classes.get(k).copied().unwrap_or(0).to_string()),
        );
        t.rows.push(row);
    }
    t
}
