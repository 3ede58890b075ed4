//! `ktrack plot roc RUN…` and `ktrack export`.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::Env;
use crate::index::{self, IdKind};
use crate::predictions::{Predictions, TaskKind};
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
        /// Output file (.svg or .png).
        #[arg(short, long)]
        output: PathBuf,
    },
}

pub fn plot_cmd(env: &Env, cmd: PlotCommand) -> Result<()> {
    let k = env.open()?;
    match cmd {
        PlotCommand::Roc { runs, eval, output } => {
            let mut curves = Vec::new();
            for r in &runs {
                let id = crate::data::catalog::resolve(&k, r, IdKind::Run)?;
                let role = format!("predictions:{eval}");
                let (label, hash): (String, Option<String>) = k
                    .index
                    .run(
                        sqlx::query_as(
                            "SELECT r.label, o.hash FROM runs r LEFT JOIN run_outputs o ON o.run = r.id AND o.role = ?2 WHERE r.id = ?1",
                        )
                        .bind(id.hex())
                        .bind(&role)
                        .fetch_one(k.index.pool()),
                    )
                    .map_err(index::Error::from)?;
                let hash = hash.with_context(|| {
                    format!("run {id} has no predictions on `{eval}` (is it finished?)")
                })?;
                let preds = Predictions::from_parquet(&k.store.read(&hash.parse()?)?)?;
                anyhow::ensure!(
                    preds.kind == TaskKind::Binary,
                    "run {id} is a KL run; ROC curves need a binary task"
                );
                let scores = preds.scores();
                let auc = crate::metrics::binary::auroc(&preds.label, &scores);
                curves.push((label, plot::roc_points(&preds.label, &scores), auc));
            }
            plot::roc_plot(&curves, &output).context("could not draw the ROC curves")?;
            env.printer.status(
                "Plotted",
                format!("{} ROC curves → {}", curves.len(), output.display()),
            );
            Ok(())
        }
    }
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
