//! Finding each knee's image files under `image_root`, joined to readings by id, side and visit.
//!
//! Three ways, chosen in the descriptor's `[images]` table:
//! - `pattern = "{id}/{visit_code}/{side}.dcm"`: a path template (placeholders `{id}`, `{side}`
//!   = R/L, `{side_name}` = right/left, `{side_code}` = 1/2, `{visit}` = months,
//!   `{visit_code}` = the distribution's visit code such as `06`);
//! - `list = "images.csv"`: a table with columns `id`, `side`, `visit` (months) and `path`;
//! - `layout = "kneekl"`: the kneeKL224 folders `{train,val,test}/{0..4}/FILE.png`, the folder
//!   giving the KL grade and `filename`, a regular expression with named groups `id` and `side`
//!   (and optionally `visit`), the knee.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::Side;
use crate::data::manifest::{self, TextTable};
use crate::data::real::readings::Format;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Kneekl,
}

/// The `[images]` table of a descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesSpec {
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub list: Option<PathBuf>,
    #[serde(default)]
    pub layout: Option<Layout>,
    /// kneekl: the file name expression (default `^(?P<id>[0-9]+)_?(?P<side>[LR])\.png$`).
    #[serde(default)]
    pub filename: Option<String>,
    /// kneekl: the visit, in months, of files whose name has no `visit` group (default 0).
    #[serde(default)]
    pub visit_months: Option<i64>,
}

pub const DEFAULT_FILENAME: &str = r"^(?P<id>[0-9]+)_?(?P<side>[LR])\.png$";

/// One knee image found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Relative to `image_root`, with `/` separators.
    pub path: String,
    /// kneekl: the grade its folder gives.
    pub folder_kl: Option<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`[images]`: {0}")]
    Spec(String),
    #[error(transparent)]
    Table(#[from] manifest::Error),
    #[error("image list `{path}`, row {row}, column `{column}`: {problem}")]
    Cell {
        path: PathBuf,
        row: usize,
        column: String,
        problem: String,
    },
    #[error("`{path}`: {problem}")]
    File { path: PathBuf, problem: String },
    #[error("two images for knee {id} {side} at month {visit}: `{first}` and `{second}`")]
    Twice {
        id: String,
        side: &'static str,
        visit: i64,
        first: String,
        second: String,
    },
}

type Key = (String, Side, i64);

impl ImagesSpec {
    pub fn mode(&self) -> Result<&'static str, Error> {
        match (&self.pattern, &self.list, &self.layout) {
            (Some(_), None, None) => Ok("pattern"),
            (None, Some(_), None) => Ok("list"),
            (None, None, Some(Layout::Kneekl)) => Ok("kneekl"),
            _ => Err(Error::Spec(
                "give exactly one of `pattern`, `list` or `layout = \"kneekl\"`".into(),
            )),
        }
    }

    /// What identifies the join (part of the cohort's identity).
    pub fn metadata(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        if let Some(p) = &self.pattern {
            m.insert("images.pattern".into(), p.clone());
        }
        if self.list.is_some() {
            m.insert("images.mode".into(), "list".into());
        }
        if self.layout.is_some() {
            m.insert("images.mode".into(), "kneekl".into());
            m.insert(
                "images.filename".into(),
                self.filename.clone().unwrap_or(DEFAULT_FILENAME.into()),
            );
        }
        m
    }
}

/// Expands a pattern for one knee-visit.
pub fn expand(
    pattern: &str,
    id: &str,
    side: Side,
    visit: i64,
    format: Option<Format>,
) -> Result<String, Error> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| Error::Spec(format!("pattern `{pattern}` has an unclosed `{{`")))?;
        let name = &rest[open + 1..open + close];
        let value = match name {
            "id" => id.to_string(),
            "side" => side.as_str().to_string(),
            "side_name" => match side {
                Side::R => "right".into(),
                Side::L => "left".into(),
            },
            "side_code" => match side {
                Side::R => "1".into(),
                Side::L => "2".into(),
            },
            "visit" => visit.to_string(),
            "visit_code" => format
                .and_then(|f| f.visit_code(visit))
                .ok_or_else(|| {
                    Error::Spec(format!(
                        "pattern `{pattern}` uses {{visit_code}}, which needs `[readings]` and a scheduled visit (month {visit})"
                    ))
                })?
                .to_string(),
            other => {
                return Err(Error::Spec(format!(
                    "pattern `{pattern}` has an unknown placeholder `{{{other}}}`; use id, side, side_name, side_code, visit or visit_code"
                )));
            }
        };
        out.push_str(&value);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Pattern mode: the knee-visits whose expanded path exists.
pub fn by_pattern(
    spec_pattern: &str,
    root: &Path,
    wanted: &[Key],
    format: Option<Format>,
) -> Result<BTreeMap<Key, Found>, Error> {
    let mut out = BTreeMap::new();
    for (id, side, visit) in wanted {
        let rel = expand(spec_pattern, id, *side, *visit, format)?;
        if root.join(&rel).is_file() {
            out.insert(
                (id.clone(), *side, *visit),
                Found {
                    path: rel,
                    folder_kl: None,
                },
            );
        }
    }
    Ok(out)
}

/// List mode: every row of the image table.
pub fn by_list(path: &Path) -> Result<BTreeMap<Key, Found>, Error> {
    let t = TextTable::read(path)?;
    let col = |name: &str| {
        t.columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))
            .ok_or_else(|| Error::Cell {
                path: path.to_path_buf(),
                row: 0,
                column: name.into(),
                problem: format!("no such column; the columns are: {}", t.columns.join(", ")),
            })
    };
    let (ci, cs, cv, cp) = (col("id")?, col("side")?, col("visit")?, col("path")?);
    let mut out: BTreeMap<Key, Found> = BTreeMap::new();
    for (i, cells) in t.rows.iter().enumerate() {
        let err = |column: &str, problem: String| Error::Cell {
            path: path.to_path_buf(),
            row: i + 1,
            column: column.into(),
            problem,
        };
        let id = cells[ci]
            .clone()
            .ok_or_else(|| err("id", "is empty".into()))?;
        let side_v = cells[cs].as_deref().unwrap_or("");
        let side = Side::parse(side_v)
            .or(match side_v {
                "1" => Some(Side::R),
                "2" => Some(Side::L),
                _ => None,
            })
            .ok_or_else(|| err("side", format!("is `{side_v}`, expected R, L, 1 or 2")))?;
        let visit_v = cells[cv].as_deref().unwrap_or("");
        let visit: i64 = visit_v
            .parse()
            .ok()
            .filter(|v| *v >= 0)
            .ok_or_else(|| err("visit", format!("is `{visit_v}`, expected months >= 0")))?;
        let p = cells[cp]
            .clone()
            .ok_or_else(|| err("path", "is empty".into()))?;
        insert(
            &mut out,
            (id, side, visit),
            Found {
                path: p,
                folder_kl: None,
            },
        )?;
    }
    Ok(out)
}

fn insert(out: &mut BTreeMap<Key, Found>, key: Key, found: Found) -> Result<(), Error> {
    if let Some(first) = out.get(&key) {
        return Err(Error::Twice {
            id: key.0.clone(),
            side: key.1.as_str(),
            visit: key.2,
            first: first.path.clone(),
            second: found.path,
        });
    }
    out.insert(key, found);
    Ok(())
}

/// kneekl mode: walks `{train,val,test}/{0..4}/`.
pub fn by_kneekl(root: &Path, spec: &ImagesSpec) -> Result<BTreeMap<Key, Found>, Error> {
    let expr = spec.filename.as_deref().unwrap_or(DEFAULT_FILENAME);
    let re = regex::Regex::new(expr)
        .map_err(|e| Error::Spec(format!("`filename` is not a regular expression: {e}")))?;
    if !re.capture_names().flatten().any(|n| n == "id")
        || !re.capture_names().flatten().any(|n| n == "side")
    {
        return Err(Error::Spec(format!(
            "`filename = '{expr}'` needs named groups `id` and `side`"
        )));
    }
    let mut out = BTreeMap::new();
    let mut folders = 0;
    for part in ["train", "val", "test", "auto_test"] {
        for grade in 0..=4u8 {
            let dir = root.join(part).join(grade.to_string());
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            folders += 1;
            let mut names: Vec<String> = entries
                .flatten()
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for name in names {
                let rel = format!("{part}/{grade}/{name}");
                let caps = re.captures(&name).ok_or_else(|| Error::File {
                    path: root.join(&rel),
                    problem: format!("the file name does not match `filename = '{expr}'`"),
                })?;
                let id = caps["id"].to_string();
                let side = match &caps["side"] {
                    "R" | "r" | "1" => Side::R,
                    "L" | "l" | "2" => Side::L,
                    other => {
                        return Err(Error::File {
                            path: root.join(&rel),
                            problem: format!("side `{other}` is not R, L, 1 or 2"),
                        });
                    }
                };
                let visit = match caps.name("visit") {
                    Some(v) => v.as_str().parse().map_err(|_| Error::File {
                        path: root.join(&rel),
                        problem: format!("visit `{}` is not a number of months", v.as_str()),
                    })?,
                    None => spec.visit_months.unwrap_or(0),
                };
                insert(
                    &mut out,
                    (id, side, visit),
                    Found {
                        path: rel,
                        folder_kl: Some(grade),
                    },
                )?;
            }
        }
    }
    if folders == 0 {
        return Err(Error::File {
            path: root.to_path_buf(),
            problem: "has no kneeKL224 folders `{train,val,test}/{0..4}/`".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_expand() {
        let p = "{id}/V{visit_code}/{side}_{side_name}_{side_code}_{visit}.dcm";
        assert_eq!(
            expand(p, "9000099", Side::L, 48, Some(Format::Oai)).unwrap(),
            "9000099/V06/L_left_2_48.dcm"
        );
        assert!(
            expand("{id}/{knee}.png", "1", Side::R, 0, None)
                .unwrap_err()
                .to_string()
                .contains("{knee}")
        );
        assert!(expand("{id}/{visit_code}.png", "1", Side::R, 0, None).is_err());
        assert!(expand("{id.png", "1", Side::R, 0, None).is_err());
    }

    #[test]
    fn kneekl_folders_give_knees_and_grades() {
        let dir = tempfile::tempdir().unwrap();
        for (rel, _) in [
            ("train/2/9000099R.png", 2),
            ("val/0/9000099L.png", 0),
            ("test/4/9000296_R.png", 4),
        ] {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let found = by_kneekl(dir.path(), &ImagesSpec::default()).unwrap();
        let got: Vec<_> = found
            .iter()
            .map(|(k, f)| (k.0.as_str(), k.1, k.2, f.folder_kl, f.path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("9000099", Side::L, 0, Some(0), "val/0/9000099L.png"),
                ("9000099", Side::R, 0, Some(2), "train/2/9000099R.png"),
                ("9000296", Side::R, 0, Some(4), "test/4/9000296_R.png"),
            ]
        );
        std::fs::write(dir.path().join("train/2/notes.txt"), b"x").unwrap();
        let err = by_kneekl(dir.path(), &ImagesSpec::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("notes.txt") && err.contains("does not match"),
            "{err}"
        );
    }
}
