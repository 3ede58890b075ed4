//! `ktrack metrics FILE`: scikit-learn-exact metrics of any predictions file in ktrack's schema.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::Env;
use crate::output::{Format, Table};
use crate::predictions::{self, Predictions, TaskKind};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A predictions Parquet file (sample_id, patient_id, label, prob_0..prob_4 or prob).
    pub file: PathBuf,
    /// The task kind; read from the file's columns when omitted.
    #[arg(long, value_enum)]
    pub task: Option<TaskKind>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub fn run(env: &Env, args: Args) -> Result<()> {
    let ctx = || format!("could not compute metrics of `{}`", args.file.display());
    let bytes = std::fs::read(&args.file).with_context(ctx)?;
    let preds = Predictions::from_parquet(&bytes).with_context(ctx)?;
    if let Some(asked) = args.task
        && asked != preds.kind
    {
        return Err(predictions::Error::Kind {
            found: preds.kind,
            asked,
        })
        .with_context(ctx);
    }
    let m = preds.metrics();
    match args.format {
        Format::Json => env
            .printer
            .data(&predictions::metrics_json(&m).to_string())?,
        format => {
            let mut t = Table::new(["metric", "value"]);
            for (k, v) in &m {
                t.row([
                    k.to_string(),
                    if *k == "n" {
                        format!("{v}")
                    } else {
                        format!("{v:.4}")
                    },
                ]);
            }
            env.printer.data(&super::data::render(&t, format))?;
        }
    }
    Ok(())
}
