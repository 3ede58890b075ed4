//! One downstream run: an initialised encoder, a task (KL grade or a binary outcome) and a
//! protocol — linear probe (encoder frozen, BatchNorm in eval mode, only the head trains;
//! features cached once when augmentation is off), full fine-tune, or LP-FT (a linear probe,
//! then a full fine-tune that starts from the probe's best encoder and head; Kumar et al.
//! 2022). AdamW with warmup and cosine decay; early stopping on the validation metric (QWK for
//! KL, AUROC for binary); the best checkpoint is kept and evaluated on every evaluation set.
//!
//! Outputs in the run directory: `best.safetensors` (the model), `predictions-<set>.parquet`,
//! `curves.json` (for LP-FT both phases, each epoch tagged with its phase and numbered on
//! from the probe's); `checkpoints/` holds the resumable state while the run is in progress.
//! An LP-FT run's probe phase lives in `probe/` (its own checkpoints, its best model, and
//! `report.json` once it is done, so a resumed run never trains the probe twice).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::module::Module;
use burn::nn::loss::{BinaryCrossEntropyLossConfig, CrossEntropyLossConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, softmax};
use serde::{Deserialize, Serialize};

use super::cache::{CacheDir, FeatureCache};
use super::data::{
    Augment, BaseImages, Example, ImageSource, Loader, Pass, Preprocess, epoch_order,
};
use super::epochs::{Epochs, Plan, Step, Trainer, Validation};
pub use super::epochs::{HeadInit, Select};
use super::{DeviceKind, Error, Precision, checkpoint};
use crate::data::Label;
use crate::metrics::{binary, kl};
use crate::model::{Arch, Classifier, ResNet, import};
use crate::predictions::{Predictions, TaskKind};
use crate::progress::Task;

/// How the encoder is adapted to the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Frozen encoder, trained linear head.
    Linear,
    /// Every layer trains.
    Finetune,
    /// A linear probe, then a full fine-tune from the probe's encoder and head.
    Lpft,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Linear => "linear",
            Protocol::Finetune => "finetune",
            Protocol::Lpft => "lpft",
        }
    }
}

/// The training settings of one protocol (resolved from a spec), or of LP-FT's probe phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub augment: Augment,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_epochs: f64,
    pub patience: Option<usize>,
    /// Absent when the metric selects, so the identities of those runs are what they were.
    #[serde(default, skip_serializing_if = "Select::is_metric")]
    pub select: Select,
    /// How the head starts; absent when random, so the identities of those runs are what
    /// they were.
    #[serde(default, skip_serializing_if = "HeadInit::is_random")]
    pub head_init: HeadInit,
}

/// Everything that defines a downstream run's training (all of it enters the run identity).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DownstreamConfig {
    pub arch: Arch,
    pub task: Label,
    pub protocol: Protocol,
    pub preprocess: Preprocess,
    pub augment: Augment,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_epochs: f64,
    /// Stop after this many epochs without a better validation score.
    pub patience: Option<usize>,
    /// What selects the best epoch: the validation metric or the validation loss; absent when
    /// the metric, so the identities of those runs are what they were.
    #[serde(default, skip_serializing_if = "Select::is_metric")]
    pub select: Select,
    /// How the linear head starts; absent when random, so the identities of those runs are
    /// what they were.
    #[serde(default, skip_serializing_if = "HeadInit::is_random")]
    pub head_init: HeadInit,
    pub seed: u64,
    pub device: DeviceKind,
    /// CPU threads (parallel reductions depend on it, so it is recorded).
    pub threads: usize,
    /// bf16 compute for convolutions and matrix products (LibTorch); absent when fp32, so the
    /// identities of fp32 runs are what they were.
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
    /// LP-FT's probe phase; absent for the other protocols, so their identities are what
    /// they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Settings>,
}

impl DownstreamConfig {
    pub fn kind(&self) -> TaskKind {
        match self.task {
            Label::Kl => TaskKind::Kl,
            _ => TaskKind::Binary,
        }
    }

    fn outputs(&self) -> usize {
        match self.kind() {
            TaskKind::Kl => kl::CLASSES,
            TaskKind::Binary => 1,
        }
    }

    /// The validation metric that selects the best epoch.
    pub fn selection_metric(&self) -> &'static str {
        match self.kind() {
            TaskKind::Kl => "qwk",
            TaskKind::Binary => "auroc",
        }
    }
}

/// Where the encoder's weights come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Init {
    Random,
    /// One of ktrack's encoder checkpoints (burnpack), e.g. from SSL pretraining.
    Encoder(PathBuf),
    /// A torchvision state dict (`.pth` or `.safetensors`).
    Torchvision(PathBuf),
}

/// The examples of a run. `evals` are the sets predictions are written for (val, test,
/// external cohorts), by name.
pub struct DownstreamData {
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    pub evals: Vec<(String, Vec<Example>)>,
    pub images: Arc<dyn ImageSource>,
}

pub use super::epochs::EpochCurve;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DownstreamReport {
    pub best_epoch: usize,
    pub best_val_metric: f64,
    pub epochs_run: usize,
    pub curves: Vec<EpochCurve>,
    pub checkpoint: PathBuf,
    /// (set name, predictions file)
    pub predictions: Vec<(String, PathBuf)>,
    pub train_images_per_second: f64,
    /// The checkpointed epoch the run resumed from, if it did.
    pub resumed_from_epoch: Option<usize>,
    pub cached_features: bool,
    /// LP-FT: the probe phase's report (its best model is `probe/best.safetensors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Box<DownstreamReport>>,
}

const BEST: &str = "best.safetensors";

/// Where a training's model starts.
enum Start<'a> {
    /// A seeded head on an initialised encoder.
    Init(&'a Init),
    /// A whole classifier (LP-FT's fine-tune phase: the probe's best model).
    Model(PathBuf),
}

/// Runs (or resumes) a downstream training in `run_dir`.
pub fn run(
    cfg: &DownstreamConfig,
    init: &Init,
    data: &DownstreamData,
    run_dir: &Path,
    progress: &dyn Task,
    interrupt: &AtomicBool,
) -> Result<DownstreamReport, Error> {
    if cfg.protocol == Protocol::Lpft {
        return lpft(cfg, init, data, run_dir, progress, interrupt);
    }
    train(
        cfg,
        Start::Init(init),
        data,
        run_dir,
        &[],
        progress,
        interrupt,
    )
}

/// LP-FT: the probe phase in `probe/` (skipped once `probe/report.json` says it is done), then
/// the fine-tune from the probe's best model; the report's curves hold both phases.
fn lpft(
    cfg: &DownstreamConfig,
    init: &Init,
    data: &DownstreamData,
    run_dir: &Path,
    progress: &dyn Task,
    interrupt: &AtomicBool,
) -> Result<DownstreamReport, Error> {
    let probe = cfg.probe.clone().ok_or_else(|| {
        Error::Data("an lpft run needs its probe phase's settings (`probe`)".into())
    })?;
    let probe_cfg = DownstreamConfig {
        protocol: Protocol::Linear,
        augment: probe.augment,
        epochs: probe.epochs,
        batch_size: probe.batch_size,
        lr: probe.lr,
        weight_decay: probe.weight_decay,
        warmup_epochs: probe.warmup_epochs,
        patience: probe.patience,
        select: probe.select,
        head_init: probe.head_init,
        probe: None,
        ..cfg.clone()
    };
    let probe_dir = run_dir.join("probe");
    let done = probe_dir.join("report.json");
    let probe_report: DownstreamReport = match std::fs::read(&done) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|e| Error::file("read", &done)(e.to_string()))?
        }
        Err(_) => {
            // The probe phase predicts nothing: only the fine-tuned model is evaluated.
            let probe_data = DownstreamData {
                train: data.train.clone(),
                val: data.val.clone(),
                evals: Vec::new(),
                images: data.images.clone(),
            };
            let r = train(
                &probe_cfg,
                Start::Init(init),
                &probe_data,
                &probe_dir,
                &[],
                progress,
                interrupt,
            )?;
            checkpoint::write_atomic(&done, &serde_json::to_vec_pretty(&r).expect("serialize"))?;
            r
        }
    };
    let phase = |c: &EpochCurve| EpochCurve {
        phase: Some(Protocol::Linear),
        ..c.clone()
    };
    let before: Vec<EpochCurve> = probe_report.curves.iter().map(phase).collect();
    let start = Start::Model(probe_dir.join(BEST));
    let mut report = train(cfg, start, data, run_dir, &before, progress, interrupt)?;
    report.best_epoch += before.len();
    report.curves = before
        .into_iter()
        .chain(report.curves.into_iter().map(|c| EpochCurve {
            epoch: c.epoch + probe_report.epochs_run,
            phase: Some(Protocol::Finetune),
            ..c
        }))
        .collect();
    report.probe = Some(Box::new(probe_report));
    Ok(report)
}

/// One training from `start`; `before`: the curves of earlier phases, written ahead of this
/// training's in `curves.json` (numbered on from them).
fn train(
    cfg: &DownstreamConfig,
    start: Start,
    data: &DownstreamData,
    run_dir: &Path,
    before: &[EpochCurve],
    progress: &dyn Task,
    interrupt: &AtomicBool,
) -> Result<DownstreamReport, Error> {
    if data.train.is_empty() {
        return Err(Error::EmptySet {
            set: "train".into(),
        });
    }
    if data.val.is_empty() {
        return Err(Error::EmptySet { set: "val".into() });
    }
    super::backend::pin_threads(cfg.threads);
    cfg.precision.check(cfg.device)?;
    let _precision = cfg.precision.enter();
    let base = cfg.device.device()?;
    std::fs::create_dir_all(run_dir).map_err(|e| Error::file("create", run_dir)(e.to_string()))?;
    let mut epochs = Epochs::open(&run_dir.join("checkpoints"))?;
    // An interrupt while images load (before training, or before the final evaluation) is an
    // interrupt like any other: the run resumes from its last checkpoint.
    let load = |set: &[Example], epoch: usize| -> Result<Arc<BaseImages>, Error> {
        BaseImages::load(set, data.images.clone(), &cfg.preprocess, interrupt)
            .map(Arc::new)
            .map_err(|e| {
                if interrupt.load(Ordering::Relaxed) {
                    Error::Interrupted { epoch }
                } else {
                    Error::Data(e)
                }
            })
    };
    let device = base.clone().autodiff();
    let model = start_model(cfg, start, &device)?;
    // A probe without augmentation trains on frozen features: the encoder's, from the
    // source's feature cache when another probe of the same encoder computed them.
    let frozen = if cfg.protocol == Protocol::Linear && !cfg.augment.enabled {
        let encoder = model.encoder.valid();
        let weights = import::weights_hash(&encoder).map_err(Error::Data)?;
        Some((encoder, weights))
    } else {
        None
    };
    let features = |set: &[Example], epoch: usize| -> Result<Features, Error> {
        let (encoder, weights) = frozen.as_ref().expect("features of a frozen encoder");
        set_features(encoder, weights, set, &|s| load(s, epoch), cfg, data, &base)
    };
    let epoch = epochs.epoch();
    let inputs = match frozen {
        Some(_) => Inputs::Features {
            train: features(&data.train, epoch)?,
            val: features(&data.val, epoch)?,
        },
        None => Inputs::Images {
            train: load(&data.train, epoch)?,
            val: load(&data.val, epoch)?,
        },
    };
    let mut trainer = Downstream::new(cfg, model, device, data, inputs, &run_dir.join(BEST));
    let plan = trainer.plan();
    epochs.run(&mut trainer, &plan, progress, interrupt)?;

    // Evaluate the best checkpoint on every evaluation set.
    let best_path = run_dir.join(BEST);
    let best = import::load_checkpoint(
        Classifier::new(cfg.arch, cfg.outputs(), cfg.seed, &base),
        &best_path,
    )?
    .valid();
    let mut predictions = Vec::new();
    for (name, set) in data.evals.iter().filter(|(_, set)| !set.is_empty()) {
        let probs = match frozen {
            Some(_) => head_probs(&best.head, &features(set, epochs.epoch())?, cfg),
            None => probabilities(&best, &load(set, epochs.epoch())?, cfg, &base)?,
        };
        let preds = Predictions {
            sample_id: set.iter().map(|e| e.sample_id.clone()).collect(),
            patient_id: set.iter().map(|e| e.patient_id.clone()).collect(),
            label: set.iter().map(|e| e.label).collect(),
            probs,
            kind: cfg.kind(),
        };
        let path = run_dir.join(format!("predictions-{name}.parquet"));
        checkpoint::write_atomic(&path, &preds.to_parquet())?;
        predictions.push((name.clone(), path));
    }
    let resumed_from_epoch = epochs.resumed_from_epoch();
    let state = epochs.state();
    let curves: Vec<EpochCurve> = before
        .iter()
        .cloned()
        .chain(state.curves.iter().map(|c| EpochCurve {
            epoch: c.epoch + before.len(),
            phase: (!before.is_empty()).then_some(Protocol::Finetune),
            ..c.clone()
        }))
        .collect();
    checkpoint::write_atomic(
        &run_dir.join("curves.json"),
        &serde_json::to_vec_pretty(&curves).expect("curves serialize"),
    )?;
    let state = epochs.finish();
    Ok(DownstreamReport {
        best_epoch: state.best_epoch,
        best_val_metric: metric_of(&state.curves, state.best_epoch),
        epochs_run: state.curves.len(),
        train_images_per_second: state.images_per_second(),
        curves: state.curves,
        checkpoint: best_path,
        predictions,
        resumed_from_epoch,
        cached_features: frozen.is_some(),
        probe: None,
    })
}

/// Encoder features of a set: values row by row, and the row length.
type Features = (Vec<f32>, usize);

/// A downstream training as the epoch loop drives it.
struct Downstream<'a> {
    cfg: &'a DownstreamConfig,
    device: Device,
    base: Device,
    model: Classifier,
    optim: burn::optim::ModuleOptimizer,
    inputs: Inputs,
    train_labels: Arc<Vec<u8>>,
    val_set: &'a [Example],
    ce: burn::nn::loss::CrossEntropyLoss,
    bce: burn::nn::loss::BinaryCrossEntropyLoss,
    /// The model as last validated (what `keep_best` saves).
    validated: Option<Classifier>,
    best: PathBuf,
}

/// What a training reads: frozen features (a probe without augmentation), or images.
enum Inputs {
    Features {
        train: Features,
        val: Features,
    },
    Images {
        train: Arc<BaseImages>,
        val: Arc<BaseImages>,
    },
}

impl Inputs {
    fn train_len(&self) -> usize {
        match self {
            Inputs::Features { train, .. } => train.0.len() / train.1.max(1),
            Inputs::Images { train, .. } => train.len(),
        }
    }
}

/// The model a training starts from: a seeded head on an initialised encoder, or a whole
/// classifier; a probe's encoder frozen.
fn start_model(cfg: &DownstreamConfig, start: Start, device: &Device) -> Result<Classifier, Error> {
    let mut model = Classifier::new(cfg.arch, cfg.outputs(), cfg.seed, device);
    if cfg.head_init == HeadInit::Zeros {
        model.head = burn::nn::LinearConfig::new(cfg.arch.feature_dim(), cfg.outputs())
            .with_initializer(burn::nn::Initializer::Zeros)
            .init(device);
    }
    match start {
        Start::Init(init) => model.encoder = load_init(model.encoder, init)?,
        Start::Model(path) => model = import::load_checkpoint(model, &path)?,
    }
    if cfg.protocol == Protocol::Linear {
        model.encoder = model.encoder.freeze();
    }
    Ok(model)
}

/// A downstream batch: rows of the cached features, or augmented images.
enum Batch {
    Rows(Vec<usize>),
    Images(Result<super::data::Batch, String>),
}

impl<'a> Downstream<'a> {
    fn new(
        cfg: &'a DownstreamConfig,
        model: Classifier,
        device: Device,
        data: &'a DownstreamData,
        inputs: Inputs,
        best: &Path,
    ) -> Downstream<'a> {
        Downstream {
            cfg,
            optim: super::optim::adamw(cfg.weight_decay as f32),
            train_labels: Arc::new(data.train.iter().map(|e| e.label).collect()),
            ce: CrossEntropyLossConfig::new().init(&device),
            bce: BinaryCrossEntropyLossConfig::new()
                .with_logits(true)
                .init(&device),
            base: cfg.device.device().expect("the device opened before"),
            device,
            model,
            inputs,
            val_set: &data.val,
            validated: None,
            best: best.to_path_buf(),
        }
    }

    fn plan(&self) -> Plan {
        let (n, b) = (self.inputs.train_len(), self.cfg.batch_size);
        let per_epoch = if matches!(self.inputs, Inputs::Features { .. }) {
            n.div_ceil(b)
        } else {
            n / b.max(1) + usize::from(n % b >= 2)
        };
        Plan {
            epochs: self.cfg.epochs,
            batches_per_epoch: per_epoch,
            lr: self.cfg.lr,
            warmup_steps: (self.cfg.warmup_epochs * per_epoch as f64).round() as usize,
            patience: self.cfg.patience,
            select: Some(self.cfg.select),
        }
    }

    fn loss(&self, logits: Tensor<2>, labels: &[i64]) -> Tensor<1> {
        let n = labels.len();
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [n]), &self.device);
        match self.cfg.kind() {
            TaskKind::Kl => self.ce.forward(logits, y),
            TaskKind::Binary => self.bce.forward(logits.reshape([n]), y),
        }
    }
}

impl Trainer for Downstream<'_> {
    type Batch = Batch;

    fn batches(
        &mut self,
        epoch: usize,
        skip: usize,
    ) -> Result<Box<dyn Iterator<Item = Batch>>, Error> {
        let cfg = self.cfg;
        let order = epoch_order(self.inputs.train_len(), cfg.seed, epoch, true);
        let train = match &self.inputs {
            Inputs::Images { train, .. } => train.clone(),
            Inputs::Features { .. } => {
                let chunks: Vec<Vec<usize>> = order
                    .chunks(cfg.batch_size)
                    .skip(skip)
                    .map(<[usize]>::to_vec)
                    .collect();
                return Ok(Box::new(chunks.into_iter().map(Batch::Rows)));
            }
        };
        let pass = Pass {
            order,
            batch_size: cfg.batch_size,
            augment: Some(cfg.augment.clone()),
            normalize: cfg.preprocess.normalize,
            seed: cfg.seed,
            epoch,
            skip,
            prefetch: 2,
            min_batch: 2,
            views: 1,
        };
        let loader = Loader::spawn(train, self.train_labels.clone(), pass);
        Ok(Box::new(loader.map(Batch::Images)))
    }

    fn step(&mut self, batch: Batch, lr: f64) -> Result<Step, Error> {
        let (loss, n) = match batch {
            // Head-only training on cached features.
            Batch::Rows(rows) => {
                let Inputs::Features { train, .. } = &self.inputs else {
                    unreachable!("rows come from features")
                };
                let x = gather_rows(train, &rows, &self.device);
                let labels: Vec<i64> = rows
                    .iter()
                    .map(|&r| i64::from(self.train_labels[r]))
                    .collect();
                let loss = self.loss(self.model.head.forward(x), &labels);
                let value = loss.clone().detach();
                let grads = GradientsParams::from_grads(loss.backward(), &self.model.head);
                self.model.head = self.optim.step(lr, self.model.head.clone(), grads);
                (value, labels.len())
            }
            Batch::Images(batch) => {
                let batch = batch.map_err(Error::Data)?;
                let n = batch.len();
                let x = Tensor::<4>::from_data(
                    TensorData::new(batch.pixels, [n, 3, batch.size, batch.size]),
                    &self.device,
                );
                let loss = self.loss(self.model.forward(x), &batch.labels);
                let value = loss.clone().detach();
                let grads = GradientsParams::from_grads(loss.backward(), &self.model);
                self.model = self.optim.step(lr, self.model.clone(), grads);
                (value, n)
            }
        };
        Ok(Step {
            loss,
            weight: n as f64,
            images: n,
        })
    }

    fn validate(&mut self) -> Result<Validation, Error> {
        let valid = self.model.valid();
        let probs = match &self.inputs {
            Inputs::Features { val, .. } => head_probs(&valid.head, val, self.cfg),
            Inputs::Images { val, .. } => probabilities(&valid, val, self.cfg, &self.base)?,
        };
        self.validated = Some(valid);
        Ok(validation(self.cfg, self.val_set, &probs))
    }

    fn keep_best(&mut self) -> Result<(), Error> {
        let valid = self.validated.as_ref().expect("keep_best follows validate");
        Ok(import::save_checkpoint(valid, &self.best)?)
    }

    /// Model, optimizer; `valid()` syncs BatchNorm running statistics.
    fn save(&self, folder: &Path) -> Result<(), Error> {
        save_model(&self.model.valid(), &folder.join("model.bpk"))?;
        let path = folder.join("optim.bpk");
        self.optim
            .save(&path)
            .map_err(|e| Error::file("save optimizer state", &path)(e.to_string()))
    }

    fn load(&mut self, folder: &Path) -> Result<(), Error> {
        let model_path = folder.join("model.bpk");
        self.model = self
            .model
            .clone()
            .try_load_file(&model_path)
            .map_err(|e| Error::file("load checkpoint", &model_path)(e.to_string()))?;
        if self.cfg.protocol == Protocol::Linear {
            self.model.encoder = self.model.encoder.clone().freeze();
        }
        let optim_path = folder.join("optim.bpk");
        if optim_path.is_file() {
            self.optim = std::mem::replace(&mut self.optim, super::optim::adamw(0.0))
                .load(&optim_path)
                .map_err(|e| Error::file("load optimizer state", &optim_path)(e.to_string()))?;
        }
        Ok(())
    }
}

fn load_init(encoder: ResNet, init: &Init) -> Result<ResNet, Error> {
    Ok(match init {
        Init::Random => encoder,
        Init::Encoder(path) => import::encoder_checkpoint(encoder, path)?,
        Init::Torchvision(path) => import::torchvision(encoder, path)?.0,
    })
}

/// Saves a (valid) module in burn's format (resume checkpoints; not hashed).
pub fn save_model<M: Module>(model: &M, path: &Path) -> Result<(), Error> {
    let tmp = path.with_extension("bpk.tmp");
    model
        .clone()
        .save_file(&tmp)
        .map_err(|e| Error::file("save", path)(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::file("save", path)(e.to_string()))
}

/// Evaluation batches (natural order, no augmentation) as tensors on `device`.
fn eval_batches(images: &Arc<BaseImages>, cfg: &DownstreamConfig) -> Loader {
    let labels = Arc::new(vec![0u8; images.len()]);
    Loader::spawn(
        images.clone(),
        labels,
        Pass {
            order: (0..images.len()).collect(),
            batch_size: cfg.batch_size.max(1),
            augment: None,
            normalize: cfg.preprocess.normalize,
            seed: cfg.seed,
            epoch: 0,
            skip: 0,
            prefetch: 2,
            min_batch: 1,
            views: 1,
        },
    )
}

/// Decodes a set's images (the source's pixel cache when it has one).
type LoadImages<'a> = dyn Fn(&[Example]) -> Result<Arc<BaseImages>, Error> + 'a;

/// The frozen features of `set` from `encoder` (whose weights hash to `weights`): read from the
/// source's feature cache when it holds them, else computed from the images (`load`) and
/// written to it. The key holds everything the values depend on, so they are the same floats
/// either way.
fn set_features(
    encoder: &ResNet,
    weights: &crate::id::Hash,
    set: &[Example],
    load: &LoadImages,
    cfg: &DownstreamConfig,
    data: &DownstreamData,
    device: &Device,
) -> Result<Features, Error> {
    let dim = cfg.arch.feature_dim();
    let Some(cache) = data.images.feature_cache() else {
        return features(encoder, &load(set)?, cfg, device);
    };
    let images: Vec<_> = set.iter().map(|e| (e.image, e.side)).collect();
    let how = serde_json::json!({
        "ktrack": env!("CARGO_PKG_VERSION"),
        "arch": cfg.arch,
        "preprocess": cfg.preprocess,
        "batch_size": cfg.batch_size,
        "device": cfg.device,
        "threads": cfg.threads,
        "precision": cfg.precision,
    });
    let key = FeatureCache::key(weights, &images, &how);
    let failed = |e: std::io::Error| {
        Error::Data(format!(
            "could not use the feature cache `{}`: {e}",
            cache.dir().display()
        ))
    };
    if let Some(values) = cache.read(&key, set.len(), dim).map_err(failed)? {
        return Ok((values, dim));
    }
    let computed = features(encoder, &load(set)?, cfg, device)?;
    cache.write(&key, dim, &computed.0).map_err(failed)?;
    Ok(computed)
}

/// Frozen-encoder features of every image: `[n, feature_dim]` as a flat row-major matrix.
fn features(
    encoder: &ResNet,
    images: &Arc<BaseImages>,
    cfg: &DownstreamConfig,
    device: &Device,
) -> Result<(Vec<f32>, usize), Error> {
    let dim = cfg.arch.feature_dim();
    let mut out = Vec::with_capacity(images.len() * dim);
    for batch in eval_batches(images, cfg) {
        let batch = batch.map_err(Error::Data)?;
        let n = batch.len();
        let x = Tensor::<4>::from_data(
            TensorData::new(batch.pixels, [n, 3, batch.size, batch.size]),
            device,
        );
        let f = encoder
            .forward(x)
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Data(format!("{e:?}")))?;
        out.extend(f);
    }
    Ok((out, dim))
}

fn gather_rows(feats: &(Vec<f32>, usize), rows: &[usize], device: &Device) -> Tensor<2> {
    let (data, dim) = feats;
    let mut v = Vec::with_capacity(rows.len() * dim);
    for &r in rows {
        v.extend_from_slice(&data[r * dim..(r + 1) * dim]);
    }
    Tensor::<2>::from_data(TensorData::new(v, [rows.len(), *dim]), device)
}

fn to_probs(logits: Tensor<2>, kind: TaskKind) -> Vec<Vec<f64>> {
    let [n, k] = logits.dims();
    let p = match kind {
        TaskKind::Kl => softmax(logits, 1),
        TaskKind::Binary => sigmoid(logits),
    };
    let flat = p.into_data().try_to_vec::<f32>().unwrap_or_default();
    (0..n)
        .map(|i| {
            flat[i * k..(i + 1) * k]
                .iter()
                .map(|&v| f64::from(v))
                .collect()
        })
        .collect()
}

fn head_probs(
    head: &burn::nn::Linear,
    feats: &(Vec<f32>, usize),
    cfg: &DownstreamConfig,
) -> Vec<Vec<f64>> {
    let device = head.weight.val().device();
    let n = feats.0.len() / feats.1;
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(cfg.batch_size.max(1) * 8) {
        out.extend(to_probs(
            head.forward(gather_rows(feats, chunk, &device)),
            cfg.kind(),
        ));
    }
    out
}

/// Class probabilities (KL: 5 per case) or positive-class probability (binary: 1 per case).
fn probabilities(
    model: &Classifier,
    images: &Arc<BaseImages>,
    cfg: &DownstreamConfig,
    device: &Device,
) -> Result<Vec<Vec<f64>>, Error> {
    let mut out = Vec::with_capacity(images.len());
    for batch in eval_batches(images, cfg) {
        let batch = batch.map_err(Error::Data)?;
        let n = batch.len();
        let x = Tensor::<4>::from_data(
            TensorData::new(batch.pixels, [n, 3, batch.size, batch.size]),
            device,
        );
        out.extend(to_probs(model.forward(x), cfg.kind()));
    }
    Ok(out)
}

/// The validation metric of `epoch` (what selected it may have been the loss).
fn metric_of(curves: &[EpochCurve], epoch: usize) -> f64 {
    curves
        .iter()
        .find(|c| c.epoch == epoch)
        .map_or(f64::NAN, |c| c.val_metric)
}

/// The validation metric (QWK, AUROC) and the mean cross-entropy of the probabilities
/// (scikit-learn's `log_loss`, probabilities clipped to [ε, 1 − ε]).
fn validation(cfg: &DownstreamConfig, set: &[Example], probs: &[Vec<f64>]) -> Validation {
    let labels: Vec<u8> = set.iter().map(|e| e.label).collect();
    let metric = match cfg.kind() {
        TaskKind::Kl => {
            let pred: Vec<u8> = probs.iter().map(|p| kl::argmax(p)).collect();
            kl::qwk(&labels, &pred)
        }
        TaskKind::Binary => {
            let s: Vec<f64> = probs.iter().map(|p| p[0]).collect();
            binary::auroc(&labels, &s)
        }
    };
    Validation {
        metric,
        loss: log_loss(cfg.kind(), &labels, probs),
    }
}

fn log_loss(kind: TaskKind, labels: &[u8], probs: &[Vec<f64>]) -> f64 {
    if labels.is_empty() {
        return f64::NAN;
    }
    let clip = |p: f64| p.clamp(f64::EPSILON, 1.0 - f64::EPSILON);
    let sum: f64 = labels
        .iter()
        .zip(probs)
        .map(|(&y, p)| match kind {
            TaskKind::Kl => -clip(p[usize::from(y)]).ln(),
            TaskKind::Binary if y == 1 => -clip(p[0]).ln(),
            TaskKind::Binary => -(1.0 - clip(p[0])).ln(),
        })
        .sum();
    sum / labels.len() as f64
}

#[cfg(test)]
mod tests;
