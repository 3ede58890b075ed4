//! Executing one claimed run: gather its inputs by hash from the store, train in the run's
//! scratch directory (`runs/<id>/`, which also holds its resume checkpoints and log), then put
//! every output into the store and write the run record (an object) and its index rows in one
//! transaction. Nothing here decides which run to execute.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde_json::json;

use super::resolved::{DownstreamRun, InitRef, PretrainRun, ResolvedRun, Source};
use crate::context::Ktrack;
use crate::data::manifest;
use crate::data::{Label, Partition, Sample};
use crate::env;
use crate::id::Hash;
use crate::index::{self, runs};
use crate::predictions::Predictions;
use crate::progress::Task;
use crate::record::{RunAxes, RunRecord, Tolerance};
use crate::store::Store;
use crate::table;
use crate::train::cache::{FeatureCache, PixelCache};
use crate::train::data::{Example, ImageSource};
use crate::train::downstream::{self, DownstreamData, Init};
use crate::train::pretrain::{self, PretrainData};
use crate::train::{self as training};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("input {what} {hash} is not in the index or the store")]
    Missing { what: &'static str, hash: Hash },
    #[error(
        "leakage: {patients} patient(s) of the {sets} were in the pretraining data of run {pretrain} (e.g. `{example}`)"
    )]
    Leakage {
        pretrain: Hash,
        patients: usize,
        sets: String,
        example: String,
    },
    #[error("pretraining run {0} has not finished")]
    DependencyNotDone(Hash),
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Train(#[from] training::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
}

impl Error {
    pub fn is_interrupt(&self) -> bool {
        matches!(self, Error::Train(training::Error::Interrupted { .. }))
    }
}

impl crate::hint::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Leakage { .. } => Some(
                "pretrain on the train partition (`data = [\"train\", …]`), or set `allow_leakage = true` on the init to accept and record it"
                    .into(),
            ),
            Error::Missing { .. } => Some("run `ktrack verify`; a bundle import may be missing objects".into()),
            Error::Index(e) => e.hint(),
            _ => None,
        }
    }
}

/// Images read from the store, their pixels cached in a pixel cache (the home's, for runs).
pub struct StoreImages {
    pub store: Store,
    pub cache: Option<PixelCache>,
    pub features: Option<FeatureCache>,
}

impl ImageSource for StoreImages {
    fn bytes(&self, image: &Hash) -> Result<Vec<u8>, String> {
        self.store.read(image).map_err(|e| e.to_string())
    }

    fn pixel_cache(&self) -> Option<&PixelCache> {
        self.cache.as_ref()
    }

    fn feature_cache(&self) -> Option<&FeatureCache> {
        self.features.as_ref()
    }
}

/// What a finished run produced.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    pub run: Hash,
    pub record: Hash,
    pub outputs: Vec<(String, Hash)>,
    /// (evaluation set, metric, value)
    pub metrics: Vec<(String, String, f64)>,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// A log of the run's progress (kept in the store) that also forwards to a task.
struct Logged<'a> {
    inner: &'a dyn Task,
    file: Mutex<std::fs::File>,
}

impl Logged<'_> {
    fn line(&self, text: &str) {
        if let Ok(mut f) = self.file.lock() {
            let _ = writeln!(f, "{text}");
        }
    }
}

impl Task for Logged<'_> {
    fn start(&self, total: usize, done: usize) {
        self.line(&format!("start: {total} steps, {done} done"));
        self.inner.start(total, done);
    }

    fn step(&self) {
        self.inner.step();
    }

    fn epoch(&self, epoch: usize, loss: f64, metric: f64) {
        self.line(&format!(
            "epoch {epoch}: train loss {loss:.6}, validation metric {metric:.6}"
        ));
        self.inner.epoch(epoch, loss, metric);
    }
}

/// The samples of a cohort version, from its manifest object.
pub fn cohort_samples(store: &Store, cohort: &Hash) -> Result<Vec<Sample>, Error> {
    let bytes = store.read(cohort).map_err(|_| Error::Missing {
        what: "cohort manifest",
        hash: *cohort,
    })?;
    Ok(manifest::read_canonical(&bytes)
        .map_err(|e| Error::Data(e.to_string()))?
        .samples)
}

/// sample id → partition, from the split's assignment object.
pub fn assignment(k: &Ktrack, split: &Hash) -> Result<BTreeMap<String, Partition>, Error> {
    let row = k.index.read()?.splits().get(split)?.ok_or(Error::Missing {
        what: "split",
        hash: *split,
    })?;
    let bytes = k.store.read(&row.assignment)?;
    Ok(crate::data::split::read_assignment(&bytes)
        .map_err(|e| Error::Data(e.to_string()))?
        .into_iter()
        .collect())
}

fn fraction_members(k: &Ktrack, fraction: &Hash) -> Result<BTreeSet<String>, Error> {
    let row = k
        .index
        .read()?
        .fractions()
        .get(fraction)?
        .ok_or(Error::Missing {
            what: "label fraction",
            hash: *fraction,
        })?;
    let bytes = k.store.read(&row.members)?;
    Ok(crate::data::split::read_members(&bytes)
        .map_err(|e| Error::Data(e.to_string()))?
        .into_iter()
        .collect())
}

fn example(s: &Sample, label: u8) -> Example {
    Example {
        sample_id: s.sample_id.clone(),
        patient_id: s.patient_id.clone(),
        side: s.side,
        image: s.image,
        label,
    }
}

fn labelled(samples: &[Sample], task: Label, keep: impl Fn(&Sample) -> bool) -> Vec<Example> {
    samples
        .iter()
        .filter(|s| keep(s))
        .filter_map(|s| s.label(task).map(|l| example(s, l)))
        .collect()
}

/// The (cohort, patient) pairs a pretraining run saw, from its `seen` output.
fn seen_patients(k: &Ktrack, pretrain: &Hash) -> Result<BTreeSet<(String, String)>, Error> {
    let seen = output_of(k, pretrain, "seen")?;
    let t = table::read(&k.store.read(&seen)?).map_err(|e| Error::Data(e.to_string()))?;
    let cohorts = table::strings(&t.batch, "cohort").map_err(|e| Error::Data(e.to_string()))?;
    let patients =
        table::strings(&t.batch, "patient_id").map_err(|e| Error::Data(e.to_string()))?;
    Ok((0..t.batch.num_rows())
        .map(|i| (cohorts.value(i).to_string(), patients.value(i).to_string()))
        .collect())
}

fn output_of(k: &Ktrack, run: &Hash, role: &str) -> Result<Hash, Error> {
    k.index
        .read()?
        .runs()
        .output(run, role)?
        .ok_or(Error::DependencyNotDone(*run))
}

/// Links a store object into the run directory under a name the trainer understands.
fn link_object(store: &Store, hash: &Hash, dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let src = store.path_of(hash);
    if !src.is_file() {
        return Err(Error::Missing {
            what: "object",
            hash: *hash,
        });
    }
    let dst = dir.join(name);
    let _ = std::fs::remove_file(&dst);
    // A relative target would resolve against the link's folder, not the working directory.
    let src = std::path::absolute(&src)
        .map_err(|e| Error::Data(format!("cannot resolve `{}`: {e}", src.display())))?;
    std::os::unix::fs::symlink(&src, &dst)
        .map_err(|e| Error::Data(format!("cannot link `{}`: {e}", dst.display())))?;
    Ok(dst)
}

/// What training a run produced, before anything is stored.
pub struct Produced {
    /// (role, file in the run directory)
    pub outputs: Vec<(String, PathBuf)>,
    /// (evaluation set, metric, value)
    pub metrics: Vec<(String, String, f64)>,
    pub details: serde_json::Value,
    pub images_per_second: f64,
    pub started_at: String,
    pub finished_at: String,
    pub seconds: f64,
    pub log: PathBuf,
}

/// The differences a rerun of a run may show and still count as a reproduction: none on the
/// deterministic CPU backends; small ones on CUDA (non-deterministic reductions).
pub fn tolerance(resolved: &ResolvedRun) -> (f64, f64) {
    let (device, precision) = match resolved {
        ResolvedRun::Downstream(d) => (d.config.device, d.config.precision),
        ResolvedRun::Pretrain(p) => (p.config.device, p.config.precision),
    };
    match precision {
        // bfloat16 keeps 8 bits of mantissa: another machine's kernels (another CPU's or
        // GPU's) round differently, also when a rerun on one machine is bit-identical.
        crate::train::Precision::Bf16 => (1e-2, 2e-2),
        crate::train::Precision::Fp32 if device.deterministic() => (0.0, 0.0),
        crate::train::Precision::Fp32 => (1e-3, 5e-3),
    }
}

/// Trains a run in `run_dir` (resuming from a checkpoint there) without storing anything.
pub fn produce(
    k: &Ktrack,
    id: &Hash,
    resolved: &ResolvedRun,
    run_dir: &Path,
    observer: &dyn Task,
    interrupt: &AtomicBool,
) -> Result<Produced, Error> {
    std::fs::create_dir_all(run_dir)
        .map_err(|e| Error::Data(format!("cannot create `{}`: {e}", run_dir.display())))?;
    let log_path = run_dir.join("log.txt");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::Data(format!("cannot open `{}`: {e}", log_path.display())))?;
    let logged = Logged {
        inner: observer,
        file: Mutex::new(file),
    };
    let started_at = k.clock.now();
    logged.line(&format!(
        "run {id:#} started at {started_at} on {}",
        env::hostname()
    ));
    let t0 = Instant::now();
    let result = match resolved {
        ResolvedRun::Downstream(d) => run_downstream(k, id, d, run_dir, &logged, interrupt),
        ResolvedRun::Pretrain(p) => run_pretrain(k, p, run_dir, &logged, interrupt),
    };
    let (outputs, metrics, details, images_per_second) = match result {
        Ok(r) => r,
        Err(e) => {
            logged.line(&format!("stopped: {e}"));
            return Err(e);
        }
    };
    let finished_at = k.clock.now();
    let seconds = t0.elapsed().as_secs_f64();
    logged.line(&format!("finished at {finished_at} in {seconds:.1}s"));
    Ok(Produced {
        outputs,
        metrics,
        details,
        images_per_second,
        started_at,
        finished_at,
        seconds,
        log: log_path,
    })
}

/// The label, attempts and grid coordinates the index holds for a run (for its record).
fn label_and_axes(k: &Ktrack, id: &Hash) -> Result<(String, i64, Option<RunAxes>), Error> {
    let mut c = k.index.read()?;
    let (label, attempts) = c
        .runs()
        .get(id)?
        .map(|r| (r.label, r.attempts))
        .unwrap_or_default();
    let axes = c.runs().axes(id)?;
    Ok((label, attempts, axes))
}

/// Executes a run (already claimed) in `run_dir` and records it. Returns its outcome.
pub fn execute(
    k: &Ktrack,
    id: &Hash,
    fence: &runs::Fence,
    resolved: &ResolvedRun,
    run_dir: &Path,
    observer: &dyn Task,
    interrupt: &AtomicBool,
) -> Result<Outcome, Error> {
    let produced = produce(k, id, resolved, run_dir, observer, interrupt)?;
    let (device, seed) = match resolved {
        ResolvedRun::Downstream(d) => (d.config.device, d.config.seed),
        ResolvedRun::Pretrain(p) => (p.config.device, p.config.seed),
    };
    let environment = env::capture(
        crate::train::backend::describe(device),
        seed,
        &produced.started_at,
        &produced.finished_at,
    );
    let (label, attempts, axes) = label_and_axes(k, id)?;
    let (prob_tol, metric_tol) = tolerance(resolved);

    // Outputs, the log and the record go into the store together.
    let batch = k.store.batch();
    let mut stored: Vec<(String, Hash, u64)> = Vec::new();
    for (role, path) in &produced.outputs {
        let put = batch.put_file(path)?;
        stored.push((role.clone(), put.hash, put.size));
    }
    let log = batch.put_file(&produced.log)?;
    stored.push(("log".into(), log.hash, log.size));
    let metrics = produced.metrics.clone();
    let mut metrics_by_set: BTreeMap<String, BTreeMap<String, Option<f64>>> = BTreeMap::new();
    for (set, name, v) in &metrics {
        metrics_by_set
            .entry(set.clone())
            .or_default()
            .insert(name.clone(), v.is_finite().then_some(*v));
    }
    let run_record = RunRecord {
        format: crate::record::FORMAT,
        id: *id,
        kind: resolved.kind().to_string(),
        label,
        axes,
        spec: resolved.to_json(),
        outputs: stored.iter().map(|(r, h, _)| (r.clone(), *h)).collect(),
        metrics: metrics_by_set,
        environment,
        details: produced.details.clone(),
        tolerance: Tolerance {
            probability: prob_tol,
            metric: metric_tol,
        },
        seconds: produced.seconds,
        attempts: Some(attempts),
    };
    let leaked_patients = run_record.leaked_patients();
    let record = crate::record::Record::Run(Box::new(run_record));
    let record_put = batch.put_bytes(&record.to_bytes())?;
    batch.commit()?;

    let outputs: Vec<(String, Hash)> = stored.iter().map(|(r, h, _)| (r.clone(), *h)).collect();
    let now = k.clock.now();
    let objects: Vec<(Hash, u64, &str)> = stored
        .iter()
        .map(|(r, h, s)| (*h, *s, r.split(':').next().unwrap_or("output")))
        .chain([(record_put.hash, record_put.size, "record")])
        .collect();
    let mut tx = k.index.write()?;
    tx.objects().insert_many(&objects, &now)?;
    tx.runs().finish(
        id,
        fence,
        &runs::Finished {
            record: record_put.hash,
            outputs: &outputs,
            metrics: &metrics,
            started_at: &produced.started_at,
            finished_at: &produced.finished_at,
            leaked_patients,
        },
    )?;
    tx.commit()?;
    let _ = std::fs::remove_dir_all(run_dir);
    Ok(Outcome {
        run: *id,
        record: record_put.hash,
        outputs,
        metrics,
        seconds: produced.seconds,
        images_per_second: produced.images_per_second,
    })
}

type Trained = (
    Vec<(String, PathBuf)>,
    Vec<(String, String, f64)>,
    serde_json::Value,
    f64,
);

fn run_downstream(
    k: &Ktrack,
    id: &Hash,
    d: &DownstreamRun,
    run_dir: &Path,
    observer: &dyn Task,
    interrupt: &AtomicBool,
) -> Result<Trained, Error> {
    let task = d.config.task;
    let samples = cohort_samples(&k.store, &d.cohort)?;
    let parts = assignment(k, &d.split)?;
    let members = fraction_members(k, &d.fraction)?;
    let parts_ref = &parts;
    let in_part = |p: Partition| move |s: &Sample| parts_ref.get(&s.sample_id) == Some(&p);
    let train = labelled(&samples, task, |s| members.contains(&s.sample_id));
    let val = labelled(&samples, task, in_part(Partition::Val));
    let test = labelled(&samples, task, in_part(Partition::Test));
    let mut evals = vec![
        ("val".to_string(), val.clone()),
        ("test".to_string(), test.clone()),
    ];
    let mut external_samples = Vec::new();
    for e in &d.external {
        let ext = cohort_samples(&k.store, &e.cohort)?;
        evals.push((e.name.clone(), labelled(&ext, task, |_| true)));
        external_samples.push((e.cohort, ext));
    }

    let mut leakage = json!(null);
    let init = match &d.init {
        InitRef::Random => Init::Random,
        InitRef::Torchvision { weights, format } => Init::Torchvision(link_object(
            &k.store,
            weights,
            run_dir,
            &format!("init.{format}"),
        )?),
        InitRef::Pretrain { run, allow_leakage } => {
            // Leakage guard: no test or external patient may have been seen in pretraining.
            let seen = seen_patients(k, run)?;
            let mut leaked: BTreeSet<(String, String)> = BTreeSet::new();
            let cohort = d.cohort.hex();
            for s in samples
                .iter()
                .filter(|s| parts.get(&s.sample_id) == Some(&Partition::Test))
            {
                let key = (cohort.clone(), s.patient_id.clone());
                if seen.contains(&key) {
                    leaked.insert(key);
                }
            }
            for (c, ext) in &external_samples {
                for s in ext {
                    let key = (c.hex(), s.patient_id.clone());
                    if seen.contains(&key) {
                        leaked.insert(key);
                    }
                }
            }
            if !leaked.is_empty() && !allow_leakage {
                return Err(Error::Leakage {
                    pretrain: *run,
                    patients: leaked.len(),
                    sets: "test partition or external cohorts".into(),
                    example: leaked
                        .iter()
                        .next()
                        .map(|(_, p)| p.clone())
                        .unwrap_or_default(),
                });
            }
            leakage = json!({ "pretrain": run.hex(), "patients": leaked.len(), "allowed": allow_leakage });
            let encoder = output_of(k, run, "encoder")?;
            Init::Encoder(link_object(
                &k.store,
                &encoder,
                run_dir,
                "init.safetensors",
            )?)
        }
    };
    let data = DownstreamData {
        train,
        val,
        evals,
        images: k.images(),
    };
    let report = downstream::run(&d.config, &init, &data, run_dir, observer, interrupt)?;
    let mut outputs = vec![("checkpoint".to_string(), report.checkpoint.clone())];
    let mut metrics = Vec::new();
    for (set, path) in &report.predictions {
        let bytes = std::fs::read(path).map_err(|e| Error::Data(e.to_string()))?;
        let preds = Predictions::from_parquet(&bytes).map_err(|e| Error::Data(e.to_string()))?;
        for (m, v) in preds.metrics() {
            metrics.push((set.clone(), m.to_string(), v));
        }
        outputs.push((format!("predictions:{set}"), path.clone()));
    }
    outputs.push(("curves".into(), run_dir.join("curves.json")));
    let _ = id;
    if report.probe.is_some() {
        outputs.push((
            "probe_checkpoint".into(),
            run_dir.join("probe/best.safetensors"),
        ));
    }
    let extra = downstream_details(&report, data.train.len(), leakage);
    Ok((outputs, metrics, extra, report.train_images_per_second))
}

/// What a downstream run's record keeps beside its outputs and metrics.
fn downstream_details(
    report: &downstream::DownstreamReport,
    train_examples: usize,
    leakage: serde_json::Value,
) -> serde_json::Value {
    let mut extra = json!({
        "best_epoch": report.best_epoch,
        "best_val_metric": report.best_val_metric,
        "epochs_run": report.epochs_run,
        "cached_features": report.cached_features,
        "resumed_from_epoch": report.resumed_from_epoch,
        "train_examples": train_examples,
        "leakage": leakage,
    });
    // LP-FT: the probe phase's numbers (its epochs come first in the curves).
    if let Some(p) = &report.probe {
        extra["probe"] = json!({
            "best_epoch": p.best_epoch,
            "best_val_metric": p.best_val_metric,
            "epochs_run": p.epochs_run,
            "cached_features": p.cached_features,
        });
    }
    extra
}

fn run_pretrain(
    k: &Ktrack,
    p: &PretrainRun,
    run_dir: &Path,
    observer: &dyn Task,
    interrupt: &AtomicBool,
) -> Result<Trained, Error> {
    let text = p.config.method.uses_text();
    let mut examples = Vec::new();
    let mut reports = Vec::new();
    let mut seen: Vec<(String, String, String)> = Vec::new();
    for Source { cohort, split } in &p.sources {
        let samples = cohort_samples(&k.store, cohort)?;
        let parts = match split {
            Some(s) => Some(assignment(k, s)?),
            None => None,
        };
        for s in &samples {
            if let Some(parts) = &parts
                && parts.get(&s.sample_id) != Some(&Partition::Train)
            {
                continue;
            }
            if text && s.report.is_none() {
                continue;
            }
            // A supervised pretraining learns its label: samples without one are not used.
            let label = match p.config.label {
                Some(l) => match s.label(l) {
                    Some(v) => v,
                    None => continue,
                },
                None => 0,
            };
            examples.push(example(s, label));
            reports.push(s.report.clone().unwrap_or_default());
            seen.push((cohort.hex(), s.sample_id.clone(), s.patient_id.clone()));
        }
    }
    let tokenizer = match &p.tokenizer {
        Some(h) => Some(link_object(&k.store, h, run_dir, "user-tokenizer.json")?),
        None => None,
    };
    // A BERT folder, as stored: its files linked under their own names.
    let text_model = match &p.text_model {
        Some(files) => {
            let dir = run_dir.join("text-model");
            std::fs::create_dir_all(&dir).map_err(|e| Error::Data(e.to_string()))?;
            for (name, h) in files {
                link_object(&k.store, h, &dir, name)?;
            }
            Some(dir)
        }
        None => None,
    };
    let data = PretrainData {
        examples,
        reports: text.then_some(reports),
        images: k.images(),
        tokenizer,
        text_model,
    };
    let report = pretrain::run(&p.config, &data, run_dir, observer, interrupt)?;
    // Exactly which samples the run saw, for the leakage guard of downstream runs.
    let seen_path = run_dir.join("seen.parquet");
    let col = |f: &dyn Fn(&(String, String, String)) -> String| -> arrow::array::ArrayRef {
        std::sync::Arc::new(arrow::array::StringArray::from(
            seen.iter().map(f).collect::<Vec<_>>(),
        ))
    };
    let batch = table::batch(vec![
        ("cohort", col(&|s| s.0.clone()), false),
        ("sample_id", col(&|s| s.1.clone()), false),
        ("patient_id", col(&|s| s.2.clone()), false),
    ])
    .map_err(|e| Error::Data(e.to_string()))?;
    let bytes = table::write(
        &batch,
        &BTreeMap::from([("ktrack.schema".to_string(), "ktrack.seen/1".to_string())]),
    )
    .map_err(|e| Error::Data(e.to_string()))?;
    crate::train::checkpoint::write_atomic(&seen_path, &bytes)?;
    let mut outputs = vec![
        ("encoder".to_string(), report.encoder.clone()),
        ("curves".to_string(), run_dir.join("curves.json")),
        ("seen".to_string(), seen_path),
    ];
    if let Some(t) = &report.text_encoder {
        outputs.push(("text_encoder".into(), t.clone()));
    }
    if let Some(t) = &report.tokenizer {
        outputs.push(("tokenizer".into(), t.clone()));
    }
    let final_loss = report.curves.last().map_or(f64::NAN, |c| c.loss);
    let metrics = vec![("train".to_string(), "loss".to_string(), final_loss)];
    let extra = json!({
        "images": data.examples.len(),
        "epochs_run": report.curves.len(),
        "resumed_from_epoch": report.resumed_from_epoch,
        "images_per_second": report.images_per_second,
    });
    Ok((outputs, metrics, extra, report.images_per_second))
}
