//! `ktrack data ls` and `ktrack data show`: what the index holds, with counts per label.

use std::collections::BTreeMap;

use crate::cohort::Sample;
use crate::context::Ktrack;
use crate::data::split::{self, PartitionCounts};
use crate::data::{Label, Partition};
use crate::id::{Hash, Prefix};
use crate::index::cohorts::CohortRow;
use crate::index::splits::{FractionRow, SplitRow};
use crate::index::{self, IdKind};

#[derive(Clone, Debug, serde::Serialize)]
pub struct Listing {
    pub cohorts: Vec<CohortRow>,
    pub splits: Vec<SplitRow>,
    pub fractions: Vec<FractionRow>,
}

pub fn ls(k: &Ktrack) -> Result<Listing, index::Error> {
    let mut conn = k.index.read()?;
    Ok(Listing {
        cohorts: conn.cohorts().list()?,
        splits: conn.splits().list()?,
        fractions: conn.fractions().list()?,
    })
}

/// Samples per class of one label ("none" for missing).
pub type ClassCounts = BTreeMap<String, usize>;

#[derive(Clone, Debug, serde::Serialize)]
pub struct CohortDetail {
    pub cohort: CohortRow,
    pub visits: BTreeMap<i64, usize>,
    pub labels: BTreeMap<Label, ClassCounts>,
    /// The cohort's rules (outcome definitions, reading choices, exclusion counts), from its
    /// record; empty for cohorts imported from a plain manifest.
    pub rules: BTreeMap<String, String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SplitDetail {
    pub split: SplitRow,
    pub cohort_name: String,
    /// Per label: per partition counts.
    pub labels: BTreeMap<Label, BTreeMap<Partition, PartitionCounts>>,
    pub fractions: Vec<FractionRow>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct FractionDetail {
    pub fraction: FractionRow,
    pub cohort: Hash,
    pub classes: ClassCounts,
}

#[derive(Clone, Debug, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Detail {
    Cohort(CohortDetail),
    Split(SplitDetail),
    Fraction(FractionDetail),
}

fn class_counts<'a>(samples: impl Iterator<Item = &'a Sample>, label: Label) -> ClassCounts {
    let mut out = ClassCounts::new();
    for s in samples {
        let class = s
            .label(label)
            .map_or_else(|| "none".to_string(), |v| v.to_string());
        *out.entry(class).or_default() += 1;
    }
    out
}

/// Labels with at least one value in the samples.
fn present_labels(samples: &[Sample]) -> Vec<Label> {
    Label::ALL
        .into_iter()
        .chain([Label::Class])
        .filter(|l| samples.iter().any(|s| s.label(*l).is_some()))
        .collect()
}

/// Details of a cohort, split or fraction given by id prefix.
pub fn show(k: &Ktrack, prefix: &Prefix) -> Result<Detail, index::Error> {
    let (hash, kind) = k
        .index
        .resolve(prefix, &[IdKind::Cohort, IdKind::Split, IdKind::Fraction])?;
    let mut conn = k.index.read()?;
    {
        let missing = || index::Error::NotFound {
            prefix: prefix.to_string(),
            kinds: kind.name().to_string(),
        };
        match kind {
            IdKind::Cohort => {
                let cohort = conn.cohorts().get(&hash)?.ok_or_else(missing)?;
                let samples = conn.cohorts().samples(&hash)?;
                let mut visits = BTreeMap::new();
                for s in &samples {
                    *visits.entry(s.visit).or_default() += 1;
                }
                let labels = present_labels(&samples)
                    .into_iter()
                    .map(|l| (l, class_counts(samples.iter(), l)))
                    .collect();
                // `data show` lists the rules; a record it cannot read shows none.
                let rules = k
                    .store
                    .read(&cohort.record)
                    .ok()
                    .and_then(|b| {
                        crate::record::Record::parse(cohort.record, &b)
                            .ok()
                            .flatten()
                    })
                    .and_then(|r| match r {
                        crate::record::Record::Cohort(c) => Some(c.rules),
                        _ => None,
                    })
                    .unwrap_or_default();
                Ok(Detail::Cohort(CohortDetail {
                    cohort,
                    visits,
                    labels,
                    rules,
                }))
            }
            IdKind::Split => {
                let row = conn.splits().get(&hash)?.ok_or_else(missing)?;
                let cohort = conn.cohorts().get(&row.cohort)?.ok_or_else(missing)?;
                let samples = conn.cohorts().samples(&row.cohort)?;
                let assignment: BTreeMap<String, Partition> =
                    conn.splits().members(&hash)?.into_iter().collect();
                let labels = present_labels(&samples)
                    .into_iter()
                    .map(|l| (l, split::counts(&samples, &assignment, Some(l))))
                    .collect();
                let fractions = conn
                    .fractions()
                    .list()?
                    .into_iter()
                    .filter(|f| f.split == hash)
                    .collect();
                Ok(Detail::Split(SplitDetail {
                    split: row,
                    cohort_name: cohort.name,
                    labels,
                    fractions,
                }))
            }
            _ => {
                let row = conn.fractions().get(&hash)?.ok_or_else(missing)?;
                let split_row = conn.splits().get(&row.split)?.ok_or_else(missing)?;
                let samples = conn.cohorts().samples(&split_row.cohort)?;
                let members: std::collections::BTreeSet<String> =
                    conn.fractions().members(&hash)?.into_iter().collect();
                let label: Label = row.stratify.parse().unwrap_or(Label::Kl);
                let classes = class_counts(
                    samples.iter().filter(|s| members.contains(&s.sample_id)),
                    label,
                );
                Ok(Detail::Fraction(FractionDetail {
                    fraction: row,
                    cohort: split_row.cohort,
                    classes,
                }))
            }
        }
    }
}

/// A cohort given as an id prefix or a name (the newest version of that name).
pub fn resolve_cohort(k: &Ktrack, text: &str) -> Result<Hash, index::Error> {
    if let Ok(prefix) = text.parse::<Prefix>() {
        match k.index.resolve(&prefix, &[IdKind::Cohort]) {
            Ok((hash, _)) => return Ok(hash),
            Err(index::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let versions = k.index.read()?.cohorts().by_name(text)?;
    versions
        .first()
        .map(|c| c.hash)
        .ok_or_else(|| index::Error::NotFound {
            prefix: text.to_string(),
            kinds: "cohort (by id or name)".into(),
        })
}

/// A split or fraction given as an id prefix.
pub fn resolve(k: &Ktrack, text: &str, kind: IdKind) -> anyhow::Result<Hash> {
    let prefix: Prefix = text.parse()?;
    Ok(k.index.resolve(&prefix, &[kind])?.0)
}
