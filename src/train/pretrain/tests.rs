//! Pretraining on tiny synthetic data: every method runs, its loss falls, seeded reruns give
//! the same encoder bytes, and an interrupted run resumes to the same encoder.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::*;
use crate::data::image::encode_png16;
use crate::data::synth::{self, Kind, SynthSpec};
use crate::id::Hash;
use crate::model::ResNet;
use crate::progress::{Quiet, Task};
use crate::train::data::MemoryImages as Images;
use crate::train::data::Normalize;

fn data(kind: Kind) -> (Images, Vec<Example>, Vec<String>) {
    labelled(kind, |_| 0)
}

/// Baseline images of a synthetic cohort, labelled by `label`.
fn labelled(kind: Kind, label: fn(&synth::SimImage) -> u8) -> (Images, Vec<Example>, Vec<String>) {
    let sims = synth::simulate(&SynthSpec {
        kind,
        patients: 48,
        image_size: 32,
        seed: 3,
    });
    let mut images = BTreeMap::new();
    let mut examples = Vec::new();
    let mut reports = Vec::new();
    for s in sims.iter().filter(|s| s.visit == 0).take(48) {
        let png = encode_png16(32, 32, &s.render(32));
        let hash = Hash::of(&png);
        images.insert(hash, png);
        examples.push(Example {
            sample_id: s.sample_id.clone(),
            patient_id: s.patient_id.clone(),
            side: s.side,
            image: hash,
            label: label(s),
        });
        reports.push(s.report.clone().unwrap_or_default());
    }
    (Images(images, None), examples, reports)
}

const METHODS: [Method; 7] = [
    Method::Simclr,
    Method::Moco,
    Method::Vicreg,
    Method::Clip,
    Method::Convirt,
    Method::Slip,
    Method::Supervised,
];

fn config(method: Method) -> PretrainConfig {
    PretrainConfig {
        method,
        arch: Arch::ResnetTiny,
        preprocess: Preprocess {
            image_size: 32,
            normalize: Normalize::Zscore,
            flip_left: true,
        },
        augment: ssl_augment(),
        epochs: 3,
        batch_size: 16,
        lr: 2e-3,
        weight_decay: 1e-4,
        warmup_epochs: 0.5,
        temperature: 0.2,
        projection_dim: 32,
        moco_queue: 64,
        moco_momentum: 0.9,
        convirt_lambda: 0.75,
        vicreg: (method == Method::Vicreg).then(VicregWeights::default),
        slip: (method == Method::Slip).then(SlipConfig::default),
        label: (method == Method::Supervised).then_some(crate::data::Label::Kl),
        text: TextConfig {
            max_len: 24,
            vocab_size: 300,
            dim: 32,
            layers: 1,
            heads: 2,
            ..TextConfig::default()
        },
        seed: 5,
        device: DeviceKind::Cpu,
        threads: 2,
        precision: Default::default(),
    }
}

fn pretrain(
    cfg: &PretrainConfig,
    dir: &Path,
    observer: &dyn Task,
    interrupt: &AtomicBool,
) -> Result<PretrainReport, Error> {
    let kind = if cfg.method.uses_text() {
        Kind::Hospital
    } else {
        Kind::NyuLike
    };
    let (images, examples, reports) = data(kind);
    let d = PretrainData {
        examples,
        reports: cfg.method.uses_text().then_some(reports),
        images: Arc::new(images.clone()),
        tokenizer: None,
        text_model: None,
    };
    run(cfg, &d, dir, observer, interrupt)
}

fn hash(p: &Path) -> Hash {
    Hash::of(&std::fs::read(p).unwrap())
}

#[test]
fn every_method_trains_deterministically() {
    for method in METHODS {
        let mut cfg = config(method);
        // VICReg's variance term dominates at first and falls only as the embeddings spread:
        // it needs more steps at a higher rate to show its loss falling.
        if method == Method::Vicreg {
            cfg.epochs = 12;
            cfg.lr = 1e-2;
        }
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ra = pretrain(&cfg, a.path(), &Quiet, &AtomicBool::new(false)).unwrap();
        let rb = pretrain(&cfg, b.path(), &Quiet, &AtomicBool::new(false)).unwrap();
        assert_eq!(hash(&ra.encoder), hash(&rb.encoder), "{method:?}");
        assert_eq!(ra.curves.len(), cfg.epochs);
        assert!(
            ra.curves.iter().all(|c| c.loss.is_finite()),
            "{method:?}: {:?}",
            ra.curves
        );
        // MoCo's loss first rises as real keys replace the queue's random initial ones.
        if method != Method::Moco {
            assert!(
                ra.curves[cfg.epochs - 1].loss < ra.curves[0].loss,
                "{method:?} loss falls: {:?}",
                ra.curves
            );
        }
        assert_eq!(ra.text_encoder.is_some(), method.uses_text());
        // The encoder loads as a downstream init.
        let enc = ResNet::new(Arch::ResnetTiny, &mut Seeder::new("x", 0), &Device::flex());
        import::encoder_checkpoint(enc, &ra.encoder).unwrap();
    }
}

struct InterruptAt {
    at: usize,
    seen: AtomicUsize,
    flag: Arc<AtomicBool>,
}

impl Task for InterruptAt {
    fn step(&self) {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

#[test]
fn every_method_resumes_mid_epoch_to_the_same_encoder() {
    for method in METHODS {
        let cfg = config(method);
        let whole = tempfile::tempdir().unwrap();
        let full = pretrain(&cfg, whole.path(), &Quiet, &AtomicBool::new(false)).unwrap();
        let cut = tempfile::tempdir().unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        // 3 steps per epoch: the interrupt lands before the second batch of the second epoch,
        // so the checkpoint is taken mid-epoch and the resumed run skips the batch done.
        let obs = InterruptAt {
            at: 4,
            seen: AtomicUsize::new(0),
            flag: flag.clone(),
        };
        let stopped = pretrain(&cfg, cut.path(), &obs, &flag);
        assert!(
            matches!(stopped, Err(Error::Interrupted { epoch: 1 })),
            "{}: {stopped:?}",
            method.name()
        );
        let resumed = pretrain(&cfg, cut.path(), &Quiet, &AtomicBool::new(false)).unwrap();
        assert_eq!(resumed.resumed_from_epoch, Some(1), "{}", method.name());
        assert_eq!(
            hash(&full.encoder),
            hash(&resumed.encoder),
            "{}",
            method.name()
        );
        assert_eq!(
            full.text_encoder.as_deref().map(hash),
            resumed.text_encoder.as_deref().map(hash),
            "{}",
            method.name()
        );
        let losses = |r: &PretrainReport| {
            r.curves
                .iter()
                .map(|c| c.loss.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(losses(&full), losses(&resumed), "{}", method.name());
    }
}

#[test]
fn image_text_without_reports_is_refused() {
    let cfg = config(Method::Clip);
    let (images, examples, _) = data(Kind::NyuLike);
    let d = PretrainData {
        examples,
        reports: None,
        images: Arc::new(images.clone()),
        tokenizer: None,
        text_model: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let err = run(&cfg, &d, dir.path(), &Quiet, &AtomicBool::new(false)).unwrap_err();
    assert!(
        err.to_string().contains("needs one report per image"),
        "{err}"
    );
}

#[test]
fn the_vicreg_loss_is_the_reference_formula() {
    // Two views of 4 samples in 3 dimensions, and the loss computed by hand in f64.
    let a = [
        [0.5, -1.0, 2.0],
        [1.5, 0.0, -0.5],
        [-0.5, 1.0, 0.0],
        [0.0, 2.0, 1.0],
    ];
    let b = [
        [0.0, -1.5, 2.5],
        [1.0, 0.5, -1.0],
        [-1.0, 0.5, 0.5],
        [0.5, 1.0, 1.5],
    ];
    let w = VicregWeights {
        invariance: 25.0,
        variance: 25.0,
        covariance: 1.0,
    };
    let (n, d) = (4usize, 3usize);
    let inv: f64 = (0..n)
        .flat_map(|i| (0..d).map(move |j| (a[i][j] - b[i][j]) * (a[i][j] - b[i][j])))
        .sum::<f64>()
        / (n * d) as f64;
    let stats = |z: &[[f64; 3]; 4]| {
        let mean: Vec<f64> = (0..d)
            .map(|j| z.iter().map(|r| r[j]).sum::<f64>() / n as f64)
            .collect();
        let cov = |j: usize, k: usize| {
            z.iter()
                .map(|r| (r[j] - mean[j]) * (r[k] - mean[k]))
                .sum::<f64>()
                / (n - 1) as f64
        };
        let hinge = (0..d)
            .map(|j| (1.0 - (cov(j, j) + 1e-4).sqrt()).max(0.0))
            .sum::<f64>()
            / d as f64;
        let off = (0..d)
            .flat_map(|j| (0..d).filter(move |k| *k != j).map(move |k| (j, k)))
            .map(|(j, k)| cov(j, k).powi(2))
            .sum::<f64>()
            / d as f64;
        (hinge, off)
    };
    let ((ha, oa), (hb, ob)) = (stats(&a), stats(&b));
    let want = 25.0 * inv + 25.0 * (ha + hb) / 2.0 + (oa + ob);
    let dev = Device::flex();
    let t = |z: &[[f64; 3]; 4]| {
        Tensor::<2>::from_data(
            TensorData::new(
                z.iter().flatten().map(|v| *v as f32).collect::<Vec<f32>>(),
                [n, d],
            ),
            &dev,
        )
    };
    let got = f64::from(
        vicreg_loss(t(&a), t(&b), &w)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()[0],
    );
    assert!((got - want).abs() < 1e-4 * want.abs(), "{got} vs {want}");
}

#[test]
fn slip_with_convirt_trains_non_linear_projections() {
    let mut cfg = config(Method::Slip);
    cfg.slip = Some(SlipConfig {
        text_loss: TextLoss::Convirt,
        simclr_weight: 0.5,
        text_weight: 1.0,
    });
    let dir = tempfile::tempdir().unwrap();
    let r = pretrain(&cfg, dir.path(), &Quiet, &AtomicBool::new(false)).unwrap();
    assert!(
        r.curves[cfg.epochs - 1].loss < r.curves[0].loss,
        "{:?}",
        r.curves
    );
    let text = cfg.text.clone();
    let own = || {
        Some(TextTower::Own(TextEncoder::new(
            &text,
            10,
            1,
            &Device::flex(),
        )))
    };
    let nets = Nets::new(&cfg, own(), 2, &Device::flex(), &Device::flex());
    let Nets::Slip(m) = nets else {
        panic!("SLIP nets")
    };
    assert!(m.towers.image_projection.fc2.is_some() && m.towers.text_projection.fc2.is_some());
    // CLIP's half has linear projections; the SimCLR head is an MLP either way.
    cfg.slip = Some(SlipConfig::default());
    let Nets::Slip(m) = Nets::new(&cfg, own(), 2, &Device::flex(), &Device::flex()) else {
        panic!("SLIP nets")
    };
    assert!(m.towers.image_projection.fc2.is_none() && m.simclr_projection.fc2.is_some());
}

#[test]
fn the_slip_loss_is_its_weighted_parts() {
    // SLIP's loss with one weight at zero is the other loss alone: SimCLR on the first batch
    // equals SimCLR's own first-batch loss with the same encoder and head seeds.
    let mut cfg = config(Method::Slip);
    cfg.epochs = 1;
    cfg.slip = Some(SlipConfig {
        simclr_weight: 1.0,
        text_weight: 0.0,
        ..SlipConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let slip = pretrain(&cfg, dir.path(), &Quiet, &AtomicBool::new(false)).unwrap();
    cfg.slip = Some(SlipConfig {
        simclr_weight: 2.0,
        text_weight: 0.0,
        ..SlipConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let double = pretrain(&cfg, dir.path(), &Quiet, &AtomicBool::new(false)).unwrap();
    // Adam is invariant to the loss scale (up to ε), so the runs train alike and the
    // reported loss doubles.
    let (a, b) = (slip.curves[0].loss, double.curves[0].loss);
    assert!((b / a - 2.0).abs() < 1e-3, "{a} vs {b}");
}

#[test]
fn clip_with_a_bert_folder_trains_its_unfrozen_layers_only() {
    let dir = tempfile::tempdir().unwrap();
    let bert = dir.path().join("bert");
    crate::model::bert::tests::write_tiny_bert(&bert, 2, 1);
    let mut cfg = config(Method::Clip);
    cfg.text = TextConfig {
        max_len: 16,
        freeze_layers: 1,
        lr: Some(5e-3),
        ..TextConfig::default()
    };
    let (images, examples, reports) = data(Kind::Hospital);
    let d = PretrainData {
        examples,
        reports: Some(reports),
        images: Arc::new(images.clone()),
        tokenizer: None,
        text_model: Some(bert.clone()),
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let ra = run(&cfg, &d, &a, &Quiet, &AtomicBool::new(false)).unwrap();
    let rb = run(&cfg, &d, &b, &Quiet, &AtomicBool::new(false)).unwrap();
    assert!(
        ra.curves.iter().all(|c| c.loss.is_finite()),
        "{:?}",
        ra.curves
    );
    let text = ra.text_encoder.clone().unwrap();
    assert_eq!(hash(&text), hash(&rb.text_encoder.unwrap()));
    assert_eq!(hash(&ra.encoder), hash(&rb.encoder));
    // The saved tokenizer is the folder's WordPiece one.
    let tok = text::load_tokenizer(&ra.tokenizer.unwrap()).unwrap();
    assert_eq!(tok.token_to_id("narrowing"), Some(9));
    let before = crate::model::bert::tests::read_safetensors(&bert.join("model.safetensors"));
    let after = crate::model::bert::tests::read_safetensors(&text);
    let frozen = "embeddings.word_embeddings.weight";
    assert_eq!(after[frozen].1, before[&format!("bert.{frozen}")].1);
    let layer = |l: usize| format!("encoder.layer.{l}.intermediate.dense.bias");
    assert_eq!(after[&layer(0)].1, before[&format!("bert.{}", layer(0))].1);
    assert_ne!(after[&layer(1)].1, before[&format!("bert.{}", layer(1))].1);
}

#[test]
fn a_lower_text_rate_moves_the_text_tower_less() {
    // Same seed and data, the text tower at a tenth of the rate: its weights move less from
    // the folder's than at the shared rate.
    let dir = tempfile::tempdir().unwrap();
    let bert = dir.path().join("bert");
    crate::model::bert::tests::write_tiny_bert(&bert, 1, 1);
    let (images, examples, reports) = data(Kind::Hospital);
    let d = PretrainData {
        examples,
        reports: Some(reports),
        images: Arc::new(images.clone()),
        tokenizer: None,
        text_model: Some(bert.clone()),
    };
    let before = crate::model::bert::tests::read_safetensors(&bert.join("model.safetensors"));
    let key = "encoder.layer.0.output.dense.weight";
    let moved = |lr: Option<f64>, name: &str| {
        let mut cfg = config(Method::Clip);
        cfg.text = TextConfig {
            max_len: 16,
            lr,
            ..TextConfig::default()
        };
        let r = run(
            &cfg,
            &d,
            &dir.path().join(name),
            &Quiet,
            &AtomicBool::new(false),
        )
        .unwrap();
        let after = crate::model::bert::tests::read_safetensors(&r.text_encoder.unwrap());
        // burn keeps [in, out], the folder PyTorch's [out, in]: the L1 distance, transposed.
        let (a, b) = (&after[key], &before[&format!("bert.{key}")]);
        let (din, dout) = (a.0[0], a.0[1]);
        let mut d = 0.0;
        for i in 0..din {
            for o in 0..dout {
                d += f64::from((a.1[i * dout + o] - b.1[o * din + i]).abs());
            }
        }
        d
    };
    let shared = moved(None, "shared");
    let slow = moved(Some(config(Method::Clip).lr / 10.0), "slow");
    assert!(
        slow < shared,
        "a tenth of the rate moves the text tower less: {slow} vs {shared}"
    );
}

#[test]
fn supervised_pretraining_learns_its_label() {
    let (images, examples, _) =
        labelled(Kind::OaiLike, |s| s.kl.expect("OAI-like knees are graded"));
    let mut cfg = config(Method::Supervised);
    cfg.epochs = 8;
    let d = PretrainData {
        examples,
        reports: None,
        images: Arc::new(images),
        tokenizer: None,
        text_model: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let r = run(&cfg, &d, dir.path(), &Quiet, &AtomicBool::new(false)).unwrap();
    let (first, last) = (r.curves[0].loss, r.curves[cfg.epochs - 1].loss);
    // Below the cross-entropy of always predicting the training set's class frequencies.
    let mut counts = [0f64; 5];
    d.examples
        .iter()
        .for_each(|e| counts[e.label as usize] += 1.0);
    let n = d.examples.len() as f64;
    let prior: f64 = counts
        .iter()
        .filter(|c| **c > 0.0)
        .map(|c| -(c / n) * (c / n).ln())
        .sum();
    assert!(
        last < first && last < prior,
        "losses {:?}, prior entropy {prior}",
        r.curves
    );
}
