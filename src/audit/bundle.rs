//! Bundles: everything needed to reproduce a run elsewhere, as one tar file —
//! `ktrack-bundle.json` (the run and the list of objects) and `objects/<blake3>` entries.
//!
//! Importing is all-or-nothing and strict. The bundle is refused, with nothing stored, when
//! an entry is anything but a regular file named `ktrack-bundle.json` or `objects/<hash>`
//! (links, FIFOs, directories, `../` and absolute names included), an object does not hash to
//! its name, the manifest does not list exactly the objects held, the named run has no record
//! in the bundle, a run record's spec does not parse or does not hash to the run's id (a forged
//! record), or a record refers to an object, split, fraction or run that neither the bundle nor
//! this home holds. Objects are staged, checked, then published together with their index rows.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::index::IdKind;
use crate::record::{BundleManifest, Record};

use super::ingest::{self, Ingested};
use super::lineage::{self, bundle_objects};
use crate::context::Ktrack;
use crate::id::Hash;
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Lineage(#[from] lineage::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Ingest(#[from] ingest::Error),
    #[error("could not write bundle `{path}`: {message}")]
    Write { path: PathBuf, message: String },
    #[error("could not read bundle `{path}`: {message}")]
    Read { path: PathBuf, message: String },
    #[error("bundle `{path}`: entry `{entry}` hashes to {actual:#}, not its name")]
    Corrupt {
        path: PathBuf,
        entry: String,
        actual: Hash,
    },
    #[error("bundle `{path}` has no ktrack-bundle.json; it is not a ktrack bundle")]
    NotBundle { path: PathBuf },
    #[error("`{path}` is {kind}, not a bundle file")]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("`{path}` is not a ktrack bundle: it is not a readable tar archive ({message})")]
    NotTar { path: PathBuf, message: String },
    #[error("bundle `{path}` is refused: entry `{entry}` {why}")]
    BadEntry {
        path: PathBuf,
        entry: String,
        why: String,
    },
    #[error("bundle `{path}` is refused: {why}")]
    Refused { path: PathBuf, why: String },
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct BundleReport {
    pub run: Hash,
    pub objects: usize,
    pub bytes: u64,
    pub path: PathBuf,
}

/// Writes the bundle of a run.
pub fn write(k: &Ktrack, run: &Hash, out: &Path) -> Result<BundleReport, Error> {
    let objects = bundle_objects(k, run)?;
    let werr = |m: String| Error::Write {
        path: out.to_path_buf(),
        message: m,
    };
    let tmp = out.with_extension("tar.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| werr(e.to_string()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let manifest = Record::Bundle(BundleManifest {
        format: crate::record::FORMAT,
        run: *run,
        objects: objects.iter().copied().collect(),
    });
    let manifest = serde_json::to_vec_pretty(&manifest).expect("the manifest serializes");
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o600);
    header.set_cksum();
    tar.append_data(&mut header, "ktrack-bundle.json", manifest.as_slice())
        .map_err(|e| werr(e.to_string()))?;
    let mut bytes = 0;
    for h in &objects {
        let mut f = k.store.open_object(h)?;
        let size = k.store.size(h)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o400);
        header.set_cksum();
        tar.append_data(&mut header, format!("objects/{}", h.hex()), &mut f)
            .map_err(|e| werr(e.to_string()))?;
        bytes += size;
    }
    let inner = tar.into_inner().map_err(|e| werr(e.to_string()))?;
    let file = inner.into_inner().map_err(|e| werr(e.to_string()))?;
    file.sync_all().map_err(|e| werr(e.to_string()))?;
    std::fs::rename(&tmp, out).map_err(|e| werr(e.to_string()))?;
    Ok(BundleReport {
        run: *run,
        objects: objects.len(),
        bytes,
        path: out.to_path_buf(),
    })
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ImportReport {
    pub run: Hash,
    pub objects: usize,
    pub new_objects: usize,
    pub ingested: Ingested,
}

const MANIFEST: &str = "ktrack-bundle.json";

/// Why a tar entry is not one a bundle may hold, if it is not.
fn entry_problem(kind: tar::EntryType, name: &str) -> Option<String> {
    if !kind.is_file() {
        let what = match kind {
            tar::EntryType::Symlink => "a symbolic link",
            tar::EntryType::Link => "a hard link",
            tar::EntryType::Directory => "a directory",
            tar::EntryType::Fifo => "a FIFO",
            tar::EntryType::Char | tar::EntryType::Block => "a device",
            _ => "not a regular file",
        };
        return Some(format!("is {what}; a bundle holds regular files only"));
    }
    if name.starts_with('/') {
        return Some("has an absolute name".into());
    }
    if name.split('/').any(|c| c == "..") {
        return Some("names a place outside the bundle (`..`)".into());
    }
    let is_object = name
        .strip_prefix("objects/")
        .is_some_and(|hex| hex.len() == 64 && hex.parse::<Hash>().is_ok_and(|h| h.hex() == hex));
    if name != MANIFEST && !is_object {
        return Some(format!("is not `{MANIFEST}` or `objects/<blake3 hex>`"));
    }
    None
}

/// What the bundle's entries held, once read.
struct Entries {
    manifest: Option<BundleManifest>,
    /// (hash, size) of every object, in bundle order.
    objects: Vec<(Hash, u64)>,
    /// Objects that are records, parsed.
    records: Vec<ingest::Record>,
    new_objects: usize,
}

/// Reads every entry into `batch`, refusing anything a bundle may not hold.
fn read_entries(path: &Path, batch: &store::Batch<'_>) -> Result<Entries, Error> {
    let not_tar = |e: std::io::Error| Error::NotTar {
        path: path.to_path_buf(),
        message: crate::quote::clip(&e.to_string()),
    };
    let file = std::fs::File::open(path).map_err(|e| Error::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut out = Entries {
        manifest: None,
        objects: Vec::new(),
        records: Vec::new(),
        new_objects: 0,
    };
    let mut seen = std::collections::BTreeSet::new();
    for entry in archive.entries().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).to_string();
        let refuse = |why: String| Error::BadEntry {
            path: path.to_path_buf(),
            entry: crate::quote::clip(&name),
            why,
        };
        if let Some(why) = entry_problem(entry.header().entry_type(), &name) {
            return Err(refuse(why));
        }
        if !seen.insert(name.clone()) {
            return Err(refuse("appears twice".into()));
        }
        if name == MANIFEST {
            let mut text = Vec::new();
            (&mut entry)
                .take(64 << 20)
                .read_to_end(&mut text)
                .map_err(not_tar)?;
            let m: Record = serde_json::from_slice(&text).map_err(|e| {
                refuse(format!(
                    "is not a bundle manifest: {}",
                    crate::quote::clip(&e.to_string())
                ))
            })?;
            match m {
                Record::Bundle(m) if m.format == crate::record::FORMAT => out.manifest = Some(m),
                other => {
                    return Err(refuse(format!(
                        "is a `{}` record of format {}, not a bundle manifest of format {}",
                        other.kind(),
                        other.format(),
                        crate::record::FORMAT
                    )));
                }
            }
            continue;
        }
        let expected: Hash = name["objects/".len()..]
            .parse()
            .expect("entry_problem checked the name");
        let size = entry.header().size().map_err(not_tar)?;
        let put = if size <= 64 << 20 {
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes).map_err(not_tar)?;
            let put = batch.put_bytes(&bytes)?;
            if put.hash == expected
                && let Some(rec) = ingest::parse_record(put.hash, &bytes)?
            {
                out.records.push(rec);
            }
            put
        } else {
            batch.put_reader(&mut entry)?
        };
        if put.hash != expected {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                entry: name,
                actual: put.hash,
            });
        }
        out.new_objects += usize::from(put.new);
        out.objects.push((put.hash, put.size));
    }
    Ok(out)
}

/// Imports a bundle into this home; see the module header for what is refused.
pub fn import(k: &Ktrack, path: &Path) -> Result<ImportReport, Error> {
    if let Some(kind) = crate::fault::file_kind(path) {
        return Err(Error::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    let refused = |why: String| Error::Refused {
        path: path.to_path_buf(),
        why,
    };
    let batch = k.store.batch();
    let read = read_entries(path, &batch)?;
    let manifest = read.manifest.ok_or(Error::NotBundle {
        path: path.to_path_buf(),
    })?;
    let held: std::collections::BTreeSet<Hash> = read.objects.iter().map(|(h, _)| *h).collect();
    let listed: std::collections::BTreeSet<Hash> = manifest.objects.iter().copied().collect();
    if let Some(h) = listed.difference(&held).next() {
        return Err(refused(format!(
            "its manifest lists object {h} but the bundle does not hold it"
        )));
    }
    if let Some(h) = held.difference(&listed).next() {
        return Err(refused(format!(
            "it holds object {h}, which its manifest does not list"
        )));
    }
    check_records(k, &manifest.run, &read.records, &held).map_err(refused)?;

    let now = k.clock.now();
    let reader = |h: &Hash| batch.read(h);
    let prepared = ingest::prepare(&reader, &read.records, &now)?;
    let available = |h: &Hash| held.contains(h) || k.store.has(h);
    if let Some(img) = prepared.images().find(|h| !available(h)) {
        return Err(refused(format!(
            "a cohort in it lists image {img}, which neither the bundle nor this home holds"
        )));
    }
    let kinds = ingest::object_kinds(&read.records);
    let objects: Vec<(Hash, u64, String)> = read
        .objects
        .iter()
        .map(|(h, s)| {
            (
                *h,
                *s,
                kinds.get(h).cloned().unwrap_or_else(|| "object".into()),
            )
        })
        .collect();
    // Rows and files together: the transaction commits only after the objects are published,
    // so no row ever names a missing file (a kill in between leaves unindexed objects, which
    // verify accepts and gc removes).
    let records = &read.records;
    let mut tx = k.index.write().map_err(ingest::Error::from)?;
    let ingested =
        ingest::write(&mut tx, records, &prepared, &objects, &now).map_err(|e| match e {
            ingest::Error::Index(crate::index::Error::Query(q)) => refused(format!(
                "its records refer to something neither it nor this home holds ({q})"
            )),
            e => e.into(),
        })?;
    tx.objects()
        .settle_kinds(true, false)
        .map_err(ingest::Error::from)?;
    batch.commit()?;
    tx.commit().map_err(ingest::Error::from)?;
    Ok(ImportReport {
        run: manifest.run,
        objects: read.objects.len(),
        new_objects: read.new_objects,
        ingested,
    })
}

/// The checks on a bundle's records that need no object reads: the named run is there, every
/// run record is genuine, and everything a record names is in the bundle or this home.
fn check_records(
    k: &Ktrack,
    run: &Hash,
    records: &[ingest::Record],
    held: &std::collections::BTreeSet<Hash>,
) -> Result<(), String> {
    use crate::runner::resolved::{InitRef, ResolvedRun};
    use std::collections::BTreeSet;
    let ids = |f: &dyn Fn(&Record) -> Option<Hash>| -> BTreeSet<Hash> {
        records.iter().filter_map(|(_, r)| f(r)).collect()
    };
    let runs = ids(&|r| match r {
        Record::Run(x) => Some(x.id),
        _ => None,
    });
    let splits = ids(&|r| match r {
        Record::Split(x) => Some(x.id),
        _ => None,
    });
    let fractions = ids(&|r| match r {
        Record::Fraction(x) => Some(x.id),
        _ => None,
    });
    if !runs.contains(run) {
        return Err(format!(
            "it names run {run} but holds no record of that run"
        ));
    }
    let available = |h: &Hash| held.contains(h) || k.store.has(h);
    let in_index = |kind: IdKind, h: &Hash| -> Result<bool, String> {
        k.index
            .read()
            .and_then(|mut c| c.has(kind, h))
            .map_err(|e| e.to_string())
    };
    let missing = |rec: &Hash, what: &str, h: &Hash| {
        format!("record {rec} refers to {what} {h}, which neither the bundle nor this home holds")
    };
    let need_object = |what: &str, h: &Hash, rec: &Hash| -> Result<(), String> {
        if available(h) {
            Ok(())
        } else {
            Err(missing(rec, what, h))
        }
    };
    let need_row = |what: &str, table: IdKind, have: &BTreeSet<Hash>, h: &Hash, rec: &Hash| {
        if have.contains(h) || in_index(table, h)? {
            Ok(())
        } else {
            Err(missing(rec, what, h))
        }
    };
    for (rec, r) in records {
        match r {
            Record::Run(x) => {
                let resolved: ResolvedRun =
                    serde_json::from_value(x.spec.clone()).map_err(|e| {
                        format!(
                            "run record {rec} has a spec that does not parse: {}",
                            crate::quote::clip(&e.to_string())
                        )
                    })?;
                if resolved.id() != x.id {
                    return Err(format!(
                        "run record {rec} claims id {}, but its spec hashes to {}: the record was altered",
                        x.id,
                        resolved.id()
                    ));
                }
                for (role, h) in &x.outputs {
                    need_object(&format!("output `{}`", crate::quote::clip(role)), h, rec)?;
                }
                match &resolved {
                    ResolvedRun::Downstream(d) => {
                        need_object("cohort", &d.cohort, rec)?;
                        for e in &d.external {
                            need_object("external cohort", &e.cohort, rec)?;
                        }
                        need_row("split", IdKind::Split, &splits, &d.split, rec)?;
                        need_row("fraction", IdKind::Fraction, &fractions, &d.fraction, rec)?;
                        match &d.init {
                            InitRef::Random => {}
                            InitRef::Torchvision { weights, .. } => {
                                need_object("weights", weights, rec)?
                            }
                            InitRef::Pretrain { run, .. } => {
                                need_row("pretraining run", IdKind::Run, &runs, run, rec)?
                            }
                        }
                    }
                    ResolvedRun::Pretrain(p) => {
                        for src in &p.sources {
                            need_object("cohort", &src.cohort, rec)?;
                            if let Some(s) = &src.split {
                                need_row("split", IdKind::Split, &splits, s, rec)?;
                            }
                        }
                        if let Some(t) = &p.tokenizer {
                            need_object("tokenizer", t, rec)?;
                        }
                    }
                }
            }
            Record::Cohort(c) => need_object("manifest", &c.manifest, rec)?,
            Record::Split(s) => need_object("assignment", &s.assignment, rec)?,
            Record::Fraction(f) => need_object("members", &f.members, rec)?,
            _ => {}
        }
    }
    Ok(())
}
