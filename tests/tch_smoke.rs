//! LibTorch smoke test (feature `tch`): a few training steps on `tch-cpu`, and the same run
//! twice giving the same checkpoint, so the LibTorch path cannot rot. `.ci/run` runs it.
#![cfg(feature = "tch")]

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use ktrack::data::Label;
use ktrack::data::image::encode_png16;
use ktrack::data::synth::{self, Kind, SynthSpec};
use ktrack::id::Hash;
use ktrack::model::Arch;
use ktrack::progress::Quiet;
use ktrack::train::DeviceKind;
use ktrack::train::data::{Augment, Example, MemoryImages as Images, Normalize, Preprocess};
use ktrack::train::downstream::{self, DownstreamConfig, DownstreamData, Init, Protocol};

#[test]
fn libtorch_cpu_trains_and_repeats_bit_for_bit() {
    let sims = synth::simulate(&SynthSpec {
        kind: Kind::OaiLike,
        patients: 24,
        image_size: 32,
        seed: 1,
    });
    let mut images = BTreeMap::new();
    let mut examples = Vec::new();
    for s in sims.iter().filter(|s| s.visit == 0) {
        let png = encode_png16(32, 32, &s.render(32));
        let h = Hash::of(&png);
        images.insert(h, png);
        examples.push(Example {
            sample_id: s.sample_id.clone(),
            patient_id: s.patient_id.clone(),
            side: s.side,
            image: h,
            label: s.kl.unwrap_or(0),
        });
    }
    let val = examples.split_off(examples.len() * 3 / 4);
    let images = Images(images);
    let cfg = DownstreamConfig {
        arch: Arch::ResnetTiny,
        task: Label::Kl,
        protocol: Protocol::Finetune,
        preprocess: Preprocess {
            image_size: 32,
            normalize: Normalize::Zscore,
            flip_left: true,
        },
        augment: Augment::default(),
        epochs: 2,
        batch_size: 8,
        lr: 1e-3,
        weight_decay: 1e-4,
        warmup_epochs: 0.5,
        patience: None,
        seed: 3,
        device: DeviceKind::TchCpu,
        threads: 2,
    };
    let mut hashes = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let data = DownstreamData {
            train: examples.clone(),
            val: val.clone(),
            evals: vec![("val".into(), val.clone())],
            images: &images,
        };
        let report = downstream::run(
            &cfg,
            &Init::Random,
            &data,
            dir.path(),
            &Quiet,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(report.epochs_run, 2);
        assert!(report.curves.iter().all(|c| c.train_loss.is_finite()));
        hashes.push(Hash::of(&std::fs::read(&report.checkpoint).unwrap()));
    }
    assert_eq!(
        hashes[0], hashes[1],
        "the same run on LibTorch CPU gives the same checkpoint"
    );
}

/// Every parameter's gradient, in visiting order.
struct Grads<'a> {
    grads: &'a burn::tensor::Gradients,
    out: Vec<Vec<f32>>,
}

impl burn::module::ModuleVisitor for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::Tensor<D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            self.out.push(g.into_data().try_to_vec::<f32>().unwrap());
        }
    }
}

/// One training step's loss and gradients of ResNet-18 on LibTorch (native convolution and
/// ReLU backward) equal those of burn's default ops on the pure-Rust CPU backend, from the
/// same seeded weights and batch, within 1e-4.
#[test]
fn native_libtorch_backward_matches_the_default_ops() {
    use burn::module::Module;
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::tensor::{Int, Tensor, TensorData};
    assert!(
        ktrack::train::backend::native_libtorch_backward(),
        "this build has the native LibTorch backward"
    );
    ktrack::train::backend::pin_threads(2);
    // Large enough that every BatchNorm normalises over 32 or more values per channel.
    let (batch, size) = (8, 64);
    let mut r = ktrack::rng::stream("native-backward", &[], 0);
    let pixels: Vec<f32> = (0..batch * 3 * size * size)
        .map(|_| ktrack::rng::normal(&mut r) as f32)
        .collect();
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % 5).collect();
    let mut steps = Vec::new();
    for kind in [DeviceKind::Cpu, DeviceKind::TchCpu] {
        let device = kind.device().unwrap().autodiff();
        let model = ktrack::model::Classifier::new(Arch::Resnet18, 5, 0, &device);
        let x = Tensor::<4>::from_data(
            TensorData::new(pixels.clone(), [batch, 3, size, size]),
            &device,
        );
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [batch]), &device);
        let loss = CrossEntropyLossConfig::new()
            .init(&device)
            .forward(model.forward(x), y);
        let value = loss.clone().into_data().try_to_vec::<f32>().unwrap()[0];
        let grads = loss.backward();
        let mut visit = Grads {
            grads: &grads,
            out: Vec::new(),
        };
        model.visit(&mut visit);
        steps.push((value, visit.out));
    }
    let (default, native) = (&steps[0], &steps[1]);
    assert!(
        (default.0 - native.0).abs() <= 1e-4,
        "loss {} vs {}",
        default.0,
        native.0
    );
    assert_eq!(default.1.len(), native.1.len());
    assert!(default.1.len() > 60, "every parameter has a gradient");
    // Per gradient: the relative L2 error (the usual gradient-check measure) within 1e-4, and
    // no element off by more than 1e-3 of the tensor's largest magnitude.
    let mut worst_relative = 0f64;
    for (i, (a, b)) in default.1.iter().zip(&native.1).enumerate() {
        assert_eq!(a.len(), b.len());
        let norm = a.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(x - y).powi(2))
            .sum::<f64>()
            .sqrt();
        let relative = diff / norm.max(1e-12);
        worst_relative = worst_relative.max(relative);
        let scale = a.iter().fold(1f32, |m, v| m.max(v.abs()));
        let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            relative <= 1e-4 && worst <= 1e-3 * scale,
            "gradient {i}: relative L2 error {relative:.2e}, max |Δ| {worst} (scale {scale})"
        );
    }
    eprintln!(
        "loss {} vs {}; worst relative L2 error over {} gradients: {worst_relative:.2e}",
        default.0,
        native.0,
        default.1.len()
    );
}
