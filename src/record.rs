//! Typed records: the JSON objects in the store from which the index can be rebuilt — one
//! per cohort, split, fraction, run, sweep and reproduction (and a bundle's manifest). Each
//! carries its kind (`ktrack`) and a `format` version. Writers build these types and store
//! [`Record::to_bytes`] (canonical JSON, so equal records are one object); readers use
//! [`Record::parse`], which tells "not a record" (an image, a Parquet table) from "a damaged
//! record" (an error naming the object and the field) — so `reindex` never fills in a default
//! for a field a record lacks.
//!
//! A run's resolved spec stays JSON here (`spec`): the runner owns its type and parses it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::env::Environment;
use crate::id::Hash;

/// The record format this version writes.
pub const FORMAT: u32 = 1;

/// Records above this size are not records (a record is read whole to parse it).
pub const MAX_RECORD: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
#[error("record {hash} is malformed: {message}")]
pub struct Error {
    pub hash: Hash,
    pub message: String,
}

/// One record of any kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ktrack", rename_all = "snake_case")]
pub enum Record {
    Cohort(CohortRecord),
    Split(SplitRecord),
    Fraction(FractionRecord),
    Run(Box<RunRecord>),
    Sweep(SweepRecord),
    Reproduction(Box<ReproductionRecord>),
    Bundle(BundleManifest),
}

/// A cohort version: its canonical manifest and the rules that made it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortRecord {
    pub format: u32,
    pub name: String,
    /// The canonical manifest (its hash is the cohort version).
    pub manifest: Hash,
    pub samples: usize,
    pub patients: usize,
    #[serde(default)]
    pub rules: BTreeMap<String, String>,
}

/// The inputs a split's id is the hash of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitParams {
    pub kind: String,
    pub cohort: Hash,
    pub strategy: String,
    pub train: f64,
    pub val: f64,
    pub test: f64,
    pub stratify: Option<String>,
    pub seed: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitRecord {
    pub format: u32,
    pub id: Hash,
    pub params: SplitParams,
    /// The assignment table (sample id → partition).
    pub assignment: Hash,
}

/// The inputs a label fraction's id is the hash of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FractionParams {
    pub kind: String,
    pub split: Hash,
    pub strategy: String,
    pub fraction: f64,
    pub stratify: String,
    pub seed: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FractionRecord {
    pub format: u32,
    pub id: Hash,
    pub params: FractionParams,
    /// The member table (sample ids).
    pub members: Hash,
    pub patients: usize,
}

/// A downstream run's place in the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunAxes {
    pub init: String,
    pub task: String,
    pub protocol: String,
    pub fraction: f64,
    pub seed: i64,
    pub arch: String,
}

/// The tolerance a reproduction applies (0 on the CPU backends).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    pub probability: f64,
    pub metric: f64,
}

/// A finished run: what went in (by hash), what came out, and where it ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub format: u32,
    pub id: Hash,
    pub kind: String,
    pub label: String,
    pub axes: Option<RunAxes>,
    /// The resolved run (`runner::resolved::ResolvedRun` as JSON); its hash is `id`.
    pub spec: Value,
    /// role → object.
    pub outputs: BTreeMap<String, Hash>,
    /// evaluation set → metric → value (`null` where undefined).
    pub metrics: BTreeMap<String, BTreeMap<String, Option<f64>>>,
    pub environment: Environment,
    /// What the training reported (epochs, best epoch, leakage, …).
    pub details: Value,
    pub tolerance: Tolerance,
    pub seconds: f64,
    /// Claims made before it finished (absent in records of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i64>,
}

impl RunRecord {
    /// Patients of the evaluated sets in the init's pretraining data, when the init allowed
    /// it (`details.leakage`).
    pub fn leaked_patients(&self) -> Option<i64> {
        let l = &self.details["leakage"];
        (l["allowed"].as_bool() == Some(true))
            .then(|| l["patients"].as_i64())
            .flatten()
            .filter(|n| *n > 0)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepRecord {
    pub format: u32,
    pub name: String,
    /// The spec file's bytes.
    pub spec: Hash,
    pub spec_path: String,
    pub runs: Vec<Hash>,
    /// Inits of the grid that could not run, and why (absent when none was skipped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedInit>,
}

/// An init a sweep skipped (e.g. no ImageNet weights file given), with the runs it would have had.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkippedInit {
    pub init: String,
    pub reason: String,
    pub runs: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReproductionRecord {
    pub format: u32,
    pub run: Hash,
    pub verdict: String,
    pub created_at: String,
    pub comparisons: Value,
    pub metrics: Value,
    pub max_probability_diff: Option<f64>,
    pub max_metric_diff: Option<f64>,
    pub tolerance: Tolerance,
    pub environment: Environment,
}

/// A bundle's `ktrack-bundle.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    pub format: u32,
    pub run: Hash,
    pub objects: Vec<Hash>,
}

impl Record {
    /// The record in `bytes`: `Ok(None)` when they are not a record at all (no JSON object
    /// with a `ktrack` kind), an error naming `hash` when they are one but do not parse.
    pub fn parse(hash: Hash, bytes: &[u8]) -> Result<Option<Record>, Error> {
        if bytes.len() as u64 > MAX_RECORD || !bytes.starts_with(b"{\"") {
            return Ok(None);
        }
        let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
            return Ok(None);
        };
        if !v.get("ktrack").is_some_and(Value::is_string) {
            return Ok(None);
        }
        let record: Record = serde_json::from_value(v).map_err(|e| Error {
            hash,
            message: crate::quote::clip(&e.to_string()),
        })?;
        let format = record.format();
        if format != FORMAT {
            return Err(Error {
                hash,
                message: format!("format {format}; this ktrack reads format {FORMAT}"),
            });
        }
        Ok(Some(record))
    }

    pub fn format(&self) -> u32 {
        match self {
            Record::Cohort(r) => r.format,
            Record::Split(r) => r.format,
            Record::Fraction(r) => r.format,
            Record::Run(r) => r.format,
            Record::Sweep(r) => r.format,
            Record::Reproduction(r) => r.format,
            Record::Bundle(r) => r.format,
        }
    }

    /// The kind's name, as in the `ktrack` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Cohort(_) => "cohort",
            Record::Split(_) => "split",
            Record::Fraction(_) => "fraction",
            Record::Run(_) => "run",
            Record::Sweep(_) => "sweep",
            Record::Reproduction(_) => "reproduction",
            Record::Bundle(_) => "bundle",
        }
    }

    /// The canonical JSON bytes to store.
    pub fn to_bytes(&self) -> Vec<u8> {
        let v = serde_json::to_value(self).expect("records serialize");
        crate::id::canonical_json(&v).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_named() {
        let h = Hash::of(b"m");
        let rec = Record::Cohort(CohortRecord {
            format: FORMAT,
            name: "oai-like".into(),
            manifest: h,
            samples: 3,
            patients: 2,
            rules: BTreeMap::new(),
        });
        let bytes = rec.to_bytes();
        assert_eq!(Record::parse(Hash::of(&bytes), &bytes).unwrap(), Some(rec));
        assert!(Record::parse(h, b"\x89PNG").unwrap().is_none());
        assert!(Record::parse(h, br#"{"other": 1}"#).unwrap().is_none());
        let damaged = br#"{"ktrack": "split", "format": 1, "id": "zz"}"#;
        let e = Record::parse(h, damaged).unwrap_err();
        assert!(e.to_string().contains(&h.to_string()), "{e}");
        let future = String::from_utf8(bytes)
            .unwrap()
            .replace("\"format\":1", "\"format\":9");
        let e = Record::parse(h, future.as_bytes()).unwrap_err();
        assert!(e.message.contains("format 9"), "{e}");
    }
}
