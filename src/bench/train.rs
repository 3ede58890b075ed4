//! `ktrack bench train`: forward + backward images/s of an encoder with a linear head on every
//! available backend (burn-flex; LibTorch CPU and CUDA with the `tch` feature), side by side,
//! each as a ratio to the first.

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::model::{Arch, Classifier};
use crate::rng;
use crate::train::DeviceKind;

#[derive(Clone, Debug)]
pub struct TrainBenchOptions {
    pub arch: Arch,
    pub size: usize,
    pub batch: usize,
    pub steps: usize,
    pub warmup: usize,
    pub devices: Vec<DeviceKind>,
    pub threads: usize,
    /// bf16: ktrack's `precision = "bf16"`, against PyTorch's bf16 autocast.
    pub precision: crate::train::Precision,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainBenchRow {
    pub device: String,
    pub images_per_second: f64,
    pub seconds_per_step: f64,
    /// Forward pass alone (no autodiff), for attributing the step's time.
    pub forward_images_per_second: f64,
    /// images/s relative to the first device.
    pub ratio: f64,
}

/// PyTorch eager on the same model, batch, loss, optimiser and threads, measured by
/// `benches/eager_train.py` through a Python that has torch and torchvision.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct EagerRow {
    pub torch: String,
    pub device: String,
    pub threads: usize,
    pub images_per_second: f64,
    pub forward_images_per_second: f64,
}

const EAGER_SCRIPT: &str = include_str!("../../benches/eager_train.py");

/// Runs the eager reference on `device` (`cpu` or `cuda:N`) with `python`.
pub fn eager(
    python: &std::path::Path,
    opts: &TrainBenchOptions,
    device: &str,
) -> anyhow::Result<EagerRow> {
    let arch = match opts.arch {
        Arch::Resnet18 => "resnet18",
        Arch::Resnet34 => "resnet34",
        Arch::Resnet50 => "resnet50",
        other => anyhow::bail!("torchvision has no model for `{other}`; compare resnet18/34/50"),
    };
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("eager_train.py");
    std::fs::write(&script, EAGER_SCRIPT)?;
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["--arch", arch, "--device", device])
        .args([
            "--size",
            &opts.size.to_string(),
            "--batch",
            &opts.batch.to_string(),
        ])
        .args([
            "--steps",
            &opts.steps.to_string(),
            "--warmup",
            &opts.warmup.to_string(),
        ])
        .args(["--threads", &opts.threads.to_string()])
        .args((opts.precision == crate::train::Precision::Bf16).then_some("--bf16"))
        .output()
        .map_err(|e| anyhow::anyhow!("could not run `{}`: {e}", python.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "the PyTorch eager reference failed ({}):\n{}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .map_err(|e| anyhow::anyhow!("the eager reference printed `{line}`: {e}"))
}

/// The devices this build can use (CUDA only when asked for).
pub fn available() -> Vec<DeviceKind> {
    let mut v = vec![DeviceKind::Cpu];
    if cfg!(feature = "tch") {
        v.push(DeviceKind::TchCpu);
    }
    v
}

pub fn run(opts: &TrainBenchOptions) -> anyhow::Result<Vec<TrainBenchRow>> {
    crate::train::backend::pin_threads(opts.threads);
    let mut rows = Vec::new();
    for &kind in &opts.devices {
        opts.precision.check(kind)?;
        let _precision = opts.precision.enter();
        let device = kind.device()?.autodiff();
        let mut model = Classifier::new(opts.arch, 5, 0, &device);
        let mut optim = crate::train::optim::adamw(1e-4);
        let ce = CrossEntropyLossConfig::new().init(&device);
        let mut r = rng::stream("bench-train", &[], 0);
        let n = opts.batch * 3 * opts.size * opts.size;
        let pixels: Vec<f32> = (0..n).map(|_| rng::normal(&mut r) as f32).collect();
        let labels: Vec<i64> = (0..opts.batch).map(|i| (i % 5) as i64).collect();
        let mut step = |model: Classifier| -> anyhow::Result<Classifier> {
            let x = Tensor::<4>::from_data(
                TensorData::new(pixels.clone(), [opts.batch, 3, opts.size, opts.size]),
                &device,
            );
            let y =
                Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [opts.batch]), &device);
            let loss = ce.forward(model.forward(x), y);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            Ok(optim.step(1e-4, model, grads))
        };
        for _ in 0..opts.warmup {
            model = step(model)?;
        }
        device.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let t = Instant::now();
        for _ in 0..opts.steps {
            model = step(model)?;
        }
        device.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let secs = t.elapsed().as_secs_f64() / opts.steps as f64;
        // The same forward pass without autodiff.
        let plain = kind.device()?;
        let infer = Classifier::new(opts.arch, 5, 0, &plain);
        let forward = || {
            let x = Tensor::<4>::from_data(
                TensorData::new(pixels.clone(), [opts.batch, 3, opts.size, opts.size]),
                &plain,
            );
            infer.forward(x)
        };
        for _ in 0..opts.warmup {
            let _ = forward();
        }
        plain.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let t = Instant::now();
        for _ in 0..opts.steps {
            let _ = forward();
        }
        plain.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let fwd = t.elapsed().as_secs_f64() / opts.steps as f64;
        rows.push(TrainBenchRow {
            device: kind.to_string(),
            images_per_second: opts.batch as f64 / secs,
            seconds_per_step: secs,
            forward_images_per_second: opts.batch as f64 / fwd,
            ratio: 1.0,
        });
    }
    let base = rows.first().map_or(1.0, |r| r.images_per_second);
    for r in &mut rows {
        r.ratio = r.images_per_second / base;
    }
    Ok(rows)
}
