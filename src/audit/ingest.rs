//! Turning record objects back into index rows: what `ktrack reindex` does for a whole store
//! and `ktrack bundle import` for the objects of a bundle. Records are JSON objects with a
//! `ktrack` kind (cohort, split, fraction, run, sweep, reproduction); every row they imply is
//! inserted if missing, so ingesting twice changes nothing.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::context::Ktrack;
use crate::data::manifest;
use crate::id::Hash;
use crate::index::{self, cohorts, runs, splits};
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

/// A record object: its hash and parsed JSON.
pub type Record = (Hash, Value);

/// Reads an object's bytes: from the store, or from a bundle's staged objects.
pub type Reader<'a> = &'a (dyn Fn(&Hash) -> Result<Vec<u8>, store::Error> + Sync);

/// Records above this size are not records (they are read whole to parse).
const MAX_RECORD: u64 = 64 << 20;

/// Reads the objects that are ktrack records (JSON with a `ktrack` kind).
pub fn find_records(k: &Ktrack, hashes: &[Hash]) -> Result<Vec<Record>, Error> {
    use rayon::prelude::*;
    let found: Vec<Option<Record>> = hashes
        .par_iter()
        .map(|h| -> Result<Option<Record>, Error> {
            let size = k.store.size(h)?;
            if size > MAX_RECORD {
                return Ok(None);
            }
            let mut file = k.store.open_object(h)?;
            let mut head = [0u8; 2];
            use std::io::Read;
            if file.read_exact(&mut head).is_err() || &head != b"{\"" {
                return Ok(None);
            }
            Ok(parse_record(*h, &k.store.read(h)?))
        })
        .collect::<Result<_, _>>()?;
    Ok(found.into_iter().flatten().collect())
}

/// The record in `bytes`, if they are one (JSON with a `ktrack` kind).
pub fn parse_record(hash: Hash, bytes: &[u8]) -> Option<Record> {
    if bytes.len() as u64 > MAX_RECORD || !bytes.starts_with(b"{\"") {
        return None;
    }
    let v = serde_json::from_slice::<Value>(bytes).ok()?;
    v.get("ktrack")
        .and_then(Value::as_str)
        .is_some()
        .then_some((hash, v))
}

fn hash_field(rec: &Record, field: &str) -> Result<Hash, Error> {
    rec.1
        .pointer(field)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Record {
            hash: rec.0,
            message: format!("field `{field}` is missing or not a hash"),
        })
}

fn kind(v: &Value) -> &str {
    v.get("ktrack").and_then(Value::as_str).unwrap_or("")
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
    k.index.run(async {
        let mut tx = k.index.begin_write().await?;
        let out = write(&mut tx, records, &prepared, objects, &now).await?;
        tx.commit().await.map_err(index::Error::from)?;
        Ok(out)
    })
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

/// Reads what the records refer to and builds their rows.
pub fn prepare(read: Reader<'_>, records: &[Record], now: &str) -> Result<Prepared, Error> {
    let now = now.to_string();
    let by_kind =
        |want: &str| -> Vec<&Record> { records.iter().filter(|r| kind(&r.1) == want).collect() };
    let mut cohort_rows = Vec::new();
    for rec in by_kind("cohort") {
        let manifest_hash = hash_field(rec, "/manifest")?;
        let canonical =
            manifest::read_canonical(&read(&manifest_hash)?).map_err(|e| Error::Record {
                hash: rec.0,
                message: e.to_string(),
            })?;
        let patients: std::collections::BTreeSet<&str> = canonical
            .samples
            .iter()
            .map(|s| s.patient_id.as_str())
            .collect();
        cohort_rows.push(CohortRows {
            row: cohorts::CohortRow {
                hash: manifest_hash,
                name: rec.1["name"].as_str().unwrap_or("cohort").to_string(),
                record: rec.0,
                n_samples: canonical.samples.len() as i64,
                n_patients: patients.len() as i64,
                imported_at: now.clone(),
            },
            samples: canonical.samples,
        });
    }
    let mut split_rows = Vec::new();
    for rec in by_kind("split") {
        let assignment = hash_field(rec, "/assignment")?;
        let members = crate::data::split::read_assignment(&read(&assignment)?).map_err(|e| {
            Error::Record {
                hash: rec.0,
                message: e.to_string(),
            }
        })?;
        let p = &rec.1["params"];
        split_rows.push((
            splits::SplitRow {
                hash: hash_field(rec, "/id")?,
                cohort: hash_field(rec, "/params/cohort")?,
                assignment,
                record: rec.0,
                strategy: p["strategy"].as_str().unwrap_or_default().to_string(),
                train: p["train"].as_f64().unwrap_or(0.0),
                val: p["val"].as_f64().unwrap_or(0.0),
                test: p["test"].as_f64().unwrap_or(0.0),
                stratify: p["stratify"].as_str().map(String::from),
                seed: p["seed"].as_i64().unwrap_or(0),
                created_at: now.clone(),
            },
            members,
        ));
    }
    let mut fraction_rows = Vec::new();
    for rec in by_kind("fraction") {
        let members_hash = hash_field(rec, "/members")?;
        let members =
            crate::data::split::read_members(&read(&members_hash)?).map_err(|e| Error::Record {
                hash: rec.0,
                message: e.to_string(),
            })?;
        let p = &rec.1["params"];
        fraction_rows.push((
            splits::FractionRow {
                hash: hash_field(rec, "/id")?,
                split: hash_field(rec, "/params/split")?,
                fraction: p["fraction"].as_f64().unwrap_or(0.0),
                stratify: p["stratify"].as_str().unwrap_or_default().to_string(),
                seed: p["seed"].as_i64().unwrap_or(0),
                members: members_hash,
                record: rec.0,
                n_samples: members.len() as i64,
                n_patients: rec.1["patients"].as_i64().unwrap_or(0),
                created_at: now.clone(),
            },
            members,
        ));
    }

    Ok(Prepared {
        cohorts: cohort_rows,
        splits: split_rows,
        fractions: fraction_rows,
    })
}

/// Inserts the rows of prepared records inside the caller's write transaction.
pub async fn write(
    tx: &mut sqlx::SqliteConnection,
    records: &[Record],
    prepared: &Prepared,
    objects: &[(Hash, u64, String)],
    now: &str,
) -> Result<Ingested, Error> {
    let mut out = Ingested {
        objects: objects.len(),
        ..Ingested::default()
    };
    let (cohort_rows, split_rows, fraction_rows) =
        (&prepared.cohorts, &prepared.splits, &prepared.fractions);
    let now = now.to_string();
    {
        let tx = &mut *tx;
        let objs: Vec<(Hash, u64, &str)> = objects
            .iter()
            .map(|(h, s, kd)| (*h, *s, kd.as_str()))
            .collect();
        index::insert_objects(tx, &objs, &now).await?;
        for c in cohort_rows {
            if cohorts::insert(tx, &c.row).await? {
                cohorts::insert_samples(tx, &c.row.hash, &c.samples).await?;
                out.cohorts += 1;
            }
        }
        for (row, members) in split_rows {
            out.splits += usize::from(splits::insert_split(tx, row, members).await?);
        }
        for (row, members) in fraction_rows {
            out.fractions += usize::from(splits::insert_fraction(tx, row, members).await?);
        }
        // Runs: pretraining first (downstream runs depend on them).
        let mut run_recs: Vec<&Record> = records.iter().filter(|r| kind(&r.1) == "run").collect();
        run_recs.sort_by_key(|r| (r.1["kind"].as_str() != Some("pretrain"), r.0));
        for rec in run_recs {
            out.runs += usize::from(ingest_run(tx, rec, &now).await?);
        }
        for rec in records.iter().filter(|r| kind(&r.1) == "sweep") {
            let name = rec.1["name"].as_str().unwrap_or("sweep").to_string();
            let spec = hash_field(rec, "/spec")?;
            let mut ids = Vec::new();
            for id in rec.1["runs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let Ok(h) = id.parse::<Hash>() else { continue };
                if runs::get(tx, &h).await?.is_some() {
                    ids.push(h);
                }
            }
            runs::upsert_sweep(
                tx,
                &name,
                rec.1["spec_path"].as_str().unwrap_or(""),
                &spec,
                &ids,
                &now,
            )
            .await?;
            sqlx::query("UPDATE sweeps SET record = ?2 WHERE name = ?1")
                .bind(&name)
                .bind(rec.0.hex())
                .execute(&mut *tx)
                .await
                .map_err(index::Error::from)?;
            out.sweeps += 1;
        }
        for rec in records.iter().filter(|r| kind(&r.1) == "reproduction") {
            let run = hash_field(rec, "/run")?;
            if runs::get(tx, &run).await?.is_none() {
                continue;
            }
            let done = sqlx::query(
                "INSERT OR IGNORE INTO reproductions (record, run, verdict, max_diff, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(rec.0.hex())
            .bind(run.hex())
            .bind(rec.1["verdict"].as_str().unwrap_or("DIFFERENT"))
            .bind(rec.1["max_probability_diff"].as_f64())
            .bind(rec.1["created_at"].as_str().unwrap_or(&now))
            .execute(&mut *tx)
            .await
            .map_err(index::Error::from)?;
            out.reproductions += done.rows_affected() as usize;
        }
    }
    Ok(out)
}

/// Inserts one finished run from its record; false if it was already there.
async fn ingest_run(
    tx: &mut sqlx::SqliteConnection,
    rec: &Record,
    now: &str,
) -> Result<bool, Error> {
    let id = hash_field(rec, "/id")?;
    if let Some(row) = runs::get(tx, &id).await?
        && row.status == runs::Status::Done
    {
        return Ok(false);
    }
    let resolved: ResolvedRun =
        serde_json::from_value(rec.1["spec"].clone()).map_err(|e| Error::Record {
            hash: rec.0,
            message: format!("spec: {e}"),
        })?;
    let axes = rec.1["axes"].as_object().map(|a| runs::Axes {
        init: a["init"].as_str().unwrap_or_default().to_string(),
        task: a["task"].as_str().unwrap_or_default().to_string(),
        protocol: a["protocol"].as_str().unwrap_or_default().to_string(),
        fraction: a["fraction"].as_f64().unwrap_or(0.0),
        seed: a["seed"].as_i64().unwrap_or(0),
        arch: a["arch"].as_str().unwrap_or_default().to_string(),
    });
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
        if runs::get(tx, &d).await?.is_some() {
            present.push(d);
        }
    }
    runs::insert_planned(
        tx,
        &[runs::NewRun {
            id,
            kind: resolved.kind(),
            spec: resolved.to_json().to_string(),
            label: rec.1["label"].as_str().unwrap_or_default().to_string(),
            deps: present,
            inputs: crate::runner::inputs_of(&resolved),
            axes,
        }],
        now,
    )
    .await?;
    let outputs: Vec<(String, Hash)> = rec.1["outputs"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(role, h)| Some((role.clone(), h.as_str()?.parse().ok()?)))
        .collect();
    let metrics: Vec<(String, String, f64)> = rec.1["metrics"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(set, m)| {
            m.as_object()
                .into_iter()
                .flatten()
                .map(move |(name, v)| (set.clone(), name.clone(), v.as_f64().unwrap_or(f64::NAN)))
        })
        .collect();
    let env = &rec.1["environment"];
    runs::finish(
        tx,
        &id,
        &runs::Finished {
            record: rec.0,
            outputs: &outputs,
            metrics: &metrics,
            started_at: env["started_at"].as_str().unwrap_or(now),
            finished_at: env["finished_at"].as_str().unwrap_or(now),
            leaked_patients: runs::leaked_patients(&rec.1),
        },
    )
    .await?;
    if let Some(attempts) = rec.1["attempts"].as_i64() {
        sqlx::query("UPDATE runs SET attempts = ?2 WHERE id = ?1")
            .bind(id.hex())
            .bind(attempts)
            .execute(&mut *tx)
            .await
            .map_err(index::Error::from)?;
    }
    Ok(true)
}

/// Object kinds implied by records (for the objects table).
pub fn object_kinds(records: &[Record]) -> BTreeMap<Hash, String> {
    let mut kinds = BTreeMap::new();
    for (h, v) in records {
        kinds.insert(*h, "record".to_string());
        match kind(v) {
            "cohort" => {
                if let Some(m) = v["manifest"].as_str().and_then(|s| s.parse().ok()) {
                    kinds.insert(m, "manifest".into());
                }
            }
            "split" => {
                if let Some(a) = v["assignment"].as_str().and_then(|s| s.parse().ok()) {
                    kinds.insert(a, "split".into());
                }
            }
            "fraction" => {
                if let Some(m) = v["members"].as_str().and_then(|s| s.parse().ok()) {
                    kinds.insert(m, "fraction".into());
                }
            }
            "sweep" => {
                if let Some(s) = v["spec"].as_str().and_then(|s| s.parse().ok()) {
                    kinds.insert(s, "spec".into());
                }
            }
            "run" => {
                for (role, h) in v["outputs"].as_object().into_iter().flatten() {
                    if let Some(h) = h.as_str().and_then(|s| s.parse().ok()) {
                        kinds.insert(h, role.split(':').next().unwrap_or("output").to_string());
                    }
                }
            }
            _ => {}
        }
    }
    kinds
}
