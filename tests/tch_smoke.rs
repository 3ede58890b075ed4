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
    let images = std::sync::Arc::new(Images(images, None));
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
        precision: Default::default(),
        probe: None,
        select: Default::default(),
        head_init: Default::default(),
    };
    let mut hashes = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let data = DownstreamData {
            train: examples.clone(),
            val: val.clone(),
            evals: vec![("val".into(), val.clone())],
            images: images.clone(),
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

/// One ResNet-18 training step (8 noise images of 64 px, seeded weights) on `kind`: the loss
/// and every parameter's gradient. Large enough that every BatchNorm normalises over 32 or
/// more values per channel.
fn resnet18_step(kind: DeviceKind) -> (f32, Vec<Vec<f32>>) {
    use burn::module::Module;
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::tensor::{Int, Tensor, TensorData};
    let (batch, size) = (8, 64);
    let mut r = ktrack::rng::stream("native-backward", &[], 0);
    let pixels: Vec<f32> = (0..batch * 3 * size * size)
        .map(|_| ktrack::rng::normal(&mut r) as f32)
        .collect();
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % 5).collect();
    let device = kind.device().unwrap().autodiff();
    let model = ktrack::model::Classifier::new(Arch::Resnet18, 5, 0, &device);
    let x = Tensor::<4>::from_data(TensorData::new(pixels, [batch, 3, size, size]), &device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch]), &device);
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
    (value, visit.out)
}

/// The relative L2 error of `b` against `a`.
fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    let norm = a.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    diff / norm.max(1e-12)
}

/// One training step's loss and gradients of ResNet-18 on LibTorch (native convolution and
/// ReLU backward) equal those of burn's default ops on the pure-Rust CPU backend, from the
/// same seeded weights and batch, within 1e-4.
#[test]
fn native_libtorch_backward_matches_the_default_ops() {
    assert!(
        ktrack::train::backend::native_libtorch_backward(),
        "this build has the native LibTorch backward"
    );
    ktrack::train::backend::pin_threads(2);
    let steps = [
        resnet18_step(DeviceKind::Cpu),
        resnet18_step(DeviceKind::TchCpu),
    ];
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
        let relative = relative_l2(a, b);
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

/// Every parameter of a module, flattened, in visiting order.
struct Params(Vec<Vec<f32>>);

impl burn::module::ModuleVisitor for Params {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::Tensor<D>>) {
        self.0
            .push(param.val().into_data().try_to_vec::<f32>().unwrap());
    }
}

fn params<M: burn::module::Module>(m: &M) -> Vec<Vec<f32>> {
    let mut p = Params(Vec::new());
    m.visit(&mut p);
    p.0
}

/// ktrack's AdamW on LibTorch (one fused `_fused_adamw_` kernel per parameter) follows burn's
/// composed AdamW on LibTorch and burn's on the pure-Rust backend within 1e-5 over ten steps
/// with weight decay, is another
/// computation than burn's step (the bits differ), and resumes from its saved state bit for
/// bit.
#[test]
fn fused_adamw_follows_burns_adamw_and_resumes_exactly() {
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
    use burn::tensor::{Tensor, TensorData};
    assert!(ktrack::train::optim::fused_on_libtorch());
    ktrack::train::backend::pin_threads(2);
    let (n, d, k) = (32, 24, 5);
    let mut r = ktrack::rng::stream("fused-adamw", &[], 0);
    let x: Vec<f32> = (0..n * d)
        .map(|_| ktrack::rng::normal(&mut r) as f32)
        .collect();
    let y: Vec<f32> = (0..n * k)
        .map(|_| ktrack::rng::normal(&mut r) as f32)
        .collect();
    let run = |kind: DeviceKind, optim: &mut ModuleOptimizer, model: Linear, steps: usize| {
        let device = kind.device().unwrap().autodiff();
        let mut model = model;
        for _ in 0..steps {
            let xs = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, d]), &device);
            let ys = Tensor::<2>::from_data(TensorData::new(y.clone(), [n, k]), &device);
            // Linear in the parameters: the gradients do not depend on them, so the runs
            // compare their optimizers, not Adam's amplification of rounding in tiny gradients.
            let loss = (model.forward(xs) * ys).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-2, model, grads);
        }
        model
    };
    // The same initial weights on both backends.
    let w: Vec<f32> = (0..d * k)
        .map(|_| 0.2 * ktrack::rng::normal(&mut r) as f32)
        .collect();
    let bias: Vec<f32> = (0..k)
        .map(|_| 0.1 * ktrack::rng::normal(&mut r) as f32)
        .collect();
    let start = |kind: DeviceKind| {
        let device = kind.device().unwrap().autodiff();
        let mut lin: Linear = LinearConfig::new(d, k).init(&device);
        lin.weight = burn::module::Param::from_data(TensorData::new(w.clone(), [d, k]), &device);
        lin.bias = Some(burn::module::Param::from_data(
            TensorData::new(bias.clone(), [k]),
            &device,
        ));
        lin
    };
    let wd = 0.05;
    let flex = run(
        DeviceKind::Cpu,
        &mut ktrack::train::optim::adamw(wd),
        start(DeviceKind::Cpu),
        10,
    );
    let fused = run(
        DeviceKind::TchCpu,
        &mut ktrack::train::optim::adamw(wd),
        start(DeviceKind::TchCpu),
        10,
    );
    let composed = run(
        DeviceKind::TchCpu,
        &mut AdamWConfig::new().with_weight_decay(wd).init(),
        start(DeviceKind::TchCpu),
        10,
    );
    let (a, b, c) = (params(&flex), params(&fused), params(&composed));
    assert_eq!(
        params(&start(DeviceKind::Cpu)),
        params(&start(DeviceKind::TchCpu))
    );
    // Per tensor: the largest difference relative to the tensor's largest magnitude (the two
    // kernels round a few ulps apart per step, which adds up over the steps).
    let worst = |p: &[Vec<f32>], q: &[Vec<f32>]| {
        let mut worst = 0f32;
        for (pa, pb) in p.iter().zip(q) {
            let scale = pa.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (u, v) in pa.iter().zip(pb) {
                worst = worst.max((u - v).abs() / scale);
            }
        }
        worst
    };
    // The same gradients (both on LibTorch): the optimizers alone.
    let (same, across) = (worst(&c, &b), worst(&a, &b));
    eprintln!(
        "fused AdamW vs burn's AdamW on LibTorch: worst relative difference {same:.2e}; \
         vs burn's on the pure-Rust backend (gradients rounded differently too): {across:.2e}"
    );
    assert!(same <= 1e-5, "fused vs composed on LibTorch: {same:.2e}");
    assert!(
        across <= 1e-5,
        "fused on LibTorch vs burn on flex: {across:.2e}"
    );
    assert_ne!(
        b, c,
        "the fused step is a different kernel from burn's composed step"
    );
    // Resume: 4 steps, save, load into a fresh optimizer, 6 more = 10 uninterrupted.
    let dir = tempfile::tempdir().unwrap();
    let mut first = ktrack::train::optim::adamw(wd);
    let half = run(DeviceKind::TchCpu, &mut first, start(DeviceKind::TchCpu), 4);
    first.save(dir.path().join("optim.bpk")).unwrap();
    let mut second = ktrack::train::optim::adamw(wd)
        .load(dir.path().join("optim.bpk"))
        .unwrap();
    let resumed = run(DeviceKind::TchCpu, &mut second, half, 6);
    assert_eq!(
        params(&resumed),
        b,
        "resuming from the saved state is bit-identical"
    );
}

/// `precision = "bf16"` on LibTorch: one ResNet-18 training step with bfloat16 convolutions and
/// matrix products stays as close to the float32 step as PyTorch's bf16 autocast does, the
/// gradients stay float32, and the step is really another computation (the loss's bits
/// differ). At initialisation on noise, bf16 rounding moves the gradients of the deep layers a
/// lot: PyTorch 2.9's autocast on torchvision's ResNet-18 with the same batch shape measures a
/// worst relative L2 error of 0.56 (first conv 0.42, fc weight 0.012), so the bounds are: loss
/// within 1e-2, head gradients within 5e-2, every gradient within 0.75.
#[test]
#[allow(deprecated)] // burn 0.22 marks burn-tch deprecated; it is its LibTorch backend
fn bf16_compute_follows_the_fp32_step_within_bf16_rounding() {
    use ktrack::train::Precision;
    ktrack::train::backend::pin_threads(2);
    let steps: Vec<_> = [Precision::Fp32, Precision::Bf16]
        .into_iter()
        .map(|precision| {
            let _guard = precision.enter();
            resnet18_step(DeviceKind::TchCpu)
        })
        .collect();
    assert!(
        !burn::backend::libtorch::native_ops::bf16_compute(),
        "the guard restored fp32"
    );
    let (fp32, bf16) = (&steps[0], &steps[1]);
    assert_ne!(fp32.0, bf16.0, "bf16 is another computation");
    assert!(
        ((fp32.0 - bf16.0) / fp32.0).abs() <= 1e-2,
        "loss {} vs {}",
        fp32.0,
        bf16.0
    );
    let rel: Vec<f64> = fp32
        .1
        .iter()
        .zip(&bf16.1)
        .map(|(a, b)| relative_l2(a, b))
        .collect();
    let worst = rel.iter().fold(0f64, |m, v| m.max(*v));
    let head = rel[rel.len() - 2..].iter().fold(0f64, |m, v| m.max(*v));
    eprintln!(
        "bf16 vs fp32: loss {} vs {}; gradient relative L2 error: worst {worst:.2e}, first conv {:.2e}, head {head:.2e}",
        fp32.0, bf16.0, rel[0]
    );
    assert!(head <= 5e-2, "head gradient relative L2 error {head:.2e}");
    assert!(
        worst <= 0.75,
        "worst gradient relative L2 error {worst:.2e}"
    );
}
