//! `ktrack show RUN`: a run's lineage — cohort version → split → label fraction → pretraining
//! run → init → this run → outputs — with hashes, the resolved spec and the environment.
//! Also the object set a bundle needs to reproduce a run elsewhere.

use std::collections::BTreeSet;

use crate::context::Ktrack;
use crate::id::Hash;
use crate::index::reproductions::ReproductionRow;
use crate::index::{self, cohorts, runs, splits};
use crate::record::{Record, RunRecord};
use crate::runner::resolved::{InitRef, ResolvedRun};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Index(#[from] index::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("run {0} is not in the index")]
    UnknownRun(Hash),
    #[error("run {0} has not finished (status {1}); only finished runs have a record")]
    NotDone(Hash, &'static str),
    #[error("the record of run {0} is malformed: {1}")]
    Record(Hash, String),
}

/// A run's lineage.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Lineage {
    pub run: runs::RunRow,
    pub record: RunRecord,
    pub cohort: Option<cohorts::CohortRow>,
    pub split: Option<splits::SplitRow>,
    pub fraction: Option<splits::FractionRow>,
    pub sources: Vec<(cohorts::CohortRow, Option<splits::SplitRow>)>,
    pub external: Vec<(String, Option<cohorts::CohortRow>)>,
    /// The pretraining run this run's encoder came from.
    pub pretrain: Option<Box<Lineage>>,
    pub weights: Option<Hash>,
    pub outputs: Vec<(String, Hash)>,
    /// (verdict, record, created_at)
    pub reproductions: Vec<ReproductionRow>,
}

/// The record of a finished run, parsed.
pub fn record(k: &Ktrack, id: &Hash) -> Result<(runs::RunRow, RunRecord, ResolvedRun), Error> {
    let row = k
        .index
        .read()?
        .runs()
        .get(id)?
        .ok_or(Error::UnknownRun(*id))?;
    let rec_hash = row.record.ok_or(Error::NotDone(*id, row.status.name()))?;
    let value = match Record::parse(rec_hash, &k.store.read(&rec_hash)?) {
        Ok(Some(Record::Run(r))) => *r,
        Ok(_) => {
            return Err(Error::Record(
                *id,
                format!("object {rec_hash} is not a run record"),
            ));
        }
        Err(e) => return Err(Error::Record(*id, e.message)),
    };
    let resolved: ResolvedRun = serde_json::from_value(value.spec.clone())
        .map_err(|e| Error::Record(*id, e.to_string()))?;
    Ok((row, value, resolved))
}

pub fn lineage(k: &Ktrack, id: &Hash) -> Result<Lineage, Error> {
    let (row, value, resolved) = record(k, id)?;
    let outputs: Vec<(String, Hash)> = value.outputs.iter().map(|(r, h)| (r.clone(), *h)).collect();
    let reproductions = k.index.read()?.reproductions().of_run(id)?;
    let mut l = Lineage {
        run: row,
        record: value,
        cohort: None,
        split: None,
        fraction: None,
        sources: Vec::new(),
        external: Vec::new(),
        pretrain: None,
        weights: None,
        outputs,
        reproductions,
    };
    let (cohort_of, split_of) = (
        |h: Hash| k.index.read()?.cohorts().get(&h),
        |h: Hash| k.index.read()?.splits().get(&h),
    );
    match &resolved {
        ResolvedRun::Downstream(d) => {
            l.cohort = cohort_of(d.cohort)?;
            l.split = split_of(d.split)?;
            l.fraction = k.index.read()?.fractions().get(&d.fraction)?;
            for e in &d.external {
                l.external.push((e.name.clone(), cohort_of(e.cohort)?));
            }
            match &d.init {
                InitRef::Pretrain { run, .. } => l.pretrain = Some(Box::new(lineage(k, run)?)),
                InitRef::Torchvision { weights, .. } => l.weights = Some(*weights),
                InitRef::Random => {}
            }
        }
        ResolvedRun::Pretrain(p) => {
            for s in &p.sources {
                if let Some(c) = cohort_of(s.cohort)? {
                    let split = match s.split {
                        Some(sp) => split_of(sp)?,
                        None => None,
                    };
                    l.sources.push((c, split));
                }
            }
        }
    }
    Ok(l)
}

/// Every object needed to reproduce a run elsewhere: its record and outputs, the records,
/// manifests and images of its cohorts, its split and fraction tables, its weights, and the
/// same for its pretraining run (recursively).
pub fn bundle_objects(k: &Ktrack, id: &Hash) -> Result<BTreeSet<Hash>, Error> {
    let l = lineage(k, id)?;
    let mut out = BTreeSet::new();
    collect(k, &l, &mut out)?;
    Ok(out)
}

fn collect(k: &Ktrack, l: &Lineage, out: &mut BTreeSet<Hash>) -> Result<(), Error> {
    if let Some(r) = l.run.record {
        out.insert(r);
    }
    out.extend(l.outputs.iter().map(|(_, h)| *h));
    let mut cohorts_needed: Vec<&cohorts::CohortRow> = Vec::new();
    cohorts_needed.extend(l.cohort.iter());
    cohorts_needed.extend(l.external.iter().filter_map(|(_, c)| c.as_ref()));
    cohorts_needed.extend(l.sources.iter().map(|(c, _)| c));
    for c in cohorts_needed {
        out.insert(c.hash);
        out.insert(c.record);
        let images = k.index.read()?.cohorts().samples(&c.hash)?;
        out.extend(images.iter().map(|s| s.image));
    }
    let mut split_rows: Vec<&splits::SplitRow> = l.split.iter().collect();
    split_rows.extend(l.sources.iter().filter_map(|(_, s)| s.as_ref()));
    for s in split_rows {
        out.insert(s.assignment);
        out.insert(s.record);
    }
    if let Some(f) = &l.fraction {
        out.insert(f.members);
        out.insert(f.record);
    }
    if let Some(w) = l.weights {
        out.insert(w);
    }
    if let Some(tok) = l.record.spec["tokenizer"]
        .as_str()
        .and_then(|s| s.parse().ok())
    {
        out.insert(tok);
    }
    if let Some(p) = &l.pretrain {
        collect(k, p, out)?;
    }
    Ok(())
}

/// The lineage as an indented tree.
pub fn render(l: &Lineage) -> String {
    let mut out = String::new();
    tree(l, "", &mut out);
    out
}

fn tree(l: &Lineage, pad: &str, out: &mut String) {
    let r = &l.run;
    out.push_str(&format!("{pad}run {:#}\n", r.id));
    out.push_str(&format!(
        "{pad}  {} ({}), {} at {}\n",
        r.label,
        r.kind,
        r.status.name(),
        r.finished_at.as_deref().unwrap_or("?")
    ));
    if let Some(c) = &l.cohort {
        out.push_str(&format!(
            "{pad}├── cohort {:#} `{}` ({} samples, {} patients)\n",
            c.hash, c.name, c.n_samples, c.n_patients
        ));
    }
    if let Some(s) = &l.split {
        out.push_str(&format!(
            "{pad}│   └── split {:#} ({}/{}/{} by {}, seed {}; assignment {})\n",
            s.hash,
            s.train,
            s.val,
            s.test,
            s.stratify.as_deref().unwrap_or("none"),
            s.seed,
            s.assignment
        ));
    }
    if let Some(f) = &l.fraction {
        out.push_str(&format!(
            "{pad}│       └── fraction {:#} ({} by {}, seed {}; {} patients, {} samples)\n",
            f.hash,
            crate::output::pct(f.fraction),
            f.stratify,
            f.seed,
            f.n_patients,
            f.n_samples
        ));
    }
    for (c, s) in &l.sources {
        let part = s
            .as_ref()
            .map(|s| format!(", train partition of split {}", s.hash))
            .unwrap_or_default();
        out.push_str(&format!(
            "{pad}├── source cohort {:#} `{}`{part}\n",
            c.hash, c.name
        ));
    }
    for (name, c) in &l.external {
        match c {
            Some(c) => out.push_str(&format!(
                "{pad}├── external `{name}`: cohort {:#} ({} samples)\n",
                c.hash, c.n_samples
            )),
            None => out.push_str(&format!("{pad}├── external `{name}`: (not in the index)\n")),
        }
    }
    if let Some(w) = l.weights {
        out.push_str(&format!("{pad}├── init: torchvision weights {w:#}\n"));
    }
    if let Some(p) = &l.pretrain {
        out.push_str(&format!("{pad}├── init: encoder of pretraining run\n"));
        tree(p, &format!("{pad}│   "), out);
    }
    if l.weights.is_none() && l.pretrain.is_none() && r.kind == "downstream" {
        out.push_str(&format!("{pad}├── init: random (seeded)\n"));
    }
    out.push_str(&format!("{pad}├── outputs\n"));
    for (role, h) in &l.outputs {
        out.push_str(&format!("{pad}│   ├── {role:<24} {h:#}\n"));
    }
    if !l.record.metrics.is_empty() {
        out.push_str(&format!("{pad}├── metrics\n"));
        for (set, vals) in &l.record.metrics {
            let line: Vec<String> = vals
                .iter()
                .map(|(k, v)| format!("{k} {}", v.map_or("n/a".into(), |x| format!("{x:.4}"))))
                .collect();
            out.push_str(&format!("{pad}│   ├── {set}: {}\n", line.join(", ")));
        }
    }
    let e = &l.record.environment;
    out.push_str(&format!(
        "{pad}├── environment: ktrack {} (commit {}{}), {}, {} on `{}` ({} threads), host {}, {}\n",
        e.ktrack_version,
        e.git_commit.chars().take(12).collect::<String>(),
        if e.git_dirty { ", dirty" } else { "" },
        e.rustc,
        e.backend.device,
        e.backend.device_name,
        e.backend.threads,
        e.host,
        e.os,
    ));
    for r in &l.reproductions {
        out.push_str(&format!(
            "{pad}├── reproduced {}: {} (record {})\n",
            r.created_at,
            r.verdict,
            &r.record.hex()[..12]
        ));
    }
    out.push_str(&format!(
        "{pad}└── record {}\n",
        r.record.map(|h| h.hex()).unwrap_or_default()
    ));
}
