//! Sweep specs (`experiments/*.toml`): cohorts, split and fraction parameters, pretraining
//! runs, inits, the downstream grid and hyperparameters with per-protocol overrides.
//!
//! Parsing rejects unknown keys; [`Spec::validate`] then checks every reference (inits →
//! pretraining runs, grid → inits), every value (ratios, fractions, tasks) and every file
//! (descriptors, weights) before anything runs, naming the spec file and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::Label;
use crate::model::Arch;
use crate::model::ssl::TextConfig;
use crate::train::data::{Augment, Normalize};
use crate::train::downstream::{HeadInit, Protocol, Select, Settings};
use crate::train::pretrain::{Method, SlipConfig, VicregWeights};
use crate::train::{DeviceKind, Precision};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not read sweep spec `{path}`: {message}")]
    Read { path: PathBuf, message: String },
    #[error("sweep spec `{path}` is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("sweep spec `{path}`, `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl crate::hint::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Parse { .. } | Error::Invalid { .. } => Some(
                "the keys a sweep spec takes are listed in README.md, section \"Sweep specs\"; experiments/quickstart.toml is a complete example"
                    .into(),
            ),
            Error::Read { .. } => None,
        }
    }
}

/// `[cohorts]`: the internal cohort (split into train/val/test) and external validation ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cohorts {
    /// Dataset descriptor of the internal cohort.
    pub train: PathBuf,
    /// Descriptors of external cohorts, evaluated whole (never trained on).
    #[serde(default)]
    pub external: Vec<PathBuf>,
    /// Generate synthetic cohorts (descriptors with `[synth]`) when their files are missing.
    #[serde(default = "yes")]
    pub generate: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    #[serde(default = "d_train")]
    pub train: f64,
    #[serde(default = "d_val")]
    pub val: f64,
    #[serde(default = "d_test")]
    pub test: f64,
    /// kl, incidence_4y, progression_4y or none.
    #[serde(default = "d_stratify")]
    pub stratify: String,
    #[serde(default)]
    pub seed: u64,
}

fn d_train() -> f64 {
    0.7
}
fn d_val() -> f64 {
    0.1
}
fn d_test() -> f64 {
    0.2
}
fn d_stratify() -> String {
    "kl".into()
}

impl Default for SplitSpec {
    fn default() -> SplitSpec {
        SplitSpec {
            train: d_train(),
            val: d_val(),
            test: d_test(),
            stratify: d_stratify(),
            seed: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FractionSpec {
    /// Label fractions of the train partition (nested; sampled per task label).
    #[serde(default = "d_fractions")]
    pub values: Vec<f64>,
    #[serde(default)]
    pub seed: u64,
}

fn d_fractions() -> Vec<f64> {
    vec![0.01, 0.1, 0.25, 0.5, 1.0]
}

impl Default for FractionSpec {
    fn default() -> FractionSpec {
        FractionSpec {
            values: d_fractions(),
            seed: 0,
        }
    }
}

/// `[pretrain.NAME]`: one self-supervised pretraining run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainSpec {
    pub method: Method,
    /// "train" (the internal cohort's train partition) and/or dataset descriptors (whole cohorts).
    pub data: Vec<String>,
    #[serde(default)]
    pub arch: Option<Arch>,
    #[serde(default = "d_pre_epochs")]
    pub epochs: usize,
    #[serde(default = "d_pre_batch")]
    pub batch_size: usize,
    #[serde(default = "d_pre_lr")]
    pub lr: f64,
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    #[serde(default = "d_warmup")]
    pub warmup_epochs: f64,
    #[serde(default = "d_temperature")]
    pub temperature: f64,
    #[serde(default = "d_proj")]
    pub projection_dim: usize,
    #[serde(default = "d_queue")]
    pub moco_queue: usize,
    #[serde(default = "d_momentum")]
    pub moco_momentum: f64,
    #[serde(default = "d_lambda")]
    pub convirt_lambda: f64,
    /// VICReg's loss weights (`vicreg = { invariance = 25, variance = 25, covariance = 1 }`).
    #[serde(default)]
    pub vicreg: VicregWeights,
    /// SLIP's losses (`slip = { text_loss = "clip", simclr_weight = 1, text_weight = 1 }`).
    #[serde(default)]
    pub slip: SlipConfig,
    /// The label a `supervised` pretraining learns (`kl`, `incidence_4y`, `progression_4y`).
    #[serde(default)]
    pub label: Option<Label>,
    #[serde(default)]
    pub text: TextConfig,
    /// A user's `tokenizer.json` for the report text (default: trained on the reports).
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    #[serde(default)]
    pub augment: Option<Augment>,
    #[serde(default)]
    pub seed: u64,
    /// `fp32` or `bf16` (bfloat16 convolutions and matrix products; LibTorch only).
    #[serde(default)]
    pub precision: Precision,
}

fn d_pre_epochs() -> usize {
    20
}
fn d_pre_batch() -> usize {
    64
}
fn d_pre_lr() -> f64 {
    1e-3
}
fn d_wd() -> f64 {
    1e-4
}
fn d_warmup() -> f64 {
    1.0
}
fn d_temperature() -> f64 {
    0.2
}
fn d_proj() -> usize {
    128
}
fn d_queue() -> usize {
    4096
}
fn d_momentum() -> f64 {
    0.99
}
fn d_lambda() -> f64 {
    0.75
}

/// `[inits.NAME]`: where an encoder's weights come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum InitSpec {
    Random,
    /// torchvision ResNet weights (`.pth` or `.safetensors`). Without `weights`, the file given
    /// by `--imagenet-weights` / `KTRACK_IMAGENET_WEIGHTS`; without either, the init is skipped.
    Torchvision {
        #[serde(default)]
        weights: Option<PathBuf>,
    },
    /// The encoder of a `[pretrain.NAME]` run.
    Pretrain {
        pretrain: String,
        /// Allow test/external patients in the pretraining data (counted and reported).
        #[serde(default)]
        allow_leakage: bool,
    },
}

/// `[grid]`: the downstream runs, as a product.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    pub inits: Vec<String>,
    pub tasks: Vec<Label>,
    pub protocols: Vec<Protocol>,
    /// Default: all of `[fractions].values`.
    #[serde(default)]
    pub fractions: Option<Vec<f64>>,
    #[serde(default = "d_seeds")]
    pub seeds: Vec<u64>,
}

fn d_seeds() -> Vec<u64> {
    vec![0]
}

/// Downstream hyperparameters; every field optional so protocol tables can override some.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hyper {
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    pub weight_decay: Option<f64>,
    pub warmup_epochs: Option<f64>,
    pub patience: Option<usize>,
    /// What selects the best epoch: `metric` (the validation QWK or AUROC) or `loss` (the
    /// validation cross-entropy).
    pub select: Option<Select>,
    /// How the linear head starts: `random` or `zeros`.
    pub head_init: Option<HeadInit>,
    pub augment: Option<Augment>,
}

impl Hyper {
    fn or(&self, base: &Hyper) -> Hyper {
        Hyper {
            epochs: self.epochs.or(base.epochs),
            batch_size: self.batch_size.or(base.batch_size),
            lr: self.lr.or(base.lr),
            weight_decay: self.weight_decay.or(base.weight_decay),
            warmup_epochs: self.warmup_epochs.or(base.warmup_epochs),
            patience: self.patience.or(base.patience),
            select: self.select.or(base.select),
            head_init: self.head_init.or(base.head_init),
            augment: self.augment.clone().or_else(|| base.augment.clone()),
        }
    }
}

/// `[train]`: shared settings, defaults and `[train.linear]` / `[train.finetune]` overrides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    #[serde(default = "d_arch")]
    pub arch: Arch,
    #[serde(default = "d_size")]
    pub image_size: u32,
    #[serde(default = "d_normalize")]
    pub normalize: Normalize,
    #[serde(default = "yes")]
    pub flip_left: bool,
    /// `fp32` or `bf16` (bfloat16 convolutions and matrix products; LibTorch only).
    #[serde(default)]
    pub precision: Precision,
    #[serde(flatten)]
    pub defaults: Hyper,
    #[serde(default)]
    pub linear: Hyper,
    #[serde(default)]
    pub finetune: Hyper,
    /// LP-FT's fine-tune phase (its probe phase is `[train.linear]`'s).
    #[serde(default)]
    pub lpft: Hyper,
}

fn d_arch() -> Arch {
    Arch::Resnet18
}
fn d_size() -> u32 {
    224
}
fn d_normalize() -> Normalize {
    Normalize::Zscore
}

impl Default for TrainSpec {
    fn default() -> TrainSpec {
        TrainSpec {
            arch: d_arch(),
            image_size: d_size(),
            normalize: d_normalize(),
            flip_left: true,
            precision: Precision::Fp32,
            defaults: Hyper::default(),
            linear: Hyper::default(),
            finetune: Hyper::default(),
            lpft: Hyper::default(),
        }
    }
}

impl TrainSpec {
    /// LP-FT's probe phase: the linear protocol's settings.
    pub fn probe_phase(&self) -> Settings {
        self.resolve(Protocol::Linear)
    }

    /// Built-in defaults < `[train]` < `[train.<protocol>]`.
    /// Fully resolved settings of one protocol.
    pub fn resolve(&self, protocol: Protocol) -> Settings {
        let builtin = match protocol {
            // A probe trains only the head: more epochs, a higher rate, no augmentation (so
            // features are computed once).
            Protocol::Linear => Hyper {
                epochs: Some(30),
                batch_size: Some(64),
                lr: Some(1e-2),
                weight_decay: Some(1e-4),
                warmup_epochs: Some(0.0),
                patience: Some(10),
                select: None,
                head_init: None,
                augment: Some(Augment::off()),
            },
            Protocol::Finetune => Hyper {
                epochs: Some(20),
                batch_size: Some(32),
                lr: Some(1e-3),
                weight_decay: Some(1e-4),
                warmup_epochs: Some(1.0),
                patience: Some(5),
                select: None,
                head_init: None,
                augment: Some(Augment::default()),
            },
            // After the probe the head already fits: a tenth of fine-tune's rate keeps the
            // features from being distorted early (the point of LP-FT).
            Protocol::Lpft => Hyper {
                epochs: Some(20),
                batch_size: Some(32),
                lr: Some(1e-4),
                weight_decay: Some(1e-4),
                warmup_epochs: Some(1.0),
                patience: Some(5),
                select: None,
                head_init: None,
                augment: Some(Augment::default()),
            },
        };
        let over = match protocol {
            Protocol::Linear => &self.linear,
            Protocol::Finetune => &self.finetune,
            Protocol::Lpft => &self.lpft,
        };
        let h = over.or(&self.defaults).or(&builtin);
        Settings {
            epochs: h.epochs.unwrap_or(1),
            batch_size: h.batch_size.unwrap_or(32),
            lr: h.lr.unwrap_or(1e-3),
            weight_decay: h.weight_decay.unwrap_or(0.0),
            warmup_epochs: h.warmup_epochs.unwrap_or(0.0),
            patience: h.patience,
            select: h.select.unwrap_or_default(),
            head_init: h.head_init.unwrap_or_default(),
            augment: h.augment.unwrap_or_else(Augment::off),
        }
    }
}

/// `[run]`: where and how to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    #[serde(default = "d_device")]
    pub device: DeviceKind,
    /// CPU threads per process (recorded with every run; reductions may depend on it).
    #[serde(default = "d_threads")]
    pub threads: usize,
}

fn d_device() -> DeviceKind {
    DeviceKind::Cpu
}
fn d_threads() -> usize {
    2
}

impl Default for RunSpec {
    fn default() -> RunSpec {
        RunSpec {
            device: d_device(),
            threads: d_threads(),
        }
    }
}

/// A whole sweep spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    pub cohorts: Cohorts,
    #[serde(default)]
    pub split: SplitSpec,
    #[serde(default)]
    pub fractions: FractionSpec,
    #[serde(default)]
    pub pretrain: BTreeMap<String, PretrainSpec>,
    pub inits: BTreeMap<String, InitSpec>,
    pub grid: Grid,
    #[serde(default)]
    pub train: TrainSpec,
    #[serde(default)]
    pub run: RunSpec,
}

/// A parsed spec with its paths resolved against the spec's folder.
#[derive(Clone, Debug)]
pub struct LoadedSpec {
    pub path: PathBuf,
    pub spec: Spec,
    /// blake3 of the spec file's bytes.
    pub hash: crate::id::Hash,
}

impl LoadedSpec {
    pub fn load(path: &Path) -> Result<LoadedSpec, Error> {
        if let Some(kind) = crate::fault::file_kind(path) {
            return Err(Error::Read {
                path: path.to_path_buf(),
                message: format!("it is {kind}, not a spec file"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let spec: Spec = toml::from_str(&text).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: crate::quote::clip_lines(e.to_string().trim_end()),
        })?;
        let loaded = LoadedSpec {
            path: path.to_path_buf(),
            hash: crate::id::Hash::of(text.as_bytes()),
            spec,
        };
        loaded.validate()?;
        Ok(loaded)
    }

    /// A path in the spec, relative to the spec's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        let dir = self.path.parent().unwrap_or(Path::new(""));
        dir.join(p)
    }

    pub(crate) fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            path: self.path.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn check_file(&self, key: &str, p: &Path) -> Result<(), Error> {
        let full = self.resolve(p);
        if full.is_file() {
            Ok(())
        } else {
            Err(self.invalid(key, format!("file `{}` does not exist", full.display())))
        }
    }

    /// Checks references, values and files.
    pub fn validate(&self) -> Result<(), Error> {
        self.validate_data()?;
        self.validate_pretrain()?;
        self.validate_inits()?;
        self.validate_grid()
    }

    /// The name, cohorts, split and fractions.
    fn validate_data(&self) -> Result<(), Error> {
        let s = &self.spec;
        crate::data::descriptor::validate_name(&s.name).map_err(|m| self.invalid("name", m))?;
        self.check_file("cohorts.train", &s.cohorts.train)?;
        for (i, e) in s.cohorts.external.iter().enumerate() {
            self.check_file(&format!("cohorts.external[{i}]"), e)?;
        }
        let sp = &s.split;
        for (k, v) in [("train", sp.train), ("val", sp.val), ("test", sp.test)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(self.invalid(format!("split.{k}"), format!("{v} is not in 0..=1")));
            }
        }
        if (sp.train + sp.val + sp.test - 1.0).abs() > 1e-9 {
            return Err(self.invalid("split", "train + val + test must add up to 1"));
        }
        if sp.val == 0.0 {
            return Err(self.invalid(
                "split.val",
                "downstream runs need a validation partition for early stopping",
            ));
        }
        if sp.stratify != "none" {
            sp.stratify
                .parse::<Label>()
                .map_err(|m| self.invalid("split.stratify", m))?;
        }
        if s.fractions.values.is_empty() {
            return Err(self.invalid("fractions.values", "give at least one fraction"));
        }
        for f in &s.fractions.values {
            if !(*f > 0.0 && *f <= 1.0) {
                return Err(self.invalid("fractions.values", format!("{f} is not in (0, 1]")));
            }
        }
        Ok(())
    }

    /// The pretraining runs: sources, sizes, files.
    fn validate_pretrain(&self) -> Result<(), Error> {
        for (name, p) in &self.spec.pretrain {
            let key = format!("pretrain.{name}");
            if p.data.is_empty() {
                return Err(self.invalid(
                    format!("{key}.data"),
                    "name at least one source (\"train\" or a dataset descriptor)",
                ));
            }
            for (i, d) in p.data.iter().enumerate() {
                if d != "train" {
                    self.check_file(&format!("{key}.data[{i}]"), Path::new(d))?;
                }
            }
            if p.epochs == 0 || p.batch_size < 2 {
                return Err(self.invalid(key, "epochs must be ≥ 1 and batch_size ≥ 2"));
            }
            let v = &p.vicreg;
            if [v.invariance, v.variance, v.covariance]
                .iter()
                .any(|w| !w.is_finite() || *w < 0.0)
                || v.invariance + v.variance + v.covariance == 0.0
            {
                return Err(self.invalid(
                    format!("{key}.vicreg"),
                    "the weights must be finite, ≥ 0 and not all 0",
                ));
            }
            let w = &p.slip;
            if [w.simclr_weight, w.text_weight]
                .iter()
                .any(|w| !w.is_finite() || *w < 0.0)
                || w.simclr_weight + w.text_weight == 0.0
            {
                return Err(self.invalid(
                    format!("{key}.slip"),
                    "the weights must be finite, ≥ 0 and not both 0",
                ));
            }
            match (p.method, p.label) {
                (Method::Supervised, None) => {
                    return Err(self.invalid(
                        format!("{key}.label"),
                        "a supervised pretraining needs the label it learns (kl, incidence_4y, progression_4y, or a generic set's class)",
                    ));
                }
                (m, Some(_)) if m != Method::Supervised => {
                    return Err(self.invalid(
                        format!("{key}.label"),
                        format!("{} learns no label; remove `label`", m.name()),
                    ));
                }
                _ => {}
            }
            if p.method == Method::Moco && p.moco_queue < p.batch_size {
                return Err(self.invalid(
                    format!("{key}.moco_queue"),
                    "the queue must hold at least one batch",
                ));
            }
            if let Some(t) = &p.tokenizer {
                self.check_file(&format!("{key}.tokenizer"), t)?;
            }
            self.validate_text(&key, p)?;
        }
        Ok(())
    }

    /// A pretraining's text tower: a BERT folder that reads as one and fits `max_len` and
    /// `freeze_layers`, and an own learning rate that is one.
    fn validate_text(&self, key: &str, p: &PretrainSpec) -> Result<(), Error> {
        let t = &p.text;
        let at = |k: &str| format!("{key}.text.{k}");
        if let Some(lr) = t.lr
            && !(lr.is_finite() && lr > 0.0)
        {
            return Err(self.invalid(at("lr"), "must be a learning rate > 0"));
        }
        let Some(dir) = &t.model else {
            if t.freeze_layers > 0 {
                return Err(self.invalid(
                    at("freeze_layers"),
                    "freezes layers of a pretrained text model; set `text.model` too",
                ));
            }
            return Ok(());
        };
        if !p.method.uses_text() {
            return Err(self.invalid(
                at("model"),
                format!("{} has no text tower", p.method.name()),
            ));
        }
        if p.tokenizer.is_some() {
            return Err(self.invalid(
                format!("{key}.tokenizer"),
                "a text model brings its own tokenizer; remove `tokenizer`",
            ));
        }
        let full = self.resolve(dir);
        if !full.is_dir() {
            return Err(self.invalid(at("model"), format!("`{}` is not a folder", full.display())));
        }
        let cfg = crate::model::bert::BertConfig::read(&full)
            .map_err(|e| self.invalid(at("model"), e.to_string()))?;
        if !full.join(crate::model::bert::WEIGHTS).is_file() {
            return Err(self.invalid(
                at("model"),
                format!(
                    "`{}` has no {} (ktrack reads safetensors weights)",
                    full.display(),
                    crate::model::bert::WEIGHTS
                ),
            ));
        }
        if t.max_len > cfg.max_position_embeddings || t.max_len < 2 {
            return Err(self.invalid(
                at("max_len"),
                format!(
                    "{} does not fit the model's {} positions (and [CLS] … [SEP] need 2)",
                    t.max_len, cfg.max_position_embeddings
                ),
            ));
        }
        if t.freeze_layers > cfg.num_hidden_layers {
            return Err(self.invalid(
                at("freeze_layers"),
                format!(
                    "{} is more than the model's {} layers",
                    t.freeze_layers, cfg.num_hidden_layers
                ),
            ));
        }
        Ok(())
    }

    /// The inits: names, the pretraining runs and weight files they name.
    fn validate_inits(&self) -> Result<(), Error> {
        let s = &self.spec;
        for (name, init) in &s.inits {
            crate::data::descriptor::validate_name(name)
                .map_err(|m| self.invalid(format!("inits.{name}"), m))?;
            match init {
                InitSpec::Pretrain { pretrain, .. } if !s.pretrain.contains_key(pretrain) => {
                    return Err(self.invalid(
                        format!("inits.{name}.pretrain"),
                        format!(
                            "names `{pretrain}`, but there is no [pretrain.{pretrain}] (defined: {})",
                            s.pretrain.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                InitSpec::Torchvision { weights: Some(w) } => {
                    self.check_file(&format!("inits.{name}.weights"), w)?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The grid and the training settings.
    fn validate_grid(&self) -> Result<(), Error> {
        let s = &self.spec;
        let g = &s.grid;
        for (key, empty) in [
            ("grid.inits", g.inits.is_empty()),
            ("grid.tasks", g.tasks.is_empty()),
            ("grid.protocols", g.protocols.is_empty()),
            ("grid.seeds", g.seeds.is_empty()),
        ] {
            if empty {
                return Err(self.invalid(key, "must not be empty"));
            }
        }
        if g.tasks.contains(&Label::Class) {
            return Err(self.invalid(
                "grid.tasks",
                "`class` is a generic set's label, for a supervised pretraining to learn; the tasks are kl, incidence_4y and progression_4y",
            ));
        }
        for i in &g.inits {
            if !s.inits.contains_key(i) {
                return Err(self.invalid(
                    "grid.inits",
                    format!(
                        "names `{i}`, but there is no [inits.{i}] (defined: {})",
                        s.inits.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        if let Some(fr) = &g.fractions {
            for f in fr {
                if !s.fractions.values.iter().any(|v| (v - f).abs() < 1e-12) {
                    return Err(self.invalid(
                        "grid.fractions",
                        format!("{f} is not one of fractions.values"),
                    ));
                }
            }
        }
        for p in [Protocol::Linear, Protocol::Finetune, Protocol::Lpft] {
            let r = s.train.resolve(p);
            if r.epochs == 0 || r.batch_size < 2 || r.lr <= 0.0 {
                return Err(self.invalid(
                    format!("train.{}", p.name()),
                    "epochs ≥ 1, batch_size ≥ 2 and lr > 0 are required",
                ));
            }
        }
        if s.train.image_size < 16 {
            return Err(self.invalid("train.image_size", "must be at least 16"));
        }
        Ok(())
    }

    /// The grid's fractions (default: all of `[fractions].values`).
    pub fn grid_fractions(&self) -> Vec<f64> {
        self.spec
            .grid
            .fractions
            .clone()
            .unwrap_or_else(|| self.spec.fractions.values.clone())
    }
}
