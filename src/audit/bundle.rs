//! Bundles: everything needed to reproduce a run elsewhere, as one tar file —
//! `ktrack-bundle.json` (the run and the list of objects) and `objects/<blake3>` entries.
//! Importing checks every object's hash, puts it in the store and indexes the records inside.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::json;

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
    let manifest = json!({
        "ktrack": "bundle",
        "format": 1,
        "run": run.hex(),
        "objects": objects.iter().map(|h| h.hex()).collect::<Vec<_>>(),
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

/// Imports a bundle into this home: objects (hash-checked), then their records.
pub fn import(k: &Ktrack, path: &Path) -> Result<ImportReport, Error> {
    let rerr = |m: String| Error::Read {
        path: path.to_path_buf(),
        message: m,
    };
    let file = std::fs::File::open(path).map_err(|e| rerr(e.to_string()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let batch = k.store.batch();
    let mut run = None;
    let mut hashes = Vec::new();
    let mut new_objects = 0;
    for entry in archive.entries().map_err(|e| rerr(e.to_string()))? {
        let mut entry = entry.map_err(|e| rerr(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| rerr(e.to_string()))?
            .display()
            .to_string();
        if name == "ktrack-bundle.json" {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| rerr(e.to_string()))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| rerr(e.to_string()))?;
            run = v["run"].as_str().and_then(|s| s.parse::<Hash>().ok());
            continue;
        }
        let Some(hex) = name.strip_prefix("objects/") else {
            continue;
        };
        let expected: Hash = hex
            .parse()
            .map_err(|_| rerr(format!("entry `{name}` is not named by a hash")))?;
        let put = batch.put_reader(&mut entry)?;
        if put.hash != expected {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                entry: name,
                actual: put.hash,
            });
        }
        new_objects += usize::from(put.new);
        hashes.push((put.hash, put.size));
    }
    let run = run.ok_or(Error::NotBundle {
        path: path.to_path_buf(),
    })?;
    batch.commit()?;
    let list: Vec<Hash> = hashes.iter().map(|(h, _)| *h).collect();
    let records = ingest::find_records(k, &list)?;
    let kinds = ingest::object_kinds(&records);
    // Images are recognised once their cohort's samples are indexed (below).
    let objects: Vec<(Hash, u64, String)> = hashes
        .iter()
        .map(|(h, s)| {
            (
                *h,
                *s,
                kinds.get(h).cloned().unwrap_or_else(|| "object".into()),
            )
        })
        .collect();
    let ingested = ingest::ingest(k, &records, &objects)?;
    k.index
        .run(async {
            let mut tx = k.index.begin_write().await?;
            sqlx::query("UPDATE objects SET kind = 'image' WHERE kind = 'object' AND hash IN (SELECT image FROM samples)")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, crate::index::Error>(())
        })
        .map_err(ingest::Error::from)?;
    Ok(ImportReport {
        run,
        objects: hashes.len(),
        new_objects,
        ingested,
    })
}
