//! The vocabulary every layer shares: a knee [`Sample`] (sample, patient, [`Side`], visit,
//! image hash, labels, report), the [`Label`]s a task predicts and the [`Partition`]s of a
//! split. A bottom-level module: `data` (which reads and writes cohorts) and `index` (which
//! catalogues them) both speak it, and neither imports the other for it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::Hash;

/// Which knee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Side {
    L,
    R,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::L => "L",
            Side::R => "R",
        }
    }

    /// Accepts `L`/`R`, `left`/`right` in any case.
    pub fn parse(s: &str) -> Option<Side> {
        match s.trim().to_ascii_lowercase().as_str() {
            "l" | "left" => Some(Side::L),
            "r" | "right" => Some(Side::R),
            _ => None,
        }
    }
}

/// A label a task predicts (and that splits and fractions can be stratified by).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// Kellgren-Lawrence grade, 0..=4.
    Kl,
    /// KL 0-1 at baseline, >= 2 four years later (0/1).
    #[serde(rename = "incidence_4y")]
    Incidence4y,
    /// Baseline KL >= 1 and an increase of >= 1 within four years (0/1).
    #[serde(rename = "progression_4y")]
    Progression4y,
    /// The object class (0..=255) of a generic, out-of-domain labelled image set: what a
    /// supervised pretraining standing in for ImageNet learns. Not a knee task, so not in
    /// [`Label::ALL`].
    Class,
}

/// Every value a `class` takes.
const CLASS_VALUES: [u8; 256] = {
    let mut v = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        v[i] = i as u8;
        i += 1;
    }
    v
};

impl Label {
    /// The knee tasks (what a downstream run predicts and splits are stratified by).
    pub const ALL: [Label; 3] = [Label::Kl, Label::Incidence4y, Label::Progression4y];

    pub fn name(self) -> &'static str {
        match self {
            Label::Kl => "kl",
            Label::Incidence4y => "incidence_4y",
            Label::Progression4y => "progression_4y",
            Label::Class => "class",
        }
    }

    /// The classes the label takes (`class`: any byte; a set uses the first few).
    pub fn classes(self) -> &'static [u8] {
        match self {
            Label::Kl => &[0, 1, 2, 3, 4],
            Label::Incidence4y | Label::Progression4y => &[0, 1],
            Label::Class => &CLASS_VALUES,
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Label {
    type Err = String;
    fn from_str(s: &str) -> Result<Label, String> {
        Label::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| {
                format!("unknown label `{s}`: expected kl, incidence_4y or progression_4y")
            })
    }
}

/// One row of a canonical manifest: one knee image at one visit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub sample_id: String,
    pub patient_id: String,
    pub side: Side,
    /// Months since baseline.
    pub visit: i64,
    /// blake3 of the image file's bytes.
    pub image: Hash,
    pub kl: Option<u8>,
    pub incidence_4y: Option<u8>,
    pub progression_4y: Option<u8>,
    /// The object class of a generic labelled image set (see [`Label::Class`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<u8>,
    pub report: Option<String>,
}

impl Sample {
    pub fn label(&self, label: Label) -> Option<u8> {
        match label {
            Label::Kl => self.kl,
            Label::Incidence4y => self.incidence_4y,
            Label::Progression4y => self.progression_4y,
            Label::Class => self.class,
        }
    }
}

/// A partition of a split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partition {
    Train,
    Val,
    Test,
}

impl Partition {
    pub const ALL: [Partition; 3] = [Partition::Train, Partition::Val, Partition::Test];

    pub fn name(self) -> &'static str {
        match self {
            Partition::Train => "train",
            Partition::Val => "val",
            Partition::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Partition> {
        Partition::ALL.into_iter().find(|p| p.name() == s)
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
