//! `ktrack data import`: a dataset descriptor → validated samples → store objects + index rows.
//!
//! Every row is validated and every image decoded once before anything becomes visible: images
//! are staged in a store [`Batch`](crate::store::Batch) in parallel, and only when all of them,
//! the canonical manifest and the cohort record are staged is the batch committed and the index
//! written in one transaction. Any error leaves `objects/` and the index as they were.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rayon::prelude::*;

use crate::context::Ktrack;
use crate::data::descriptor::{self, Columns, Dataset, Source};
use crate::data::manifest::{self, TextTable};
use crate::data::{Sample, Side, image};
use crate::id::Hash;
use crate::index::files::FileStat;
use crate::index::{self, cohorts};
use crate::record::{CohortRecord, Record};
use crate::store;

/// An import error; row numbers count data rows from 1 (the header is not a row).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Descriptor(#[from] descriptor::Error),
    #[error(transparent)]
    Manifest(#[from] manifest::Error),
    #[error(transparent)]
    Real(#[from] crate::data::real::Error),
    #[error("manifest `{manifest}` has no rows")]
    EmptyManifest { manifest: PathBuf },
    #[error(
        "manifest `{manifest}` has no column `{column}` (mapped to field `{field}`); its columns are: {}",
        available.join(", ")
    )]
    MissingColumn {
        manifest: PathBuf,
        descriptor: PathBuf,
        field: &'static str,
        column: String,
        available: Vec<String>,
    },
    #[error(
        "manifest `{manifest}`, row {row}{}: field `{field}` {problem}",
        sample_note(sample_id)
    )]
    Field {
        manifest: PathBuf,
        descriptor: PathBuf,
        row: usize,
        sample_id: Option<String>,
        field: &'static str,
        problem: String,
    },
    #[error(
        "manifest `{manifest}`, row {row}: sample_id `{}` already appears in row {first_row}",
        crate::quote::clip(sample_id)
    )]
    DuplicateSample {
        manifest: PathBuf,
        row: usize,
        first_row: usize,
        sample_id: String,
    },
    #[error(
        "manifest `{manifest}`, row {row} (sample_id `{}`): image `{}` {problem}",
        crate::quote::clip(sample_id),
        crate::quote::clip(path)
    )]
    ImageContent {
        manifest: PathBuf,
        row: usize,
        sample_id: String,
        path: String,
        problem: String,
    },
    #[error(
        "manifest `{manifest}`, row {row} (sample_id `{}`): image `{}` {problem}",
        crate::quote::clip(sample_id),
        crate::quote::clip(path)
    )]
    Image {
        manifest: PathBuf,
        row: usize,
        sample_id: String,
        path: String,
        problem: String,
    },
    #[error("image_root `{path}` of `{descriptor}` cannot be opened: {message}")]
    ImageRoot {
        descriptor: PathBuf,
        path: PathBuf,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
    #[error("interrupted; nothing was imported")]
    Interrupted,
}

fn sample_note(sample_id: &Option<String>) -> String {
    match sample_id {
        Some(s) => format!(" (sample_id `{}`)", crate::quote::clip(s)),
        None => String::new(),
    }
}

impl crate::hint::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Descriptor(e) => e.hint(),
            Error::Manifest(e) => e.hint(),
            Error::MissingColumn {
                descriptor, field, ..
            } => Some(format!(
                "map `{field}` to one of the manifest's columns under `[columns]` in `{}`",
                descriptor.display()
            )),
            Error::Field {
                descriptor, field, ..
            } => Some(format!(
                "correct the row, or map `{field}` to another column under `[columns]` in `{}`",
                descriptor.display()
            )),
            Error::DuplicateSample { .. } => {
                Some("every row needs its own sample_id; remove or rename the duplicate".into())
            }
            Error::Image { .. } => Some(
                "image paths are relative to `image_root` and must stay inside it; fix the file or the row"
                    .into(),
            ),
            Error::ImageContent { .. } => Some(
                "replace the file with a readable PNG, JPEG or DICOM image, or drop its row".into(),
            ),
            Error::Interrupted => Some("run the same import again; it starts over cleanly".into()),
            _ => None,
        }
    }
}

/// What an import did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImportReport {
    pub name: String,
    pub cohort: Hash,
    pub samples: usize,
    pub patients: usize,
    pub images: usize,
    pub new_images: usize,
    pub image_bytes: u64,
    /// False when this exact cohort version was already in the index.
    pub new_cohort: bool,
    /// Real cohorts: what the readings gave and what was excluded, and why.
    pub counts: Vec<(String, usize)>,
    pub seconds: f64,
}

/// One validated manifest row.
struct Row {
    row: usize,
    sample_id: String,
    patient_id: String,
    side: Side,
    visit: i64,
    image: PathBuf,
    image_rel: String,
    kl: Option<u8>,
    incidence_4y: Option<u8>,
    progression_4y: Option<u8>,
    class: Option<u8>,
    report: Option<String>,
}

/// Imports the dataset a descriptor names.
pub fn import(
    k: &Ktrack,
    dataset: &Dataset,
    progress: &dyn crate::progress::Task,
    interrupt: &AtomicBool,
) -> Result<ImportReport, Error> {
    import_with_rules(k, dataset, &BTreeMap::new(), progress, interrupt)
}

/// Imports with extra cohort rules (recorded in the manifest metadata, so part of the version).
pub fn import_with_rules(
    k: &Ktrack,
    dataset: &Dataset,
    rules: &BTreeMap<String, String>,
    progress: &dyn crate::progress::Task,
    interrupt: &AtomicBool,
) -> Result<ImportReport, Error> {
    let start = Instant::now();
    // Staging files a killed import left behind.
    let cleaned = k.store.clean_stale_temps(k.clock.system_time())?;
    if cleaned > 0 {
        tracing::info!(
            files = cleaned,
            "removed staging files of interrupted imports"
        );
    }
    let mut rules = rules.clone();
    // `source` names the file that row numbers in errors refer to.
    let (source, rows, counts) = read_rows(dataset, &mut rules)?;
    let rules = &rules;
    let root = canonical_root(dataset)?;
    for r in &rows {
        check_inside(&source, r, &root)?;
    }

    // Files whose size, mtime and inode are unchanged since an earlier import are not read
    // again (their objects are in the store), like git's index.
    let known = k.index.read()?.files().all()?;
    let batch = k.store.batch();
    let (puts, stats) = stage_all(k, &batch, &known, &source, &rows, progress, interrupt)?;
    tracing::debug!(
        seconds = start.elapsed().as_secs_f64(),
        images = puts.len(),
        "images validated and staged"
    );

    let samples = samples_of(&rows, &puts);
    let patients: BTreeSet<&str> = samples.iter().map(|s| s.patient_id.as_str()).collect();
    let n_patients = patients.len();

    let manifest_bytes = manifest::write_canonical(&samples, rules);
    let manifest_put = batch.put_bytes(&manifest_bytes)?;
    let cohort = manifest_put.hash;
    let record = Record::Cohort(CohortRecord {
        format: crate::record::FORMAT,
        name: dataset.name().to_string(),
        manifest: cohort,
        samples: samples.len(),
        patients: n_patients,
        rules: rules.clone(),
    });
    let record_bytes = record.to_bytes();
    let record_put = batch.put_bytes(&record_bytes)?;

    if interrupt.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    let new_images = puts.iter().filter(|p| p.new).count();
    let image_bytes: u64 = puts.iter().map(|p| p.size).sum();
    batch.commit()?;
    tracing::debug!(
        seconds = start.elapsed().as_secs_f64(),
        "store batch committed"
    );

    let now = k.clock.now();
    let mut objects: Vec<(Hash, u64, &str)> =
        puts.iter().map(|p| (p.hash, p.size, "image")).collect();
    objects.push((cohort, manifest_put.size, "manifest"));
    objects.push((record_put.hash, record_put.size, "record"));
    let row = cohorts::CohortRow {
        hash: cohort,
        name: dataset.name().to_string(),
        record: record_put.hash,
        n_samples: samples.len() as i64,
        n_patients: n_patients as i64,
        imported_at: now.clone(),
    };
    let mut tx = k.index.write()?;
    tx.objects().insert_many(&objects, &now)?;
    tx.files().remember(&stats)?;
    let new_cohort = tx.cohorts().insert(&row)?;
    if new_cohort {
        tx.cohorts().insert_samples(&cohort, &samples)?;
    }
    tx.commit()?;

    tracing::debug!(seconds = start.elapsed().as_secs_f64(), "index written");
    Ok(ImportReport {
        name: dataset.name().to_string(),
        cohort,
        samples: samples.len(),
        patients: n_patients,
        images: puts.len(),
        new_images,
        image_bytes,
        new_cohort,
        counts,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The file row numbers refer to, the rows, and what a real cohort's rules counted.
type RowsRead = (PathBuf, Vec<Row>, Vec<(String, usize)>);

/// The rows of a dataset (a manifest, or readings joined to images) with the file that row
/// numbers refer to and, for a real cohort, what its rules counted; its rules go into `rules`.
fn read_rows(dataset: &Dataset, rules: &mut BTreeMap<String, String>) -> Result<RowsRead, Error> {
    let mut counts = Vec::new();
    let (source, rows) = match dataset.source()? {
        Source::Manifest { manifest, columns } => {
            let table = TextTable::read(manifest)?;
            let rows = parse_rows(dataset, columns, &table)?;
            (table.path, rows)
        }
        Source::Real {
            readings,
            images,
            outcomes,
        } => {
            let built = crate::data::real::build(
                &dataset.path,
                &dataset.image_root,
                readings,
                images,
                outcomes,
            )?;
            rules.extend(built.rules);
            counts = built.counts;
            (dataset.path.clone(), real_rows(dataset, built.samples)?)
        }
    };
    Ok((source, rows, counts))
}

/// Validates and stages every row's image in parallel (unchanged files are not read again);
/// returns the puts in row order and the file stats to remember. The first real error wins.
fn stage_all(
    k: &Ktrack,
    batch: &store::Batch<'_>,
    known: &HashMap<String, FileStat>,
    source: &Path,
    rows: &[Row],
    progress: &dyn crate::progress::Task,
    interrupt: &AtomicBool,
) -> Result<(Vec<store::Put>, Vec<FileStat>), Error> {
    progress.start(rows.len(), 0);
    let failed = AtomicBool::new(false);
    let staged: Vec<Result<(store::Put, Option<FileStat>), Error>> = rows
        .par_iter()
        .map(|r| {
            if failed.load(Ordering::Relaxed) || interrupt.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let result = stage_image(batch, &k.store, known, source, r);
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            progress.step();
            result
        })
        .collect();
    // Report the first real error by row (an `Interrupted` only means another row failed).
    let mut puts = Vec::with_capacity(rows.len());
    let mut stats = Vec::new();
    let mut first_err = None;
    for result in staged {
        match result {
            Ok((p, stat)) => {
                puts.push(p);
                stats.extend(stat);
            }
            Err(Error::Interrupted) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if puts.len() != rows.len() {
        return Err(Error::Interrupted);
    }
    Ok((puts, stats))
}

/// The cohort's samples, sorted by sample id.
fn samples_of(rows: &[Row], puts: &[store::Put]) -> Vec<Sample> {
    let mut samples: Vec<Sample> = rows
        .iter()
        .zip(puts)
        .map(|(r, p)| Sample {
            sample_id: r.sample_id.clone(),
            patient_id: r.patient_id.clone(),
            side: r.side,
            visit: r.visit,
            image: p.hash,
            kl: r.kl,
            incidence_4y: r.incidence_4y,
            progression_4y: r.progression_4y,
            class: r.class,
            report: r.report.clone(),
        })
        .collect();
    samples.sort_by(|a, b| a.sample_id.cmp(&b.sample_id));
    samples
}

/// Rows of a real cohort (readings joined to images); row numbers count its samples.
fn real_rows(
    dataset: &Dataset,
    samples: Vec<crate::data::real::RealSample>,
) -> Result<Vec<Row>, Error> {
    if samples.is_empty() {
        return Err(Error::EmptyManifest {
            manifest: dataset.path.clone(),
        });
    }
    samples
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            for (field, v) in [("sample_id", &s.sample_id), ("patient_id", &s.patient_id)] {
                check_id(v).map_err(|problem| Error::Field {
                    manifest: dataset.path.clone(),
                    descriptor: dataset.path.clone(),
                    row: i + 1,
                    sample_id: None,
                    field,
                    problem,
                })?;
            }
            let image = relative_image_path(&s.image).map_err(|problem| Error::Image {
                manifest: dataset.path.clone(),
                row: i + 1,
                sample_id: s.sample_id.clone(),
                path: s.image.clone(),
                problem,
            })?;
            Ok(Row {
                row: i + 1,
                sample_id: s.sample_id,
                patient_id: s.patient_id,
                side: s.side,
                visit: s.visit,
                image: dataset.image_root.join(image),
                image_rel: s.image,
                kl: s.kl,
                incidence_4y: s.incidence_4y,
                progression_4y: s.progression_4y,
                class: None,
                report: None,
            })
        })
        .collect()
}

fn parse_rows(dataset: &Dataset, columns: &Columns, table: &TextTable) -> Result<Vec<Row>, Error> {
    let manifest = &table.path;
    if table.rows.is_empty() {
        return Err(Error::EmptyManifest {
            manifest: manifest.clone(),
        });
    }
    let mut index_of: HashMap<&'static str, usize> = HashMap::new();
    for (field, column) in columns.mapped() {
        let i = table.column(column).ok_or_else(|| Error::MissingColumn {
            manifest: manifest.clone(),
            descriptor: dataset.path.clone(),
            field,
            column: column.to_string(),
            available: table.columns.clone(),
        })?;
        index_of.insert(field, i);
    }

    let mut rows = Vec::with_capacity(table.rows.len());
    let mut first_row: HashMap<String, usize> = HashMap::new();
    for (i, cells) in table.rows.iter().enumerate() {
        let row = i + 1;
        let cell = |field: &str| index_of.get(field).and_then(|&c| cells[c].as_deref());
        let sample_id = cell("sample_id").map(str::to_string);
        let field_err = |field: &'static str, problem: String| Error::Field {
            manifest: manifest.clone(),
            descriptor: dataset.path.clone(),
            row,
            sample_id: sample_id.clone(),
            field,
            problem,
        };
        let required = |field: &'static str| {
            cell(field).ok_or_else(|| field_err(field, "is empty".to_string()))
        };
        let sample_id_v = required("sample_id")?.to_string();
        check_id(&sample_id_v).map_err(|p| field_err("sample_id", p))?;
        if let Some(&first) = first_row.get(&sample_id_v) {
            return Err(Error::DuplicateSample {
                manifest: manifest.clone(),
                row,
                first_row: first,
                sample_id: sample_id_v,
            });
        }
        first_row.insert(sample_id_v.clone(), row);
        let patient_id = required("patient_id")?.to_string();
        check_id(&patient_id).map_err(|p| field_err("patient_id", p))?;
        let side_v = required("side")?;
        let side = Side::parse(side_v).ok_or_else(|| {
            field_err(
                "side",
                format!("is `{}`, expected L or R", crate::quote::clip(side_v)),
            )
        })?;
        let visit = match cell("visit") {
            None if !index_of.contains_key("visit") => 0,
            None => return Err(field_err("visit", "is empty".into())),
            Some(v) => match parse_integer(v) {
                Some(n) if n >= 0 => n,
                Some(n) => {
                    return Err(field_err(
                        "visit",
                        format!("is `{n}`, expected months >= 0"),
                    ));
                }
                None => {
                    return Err(field_err(
                        "visit",
                        format!(
                            "is `{}`, expected a whole number of months",
                            crate::quote::clip(v)
                        ),
                    ));
                }
            },
        };
        let image_rel = required("image")?.to_string();
        let kl = label(cell("kl"), 4).map_err(|p| field_err("kl", p))?;
        let incidence_4y =
            label(cell("incidence_4y"), 1).map_err(|p| field_err("incidence_4y", p))?;
        let progression_4y =
            label(cell("progression_4y"), 1).map_err(|p| field_err("progression_4y", p))?;
        let class = label(cell("class"), 255).map_err(|p| field_err("class", p))?;
        let report = cell("report").map(str::to_string);
        let image = relative_image_path(&image_rel).map_err(|problem| Error::Image {
            manifest: manifest.clone(),
            row,
            sample_id: sample_id_v.clone(),
            path: image_rel.clone(),
            problem,
        })?;
        rows.push(Row {
            row,
            sample_id: sample_id_v,
            patient_id,
            side,
            visit,
            image: dataset.image_root.join(image),
            image_rel,
            kl,
            incidence_4y,
            progression_4y,
            class,
            report,
        });
    }
    Ok(rows)
}

/// Ids are plain text: a control character (a NUL byte, a newline) is refused, since it would
/// break every table, file name and terminal the id is later shown in.
fn check_id(v: &str) -> Result<(), String> {
    match v.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, c)) => Err(format!(
            "`{}` holds the control character U+{:04X} at byte {at}; ids must be plain text",
            crate::quote::clip(v),
            c as u32
        )),
        None => Ok(()),
    }
}

/// An integer cell; integral floats such as `2.0` (from Parquet casts) are accepted.
fn parse_integer(v: &str) -> Option<i64> {
    if let Ok(n) = v.parse::<i64>() {
        return Some(n);
    }
    match v.parse::<f64>() {
        Ok(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 => Some(f as i64),
        _ => None,
    }
}

fn label(cell: Option<&str>, max: u8) -> Result<Option<u8>, String> {
    let Some(v) = cell else { return Ok(None) };
    match parse_integer(v) {
        Some(n) if (0..=i64::from(max)).contains(&n) => Ok(Some(n as u8)),
        Some(_) => Err(format!(
            "is `{}`, expected 0..={max}",
            crate::quote::clip(v)
        )),
        None => Err(format!(
            "is `{}`, which is not a number (expected 0..={max}, or empty when unknown)",
            crate::quote::clip(v)
        )),
    }
}

/// Rejects absolute paths and `..`; the symlink check happens against the real root later.
fn relative_image_path(rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    if p.is_absolute() {
        return Err("is absolute; it must be relative to `image_root`".into());
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => return Err("escapes `image_root` (`..` is not allowed)".into()),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("is empty".into());
    }
    Ok(out)
}

fn canonical_root(dataset: &Dataset) -> Result<PathBuf, Error> {
    dataset
        .image_root
        .canonicalize()
        .map_err(|e| Error::ImageRoot {
            descriptor: dataset.path.clone(),
            path: dataset.image_root.clone(),
            message: e.to_string(),
        })
}

/// The image must exist and, after resolving symlinks, lie inside the image root.
fn check_inside(manifest: &Path, r: &Row, root: &Path) -> Result<(), Error> {
    let err = |problem: String| Error::Image {
        manifest: manifest.to_path_buf(),
        row: r.row,
        sample_id: r.sample_id.clone(),
        path: r.image_rel.clone(),
        problem,
    };
    let real = r.image.canonicalize().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            err(format!(
                "does not exist (looked for `{}`)",
                r.image.display()
            ))
        } else {
            err(format!("cannot be opened: {e}"))
        }
    })?;
    if !real.starts_with(root) {
        return Err(err(format!(
            "resolves to `{}`, outside `image_root` (a symlink out is not allowed)",
            real.display()
        )));
    }
    if !real.is_file() {
        return Err(err("is not a file".into()));
    }
    Ok(())
}

fn stage_image(
    batch: &store::Batch<'_>,
    store: &store::Store,
    known: &HashMap<String, FileStat>,
    manifest: &Path,
    r: &Row,
) -> Result<(store::Put, Option<FileStat>), Error> {
    use std::os::unix::fs::MetadataExt;
    let err = |problem: String| Error::ImageContent {
        manifest: manifest.to_path_buf(),
        row: r.row,
        sample_id: r.sample_id.clone(),
        path: r.image_rel.clone(),
        problem,
    };
    let real = r
        .image
        .canonicalize()
        .map_err(|e| err(format!("cannot be read: {e}")))?;
    let key = real.display().to_string();
    let meta = std::fs::metadata(&real).map_err(|e| err(format!("cannot be read: {e}")))?;
    let stat = (
        meta.size() as i64,
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        meta.ino() as i64,
    );
    if let Some(known) = known.get(&key)
        && (known.size, known.mtime_ns, known.inode) == stat
        && store.has(&known.hash)
    {
        let put = store::Put {
            hash: known.hash,
            size: stat.0 as u64,
            new: false,
        };
        return Ok((put, None));
    }
    let bytes = std::fs::read(&r.image).map_err(|e| err(format!("cannot be read: {e}")))?;
    image::validate(&bytes).map_err(|e| err(e.to_string()))?;
    let put = batch.put_bytes(&bytes)?;
    let remembered = FileStat {
        path: key,
        size: stat.0,
        mtime_ns: stat.1,
        inode: stat.2,
        hash: put.hash,
    };
    Ok((put, Some(remembered)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_strictly() {
        assert_eq!(label(Some("3"), 4), Ok(Some(3)));
        assert_eq!(label(Some("3.0"), 4), Ok(Some(3)));
        assert_eq!(label(None, 4), Ok(None));
        assert!(label(Some("7"), 4).unwrap_err().contains("expected 0..=4"));
        assert!(
            label(Some("2: Minimal"), 4)
                .unwrap_err()
                .contains("not a number")
        );
        assert!(label(Some("2.5"), 4).is_err());
    }

    #[test]
    fn image_paths_stay_relative() {
        assert!(relative_image_path("a/b.png").is_ok());
        assert!(relative_image_path("./a.png").is_ok());
        assert!(relative_image_path("../a.png").is_err());
        assert!(relative_image_path("a/../../b.png").is_err());
        assert!(relative_image_path("/etc/passwd").is_err());
    }
}
