//! From a validated spec to runs: prepare the data (generate synthetic cohorts if asked,
//! import, split, fractions, store weights files — all idempotent and cheap when nothing
//! changed), then expand the grid into resolved runs with identities and dependencies
//! (pretraining before the downstream runs that use it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::resolved::{DownstreamRun, External, InitRef, PretrainRun, ResolvedRun, Source};
use super::spec::{InitSpec, LoadedSpec};
use crate::context::Ktrack;
use crate::data::descriptor::Dataset;
use crate::data::fraction::{self, FractionOptions};
use crate::data::split::{self, SplitOptions};
use crate::data::{Label, import, synth};
use crate::env::VERSION;
use crate::id::Hash;
use crate::index::{self, runs::Axes};
use crate::model::ssl::TextConfig;
use crate::train::DeviceKind;
use crate::train::data::Preprocess;
use crate::train::downstream::{DownstreamConfig, Protocol};
use crate::train::pretrain::{Method, PretrainConfig, ssl_augment};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not prepare dataset `{path}`")]
    Dataset {
        path: PathBuf,
        #[source]
        source: anyhow::Error,
    },
    #[error(transparent)]
    Split(#[from] split::Error),
    #[error(transparent)]
    Fraction(#[from] fraction::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Spec(#[from] super::spec::Error),
    #[error("weights file `{path}` for init `{init}` must end in .pth, .pt or .safetensors")]
    WeightsFormat { init: String, path: PathBuf },
    #[error(
        "external cohort `{external}` ({descriptor}) is not external: it shares {patients} patient(s) and {images} image(s) with the training cohort `{train}` (e.g. patient `{example}`)"
    )]
    ExternalOverlap {
        external: String,
        descriptor: PathBuf,
        train: String,
        patients: usize,
        images: usize,
        example: String,
    },
}

impl crate::hint::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::ExternalOverlap { descriptor, .. } => Some(format!(
                "an external validation cohort must hold none of the training cohort's patients: remove them from `{}`, or drop it from `[cohorts].external`",
                descriptor.display()
            )),
            _ => None,
        }
    }
}

/// Refuses an external cohort that shares patients or images with the training cohort: its
/// column would then be computed partly on training patients.
fn check_external(
    k: &Ktrack,
    train: (&Hash, &str),
    external: (&Hash, &str),
    descriptor: &Path,
) -> Result<(), Error> {
    let (train_rows, ext_rows) = {
        let mut c = k.index.read()?;
        (
            c.cohorts().samples(train.0)?,
            c.cohorts().samples(external.0)?,
        )
    };
    let patients: std::collections::HashSet<&str> =
        train_rows.iter().map(|s| s.patient_id.as_str()).collect();
    let images: std::collections::HashSet<Hash> = train_rows.iter().map(|s| s.image).collect();
    let shared: std::collections::BTreeSet<&str> = ext_rows
        .iter()
        .map(|s| s.patient_id.as_str())
        .filter(|p| patients.contains(p))
        .collect();
    let shared_images = ext_rows
        .iter()
        .filter(|s| images.contains(&s.image))
        .count();
    if shared.is_empty() && shared_images == 0 {
        return Ok(());
    }
    Err(Error::ExternalOverlap {
        external: external.1.to_string(),
        descriptor: descriptor.to_path_buf(),
        train: train.1.to_string(),
        patients: shared.len(),
        images: shared_images,
        example: shared
            .iter()
            .next()
            .map_or_else(|| "(same images)".to_string(), |p| crate::quote::clip(p)),
    })
}

/// Choices from the command line that shape the plan.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// torchvision weights for `torchvision` inits without their own `weights`.
    pub imagenet_weights: Option<PathBuf>,
    /// Overrides of `[run]`.
    pub device: Option<DeviceKind>,
    pub threads: Option<usize>,
}

/// The data a sweep runs on, by hash.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Prepared {
    pub cohort: Hash,
    pub cohort_name: String,
    pub external: Vec<External>,
    pub split: Hash,
    /// "task:fraction" → fraction id.
    pub fractions: BTreeMap<String, Hash>,
    /// Pretraining data descriptor (as written in the spec) → cohort.
    pub sources: BTreeMap<String, Hash>,
    /// Init name → (weights object, format), for torchvision inits that have a file.
    pub weights: BTreeMap<String, (Hash, String)>,
    /// Pretraining name → its BERT folder's files (name → object).
    pub text_models: BTreeMap<String, BTreeMap<String, Hash>>,
}

/// A run of the plan.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    pub id: Hash,
    pub resolved: ResolvedRun,
    pub label: String,
    pub deps: Vec<Hash>,
    pub axes: Option<Axes>,
}

/// An init that cannot run, and why (e.g. no ImageNet weights file given).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Skipped {
    pub init: String,
    pub reason: String,
    pub runs: usize,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub runs: Vec<PlannedRun>,
    pub skipped: Vec<Skipped>,
    pub prepared: Prepared,
}

fn frac_key(task: Label, f: f64) -> String {
    format!("{}:{f}", task.name())
}

/// Generates (if asked and missing) and imports a dataset; returns its cohort version.
fn cohort_of(
    k: &Ktrack,
    path: &Path,
    generate: bool,
    status: &dyn Fn(&str, String),
    interrupt: &AtomicBool,
) -> Result<(Hash, String), Error> {
    let wrap = |e: anyhow::Error| Error::Dataset {
        path: path.to_path_buf(),
        source: e,
    };
    let dataset = Dataset::load(path).map_err(|e| wrap(e.into()))?;
    if generate && let Some(spec) = &dataset.descriptor.synth {
        let r = synth::generate(
            spec,
            dataset.synth_manifest().map_err(|e| wrap(e.into()))?,
            &dataset.image_root,
            &crate::progress::Quiet,
            interrupt,
        )
        .map_err(|e| wrap(e.into()))?;
        if !r.skipped {
            status(
                "Generated",
                format!(
                    "{} images of {} ({:.0} images/s)",
                    r.images,
                    r.kind.name(),
                    r.images_per_second
                ),
            );
        }
    }
    let report = import::import(k, &dataset, &crate::progress::Quiet, interrupt)
        .map_err(|e| wrap(e.into()))?;
    if report.new_cohort {
        status(
            "Imported",
            format!(
                "{} images of `{}` → cohort {}",
                report.images, report.name, report.cohort
            ),
        );
    }
    Ok((report.cohort, report.name))
}

/// Prepares every input of the sweep.
pub fn prepare(
    k: &Ktrack,
    spec: &LoadedSpec,
    opts: &PlanOptions,
    status: &dyn Fn(&str, String),
    interrupt: &AtomicBool,
) -> Result<Prepared, Error> {
    let s = &spec.spec;
    let generate = s.cohorts.generate;
    let (cohort, cohort_name) = cohort_of(
        k,
        &spec.resolve(&s.cohorts.train),
        generate,
        status,
        interrupt,
    )?;
    let mut external = Vec::new();
    for e in &s.cohorts.external {
        let (hash, name) = cohort_of(k, &spec.resolve(e), generate, status, interrupt)?;
        check_external(k, (&cohort, &cohort_name), (&hash, &name), &spec.resolve(e))?;
        external.push(External { name, cohort: hash });
    }
    let mut sources = BTreeMap::new();
    for p in s.pretrain.values() {
        for d in &p.data {
            if d != "train" && !sources.contains_key(d) {
                let (hash, _) =
                    cohort_of(k, &spec.resolve(Path::new(d)), generate, status, interrupt)?;
                sources.insert(d.clone(), hash);
            }
        }
    }

    let split_opts = SplitOptions {
        cohort,
        train: s.split.train,
        val: s.split.val,
        test: s.split.test,
        stratify: if s.split.stratify == "none" {
            None
        } else {
            s.split.stratify.parse().ok()
        },
        seed: s.split.seed,
    };
    let split_id = split_opts.id();
    let split_known = k.index.read()?.splits().get(&split_id)?;
    if split_known.is_none() {
        let r = split::split(k, &split_opts)?;
        status("Split", format!("cohort {} → split {}", cohort, r.id));
    }

    let fractions = ensure_fractions(k, s, &split_id, status)?;
    let weights = weights_of(k, spec, opts)?;
    let text_models = text_models_of(k, spec)?;
    Ok(Prepared {
        cohort,
        cohort_name,
        external,
        split: split_id,
        fractions,
        sources,
        weights,
        text_models,
    })
}

/// The label fractions of the split for every task of the grid (taken where missing), by
/// (task, fraction).
fn ensure_fractions(
    k: &Ktrack,
    s: &super::spec::Spec,
    split_id: &Hash,
    status: &dyn Fn(&str, String),
) -> Result<BTreeMap<String, Hash>, Error> {
    let split_id = *split_id;
    let mut fractions = BTreeMap::new();
    for task in &s.grid.tasks {
        let ids: Vec<(f64, Hash)> = s
            .fractions
            .values
            .iter()
            .map(|&f| {
                (
                    f,
                    fraction::fraction_id(&split_id, f, *task, s.fractions.seed),
                )
            })
            .collect();
        let missing = {
            let mut c = k.index.read()?;
            let mut missing = false;
            for (_, id) in &ids {
                missing |= c.fractions().get(id)?.is_none();
            }
            missing
        };
        if missing {
            fraction::fraction(
                k,
                &FractionOptions {
                    split: split_id,
                    fractions: s.fractions.values.clone(),
                    stratify: *task,
                    seed: s.fractions.seed,
                },
            )?;
            status(
                "Fractions",
                format!(
                    "{} of split {} by {task}",
                    s.fractions.values.len(),
                    split_id
                ),
            );
        }
        for (f, id) in ids {
            fractions.insert(frac_key(*task, f), id);
        }
    }

    Ok(fractions)
}

/// The torchvision weights files the inits name, stored: (object, format) by init.
fn weights_of(
    k: &Ktrack,
    spec: &LoadedSpec,
    opts: &PlanOptions,
) -> Result<BTreeMap<String, (Hash, String)>, Error> {
    let s = &spec.spec;
    let mut weights = BTreeMap::new();
    for (name, init) in &s.inits {
        if let InitSpec::Torchvision { weights: w } = init {
            let path = match (w, &opts.imagenet_weights) {
                (Some(w), _) => spec.resolve(w),
                (None, Some(p)) => p.clone(),
                (None, None) => continue,
            };
            let format = match path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("pth") | Some("pt") => "pth".to_string(),
                Some("safetensors") => "safetensors".to_string(),
                _ => {
                    return Err(Error::WeightsFormat {
                        init: name.clone(),
                        path,
                    });
                }
            };
            let put = k.store.put_file(&path)?;
            let now = k.clock.now();
            k.index
                .read()?
                .objects()
                .insert(&put.hash, put.size, "weights", &now)?;
            weights.insert(name.clone(), (put.hash, format));
        }
    }
    Ok(weights)
}

/// The pretrainings an init of the grid uses (only those are planned, and only their
/// inputs stored).
fn used_pretrains(s: &super::spec::Spec) -> std::collections::BTreeSet<&str> {
    s.grid
        .inits
        .iter()
        .filter_map(|i| match &s.inits[i] {
            InitSpec::Pretrain { pretrain, .. } => Some(pretrain.as_str()),
            _ => None,
        })
        .collect()
}

/// Every file of each used pretraining's BERT folder, stored (streamed and hashed in parallel):
/// (file name → object) by pretraining.
fn text_models_of(
    k: &Ktrack,
    spec: &LoadedSpec,
) -> Result<BTreeMap<String, BTreeMap<String, Hash>>, Error> {
    let mut out = BTreeMap::new();
    let used = used_pretrains(&spec.spec);
    for (name, p) in spec
        .spec
        .pretrain
        .iter()
        .filter(|(n, _)| used.contains(n.as_str()))
    {
        let Some(dir) = &p.text.model else { continue };
        let dir = spec.resolve(dir);
        let io = |e: std::io::Error| {
            spec.invalid(
                format!("pretrain.{name}.text.model"),
                format!("cannot list `{}`: {e}", dir.display()),
            )
        };
        let mut files = BTreeMap::new();
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        let now = k.clock.now();
        for e in entries {
            let path = e.path();
            let Some(file) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !path.is_file() {
                continue;
            }
            let put = k.store.put_file(&path)?;
            k.index
                .read()?
                .objects()
                .insert(&put.hash, put.size, "text-model", &now)?;
            files.insert(file, put.hash);
        }
        out.insert(name.clone(), files);
    }
    Ok(out)
}

/// The pretraining runs an init of the grid uses, and their ids by name.
fn pretrain_runs<'s>(
    spec: &'s LoadedSpec,
    prepared: &Prepared,
    preprocess: &Preprocess,
    device: DeviceKind,
    threads: usize,
) -> (Vec<PlannedRun>, BTreeMap<&'s str, Hash>) {
    let s = &spec.spec;
    let mut runs = Vec::new();
    let mut ids: BTreeMap<&str, Hash> = BTreeMap::new();
    let used = used_pretrains(s);
    for (name, p) in s.pretrain.iter().filter(|(n, _)| used.contains(n.as_str())) {
        let sources = p
            .data
            .iter()
            .map(|d| {
                if d == "train" {
                    Source {
                        cohort: prepared.cohort,
                        split: Some(prepared.split),
                    }
                } else {
                    Source {
                        cohort: prepared.sources[d],
                        split: None,
                    }
                }
            })
            .collect();
        let resolved = ResolvedRun::Pretrain(PretrainRun {
            ktrack: VERSION.to_string(),
            config: PretrainConfig {
                method: p.method,
                arch: p.arch.unwrap_or(s.train.arch),
                preprocess: preprocess.clone(),
                augment: p.augment.clone().unwrap_or_else(ssl_augment),
                epochs: p.epochs,
                batch_size: p.batch_size,
                lr: p.lr,
                weight_decay: p.weight_decay,
                warmup_epochs: p.warmup_epochs,
                temperature: p.temperature,
                projection_dim: p.projection_dim,
                moco_queue: p.moco_queue,
                moco_momentum: p.moco_momentum,
                convirt_lambda: p.convirt_lambda,
                vicreg: (p.method == Method::Vicreg).then(|| p.vicreg.clone()),
                slip: (p.method == Method::Slip).then(|| p.slip.clone()),
                label: p.label,
                // A BERT folder enters the identity by its files' hashes, not its path.
                text: TextConfig {
                    model: None,
                    ..p.text.clone()
                },
                seed: p.seed,
                device,
                threads,
                precision: p.precision,
            },
            sources,
            tokenizer: p
                .tokenizer
                .as_ref()
                .map(|t| Hash::of(&std::fs::read(spec.resolve(t)).unwrap_or_default())),
            text_model: prepared.text_models.get(name.as_str()).cloned(),
        });
        let id = resolved.id();
        ids.insert(name, id);
        runs.push(PlannedRun {
            id,
            label: format!("pretrain {name} ({})", p.method.name()),
            resolved,
            deps: vec![],
            axes: None,
        });
    }

    (runs, ids)
}

/// What an init of the grid starts from, or why its runs are skipped.
fn init_ref(
    s: &super::spec::Spec,
    prepared: &Prepared,
    init_name: &str,
    pretrain_ids: &BTreeMap<&str, Hash>,
) -> Result<InitRef, String> {
    Ok(match &s.inits[init_name] {
        InitSpec::Random => InitRef::Random,
        InitSpec::Torchvision { .. } => match prepared.weights.get(init_name) {
            Some((w, format)) => InitRef::Torchvision {
                weights: *w,
                format: format.clone(),
            },
            None => {
                return Err("no torchvision weights file: set `weights` in the spec, --imagenet-weights or KTRACK_IMAGENET_WEIGHTS".into());
            }
        },
        InitSpec::Pretrain {
            pretrain,
            allow_leakage,
        } => InitRef::Pretrain {
            run: pretrain_ids[pretrain.as_str()],
            allow_leakage: *allow_leakage,
        },
    })
}

/// Expands the grid into resolved runs.
pub fn plan(spec: &LoadedSpec, prepared: &Prepared, opts: &PlanOptions) -> Plan {
    let s = &spec.spec;
    let device = opts.device.unwrap_or(s.run.device);
    let threads = opts.threads.unwrap_or(s.run.threads);
    let preprocess = Preprocess {
        image_size: s.train.image_size,
        normalize: s.train.normalize,
        flip_left: s.train.flip_left,
    };
    let (mut runs, pretrain_ids) = pretrain_runs(spec, prepared, &preprocess, device, threads);
    let mut skipped = Vec::new();
    let fractions = spec.grid_fractions();
    for init_name in &s.grid.inits {
        let init = match init_ref(s, prepared, init_name, &pretrain_ids) {
            Ok(init) => init,
            Err(reason) => {
                skipped.push(Skipped {
                    init: init_name.clone(),
                    reason,
                    runs: s.grid.tasks.len()
                        * s.grid.protocols.len()
                        * fractions.len()
                        * s.grid.seeds.len(),
                });
                continue;
            }
        };
        let deps = match &init {
            InitRef::Pretrain { run, .. } => vec![*run],
            _ => vec![],
        };
        for task in &s.grid.tasks {
            for protocol in &s.grid.protocols {
                let h = s.train.resolve(*protocol);
                for &f in &fractions {
                    for &seed in &s.grid.seeds {
                        let resolved = ResolvedRun::Downstream(DownstreamRun {
                            ktrack: VERSION.to_string(),
                            config: DownstreamConfig {
                                arch: s.train.arch,
                                task: *task,
                                protocol: *protocol,
                                preprocess: preprocess.clone(),
                                augment: h.augment.clone(),
                                epochs: h.epochs,
                                batch_size: h.batch_size,
                                lr: h.lr,
                                weight_decay: h.weight_decay,
                                warmup_epochs: h.warmup_epochs,
                                patience: h.patience,
                                select: h.select,
                                head_init: h.head_init,
                                seed,
                                device,
                                threads,
                                precision: s.train.precision,
                                probe: (*protocol == Protocol::Lpft).then(|| s.train.probe_phase()),
                            },
                            cohort: prepared.cohort,
                            split: prepared.split,
                            fraction: prepared.fractions[&frac_key(*task, f)],
                            fraction_value: f,
                            init: init.clone(),
                            external: prepared.external.clone(),
                        });
                        runs.push(PlannedRun {
                            id: resolved.id(),
                            label: format!(
                                "{task} {} {init_name} {} seed {seed}",
                                protocol.name(),
                                crate::output::pct(f)
                            ),
                            resolved,
                            deps: deps.clone(),
                            axes: Some(Axes {
                                init: init_name.clone(),
                                task: task.name().to_string(),
                                protocol: protocol.name().to_string(),
                                fraction: f,
                                seed: seed as i64,
                                arch: s.train.arch.name().to_string(),
                            }),
                        });
                    }
                }
            }
        }
    }
    // The same run may come from two grid cells (e.g. two inits with one weights file).
    let mut seen = std::collections::BTreeSet::new();
    runs.retain(|r| seen.insert(r.id));
    Plan {
        runs,
        skipped,
        prepared: prepared.clone(),
    }
}
