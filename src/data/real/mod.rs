//! Real cohorts as distributed: OAI and MOST readings ([`readings`]), knee images joined to them
//! by id, side and visit ([`images`]), and 4-year outcomes derived by stated rules
//! ([`outcomes`]). A descriptor with `[readings]` and/or `[images]` tables instead of a
//! `manifest` is imported through this module; everything after (validation, hashing, the store
//! and the index) is the normal import path. The rules, and what was excluded and why, go into
//! the canonical manifest's metadata, so they are part of the cohort version.

pub mod images;
pub mod outcomes;
pub mod readings;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::Side;
use images::ImagesSpec;
use outcomes::{OutcomeSpec, Rules};
use readings::{CodeRule, Format, Value};

/// The `[readings]` table of a descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingsSpec {
    pub format: Format,
    /// OAI: the folder holding `kxr_sq_bu*` files; MOST: that folder or the file itself.
    pub path: PathBuf,
    /// OAI: reading projects in order of preference (default `[15, 37]`).
    #[serde(default)]
    pub projects: Option<Vec<u32>>,
    /// OAI: project numbers recoded before the choice (default `{ "42" = 37 }`).
    #[serde(default)]
    pub recode_projects: Option<BTreeMap<String, u32>>,
    /// Rules for values other than KL 0–4: "exclude", "knee-replacement" or "kl:N"
    /// (MOST default: `{ "8" = "knee-replacement", "9" = "exclude", "1.9" = "exclude" }`).
    #[serde(default)]
    pub codes: Option<BTreeMap<String, CodeRule>>,
}

impl ReadingsSpec {
    pub fn options(&self) -> Result<readings::Options, String> {
        let mut recode = BTreeMap::new();
        let given = self
            .recode_projects
            .clone()
            .unwrap_or_else(|| BTreeMap::from([("42".to_string(), 37)]));
        for (from, to) in given {
            let from: u32 = from.parse().map_err(|_| {
                format!("`[readings] recode_projects`: key `{from}` is not a project number")
            })?;
            recode.insert(from, to);
        }
        let mut codes = self.format.default_codes();
        codes.extend(self.codes.clone().unwrap_or_default());
        Ok(readings::Options {
            format: self.format,
            projects: self.projects.clone().unwrap_or_else(|| vec![15, 37]),
            recode_projects: recode,
            codes,
        })
    }
}

/// One sample of a real cohort, before its image is validated and hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealSample {
    pub sample_id: String,
    pub patient_id: String,
    pub side: Side,
    pub visit: i64,
    /// Relative to `image_root`.
    pub image: String,
    pub kl: Option<u8>,
    pub incidence_4y: Option<u8>,
    pub progression_4y: Option<u8>,
}

/// What the readings and images give, with the rules applied and every count.
#[derive(Clone, Debug)]
pub struct Built {
    pub samples: Vec<RealSample>,
    /// Rules and counts, written into the canonical manifest's metadata.
    pub rules: BTreeMap<String, String>,
    pub counts: Vec<(String, usize)>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("dataset descriptor `{descriptor}`: {message}")]
    Spec {
        descriptor: PathBuf,
        message: String,
    },
    #[error(transparent)]
    Readings(#[from] readings::Error),
    #[error(transparent)]
    Images(#[from] images::Error),
}

/// How the readings were read, as cohort rules.
fn reading_rules(format: Format, opts: &readings::Options, rules: &mut BTreeMap<String, String>) {
    rules.insert("readings.format".into(), format.name().into());
    if format == Format::Oai {
        rules.insert(
            "readings.projects".into(),
            opts.projects
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        rules.insert(
            "readings.recode_projects".into(),
            opts.recode_projects
                .iter()
                .map(|(a, b)| format!("{a}->{b}"))
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    rules.insert(
        "readings.codes".into(),
        opts.codes
            .iter()
            .map(|(c, r)| format!("{c}={}", r.name()))
            .collect::<Vec<_>>()
            .join(","),
    );
}

/// The found images joined to their readings and baseline outcomes; also counts the images
/// without a reading and the folder grades that differ from the reading.
fn join(
    found: &BTreeMap<(String, Side, i64), images::Found>,
    value_at: &BTreeMap<(String, Side, i64), Value>,
    outcomes: &BTreeMap<(String, Side), outcomes::Outcomes>,
    has_readings: bool,
) -> (Vec<RealSample>, usize, usize) {
    let mut samples = Vec::with_capacity(found.len());
    let (mut unread, mut disagree) = (0, 0);
    for ((id, side, visit), f) in found {
        let value = value_at.get(&(id.clone(), *side, *visit)).copied();
        let kl = match value {
            Some(Value::Kl(g)) => {
                if f.folder_kl.is_some_and(|fg| fg != g) {
                    disagree += 1;
                }
                Some(g)
            }
            Some(_) => None,
            None => {
                if has_readings {
                    unread += 1;
                }
                f.folder_kl
            }
        };
        let o = (*visit == 0)
            .then(|| outcomes.get(&(id.clone(), *side)).copied())
            .flatten()
            .unwrap_or_default();
        samples.push(RealSample {
            sample_id: format!("{id}-{}-{visit:03}", side.as_str()),
            patient_id: id.clone(),
            side: *side,
            visit: *visit,
            image: f.path.clone(),
            kl,
            incidence_4y: o.incidence_4y,
            progression_4y: o.progression_4y,
        });
    }
    (samples, unread, disagree)
}

/// Reads the readings, finds the images and derives the labels a descriptor describes.
pub fn build(
    descriptor: &Path,
    image_root: &Path,
    readings_spec: Option<&ReadingsSpec>,
    images_spec: &ImagesSpec,
    outcome_spec: Option<&OutcomeSpec>,
) -> Result<Built, Error> {
    let dir = descriptor.parent().unwrap_or(Path::new(""));
    let spec_err = |message: String| Error::Spec {
        descriptor: descriptor.to_path_buf(),
        message,
    };
    let mode = images_spec.mode()?;
    let mut rules = images_spec.metadata();
    let mut counts = Vec::new();

    let read = match readings_spec {
        Some(spec) => {
            let opts = spec.options().map_err(spec_err)?;
            let r = readings::read(&dir.join(&spec.path), &opts)?;
            reading_rules(spec.format, &opts, &mut rules);
            counts.extend(r.counts.clone());
            Some((spec.format, r))
        }
        None if outcome_spec.is_some() => {
            return Err(spec_err(
                "`[outcomes]` needs `[readings]` to derive them from".into(),
            ));
        }
        None => None,
    };

    let outcomes = match &read {
        Some((format, r)) => {
            let rules_o = Rules::resolve(&outcome_spec.cloned().unwrap_or_default(), *format)
                .map_err(spec_err)?;
            rules.extend(rules_o.metadata());
            let (o, tally) = outcomes::derive(&r.readings, &rules_o);
            counts.extend(tally.0);
            o
        }
        None => BTreeMap::new(),
    };
    let value_at: BTreeMap<(String, Side, i64), Value> = read
        .as_ref()
        .map(|(_, r)| {
            r.readings
                .iter()
                .map(|x| ((x.id.clone(), x.side, x.visit), x.value))
                .collect()
        })
        .unwrap_or_default();

    let root = image_root;
    let found = match mode {
        "pattern" => {
            let Some((format, _)) = &read else {
                return Err(spec_err(
                    "`[images] pattern` needs `[readings]`: the readings name the knees to look for"
                        .into(),
                ));
            };
            let wanted: Vec<_> = value_at.keys().cloned().collect();
            images::by_pattern(
                images_spec.pattern.as_deref().unwrap_or_default(),
                root,
                &wanted,
                Some(*format),
            )?
        }
        "list" => images::by_list(&dir.join(images_spec.list.as_deref().unwrap_or(Path::new(""))))?,
        _ => images::by_kneekl(root, images_spec)?,
    };

    let (samples, unread, disagree) = join(&found, &value_at, &outcomes, read.is_some());
    let with_image: BTreeSet<_> = found.keys().collect();
    let no_image = value_at
        .iter()
        .filter(|(k, v)| **v != Value::Missing && !with_image.contains(k))
        .count();
    counts.push(("images".into(), found.len()));
    if read.is_some() {
        counts.push(("readings without an image (not imported)".into(), no_image));
        counts.push(("images without a reading (KL unknown)".into(), unread));
        // Outcomes whose baseline image is missing are not in the cohort.
        let lost = outcomes
            .iter()
            .filter(|(k, o)| {
                (o.incidence_4y.is_some() || o.progression_4y.is_some())
                    && !found.contains_key(&(k.0.clone(), k.1, 0))
            })
            .count();
        counts.push((
            "knees with an outcome but no baseline image (not imported)".into(),
            lost,
        ));
    }
    if mode == "kneekl" && read.is_some() {
        counts.push((
            "folder grade differs from the reading (reading used)".into(),
            disagree,
        ));
    }
    rules.insert(
        "import.counts".into(),
        counts
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; "),
    );
    Ok(Built {
        samples,
        rules,
        counts,
    })
}
