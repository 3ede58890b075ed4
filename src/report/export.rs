//! `ktrack export`: runs, metrics and lineage as tables that pandas, polars and duckdb read —
//! `runs`, `metrics` and `lineage`, each as Parquet or CSV.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};

use crate::context::Ktrack;
use crate::index;
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
    let sweep = sweep.unwrap_or("").to_string();
    let filter = "(?1 = '' OR r.id IN (SELECT run FROM sweep_runs WHERE sweep = ?1))";
    type RunRow = (
        String,
        String,
        String,
        String,
        i64,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<f64>,
        Option<i64>,
        Option<String>,
    );
    let runs: Vec<RunRow> = k
        .index
        .run(
            sqlx::query_as(&format!(
                "SELECT r.id, r.kind, r.label, r.status, r.attempts, r.error, r.record, r.started_at, r.finished_at,
                        a.init, a.task, a.protocol, a.fraction, a.seed, a.arch
                 FROM runs r LEFT JOIN run_axes a ON a.run = r.id WHERE {filter} ORDER BY r.id"
            ))
            .bind(&sweep)
            .fetch_all(k.index.pool()),
        )
        .map_err(index::Error::from)?;
    let metrics: Vec<(String, String, String, Option<f64>)> = k
        .index
        .run(
            sqlx::query_as(&format!(
                "SELECT m.run, m.eval_set, m.metric, m.value FROM run_metrics m JOIN runs r ON r.id = m.run
                 WHERE {filter} ORDER BY m.run, m.eval_set, m.metric"
            ))
            .bind(&sweep)
            .fetch_all(k.index.pool()),
        )
        .map_err(index::Error::from)?;
    let lineage: Vec<(String, String, String, String)> = k
        .index
        .run(
            sqlx::query_as(&format!(
                "SELECT run, direction, role, hash FROM (
                    SELECT i.run AS run, 'input' AS direction, i.role AS role, i.hash AS hash FROM run_inputs i
                    UNION ALL
                    SELECT o.run, 'output', o.role, o.hash FROM run_outputs o) l
                 JOIN runs r ON r.id = l.run WHERE {filter} ORDER BY run, direction, role"
            ))
            .bind(&sweep)
            .fetch_all(k.index.pool()),
        )
        .map_err(index::Error::from)?;

    let runs_batch = table::batch(vec![
        (
            "run",
            strings(runs.iter().map(|r| Some(r.0.clone())).collect()),
            false,
        ),
        (
            "kind",
            strings(runs.iter().map(|r| Some(r.1.clone())).collect()),
            false,
        ),
        (
            "label",
            strings(runs.iter().map(|r| Some(r.2.clone())).collect()),
            false,
        ),
        (
            "status",
            strings(runs.iter().map(|r| Some(r.3.clone())).collect()),
            false,
        ),
        (
            "attempts",
            Arc::new(Int64Array::from(
                runs.iter().map(|r| r.4).collect::<Vec<_>>(),
            )) as ArrayRef,
            false,
        ),
        (
            "error",
            strings(runs.iter().map(|r| r.5.clone()).collect()),
            true,
        ),
        (
            "record",
            strings(runs.iter().map(|r| r.6.clone()).collect()),
            true,
        ),
        (
            "started_at",
            strings(runs.iter().map(|r| r.7.clone()).collect()),
            true,
        ),
        (
            "finished_at",
            strings(runs.iter().map(|r| r.8.clone()).collect()),
            true,
        ),
        (
            "init",
            strings(runs.iter().map(|r| r.9.clone()).collect()),
            true,
        ),
        (
            "task",
            strings(runs.iter().map(|r| r.10.clone()).collect()),
            true,
        ),
        (
            "protocol",
            strings(runs.iter().map(|r| r.11.clone()).collect()),
            true,
        ),
        (
            "fraction",
            Arc::new(Float64Array::from(
                runs.iter().map(|r| r.12).collect::<Vec<_>>(),
            )) as ArrayRef,
            true,
        ),
        (
            "seed",
            Arc::new(Int64Array::from(
                runs.iter().map(|r| r.13).collect::<Vec<_>>(),
            )) as ArrayRef,
            true,
        ),
        (
            "arch",
            strings(runs.iter().map(|r| r.14.clone()).collect()),
            true,
        ),
    ])
    .expect("the runs schema is consistent");
    let metrics_batch = table::batch(vec![
        (
            "run",
            strings(metrics.iter().map(|m| Some(m.0.clone())).collect()),
            false,
        ),
        (
            "eval_set",
            strings(metrics.iter().map(|m| Some(m.1.clone())).collect()),
            false,
        ),
        (
            "metric",
            strings(metrics.iter().map(|m| Some(m.2.clone())).collect()),
            false,
        ),
        (
            "value",
            Arc::new(Float64Array::from(
                metrics.iter().map(|m| m.3).collect::<Vec<_>>(),
            )) as ArrayRef,
            true,
        ),
    ])
    .expect("the metrics schema is consistent");
    let lineage_batch = table::batch(vec![
        (
            "run",
            strings(lineage.iter().map(|l| Some(l.0.clone())).collect()),
            false,
        ),
        (
            "direction",
            strings(lineage.iter().map(|l| Some(l.1.clone())).collect()),
            false,
        ),
        (
            "role",
            strings(lineage.iter().map(|l| Some(l.2.clone())).collect()),
            false,
        ),
        (
            "hash",
            strings(lineage.iter().map(|l| Some(l.3.clone())).collect()),
            false,
        ),
    ])
    .expect("the lineage schema is consistent");
    let ext = match format {
        ExportFormat::Parquet => "parquet",
        ExportFormat::Csv => "csv",
    };
    let mut files = Vec::new();
    for (name, batch) in [
        ("runs", &runs_batch),
        ("metrics", &metrics_batch),
        ("lineage", &lineage_batch),
    ] {
        let path = dir.join(format!("{name}.{ext}"));
        write(batch, &path, format)?;
        files.push((name.to_string(), path, batch.num_rows()));
    }
    Ok(ExportReport { files })
}
