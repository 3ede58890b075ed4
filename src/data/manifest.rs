//! Manifests: reading a user's table (CSV, Parquet, delimited text such as the OAI's `|`-separated
//! ASCII files, or SAS `.sas7bdat`) as text cells, and the canonical cohort
//! manifest (Parquet, rows sorted by sample id) whose blake3 is the cohort version.
//!
//! Canonical columns: sample_id, patient_id, side, visit (int64 months), image (blake3 hex),
//! kl, incidence_4y, progression_4y (nullable int64), report (nullable utf8), and class
//! (nullable int64) only in a generic labelled set's manifest. File key-value
//! metadata carries `ktrack.schema` and any cohort rules that are part of its identity.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use arrow::datatypes::DataType;

use crate::data::{Sample, Side};
use crate::table;

/// The schema tag written into every canonical manifest.
pub const SCHEMA: &str = "ktrack.manifest/1";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("manifest `{path}` does not exist")]
    Missing { path: PathBuf },
    #[error("could not read manifest `{path}`: {message}")]
    Read { path: PathBuf, message: String },
    #[error("table `{path}` must end in .csv, .parquet, .txt, .tsv or .sas7bdat")]
    Extension { path: PathBuf },
    #[error("canonical manifest is malformed: {0}")]
    Canonical(String),
    #[error("`{path}` is {kind}, not a table file")]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("table `{path}` has two columns named `{name}`: columns {first} and {second}")]
    DuplicateColumn {
        path: PathBuf,
        name: String,
        first: usize,
        second: usize,
    },
    #[error(
        "table `{path}`: column `{name}` holds {kind} values; ids, labels and paths must be plain text or numbers"
    )]
    NestedColumn {
        path: PathBuf,
        name: String,
        kind: String,
    },
}

impl crate::hint::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::DuplicateColumn { .. } => Some(
                "rename or drop one of the two columns, so that each name says one thing".into(),
            ),
            _ => None,
        }
    }
}

/// A user's manifest as text cells; empty cells are `None`.
#[derive(Clone, Debug)]
pub struct TextTable {
    pub path: PathBuf,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl TextTable {
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// Reads a `.csv`, `.parquet`, delimited text (`.txt`/`.tsv`/`.dat`: `|`, tab or `,`, told
    /// by the header line) or SAS `.sas7bdat` table.
    pub fn read(path: &Path) -> Result<TextTable, Error> {
        if let Some(kind) = crate::fault::file_kind(path) {
            return Err(Error::NotAFile {
                path: path.to_path_buf(),
                kind,
            });
        }
        if !path.is_file() {
            return Err(Error::Missing {
                path: path.to_path_buf(),
            });
        }
        let table = match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("csv") => read_csv(path, b','),
            Some("parquet") => read_parquet_text(path),
            Some("txt" | "tsv" | "dat") => read_csv(path, sniff_delimiter(path)?),
            Some("sas7bdat") => read_sas(path),
            _ => Err(Error::Extension {
                path: path.to_path_buf(),
            }),
        }?;
        table.check_columns()?;
        Ok(table)
    }

    /// Column names must be unique (ignoring case, as the readers match them): a second
    /// column of the same name would otherwise be silently ignored.
    fn check_columns(&self) -> Result<(), Error> {
        let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (i, name) in self.columns.iter().enumerate() {
            if let Some(first) = seen.insert(name.to_ascii_lowercase(), i + 1) {
                return Err(Error::DuplicateColumn {
                    path: self.path.clone(),
                    name: crate::quote::clip(name),
                    first,
                    second: i + 1,
                });
            }
        }
        Ok(())
    }
}

/// The delimiter of a text table: the one of `|`, tab and `,` that its header line holds most of.
fn sniff_delimiter(path: &Path) -> Result<u8, Error> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(|e| Error::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut header = Vec::new();
    std::io::BufReader::new(file)
        .read_until(b'\n', &mut header)
        .map_err(|e| Error::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let count = |d: u8| header.iter().filter(|&&b| b == d).count();
    Ok([b'|', b'\t', b',']
        .into_iter()
        .max_by_key(|&d| (count(d), d == b'|'))
        .unwrap_or(b','))
}

/// SAS datasets: numbers as text (integral values without a decimal point), text as is.
fn read_sas(path: &Path) -> Result<TextTable, Error> {
    use sas7bdat::OwnedCellValue as V;
    let read_err = |message: String| Error::Read {
        path: path.to_path_buf(),
        message,
    };
    let ds = sas7bdat::Dataset::open(path).map_err(|e| read_err(e.to_string()))?;
    let columns: Vec<String> = ds
        .columns()
        .iter()
        .map(|c| c.name.trim().to_string())
        .collect();
    let rows = ds.collect_rows().map_err(|e| read_err(e.to_string()))?;
    let number = |f: f64| {
        if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
            format!("{}", f as i64)
        } else {
            format!("{f}")
        }
    };
    let rows = rows
        .into_iter()
        .map(|r| {
            r.cells
                .into_iter()
                .map(|c| {
                    let v = match c {
                        V::Null => return None,
                        V::Int32(i) => i.to_string(),
                        V::Int64(i) => i.to_string(),
                        V::Float64(f) if f.is_nan() => return None,
                        V::Float64(f) => number(f),
                        V::String(s) => s,
                        V::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
                        V::Date(d) => format!("{d:?}"),
                        V::DateTime(d) => format!("{d:?}"),
                        V::Time(t) => format!("{t:?}"),
                    };
                    let v = v.trim();
                    (!v.is_empty()).then(|| v.to_string())
                })
                .collect()
        })
        .collect();
    Ok(TextTable {
        path: path.to_path_buf(),
        columns,
        rows,
    })
}

fn read_csv(path: &Path, delimiter: u8) -> Result<TextTable, Error> {
    let read_err = |message: String| Error::Read {
        path: path.to_path_buf(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(false)
        .from_path(path)
        .map_err(|e| read_err(e.to_string()))?;
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| read_err(e.to_string()))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect();
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| match e.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => read_err(format!(
                "row {} has {len} fields, the header has {expected_len}",
                i + 1
            )),
            _ => read_err(format!("row {}: {e}", i + 1)),
        })?;
        rows.push(
            record
                .iter()
                .map(|v| {
                    let v = v.trim();
                    (!v.is_empty()).then(|| v.to_string())
                })
                .collect(),
        );
    }
    Ok(TextTable {
        path: path.to_path_buf(),
        columns,
        rows,
    })
}

fn read_parquet_text(path: &Path) -> Result<TextTable, Error> {
    let read_err = |message: String| Error::Read {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| read_err(e.to_string()))?;
    let t = table::read(&bytes).map_err(|e| read_err(e.to_string()))?;
    let batch = t.batch;
    let columns: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut cells: Vec<Vec<Option<String>>> =
        vec![Vec::with_capacity(columns.len()); batch.num_rows()];
    for (ci, name) in columns.iter().enumerate() {
        let dt = batch.column(ci).data_type();
        if dt.is_nested()
            || matches!(
                dt,
                DataType::Binary
                    | DataType::LargeBinary
                    | DataType::FixedSizeBinary(_)
                    | DataType::BinaryView
            )
        {
            return Err(Error::NestedColumn {
                path: path.to_path_buf(),
                name: crate::quote::clip(name),
                kind: format!("{dt}"),
            });
        }
        let col = arrow::compute::cast(batch.column(ci), &DataType::Utf8)
            .map_err(|e| read_err(format!("column `{name}`: {e}")))?;
        let col = col
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("cast to Utf8 yields a StringArray");
        for (r, row) in cells.iter_mut().enumerate() {
            row.push(if col.is_null(r) {
                None
            } else {
                let v = col.value(r).trim();
                (!v.is_empty()).then(|| v.to_string())
            });
        }
    }
    Ok(TextTable {
        path: path.to_path_buf(),
        columns,
        rows: cells,
    })
}

fn opt_u8(values: impl Iterator<Item = Option<u8>>) -> ArrayRef {
    Arc::new(Int64Array::from(
        values.map(|v| v.map(i64::from)).collect::<Vec<_>>(),
    ))
}

/// Writes the canonical manifest. `samples` must already be sorted by sample id.
pub fn write_canonical(samples: &[Sample], rules: &BTreeMap<String, String>) -> Vec<u8> {
    debug_assert!(samples.windows(2).all(|w| w[0].sample_id < w[1].sample_id));
    let strs = |f: &dyn Fn(&Sample) -> String| -> ArrayRef {
        Arc::new(StringArray::from(samples.iter().map(f).collect::<Vec<_>>()))
    };
    let mut columns = vec![
        ("sample_id", strs(&|s| s.sample_id.clone()), false),
        ("patient_id", strs(&|s| s.patient_id.clone()), false),
        ("side", strs(&|s| s.side.as_str().to_string()), false),
        (
            "visit",
            Arc::new(Int64Array::from(
                samples.iter().map(|s| s.visit).collect::<Vec<_>>(),
            )),
            false,
        ),
        ("image", strs(&|s| s.image.hex()), false),
        ("kl", opt_u8(samples.iter().map(|s| s.kl)), true),
        (
            "incidence_4y",
            opt_u8(samples.iter().map(|s| s.incidence_4y)),
            true,
        ),
        (
            "progression_4y",
            opt_u8(samples.iter().map(|s| s.progression_4y)),
            true,
        ),
        (
            "report",
            Arc::new(StringArray::from(
                samples.iter().map(|s| s.report.clone()).collect::<Vec<_>>(),
            )),
            true,
        ),
    ];
    // Only a generic labelled set has classes; without them the file (and so every knee
    // cohort's version) is what it always was.
    if samples.iter().any(|s| s.class.is_some()) {
        columns.push(("class", opt_u8(samples.iter().map(|s| s.class)), true));
    }
    let batch = table::batch(columns).expect("the canonical schema is consistent");
    let mut metadata = rules.clone();
    metadata.insert("ktrack.schema".into(), SCHEMA.into());
    table::write(&batch, &metadata).expect("writing Parquet to memory cannot fail")
}

/// A canonical manifest read back.
pub struct Canonical {
    pub samples: Vec<Sample>,
    pub rules: BTreeMap<String, String>,
}

/// Reads a canonical manifest.
pub fn read_canonical(bytes: &[u8]) -> Result<Canonical, Error> {
    let bad = |e: table::Error| Error::Canonical(e.to_string());
    let t = table::read(bytes).map_err(bad)?;
    let b = &t.batch;
    let sample_id = table::strings(b, "sample_id").map_err(bad)?;
    let patient_id = table::strings(b, "patient_id").map_err(bad)?;
    let side = table::strings(b, "side").map_err(bad)?;
    let visit = table::int64s(b, "visit").map_err(bad)?;
    let image = table::strings(b, "image").map_err(bad)?;
    let kl = table::int64s(b, "kl").map_err(bad)?;
    let inc = table::int64s(b, "incidence_4y").map_err(bad)?;
    let prog = table::int64s(b, "progression_4y").map_err(bad)?;
    let report = table::strings(b, "report").map_err(bad)?;
    let class = match b.column_by_name("class") {
        Some(_) => Some(table::int64s(b, "class").map_err(bad)?),
        None => None,
    };
    let opt = |a: &Int64Array, i: usize| (!a.is_null(i)).then(|| a.value(i) as u8);
    let mut samples = Vec::with_capacity(b.num_rows());
    for i in 0..b.num_rows() {
        samples.push(Sample {
            sample_id: sample_id.value(i).to_string(),
            patient_id: patient_id.value(i).to_string(),
            side: Side::parse(side.value(i))
                .ok_or_else(|| Error::Canonical(format!("row {i}: bad side")))?,
            visit: visit.value(i),
            image: image
                .value(i)
                .parse()
                .map_err(|e| Error::Canonical(format!("row {i}: {e}")))?,
            kl: opt(kl, i),
            incidence_4y: opt(inc, i),
            progression_4y: opt(prog, i),
            class: class.and_then(|c| opt(c, i)),
            report: (!report.is_null(i)).then(|| report.value(i).to_string()),
        });
    }
    let mut rules = t.metadata;
    if rules.remove("ktrack.schema").as_deref() != Some(SCHEMA) {
        return Err(Error::Canonical(format!("not a {SCHEMA} file")));
    }
    Ok(Canonical { samples, rules })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Hash;

    #[test]
    fn canonical_round_trip_is_byte_stable() {
        let samples = vec![
            Sample {
                sample_id: "a".into(),
                patient_id: "p1".into(),
                side: Side::L,
                visit: 0,
                image: Hash::of(b"1"),
                kl: Some(2),
                incidence_4y: None,
                progression_4y: Some(1),
                class: None,
                report: Some("mild medial narrowing".into()),
            },
            Sample {
                sample_id: "b".into(),
                patient_id: "p1".into(),
                side: Side::R,
                visit: 12,
                image: Hash::of(b"2"),
                kl: None,
                incidence_4y: Some(0),
                progression_4y: None,
                class: None,
                report: None,
            },
        ];
        let rules = BTreeMap::from([("rule".to_string(), "x".to_string())]);
        let bytes = write_canonical(&samples, &rules);
        assert_eq!(bytes, write_canonical(&samples, &rules));
        let back = read_canonical(&bytes).unwrap();
        assert_eq!(back.samples, samples);
        assert_eq!(back.rules, rules);
        // A knee cohort has no class column; a generic set's classes come back as written.
        let t = table::read(&bytes).unwrap();
        assert!(t.batch.column_by_name("class").is_none());
        let mut generic = samples.clone();
        generic[0].class = Some(11);
        let bytes = write_canonical(&generic, &rules);
        assert_eq!(read_canonical(&bytes).unwrap().samples, generic);
    }

    #[test]
    fn csv_cells_are_trimmed_and_blank_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.csv");
        std::fs::write(&p, "a,b\n 1 ,\nx,y\n").unwrap();
        let t = TextTable::read(&p).unwrap();
        assert_eq!(t.columns, vec!["a", "b"]);
        assert_eq!(t.rows[0], vec![Some("1".to_string()), None]);
        std::fs::write(&p, "a,b\n1,2,3\n").unwrap();
        let err = TextTable::read(&p).unwrap_err().to_string();
        assert!(err.contains("row 1 has 3 fields"), "{err}");
    }
}
