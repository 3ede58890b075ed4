//! `ktrack export`: runs, metrics and lineage as tables that pandas, polars and duckdb read —
//! `runs`, `metrics` and `lineage`, each as Parquet or CSV.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};

use crate::context::Ktrack;
use crate::index;
use crate::index::points::{ExportMetric, ExportRun, LineageRow};
use crate::table;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Parquet,
    Csv,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Index(#[from] index::Error),
    #[error("could not write `{path}`: {message}")]
    Write { path: PathBuf, message: String },
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportReport {
    /// (table, file, rows)
    pub files: Vec<(String, PathBuf, usize)>,
}

fn strings(v: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

fn write(batch: &RecordBatch, path: &Path, format: ExportFormat) -> Result<(), Error> {
    let err = |m: String| Error::Write {
        path: path.to_path_buf(),
        message: m,
    };
    let bytes = match format {
        ExportFormat::Parquet => {
            let meta =
                BTreeMap::from([("ktrack.schema".to_string(), "ktrack.export/1".to_string())]);
            table::write(batch, &meta).map_err(|e| err(e.to_string()))?
        }
        ExportFormat::Csv => {
            let mut out = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                w.write(batch).map_err(|e| err(e.to_string()))?;
            }
            out
        }
    };
    std::fs::write(path, bytes).map_err(|e| err(e.to_string()))
}

/// Writes `runs`, `metrics` and `lineage` into `dir`.
pub fn export(
    k: &Ktrack,
    sweep: Option<&str>,
    dir: &Path,
    format: ExportFormat,
) -> Result<ExportReport, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Write {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let (runs, metrics, lineage) = {
        let mut c = k.index.read()?;
        let mut p = c.points();
        (
            p.export_runs(sweep)?,
            p.export_metrics(sweep)?,
            p.export_lineage(sweep)?,
        )
    };
    let ext = match format {
        ExportFormat::Parquet => "parquet",
        ExportFormat::Csv => "csv",
    };
    let mut files = Vec::new();
    for (name, batch) in [
        ("runs", runs_batch(&runs)),
        ("metrics", metrics_batch(&metrics)),
        ("lineage", lineage_batch(&lineage)),
    ] {
        let path = dir.join(format!("{name}.{ext}"));
        write(&batch, &path, format)?;
        files.push((name.to_string(), path, batch.num_rows()));
    }
    Ok(ExportReport { files })
}

fn text<T>(rows: &[T], f: impl Fn(&T) -> Option<String>) -> ArrayRef {
    strings(rows.iter().map(f).collect())
}

fn runs_batch(runs: &[ExportRun]) -> RecordBatch {
    let ints = |f: fn(&ExportRun) -> Option<i64>| -> ArrayRef {
        Arc::new(Int64Array::from(runs.iter().map(f).collect::<Vec<_>>()))
    };
    table::batch(vec![
        ("run", text(runs, |r| Some(r.id.hex())), false),
        ("kind", text(runs, |r| Some(r.kind.clone())), false),
        ("label", text(runs, |r| Some(r.label.clone())), false),
        ("status", text(runs, |r| Some(r.status.clone())), false),
        ("attempts", ints(|r| Some(r.attempts)), false),
        ("error", text(runs, |r| r.error.clone()), true),
        ("record", text(runs, |r| r.record.map(|h| h.hex())), true),
        ("started_at", text(runs, |r| r.started_at.clone()), true),
        ("finished_at", text(runs, |r| r.finished_at.clone()), true),
        ("init", text(runs, |r| r.init.clone()), true),
        ("task", text(runs, |r| r.task.clone()), true),
        ("protocol", text(runs, |r| r.protocol.clone()), true),
        (
            "fraction",
            Arc::new(Float64Array::from(
                runs.iter().map(|r| r.fraction).collect::<Vec<_>>(),
            )) as ArrayRef,
            true,
        ),
        ("seed", ints(|r| r.seed), true),
        ("arch", text(runs, |r| r.arch.clone()), true),
    ])
    .expect("the runs schema is consistent")
}

fn metrics_batch(metrics: &[ExportMetric]) -> RecordBatch {
    table::batch(vec![
        ("run", text(metrics, |m| Some(m.run.hex())), false),
        (
            "eval_set",
            text(metrics, |m| Some(m.eval_set.clone())),
            false,
        ),
        ("metric", text(metrics, |m| Some(m.metric.clone())), false),
        (
            "value",
            Arc::new(Float64Array::from(
                metrics.iter().map(|m| m.value).collect::<Vec<_>>(),
            )) as ArrayRef,
            true,
        ),
    ])
    .expect("the metrics schema is consistent")
}

fn lineage_batch(lineage: &[LineageRow]) -> RecordBatch {
    table::batch(vec![
        ("run", text(lineage, |l| Some(l.run.hex())), false),
        (
            "direction",
            text(lineage, |l| Some(l.direction.clone())),
            false,
        ),
        ("role", text(lineage, |l| Some(l.role.clone())), false),
        ("hash", text(lineage, |l| Some(l.hash.clone())), false),
    ])
    .expect("the lineage schema is consistent")
}
