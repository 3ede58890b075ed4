//! `ktrack data fraction`: nested, stratified label fractions of a split's train partition.
//!
//! Only training patients with a value for the task label take part ("10%" means 10% of the
//! labelled training patients). They are put in one stratified order per (split, label, seed);
//! fraction f takes the first max(1, round(f·N)) patients of it, so every smaller fraction is a
//! subset of every larger one. A fraction's members are that prefix's labelled samples.
//! Identity: hash of (split, fraction, label, seed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use serde_json::json;

use crate::context::Ktrack;
use crate::data::{Label, Partition, strata};
use crate::id::Hash;
use crate::index::{self, splits};
use crate::{rng, store, table};

pub const STRATEGY: &str = "nested-patient-stratified/1";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("fraction `{0}` must be in (0, 1]")]
    BadFraction(f64),
    #[error("no fractions given")]
    NoFractions,
    #[error("split {0} is not in the index")]
    UnknownSplit(Hash),
    #[error("the train partition of split {split} has no samples with a `{label}` value")]
    NoLabel { split: Hash, label: Label },
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
}

impl crate::hint::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::BadFraction(_) | Error::NoFractions => {
                Some("for example: --fractions 0.01,0.1,0.25,0.5,1.0".into())
            }
            Error::NoLabel { .. } => Some("choose a label the cohort has with --stratify".into()),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct FractionOptions {
    pub split: Hash,
    pub fractions: Vec<f64>,
    pub stratify: Label,
    pub seed: u64,
}

/// The identity-defining parameters of one fraction.
pub fn params(split: &Hash, fraction: f64, label: Label, seed: u64) -> serde_json::Value {
    json!({
        "kind": "fraction",
        "split": split.hex(),
        "strategy": STRATEGY,
        "fraction": fraction,
        "stratify": label.name(),
        "seed": seed,
    })
}

pub fn fraction_id(split: &Hash, fraction: f64, label: Label, seed: u64) -> Hash {
    Hash::of_json(&params(split, fraction, label, seed))
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct FractionInfo {
    pub id: Hash,
    pub fraction: f64,
    pub patients: usize,
    pub samples: usize,
    /// Samples per class of the label.
    pub classes: BTreeMap<u8, usize>,
    pub new: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct FractionReport {
    pub split: Hash,
    pub stratify: Label,
    pub fractions: Vec<FractionInfo>,
}

/// A fraction's members (sample ids, sorted) and patient count, computed without writing.
pub struct Members {
    pub fraction: f64,
    pub samples: Vec<String>,
    pub patients: usize,
}

/// Computes nested members for each fraction (given in any order).
pub fn select(
    split: &Hash,
    samples: &[crate::cohort::Sample],
    assignment: &BTreeMap<String, Partition>,
    fractions: &[f64],
    label: Label,
    seed: u64,
) -> Result<Vec<Members>, Error> {
    if fractions.is_empty() {
        return Err(Error::NoFractions);
    }
    for &f in fractions {
        if !(f > 0.0 && f <= 1.0) {
            return Err(Error::BadFraction(f));
        }
    }
    let train: Vec<crate::cohort::Sample> = samples
        .iter()
        .filter(|s| {
            assignment.get(&s.sample_id) == Some(&Partition::Train) && s.label(label).is_some()
        })
        .cloned()
        .collect();
    if train.is_empty() {
        return Err(Error::NoLabel {
            split: *split,
            label,
        });
    }
    let patients = strata::patient_strata(&train, Some(label));
    let mut r = rng::stream(
        "fraction",
        &[split.as_bytes(), label.name().as_bytes()],
        seed,
    );
    let order = strata::stratified_order(&patients, &mut r);
    let n = order.len();
    Ok(fractions
        .iter()
        .map(|&f| {
            let k = ((f * n as f64).round() as usize).clamp(1, n);
            let chosen: BTreeSet<&str> = order[..k].iter().map(String::as_str).collect();
            let samples: Vec<String> = train
                .iter()
                .filter(|s| chosen.contains(s.patient_id.as_str()))
                .map(|s| s.sample_id.clone())
                .collect();
            Members {
                fraction: f,
                samples,
                patients: k,
            }
        })
        .collect())
}

/// Creates (or finds) the fractions of a split.
/// A fraction's members object: (sample id, patient id) rows as Parquet.
fn members_table(samples: &[String], patients: Vec<String>, id: &Hash) -> Vec<u8> {
    let batch = table::batch(vec![
        (
            "sample_id",
            Arc::new(StringArray::from(samples.to_vec())) as ArrayRef,
            false,
        ),
        (
            "patient_id",
            Arc::new(StringArray::from(patients)) as ArrayRef,
            false,
        ),
    ])
    .expect("the fraction schema is consistent");
    let meta = BTreeMap::from([
        ("ktrack.schema".to_string(), "ktrack.fraction/1".to_string()),
        ("ktrack.fraction".to_string(), id.hex()),
    ]);
    table::write(&batch, &meta).expect("writing Parquet to memory cannot fail")
}

pub fn fraction(k: &Ktrack, opts: &FractionOptions) -> Result<FractionReport, Error> {
    let (samples, members) = {
        let mut conn = k.index.read()?;
        let split_row = conn
            .splits()
            .get(&opts.split)?
            .ok_or(Error::UnknownSplit(opts.split))?;
        let samples = conn.cohorts().samples(&split_row.cohort)?;
        (samples, conn.splits().members(&opts.split)?)
    };
    let assignment: BTreeMap<String, Partition> = members.into_iter().collect();
    let mut fractions = opts.fractions.clone();
    fractions.sort_by(f64::total_cmp);
    fractions.dedup();
    let selected = select(
        &opts.split,
        &samples,
        &assignment,
        &fractions,
        opts.stratify,
        opts.seed,
    )?;

    let by_id: BTreeMap<&str, &crate::cohort::Sample> =
        samples.iter().map(|s| (s.sample_id.as_str(), s)).collect();
    let store_batch = k.store.batch();
    let mut rows = Vec::new();
    let mut infos = Vec::new();
    for m in &selected {
        let id = fraction_id(&opts.split, m.fraction, opts.stratify, opts.seed);
        let patients: Vec<String> = m
            .samples
            .iter()
            .map(|s| by_id[s.as_str()].patient_id.clone())
            .collect();
        let bytes = members_table(&m.samples, patients, &id);
        let members_put = store_batch.put_bytes(&bytes)?;
        let record = crate::record::Record::Fraction(crate::record::FractionRecord {
            format: crate::record::FORMAT,
            id,
            params: serde_json::from_value(params(
                &opts.split,
                m.fraction,
                opts.stratify,
                opts.seed,
            ))
            .expect("fraction params are a FractionParams"),
            members: members_put.hash,
            patients: m.patients,
        });
        let record_put = store_batch.put_bytes(&record.to_bytes())?;
        let mut classes = BTreeMap::new();
        for s in &m.samples {
            if let Some(v) = by_id[s.as_str()].label(opts.stratify) {
                *classes.entry(v).or_insert(0) += 1;
            }
        }
        infos.push(FractionInfo {
            id,
            fraction: m.fraction,
            patients: m.patients,
            samples: m.samples.len(),
            classes,
            new: false,
        });
        rows.push((id, m, members_put, record_put));
    }
    store_batch.commit()?;

    let now = k.clock.now();
    let news = {
        let mut tx = k.index.write()?;
        let mut news = Vec::new();
        for (id, m, members_put, record_put) in &rows {
            tx.objects().insert_many(
                &[
                    (members_put.hash, members_put.size, "fraction"),
                    (record_put.hash, record_put.size, "record"),
                ],
                &now,
            )?;
            let row = splits::FractionRow {
                hash: *id,
                split: opts.split,
                fraction: m.fraction,
                stratify: opts.stratify.name().to_string(),
                seed: opts.seed as i64,
                members: members_put.hash,
                record: record_put.hash,
                n_samples: m.samples.len() as i64,
                n_patients: m.patients as i64,
                created_at: now.clone(),
            };
            news.push(tx.fractions().insert(&row, &m.samples)?);
        }
        tx.commit()?;
        news
    };
    for (info, new) in infos.iter_mut().zip(news) {
        info.new = new;
    }
    Ok(FractionReport {
        split: opts.split,
        stratify: opts.stratify,
        fractions: infos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Side;

    fn samples(n: usize) -> (Vec<crate::cohort::Sample>, BTreeMap<String, Partition>) {
        let mut out = Vec::new();
        let mut assignment = BTreeMap::new();
        for p in 0..n {
            let id = format!("s{p:04}");
            out.push(crate::cohort::Sample {
                sample_id: id.clone(),
                patient_id: format!("p{p:04}"),
                side: Side::R,
                visit: 0,
                image: Hash::of(id.as_bytes()),
                kl: None,
                incidence_4y: if p % 7 == 0 {
                    None
                } else {
                    Some(u8::from(p % 5 == 0))
                },
                progression_4y: None,
                class: None,
                report: None,
            });
            let part = if p % 10 < 8 {
                Partition::Train
            } else {
                Partition::Test
            };
            assignment.insert(id, part);
        }
        (out, assignment)
    }

    #[test]
    fn fractions_are_nested_stratified_and_train_only() {
        let (s, a) = samples(2000);
        let split = Hash::of(b"split");
        let fr = [0.01, 0.1, 0.25, 0.5, 1.0];
        let m = select(&split, &s, &a, &fr, Label::Incidence4y, 3).unwrap();
        for w in m.windows(2) {
            let big: BTreeSet<&String> = w[1].samples.iter().collect();
            assert!(w[0].samples.iter().all(|x| big.contains(x)), "not nested");
            assert!(w[0].samples.len() < w[1].samples.len());
        }
        let labelled_train = s
            .iter()
            .filter(|x| a[&x.sample_id] == Partition::Train && x.incidence_4y.is_some())
            .count();
        assert_eq!(m[4].samples.len(), labelled_train);
        let pos_rate = |ids: &[String]| {
            ids.iter()
                .filter(|i| s.iter().find(|x| &&x.sample_id == i).unwrap().incidence_4y == Some(1))
                .count() as f64
                / ids.len() as f64
        };
        let overall = pos_rate(&m[4].samples);
        assert!((pos_rate(&m[1].samples) - overall).abs() < 0.02);
        // Same inputs, same members; another seed, other members.
        let again = select(&split, &s, &a, &fr, Label::Incidence4y, 3).unwrap();
        assert_eq!(again[1].samples, m[1].samples);
        let other = select(&split, &s, &a, &fr, Label::Incidence4y, 4).unwrap();
        assert_ne!(other[1].samples, m[1].samples);
    }

    #[test]
    fn bad_fractions_are_refused() {
        let (s, a) = samples(10);
        let split = Hash::of(b"split");
        assert!(matches!(
            select(&split, &s, &a, &[0.0], Label::Incidence4y, 1),
            Err(Error::BadFraction(_))
        ));
        assert!(matches!(
            select(&split, &s, &a, &[1.5], Label::Incidence4y, 1),
            Err(Error::BadFraction(_))
        ));
        assert!(matches!(
            select(&split, &s, &a, &[0.5], Label::Kl, 1),
            Err(Error::NoLabel { .. })
        ));
    }
}
