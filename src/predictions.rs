//! Per-case predictions, one Parquet file per (run, evaluation set) — the schema every
//! downstream run writes and `ktrack metrics` / `compare` read:
//! `sample_id` (utf8), `patient_id` (utf8), `label` (int64); KL: `prob_0` … `prob_4` (float64)
//! and `pred` (int64, argmax); binary: `prob` (float64, positive class).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};

use crate::metrics::{self, kl};
use crate::table;

/// The kind of task a predictions file is for.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Kl,
    Binary,
}

impl TaskKind {
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Kl => "kl",
            TaskKind::Binary => "binary",
        }
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Predictions of one run on one evaluation set.
#[derive(Clone, Debug, PartialEq)]
pub struct Predictions {
    pub sample_id: Vec<String>,
    pub patient_id: Vec<String>,
    pub label: Vec<u8>,
    /// Per case: 5 class probabilities (KL) or 1 positive-class probability (binary).
    pub probs: Vec<Vec<f64>>,
    pub kind: TaskKind,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a ktrack predictions file: {0}")]
    Schema(String),
    #[error("the file holds {found} predictions, not {asked} (use --task {found})")]
    Kind { found: TaskKind, asked: TaskKind },
    #[error("row {row}: label {label} is outside the task's classes")]
    Label { row: usize, label: i64 },
}

impl Predictions {
    pub fn len(&self) -> usize {
        self.label.len()
    }

    pub fn is_empty(&self) -> bool {
        self.label.is_empty()
    }

    /// Argmax grades (KL).
    pub fn predicted_grades(&self) -> Vec<u8> {
        self.probs.iter().map(|p| kl::argmax(p)).collect()
    }

    /// Positive-class scores (binary).
    pub fn scores(&self) -> Vec<f64> {
        self.probs.iter().map(|p| p[0]).collect()
    }

    /// The task's metrics, plus `n`.
    pub fn metrics(&self) -> BTreeMap<&'static str, f64> {
        let mut m = match self.kind {
            TaskKind::Kl => metrics::kl_metrics(&self.label, &self.predicted_grades()),
            TaskKind::Binary => metrics::binary_metrics(&self.label, &self.scores()),
        };
        m.insert("n", self.len() as f64);
        m
    }

    /// Metrics of a subset of cases (by index), for bootstraps.
    pub fn metric_on(&self, metric: &str, idx: &[usize]) -> f64 {
        let labels: Vec<u8> = idx.iter().map(|&i| self.label[i]).collect();
        match self.kind {
            TaskKind::Kl => {
                let pred: Vec<u8> = idx.iter().map(|&i| kl::argmax(&self.probs[i])).collect();
                metrics::kl_metrics(&labels, &pred)
                    .get(metric)
                    .copied()
                    .unwrap_or(f64::NAN)
            }
            TaskKind::Binary => {
                let s: Vec<f64> = idx.iter().map(|&i| self.probs[i][0]).collect();
                metrics::binary_metrics(&labels, &s)
                    .get(metric)
                    .copied()
                    .unwrap_or(f64::NAN)
            }
        }
    }

    pub fn to_parquet(&self) -> Vec<u8> {
        let mut cols: Vec<(String, ArrayRef)> = vec![
            (
                "sample_id".into(),
                Arc::new(StringArray::from(self.sample_id.clone())),
            ),
            (
                "patient_id".into(),
                Arc::new(StringArray::from(self.patient_id.clone())),
            ),
            (
                "label".into(),
                Arc::new(Int64Array::from(
                    self.label.iter().map(|&l| i64::from(l)).collect::<Vec<_>>(),
                )),
            ),
        ];
        match self.kind {
            TaskKind::Kl => {
                for k in 0..kl::CLASSES {
                    cols.push((
                        format!("prob_{k}"),
                        Arc::new(Float64Array::from(
                            self.probs.iter().map(|p| p[k]).collect::<Vec<_>>(),
                        )),
                    ));
                }
                cols.push((
                    "pred".into(),
                    Arc::new(Int64Array::from(
                        self.predicted_grades()
                            .into_iter()
                            .map(i64::from)
                            .collect::<Vec<_>>(),
                    )),
                ));
            }
            TaskKind::Binary => {
                cols.push(("prob".into(), Arc::new(Float64Array::from(self.scores()))))
            }
        }
        let batch = table::batch(
            cols.iter()
                .map(|(n, a)| (n.as_str(), a.clone(), false))
                .collect(),
        )
        .expect("the predictions schema is consistent");
        let meta = BTreeMap::from([(
            "ktrack.schema".to_string(),
            "ktrack.predictions/1".to_string(),
        )]);
        table::write(&batch, &meta).expect("writing Parquet to memory cannot fail")
    }

    /// Reads a predictions file; the task kind comes from its columns.
    pub fn from_parquet(bytes: &[u8]) -> Result<Predictions, Error> {
        let bad = |e: table::Error| Error::Schema(e.to_string());
        let t = table::read(bytes).map_err(bad)?;
        let b = &t.batch;
        let sample_id = table::strings(b, "sample_id").map_err(bad)?;
        let patient_id = table::strings(b, "patient_id").map_err(bad)?;
        let label = table::int64s(b, "label").map_err(bad)?;
        let kind = if b.column_by_name("prob_0").is_some() {
            TaskKind::Kl
        } else if b.column_by_name("prob").is_some() {
            TaskKind::Binary
        } else {
            return Err(Error::Schema(
                "it has neither `prob_0`…`prob_4` nor `prob`".into(),
            ));
        };
        let prob_cols: Vec<&Float64Array> = match kind {
            TaskKind::Kl => (0..kl::CLASSES)
                .map(|k| table::float64s(b, &format!("prob_{k}")))
                .collect::<Result<_, _>>()
                .map_err(bad)?,
            TaskKind::Binary => vec![table::float64s(b, "prob").map_err(bad)?],
        };
        let max = match kind {
            TaskKind::Kl => 4,
            TaskKind::Binary => 1,
        };
        let mut p = Predictions {
            sample_id: Vec::with_capacity(b.num_rows()),
            patient_id: Vec::with_capacity(b.num_rows()),
            label: Vec::with_capacity(b.num_rows()),
            probs: Vec::with_capacity(b.num_rows()),
            kind,
        };
        for row in 0..b.num_rows() {
            p.sample_id.push(
                table::required_str(sample_id, "sample_id", row)
                    .map_err(bad)?
                    .to_string(),
            );
            p.patient_id.push(
                table::required_str(patient_id, "patient_id", row)
                    .map_err(bad)?
                    .to_string(),
            );
            let l = label.value(row);
            if !(0..=max).contains(&l) {
                return Err(Error::Label {
                    row: row + 1,
                    label: l,
                });
            }
            p.label.push(l as u8);
            p.probs
                .push(prob_cols.iter().map(|c| c.value(row)).collect());
        }
        Ok(p)
    }
}

/// JSON of a metrics map, with NaN as `null`.
pub fn metrics_json(m: &BTreeMap<&'static str, f64>) -> serde_json::Value {
    serde_json::Value::Object(
        m.iter()
            .map(|(k, v)| {
                let value = if *k == "n" {
                    serde_json::json!(*v as u64)
                } else if v.is_finite() {
                    serde_json::json!(v)
                } else {
                    serde_json::Value::Null
                };
                (k.to_string(), value)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_kinds() {
        let kl = Predictions {
            sample_id: vec!["a".into(), "b".into()],
            patient_id: vec!["p".into(), "q".into()],
            label: vec![0, 4],
            probs: vec![vec![0.6, 0.1, 0.1, 0.1, 0.1], vec![0.1, 0.1, 0.1, 0.2, 0.5]],
            kind: TaskKind::Kl,
        };
        assert_eq!(Predictions::from_parquet(&kl.to_parquet()).unwrap(), kl);
        assert_eq!(kl.metrics()["accuracy"], 1.0);
        let bin = Predictions {
            sample_id: vec!["a".into()],
            patient_id: vec!["p".into()],
            label: vec![1],
            probs: vec![vec![0.9]],
            kind: TaskKind::Binary,
        };
        let back = Predictions::from_parquet(&bin.to_parquet()).unwrap();
        assert_eq!(back, bin);
        let json = metrics_json(&back.metrics());
        assert_eq!(json["auroc"], serde_json::Value::Null);
        assert_eq!(json["n"], 1);
    }
}
