//! Self-supervised pretraining of an image encoder.
//!
//! - SimCLR: two augmented views per image, NT-Xent over the 2N projected views.
//! - MoCo v2: a query network and a momentum (EMA) key network, a queue of negative keys,
//!   InfoNCE with the positive key first.
//! - CLIP: image and report towers, symmetric InfoNCE over the batch's image-report pairs.
//! - ConVIRT: the same towers with non-linear projections and an asymmetric weighting λ of the
//!   image→text and text→image losses.
//! - VICReg: invariance, variance and covariance terms on the expander outputs of two views.
//! - SLIP: SimCLR on two views plus CLIP or ConVIRT on the first view and its report, in one
//!   run and one encoder pass, each loss with its weight.
//! - Supervised: the encoder and a linear head trained with cross-entropy on a label of the
//!   pretraining cohorts (in-domain transfer, e.g. KL grade on one cohort for prognosis on
//!   another); the head is dropped like a projection.
//!
//! Radiograph augmentations only (random resized crop, rotation, flip, contrast/brightness,
//! blur, noise; no colour jitter). Outputs in the run directory: `encoder.safetensors` (the
//! image encoder; projection heads are dropped), for image-text also `text_encoder.safetensors`
//! and `tokenizer.json`, and `curves.json`. Epoch checkpoints make runs resumable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::data::{
    Augment, BaseImages, Example, ImageSource, Loader, Pass, Preprocess, epoch_order,
};
use super::epochs::{Epochs, Plan, Step, Trainer, Validation};
use super::{DeviceKind, Error, Precision, checkpoint, text};
use crate::data::Label;
use crate::model::Arch;
use crate::model::bert::{Bert, BertConfig};
use crate::model::import;
use crate::model::init::Seeder;
use crate::model::ssl::{
    self, ImageSsl, ImageText, Projection, Slip, TextConfig, TextEncoder, TextTower,
};
use crate::progress::Task;

/// The self-supervised objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Simclr,
    Moco,
    Clip,
    Convirt,
    /// VICReg: invariance, variance and covariance terms on unnormalised expander outputs.
    Vicreg,
    /// SLIP: SimCLR plus an image-text loss (CLIP or ConVIRT), weighted, in one run.
    Slip,
    /// Supervised learning of `label` (cross-entropy over its classes).
    Supervised,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Simclr => "simclr",
            Method::Moco => "moco",
            Method::Clip => "clip",
            Method::Convirt => "convirt",
            Method::Vicreg => "vicreg",
            Method::Slip => "slip",
            Method::Supervised => "supervised",
        }
    }

    /// Image-text methods need report text.
    pub fn uses_text(self) -> bool {
        matches!(self, Method::Clip | Method::Convirt | Method::Slip)
    }

    /// Augmented views per image in a batch.
    pub fn views(self) -> usize {
        if matches!(self, Method::Clip | Method::Convirt | Method::Supervised) {
            1
        } else {
            2
        }
    }
}

/// Augmentations that suit radiographs, stronger than downstream ones.
pub fn ssl_augment() -> Augment {
    Augment {
        enabled: true,
        crop_min: 0.6,
        rotation_deg: 10.0,
        hflip: 0.5,
        brightness: 0.25,
        contrast: 0.25,
        blur_max: 1.0,
        noise: 0.03,
    }
}

/// VICReg's loss weights (Bardes et al. 2022: 25, 25, 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VicregWeights {
    /// Mean squared distance between the two views' embeddings.
    pub invariance: f64,
    /// Hinge on each dimension's standard deviation (target 1).
    pub variance: f64,
    /// Squared off-diagonal covariances, divided by the dimension.
    pub covariance: f64,
}

impl Default for VicregWeights {
    fn default() -> VicregWeights {
        VicregWeights {
            invariance: 25.0,
            variance: 25.0,
            covariance: 1.0,
        }
    }
}

/// The image-text half of SLIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextLoss {
    /// Linear projections, symmetric InfoNCE.
    Clip,
    /// Non-linear projections, image→text weighted by `convirt_lambda`.
    Convirt,
}

/// SLIP's two losses and their weights (Mu et al. 2022: CLIP + 1.0 × SimCLR).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlipConfig {
    /// `clip` or `convirt`.
    pub text_loss: TextLoss,
    /// Weight of the SimCLR loss over the two image views.
    pub simclr_weight: f64,
    /// Weight of the image-text loss.
    pub text_weight: f64,
}

impl Default for SlipConfig {
    fn default() -> SlipConfig {
        SlipConfig {
            text_loss: TextLoss::Clip,
            simclr_weight: 1.0,
            text_weight: 1.0,
        }
    }
}

/// Everything that defines a pretraining run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    pub method: Method,
    pub arch: Arch,
    pub preprocess: Preprocess,
    pub augment: Augment,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_epochs: f64,
    pub temperature: f64,
    pub projection_dim: usize,
    pub moco_queue: usize,
    pub moco_momentum: f64,
    /// ConVIRT's weight of the image→text loss.
    pub convirt_lambda: f64,
    /// VICReg's weights; absent for other methods, so their identities are what they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vicreg: Option<VicregWeights>,
    /// SLIP's losses and weights; absent for other methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slip: Option<SlipConfig>,
    /// The label a supervised pretraining learns; absent for other methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<crate::data::Label>,
    pub text: TextConfig,
    pub seed: u64,
    pub device: DeviceKind,
    pub threads: usize,
    /// bf16 compute for convolutions and matrix products (LibTorch); absent when fp32, so the
    /// identities of fp32 runs are what they were.
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
}

/// The images (and, for image-text methods, one report per image) to pretrain on; a
/// supervised pretraining's labels are the examples' `label`.
pub struct PretrainData {
    pub examples: Vec<Example>,
    pub reports: Option<Vec<String>>,
    pub images: Arc<dyn ImageSource>,
    /// A user's tokenizer (else one is trained on the reports).
    pub tokenizer: Option<PathBuf>,
    /// A BERT folder for the text tower (else ktrack's own Transformer, trained from scratch).
    pub text_model: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainCurve {
    pub epoch: usize,
    #[serde(with = "crate::lossless::f64")]
    pub loss: f64,
    #[serde(with = "crate::lossless::f64")]
    pub lr: f64,
    #[serde(with = "crate::lossless::f64")]
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PretrainReport {
    pub encoder: PathBuf,
    pub text_encoder: Option<PathBuf>,
    pub tokenizer: Option<PathBuf>,
    pub curves: Vec<PretrainCurve>,
    pub images_per_second: f64,
    pub resumed_from_epoch: Option<usize>,
}

/// The trained networks of one method (one value per run, so variant sizes do not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Nets {
    Image(ImageSsl),
    Moco {
        query: ImageSsl,
        key: ImageSsl,
        queue: Tensor<2>,
    },
    Text(ImageText),
    Slip(Slip),
    Supervised(crate::model::Classifier),
}

/// Runs (or resumes) a pretraining in `run_dir`.
pub fn run(
    cfg: &PretrainConfig,
    data: &PretrainData,
    run_dir: &Path,
    progress: &dyn Task,
    interrupt: &AtomicBool,
) -> Result<PretrainReport, Error> {
    if data.examples.len() < 2 {
        return Err(Error::EmptySet {
            set: "pretraining".into(),
        });
    }
    if cfg.method.uses_text()
        && data
            .reports
            .as_ref()
            .is_none_or(|r| r.len() != data.examples.len())
    {
        return Err(Error::Data(format!(
            "{} needs one report per image; the pretraining data has none",
            cfg.method.name()
        )));
    }
    let per_epoch = data.examples.len() / cfg.batch_size.max(2);
    if per_epoch == 0 {
        return Err(Error::Data(format!(
            "{} images are fewer than one batch of {}",
            data.examples.len(),
            cfg.batch_size
        )));
    }
    super::backend::pin_threads(cfg.threads);
    cfg.precision.check(cfg.device)?;
    let _precision = cfg.precision.enter();
    std::fs::create_dir_all(run_dir).map_err(|e| Error::file("create", run_dir)(e.to_string()))?;
    let mut epochs = Epochs::open(&run_dir.join("checkpoints"))?;

    let tokenizer = tokenizer_for(cfg, data, run_dir)?;
    let images = Arc::new(
        BaseImages::load(
            &data.examples,
            data.images.clone(),
            &cfg.preprocess,
            interrupt,
        )
        .map_err(|e| {
            if interrupt.load(Ordering::Relaxed) {
                Error::Interrupted {
                    epoch: epochs.epoch(),
                }
            } else {
                Error::Data(e)
            }
        })?,
    );
    let mut trainer = Pretrainer::new(cfg, data, images, tokenizer)?;
    let plan = Plan {
        epochs: cfg.epochs,
        batches_per_epoch: per_epoch,
        lr: cfg.lr,
        warmup_steps: (cfg.warmup_epochs * per_epoch as f64).round() as usize,
        patience: None,
        select: None,
    };
    epochs.run(&mut trainer, &plan, progress, interrupt)?;

    let (encoder_path, text_path) = save_encoders(&trainer.nets, run_dir)?;
    let curves: Vec<PretrainCurve> = epochs
        .state()
        .curves
        .iter()
        .map(|c| PretrainCurve {
            epoch: c.epoch,
            loss: c.train_loss,
            lr: c.lr,
            seconds: c.seconds,
        })
        .collect();
    checkpoint::write_atomic(
        &run_dir.join("curves.json"),
        &serde_json::to_vec_pretty(&curves).expect("curves serialize"),
    )?;
    let resumed_from_epoch = epochs.resumed_from_epoch();
    let state = epochs.finish();
    Ok(PretrainReport {
        encoder: encoder_path,
        text_encoder: text_path,
        tokenizer: trainer.tokenizer.map(|_| run_dir.join("tokenizer.json")),
        curves,
        images_per_second: state.images_per_second(),
        resumed_from_epoch,
    })
}

/// The text side's tokenizer, fixed before training and saved with the outputs (a user's, or
/// one trained on the reports); none for an image-only method.
fn tokenizer_for(
    cfg: &PretrainConfig,
    data: &PretrainData,
    run_dir: &Path,
) -> Result<Option<tokenizers::Tokenizer>, Error> {
    Ok(if cfg.method.uses_text() {
        let tok = match (&data.text_model, &data.tokenizer) {
            (Some(dir), _) => text::bert_tokenizer(dir, &BertConfig::read(dir)?, cfg.text.max_len)?,
            (None, Some(p)) => text::load_tokenizer(p)?,
            (None, None) => text::train_tokenizer(
                data.reports.as_deref().unwrap_or_default(),
                cfg.text.vocab_size,
            )?,
        };
        text::save_tokenizer(&tok, &run_dir.join("tokenizer.json"))?;
        Some(tok)
    } else {
        None
    })
}

/// Keeps the encoders (the projection heads are dropped); returns the image encoder's file and,
/// for image-text methods, the text encoder's.
fn save_encoders(nets: &Nets, run_dir: &Path) -> Result<(PathBuf, Option<PathBuf>), Error> {
    let encoder_path = run_dir.join("encoder.safetensors");
    let mut text_path = None;
    match nets {
        Nets::Image(m) => import::save_checkpoint(&m.encoder.valid(), &encoder_path)?,
        Nets::Moco { query, .. } => import::save_checkpoint(&query.encoder.valid(), &encoder_path)?,
        Nets::Supervised(m) => import::save_checkpoint(&m.encoder.valid(), &encoder_path)?,
        Nets::Text(m) | Nets::Slip(Slip { towers: m, .. }) => {
            import::save_checkpoint(&m.encoder.valid(), &encoder_path)?;
            let p = run_dir.join("text_encoder.safetensors");
            match &m.text {
                TextTower::Own(t) => import::save_checkpoint(&t.valid(), &p)?,
                TextTower::Bert(b) => import::save_checkpoint(&b.valid(), &p)?,
            }
            text_path = Some(p);
        }
    }
    Ok((encoder_path, text_path))
}

/// VICReg's loss of two views' embeddings `[B, D]`: invariance (mean squared error), variance
/// (mean hinge `relu(1 - sqrt(var + 1e-4))` per dimension, unbiased variance, averaged over
/// the two views) and covariance (squared off-diagonal entries of each view's covariance
/// matrix, summed, over D, added for the two views), as the authors' reference code.
pub fn vicreg_loss(za: Tensor<2>, zb: Tensor<2>, w: &VicregWeights) -> Tensor<1> {
    let [n, d] = za.dims();
    let invariance = (za.clone() - zb.clone()).powi_scalar(2).mean();
    let centre = |z: Tensor<2>| z.clone() - z.mean_dim(0);
    let (ca, cb) = (centre(za), centre(zb));
    let hinge = |c: &Tensor<2>| {
        let var = c
            .clone()
            .powi_scalar(2)
            .sum_dim(0)
            .div_scalar((n - 1) as f64);
        burn::tensor::activation::relu(var.add_scalar(1e-4).sqrt().neg().add_scalar(1.0)).mean()
    };
    let variance = (hinge(&ca) + hinge(&cb)).div_scalar(2.0);
    let off_diagonal = |c: Tensor<2>| {
        let cov = c.clone().transpose().matmul(c).div_scalar((n - 1) as f64);
        let diag = cov.clone() * Tensor::<2>::eye(d, &cov.device());
        (cov - diag).powi_scalar(2).sum().div_scalar(d as f64)
    };
    let covariance = off_diagonal(ca) + off_diagonal(cb);
    invariance.mul_scalar(w.invariance)
        + variance.mul_scalar(w.variance)
        + covariance.mul_scalar(w.covariance)
}

/// The classes a supervised pretraining's head scores: a knee label's own, or as many as a
/// generic set's highest class says (its data, and so its cohort hash, fix the count).
fn classes(cfg: &PretrainConfig, data: &PretrainData) -> usize {
    match cfg.label {
        Some(Label::Class) => data
            .examples
            .iter()
            .map(|e| usize::from(e.label) + 1)
            .max()
            .unwrap_or(0)
            .max(2),
        Some(l) => l.classes().len(),
        None => 2,
    }
}

/// A pretraining as the epoch loop drives it.
struct Pretrainer<'a> {
    cfg: &'a PretrainConfig,
    device: Device,
    base: Device,
    nets: Nets,
    optim: ModuleOptimizer,
    images: Arc<BaseImages>,
    labels: Arc<Vec<u8>>,
    reports: Option<&'a [String]>,
    tokenizer: Option<tokenizers::Tokenizer>,
    /// Reports are wrapped in the tokenizer's special tokens (BERT's `[CLS] … [SEP]`).
    special_tokens: bool,
    ce: burn::nn::loss::CrossEntropyLoss,
}

impl<'a> Pretrainer<'a> {
    fn new(
        cfg: &'a PretrainConfig,
        data: &'a PretrainData,
        images: Arc<BaseImages>,
        tokenizer: Option<tokenizers::Tokenizer>,
    ) -> Result<Pretrainer<'a>, Error> {
        let base = cfg.device.device()?;
        let device = base.clone().autodiff();
        let tower = if cfg.method.uses_text() {
            Some(text_tower(cfg, data, tokenizer.as_ref(), &device)?)
        } else {
            None
        };
        Ok(Pretrainer {
            special_tokens: tower.as_ref().is_some_and(TextTower::special_tokens),
            nets: Nets::new(cfg, tower, classes(cfg, data), &device, &base),
            optim: super::optim::adamw(cfg.weight_decay as f32),
            labels: Arc::new(data.examples.iter().map(|e| e.label).collect()),
            reports: data.reports.as_deref(),
            ce: CrossEntropyLossConfig::new().init(&device),
            cfg,
            device,
            base,
            images,
            tokenizer,
        })
    }

    fn targets(&self, n: usize, f: impl Fn(usize) -> i64) -> Tensor<1, Int> {
        Tensor::<1, Int>::from_data(
            TensorData::new((0..n).map(f).collect::<Vec<i64>>(), [n]),
            &self.device,
        )
    }

    /// SimCLR: NT-Xent over the 2B projected views.
    fn simclr(&mut self, x: Tensor<4>, b: usize, lr: f64) -> Tensor<1> {
        let Nets::Image(model) = &mut self.nets else {
            unreachable!("SimCLR trains an image network")
        };
        let z = model.forward(x);
        let loss = nt_xent(z, b, self.cfg.temperature, &self.ce);
        let grads = GradientsParams::from_grads(loss.backward(), &*model);
        *model = self.optim.step(lr, model.clone(), grads);
        loss.detach()
    }

    /// Supervised: cross-entropy of the head's logits against the batch's labels.
    fn supervised(&mut self, x: Tensor<4>, labels: &[i64], lr: f64) -> Tensor<1> {
        let targets = self.targets(labels.len(), |i| labels[i]);
        let Nets::Supervised(model) = &mut self.nets else {
            unreachable!("supervised pretraining trains a classifier")
        };
        let loss = self.ce.forward(model.forward(x), targets);
        let grads = GradientsParams::from_grads(loss.backward(), &*model);
        *model = self.optim.step(lr, model.clone(), grads);
        loss.detach()
    }

    /// VICReg over the two views' expander outputs (views i and i + B are one image).
    fn vicreg(&mut self, x: Tensor<4>, b: usize, lr: f64) -> Tensor<1> {
        let Nets::Image(model) = &mut self.nets else {
            unreachable!("VICReg trains an image network")
        };
        let weights = self.cfg.vicreg.clone().unwrap_or_default();
        let z = model.embed(x);
        let loss = vicreg_loss(z.clone().narrow(0, 0, b), z.narrow(0, b, b), &weights);
        let grads = GradientsParams::from_grads(loss.backward(), &*model);
        *model = self.optim.step(lr, model.clone(), grads);
        loss.detach()
    }

    /// MoCo v2: InfoNCE of the queries against their momentum keys (first) and the queue.
    fn moco(&mut self, x: Tensor<4>, b: usize, lr: f64) -> Tensor<1> {
        let cfg = self.cfg;
        let targets = self.targets(b, |_| 0);
        let Nets::Moco { query, key, queue } = &mut self.nets else {
            unreachable!("MoCo trains a query and a key network")
        };
        let views = x.clone().narrow(0, 0, b);
        let other = x.narrow(0, b, b);
        let q = query.forward(views);
        let k = key.forward(other.inner());
        let k_ad = Tensor::<2>::from_inner(k.clone());
        let l_pos = (q.clone() * k_ad).sum_dim(1);
        let l_neg = q.matmul(Tensor::<2>::from_inner(queue.clone()).transpose());
        let logits = Tensor::cat(vec![l_pos, l_neg], 1).div_scalar(cfg.temperature);
        let loss = self.ce.forward(logits, targets);
        let grads = GradientsParams::from_grads(loss.backward(), &*query);
        *query = self.optim.step(lr, query.clone(), grads);
        *key = ssl::momentum_update(key.clone(), query, cfg.moco_momentum);
        // Enqueue the newest keys, dropping the oldest.
        let keep = cfg.moco_queue - b.min(cfg.moco_queue);
        *queue = Tensor::cat(
            vec![
                k.narrow(0, 0, b.min(cfg.moco_queue)),
                queue.clone().narrow(0, 0, keep),
            ],
            0,
        );
        loss.detach()
    }

    /// The batch's reports as token ids and padding masks.
    fn report_tokens(&self, rows: &[usize]) -> Result<(Tensor<2, Int>, Tensor<2, Bool>), Error> {
        let reports = self.reports.expect("checked before training");
        let texts: Vec<&str> = rows.iter().map(|&r| reports[r].as_str()).collect();
        let tok = self
            .tokenizer
            .as_ref()
            .expect("image-text methods have a tokenizer");
        text::encode_batch(
            tok,
            &texts,
            self.cfg.text.max_len,
            self.special_tokens,
            &self.device,
        )
    }

    /// One optimizer step over an image-text model; with its own `text.lr`, the text tower's
    /// gradients step at that rate (scaled by the same warmup and cosine as `lr`).
    fn step_towers<M: Module>(
        &mut self,
        model: M,
        text: impl Fn(&M) -> &TextTower,
        loss: &Tensor<1>,
        lr: f64,
    ) -> M {
        let mut grads = loss.backward();
        let text_grads = self.cfg.text.lr.map(|text_lr| {
            (
                text_lr,
                GradientsParams::from_module(&mut grads, text(&model)),
            )
        });
        let rest = GradientsParams::from_grads(grads, &model);
        let model = self.optim.step(lr, model, rest);
        match text_grads {
            Some((text_lr, g)) => self.optim.step(lr * text_lr / self.cfg.lr, model, g),
            None => model,
        }
    }

    /// The image→text weight λ of the image-text loss (0.5: symmetric CLIP).
    fn lambda(&self, convirt: bool) -> f64 {
        if convirt {
            self.cfg.convirt_lambda
        } else {
            0.5
        }
    }

    /// CLIP / ConVIRT: symmetric (or λ-weighted) InfoNCE over the batch's image-report pairs.
    fn image_text(&mut self, x: Tensor<4>, rows: &[usize], lr: f64) -> Result<Tensor<1>, Error> {
        let (ids, pad) = self.report_tokens(rows)?;
        let lambda = self.lambda(self.cfg.method == Method::Convirt);
        let (t, ce) = (self.cfg.temperature, &self.ce);
        let Nets::Text(model) = &mut self.nets else {
            unreachable!("image-text methods train two towers")
        };
        let loss = model.pair_loss(model.encoder.forward(x), ids, pad, t, lambda, ce);
        let m = model.clone();
        let stepped = self.step_towers(m, |m| &m.text, &loss, lr);
        self.nets = Nets::Text(stepped);
        Ok(loss.detach())
    }

    /// SLIP: one encoder pass over both views; SimCLR over the two, the image-text loss over
    /// the first view and its report.
    fn slip(&mut self, x: Tensor<4>, rows: &[usize], lr: f64) -> Result<Tensor<1>, Error> {
        let b = rows.len();
        let w = self.cfg.slip.clone().unwrap_or_default();
        let (ids, pad) = self.report_tokens(rows)?;
        let lambda = self.lambda(w.text_loss == TextLoss::Convirt);
        let (t, ce) = (self.cfg.temperature, &self.ce);
        let Nets::Slip(model) = &mut self.nets else {
            unreachable!("SLIP trains two towers and a SimCLR head")
        };
        let h = model.towers.encoder.forward(x);
        let z = ssl::normalize(model.simclr_projection.forward(h.clone()));
        let simclr = nt_xent(z, b, t, ce);
        let pair = model
            .towers
            .pair_loss(h.narrow(0, 0, b), ids, pad, t, lambda, ce);
        let loss = simclr.mul_scalar(w.simclr_weight) + pair.mul_scalar(w.text_weight);
        let m = model.clone();
        let stepped = self.step_towers(m, |m| &m.towers.text, &loss, lr);
        self.nets = Nets::Slip(stepped);
        Ok(loss.detach())
    }
}

/// NT-Xent over 2B normalised embeddings: view i's positive is view i ± B, and no view is its
/// own negative.
fn nt_xent(
    z: Tensor<2>,
    b: usize,
    temperature: f64,
    ce: &burn::nn::loss::CrossEntropyLoss,
) -> Tensor<1> {
    let device = z.device();
    let sim = z.clone().matmul(z.transpose()).div_scalar(temperature);
    let n = 2 * b;
    let eye: Vec<f32> = (0..n * n)
        .map(|i| if i / n == i % n { -1e9 } else { 0.0 })
        .collect();
    let logits = sim + Tensor::<2>::from_data(TensorData::new(eye, [n, n]), &device);
    let targets = Tensor::<1, Int>::from_data(
        TensorData::new(
            (0..n).map(|i| ((i + b) % n) as i64).collect::<Vec<_>>(),
            [n],
        ),
        &device,
    );
    ce.forward(logits, targets)
}

impl ImageText {
    /// The λ-weighted InfoNCE of image features `[B, F]` against their reports.
    fn pair_loss(
        &self,
        features: Tensor<2>,
        ids: Tensor<2, Int>,
        pad: Tensor<2, Bool>,
        temperature: f64,
        lambda: f64,
        ce: &burn::nn::loss::CrossEntropyLoss,
    ) -> Tensor<1> {
        let b = features.dims()[0];
        let device = features.device();
        let img = ssl::normalize(self.image_projection.forward(features));
        let txt = ssl::normalize(self.text_projection.forward(self.text.forward(ids, pad)));
        let logits = img.matmul(txt.transpose()).div_scalar(temperature);
        let diag = Tensor::<1, Int>::from_data(
            TensorData::new((0..b as i64).collect::<Vec<_>>(), [b]),
            &device,
        );
        let i2t = ce.forward(logits.clone(), diag.clone());
        let t2i = ce.forward(logits.transpose(), diag);
        i2t.mul_scalar(lambda) + t2i.mul_scalar(1.0 - lambda)
    }
}

impl Trainer for Pretrainer<'_> {
    type Batch = Result<super::data::Batch, String>;

    fn batches(
        &mut self,
        epoch: usize,
        skip: usize,
    ) -> Result<Box<dyn Iterator<Item = Self::Batch>>, Error> {
        let cfg = self.cfg;
        let pass = Pass {
            order: epoch_order(self.images.len(), cfg.seed, epoch, true),
            batch_size: cfg.batch_size,
            augment: Some(cfg.augment.clone()),
            normalize: cfg.preprocess.normalize,
            seed: cfg.seed,
            epoch,
            skip,
            prefetch: 2,
            // Contrastive losses need full batches.
            min_batch: cfg.batch_size,
            views: cfg.method.views(),
        };
        Ok(Box::new(Loader::spawn(
            self.images.clone(),
            self.labels.clone(),
            pass,
        )))
    }

    fn step(&mut self, batch: Self::Batch, lr: f64) -> Result<Step, Error> {
        let batch = batch.map_err(Error::Data)?;
        let b = batch.len();
        let s = batch.size;
        let views = batch.pixels.len() / (b * 3 * s * s);
        let x = Tensor::<4>::from_data(
            TensorData::new(batch.pixels, [views * b, 3, s, s]),
            &self.device,
        );
        let loss = match self.cfg.method {
            Method::Simclr => self.simclr(x, b, lr),
            Method::Moco => self.moco(x, b, lr),
            Method::Vicreg => self.vicreg(x, b, lr),
            Method::Clip | Method::Convirt => self.image_text(x, &batch.rows, lr)?,
            Method::Slip => self.slip(x, &batch.rows, lr)?,
            Method::Supervised => self.supervised(x, &batch.labels, lr),
        };
        // The epoch's loss is the mean over its batches.
        Ok(Step {
            loss,
            weight: 1.0,
            images: b,
        })
    }

    fn validate(&mut self) -> Result<Validation, Error> {
        Ok(Validation::NONE)
    }

    fn keep_best(&mut self) -> Result<(), Error> {
        Ok(())
    }

    fn save(&self, folder: &Path) -> Result<(), Error> {
        save_nets(&self.nets, folder)?;
        optim_save(&self.optim, &folder.join("optim.bpk"))
    }

    fn load(&mut self, folder: &Path) -> Result<(), Error> {
        // Module clones share their tensors; the loaded copy replaces them.
        self.nets = load_nets(self.nets.clone(), folder, &self.device, &self.base)?;
        if self.cfg.text.freeze_layers > 0 {
            self.nets = refreeze(self.nets.clone(), self.cfg.text.freeze_layers);
        }
        let path = folder.join("optim.bpk");
        let optim = std::mem::replace(&mut self.optim, super::optim::adamw(0.0));
        self.optim = optim
            .load(&path)
            .map_err(|e| Error::file("load optimizer state", &path)(e.to_string()))?;
        Ok(())
    }
}

impl Nets {
    /// The seeded networks of a method (`tower`: the text tower, for image-text methods).
    fn new(
        cfg: &PretrainConfig,
        tower: Option<TextTower>,
        classes: usize,
        device: &Device,
        base: &Device,
    ) -> Nets {
        let tower = || tower.expect("image-text methods have a text tower");
        match cfg.method {
            Method::Simclr | Method::Vicreg => Nets::Image(ImageSsl::new(
                cfg.arch,
                cfg.projection_dim,
                cfg.seed,
                device,
            )),
            Method::Moco => {
                let query = ImageSsl::new(cfg.arch, cfg.projection_dim, cfg.seed, device);
                let key = query.valid();
                let queue = ssl::initial_queue(cfg.moco_queue, cfg.projection_dim, cfg.seed, base);
                Nets::Moco { query, key, queue }
            }
            Method::Clip | Method::Convirt => Nets::Text(ImageText::new(
                cfg.arch,
                cfg.projection_dim,
                tower(),
                cfg.method == Method::Convirt,
                cfg.seed,
                device,
            )),
            Method::Supervised => Nets::Supervised(crate::model::Classifier::new(
                cfg.arch, classes, cfg.seed, device,
            )),
            Method::Slip => {
                let w = cfg.slip.clone().unwrap_or_default();
                Nets::Slip(Slip {
                    towers: ImageText::new(
                        cfg.arch,
                        cfg.projection_dim,
                        tower(),
                        w.text_loss == TextLoss::Convirt,
                        cfg.seed,
                        device,
                    ),
                    simclr_projection: Projection::new(
                        &mut Seeder::new("projection", cfg.seed),
                        cfg.arch.feature_dim(),
                        cfg.projection_dim,
                        true,
                        device,
                    ),
                })
            }
        }
    }
}

/// The text tower of an image-text run: the BERT of `data.text_model` (its first
/// `freeze_layers` layers frozen), or ktrack's own Transformer sized to the tokenizer.
fn text_tower(
    cfg: &PretrainConfig,
    data: &PretrainData,
    tokenizer: Option<&tokenizers::Tokenizer>,
    device: &Device,
) -> Result<TextTower, Error> {
    Ok(match &data.text_model {
        Some(dir) => TextTower::Bert(Bert::load(dir, device)?.freeze(cfg.text.freeze_layers)),
        None => {
            let vocab = tokenizer.map_or(2, |t| t.get_vocab_size(true));
            TextTower::Own(TextEncoder::new(&cfg.text, vocab, cfg.seed, device))
        }
    })
}

/// Frozen BERT layers stay frozen in a model read back from a checkpoint.
fn refreeze(nets: Nets, layers: usize) -> Nets {
    let fix = |m: ImageText| match m.text {
        TextTower::Bert(b) => ImageText {
            text: TextTower::Bert(b.freeze(layers)),
            ..m
        },
        _ => m,
    };
    match nets {
        Nets::Text(m) => Nets::Text(fix(m)),
        Nets::Slip(s) => Nets::Slip(Slip {
            towers: fix(s.towers),
            ..s
        }),
        other => other,
    }
}

fn optim_save(optim: &ModuleOptimizer, path: &Path) -> Result<(), Error> {
    optim
        .save(path)
        .map_err(|e| Error::file("save optimizer state", path)(e.to_string()))
}

fn save_nets(nets: &Nets, folder: &Path) -> Result<(), Error> {
    use super::downstream::save_model;
    match nets {
        Nets::Image(m) => save_model(&m.valid(), &folder.join("model.bpk")),
        Nets::Moco { query, key, queue } => {
            save_model(&query.valid(), &folder.join("model.bpk"))?;
            save_model(key, &folder.join("key.bpk"))?;
            let q = queue
                .clone()
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| Error::Data(format!("{e:?}")))?;
            let bytes: Vec<u8> = q.iter().flat_map(|v| v.to_le_bytes()).collect();
            checkpoint::write_atomic(&folder.join("queue.f32"), &bytes)
        }
        Nets::Text(m) => save_model(&m.valid(), &folder.join("model.bpk")),
        Nets::Slip(m) => save_model(&m.valid(), &folder.join("model.bpk")),
        Nets::Supervised(m) => save_model(&m.valid(), &folder.join("model.bpk")),
    }
}

fn load_nets(nets: Nets, folder: &Path, device: &Device, base: &Device) -> Result<Nets, Error> {
    let load = |what: &str| {
        let p = folder.join(what);
        move |e: burn::store::RecordError| Error::file("load checkpoint", p)(e.to_string())
    };
    Ok(match nets {
        Nets::Image(m) => Nets::Image(
            m.try_load_file(folder.join("model.bpk"))
                .map_err(load("model.bpk"))?,
        ),
        Nets::Moco { query, key, queue } => {
            let query = query
                .try_load_file(folder.join("model.bpk"))
                .map_err(load("model.bpk"))?;
            let key = key
                .try_load_file(folder.join("key.bpk"))
                .map_err(load("key.bpk"))?;
            let p = folder.join("queue.f32");
            let bytes = std::fs::read(&p).map_err(|e| Error::file("read", &p)(e.to_string()))?;
            let values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let shape = queue.dims();
            let _ = device;
            Nets::Moco {
                query,
                key,
                queue: Tensor::<2>::from_data(TensorData::new(values, shape), base),
            }
        }
        Nets::Text(m) => Nets::Text(
            m.try_load_file(folder.join("model.bpk"))
                .map_err(load("model.bpk"))?,
        ),
        Nets::Slip(m) => Nets::Slip(
            m.try_load_file(folder.join("model.bpk"))
                .map_err(load("model.bpk"))?,
        ),
        Nets::Supervised(m) => Nets::Supervised(
            m.try_load_file(folder.join("model.bpk"))
                .map_err(load("model.bpk"))?,
        ),
    })
}

#[cfg(test)]
mod tests;
