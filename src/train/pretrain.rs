//! Self-supervised pretraining of an image encoder.
//!
//! - SimCLR: two augmented views per image, NT-Xent over the 2N projected views.
//! - MoCo v2: a query network and a momentum (EMA) key network, a queue of negative keys,
//!   InfoNCE with the positive key first.
//! - CLIP: image and report towers, symmetric InfoNCE over the batch's image-report pairs.
//! - ConVIRT: the same towers with non-linear projections and an asymmetric weighting λ of the
//!   image→text and text→image losses.
//!
//! Radiograph augmentations only (random resized crop, rotation, flip, contrast/brightness,
//! blur, noise; no colour jitter). Outputs in the run directory: `encoder.safetensors` (the
//! image encoder; projection heads are dropped), for image-text also `text_encoder.safetensors`
//! and `tokenizer.json`, and `curves.json`. Epoch checkpoints make runs resumable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::data::{
    Augment, BaseImages, Example, ImageSource, Loader, Pass, Preprocess, epoch_order,
};
use super::{DeviceKind, Error, checkpoint, schedule, text};
use crate::model::import;
use crate::model::init::Seeder;
use crate::model::ssl::{self, ImageSsl, ImageText, Projection, TextConfig, TextEncoder};
use crate::model::{Arch, ResNet};
use crate::progress::Task;

/// The self-supervised objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Simclr,
    Moco,
    Clip,
    Convirt,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Simclr => "simclr",
            Method::Moco => "moco",
            Method::Clip => "clip",
            Method::Convirt => "convirt",
        }
    }

    /// Image-text methods need report text.
    pub fn uses_text(self) -> bool {
        matches!(self, Method::Clip | Method::Convirt)
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
    pub text: TextConfig,
    pub seed: u64,
    pub device: DeviceKind,
    pub threads: usize,
}

/// The images (and, for image-text methods, one report per image) to pretrain on.
pub struct PretrainData<'a> {
    pub examples: Vec<Example>,
    pub reports: Option<Vec<String>>,
    pub images: &'a dyn ImageSource,
    /// A user's tokenizer (else one is trained on the reports).
    pub tokenizer: Option<PathBuf>,
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

#[derive(Clone, Debug, Serialize, Deserialize)]
struct LoopState {
    epoch: usize,
    step: usize,
    curves: Vec<PretrainCurve>,
    #[serde(with = "crate::lossless::f64")]
    seconds: f64,
    images: usize,
}

/// The trained networks of one method (one value per run, so variant sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Nets {
    Image(ImageSsl),
    Moco {
        query: ImageSsl,
        key: ImageSsl,
        queue: Tensor<2>,
    },
    Text(ImageText),
}

/// Runs (or resumes) a pretraining in `run_dir`.
pub fn run(
    cfg: &PretrainConfig,
    data: &PretrainData<'_>,
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
    super::backend::pin_threads(cfg.threads);
    let base = cfg.device.device()?;
    let device = base.clone().autodiff();
    std::fs::create_dir_all(run_dir).map_err(|e| Error::file("create", run_dir)(e.to_string()))?;
    let ckpt_dir = run_dir.join("checkpoints");

    // Text side: the tokenizer is fixed before training (and saved with the outputs).
    let tokenizer = if cfg.method.uses_text() {
        let tok = match &data.tokenizer {
            Some(p) => text::load_tokenizer(p)?,
            None => text::train_tokenizer(
                data.reports.as_deref().unwrap_or_default(),
                cfg.text.vocab_size,
            )?,
        };
        text::save_tokenizer(&tok, &run_dir.join("tokenizer.json"))?;
        Some(tok)
    } else {
        None
    };

    let mut nets = match cfg.method {
        Method::Simclr => Nets::Image(ImageSsl::new(
            cfg.arch,
            cfg.projection_dim,
            cfg.seed,
            &device,
        )),
        Method::Moco => {
            let query = ImageSsl::new(cfg.arch, cfg.projection_dim, cfg.seed, &device);
            let key = query.valid();
            let queue = ssl::initial_queue(cfg.moco_queue, cfg.projection_dim, cfg.seed, &base);
            Nets::Moco { query, key, queue }
        }
        Method::Clip | Method::Convirt => {
            let vocab = tokenizer.as_ref().map_or(2, |t| t.get_vocab_size(true));
            let mlp = cfg.method == Method::Convirt;
            Nets::Text(ImageText {
                encoder: ResNet::new(cfg.arch, &mut Seeder::new("encoder", cfg.seed), &device),
                image_projection: Projection::new(
                    &mut Seeder::new("image-projection", cfg.seed),
                    cfg.arch.feature_dim(),
                    cfg.projection_dim,
                    mlp,
                    &device,
                ),
                text: TextEncoder::new(&cfg.text, vocab, cfg.seed, &device),
                text_projection: Projection::new(
                    &mut Seeder::new("text-projection", cfg.seed),
                    cfg.text.dim,
                    cfg.projection_dim,
                    mlp,
                    &device,
                ),
            })
        }
    };
    let mut optim = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay as f32)
        .init();

    let mut state = LoopState {
        epoch: 0,
        step: 0,
        curves: Vec::new(),
        seconds: 0.0,
        images: 0,
    };
    let mut resumed_from_epoch = None;
    if let Some(folder) = checkpoint::current(&ckpt_dir) {
        state = checkpoint::load_state(&folder)?;
        nets = load_nets(nets, &folder, &device, &base)?;
        let optim_path = folder.join("optim.bpk");
        optim = optim
            .load(&optim_path)
            .map_err(|e| Error::file("load optimizer state", &optim_path)(e.to_string()))?;
        resumed_from_epoch = Some(state.epoch);
    }

    let images = Arc::new(
        BaseImages::load(&data.examples, data.images, &cfg.preprocess, interrupt).map_err(|e| {
            if interrupt.load(Ordering::Relaxed) {
                Error::Interrupted { epoch: state.epoch }
            } else {
                Error::Data(e)
            }
        })?,
    );
    let labels = Arc::new(vec![0u8; data.examples.len()]);
    let per_epoch = data.examples.len() / cfg.batch_size.max(2);
    if per_epoch == 0 {
        return Err(Error::Data(format!(
            "{} images are fewer than one batch of {}",
            data.examples.len(),
            cfg.batch_size
        )));
    }
    let total = cfg.epochs * per_epoch;
    let warmup = (cfg.warmup_epochs * per_epoch as f64).round() as usize;
    let ce = CrossEntropyLossConfig::new().init(&device);
    progress.start(total, state.epoch * per_epoch);

    while state.epoch < cfg.epochs {
        let epoch = state.epoch;
        let started = Instant::now();
        let (mut loss_sum, mut batches, mut lr) = (0.0f64, 0usize, cfg.lr);
        let pass = Pass {
            order: epoch_order(data.examples.len(), cfg.seed, epoch, true),
            batch_size: cfg.batch_size,
            augment: Some(cfg.augment.clone()),
            normalize: cfg.preprocess.normalize,
            seed: cfg.seed,
            epoch,
            skip: 0,
            prefetch: 2,
            // Contrastive losses need full batches.
            min_batch: cfg.batch_size,
            views: if cfg.method.uses_text() { 1 } else { 2 },
        };
        for batch in Loader::spawn(images.clone(), labels.clone(), pass) {
            if interrupt.load(Ordering::Relaxed) {
                // The epoch restarts on resume from the last epoch checkpoint.
                return Err(Error::Interrupted { epoch });
            }
            lr = schedule::warmup_cosine(cfg.lr, state.step, warmup, total);
            let b = batch.len();
            let s = batch.size;
            let views = batch.pixels.len() / (b * 3 * s * s);
            let x = Tensor::<4>::from_data(
                TensorData::new(batch.pixels, [views * b, 3, s, s]),
                &device,
            );
            let targets = |n: usize, f: &dyn Fn(usize) -> i64| {
                Tensor::<1, Int>::from_data(
                    TensorData::new((0..n).map(f).collect::<Vec<i64>>(), [n]),
                    &device,
                )
            };
            let loss = match &mut nets {
                Nets::Image(model) => {
                    let z = model.forward(x);
                    let sim = z.clone().matmul(z.transpose()).div_scalar(cfg.temperature);
                    let n = 2 * b;
                    let eye: Vec<f32> = (0..n * n)
                        .map(|i| if i / n == i % n { -1e9 } else { 0.0 })
                        .collect();
                    let logits =
                        sim + Tensor::<2>::from_data(TensorData::new(eye, [n, n]), &device);
                    let loss = ce.forward(logits, targets(n, &|i| ((i + b) % n) as i64));
                    let grads = GradientsParams::from_grads(loss.backward(), model);
                    *model = optim.step(lr, model.clone(), grads);
                    scalar(&loss)
                }
                Nets::Moco { query, key, queue } => {
                    let views = x.clone().narrow(0, 0, b);
                    let other = x.narrow(0, b, b);
                    let q = query.forward(views);
                    let k = key.forward(other.inner());
                    let k_ad = Tensor::<2>::from_inner(k.clone());
                    let l_pos = (q.clone() * k_ad).sum_dim(1);
                    let l_neg = q.matmul(Tensor::<2>::from_inner(queue.clone()).transpose());
                    let logits = Tensor::cat(vec![l_pos, l_neg], 1).div_scalar(cfg.temperature);
                    let loss = ce.forward(logits, targets(b, &|_| 0));
                    let grads = GradientsParams::from_grads(loss.backward(), query);
                    *query = optim.step(lr, query.clone(), grads);
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
                    scalar(&loss)
                }
                Nets::Text(model) => {
                    let reports = data.reports.as_ref().expect("checked above");
                    let texts: Vec<&str> =
                        batch.rows.iter().map(|&r| reports[r].as_str()).collect();
                    let tok = tokenizer
                        .as_ref()
                        .expect("image-text methods have a tokenizer");
                    let (ids, pad) = text::encode_batch(tok, &texts, cfg.text.max_len, &device)?;
                    let img =
                        ssl::normalize(model.image_projection.forward(model.encoder.forward(x)));
                    let txt =
                        ssl::normalize(model.text_projection.forward(model.text.forward(ids, pad)));
                    let logits = img.matmul(txt.transpose()).div_scalar(cfg.temperature);
                    let diag = targets(b, &|i| i as i64);
                    let i2t = ce.forward(logits.clone(), diag.clone());
                    let t2i = ce.forward(logits.transpose(), diag);
                    let lambda = if cfg.method == Method::Convirt {
                        cfg.convirt_lambda
                    } else {
                        0.5
                    };
                    let loss = i2t.mul_scalar(lambda) + t2i.mul_scalar(1.0 - lambda);
                    let grads = GradientsParams::from_grads(loss.backward(), model);
                    *model = optim.step(lr, model.clone(), grads);
                    scalar(&loss)
                }
            };
            loss_sum += loss;
            batches += 1;
            state.step += 1;
            state.images += b;
            progress.step();
        }
        let seconds = started.elapsed().as_secs_f64();
        state.seconds += seconds;
        let mean = loss_sum / batches.max(1) as f64;
        state.curves.push(PretrainCurve {
            epoch,
            loss: mean,
            lr,
            seconds,
        });
        progress.epoch(epoch, mean, f64::NAN);
        tracing::info!(epoch, loss = mean, "pretraining epoch done");
        state.epoch += 1;
        let snapshot = state.clone();
        checkpoint::save(&ckpt_dir, &snapshot, |folder| {
            save_nets(&nets, folder)?;
            let p = folder.join("optim.bpk");
            optim_save(&optim, &p)
        })?;
    }

    // Keep the encoders; the projection heads are dropped.
    let encoder_path = run_dir.join("encoder.safetensors");
    let mut text_path = None;
    match &nets {
        Nets::Image(m) => import::save_checkpoint(&m.encoder.valid(), &encoder_path)?,
        Nets::Moco { query, .. } => import::save_checkpoint(&query.encoder.valid(), &encoder_path)?,
        Nets::Text(m) => {
            import::save_checkpoint(&m.encoder.valid(), &encoder_path)?;
            let p = run_dir.join("text_encoder.safetensors");
            import::save_checkpoint(&m.text.valid(), &p)?;
            text_path = Some(p);
        }
    }
    checkpoint::write_atomic(
        &run_dir.join("curves.json"),
        &serde_json::to_vec_pretty(&state.curves).expect("curves serialize"),
    )?;
    let _ = std::fs::remove_dir_all(&ckpt_dir);
    Ok(PretrainReport {
        encoder: encoder_path,
        text_encoder: text_path,
        tokenizer: tokenizer.map(|_| run_dir.join("tokenizer.json")),
        curves: state.curves,
        images_per_second: state.images as f64 / state.seconds.max(1e-9),
        resumed_from_epoch,
    })
}

fn scalar(t: &Tensor<1>) -> f64 {
    t.clone()
        .into_data()
        .try_to_vec::<f32>()
        .map(|v| f64::from(v[0]))
        .unwrap_or(f64::NAN)
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
    })
}

#[cfg(test)]
mod tests;
