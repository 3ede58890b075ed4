//! Downstream training on tiny synthetic data: both protocols run, seeded reruns are
//! bit-identical, and an interrupted run resumes to exactly the uninterrupted result.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::*;
use crate::data::Side;
use crate::data::image::encode_png16;
use crate::data::synth::{self, Kind, SynthSpec};
use crate::id::Hash;
use crate::progress::{Quiet, Task};
use crate::train::data::MemoryImages as Images;
use crate::train::data::Normalize;

fn cohort(task: Label) -> (Images, Vec<Example>, Vec<Example>, Vec<Example>) {
    let sims = synth::simulate(&SynthSpec {
        kind: Kind::OaiLike,
        patients: 60,
        image_size: 32,
        seed: 4,
    });
    let mut images = BTreeMap::new();
    let mut examples = Vec::new();
    for s in sims.iter().filter(|s| s.visit == 0) {
        let Some(label) = (match task {
            Label::Kl => s.kl,
            Label::Incidence4y => s.incidence_4y,
            Label::Progression4y => s.progression_4y,
            Label::Class => None,
        }) else {
            continue;
        };
        let png = encode_png16(32, 32, &s.render(32));
        let hash = Hash::of(&png);
        images.insert(hash, png);
        examples.push(Example {
            sample_id: s.sample_id.clone(),
            patient_id: s.patient_id.clone(),
            side: s.side,
            image: hash,
            label,
        });
    }
    let n = examples.len();
    let test = examples.split_off(n * 8 / 10);
    let val = examples.split_off(n * 6 / 10);
    (Images(images, None), examples, val, test)
}

fn config(protocol: Protocol, augment: bool) -> DownstreamConfig {
    DownstreamConfig {
        arch: Arch::ResnetTiny,
        task: Label::Kl,
        protocol,
        preprocess: Preprocess {
            image_size: 32,
            normalize: Normalize::Zscore,
            flip_left: true,
        },
        augment: if augment {
            Augment::default()
        } else {
            Augment::off()
        },
        epochs: 3,
        batch_size: 16,
        lr: 3e-3,
        weight_decay: 1e-4,
        warmup_epochs: 0.5,
        patience: None,
        select: Select::Metric,
        head_init: HeadInit::Random,
        seed: 9,
        device: DeviceKind::Cpu,
        threads: 2,
        precision: Default::default(),
        probe: (protocol == Protocol::Lpft).then(|| Settings {
            augment: Augment::off(),
            epochs: 2,
            batch_size: 16,
            lr: 1e-2,
            weight_decay: 1e-4,
            warmup_epochs: 0.0,
            patience: None,
            select: Select::Metric,
            head_init: HeadInit::Random,
        }),
    }
}

fn outputs(dir: &Path) -> BTreeMap<String, Hash> {
    [
        "best.safetensors",
        "predictions-test.parquet",
        "predictions-val.parquet",
    ]
    .into_iter()
    .map(|f| {
        (
            f.to_string(),
            Hash::of(&std::fs::read(dir.join(f)).unwrap()),
        )
    })
    .collect()
}

fn train(
    cfg: &DownstreamConfig,
    dir: &Path,
    observer: &dyn Task,
    interrupt: &AtomicBool,
) -> Result<DownstreamReport, Error> {
    let (images, train, val, test) = cohort(cfg.task);
    let data = DownstreamData {
        train,
        val: val.clone(),
        evals: vec![("val".into(), val), ("test".into(), test)],
        images: Arc::new(images.clone()),
    };
    run(cfg, &Init::Random, &data, dir, observer, interrupt)
}

#[test]
fn finetune_is_bit_identical_when_repeated() {
    let cfg = config(Protocol::Finetune, true);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ra = train(&cfg, a.path(), &Quiet, &AtomicBool::new(false)).unwrap();
    train(&cfg, b.path(), &Quiet, &AtomicBool::new(false)).unwrap();
    assert_eq!(ra.epochs_run, 3);
    assert!(!ra.cached_features);
    assert!(ra.curves.iter().all(|c| c.train_loss.is_finite()));
    assert_eq!(outputs(a.path()), outputs(b.path()));
    let preds = Predictions::from_parquet(
        &std::fs::read(a.path().join("predictions-test.parquet")).unwrap(),
    )
    .unwrap();
    assert_eq!(preds.kind, TaskKind::Kl);
    assert!(
        preds
            .probs
            .iter()
            .all(|p| (p.iter().sum::<f64>() - 1.0).abs() < 1e-4)
    );
    assert!(
        !a.path().join("checkpoints").exists(),
        "resume state is removed once done"
    );
}

#[test]
fn linear_probe_caches_features_and_keeps_the_encoder() {
    let cfg = DownstreamConfig {
        task: Label::Progression4y,
        ..config(Protocol::Linear, false)
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let r = train(&cfg, a.path(), &Quiet, &AtomicBool::new(false)).unwrap();
    assert!(r.cached_features);
    train(&cfg, b.path(), &Quiet, &AtomicBool::new(false)).unwrap();
    assert_eq!(outputs(a.path()), outputs(b.path()));
    // The probe's encoder is the seeded random init, untouched by training.
    let device = Device::flex();
    let fresh = Classifier::new(cfg.arch, 1, cfg.seed, &device);
    let trained = import::load_checkpoint(
        Classifier::new(cfg.arch, 1, 0, &device),
        &a.path().join("best.safetensors"),
    )
    .unwrap();
    let w = |m: &Classifier| m.encoder.conv1.weight.val().into_data();
    assert_eq!(w(&fresh), w(&trained));
    let preds = Predictions::from_parquet(
        &std::fs::read(a.path().join("predictions-test.parquet")).unwrap(),
    )
    .unwrap();
    assert_eq!(preds.kind, TaskKind::Binary);
}

/// An image source with a feature cache that counts the image files it is asked for.
struct WithFeatures {
    images: Images,
    cache: FeatureCache,
    reads: AtomicUsize,
}

impl ImageSource for WithFeatures {
    fn bytes(&self, image: &Hash) -> Result<Vec<u8>, String> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.images.bytes(image)
    }

    fn feature_cache(&self) -> Option<&FeatureCache> {
        Some(&self.cache)
    }
}

#[test]
fn probes_through_the_feature_cache_give_the_uncached_predictions() {
    let cfg = DownstreamConfig {
        task: Label::Progression4y,
        ..config(Protocol::Linear, false)
    };
    let plain = tempfile::tempdir().unwrap();
    train(&cfg, plain.path(), &Quiet, &AtomicBool::new(false)).unwrap();
    let (images, train_set, val, test) = cohort(cfg.task);
    let cache_dir = tempfile::tempdir().unwrap();
    let source = Arc::new(WithFeatures {
        images,
        cache: FeatureCache::at(cache_dir.path()),
        reads: AtomicUsize::new(0),
    });
    let data = DownstreamData {
        train: train_set,
        val: val.clone(),
        evals: vec![("val".into(), val), ("test".into(), test)],
        images: source.clone(),
    };
    let probe = |dir: &Path| {
        run(
            &cfg,
            &Init::Random,
            &data,
            dir,
            &Quiet,
            &AtomicBool::new(false),
        )
        .unwrap();
        outputs(dir)
    };
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert_eq!(probe(first.path()), outputs(plain.path()));
    let read = source.reads.load(std::sync::atomic::Ordering::Relaxed);
    assert!(read > 0);
    let (entries, bytes) = source.cache.usage().unwrap();
    assert_eq!(entries, 3, "train, val and test features");
    assert!(bytes > 0);
    // A second probe of the same encoder reads no image: its features come from the cache.
    assert_eq!(probe(second.path()), outputs(plain.path()));
    assert_eq!(
        source.reads.load(std::sync::atomic::Ordering::Relaxed),
        read
    );
    // Another training seed is another random encoder: other features, other entries.
    let other = DownstreamConfig {
        seed: 10,
        ..cfg.clone()
    };
    let third = tempfile::tempdir().unwrap();
    run(
        &other,
        &Init::Random,
        &data,
        third.path(),
        &Quiet,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(source.cache.usage().unwrap().0, 6);
}

/// Sets the interrupt flag two steps into the second epoch.
struct InterruptAt {
    step: AtomicUsize,
    seen: AtomicUsize,
    flag: Arc<AtomicBool>,
}

impl Task for InterruptAt {
    fn start(&self, total: usize, _done: usize) {
        self.step.store(total / 3 + 2, Ordering::SeqCst);
    }

    fn step(&self) {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.step.load(Ordering::SeqCst) {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

#[test]
fn an_interrupted_run_resumes_to_the_same_result() {
    for (protocol, augment) in [(Protocol::Finetune, true), (Protocol::Linear, false)] {
        let cfg = config(protocol, augment);
        let whole = tempfile::tempdir().unwrap();
        train(&cfg, whole.path(), &Quiet, &AtomicBool::new(false)).unwrap();
        let cut = tempfile::tempdir().unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let observer = InterruptAt {
            step: AtomicUsize::new(usize::MAX),
            seen: AtomicUsize::new(0),
            flag: flag.clone(),
        };
        let err = train(&cfg, cut.path(), &observer, &flag).unwrap_err();
        assert!(matches!(err, Error::Interrupted { epoch: 1 }), "{err}");
        let resumed = train(&cfg, cut.path(), &Quiet, &AtomicBool::new(false)).unwrap();
        assert_eq!(resumed.resumed_from_epoch, Some(1));
        assert_eq!(outputs(whole.path()), outputs(cut.path()), "{protocol:?}");
    }
}

#[test]
fn empty_sets_are_errors() {
    let cfg = config(Protocol::Linear, false);
    let images = Images(BTreeMap::new(), None);
    let data = DownstreamData {
        train: vec![],
        val: vec![],
        evals: vec![],
        images: Arc::new(images.clone()),
    };
    let dir = tempfile::tempdir().unwrap();
    let err = run(
        &cfg,
        &Init::Random,
        &data,
        dir.path(),
        &Quiet,
        &AtomicBool::new(false),
    )
    .unwrap_err();
    assert!(matches!(err, Error::EmptySet { .. }));
    let _ = Side::L;
}

/// Sets the interrupt flag after exactly `at` training steps.
struct StopAfter {
    at: usize,
    seen: AtomicUsize,
    flag: Arc<AtomicBool>,
}

impl Task for StopAfter {
    fn step(&self) {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

/// Trains with the validation set optionally reduced to one class (its AUROC is then NaN at
/// every epoch), stopping after `stop` steps and resuming as often as it takes.
fn train_with_stops(
    cfg: &DownstreamConfig,
    dir: &Path,
    one_class_val: bool,
    stops: &[usize],
) -> DownstreamReport {
    let (images, train, mut val, test) = cohort(cfg.task);
    if one_class_val {
        val.retain(|e| e.label == 0);
    }
    let data = DownstreamData {
        train,
        val: val.clone(),
        evals: vec![("val".into(), val), ("test".into(), test)],
        images: Arc::new(images.clone()),
    };
    for &at in stops {
        let flag = Arc::new(AtomicBool::new(false));
        let observer = StopAfter {
            at,
            seen: AtomicUsize::new(0),
            flag: flag.clone(),
        };
        match run(cfg, &Init::Random, &data, dir, &observer, &flag) {
            Err(Error::Interrupted { .. }) => {}
            Ok(report) => return report,
            Err(e) => panic!("stopped after {at} steps: {e}"),
        }
    }
    run(
        cfg,
        &Init::Random,
        &data,
        dir,
        &Quiet,
        &AtomicBool::new(false),
    )
    .unwrap()
}

fn curve_bits(r: &DownstreamReport) -> Vec<[u64; 3]> {
    r.curves
        .iter()
        .map(|c| {
            [
                c.train_loss.to_bits(),
                c.val_metric.to_bits(),
                c.lr.to_bits(),
            ]
        })
        .collect()
}

#[test]
fn a_run_whose_validation_metric_is_undefined_resumes() {
    let cfg = DownstreamConfig {
        task: Label::Progression4y,
        ..config(Protocol::Finetune, true)
    };
    let whole = tempfile::tempdir().unwrap();
    let reference = train_with_stops(&cfg, whole.path(), true, &[]);
    assert!(reference.curves.iter().all(|c| c.val_metric.is_nan()));
    let cut = tempfile::tempdir().unwrap();
    // Stopped in the first and in the second epoch: the checkpoint holds best_metric = -inf.
    let resumed = train_with_stops(&cfg, cut.path(), true, &[1, 3]);
    assert_eq!(resumed.resumed_from_epoch, Some(1));
    assert_eq!(outputs(whole.path()), outputs(cut.path()));
    assert_eq!(curve_bits(&reference), curve_bits(&resumed));
}

mod resume_property {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

        /// Stopping after any step (an epoch's last step included) and resuming gives the
        /// bit-identical result: weights, predictions, best epoch and every curve value.
        #[test]
        fn stopping_anywhere_and_resuming_is_bit_identical(
            linear in any::<bool>(),
            one_class_val in any::<bool>(),
            stops in proptest::collection::vec(1usize..12, 1..3),
        ) {
            let cfg = DownstreamConfig {
                task: if one_class_val { Label::Progression4y } else { Label::Kl },
                patience: Some(2),
                ..if linear { config(Protocol::Linear, true) } else { config(Protocol::Finetune, true) }
            };
            let whole = tempfile::tempdir().unwrap();
            let reference = train_with_stops(&cfg, whole.path(), one_class_val, &[]);
            let cut = tempfile::tempdir().unwrap();
            let resumed = train_with_stops(&cfg, cut.path(), one_class_val, &stops);
            prop_assert_eq!(outputs(whole.path()), outputs(cut.path()));
            prop_assert_eq!(reference.best_epoch, resumed.best_epoch);
            prop_assert_eq!(reference.best_val_metric.to_bits(), resumed.best_val_metric.to_bits());
            prop_assert_eq!(curve_bits(&reference), curve_bits(&resumed));
        }
    }
}

#[test]
fn an_interrupt_during_the_final_evaluation_is_an_interrupt() {
    let cfg = config(Protocol::Finetune, false);
    let whole = tempfile::tempdir().unwrap();
    let counter = StopAfter {
        at: usize::MAX,
        seen: AtomicUsize::new(0),
        flag: Arc::new(AtomicBool::new(false)),
    };
    train(&cfg, whole.path(), &counter, &AtomicBool::new(false)).unwrap();
    let steps = counter.seen.load(Ordering::SeqCst);
    // The flag rises at the very last step: training is over, the evaluation sees it.
    let cut = tempfile::tempdir().unwrap();
    let resumed = train_with_stops(&cfg, cut.path(), false, &[steps]);
    assert_eq!(resumed.resumed_from_epoch, Some(cfg.epochs));
    assert_eq!(outputs(whole.path()), outputs(cut.path()));
}

/// Counts training steps.
#[derive(Default)]
struct CountSteps(AtomicUsize);

impl Task for CountSteps {
    fn step(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn classifier(path: &Path) -> Classifier {
    let device = Device::flex();
    import::load_checkpoint(
        Classifier::new(Arch::ResnetTiny, kl::CLASSES, 0, &device),
        path,
    )
    .unwrap()
}

fn head_weights(m: &Classifier) -> Vec<f32> {
    m.head.weight.val().into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn lpft_probes_then_fine_tunes_from_the_probe() {
    let cfg = config(Protocol::Lpft, true);
    let dir = tempfile::tempdir().unwrap();
    let r = train(&cfg, dir.path(), &Quiet, &AtomicBool::new(false)).unwrap();
    let probe = r
        .probe
        .as_ref()
        .expect("an LP-FT run reports its probe phase");
    assert_eq!(probe.epochs_run, 2);
    assert!(
        probe.cached_features,
        "the probe phase trains on cached features"
    );
    // Both phases' curves, tagged and numbered on: 2 probe epochs, then 3 fine-tune epochs.
    let phases: Vec<(usize, Option<Protocol>)> =
        r.curves.iter().map(|c| (c.epoch, c.phase)).collect();
    assert_eq!(
        phases,
        vec![
            (0, Some(Protocol::Linear)),
            (1, Some(Protocol::Linear)),
            (2, Some(Protocol::Finetune)),
            (3, Some(Protocol::Finetune)),
            (4, Some(Protocol::Finetune)),
        ]
    );
    assert!(
        r.best_epoch >= 2,
        "the best epoch is a fine-tune epoch: {}",
        r.best_epoch
    );
    let written: Vec<EpochCurve> =
        serde_json::from_slice(&std::fs::read(dir.path().join("curves.json")).unwrap()).unwrap();
    assert_eq!(written, r.curves);
    assert!(dir.path().join("predictions-test.parquet").is_file());
    assert!(!dir.path().join("probe/predictions-test.parquet").exists());

    // At a vanishing fine-tune rate the fine-tuned head is the probe's head: the second phase
    // starts from the probe's model, not from a fresh head.
    let still = DownstreamConfig {
        lr: 1e-12,
        ..cfg.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    train(&still, dir.path(), &Quiet, &AtomicBool::new(false)).unwrap();
    let (probed, tuned) = (
        head_weights(&classifier(&dir.path().join("probe/best.safetensors"))),
        head_weights(&classifier(&dir.path().join("best.safetensors"))),
    );
    let fresh = head_weights(&Classifier::new(
        Arch::ResnetTiny,
        kl::CLASSES,
        cfg.seed,
        &Device::flex(),
    ));
    let gap = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    };
    assert!(gap(&probed, &tuned) < 1e-5, "{}", gap(&probed, &tuned));
    assert!(gap(&probed, &fresh) > 1e-3, "the probe trained its head");
}

#[test]
fn lpft_interrupted_in_its_fine_tune_resumes_without_a_second_probe() {
    let cfg = config(Protocol::Lpft, true);
    let whole = tempfile::tempdir().unwrap();
    let count = CountSteps::default();
    let full = train(&cfg, whole.path(), &count, &AtomicBool::new(false)).unwrap();
    let cut = tempfile::tempdir().unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    // A few steps before the end: inside the fine-tune phase's last epoch.
    let stop = StopAfter {
        at: count.0.load(Ordering::SeqCst) - 2,
        seen: AtomicUsize::new(0),
        flag: flag.clone(),
    };
    let err = train(&cfg, cut.path(), &stop, &flag).unwrap_err();
    assert!(matches!(err, Error::Interrupted { .. }), "{err}");
    let probe_done = cut.path().join("probe/report.json");
    let written = std::fs::metadata(&probe_done).unwrap().modified().unwrap();
    let steps = CountSteps::default();
    let resumed = train(&cfg, cut.path(), &steps, &AtomicBool::new(false)).unwrap();
    assert_eq!(
        std::fs::metadata(&probe_done).unwrap().modified().unwrap(),
        written
    );
    assert_eq!(
        steps.0.load(Ordering::SeqCst),
        2,
        "only the steps left are trained"
    );
    assert!(resumed.resumed_from_epoch.is_some());
    assert_eq!(outputs(whole.path()), outputs(cut.path()));
    assert_eq!(
        full.curves
            .iter()
            .map(|c| c.train_loss.to_bits())
            .collect::<Vec<_>>(),
        resumed
            .curves
            .iter()
            .map(|c| c.train_loss.to_bits())
            .collect::<Vec<_>>()
    );
}

#[test]
fn log_loss_is_scikit_learns() {
    // sklearn.metrics.log_loss([1, 0, 1], [0.9, 0.2, 0.6]) = 0.279776...
    let binary = log_loss(
        TaskKind::Binary,
        &[1, 0, 1],
        &[vec![0.9], vec![0.2], vec![0.6]],
    );
    let by_hand = -(0.9f64.ln() + 0.8f64.ln() + 0.6f64.ln()) / 3.0;
    assert!((binary - by_hand).abs() < 1e-15);
    assert!((binary - 0.279_776_6).abs() < 1e-6, "{binary}");
    // Multiclass: minus the log of the true class's probability; a zero is clipped.
    let kl = log_loss(
        TaskKind::Kl,
        &[0, 2],
        &[vec![0.5, 0.3, 0.2, 0.0, 0.0], vec![0.0, 0.0, 0.0, 0.5, 0.5]],
    );
    assert!((kl - (-(0.5f64.ln()) - f64::EPSILON.ln()) / 2.0).abs() < 1e-12);
    assert!(log_loss(TaskKind::Binary, &[], &[]).is_nan());
}

#[test]
fn the_validation_loss_can_select_the_best_epoch() {
    let base = DownstreamConfig {
        task: Label::Progression4y,
        epochs: 12,
        ..config(Protocol::Linear, false)
    };
    let cfg = DownstreamConfig {
        select: Select::Loss,
        ..base.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let r = train(&cfg, dir.path(), &Quiet, &AtomicBool::new(false)).unwrap();
    assert!(r.curves.iter().all(|c| c.val_loss.is_finite()));
    let lowest = r
        .curves
        .iter()
        .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss))
        .unwrap();
    assert_eq!(
        r.best_epoch, lowest.epoch,
        "the lowest validation loss wins"
    );
    assert_eq!(r.best_val_metric.to_bits(), lowest.val_metric.to_bits());
    // The metric's choice is the epoch of the highest AUROC (the first on a tie).
    let m = train(
        &base,
        tempfile::tempdir().unwrap().path(),
        &Quiet,
        &AtomicBool::new(false),
    )
    .unwrap();
    let highest = m
        .curves
        .iter()
        .fold(None::<&EpochCurve>, |best, c| match best {
            Some(b) if b.val_metric >= c.val_metric => Some(b),
            _ => Some(c),
        })
        .unwrap();
    assert_eq!(m.best_epoch, highest.epoch);
    // Both trainings ran the same steps: the curves agree, only the choice differs.
    let timeless = |r: &DownstreamReport| {
        r.curves
            .iter()
            .map(|c| EpochCurve {
                seconds: 0.0,
                ..c.clone()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(timeless(&r), timeless(&m));
    assert_ne!(
        r.best_epoch, m.best_epoch,
        "this cohort's two choices differ"
    );
    // Selecting by the metric leaves a run's identity as it was; the loss is part of it.
    let json = |c: &DownstreamConfig| serde_json::to_string(c).unwrap();
    assert!(!json(&base).contains("select"));
    assert!(json(&cfg).contains(r#""select":"loss""#));
}

/// A zero head on cached features, with one batch per epoch, trains the same whatever the run's
/// seed, up to float rounding (the seed only orders the rows of the batch): the probe's
/// predictions depend on the encoder alone. A random head's do not, and the default leaves a
/// run's identity as it was.
#[test]
fn a_zero_head_probe_is_the_same_for_every_seed() {
    let device = DeviceKind::Cpu.device().unwrap();
    let encoder = crate::model::resnet::ResNet::new(
        Arch::ResnetTiny,
        &mut crate::model::init::Seeder::new("probe-test", 3),
        &device,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("encoder.bpk");
    import::save_checkpoint(&encoder, &path).unwrap();
    let (images, train_set, val, test) = cohort(Label::Kl);
    let data = DownstreamData {
        train: train_set,
        val: val.clone(),
        evals: vec![("val".into(), val), ("test".into(), test)],
        images: Arc::new(images),
    };
    let predictions = |seed: u64, head_init: HeadInit| {
        let cfg = DownstreamConfig {
            seed,
            head_init,
            epochs: 4,
            batch_size: 512,
            ..config(Protocol::Linear, false)
        };
        let out = tempfile::tempdir().unwrap();
        let r = run(
            &cfg,
            &Init::Encoder(path.clone()),
            &data,
            out.path(),
            &Quiet,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(r.cached_features);
        Predictions::from_parquet(
            &std::fs::read(out.path().join("predictions-test.parquet")).unwrap(),
        )
        .unwrap()
    };
    let farthest = |a: &Predictions, b: &Predictions| {
        a.probs
            .iter()
            .flatten()
            .zip(b.probs.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    };
    let zeros = farthest(
        &predictions(1, HeadInit::Zeros),
        &predictions(2, HeadInit::Zeros),
    );
    let random = farthest(
        &predictions(1, HeadInit::Random),
        &predictions(2, HeadInit::Random),
    );
    assert!(zeros < 1e-5, "{zeros}");
    assert!(random > 1e-3, "{random}");
    let json = |h: HeadInit| {
        serde_json::to_string(&DownstreamConfig {
            head_init: h,
            ..config(Protocol::Linear, false)
        })
        .unwrap()
    };
    assert!(!json(HeadInit::Random).contains("head_init"));
    assert!(json(HeadInit::Zeros).contains(r#""head_init":"zeros""#));
}
