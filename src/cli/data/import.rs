//! `ktrack data import`: import the cohorts dataset descriptors name.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::render;
use crate::cli::Env;
use crate::data::descriptor::Dataset;
use crate::data::import;
use crate::output::{Format, Table, bytes, thousands};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dataset descriptors (`datasets/NAME.toml`).
    #[arg(required = true)]
    descriptors: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub fn run(env: &Env, args: Args) -> Result<()> {
    run_import(env, &args.descriptors, args.format)
}

pub(crate) fn run_import(env: &Env, descriptors: &[PathBuf], format: Format) -> Result<()> {
    let k = env.open()?;
    let mut reports = Vec::new();
    for path in descriptors {
        let dataset = Dataset::load(path)
            .with_context(|| format!("could not import dataset `{}`", path.display()))?;
        let term = crate::cli::progress::Terminal::new(&env.printer);
        let bar = crate::progress::Reporter::task(&term, "Importing");
        let report = import::import(&k, &dataset, bar.as_ref(), &env.interrupt)
            .with_context(|| format!("could not import dataset `{}`", path.display()))?;
        drop(bar);
        let rate = report.image_bytes as f64 / report.seconds.max(1e-9) / 1e6;
        env.printer.status(
            if report.new_cohort {
                "Imported"
            } else {
                "Unchanged"
            },
            format!(
                "{} images ({}, {} new) of `{}` in {:.1}s ({rate:.0} MB/s) → cohort {}",
                thousands(report.images as u64),
                bytes(report.image_bytes),
                thousands(report.new_images as u64),
                report.name,
                report.seconds,
                report.cohort
            ),
        );
        reports.push(report);
    }
    match format {
        Format::Json => env.printer.data(&serde_json::to_string_pretty(&reports)?)?,
        _ => {
            // Real cohorts: what the readings gave and what was excluded, and why.
            for r in reports.iter().filter(|r| !r.counts.is_empty()) {
                let mut t = Table::new(["", "count"]);
                for (what, n) in &r.counts {
                    t.row([what.clone(), thousands(*n as u64)]);
                }
                env.printer.data(&format!(
                    "`{}`: readings, images and outcome rules\n{}",
                    r.name,
                    render(&t, format)
                ))?;
            }
            let mut t = Table::new(["cohort", "name", "samples", "patients", "images", "new"]);
            for r in &reports {
                t.row([
                    r.cohort.short(),
                    r.name.clone(),
                    thousands(r.samples as u64),
                    thousands(r.patients as u64),
                    thousands(r.images as u64),
                    if r.new_cohort { "yes" } else { "no" }.to_string(),
                ]);
            }
            env.printer.data(&render(&t, format))?;
        }
    }
    Ok(())
}
