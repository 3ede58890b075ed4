//! `ktrack bench compare`: fill an index with N finished downstream runs (synthetic metrics and
//! small prediction files), then time `compare` without bootstrap over everything and with
//! bootstrap on one single-seed table; the reference is a plain SQLite scan of the same rows.

use std::sync::Arc;
use std::time::Instant;

use crate::context::Ktrack;
use crate::id::Hash;
use crate::index::runs;
use crate::predictions::{Predictions, TaskKind};
use crate::report::compare::{self, CompareOptions};
use crate::rng;

#[derive(Clone, Debug, serde::Serialize)]
pub struct CompareBenchReport {
    /// `SQLite` or `PostgreSQL`.
    pub backend: &'static str,
    pub runs: usize,
    pub fill_seconds: f64,
    pub reference_scan_seconds: f64,
    pub compare_seconds: f64,
    pub compare_tables: usize,
    pub bootstrap_seconds: f64,
    pub bootstrap_cells: usize,
    pub bootstrap_replicates: usize,
}

const INITS: [&str; 4] = ["imagenet", "random", "image-ssl", "image-text-ssl"];
const FRACTIONS: [f64; 5] = [0.01, 0.1, 0.25, 0.5, 1.0];
const EVALS: [&str; 2] = ["test", "most"];

fn predictions(kind: TaskKind, quality: f64, seed: u64) -> Predictions {
    let mut r = rng::stream("bench-compare", &[], seed);
    let n = 400;
    let mut p = Predictions {
        sample_id: (0..n).map(|i| format!("s{i:04}")).collect(),
        patient_id: (0..n).map(|i| format!("p{:04}", i / 2)).collect(),
        label: Vec::with_capacity(n),
        probs: Vec::with_capacity(n),
        kind,
    };
    for _ in 0..n {
        match kind {
            TaskKind::Binary => {
                let y = u8::from(rng::unit(&mut r) < 0.25);
                let s = 1.0
                    / (1.0 + (-(quality * (f64::from(y) - 0.5) * 4.0 + rng::normal(&mut r))).exp());
                p.label.push(y);
                p.probs.push(vec![s]);
            }
            TaskKind::Kl => {
                let y = crate::rng::below(&mut r, 5) as u8;
                let guess = (f64::from(y) + rng::normal(&mut r) * (1.5 - quality))
                    .round()
                    .clamp(0.0, 4.0) as usize;
                let mut probs = vec![0.05; 5];
                probs[guess] = 0.8;
                p.label.push(y);
                p.probs.push(probs);
            }
        }
    }
    p
}

/// The benchmark on SQLite and, with `postgres`, on PostgreSQL too.
pub fn run(
    n_runs: usize,
    replicates: usize,
    postgres: Option<&str>,
) -> anyhow::Result<Vec<CompareBenchReport>> {
    let mut out = Vec::new();
    for at in super::backends(postgres) {
        out.push(run_on(n_runs, replicates, at)?);
    }
    Ok(out)
}

fn run_on(
    n_runs: usize,
    replicates: usize,
    at: Option<crate::index::Location>,
) -> anyhow::Result<CompareBenchReport> {
    let dir = tempfile::tempdir()?;
    let scratch = super::Scratch::new(&dir.path().join("home"), at)?;
    let k = Arc::new(Ktrack::open_at(&dir.path().join("home"), &scratch.0)?);
    let t = Instant::now();
    fill(&k, n_runs)?;
    let fill_seconds = t.elapsed().as_secs_f64();

    // Reference: a plain scan of the rows compare reads.
    let t = Instant::now();
    let scanned = k.index.read()?.points().count()?;
    let reference_scan_seconds = t.elapsed().as_secs_f64();
    anyhow::ensure!(scanned > 0);

    let t = Instant::now();
    let tables = compare::compare(&k, &CompareOptions::default())?;
    let compare_seconds = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let one = compare::compare(
        &k,
        &CompareOptions {
            task: Some("progression_4y".into()),
            protocol: Some("linear".into()),
            run_seed: Some(0),
            bootstrap: replicates,
            ..CompareOptions::default()
        },
    )?;
    let bootstrap_seconds = t.elapsed().as_secs_f64();
    let cells = one.iter().map(|t| t.cells.len()).sum();
    Ok(CompareBenchReport {
        backend: super::backend_name(&scratch.0),
        runs: n_runs,
        fill_seconds,
        reference_scan_seconds,
        compare_seconds,
        compare_tables: tables.len(),
        bootstrap_seconds,
        bootstrap_cells: cells,
        bootstrap_replicates: replicates,
    })
}

/// Fills the home with `n_runs` finished downstream runs of a study grid, each with small
/// predictions objects and their headline metrics.
fn fill(k: &Ktrack, n_runs: usize) -> anyhow::Result<()> {
    // One small predictions object per (task, init, fraction, eval).
    let tasks = [("kl", TaskKind::Kl), ("progression_4y", TaskKind::Binary)];
    let mut objects = std::collections::HashMap::new();
    let batch = k.store.batch();
    for (ti, (task, kind)) in tasks.iter().enumerate() {
        for (ii, init) in INITS.iter().enumerate() {
            for (fi, f) in FRACTIONS.iter().enumerate() {
                for (ei, e) in EVALS.iter().enumerate() {
                    let quality = 0.5 + 0.1 * ii as f64 + 0.2 * f;
                    let p =
                        predictions(*kind, quality, (ti * 1000 + ii * 100 + fi * 10 + ei) as u64);
                    let put = batch.put_bytes(&p.to_parquet())?;
                    let m = p.metrics();
                    let headline = if *kind == TaskKind::Kl {
                        m["qwk"]
                    } else {
                        m["auroc"]
                    };
                    objects.insert((*task, *init, fi, *e), (put.hash, put.size, headline));
                }
            }
        }
    }
    batch.commit()?;
    let per_seed = tasks.len() * INITS.len() * 2 * FRACTIONS.len();
    let seeds = n_runs.div_ceil(per_seed);
    let now = k.clock.now();
    // Every run finished as a real run's finish writes it, with one shared record object.
    let record = k.store.put_bytes(b"{\"kind\": \"bench\"}")?;
    let mut objs: Vec<(Hash, u64, &str)> = objects
        .values()
        .map(|(h, s, _)| (*h, *s, "predictions"))
        .collect();
    objs.push((record.hash, record.size, "record"));
    let mut planned = Vec::new();
    let mut finished = Vec::new();
    for seed in 0..seeds {
        for (task, _) in &tasks {
            for init in INITS {
                for protocol in ["linear", "finetune"] {
                    for (fi, f) in FRACTIONS.iter().enumerate() {
                        let id =
                            Hash::of(format!("{seed}/{task}/{init}/{protocol}/{f}").as_bytes());
                        planned.push(runs::NewRun {
                            id,
                            kind: "downstream",
                            spec: "{}".into(),
                            label: "bench".into(),
                            deps: vec![],
                            inputs: vec![],
                            axes: Some(runs::Axes {
                                init: init.to_string(),
                                task: task.to_string(),
                                protocol: protocol.to_string(),
                                fraction: *f,
                                seed: seed as i64,
                                arch: "resnet50".into(),
                            }),
                        });
                        // Seeds differ a little.
                        let jitter = ((seed as i64 * 7919 + fi as i64 * 31) % 100) as f64 / 5000.0;
                        let metric = if *task == "kl" { "qwk" } else { "auroc" };
                        let mut metrics = Vec::new();
                        let mut outputs = Vec::new();
                        for e in EVALS {
                            let (h, _, v) = objects[&(*task, init, fi, e)];
                            metrics.push((e.to_string(), metric.to_string(), v + jitter));
                            outputs.push((format!("predictions:{e}"), h));
                        }
                        finished.push((id, outputs, metrics));
                    }
                }
            }
        }
    }
    planned.truncate(n_runs);
    finished.truncate(n_runs);
    let mut tx = k.index.write()?;
    tx.objects().insert_many(&objs, &now)?;
    tx.runs().insert_planned(&planned, &now)?;
    for (id, outputs, metrics) in &finished {
        tx.runs().record_done(
            id,
            &runs::Finished {
                record: record.hash,
                outputs,
                metrics,
                started_at: &now,
                finished_at: &now,
                leaked_patients: None,
            },
        )?;
    }
    tx.commit()?;
    Ok(())
}
