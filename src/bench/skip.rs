//! `ktrack bench skip`: plan a sweep of N runs that are all finished (fake records inserted
//! directly) and time what `ktrack run` does with it — load and validate the spec, re-check
//! the data (stat cache), plan, look up every run and skip them all — beside a plain listing
//! of the same runs from the same index as the reference, on SQLite and (when given) on
//! PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::context::Ktrack;
use crate::index::runs;
use crate::progress::Quiet;
use crate::runner::{self, RunOptions, plan::PlanOptions};

#[derive(Clone, Debug, serde::Serialize)]
pub struct SkipReport {
    /// `SQLite` or `PostgreSQL`.
    pub backend: &'static str,
    pub runs: usize,
    pub seconds: f64,
    pub micros_per_run: f64,
    pub reference_count_seconds: f64,
    pub ratio_to_reference: f64,
}

/// The benchmark on SQLite and, with `postgres`, on PostgreSQL too.
pub fn run(runs_wanted: usize, postgres: Option<&str>) -> anyhow::Result<Vec<SkipReport>> {
    let mut out = Vec::new();
    for at in super::backends(postgres) {
        out.push(run_on(runs_wanted, at)?);
    }
    Ok(out)
}

fn run_on(runs_wanted: usize, at: Option<crate::index::Location>) -> anyhow::Result<SkipReport> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    // A tiny synthetic cohort and a spec whose grid has `runs_wanted` downstream runs.
    std::fs::create_dir_all(root.join("datasets"))?;
    std::fs::write(
        root.join("datasets/mini.toml"),
        "name = \"mini\"\nmanifest = \"mini/manifest.csv\"\nimage_root = \"mini\"\n[columns]\nsample_id = \"sample_id\"\npatient_id = \"patient_id\"\nside = \"side\"\nvisit = \"visit_month\"\nimage = \"image_path\"\nkl = \"kl\"\n[synth]\nkind = \"oai-like\"\npatients = 30\nimage_size = 32\nseed = 1\n",
    )?;
    let per_seed = 2 * 5;
    let seeds = runs_wanted.div_ceil(per_seed);
    let seed_list: Vec<String> = (0..seeds).map(|s| s.to_string()).collect();
    std::fs::write(
        root.join("sweep.toml"),
        format!(
            "name = \"bench\"\n[cohorts]\ntrain = \"datasets/mini.toml\"\n[split]\ntrain = 0.6\nval = 0.2\ntest = 0.2\n\
             [inits.random]\nkind = \"random\"\n[grid]\ninits = [\"random\"]\ntasks = [\"kl\"]\nprotocols = [\"linear\", \"finetune\"]\nseeds = [{}]\n\
             [train]\narch = \"resnet-tiny\"\nimage_size = 32\n",
            seed_list.join(", ")
        ),
    )?;
    let scratch = super::Scratch::new(&root.join("home"), at)?;
    let k = Arc::new(Ktrack::open_at(&root.join("home"), &scratch.0)?);
    let opts = RunOptions {
        spec: root.join("sweep.toml"),
        plan: PlanOptions::default(),
        jobs: 1,
        dry_run: false,
        stale_after: Duration::from_secs(120),
        retry_failed: true,
    };
    let interrupt = AtomicBool::new(false);
    // Plan once and mark every run finished.
    let (spec, plan) = runner::plan_sweep(&k, &opts, &Quiet, &interrupt)?;
    runner::record_plan(&k, &spec, &plan)?;
    let n = plan.runs.len();
    // Each run finished with one (shared) record object, as a real run's finish writes it.
    let record = k.store.put_bytes(b"{\"kind\": \"bench\"}")?;
    let now = k.clock.now();
    let mut tx = k.index.write()?;
    tx.objects()
        .insert(&record.hash, record.size, "record", &now)?;
    for r in &plan.runs {
        tx.runs().record_done(
            &r.id,
            &runs::Finished {
                record: record.hash,
                outputs: &[],
                metrics: &[],
                started_at: &now,
                finished_at: &now,
                leaked_patients: None,
            },
        )?;
    }
    tx.commit()?;

    let t = Instant::now();
    let report = runner::run_sweep(&k, &opts, &Quiet, &interrupt)?;
    let seconds = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.executed.is_empty() && report.before.done == n,
        "every run should have been skipped"
    );

    let t = Instant::now();
    let counted = k
        .index
        .read()?
        .runs()
        .list(Some("bench"))?
        .iter()
        .filter(|r| r.status == runs::Status::Done)
        .count();
    let reference = t.elapsed().as_secs_f64();
    anyhow::ensure!(counted == n);
    Ok(SkipReport {
        backend: super::backend_name(&scratch.0),
        runs: n,
        seconds,
        micros_per_run: seconds * 1e6 / n as f64,
        reference_count_seconds: reference,
        ratio_to_reference: seconds / reference.max(1e-9),
    })
}
