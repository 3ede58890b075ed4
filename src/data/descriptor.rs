//! Dataset descriptors (`datasets/NAME.toml`): where a cohort's manifest and images are, and
//! which manifest column holds each ktrack field. Paths are relative to the descriptor's folder.
//! Unknown keys are an error, so a typo never silently drops a field.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::real::ReadingsSpec;
use crate::data::real::images::ImagesSpec;
use crate::data::real::outcomes::OutcomeSpec;
use crate::data::synth::SynthSpec;

/// Descriptor errors name the descriptor file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not read dataset descriptor `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dataset descriptor `{path}` is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("dataset descriptor `{path}` is {kind}, not a file")]
    NotAFile { path: PathBuf, kind: &'static str },
}

impl crate::hint::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Read { .. } | Error::NotAFile { .. } => {
                Some("check the path; descriptors live under `datasets/`".into())
            }
            Error::Invalid { .. } => Some(
                "the keys a descriptor takes are listed in README.md, section \"Dataset descriptors\""
                    .into(),
            ),
        }
    }
}

/// The `[columns]` table: ktrack field = column name in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    pub sample_id: String,
    pub patient_id: String,
    pub side: String,
    /// Months since baseline; without it every row is visit 0.
    #[serde(default)]
    pub visit: Option<String>,
    pub image: String,
    #[serde(default)]
    pub kl: Option<String>,
    #[serde(default)]
    pub incidence_4y: Option<String>,
    #[serde(default)]
    pub progression_4y: Option<String>,
    /// The object class (0..=255) of a generic labelled image set.
    #[serde(default)]
    pub class: Option<String>,
    #[serde(default)]
    pub report: Option<String>,
}

impl Columns {
    /// (ktrack field, manifest column) for every mapped field.
    pub fn mapped(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![
            ("sample_id", self.sample_id.as_str()),
            ("patient_id", self.patient_id.as_str()),
            ("side", self.side.as_str()),
            ("image", self.image.as_str()),
        ];
        let optional = [
            ("visit", &self.visit),
            ("kl", &self.kl),
            ("incidence_4y", &self.incidence_4y),
            ("progression_4y", &self.progression_4y),
            ("class", &self.class),
            ("report", &self.report),
        ];
        for (field, column) in optional {
            if let Some(c) = column {
                out.push((field, c.as_str()));
            }
        }
        out
    }
}

/// A descriptor as written in the file: either a `manifest` with `[columns]`, or the real
/// distributions' files described by `[readings]`, `[images]` and `[outcomes]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<PathBuf>,
    pub image_root: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Columns>,
    /// Synthetic cohorts: how `ktrack data synth` generates the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synth: Option<SynthSpec>,
    /// OAI or MOST readings files as distributed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readings: Option<ReadingsSpec>,
    /// How knee images are found and joined to the readings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<ImagesSpec>,
    /// 4-year outcome rules (with `[readings]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<OutcomeSpec>,
}

/// Where a cohort's rows come from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    Manifest {
        manifest: &'a Path,
        columns: &'a Columns,
    },
    Real {
        readings: Option<&'a ReadingsSpec>,
        images: &'a ImagesSpec,
        outcomes: Option<&'a OutcomeSpec>,
    },
}

/// A loaded descriptor with its paths resolved against the descriptor's folder.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub path: PathBuf,
    pub descriptor: Descriptor,
    /// Set for manifest descriptors (checked at load).
    pub manifest: Option<PathBuf>,
    pub image_root: PathBuf,
}

impl Dataset {
    pub fn load(path: &Path) -> Result<Dataset, Error> {
        if let Some(kind) = crate::fault::file_kind(path) {
            return Err(Error::NotAFile {
                path: path.to_path_buf(),
                kind,
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Dataset::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Dataset, Error> {
        let invalid = |message: String| Error::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let descriptor: Descriptor = toml::from_str(text)
            .map_err(|e| invalid(crate::quote::clip_lines(e.to_string().trim_end())))?;
        validate_name(&descriptor.name).map_err(invalid)?;
        let d = &descriptor;
        match (
            &d.manifest,
            &d.columns,
            d.readings.is_some() || d.images.is_some() || d.outcomes.is_some(),
        ) {
            (Some(_), Some(_), false) => {}
            (None, None, true) if d.images.is_some() && d.synth.is_none() => {}
            (None, None, true) => {
                return Err(invalid(
                    "`[readings]` and `[outcomes]` need an `[images]` table saying where the knee images are"
                        .into(),
                ));
            }
            (Some(_), None, false) => {
                return Err(invalid("`manifest` needs a `[columns]` table".into()));
            }
            (None, Some(_), false) => return Err(invalid("`[columns]` needs a `manifest`".into())),
            (None, None, false) => {
                return Err(invalid(
                    "give either `manifest` with `[columns]`, or `[readings]`/`[images]` for OAI, MOST or kneeKL224 files"
                        .into(),
                ));
            }
            _ => {
                return Err(invalid(
                    "`manifest`/`[columns]` and `[readings]`/`[images]`/`[outcomes]` exclude each other"
                        .into(),
                ));
            }
        }
        let dir = path.parent().unwrap_or(Path::new(""));
        Ok(Dataset {
            path: path.to_path_buf(),
            manifest: descriptor.manifest.as_ref().map(|m| dir.join(m)),
            image_root: dir.join(&descriptor.image_root),
            descriptor,
        })
    }

    pub fn name(&self) -> &str {
        &self.descriptor.name
    }

    /// Where the rows come from (the combination was checked at load).
    pub fn source(&self) -> Result<Source<'_>, Error> {
        let d = &self.descriptor;
        match (&self.manifest, &d.columns, &d.images) {
            (Some(manifest), Some(columns), _) => Ok(Source::Manifest { manifest, columns }),
            (_, _, Some(images)) => Ok(Source::Real {
                readings: d.readings.as_ref(),
                images,
                outcomes: d.outcomes.as_ref(),
            }),
            _ => Err(Error::Invalid {
                path: self.path.clone(),
                message: "give either `manifest` with `[columns]`, or `[images]`".into(),
            }),
        }
    }

    /// The manifest a synthetic descriptor is generated into.
    pub fn synth_manifest(&self) -> Result<&Path, Error> {
        self.manifest.as_deref().ok_or_else(|| Error::Invalid {
            path: self.path.clone(),
            message: "a `[synth]` descriptor needs `manifest` and `[columns]`".into(),
        })
    }
}

/// Cohort names: letters, digits, `.`, `_`, `-`; 1 to 64 characters.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "field `name` is `{name}`: use 1 to 64 letters, digits, `.`, `_` or `-`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "oai-like"
manifest = "synthetic/oai-like/manifest.csv"
image_root = "synthetic/oai-like"
[columns]
sample_id = "sample_id"
patient_id = "patient_id"
side = "side"
visit = "visit_month"
image = "image_path"
kl = "kl"
"#;

    #[test]
    fn resolves_paths_against_the_descriptor_folder() {
        let d = Dataset::parse(Path::new("datasets/x.toml"), GOOD).unwrap();
        assert_eq!(
            d.manifest.as_deref(),
            Some(Path::new("datasets/synthetic/oai-like/manifest.csv"))
        );
        assert_eq!(d.image_root, Path::new("datasets/synthetic/oai-like"));
        let columns = d.descriptor.columns.as_ref().unwrap();
        assert_eq!(columns.kl.as_deref(), Some("kl"));
        assert_eq!(columns.report, None);
    }

    #[test]
    fn every_shipped_descriptor_and_template_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let d = Dataset::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                d.source().unwrap();
                n += 1;
            }
        }
        assert!(n >= 8, "{n} descriptors");
        let oai = Dataset::load(&dir.join("oai.toml")).unwrap();
        assert!(matches!(
            oai.source().unwrap(),
            Source::Real {
                readings: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn manifest_and_readings_exclude_each_other() {
        let text = format!("{GOOD}\n[images]\nlayout = \"kneekl\"\n");
        let err = Dataset::parse(Path::new("d.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exclude each other"), "{err}");
        let err = Dataset::parse(Path::new("d.toml"), "name = \"x\"\nimage_root = \".\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("either `manifest`"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = format!("{GOOD}\nklgrade = \"kl\"\n");
        let err = Dataset::parse(Path::new("d.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("d.toml") && err.contains("klgrade"), "{err}");
    }
}
