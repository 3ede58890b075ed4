//! `ktrack data split`: a patient-level, stratified train/val/test assignment of a cohort.
//!
//! Identity: the hash of (cohort, strategy, ratios, stratify label, seed). Every sample of a
//! patient (both knees, every visit) lands in one partition. The assignment is a Parquet object
//! (sample_id, patient_id, partition; sorted by sample id) plus a JSON record for reindexing.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use serde_json::json;

use crate::context::Ktrack;
use crate::data::{Label, Partition, strata};
use crate::id::Hash;
use crate::index::{self, splits};
use crate::{rng, store, table};

/// The only strategy so far; part of the identity so a future one cannot collide.
pub const STRATEGY: &str = "patient-stratified/1";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("split ratios {train} + {val} + {test} must each be in 0..=1 and add up to 1")]
    Ratios { train: f64, val: f64, test: f64 },
    #[error("cohort {0} is not in the index")]
    UnknownCohort(Hash),
    #[error("cohort {cohort} has no `{label}` values to stratify by")]
    NoLabel { cohort: Hash, label: Label },
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
}

impl crate::hint::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Ratios { .. } => Some("for example: --train 0.7 --val 0.1 --test 0.2".into()),
            Error::NoLabel { .. } => {
                Some("stratify by a label the cohort has, or pass --stratify none".into())
            }
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SplitOptions {
    pub cohort: Hash,
    pub train: f64,
    pub val: f64,
    pub test: f64,
    pub stratify: Option<Label>,
    pub seed: u64,
}

impl SplitOptions {
    /// The identity-defining parameters.
    pub fn params(&self) -> serde_json::Value {
        json!({
            "kind": "split",
            "cohort": self.cohort.hex(),
            "strategy": STRATEGY,
            "train": self.train,
            "val": self.val,
            "test": self.test,
            "stratify": self.stratify.map(Label::name),
            "seed": self.seed,
        })
    }

    pub fn id(&self) -> Hash {
        Hash::of_json(&self.params())
    }
}

/// Patients and samples per partition (and per class of the stratify label).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PartitionCounts {
    pub patients: usize,
    pub samples: usize,
    /// Samples per class of the stratify label ("none" for missing).
    pub classes: BTreeMap<String, usize>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SplitReport {
    pub id: Hash,
    pub cohort: Hash,
    pub assignment: Hash,
    pub stratify: Option<Label>,
    pub partitions: BTreeMap<Partition, PartitionCounts>,
    /// False when this split already existed (nothing was written).
    pub new: bool,
}

/// Computes the assignment (sample id → partition) without writing anything.
pub fn assign(
    samples: &[crate::cohort::Sample],
    opts: &SplitOptions,
) -> Result<BTreeMap<String, Partition>, Error> {
    let ok = |r: f64| (0.0..=1.0).contains(&r);
    if !(ok(opts.train) && ok(opts.val) && ok(opts.test))
        || (opts.train + opts.val + opts.test - 1.0).abs() > 1e-9
    {
        return Err(Error::Ratios {
            train: opts.train,
            val: opts.val,
            test: opts.test,
        });
    }
    let patients = strata::patient_strata(samples, opts.stratify);
    if let Some(label) = opts.stratify
        && patients.values().all(Vec::is_empty)
    {
        return Err(Error::NoLabel {
            cohort: opts.cohort,
            label,
        });
    }
    let mut rng = rng::stream(
        "split",
        &[opts.cohort.as_bytes(), STRATEGY.as_bytes()],
        opts.seed,
    );
    let order = strata::stratified_order(&patients, &mut rng);
    let n = order.len() as f64;
    let n_train = (n * opts.train).round() as usize;
    let n_val = ((n * (opts.train + opts.val)).round() as usize).saturating_sub(n_train);
    let by_patient: BTreeMap<&str, Partition> = order
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let part = if i < n_train {
                Partition::Train
            } else if i < n_train + n_val {
                Partition::Val
            } else {
                Partition::Test
            };
            (p.as_str(), part)
        })
        .collect();
    Ok(samples
        .iter()
        .map(|s| (s.sample_id.clone(), by_patient[s.patient_id.as_str()]))
        .collect())
}

/// Creates (or finds) a split.
pub fn split(k: &Ktrack, opts: &SplitOptions) -> Result<SplitReport, Error> {
    let id = opts.id();
    let mut conn = k.index.read()?;
    let cohort = conn.cohorts().get(&opts.cohort)?;
    let samples = conn.cohorts().samples(&opts.cohort)?;
    drop(conn);
    if cohort.is_none() {
        return Err(Error::UnknownCohort(opts.cohort));
    }
    let assignment = assign(&samples, opts)?;
    let partitions = counts(&samples, &assignment, opts.stratify);

    let patient_of: BTreeMap<&str, &str> = samples
        .iter()
        .map(|s| (s.sample_id.as_str(), s.patient_id.as_str()))
        .collect();
    let col = |f: &dyn Fn(&String, &Partition) -> String| -> ArrayRef {
        Arc::new(StringArray::from(
            assignment.iter().map(|(s, p)| f(s, p)).collect::<Vec<_>>(),
        ))
    };
    let batch = table::batch(vec![
        ("sample_id", col(&|s, _| s.clone()), false),
        (
            "patient_id",
            col(&|s, _| patient_of[s.as_str()].to_string()),
            false,
        ),
        ("partition", col(&|_, p| p.name().to_string()), false),
    ])
    .expect("the assignment schema is consistent");
    let meta = BTreeMap::from([
        ("ktrack.schema".to_string(), "ktrack.split/1".to_string()),
        ("ktrack.split".to_string(), id.hex()),
    ]);
    let bytes = table::write(&batch, &meta).expect("writing Parquet to memory cannot fail");

    let store_batch = k.store.batch();
    let assignment_put = store_batch.put_bytes(&bytes)?;
    let record = crate::record::Record::Split(crate::record::SplitRecord {
        format: crate::record::FORMAT,
        id,
        params: serde_json::from_value(opts.params()).expect("split params are a SplitParams"),
        assignment: assignment_put.hash,
    });
    let record_put = store_batch.put_bytes(&record.to_bytes())?;
    store_batch.commit()?;

    let now = k.clock.now();
    let members: Vec<(String, Partition)> = assignment.into_iter().collect();
    let new = {
        let mut tx = k.index.write()?;
        tx.objects().insert_many(
            &[
                (assignment_put.hash, assignment_put.size, "split"),
                (record_put.hash, record_put.size, "record"),
            ],
            &now,
        )?;
        let row = splits::SplitRow {
            hash: id,
            cohort: opts.cohort,
            assignment: assignment_put.hash,
            record: record_put.hash,
            strategy: STRATEGY.into(),
            train: opts.train,
            val: opts.val,
            test: opts.test,
            stratify: opts.stratify.map(|l| l.name().to_string()),
            seed: opts.seed as i64,
            created_at: now.clone(),
        };
        let new = tx.splits().insert(&row, &members)?;
        tx.commit()?;
        new
    };
    Ok(SplitReport {
        id,
        cohort: opts.cohort,
        assignment: assignment_put.hash,
        stratify: opts.stratify,
        partitions,
        new,
    })
}

/// The (sample id, partition) rows of a split's assignment object.
pub fn read_assignment(bytes: &[u8]) -> Result<Vec<(String, Partition)>, table::Error> {
    let t = table::read(bytes)?;
    let ids = table::strings(&t.batch, "sample_id")?;
    let parts = table::strings(&t.batch, "partition")?;
    Ok((0..t.batch.num_rows())
        .filter_map(|i| Partition::parse(parts.value(i)).map(|p| (ids.value(i).to_string(), p)))
        .collect())
}

/// The sample ids of a label fraction's members object.
pub fn read_members(bytes: &[u8]) -> Result<Vec<String>, table::Error> {
    let t = table::read(bytes)?;
    let ids = table::strings(&t.batch, "sample_id")?;
    Ok((0..t.batch.num_rows())
        .map(|i| ids.value(i).to_string())
        .collect())
}

/// Counts per partition (patients, samples, samples per class of `label`).
pub fn counts(
    samples: &[crate::cohort::Sample],
    assignment: &BTreeMap<String, Partition>,
    label: Option<Label>,
) -> BTreeMap<Partition, PartitionCounts> {
    let mut out: BTreeMap<Partition, PartitionCounts> = BTreeMap::new();
    let mut patients: BTreeMap<Partition, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for s in samples {
        let Some(part) = assignment.get(&s.sample_id) else {
            continue;
        };
        let c = out.entry(*part).or_default();
        c.samples += 1;
        let class = label
            .and_then(|l| s.label(l))
            .map_or_else(|| "none".to_string(), |v| v.to_string());
        *c.classes.entry(class).or_default() += 1;
        patients.entry(*part).or_default().insert(&s.patient_id);
    }
    for (part, ps) in patients {
        out.entry(part).or_default().patients = ps.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Side;
    use proptest::prelude::*;

    /// A cohort of `n` patients, 2 knees x `visits` visits each, KL drawn from `weights`.
    fn cohort(n: usize, visits: usize, seed: u64) -> Vec<crate::cohort::Sample> {
        let mut r = rng::stream("test-cohort", &[], seed);
        let mut out = Vec::new();
        for p in 0..n {
            for side in [Side::L, Side::R] {
                let u = rng::unit(&mut r);
                let base = [0.39, 0.57, 0.83, 0.96, 1.0]
                    .iter()
                    .position(|&c| u < c)
                    .unwrap() as u8;
                for v in 0..visits {
                    out.push(crate::cohort::Sample {
                        sample_id: format!("{p:05}_{}_{v}", side.as_str()),
                        patient_id: format!("P{p:05}"),
                        side,
                        visit: 12 * v as i64,
                        image: Hash::of(format!("{p}{v}{side:?}").as_bytes()),
                        kl: Some((base + (v as u8 / 3)).min(4)),
                        incidence_4y: None,
                        progression_4y: None,
                        class: None,
                        report: None,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.sample_id.cmp(&b.sample_id));
        out
    }

    fn opts(seed: u64) -> SplitOptions {
        SplitOptions {
            cohort: Hash::of(b"cohort"),
            train: 0.7,
            val: 0.1,
            test: 0.2,
            stratify: Some(Label::Kl),
            seed,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// No patient spans two partitions, and class proportions stay near the cohort's.
        #[test]
        fn patient_level_and_stratified(cohort_seed in 0u64..1000, seed in 0u64..1000, n in 300usize..700, visits in 1usize..4) {
            let samples = cohort(n, visits, cohort_seed);
            let assignment = assign(&samples, &opts(seed)).unwrap();
            let mut part_of: BTreeMap<&str, Partition> = BTreeMap::new();
            for s in &samples {
                let p = assignment[&s.sample_id];
                let prev = part_of.insert(&s.patient_id, p);
                prop_assert!(prev.is_none() || prev == Some(p), "patient {} spans partitions", s.patient_id);
            }
            let all = counts(&samples, &assignment.keys().map(|s| (s.clone(), Partition::Train)).collect(), Some(Label::Kl));
            let total = &all[&Partition::Train];
            let parts = counts(&samples, &assignment, Some(Label::Kl));
            for (part, c) in &parts {
                let expected_patients = n as f64 * match part { Partition::Train => 0.7, Partition::Val => 0.1, Partition::Test => 0.2 };
                prop_assert!((c.patients as f64 - expected_patients).abs() <= 1.0);
                for (class, count) in &total.classes {
                    let p_all = *count as f64 / total.samples as f64;
                    let p_part = *c.classes.get(class).unwrap_or(&0) as f64 / c.samples as f64;
                    // The smallest partition (val) holds ~30-70 patients; allow sampling noise.
                    let tol = if *part == Partition::Val { 0.08 } else { 0.04 };
                    prop_assert!((p_all - p_part).abs() <= tol, "{part} class {class}: {p_part:.3} vs {p_all:.3}");
                }
            }
        }
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let samples = cohort(200, 2, 1);
        let a = assign(&samples, &opts(7)).unwrap();
        assert_eq!(a, assign(&samples, &opts(7)).unwrap());
        assert_ne!(a, assign(&samples, &opts(8)).unwrap());
        assert_ne!(opts(7).id(), opts(8).id());
    }

    #[test]
    fn bad_ratios_are_refused() {
        let samples = cohort(10, 1, 1);
        let mut o = opts(1);
        o.test = 0.3;
        assert!(matches!(assign(&samples, &o), Err(Error::Ratios { .. })));
    }
}
