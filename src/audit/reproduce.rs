//! `ktrack reproduce RUN`: check every input by hash, re-execute the run in a scratch area,
//! and compare checkpoint, predictions and metrics with the recorded ones. Verdict:
//! IDENTICAL (bitwise), WITHIN TOLERANCE (the tolerance the run declared; largest difference
//! shown) or DIFFERENT (what differs). The reproduction is itself recorded.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use serde_json::json;

use super::lineage::{self, bundle_objects};
use crate::context::Ktrack;
use crate::env;
use crate::id::Hash;
use crate::index;
use crate::predictions::Predictions;
use crate::progress::Task;
use crate::runner::exec;
use crate::runner::resolved::ResolvedRun;
use crate::store::Health;
use crate::train::DeviceKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Lineage(#[from] lineage::Error),
    #[error("input {hash:#} ({kind}) is missing from the store")]
    MissingInput { hash: Hash, kind: String },
    #[error("input {hash:#} ({kind}) is corrupt: its content hashes to {actual:#}")]
    CorruptInput {
        hash: Hash,
        kind: String,
        actual: Hash,
    },
    #[error(transparent)]
    Exec(#[from] exec::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
}

impl crate::hint::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::MissingInput { .. } | Error::CorruptInput { .. } => Some(
                "`ktrack verify` lists every missing or corrupt object; restore them from a bundle (`ktrack bundle import`)".into(),
            ),
            Error::Exec(e) => e.hint(),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ReproduceOptions {
    /// Reproduce on another device (e.g. a GPU run on the CPU).
    pub device: Option<DeviceKind>,
    pub threads: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Verdict {
    #[serde(rename = "IDENTICAL")]
    Identical,
    #[serde(rename = "WITHIN TOLERANCE")]
    WithinTolerance,
    #[serde(rename = "DIFFERENT")]
    Different,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Identical => "IDENTICAL",
            Verdict::WithinTolerance => "WITHIN TOLERANCE",
            Verdict::Different => "DIFFERENT",
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Comparison {
    pub role: String,
    pub original: Hash,
    pub reproduced: Option<Hash>,
    pub identical: bool,
    /// Largest absolute difference of a probability (predictions only).
    pub max_diff: Option<f64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ReproduceReport {
    pub run: Hash,
    pub verdict: Verdict,
    pub comparisons: Vec<Comparison>,
    /// (evaluation set, metric, recorded, reproduced)
    pub metrics: Vec<(String, String, f64, f64)>,
    pub max_probability_diff: f64,
    pub max_metric_diff: f64,
    pub tolerance: (f64, f64),
    pub inputs_checked: usize,
    pub record: Hash,
    pub seconds: f64,
}

/// Outputs compared bitwise (logs and curves hold timings, so they are not).
fn compared_role(role: &str) -> bool {
    !matches!(role, "log" | "curves")
}

pub fn reproduce(
    k: &Ktrack,
    id: &Hash,
    opts: &ReproduceOptions,
    observer: &dyn Task,
    interrupt: &AtomicBool,
) -> Result<ReproduceReport, Error> {
    let (_, record, mut resolved) = lineage::record(k, id)?;
    let original: BTreeMap<String, Hash> = record.outputs.clone();
    let inputs_checked = check_inputs(k, id, &original)?;
    override_device(&mut resolved, opts);
    // The tolerance the run declared when it was recorded.
    let tolerance = (record.tolerance.probability, record.tolerance.metric);

    let scratch =
        k.home
            .join("reproduce")
            .join(format!("{}-{}", id.short(), crate::context::wall_ms()));
    let produced = exec::produce(k, id, &resolved, &scratch, observer, interrupt)?;
    let (comparisons, max_prob) = compare_outputs(k, &original, &produced)?;
    let (metrics, max_metric) = compare_metrics(&record, &produced);
    let verdict = if comparisons.iter().all(|c| c.identical) {
        Verdict::Identical
    } else if comparisons.iter().all(|c| {
        c.identical
            || c.max_diff.is_some_and(|d| d <= tolerance.0)
            || !c.role.starts_with("predictions:")
    }) && max_prob <= tolerance.0
        && max_metric <= tolerance.1
    {
        Verdict::WithinTolerance
    } else {
        Verdict::Different
    };
    let mut report = ReproduceReport {
        run: *id,
        verdict,
        comparisons,
        metrics,
        max_probability_diff: max_prob,
        max_metric_diff: max_metric,
        tolerance,
        inputs_checked,
        // The reproduction's own record, once it is written from this report.
        record: *id,
        seconds: produced.seconds,
    };
    report.record = record_reproduction(k, &resolved, &produced, &report)?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(report)
}

/// Checks that every input of the run is present and intact, before anything runs; returns
/// how many were checked.
fn check_inputs(k: &Ktrack, id: &Hash, original: &BTreeMap<String, Hash>) -> Result<usize, Error> {
    // Every input must be present and intact before anything runs.
    let own: std::collections::BTreeSet<Hash> = original
        .values()
        .copied()
        .chain(record_hash(k, id))
        .collect();
    let inputs: Vec<Hash> = bundle_objects(k, id)?
        .into_iter()
        .filter(|h| !own.contains(h))
        .collect();
    let kinds = k.index.read()?.objects().kinds()?;
    for h in &inputs {
        let kind = kinds.get(h).cloned().unwrap_or_else(|| "object".into());
        match k.store.check(h)? {
            Health::Ok => {}
            Health::Missing => return Err(Error::MissingInput { hash: *h, kind }),
            Health::Corrupt { actual } => {
                return Err(Error::CorruptInput {
                    hash: *h,
                    kind,
                    actual,
                });
            }
        }
    }

    Ok(inputs.len())
}

/// Runs on another device or thread count when asked (the tolerance then applies).
fn override_device(resolved: &mut ResolvedRun, opts: &ReproduceOptions) {
    if opts.device.is_some() || opts.threads.is_some() {
        match resolved {
            ResolvedRun::Downstream(d) => {
                d.config.device = opts.device.unwrap_or(d.config.device);
                d.config.threads = opts.threads.unwrap_or(d.config.threads);
            }
            ResolvedRun::Pretrain(p) => {
                p.config.device = opts.device.unwrap_or(p.config.device);
                p.config.threads = opts.threads.unwrap_or(p.config.threads);
            }
        }
    }
}

/// Each recorded output against its reproduction; for predictions that differ, the largest
/// probability difference. Returns the comparisons and the largest difference of all.
fn compare_outputs(
    k: &Ktrack,
    original: &BTreeMap<String, Hash>,
    produced: &exec::Produced,
) -> Result<(Vec<Comparison>, f64), Error> {
    let mut comparisons = Vec::new();
    let mut max_prob: f64 = 0.0;
    let produced_files: BTreeMap<&str, &std::path::Path> = produced
        .outputs
        .iter()
        .map(|(r, p)| (r.as_str(), p.as_path()))
        .collect();
    for (role, orig) in original.iter().filter(|(r, _)| compared_role(r)) {
        let Some(path) = produced_files.get(role.as_str()) else {
            comparisons.push(Comparison {
                role: role.clone(),
                original: *orig,
                reproduced: None,
                identical: false,
                max_diff: None,
            });
            continue;
        };
        let bytes = std::fs::read(path).map_err(|e| exec::Error::Data(e.to_string()))?;
        let h = Hash::of(&bytes);
        let mut max_diff = None;
        if h != *orig && role.starts_with("predictions:") {
            let a = Predictions::from_parquet(&k.store.read(orig)?)
                .map_err(|e| exec::Error::Data(e.to_string()))?;
            let b =
                Predictions::from_parquet(&bytes).map_err(|e| exec::Error::Data(e.to_string()))?;
            let by_id: BTreeMap<&str, &Vec<f64>> = b
                .sample_id
                .iter()
                .map(String::as_str)
                .zip(&b.probs)
                .collect();
            let mut m: f64 = 0.0;
            for (sid, pa) in a.sample_id.iter().zip(&a.probs) {
                match by_id.get(sid.as_str()) {
                    Some(pb) => {
                        for (x, y) in pa.iter().zip(pb.iter()) {
                            m = m.max((x - y).abs());
                        }
                    }
                    None => m = f64::INFINITY,
                }
            }
            max_prob = max_prob.max(m);
            max_diff = Some(m);
        }
        comparisons.push(Comparison {
            role: role.clone(),
            original: *orig,
            reproduced: Some(h),
            identical: h == *orig,
            max_diff,
        });
    }
    Ok((comparisons, max_prob))
}

/// (set, metric, recorded, reproduced) of every metric, and the largest difference.
fn compare_metrics(
    record: &crate::record::RunRecord,
    produced: &exec::Produced,
) -> (Vec<(String, String, f64, f64)>, f64) {
    let recorded: BTreeMap<(String, String), f64> = record
        .metrics
        .iter()
        .flat_map(|(set, m)| {
            m.iter()
                .map(move |(name, v)| ((set.clone(), name.clone()), v.unwrap_or(f64::NAN)))
        })
        .collect();
    let mut metrics = Vec::new();
    let mut max_metric: f64 = 0.0;
    for (set, name, v) in &produced.metrics {
        let r = recorded
            .get(&(set.clone(), name.clone()))
            .copied()
            .unwrap_or(f64::NAN);
        let both_nan = r.is_nan() && v.is_nan();
        if !both_nan {
            max_metric = max_metric.max((r - v).abs());
        }
        metrics.push((set.clone(), name.clone(), r, *v));
    }
    if max_metric.is_nan() {
        max_metric = f64::INFINITY;
    }
    (metrics, max_metric)
}

/// Stores the reproduction's record and indexes it; returns the record's hash.
fn record_reproduction(
    k: &Ktrack,
    resolved: &ResolvedRun,
    produced: &exec::Produced,
    report: &ReproduceReport,
) -> Result<Hash, Error> {
    let (id, verdict, comparisons, metrics) = (
        &report.run,
        report.verdict,
        &report.comparisons,
        &report.metrics,
    );
    let (max_prob, max_metric, tolerance) = (
        report.max_probability_diff,
        report.max_metric_diff,
        report.tolerance,
    );
    // Record the reproduction.
    let created_at = k.clock.now();
    let device = match resolved {
        ResolvedRun::Downstream(d) => d.config.device,
        ResolvedRun::Pretrain(p) => p.config.device,
    };
    let seed = match resolved {
        ResolvedRun::Downstream(d) => d.config.seed,
        ResolvedRun::Pretrain(p) => p.config.seed,
    };
    let rec = crate::record::Record::Reproduction(Box::new(crate::record::ReproductionRecord {
        format: crate::record::FORMAT,
        run: *id,
        verdict: verdict.as_str().to_string(),
        created_at: created_at.clone(),
        comparisons: serde_json::to_value(comparisons).expect("comparisons serialize"),
        metrics: serde_json::Value::Array(
            metrics
                .iter()
                .map(|(s, m, a, b)| json!({"eval": s, "metric": m, "recorded": a, "reproduced": b}))
                .collect(),
        ),
        max_probability_diff: max_prob.is_finite().then_some(max_prob),
        max_metric_diff: max_metric.is_finite().then_some(max_metric),
        tolerance: crate::record::Tolerance {
            probability: tolerance.0,
            metric: tolerance.1,
        },
        environment: env::capture(
            crate::train::backend::describe(device),
            seed,
            &produced.started_at,
            &produced.finished_at,
        ),
    }));
    let put = k.store.put_bytes(&rec.to_bytes())?;
    let now = k.clock.now();
    let mut tx = k.index.write()?;
    tx.objects().insert(&put.hash, put.size, "record", &now)?;
    tx.reproductions()
        .insert(&put.hash, id, verdict.as_str(), Some(max_prob), &created_at)?;
    tx.commit()?;
    Ok(put.hash)
}

fn record_hash(k: &Ktrack, id: &Hash) -> Option<Hash> {
    lineage::record(k, id)
        .ok()
        .and_then(|(row, _, _)| row.record)
}
