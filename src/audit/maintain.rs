//! Store maintenance: `verify` (re-hash every object in parallel; check that every reference in
//! the index resolves), `gc` (objects unreachable from any cohort, split, fraction, run or
//! sweep), `reindex` (rebuild the index from the record objects) and `migrate` (build the
//! index of a home in PostgreSQL from the same records, and point the home at it).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use super::ingest::{self, Ingested};
use crate::context::Ktrack;
use crate::id::Hash;
use crate::index::{self, objects::OBJECTS_TABLE};
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
    #[error("the database `{at}` already holds another home's index")]
    Occupied { at: String },
    #[error("interrupted")]
    Interrupted,
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
    progress: &dyn crate::progress::Task,
    interrupt: &AtomicBool,
) -> Result<VerifyReport, Error> {
    let objects = k.store.list()?;
    progress.start(objects.len(), 0);
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
            progress.step();
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
    let (known, references) = {
        let mut c = k.index.read()?;
        (c.objects().hashes()?, c.objects().references()?)
    };
    let mut seen_missing = BTreeSet::new();
    for (place, h) in references {
        if !in_store.contains(&h) && seen_missing.insert(h) {
            report.missing.push((h, place.to_string()));
        }
        if place != OBJECTS_TABLE && !known.contains(&h) {
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
    /// Staging files of dead imports removed (with `apply`).
    pub temps_removed: usize,
}

/// Lists (and with `apply`, deletes) objects no cohort, split, fraction, run or sweep reaches.
pub fn gc(k: &Ktrack, apply: bool, min_age: std::time::Duration) -> Result<GcReport, Error> {
    let reachable = k.index.read()?.objects().reachable()?;
    let mut report = GcReport::default();
    let now = k.clock.system_time();
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
        // Rows first, files after: a kill in between leaves files no row names, which verify
        // accepts and the next gc deletes; never a row whose file is gone. Under the write
        // lock the references are read again, so that what a writer referred to meanwhile
        // is kept.
        let unreachable = std::mem::take(&mut report.unreachable);
        let mut tx = k.index.write()?;
        let now_reachable = tx.objects().reachable()?;
        let kept: Vec<(Hash, u64)> = unreachable
            .into_iter()
            .filter(|(h, _)| !now_reachable.contains(h))
            .collect();
        let hashes: Vec<Hash> = kept.iter().map(|(h, _)| *h).collect();
        tx.objects().delete(&hashes)?;
        tx.commit()?;
        report.bytes = kept.iter().map(|(_, s)| s).sum();
        report.unreachable = kept;
        for (h, _) in &report.unreachable {
            // Reused since it was listed (a put of the same bytes touches it): a writer is
            // about to refer to it; its row comes back with that writer's transaction.
            if !k.store.remove_if_older(h, min_age, now)? {
                report.young += 1;
            }
        }
        report.temps_removed = k.store.clean_stale_temps(k.clock.system_time())?;
        report.deleted = true;
    }
    Ok(report)
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ReindexReport {
    pub objects: usize,
    pub records: usize,
    pub ingested: Ingested,
    /// Where the previous index was moved, if there was one (a file, or a PostgreSQL schema).
    pub previous: Option<String>,
}

/// Rebuilds the index of `home` from the store's record objects, where the home keeps it.
///
/// The new index is built beside the old one and swapped in at once: on SQLite as
/// `ktrack.db.reindex`, renamed into place, the old file kept as
/// `ktrack.db.before-reindex-STAMP`; on PostgreSQL in the schema `ktrack_reindex`, renamed to
/// `ktrack` in one transaction, the old schema kept as `ktrack_before_reindex_STAMP`. A kill
/// at any moment leaves either the old index or the new one in place, never a partial one.
pub fn reindex(
    home: &Path,
    database: Option<&str>,
    clock: crate::context::Clock,
) -> Result<ReindexReport, Error> {
    let home = &std::path::absolute(home).map_err(store::Error::io("resolve", home))?;
    let at = index::home::location(home, database)?;
    rebuild(home, clock, &at)
}

/// Builds the index of `home` in the PostgreSQL database `to` from the record objects (as
/// `reindex` does) and records `to` as the home's `database` in `config.toml`. A database
/// that already holds an index is refused, unless it is this home's own.
pub fn migrate(
    home: &Path,
    clock: crate::context::Clock,
    to: &str,
) -> Result<ReindexReport, Error> {
    let home = &std::path::absolute(home).map_err(store::Error::io("resolve", home))?;
    let at = index::Location::parse_postgres(to, "--to")?;
    if index::Index::exists(&at)? {
        let there = index::Index::connect(&at)?.meta("index_id")?;
        let ours = index::home::read_id(home)?;
        if there.is_some() && there != ours {
            return Err(Error::Occupied { at: at.to_string() });
        }
    }
    let report = rebuild(home, clock, &at)?;
    let mut config = index::home::read_config(home)?;
    config.database = Some(to.to_string());
    index::home::write_config(home, &config)?;
    Ok(report)
}

/// Builds a fresh index at `at` from the store's records and swaps it in.
fn rebuild(
    home: &Path,
    clock: crate::context::Clock,
    at: &index::Location,
) -> Result<ReindexReport, Error> {
    index::home::refuse_sqlite_on_a_network_filesystem(home, at)?;
    let store = crate::store::Store::open(home)?;
    store::create_private_dir(&home.join("runs"))?;
    let _lock = index::home::lock(home)?;
    let building = match at {
        index::Location::Sqlite(_) => {
            let building = home.join(format!("{}.reindex", index::home::DB));
            for f in index::home::with_side_files(&building) {
                remove_if_there(&f)?;
            }
            index::Location::Sqlite(building)
        }
        index::Location::Postgres { .. } => {
            index::Index::drop_schema(at, BUILDING_SCHEMA)?;
            at.with_schema(BUILDING_SCHEMA)
        }
    };
    // The home keeps its index id; a home without one gets a new id.
    let id = index::home::read_id(home)?.unwrap_or_else(index::home::new_id);
    let fresh = index::Index::connect(&building)?;
    fresh.set_meta("index_id", &id)?;
    let k = Ktrack {
        home: home.to_path_buf(),
        store,
        index: fresh,
        clock,
        pixel_cache: crate::train::cache::PixelCache::at(home.join(crate::context::PIXEL_CACHE)),
        feature_cache: crate::train::cache::FeatureCache::at(
            home.join(crate::context::FEATURE_CACHE),
        ),
    };
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
    let mut tx = k.index.write()?;
    tx.objects().settle_kinds(false, true)?;
    tx.commit()?;
    k.index.close()?;
    let previous = match (at, &building) {
        (index::Location::Sqlite(db), index::Location::Sqlite(building)) => {
            swap_in(home, building, db)?.map(|p| p.display().to_string())
        }
        _ => {
            let aside = format!(
                "ktrack_before_reindex_{}",
                crate::context::wall_stamp().to_lowercase()
            );
            index::Index::swap_schema(at, BUILDING_SCHEMA, &aside)?
                .then(|| format!("schema {aside} of {at}"))
        }
    };
    if index::home::read_id(home)?.as_deref() != Some(id.as_str()) {
        index::home::write_id(home, &id)?;
    }
    Ok(ReindexReport {
        objects: hashes.len(),
        records: records.len(),
        ingested,
        previous,
    })
}

/// The PostgreSQL schema a reindex builds in.
const BUILDING_SCHEMA: &str = "ktrack_reindex";

fn remove_if_there(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(store::Error::io("remove", path)(e).into()),
    }
}

/// Puts the finished `building` index in place of `db`, keeping the old one aside.
fn swap_in(home: &Path, building: &Path, db: &Path) -> Result<Option<std::path::PathBuf>, Error> {
    let moved = |path: &Path, e: std::io::Error| Error::Move {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut previous = None;
    if db.is_file() {
        // Fold the old WAL into its file first (best effort: it may be damaged), so that its
        // side files can move aside with nothing in them.
        if let Ok(old) = index::Index::open(db) {
            let _ = old.close();
        }
        let stamp = crate::context::wall_stamp();
        let aside = home.join(format!("{}.before-reindex-{stamp}", index::home::DB));
        let [_, wal, shm] = index::home::with_side_files(db);
        let [_, aside_wal, aside_shm] = index::home::with_side_files(&aside);
        for (from, to) in [(&wal, &aside_wal), (&shm, &aside_shm)] {
            // SQLite may remove a side file as its last connection closes: gone is fine.
            match std::fs::rename(from, to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(moved(from, e)),
            }
        }
        remove_if_there(&aside)?;
        std::fs::hard_link(db, &aside).map_err(|e| moved(db, e))?;
        previous = Some(aside);
    } else {
        for f in index::home::with_side_files(db).iter().skip(1) {
            remove_if_there(f)?;
        }
    }
    std::fs::rename(building, db).map_err(|e| moved(building, e))?;
    store::fsync_dir(home)?;
    Ok(previous)
}
