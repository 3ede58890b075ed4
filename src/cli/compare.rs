//! `ktrack compare`: ImageNet-vs-SSL tables with confidence intervals and paired tests.

use anyhow::{Context, Result};

use super::Env;
use crate::context::Ktrack;
use crate::report::compare::{self, Axis, CompareOptions};
use crate::report::render;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TableFormat {
    Table,
    Md,
    Csv,
    Json,
    Latex,
}

/// How confidence intervals are computed (shared by `compare`, `report` and `ui`).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Intervals {
    /// Bootstrap replicates for single-seed cells (patient-level, stratified; 0 = none).
    #[arg(long, default_value_t = 2000)]
    pub bootstrap: usize,
    /// Confidence level.
    #[arg(long, default_value_t = 0.95)]
    pub level: f64,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only runs of this sweep.
    #[arg(long)]
    pub sweep: Option<String>,
    /// kl, incidence_4y or progression_4y.
    #[arg(long)]
    pub task: Option<String>,
    /// linear or finetune.
    #[arg(long)]
    pub protocol: Option<String>,
    /// Evaluation sets to show (test, or an external cohort's name); repeatable.
    #[arg(long)]
    pub eval: Vec<String>,
    /// The metric (default: qwk for KL, auroc for binary tasks).
    #[arg(long)]
    pub metric: Option<String>,
    /// Only runs with this seed.
    #[arg(long)]
    pub run_seed: Option<i64>,
    /// The init others are compared with (default: imagenet, else random).
    #[arg(long)]
    pub baseline: Option<String>,
    #[arg(long, value_enum, default_value = "init")]
    pub rows: Axis,
    #[arg(long, value_enum, default_value = "fraction")]
    pub cols: Axis,
    #[command(flatten)]
    pub intervals: Intervals,
    #[arg(long, value_enum, default_value = "table")]
    pub format: TableFormat,
    /// Also draw the metric against the label fraction, one line per init with its CI band
    /// (`.svg` or `.png`).
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

pub fn run(env: &Env, args: Args) -> Result<()> {
    let k = env.open()?;
    let opts = CompareOptions {
        sweep: args.sweep,
        task: args.task,
        protocol: args.protocol,
        eval: args.eval,
        metric: args.metric,
        run_seed: args.run_seed,
        baseline: args.baseline.clone(),
        rows: args.rows,
        cols: args.cols,
        bootstrap: args.intervals.bootstrap,
        level: args.intervals.level,
        seed: args.intervals.seed,
    };
    let tables = compare::compare(&k, &opts).context("could not compare runs")?;
    if let Some(path) = &args.plot {
        let plot_tables = if opts.rows == Axis::Init && opts.cols == Axis::Fraction {
            tables.clone()
        } else {
            compare::compare(
                &k,
                &CompareOptions {
                    rows: Axis::Init,
                    cols: Axis::Fraction,
                    ..opts.clone()
                },
            )?
        };
        let panels = crate::report::plot::fraction_plot(&plot_tables, path)
            .context("could not draw the plot")?;
        env.printer
            .status("Plotted", format!("{panels} panels → {}", path.display()));
    }
    let text = match args.format {
        TableFormat::Table => render::text(&tables),
        TableFormat::Md => render::markdown(&tables),
        TableFormat::Csv => render::csv(&tables),
        TableFormat::Json => render::json(&tables),
        TableFormat::Latex => render::latex(&tables),
    };
    env.printer.data(&text)?;
    Ok(())
}

/// The tables printed at the end of `ktrack run` (bootstrap CIs for single-seed cells).
pub fn print_sweep(env: &Env, k: &Ktrack, sweep: &str) -> Result<()> {
    let opts = CompareOptions {
        sweep: Some(sweep.to_string()),
        bootstrap: 500,
        ..CompareOptions::default()
    };
    match compare::compare(k, &opts) {
        Ok(tables) => env.printer.data(&render::text(&tables))?,
        Err(compare::Error::Nothing(_)) => {}
        Err(e) => return Err(e).context("could not compare runs"),
    }
    Ok(())
}
