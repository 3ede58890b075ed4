//! Store maintenance: `verify` (re-hash every object in parallel; check that every reference in
//! the index resolves), `gc` (objects unreachable from any cohort, split, fraction, run or
//! sweep) and `reindex` (rebuild `ktrack.db` from the record objects).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::ProgressBar;
use rayon::prelude::*;

use super::ingest::{self, Ingested};
use crate::context::Ktrack;
use crate::id::Hash;
use crate::index::{self, parse_hash};
use crate::store::{self, Health};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
    #[error(transparent)]
    Ingest(#[from] ingest::Error),
    #[error("could not move the old index `{path}` aside: {message}")]
    Move {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("interrupted")]
    Interrupted,
}

/// Every (table.column, hash) the index refers to. Objects, not rows: split, fraction and run
/// ids are identities, not objects, and are not listed.
const REFERENCES: &[(&str, &str)] = &[
    ("objects.hash", "SELECT hash FROM objects"),
    ("cohorts.hash", "SELECT hash FROM cohorts"),
    ("cohorts.record", "SELECT record FROM cohorts"),
    ("samples.image", "SELECT DISTINCT image FROM samples"),
    ("splits.assignment", "SELECT assignment FROM splits"),
    ("splits.record", "SELECT record FROM splits"),
    ("fractions.members", "SELECT members FROM fractions"),
    ("fractions.record", "SELECT record FROM fractions"),
    (
        "runs.record",
        "SELECT record FROM runs WHERE record IS NOT NULL",
    ),
    ("run_outputs.hash", "SELECT DISTINCT hash FROM run_outputs"),
    (
        "run_inputs.hash",
        "SELECT DISTINCT hash FROM run_inputs WHERE role IN ('weights', 'tokenizer')",
    ),
    (
        "sweeps.record",
        "SELECT record FROM sweeps WHERE record IS NOT NULL",
    ),
    ("sweeps.spec_hash", "SELECT spec_hash FROM sweeps"),
    ("reproductions.record", "SELECT record FROM reproductions"),
];

fn references(k: &Ktrack) -> Result<Vec<(&'static str, Hash)>, Error> {
    let mut out = Vec::new();
    for (place, sql) in REFERENCES {
        let rows: Vec<String> = k
            .index
            .run(sqlx::query_scalar(sql).fetch_all(k.index.pool()))
            .map_err(index::Error::from)?;
        for r in rows {
            out.push((*place, parse_hash(&r)?));
        }
    }
    Ok(out)
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub objects: usize,
    pub bytes: u64,
    /// (object, what its content hashes to)
    pub corrupt: Vec<(Hash, Hash)>,
    /// (object, where the index refers to it) for objects absent from the store.
    pub missing: Vec<(Hash, String)>,
    /// Index references to hashes the objects table does not know.
    pub dangling: Vec<(Hash, String)>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty() && self.dangling.is_empty()
    }
}

/// Re-hashes every object and checks every reference of the index.
pub fn verify(
    k: &Ktrack,
    progress: &ProgressBar,
    interrupt: &AtomicBool,
) -> Result<VerifyReport, Error> {
    let objects = k.store.list()?;
    progress.set_length(objects.len() as u64);
    type Checked = (Hash, Result<(Health, u64), store::Error>);
    let results: Vec<Checked> = objects
        .par_iter()
        .map(|h| {
            if interrupt.load(Ordering::Relaxed) {
                return (*h, Ok((Health::Ok, 0)));
            }
            let r = k
                .store
                .check(h)
                .map(|health| (health, k.store.size(h).unwrap_or(0)));
            progress.inc(1);
            (*h, r)
        })
        .collect();
    if interrupt.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    let mut report = VerifyReport {
        objects: objects.len(),
        ..VerifyReport::default()
    };
    for (h, r) in results {
        let (health, size) = r?;
        report.bytes += size;
        if let Health::Corrupt { actual } = health {
            report.corrupt.push((h, actual));
        }
    }
    let in_store: BTreeSet<Hash> = objects.iter().copied().collect();
    let known: BTreeSet<Hash> = k
        .index
        .run(sqlx::query_scalar::<_, String>("SELECT hash FROM objects").fetch_all(k.index.pool()))
        .map_err(index::Error::from)?
        .iter()
        .map(|h| parse_hash(h))
        .collect::<Result<_, _>>()?;
    let mut seen_missing = BTreeSet::new();
    for (place, h) in references(k)? {
        if !in_store.contains(&h) && seen_missing.insert(h) {
            report.missing.push((h, place.to_string()));
        }
        if place != "objects.hash" && !known.contains(&h) {
            report.dangling.push((h, place.to_string()));
        }
    }
    Ok(report)
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GcReport {
    pub unreachable: Vec<(Hash, u64)>,
    pub bytes: u64,
    /// Unreachable but younger than the grace period (an import or run may be writing them).
    pub young: usize,
    pub deleted: bool,
}

/// Lists (and with `apply`, deletes) objects no cohort, split, fraction, run or sweep reaches.
pub fn gc(k: &Ktrack, apply: bool, min_age: std::time::Duration) -> Result<GcReport, Error> {
    let reachable: BTreeSet<Hash> = references(k)?
        .into_iter()
        .filter(|(place, _)| *place != "objects.hash")
        .map(|(_, h)| h)
        .collect();
    let mut report = GcReport::default();
    let now = std::time::SystemTime::UNIX_EPOCH
        + std::time::Duration::from_secs(chrono::Utc::now().timestamp().max(0) as u64);
    for h in k.store.list()? {
        if reachable.contains(&h) {
            continue;
        }
        let path = k.store.path_of(&h);
        let meta = std::fs::metadata(&path).map_err(store::Error::io("stat", &path))?;
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if age < min_age {
            report.young += 1;
            continue;
        }
        report.bytes += meta.len();
        report.unreachable.push((h, meta.len()));
    }
    if apply {
        for (h, _) in &report.unreachable {
            k.store.remove(h)?;
        }
        let hexes: Vec<String> = report.unreachable.iter().map(|(h, _)| h.hex()).collect();
        k.index.run(async {
            let mut tx = k.index.begin_write().await?;
            for h in &hexes {
                sqlx::query("DELETE FROM objects WHERE hash = ?1")
                    .bind(h)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, index::Error>(())
        })?;
        report.deleted = true;
    }
    Ok(report)
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ReindexReport {
    pub objects: usize,
    pub records: usize,
    pub ingested: Ingested,
    /// Where the previous index was moved, if there was one.
    pub previous: Option<std::path::PathBuf>,
}

/// Rebuilds the index of `home` from the store's record objects.
pub fn reindex(home: &Path, clock: crate::context::Clock) -> Result<ReindexReport, Error> {
    let db = home.join("ktrack.db");
    let mut previous = None;
    if db.exists() {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S").to_string();
        let aside = home.join(format!("ktrack.db.before-reindex-{stamp}"));
        std::fs::rename(&db, &aside).map_err(|e| Error::Move {
            path: db.clone(),
            message: e.to_string(),
        })?;
        for ext in ["-wal", "-shm"] {
            let side = home.join(format!("ktrack.db{ext}"));
            if side.exists() {
                let _ = std::fs::rename(
                    &side,
                    home.join(format!("ktrack.db.before-reindex-{stamp}{ext}")),
                );
            }
        }
        previous = Some(aside);
    }
    let k = Ktrack::open(home).map_err(|e| match e {
        crate::context::Error::Store(s) => Error::Store(s),
        crate::context::Error::Index(i) => Error::Index(i),
    })?;
    let k = k.with_clock(clock);
    let hashes = k.store.list()?;
    let records = ingest::find_records(&k, &hashes)?;
    let kinds = ingest::object_kinds(&records);
    let objects: Vec<(Hash, u64, String)> = hashes
        .iter()
        .map(|h| {
            let size = k.store.size(h).unwrap_or(0);
            (
                *h,
                size,
                kinds.get(h).cloned().unwrap_or_else(|| "object".into()),
            )
        })
        .collect();
    let ingested = ingest::ingest(&k, &records, &objects)?;
    k.index.run(async {
        let mut tx = k.index.begin_write().await?;
        sqlx::query("UPDATE objects SET kind = 'image' WHERE hash IN (SELECT image FROM samples)").execute(&mut *tx).await?;
        sqlx::query("UPDATE objects SET kind = 'weights' WHERE hash IN (SELECT hash FROM run_inputs WHERE role = 'weights')")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok::<_, index::Error>(())
    })?;
    Ok(ReindexReport {
        objects: hashes.len(),
        records: records.len(),
        ingested,
        previous,
    })
}
