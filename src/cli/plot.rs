//! `ktrack plot roc RUN…` and `ktrack export`.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::Env;
use crate::index::IdKind;
use crate::report::export::{self, ExportFormat};
use crate::report::plot;

#[derive(Debug, clap::Subcommand)]
pub enum PlotCommand {
    /// ROC curves of binary-task runs on one evaluation set.
    Roc {
        /// Run ids (any unique prefixes).
        #[arg(required = true)]
        runs: Vec<String>,
        /// The evaluation set (test, val, or an external cohort's name).
        #[arg(long, default_value = "test")]
        eval: String,
        /// Output file (.svg, or .png at twice the figure's size).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Precision-recall curves of binary-task runs on one evaluation set.
    Pr {
        /// Run ids (any unique prefixes).
        #[arg(required = true)]
        runs: Vec<String>,
        /// The evaluation set (test, val, or an external cohort's name).
        #[arg(long, default_value = "test")]
        eval: String,
        /// Output file (.svg, or .png at twice the figure's size).
        #[arg(short, long)]
        output: PathBuf,
    },
}

pub fn plot_cmd(env: &Env, cmd: PlotCommand) -> Result<()> {
    let k = env.open()?;
    let (runs, eval, output, kind) = match cmd {
        PlotCommand::Roc { runs, eval, output } => (runs, eval, output, plot::CurveKind::Roc),
        PlotCommand::Pr { runs, eval, output } => (runs, eval, output, plot::CurveKind::Pr),
    };
    let ids = runs
        .iter()
        .map(|r| crate::data::catalog::resolve(&k, r, IdKind::Run))
        .collect::<Result<Vec<_>, _>>()?;
    let curves = plot::roc_curves(&k, &ids, &eval)?;
    let what = match kind {
        plot::CurveKind::Roc => "ROC",
        plot::CurveKind::Pr => "precision-recall",
    };
    plot::curve_plot(&curves, kind, &output)
        .with_context(|| format!("could not draw the {what} curves"))?;
    env.printer.status(
        "Plotted",
        format!("{} {what} curves → {}", curves.len(), output.display()),
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Only runs of this sweep.
    #[arg(long)]
    pub sweep: Option<String>,
    #[arg(long, value_enum, default_value = "parquet")]
    pub format: ExportFormat,
    /// Output folder (runs, metrics and lineage tables are written into it).
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn export_cmd(env: &Env, args: ExportArgs) -> Result<()> {
    let k = env.open()?;
    let r = export::export(&k, args.sweep.as_deref(), &args.output, args.format)
        .context("could not export")?;
    for (name, path, rows) in &r.files {
        env.printer.status(
            "Exported",
            format!("{name}: {rows} rows → {}", path.display()),
        );
    }
    Ok(())
}
