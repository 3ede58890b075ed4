//! Metrics equal to scikit-learn's definitions (checked against a reference file computed with
//! scikit-learn 1.9.1), bootstrap confidence intervals, aggregation over seeds and paired
//! tests. Undefined cases (one class present, nothing to score) give NaN, never a panic.

pub mod binary;
pub mod kl;
pub mod stats;

use std::collections::BTreeMap;

/// All metrics of a KL task from labels and predicted grades.
pub fn kl_metrics(y_true: &[u8], y_pred: &[u8]) -> BTreeMap<&'static str, f64> {
    BTreeMap::from([
        ("accuracy", kl::accuracy(y_true, y_pred)),
        ("balanced_accuracy", kl::balanced_accuracy(y_true, y_pred)),
        ("qwk", kl::qwk(y_true, y_pred)),
        ("macro_f1", kl::macro_f1(y_true, y_pred)),
        ("mae", kl::mae(y_true, y_pred)),
    ])
}

/// All metrics of a binary task from labels and positive-class scores.
pub fn binary_metrics(y_true: &[u8], scores: &[f64]) -> BTreeMap<&'static str, f64> {
    let prevalence = if y_true.is_empty() {
        f64::NAN
    } else {
        y_true.iter().filter(|&&y| y == 1).count() as f64 / y_true.len() as f64
    };
    BTreeMap::from([
        ("auroc", binary::auroc(y_true, scores)),
        (
            "average_precision",
            binary::average_precision(y_true, scores),
        ),
        ("prevalence", prevalence),
    ])
}

/// The metric names of each task kind, the first being the headline (early stopping).
pub const KL_METRICS: [&str; 5] = ["qwk", "accuracy", "balanced_accuracy", "macro_f1", "mae"];
pub const BINARY_METRICS: [&str; 3] = ["auroc", "average_precision", "prevalence"];

/// Whether larger is better for a metric (MAE and prevalence aside, all are).
pub fn higher_is_better(metric: &str) -> bool {
    !matches!(metric, "mae")
}

#[cfg(test)]
mod reference;
