//! The one resumable epoch loop every training shares (downstream runs and SSL pretraining).
//!
//! The loop owns what must be exact under interruption: the epoch and batch in progress, the
//! step count the learning-rate schedule (warmup, cosine) reads, the running loss, early
//! stopping on the validation metric and the best epoch. A [`Trainer`] says what one step, one
//! validation and one checkpoint of its networks are. A checkpoint is written after every epoch
//! and on an interrupt (mid-epoch: the resumed run skips the batches already done), so a
//! stopped and resumed run is bit-identical to one that never stopped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Error, checkpoint, schedule};
use crate::progress::Task;

/// One epoch's numbers (`val_metric` is NaN for a training without validation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochCurve {
    pub epoch: usize,
    #[serde(with = "crate::lossless::f64")]
    pub train_loss: f64,
    #[serde(with = "crate::lossless::f64")]
    pub val_metric: f64,
    /// The validation loss (cross-entropy); absent for a training without validation and in
    /// curves written before it was recorded.
    #[serde(
        default = "nan",
        with = "crate::lossless::f64",
        skip_serializing_if = "is_nan"
    )]
    pub val_loss: f64,
    #[serde(with = "crate::lossless::f64")]
    pub lr: f64,
    #[serde(with = "crate::lossless::f64")]
    pub seconds: f64,
    /// The phase of a run with more than one (LP-FT: `linear`, then `finetune`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<super::downstream::Protocol>,
}

fn nan() -> f64 {
    f64::NAN
}

fn is_nan(x: &f64) -> bool {
    x.is_nan()
}

/// What selects the best epoch (and counts towards early stopping): the validation metric
/// (QWK, AUROC; higher is better) or the validation cross-entropy (lower is better). The loss
/// is a proper scoring rule of every case's probability, so on a small validation set it is
/// far less noisy than a rank metric, which can favour an early, near-random head by chance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Select {
    #[default]
    Metric,
    Loss,
}

/// How a downstream run's linear head starts: `random` (uniform in ±1/√fan-in from the run's
/// seed, as torch's `nn.Linear`) or `zeros`, as a logistic regression starts. A zero head on
/// cached features with one batch per epoch trains the same whatever the seed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadInit {
    #[default]
    Random,
    Zeros,
}

impl HeadInit {
    pub fn is_random(&self) -> bool {
        *self == HeadInit::Random
    }
}

impl Select {
    pub fn is_metric(&self) -> bool {
        *self == Select::Metric
    }

    /// The score to maximise.
    fn score(self, v: &Validation) -> f64 {
        match self {
            Select::Metric => v.metric,
            Select::Loss => -v.loss,
        }
    }
}

/// One validation: the metric and the cross-entropy (NaN when undefined or when there is none).
#[derive(Clone, Copy, Debug)]
pub struct Validation {
    pub metric: f64,
    pub loss: f64,
}

impl Validation {
    pub const NONE: Validation = Validation {
        metric: f64::NAN,
        loss: f64::NAN,
    };
}

/// The loop state saved with every checkpoint. Every float goes through [`crate::lossless`],
/// so a resumed run compares against the very same best metric (a value one ULP off would pick
/// another best epoch on a tie) and a NaN metric never blocks a resume.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoopState {
    /// The epoch in progress (or next to run).
    pub epoch: usize,
    /// Batches of `epoch` already done (non-zero after an interrupt mid-epoch).
    pub batch: usize,
    /// Σ loss × weight over the batches of `epoch` done so far.
    #[serde(with = "crate::lossless::f64")]
    pub loss_sum: f64,
    #[serde(with = "crate::lossless::f64")]
    pub loss_weight: f64,
    pub step: usize,
    pub best_epoch: usize,
    /// The best selection score (the metric, or minus the loss); `-inf` until an epoch has a
    /// finite one.
    #[serde(with = "crate::lossless::f64")]
    pub best_metric: f64,
    pub bad_epochs: usize,
    pub curves: Vec<EpochCurve>,
    #[serde(with = "crate::lossless::f64")]
    pub train_seconds: f64,
    pub train_images: usize,
}

impl Default for LoopState {
    fn default() -> LoopState {
        LoopState {
            epoch: 0,
            batch: 0,
            loss_sum: 0.0,
            loss_weight: 0.0,
            step: 0,
            best_epoch: 0,
            best_metric: f64::NEG_INFINITY,
            bad_epochs: 0,
            curves: Vec::new(),
            train_seconds: 0.0,
            train_images: 0,
        }
    }
}

impl LoopState {
    pub fn images_per_second(&self) -> f64 {
        self.train_images as f64 / self.train_seconds.max(1e-9)
    }
}

/// What one optimisation step reports: its loss (still on the device: the loop reads the
/// losses of many steps in one transfer, never one per step), the weight the epoch's mean
/// gives it (the batch's images, or 1 for a mean over batches) and the images it trained on.
pub struct Step {
    pub loss: Tensor<1>,
    pub weight: f64,
    pub images: usize,
}

/// The length and schedule of a training.
pub struct Plan {
    pub epochs: usize,
    pub batches_per_epoch: usize,
    /// Peak learning rate.
    pub lr: f64,
    pub warmup_steps: usize,
    /// Stop after this many epochs without a better validation metric.
    pub patience: Option<usize>,
    /// Track the best epoch by this (and keep its weights); `None`: the last epoch is kept.
    pub select: Option<Select>,
}

/// A training the loop drives.
pub trait Trainer {
    type Batch;
    /// The batches of `epoch` from batch `skip` on, in their seeded order.
    fn batches(
        &mut self,
        epoch: usize,
        skip: usize,
    ) -> Result<Box<dyn Iterator<Item = Self::Batch>>, Error>;
    /// One optimisation step at learning rate `lr`.
    fn step(&mut self, batch: Self::Batch, lr: f64) -> Result<Step, Error>;
    /// The validation metric and loss after an epoch.
    fn validate(&mut self) -> Result<Validation, Error>;
    /// Keeps the weights just validated as the best so far.
    fn keep_best(&mut self) -> Result<(), Error>;
    /// Writes the networks and optimizer state into a checkpoint folder.
    fn save(&self, folder: &Path) -> Result<(), Error>;
    /// Reads them back from one.
    fn load(&mut self, folder: &Path) -> Result<(), Error>;
}

/// A training's epochs, resumed from its checkpoint folder if one is there.
pub struct Epochs {
    dir: PathBuf,
    state: LoopState,
    /// The checkpoint to load into the trainer before the first step.
    pending: Option<PathBuf>,
    resumed_from_epoch: Option<usize>,
}

impl Epochs {
    /// Opens the checkpoint folder `dir` (its loop state, if a checkpoint is there).
    pub fn open(dir: &Path) -> Result<Epochs, Error> {
        let mut e = Epochs {
            dir: dir.to_path_buf(),
            state: LoopState::default(),
            pending: None,
            resumed_from_epoch: None,
        };
        if let Some(folder) = checkpoint::current(dir) {
            e.state = checkpoint::load_state(&folder)?;
            e.resumed_from_epoch = Some(e.state.epoch);
            tracing::info!(
                epoch = e.state.epoch,
                batch = e.state.batch,
                "resuming from checkpoint"
            );
            e.pending = Some(folder);
        }
        Ok(e)
    }

    /// The epoch in progress (or next to run).
    pub fn epoch(&self) -> usize {
        self.state.epoch
    }

    pub fn state(&self) -> &LoopState {
        &self.state
    }

    pub fn resumed_from_epoch(&self) -> Option<usize> {
        self.resumed_from_epoch
    }

    /// Trains the remaining epochs.
    pub fn run<T: Trainer>(
        &mut self,
        t: &mut T,
        plan: &Plan,
        progress: &dyn Task,
        interrupt: &AtomicBool,
    ) -> Result<(), Error> {
        if let Some(folder) = self.pending.take() {
            t.load(&folder)?;
        }
        let per_epoch = plan.batches_per_epoch;
        let total_steps = plan.epochs * per_epoch.max(1);
        progress.start(
            plan.epochs * per_epoch,
            self.state.epoch * per_epoch + self.state.batch,
        );
        while self.state.epoch < plan.epochs {
            let epoch = self.state.epoch;
            let started = Instant::now();
            let mut lr = plan.lr;
            let mut losses = DeviceLosses::default();
            for batch in t.batches(epoch, self.state.batch)? {
                if interrupt.load(Ordering::Relaxed) {
                    losses.flush(&mut self.state);
                    self.checkpoint(t)?;
                    return Err(Error::Interrupted { epoch });
                }
                let s = &mut self.state;
                lr = schedule::warmup_cosine(plan.lr, s.step, plan.warmup_steps, total_steps);
                let step = t.step(batch, lr)?;
                losses.push(step.loss, step.weight);
                s.train_images += step.images;
                s.step += 1;
                s.batch += 1;
                progress.step();
            }
            losses.flush(&mut self.state);
            self.state.train_seconds += started.elapsed().as_secs_f64();
            let validation = t.validate()?;
            self.end_epoch(t, plan, lr, validation, started, progress)?;
            self.checkpoint(t)?;
        }
        Ok(())
    }

    /// Records a finished epoch: its curve, the best epoch, early stopping.
    fn end_epoch<T: Trainer>(
        &mut self,
        t: &mut T,
        plan: &Plan,
        lr: f64,
        validation: Validation,
        started: Instant,
        progress: &dyn Task,
    ) -> Result<(), Error> {
        let s = &mut self.state;
        let epoch = s.epoch;
        let train_loss = s.loss_sum
            / if s.loss_weight > 0.0 {
                s.loss_weight
            } else {
                1.0
            };
        let val_metric = validation.metric;
        s.curves.push(EpochCurve {
            epoch,
            train_loss,
            val_metric,
            val_loss: validation.loss,
            lr,
            seconds: started.elapsed().as_secs_f64(),
            phase: None,
        });
        tracing::info!(epoch, train_loss, val_metric, "epoch done");
        progress.epoch(epoch, train_loss, val_metric);
        if let Some(select) = plan.select {
            let score = select.score(&validation);
            if score.is_finite() && score > s.best_metric {
                s.best_metric = score;
                s.best_epoch = epoch;
                s.bad_epochs = 0;
                t.keep_best()?;
            } else {
                s.bad_epochs += 1;
                if s.curves.len() == 1 {
                    // No finite validation metric yet: the first weights are the best so far.
                    s.best_epoch = epoch;
                    t.keep_best()?;
                }
            }
        }
        s.epoch += 1;
        s.batch = 0;
        s.loss_sum = 0.0;
        s.loss_weight = 0.0;
        if plan.patience.is_some_and(|p| s.bad_epochs >= p) {
            tracing::info!(epoch, "early stopping");
            s.epoch = plan.epochs;
        }
        Ok(())
    }

    fn checkpoint<T: Trainer>(&self, t: &T) -> Result<(), Error> {
        checkpoint::save(&self.dir, &self.state, |folder| t.save(folder)).map(|_| ())
    }

    /// Ends the training once its outputs are written: the checkpoints go.
    pub fn finish(self) -> LoopState {
        let _ = std::fs::remove_dir_all(&self.dir);
        self.state
    }
}

/// The losses of an epoch's steps, kept on the device until the loop needs them (a
/// checkpoint, the epoch's end): then one transfer reads them all, and they are added to the
/// loop state in step order, in f64, exactly as a read after every step would.
#[derive(Default)]
struct DeviceLosses {
    pending: Vec<Tensor<1>>,
    weights: Vec<f64>,
}

impl DeviceLosses {
    fn push(&mut self, loss: Tensor<1>, weight: f64) {
        self.pending.push(loss);
        self.weights.push(weight);
    }

    fn flush(&mut self, s: &mut LoopState) {
        if self.pending.is_empty() {
            return;
        }
        let values = Tensor::cat(std::mem::take(&mut self.pending), 0)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        for (i, w) in std::mem::take(&mut self.weights).into_iter().enumerate() {
            let v = values.get(i).map_or(f64::NAN, |v| f64::from(*v));
            s.loss_sum += v * w;
            s.loss_weight += w;
        }
    }
}
