//! Radiographic readings as the OAI and MOST distribute them.
//!
//! OAI: one file per visit, `kxr_sq_bu{00,01,03,05,06,08,10}` (`|`-delimited ASCII with a
//! header, or SAS `.sas7bdat`; the file name's case varies between releases), with columns `ID`,
//! `SIDE` (1 = right, 2 = left), `READPRJ` and `V{xx}XRKL`. Visits V00/01/03/05/06/08/10 are
//! months 0/12/24/36/48/72/96. Several reading projects read some knees; one project is chosen
//! per knee, the same for all its visits.
//!
//! MOST: `mostv01235xray`, one row per participant, `MOSTID` and `V{0,1,2,3,5}X{L,R}KL`; visits
//! V0/1/2/3/5 are months 0/15/30/60/84.
//!
//! Values: ASCII files carry coded values such as `2: Minimal`, which parse to 2; blanks and
//! SAS missing codes (`.`, `.A`, `.: Missing Form`) are missing; any other value (MOST's 8, 9 and
//! 1.9) must have an explicit rule (exclude, knee replacement, or a KL grade), and an unknown
//! code is an error naming the file, row and column.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::Side;
use crate::data::manifest::{self, TextTable};

/// Which distribution the readings come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Oai,
    Most,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Oai => "oai",
            Format::Most => "most",
        }
    }

    /// (visit code, months since baseline) of every visit with readings.
    pub fn visits(self) -> &'static [(&'static str, i64)] {
        match self {
            Format::Oai => &[
                ("00", 0),
                ("01", 12),
                ("03", 24),
                ("05", 36),
                ("06", 48),
                ("08", 72),
                ("10", 96),
            ],
            Format::Most => &[("0", 0), ("1", 15), ("2", 30), ("3", 60), ("5", 84)],
        }
    }

    /// The visit code of a month, if the schedule has it.
    pub fn visit_code(self, months: i64) -> Option<&'static str> {
        self.visits()
            .iter()
            .find(|(_, m)| *m == months)
            .map(|(c, _)| *c)
    }

    /// Default rules for codes other than KL 0–4.
    pub fn default_codes(self) -> BTreeMap<String, CodeRule> {
        match self {
            Format::Oai => BTreeMap::new(),
            Format::Most => BTreeMap::from([
                ("8".to_string(), CodeRule::KneeReplacement),
                ("9".to_string(), CodeRule::Exclude),
                ("1.9".to_string(), CodeRule::Exclude),
            ]),
        }
    }
}

/// What a coded value other than KL 0–4 means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CodeRule {
    /// The reading is dropped (counted).
    Exclude,
    /// The knee was replaced (an outcome event if `[outcomes] knee_replacement = "event"`).
    KneeReplacement,
    /// Read as this KL grade.
    Kl(u8),
}

impl CodeRule {
    pub fn parse(s: &str) -> Result<CodeRule, String> {
        match s {
            "exclude" => Ok(CodeRule::Exclude),
            "knee-replacement" => Ok(CodeRule::KneeReplacement),
            _ => match s.strip_prefix("kl:").and_then(|g| g.parse::<u8>().ok()) {
                Some(g) if g <= 4 => Ok(CodeRule::Kl(g)),
                _ => Err(format!(
                    "`{s}` is not a code rule: use \"exclude\", \"knee-replacement\" or \"kl:0\"..\"kl:4\""
                )),
            },
        }
    }

    pub fn name(self) -> String {
        match self {
            CodeRule::Exclude => "exclude".into(),
            CodeRule::KneeReplacement => "knee-replacement".into(),
            CodeRule::Kl(g) => format!("kl:{g}"),
        }
    }
}

impl Serialize for CodeRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for CodeRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CodeRule, D::Error> {
        let s = String::deserialize(d)?;
        CodeRule::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One reading's value after the code rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    Kl(u8),
    KneeReplacement,
    /// A code whose rule is `exclude`.
    Excluded,
    Missing,
}

/// One knee at one visit as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub id: String,
    pub side: Side,
    pub visit: i64,
    pub value: Value,
}

/// Readings after project choice and duplicate handling, with what was dropped and why.
#[derive(Clone, Debug, Default)]
pub struct Readings {
    /// Sorted by (id, side, visit); one per knee and visit.
    pub readings: Vec<Reading>,
    /// OAI: the reading project chosen for each knee.
    pub projects: BTreeMap<(String, Side), u32>,
    /// (what, count), in a stable order, for the import report and the cohort record.
    pub counts: Vec<(String, usize)>,
    /// The files read.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Table(#[from] manifest::Error),
    #[error("readings folder `{path}` has no {what}")]
    NoFiles { path: PathBuf, what: String },
    #[error("readings `{path}` has no column `{column}`; its columns are: {}", available.join(", "))]
    MissingColumn {
        path: PathBuf,
        column: String,
        available: Vec<String>,
    },
    #[error("readings `{path}`, row {row}, column `{column}`: {problem}")]
    Cell {
        path: PathBuf,
        row: usize,
        column: String,
        problem: String,
    },
    #[error(
        "two files hold the readings of visit V{code}: `{}` and `{}`",
        first.display(), second.display()
    )]
    TwoFiles {
        code: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// How to read the readings.
#[derive(Clone, Debug)]
pub struct Options {
    pub format: Format,
    /// OAI: reading projects in order of preference.
    pub projects: Vec<u32>,
    /// OAI: project numbers recoded before the choice (42 → 37 by default).
    pub recode_projects: BTreeMap<u32, u32>,
    pub codes: BTreeMap<String, CodeRule>,
}

/// Parses one cell into a value; `Err` is the problem to report.
pub fn parse_value(
    cell: Option<&str>,
    codes: &BTreeMap<String, CodeRule>,
) -> Result<Value, String> {
    let Some(raw) = cell else {
        return Ok(Value::Missing);
    };
    let raw = raw.trim().trim_matches('"').trim();
    // `2: Minimal` → `2`; SAS missing values start with `.`.
    let code = raw.split(':').next().unwrap_or("").trim();
    if code.is_empty() || code.starts_with('.') {
        return Ok(Value::Missing);
    }
    if let Some(rule) = codes.get(code) {
        return Ok(match rule {
            CodeRule::Exclude => Value::Excluded,
            CodeRule::KneeReplacement => Value::KneeReplacement,
            CodeRule::Kl(g) => Value::Kl(*g),
        });
    }
    match code.parse::<f64>() {
        Ok(f) if f.fract() == 0.0 && (0.0..=4.0).contains(&f) => Ok(Value::Kl(f as u8)),
        _ => Err(format!(
            "`{raw}` is not a KL grade 0–4, and code `{code}` has no rule under `[readings] codes`"
        )),
    }
}

fn parse_side(cell: Option<&str>) -> Result<Side, String> {
    let v = cell.unwrap_or("").trim().trim_matches('"');
    match v.split(':').next().unwrap_or("").trim() {
        "1" => Ok(Side::R),
        "2" => Ok(Side::L),
        _ => Err(format!("is `{v}`, expected 1 (right) or 2 (left)")),
    }
}

fn id_cell(cell: Option<&str>) -> Result<String, String> {
    let v = cell.unwrap_or("").trim().trim_matches('"').trim();
    if v.is_empty() {
        return Err("is empty".into());
    }
    // SAS stores numeric ids as doubles: `9000099.0` is `9000099`.
    Ok(match v.parse::<f64>() {
        Ok(f) if f.fract() == 0.0 && !v.contains(char::is_alphabetic) => format!("{}", f as i64),
        _ => v.to_string(),
    })
}

/// Column index by name, ignoring case.
fn column(t: &TextTable, name: &str) -> Result<usize, Error> {
    t.columns
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .ok_or_else(|| Error::MissingColumn {
            path: t.path.clone(),
            column: name.to_string(),
            available: t.columns.clone(),
        })
}

/// Files in `dir` whose stem (any case) is `stem` and whose extension is readable.
fn find_files(
    dir: &Path,
    matches: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, PathBuf)>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| manifest::Error::Read {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().to_ascii_lowercase();
        let Some((stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        if !["txt", "tsv", "dat", "csv", "sas7bdat", "parquet"].contains(&ext) {
            continue;
        }
        if let Some(key) = matches(stem) {
            out.push((key, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads the readings under `path` (a folder, or for MOST also the file itself).
pub fn read(path: &Path, opts: &Options) -> Result<Readings, Error> {
    match opts.format {
        Format::Oai => read_oai(path, opts),
        Format::Most => read_most(path, opts),
    }
}

struct Raw {
    id: String,
    side: Side,
    visit: i64,
    project: u32,
    value: Value,
}

/// The OAI reading files of a folder, one per visit code.
fn oai_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let codes: BTreeSet<&str> = Format::Oai.visits().iter().map(|(c, _)| *c).collect();
    let files = find_files(dir, &|stem| {
        let code = stem.strip_prefix("kxr_sq_bu")?;
        codes.contains(code).then(|| code.to_string())
    })?;
    if files.is_empty() {
        return Err(Error::NoFiles {
            path: dir.to_path_buf(),
            what: "kxr_sq_bu{00,01,03,05,06,08,10} file (.txt or .sas7bdat)".into(),
        });
    }
    for w in files.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(Error::TwoFiles {
                code: w[0].0.clone(),
                first: w[0].1.clone(),
                second: w[1].1.clone(),
            });
        }
    }
    Ok(files)
}

/// A READPRJ cell's project number ("15" or "15: ..."), recoded as the options say.
fn project_cell(cell: Option<&str>, opts: &Options) -> Result<u32, String> {
    let prj = cell.unwrap_or("").trim().trim_matches('"');
    let project: u32 = prj
        .split(':')
        .next()
        .unwrap_or("")
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
        .map(|f| f as u32)
        .ok_or_else(|| format!("is `{prj}`, expected a project number"))?;
    Ok(opts
        .recode_projects
        .get(&project)
        .copied()
        .unwrap_or(project))
}

fn read_oai(dir: &Path, opts: &Options) -> Result<Readings, Error> {
    let files = oai_files(dir)?;
    let mut raw = Vec::new();
    let mut out = Readings::default();
    for (code, path) in &files {
        let t = TextTable::read(path)?;
        let visit = Format::Oai
            .visits()
            .iter()
            .find(|(c, _)| c == code)
            .map_or(0, |v| v.1);
        let kl_col = format!("V{code}XRKL");
        let (ci, cs, cp, ck) = (
            column(&t, "ID")?,
            column(&t, "SIDE")?,
            column(&t, "READPRJ")?,
            column(&t, &kl_col)?,
        );
        for (i, cells) in t.rows.iter().enumerate() {
            let cell_err = |column: &str, problem: String| Error::Cell {
                path: path.clone(),
                row: i + 1,
                column: column.to_string(),
                problem,
            };
            let id = id_cell(cells[ci].as_deref()).map_err(|p| cell_err("ID", p))?;
            let side = parse_side(cells[cs].as_deref()).map_err(|p| cell_err("SIDE", p))?;
            let project =
                project_cell(cells[cp].as_deref(), opts).map_err(|p| cell_err("READPRJ", p))?;
            let value =
                parse_value(cells[ck].as_deref(), &opts.codes).map_err(|p| cell_err(&kl_col, p))?;
            raw.push(Raw {
                id,
                side,
                visit,
                project,
                value,
            });
        }
        out.files.push(path.clone());
    }
    let n_raw = raw.len();
    // One project per knee: the first preferred project with a reading of the knee (or, for a
    // knee with only missing readings, with a row of it, so its images keep an unknown KL).
    let mut read_by: BTreeMap<(String, Side), BTreeSet<u32>> = BTreeMap::new();
    let mut rows_by: BTreeMap<(String, Side), BTreeSet<u32>> = BTreeMap::new();
    for r in &raw {
        let knee = (r.id.clone(), r.side);
        if r.value != Value::Missing {
            read_by.entry(knee.clone()).or_default().insert(r.project);
        }
        rows_by.entry(knee).or_default().insert(r.project);
    }
    let mut no_project = 0;
    for (knee, projects) in &rows_by {
        let pool = read_by.get(knee).unwrap_or(projects);
        match opts.projects.iter().find(|p| pool.contains(p)) {
            Some(&p) => {
                out.projects.insert(knee.clone(), p);
            }
            None => no_project += 1,
        }
    }
    let has = rows_by;
    let mut other_project = 0;
    let kept: Vec<Raw> = raw
        .into_iter()
        .filter(|r| {
            let keep = out.projects.get(&(r.id.clone(), r.side)) == Some(&r.project);
            other_project += usize::from(!keep && r.value != Value::Missing);
            keep
        })
        .collect();
    let (readings, dup_same, dup_conflict) = dedupe(kept);
    out.readings = readings;
    out.counts = vec![
        ("readings rows".into(), n_raw),
        ("knees".into(), has.len()),
        (
            "knees without a reading of a chosen project (excluded)".into(),
            no_project,
        ),
        (
            "readings of another project than the knee's (dropped)".into(),
            other_project,
        ),
        (
            "duplicate readings with the same value (kept once)".into(),
            dup_same,
        ),
        (
            "duplicate readings with different values (set missing)".into(),
            dup_conflict,
        ),
    ];
    count_values(&mut out);
    Ok(out)
}

fn read_most(path: &Path, opts: &Options) -> Result<Readings, Error> {
    let file = if path.is_dir() {
        let files = find_files(path, &|stem| (stem == "mostv01235xray").then(String::new))?;
        match files.as_slice() {
            [] => {
                return Err(Error::NoFiles {
                    path: path.to_path_buf(),
                    what: "mostv01235xray file (.txt, .csv or .sas7bdat)".into(),
                });
            }
            [(_, f)] => f.clone(),
            [a, b, ..] => {
                return Err(Error::TwoFiles {
                    code: "0-5".into(),
                    first: a.1.clone(),
                    second: b.1.clone(),
                });
            }
        }
    } else {
        path.to_path_buf()
    };
    let t = TextTable::read(&file)?;
    let ci = column(&t, "MOSTID")?;
    let mut cols = Vec::new();
    for &(code, visit) in Format::Most.visits() {
        for (letter, side) in [("R", Side::R), ("L", Side::L)] {
            let name = format!("V{code}X{letter}KL");
            // A release may lack later visits; a missing column is a missing reading.
            if let Some(i) = t.columns.iter().position(|c| c.eq_ignore_ascii_case(&name)) {
                cols.push((i, name, side, visit));
            }
        }
    }
    if cols.is_empty() {
        return Err(Error::MissingColumn {
            path: file.clone(),
            column: "V0XRKL".into(),
            available: t.columns.clone(),
        });
    }
    let mut raw = Vec::new();
    for (i, cells) in t.rows.iter().enumerate() {
        let cell_err = |column: &str, problem: String| Error::Cell {
            path: file.clone(),
            row: i + 1,
            column: column.to_string(),
            problem,
        };
        let id = id_cell(cells[ci].as_deref()).map_err(|p| cell_err("MOSTID", p))?;
        for (c, name, side, visit) in &cols {
            let value =
                parse_value(cells[*c].as_deref(), &opts.codes).map_err(|p| cell_err(name, p))?;
            raw.push(Raw {
                id: id.clone(),
                side: *side,
                visit: *visit,
                project: 0,
                value,
            });
        }
    }
    let knees: BTreeSet<(String, Side)> = raw
        .iter()
        .filter(|r| r.value != Value::Missing)
        .map(|r| (r.id.clone(), r.side))
        .collect();
    let n_rows = t.rows.len();
    let (readings, dup_same, dup_conflict) = dedupe(raw);
    let mut out = Readings {
        readings,
        files: vec![file],
        counts: vec![
            ("readings rows".into(), n_rows),
            ("knees".into(), knees.len()),
            (
                "duplicate readings with the same value (kept once)".into(),
                dup_same,
            ),
            (
                "duplicate readings with different values (set missing)".into(),
                dup_conflict,
            ),
        ],
        ..Readings::default()
    };
    count_values(&mut out);
    Ok(out)
}

/// One reading per (knee, visit): identical duplicates are kept once, conflicting ones become
/// missing. Returns the readings sorted, and the two duplicate counts.
fn dedupe(raw: Vec<Raw>) -> (Vec<Reading>, usize, usize) {
    let mut by: BTreeMap<(String, Side, i64), (Value, bool)> = BTreeMap::new();
    let (mut same, mut conflict) = (0, 0);
    for r in raw {
        match by.get_mut(&(r.id.clone(), r.side, r.visit)) {
            None => {
                by.insert((r.id, r.side, r.visit), (r.value, false));
            }
            Some((v, conflicted)) => {
                if r.value == Value::Missing {
                    continue;
                }
                if *v == Value::Missing && !*conflicted {
                    *v = r.value;
                } else if *v == r.value {
                    same += 1;
                } else {
                    conflict += 1;
                    *v = Value::Missing;
                    *conflicted = true;
                }
            }
        }
    }
    let readings = by
        .into_iter()
        .map(|((id, side, visit), (value, _))| Reading {
            id,
            side,
            visit,
            value,
        })
        .collect();
    (readings, same, conflict)
}

fn count_values(out: &mut Readings) {
    let n = |f: &dyn Fn(&Value) -> bool| out.readings.iter().filter(|r| f(&r.value)).count();
    let kl = n(&|v| matches!(v, Value::Kl(_)));
    let tkr = n(&|v| *v == Value::KneeReplacement);
    let excluded = n(&|v| *v == Value::Excluded);
    let missing = n(&|v| *v == Value::Missing);
    out.counts.extend([
        ("knee-visits with a KL grade".to_string(), kl),
        ("knee-visits read as knee replacement".to_string(), tkr),
        ("knee-visits excluded by a code rule".to_string(), excluded),
        ("knee-visits missing".to_string(), missing),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes() -> BTreeMap<String, CodeRule> {
        Format::Most.default_codes()
    }

    #[test]
    fn coded_values_parse() {
        let none = BTreeMap::new();
        assert_eq!(parse_value(Some("2: Minimal"), &none), Ok(Value::Kl(2)));
        assert_eq!(parse_value(Some("\"0: No OA\""), &none), Ok(Value::Kl(0)));
        assert_eq!(parse_value(Some("4"), &none), Ok(Value::Kl(4)));
        assert_eq!(parse_value(Some("3.0"), &none), Ok(Value::Kl(3)));
        assert_eq!(parse_value(None, &none), Ok(Value::Missing));
        assert_eq!(parse_value(Some("."), &none), Ok(Value::Missing));
        assert_eq!(
            parse_value(Some(".: Missing Form/Incomplete Workbook"), &none),
            Ok(Value::Missing)
        );
        assert_eq!(parse_value(Some("8"), &codes()), Ok(Value::KneeReplacement));
        assert_eq!(parse_value(Some("9"), &codes()), Ok(Value::Excluded));
        assert_eq!(parse_value(Some("1.9"), &codes()), Ok(Value::Excluded));
        let err = parse_value(Some("8"), &none).unwrap_err();
        assert!(err.contains("`8`") && err.contains("codes"), "{err}");
        assert!(parse_value(Some("5"), &none).is_err());
        assert!(parse_value(Some("1.5"), &none).is_err());
        let as_two = BTreeMap::from([("1.9".to_string(), CodeRule::Kl(2))]);
        assert_eq!(parse_value(Some("1.9"), &as_two), Ok(Value::Kl(2)));
    }

    #[test]
    fn sides_and_ids() {
        assert_eq!(parse_side(Some("1: Right")), Ok(Side::R));
        assert_eq!(parse_side(Some("2")), Ok(Side::L));
        assert!(parse_side(Some("3")).is_err());
        assert_eq!(id_cell(Some("9000099.0")).unwrap(), "9000099");
        assert_eq!(id_cell(Some("MB00017")).unwrap(), "MB00017");
        assert!(id_cell(Some(" ")).is_err());
    }

    #[test]
    fn code_rules_round_trip_and_reject_nonsense() {
        for s in ["exclude", "knee-replacement", "kl:0", "kl:4"] {
            assert_eq!(CodeRule::parse(s).unwrap().name(), s);
        }
        assert!(CodeRule::parse("kl:5").is_err());
        assert!(CodeRule::parse("drop").is_err());
    }

    #[test]
    fn duplicates_are_kept_once_or_set_missing() {
        let r = |id: &str, visit, value| Raw {
            id: id.into(),
            side: Side::R,
            visit,
            project: 15,
            value,
        };
        let (out, same, conflict) = dedupe(vec![
            r("a", 0, Value::Kl(1)),
            r("a", 0, Value::Kl(1)),
            r("a", 12, Value::Kl(1)),
            r("a", 12, Value::Kl(2)),
            r("b", 0, Value::Missing),
            r("b", 0, Value::Kl(3)),
        ]);
        assert_eq!((same, conflict), (1, 1));
        let values: Vec<_> = out
            .iter()
            .map(|r| (r.id.as_str(), r.visit, r.value))
            .collect();
        assert_eq!(
            values,
            [
                ("a", 0, Value::Kl(1)),
                ("a", 12, Value::Missing),
                ("b", 0, Value::Kl(3))
            ]
        );
    }
}
