//! One downstream run: an initialised encoder, a task (KL grade or a binary outcome) and a
//! protocol — linear probe (encoder frozen, BatchNorm in eval mode, only the head trains;
//! features cached once when augmentation is off) or full fine-tune. AdamW with warmup and
//! cosine decay; early stopping on the validation metric (QWK for KL, AUROC for binary); the
//! best checkpoint is kept and evaluated on every evaluation set.
//!
//! Outputs in the run directory: `best.safetensors` (the model), `predictions-<set>.parquet`,
//! `curves.json`; `checkpoints/` holds the resumable state while the run is in progress.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::{BinaryCrossEntropyLossConfig, CrossEntropyLossConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, softmax};
use serde::{Deserialize, Serialize};

use super::data::{
    Augment, BaseImages, Example, ImageSource, Loader, Pass, Preprocess, epoch_order,
};
use super::{DeviceKind, Error, checkpoint, schedule};
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
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Linear => "linear",
            Protocol::Finetune => "finetune",
        }
    }
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
    /// Stop after this many epochs without a better validation metric.
    pub patience: Option<usize>,
    pub seed: u64,
    pub device: DeviceKind,
    /// CPU threads (parallel reductions depend on it, so it is recorded).
    pub threads: usize,
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
pub struct DownstreamData<'a> {
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    pub evals: Vec<(String, Vec<Example>)>,
    pub images: &'a dyn ImageSource,
}

/// One epoch's numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochCurve {
    pub epoch: usize,
    #[serde(with = "crate::lossless::f64")]
    pub train_loss: f64,
    #[serde(with = "crate::lossless::f64")]
    pub val_metric: f64,
    #[serde(with = "crate::lossless::f64")]
    pub lr: f64,
    #[serde(with = "crate::lossless::f64")]
    pub seconds: f64,
}

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
}

/// The loop state saved with every epoch checkpoint. Every float goes through
/// [`crate::lossless`], so a resumed run compares against the very same best metric (a value
/// one ULP off would pick another best epoch on a tie) and a NaN metric never blocks a resume.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LoopState {
    /// The epoch in progress (or next to run).
    epoch: usize,
    /// Batches of `epoch` already done (non-zero after an interrupt mid-epoch).
    batch: usize,
    #[serde(with = "crate::lossless::f64")]
    loss_sum: f64,
    loss_n: usize,
    step: usize,
    best_epoch: usize,
    /// `-inf` until an epoch has a finite validation metric.
    #[serde(with = "crate::lossless::f64")]
    best_metric: f64,
    bad_epochs: usize,
    curves: Vec<EpochCurve>,
    #[serde(with = "crate::lossless::f64")]
    train_seconds: f64,
    train_images: usize,
}

const BEST: &str = "best.safetensors";

/// Runs (or resumes) a downstream training in `run_dir`.
pub fn run(
    cfg: &DownstreamConfig,
    init: &Init,
    data: &DownstreamData<'_>,
    run_dir: &Path,
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
    let base = cfg.device.device()?;
    let device = base.clone().autodiff();
    std::fs::create_dir_all(run_dir).map_err(|e| Error::file("create", run_dir)(e.to_string()))?;
    let ckpt_dir = run_dir.join("checkpoints");

    // Model: seeded init, then the encoder's weights.
    let mut model = Classifier::new(cfg.arch, cfg.outputs(), cfg.seed, &device);
    model.encoder = load_init(model.encoder, init)?;
    if cfg.protocol == Protocol::Linear {
        model.encoder = model.encoder.freeze();
    }
    let mut optim = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay as f32)
        .init();

    let mut state = LoopState {
        epoch: 0,
        batch: 0,
        loss_sum: 0.0,
        loss_n: 0,
        step: 0,
        best_epoch: 0,
        best_metric: f64::NEG_INFINITY,
        bad_epochs: 0,
        curves: Vec::new(),
        train_seconds: 0.0,
        train_images: 0,
    };
    let mut resumed_from_epoch = None;
    if let Some(folder) = checkpoint::current(&ckpt_dir) {
        state = checkpoint::load_state(&folder)?;
        let model_path = folder.join("model.bpk");
        model = model
            .try_load_file(&model_path)
            .map_err(|e| Error::file("load checkpoint", &model_path)(e.to_string()))?;
        if cfg.protocol == Protocol::Linear {
            model.encoder = model.encoder.freeze();
        }
        let optim_path = folder.join("optim.bpk");
        if optim_path.is_file() {
            optim = optim
                .load(&optim_path)
                .map_err(|e| Error::file("load optimizer state", &optim_path)(e.to_string()))?;
        }
        resumed_from_epoch = Some(state.epoch);
        tracing::info!(
            epoch = state.epoch,
            batch = state.batch,
            "resuming from checkpoint"
        );
    }

    let pre = &cfg.preprocess;
    // An interrupt while images load (before training, or before the final evaluation) is an
    // interrupt like any other: the run resumes from its last checkpoint.
    let load = |set: &[Example], epoch: usize| -> Result<Arc<BaseImages>, Error> {
        BaseImages::load(set, data.images, pre, interrupt)
            .map(Arc::new)
            .map_err(|e| {
                if interrupt.load(Ordering::Relaxed) {
                    Error::Interrupted { epoch }
                } else {
                    Error::Data(e)
                }
            })
    };
    let train_images = load(&data.train, state.epoch)?;
    let val_images = load(&data.val, state.epoch)?;
    let train_labels = Arc::new(data.train.iter().map(|e| e.label).collect::<Vec<_>>());

    let cache = cfg.protocol == Protocol::Linear && !cfg.augment.enabled;
    let batches_per_epoch = if cache {
        data.train.len().div_ceil(cfg.batch_size)
    } else {
        data.train.len() / cfg.batch_size.max(1)
            + usize::from(data.train.len() % cfg.batch_size >= 2)
    };
    let total_steps = cfg.epochs * batches_per_epoch.max(1);
    let warmup = (cfg.warmup_epochs * batches_per_epoch as f64).round() as usize;

    // Frozen features, computed once, when the probe sees no augmentation.
    let cached = if cache {
        let encoder = model.encoder.valid();
        Some((
            features(&encoder, &train_images, cfg, &base)?,
            features(&encoder, &val_images, cfg, &base)?,
        ))
    } else {
        None
    };

    let ce = CrossEntropyLossConfig::new().init(&device);
    let bce = BinaryCrossEntropyLossConfig::new()
        .with_logits(true)
        .init(&device);
    let loss_of = |logits: Tensor<2>, labels: &[i64]| -> Tensor<1> {
        let n = labels.len();
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [n]), &device);
        match cfg.kind() {
            TaskKind::Kl => ce.forward(logits, y),
            TaskKind::Binary => bce.forward(logits.reshape([n]), y),
        }
    };

    progress.start(
        cfg.epochs * batches_per_epoch,
        state.epoch * batches_per_epoch + state.batch,
    );
    // Saves model, optimizer and loop state; `valid()` syncs BatchNorm running statistics.
    let save_checkpoint =
        |model: &Classifier, optim: &burn::optim::ModuleOptimizer, state: &LoopState| {
            let valid = model.valid();
            checkpoint::save(&ckpt_dir, state, |folder| {
                save_model(&valid, &folder.join("model.bpk"))?;
                let path = folder.join("optim.bpk");
                optim
                    .save(&path)
                    .map_err(|e| Error::file("save optimizer state", &path)(e.to_string()))
            })
        };
    while state.epoch < cfg.epochs {
        let epoch = state.epoch;
        let started = Instant::now();
        let mut lr = cfg.lr;
        let order = epoch_order(data.train.len(), cfg.seed, epoch, true);
        if let Some((train_feats, _)) = &cached {
            // Head-only training on cached features.
            for chunk in order.chunks(cfg.batch_size).skip(state.batch) {
                if interrupt.load(Ordering::Relaxed) {
                    save_checkpoint(&model, &optim, &state)?;
                    return Err(Error::Interrupted { epoch });
                }
                lr = schedule::warmup_cosine(cfg.lr, state.step, warmup, total_steps);
                let x = gather_rows(train_feats, chunk, &device);
                let labels: Vec<i64> = chunk.iter().map(|&r| i64::from(train_labels[r])).collect();
                let loss = loss_of(model.head.forward(x), &labels);
                state.loss_sum += scalar(&loss) * labels.len() as f64;
                state.loss_n += labels.len();
                let grads = GradientsParams::from_grads(loss.backward(), &model.head);
                model.head = optim.step(lr, model.head.clone(), grads);
                state.step += 1;
                state.batch += 1;
                progress.step();
            }
        } else {
            let pass = Pass {
                order,
                batch_size: cfg.batch_size,
                augment: Some(cfg.augment.clone()),
                normalize: pre.normalize,
                seed: cfg.seed,
                epoch,
                skip: state.batch,
                prefetch: 2,
                min_batch: 2,
                views: 1,
            };
            for batch in Loader::spawn(train_images.clone(), train_labels.clone(), pass) {
                if interrupt.load(Ordering::Relaxed) {
                    save_checkpoint(&model, &optim, &state)?;
                    return Err(Error::Interrupted { epoch });
                }
                lr = schedule::warmup_cosine(cfg.lr, state.step, warmup, total_steps);
                let n = batch.len();
                let x = Tensor::<4>::from_data(
                    TensorData::new(batch.pixels, [n, 3, batch.size, batch.size]),
                    &device,
                );
                let loss = loss_of(model.forward(x), &batch.labels);
                state.loss_sum += scalar(&loss) * n as f64;
                state.loss_n += n;
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(lr, model, grads);
                state.step += 1;
                state.batch += 1;
                progress.step();
            }
        }
        state.train_seconds += started.elapsed().as_secs_f64();
        state.train_images += state.loss_n;

        // Validation.
        let valid = model.valid();
        let val_probs = match &cached {
            Some((_, val_feats)) => head_probs(&valid.head, val_feats, cfg),
            None => probabilities(&valid, &val_images, cfg, &base)?,
        };
        let val_metric = selection_value(cfg, &data.val, &val_probs);
        let train_loss = state.loss_sum / state.loss_n.max(1) as f64;
        state.curves.push(EpochCurve {
            epoch,
            train_loss,
            val_metric,
            lr,
            seconds: started.elapsed().as_secs_f64(),
        });
        tracing::info!(epoch, train_loss, val_metric, "epoch done");
        progress.epoch(epoch, train_loss, val_metric);
        if val_metric.is_finite() && val_metric > state.best_metric {
            state.best_metric = val_metric;
            state.best_epoch = epoch;
            state.bad_epochs = 0;
            import::save_checkpoint(&valid, &run_dir.join(BEST))?;
        } else {
            state.bad_epochs += 1;
            if !run_dir.join(BEST).is_file() {
                // No finite validation metric yet: keep the latest weights as the best so far.
                state.best_epoch = epoch;
                import::save_checkpoint(&valid, &run_dir.join(BEST))?;
            }
        }
        state.epoch += 1;
        state.batch = 0;
        state.loss_sum = 0.0;
        state.loss_n = 0;
        if cfg.patience.is_some_and(|p| state.bad_epochs >= p) {
            tracing::info!(epoch, "early stopping");
            state.epoch = cfg.epochs;
        }
        save_checkpoint(&model, &optim, &state)?;
    }

    // Evaluate the best checkpoint on every evaluation set.
    let best_path = run_dir.join(BEST);
    let best = import::load_checkpoint(
        Classifier::new(cfg.arch, cfg.outputs(), cfg.seed, &base),
        &best_path,
    )?
    .valid();
    let mut predictions = Vec::new();
    for (name, set) in &data.evals {
        if set.is_empty() {
            continue;
        }
        let images = load(set, state.epoch)?;
        let probs = probabilities(&best, &images, cfg, &base)?;
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
    let curves_path = run_dir.join("curves.json");
    checkpoint::write_atomic(
        &curves_path,
        &serde_json::to_vec_pretty(&state.curves).expect("curves serialize"),
    )?;
    let _ = std::fs::remove_dir_all(&ckpt_dir);
    Ok(DownstreamReport {
        best_epoch: state.best_epoch,
        best_val_metric: state.best_metric,
        epochs_run: state.curves.len(),
        curves: state.curves,
        checkpoint: best_path,
        predictions,
        train_images_per_second: state.train_images as f64 / state.train_seconds.max(1e-9),
        resumed_from_epoch,
        cached_features: cache,
    })
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

fn scalar(t: &Tensor<1>) -> f64 {
    t.clone()
        .into_data()
        .try_to_vec::<f32>()
        .map(|v| f64::from(v[0]))
        .unwrap_or(f64::NAN)
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
        let n = batch.len();
        let x = Tensor::<4>::from_data(
            TensorData::new(batch.pixels, [n, 3, batch.size, batch.size]),
            device,
        );
        out.extend(to_probs(model.forward(x), cfg.kind()));
    }
    Ok(out)
}

fn selection_value(cfg: &DownstreamConfig, set: &[Example], probs: &[Vec<f64>]) -> f64 {
    let labels: Vec<u8> = set.iter().map(|e| e.label).collect();
    match cfg.kind() {
        TaskKind::Kl => {
            let pred: Vec<u8> = probs.iter().map(|p| kl::argmax(p)).collect();
            kl::qwk(&labels, &pred)
        }
        TaskKind::Binary => {
            let s: Vec<f64> = probs.iter().map(|p| p[0]).collect();
            binary::auroc(&labels, &s)
        }
    }
}

#[cfg(test)]
mod tests;
