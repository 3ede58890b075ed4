//! Turning record objects back into index rows: what `ktrack reindex` does for a whole store
//! and `ktrack bundle import` for the objects of a bundle. Records are the typed
//! [`crate::record::Record`]s; one that does not parse is an error naming the object (no field
//! is ever filled with a default). Every row they imply is inserted if missing, so ingesting
//! twice changes nothing.

use std::collections::BTreeMap;

use crate::context::Ktrack;
use crate::data::manifest;
use crate::id::Hash;
use crate::index::{self, cohorts, runs, splits};
use crate::record::{self, Record as Typed, RunRecord};
use crate::runner::resolved::{InitRef, ResolvedRun};
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
    #[error("record {hash} is malformed: {message}")]
    Record { hash: Hash, message: String },
}

impl From<record::Error> for Error {
    fn from(e: record::Error) -> Error {
        Error::Record {
            hash: e.hash,
            message: e.message,
        }
    }
}

/// Counts of what was ingested.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Ingested {
    pub objects: usize,
    pub cohorts: usize,
    pub splits: usize,
    pub fractions: usize,
    pub runs: usize,
    pub sweeps: usize,
    pub reproductions: usize,
}

/// A record object: its hash and its parsed record.
pub type Record = (Hash, Typed);

/// Reads an object's bytes: from the store, or from a bundle's staged objects.
pub type Reader<'a> = &'a (dyn Fn(&Hash) -> Result<Vec<u8>, store::Error> + Sync);

/// Reads the objects that are ktrack records; a damaged record is an error naming it.
pub fn find_records(k: &Ktrack, hashes: &[Hash]) -> Result<Vec<Record>, Error> {
    use rayon::prelude::*;
    let found: Vec<Option<Record>> = hashes
        .par_iter()
        .map(|h| -> Result<Option<Record>, Error> {
            let size = k.store.size(h)?;
            if size > record::MAX_RECORD {
                return Ok(None);
            }
            let mut file = k.store.open_object(h)?;
            let mut head = [0u8; 2];
            use std::io::Read;
            if file.read_exact(&mut head).is_err() || &head != b"{\"" {
                return Ok(None);
            }
            parse_record(*h, &k.store.read(h)?)
        })
        .collect::<Result<_, _>>()?;
    Ok(found.into_iter().flatten().collect())
}

/// The record in `bytes`, if they are one; an error if they are a damaged one.
pub fn parse_record(hash: Hash, bytes: &[u8]) -> Result<Option<Record>, Error> {
    Ok(Typed::parse(hash, bytes)?.map(|r| (hash, r)))
}

/// Inserts the rows the records imply. `objects` are (hash, size, kind) rows to record first.
pub fn ingest(
    k: &Ktrack,
    records: &[Record],
    objects: &[(Hash, u64, String)],
) -> Result<Ingested, Error> {
    let now = k.clock.now();
    let read = |h: &Hash| k.store.read(h);
    let prepared = prepare(&read, records, &now)?;
    let mut tx = k.index.write()?;
    let out = write(&mut tx, records, &prepared, objects, &now)?;
    tx.commit()?;
    Ok(out)
}

struct CohortRows {
    row: cohorts::CohortRow,
    samples: Vec<crate::data::Sample>,
}

/// The rows of records that need object reads (manifests, assignments, members), read
/// before any write transaction is opened.
pub struct Prepared {
    cohorts: Vec<CohortRows>,
    splits: Vec<(splits::SplitRow, Vec<(String, crate::data::Partition)>)>,
    fractions: Vec<(splits::FractionRow, Vec<String>)>,
}

impl Prepared {
    /// The image objects of the cohorts' samples.
    pub fn images(&self) -> impl Iterator<Item = Hash> + '_ {
        self.cohorts
            .iter()
            .flat_map(|c| c.samples.iter().map(|s| s.image))
    }
}

fn malformed(hash: Hash) -> impl Fn(String) -> Error {
    move |message| Error::Record { hash, message }
}

/// Reads what the records refer to and builds their rows.
pub fn prepare(read: Reader<'_>, records: &[Record], now: &str) -> Result<Prepared, Error> {
    let now = now.to_string();
    let mut prepared = Prepared {
        cohorts: Vec::new(),
        splits: Vec::new(),
        fractions: Vec::new(),
    };
    for (hash, rec) in records {
        let bad = malformed(*hash);
        match rec {
            Typed::Cohort(c) => {
                let canonical = manifest::read_canonical(&read(&c.manifest)?)
                    .map_err(|e| bad(e.to_string()))?;
                let patients: std::collections::BTreeSet<&str> = canonical
                    .samples
                    .iter()
                    .map(|s| s.patient_id.as_str())
                    .collect();
                prepared.cohorts.push(CohortRows {
                    row: cohorts::CohortRow {
                        hash: c.manifest,
                        name: c.name.clone(),
                        record: *hash,
                        n_samples: canonical.samples.len() as i64,
                        n_patients: patients.len() as i64,
                        imported_at: now.clone(),
                    },
                    samples: canonical.samples,
                });
            }
            Typed::Split(s) => {
                let members = crate::data::split::read_assignment(&read(&s.assignment)?)
                    .map_err(|e| bad(e.to_string()))?;
                let p = &s.params;
                prepared.splits.push((
                    splits::SplitRow {
                        hash: s.id,
                        cohort: p.cohort,
                        assignment: s.assignment,
                        record: *hash,
                        strategy: p.strategy.clone(),
                        train: p.train,
                        val: p.val,
                        test: p.test,
                        stratify: p.stratify.clone(),
                        seed: p.seed as i64,
                        created_at: now.clone(),
                    },
                    members,
                ));
            }
            Typed::Fraction(f) => {
                let members = crate::data::split::read_members(&read(&f.members)?)
                    .map_err(|e| bad(e.to_string()))?;
                let p = &f.params;
                prepared.fractions.push((
                    splits::FractionRow {
                        hash: f.id,
                        split: p.split,
                        fraction: p.fraction,
                        stratify: p.stratify.clone(),
                        seed: p.seed as i64,
                        members: f.members,
                        record: *hash,
                        n_samples: members.len() as i64,
                        n_patients: f.patients as i64,
                        created_at: now.clone(),
                    },
                    members,
                ));
            }
            _ => {}
        }
    }
    Ok(prepared)
}

/// Inserts the rows of prepared records inside the caller's write transaction.
pub fn write(
    tx: &mut index::Session<'_>,
    records: &[Record],
    prepared: &Prepared,
    objects: &[(Hash, u64, String)],
    now: &str,
) -> Result<Ingested, Error> {
    let mut out = Ingested {
        objects: objects.len(),
        ..Ingested::default()
    };
    let objs: Vec<(Hash, u64, &str)> = objects
        .iter()
        .map(|(h, s, kd)| (*h, *s, kd.as_str()))
        .collect();
    tx.objects().insert_many(&objs, now)?;
    for c in &prepared.cohorts {
        if tx.cohorts().insert(&c.row)? {
            tx.cohorts().insert_samples(&c.row.hash, &c.samples)?;
            out.cohorts += 1;
        }
    }
    for (row, members) in &prepared.splits {
        out.splits += usize::from(tx.splits().insert(row, members)?);
    }
    for (row, members) in &prepared.fractions {
        out.fractions += usize::from(tx.fractions().insert(row, members)?);
    }
    // Runs: pretraining first (downstream runs depend on them).
    let mut run_recs: Vec<(Hash, &RunRecord)> = records
        .iter()
        .filter_map(|(h, r)| match r {
            Typed::Run(run) => Some((*h, run.as_ref())),
            _ => None,
        })
        .collect();
    run_recs.sort_by_key(|(h, r)| (r.kind != "pretrain", *h));
    for (hash, rec) in run_recs {
        out.runs += usize::from(ingest_run(tx, hash, rec, now)?);
    }
    for (hash, rec) in records {
        match rec {
            Typed::Sweep(s) => {
                let mut ids = Vec::new();
                for h in &s.runs {
                    if tx.runs().exists(h)? {
                        ids.push(*h);
                    }
                }
                tx.sweeps()
                    .upsert(&s.name, &s.spec_path, &s.spec, &ids, Some(hash), now)?;
                out.sweeps += 1;
            }
            Typed::Reproduction(r) => {
                if !tx.runs().exists(&r.run)? {
                    continue;
                }
                out.reproductions += usize::from(tx.reproductions().insert(
                    hash,
                    &r.run,
                    &r.verdict,
                    r.max_probability_diff,
                    &r.created_at,
                )?);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Inserts one finished run from its record; false if it was already there.
fn ingest_run(
    tx: &mut index::Session<'_>,
    hash: Hash,
    rec: &RunRecord,
    now: &str,
) -> Result<bool, Error> {
    let id = rec.id;
    if let Some(row) = tx.runs().get(&id)?
        && row.status == runs::Status::Done
    {
        return Ok(false);
    }
    let resolved: ResolvedRun = serde_json::from_value(rec.spec.clone())
        .map_err(|e| malformed(hash)(format!("spec: {}", crate::quote::clip(&e.to_string()))))?;
    let axes = rec.axes.clone();
    let deps = match &resolved {
        ResolvedRun::Downstream(d) => match &d.init {
            InitRef::Pretrain { run, .. } => vec![*run],
            _ => vec![],
        },
        ResolvedRun::Pretrain(_) => vec![],
    };
    // A dependency must exist as a row (foreign key); keep only those present.
    let mut present = Vec::new();
    for d in deps {
        if tx.runs().exists(&d)? {
            present.push(d);
        }
    }
    tx.runs().insert_planned(
        &[runs::NewRun {
            id,
            kind: resolved.kind(),
            spec: resolved.to_json().to_string(),
            label: rec.label.clone(),
            deps: present,
            inputs: crate::runner::inputs_of(&resolved),
            axes,
        }],
        now,
    )?;
    let outputs: Vec<(String, Hash)> = rec.outputs.iter().map(|(r, h)| (r.clone(), *h)).collect();
    let metrics: Vec<(String, String, f64)> = rec
        .metrics
        .iter()
        .flat_map(|(set, m)| {
            m.iter()
                .map(move |(name, v)| (set.clone(), name.clone(), v.unwrap_or(f64::NAN)))
        })
        .collect();
    tx.runs().record_done(
        &id,
        &runs::Finished {
            record: hash,
            outputs: &outputs,
            metrics: &metrics,
            started_at: &rec.environment.started_at,
            finished_at: &rec.environment.finished_at,
            leaked_patients: rec.leaked_patients(),
        },
    )?;
    if let Some(attempts) = rec.attempts {
        tx.runs().set_attempts(&id, attempts)?;
    }
    Ok(true)
}

/// Object kinds implied by records (for the objects table).
pub fn object_kinds(records: &[Record]) -> BTreeMap<Hash, String> {
    let mut kinds = BTreeMap::new();
    for (h, r) in records {
        kinds.insert(*h, "record".to_string());
        match r {
            Typed::Cohort(c) => {
                kinds.insert(c.manifest, "manifest".into());
            }
            Typed::Split(s) => {
                kinds.insert(s.assignment, "split".into());
            }
            Typed::Fraction(f) => {
                kinds.insert(f.members, "fraction".into());
            }
            Typed::Sweep(s) => {
                kinds.insert(s.spec, "spec".into());
            }
            Typed::Run(run) => {
                for (role, h) in &run.outputs {
                    kinds.insert(*h, role.split(':').next().unwrap_or("output").to_string());
                }
            }
            _ => {}
        }
    }
    kinds
}
