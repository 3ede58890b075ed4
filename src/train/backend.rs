//! Backends chosen at run time: `cpu` (burn-flex, pure Rust, the default) or, with the cargo
//! feature `tch`, `tch-cpu` and `cuda:N` (LibTorch). Also pins the CPU thread count, since
//! parallel reductions may change with it, and describes the device for run records.

use std::fmt;
use std::str::FromStr;

use burn::prelude::Device;
use serde::{Deserialize, Serialize};

/// Where training runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum DeviceKind {
    /// burn-flex on the CPU (pure Rust).
    Cpu,
    /// LibTorch on the CPU (feature `tch`).
    TchCpu,
    /// LibTorch on a CUDA GPU (feature `tch`).
    Cuda(usize),
}

impl DeviceKind {
    /// The backend family, part of a run's identity ("flex" or "tch").
    pub fn backend(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "flex",
            DeviceKind::TchCpu | DeviceKind::Cuda(_) => "tch",
        }
    }

    /// True when results must be bit-identical on a rerun (CPU backends).
    pub fn deterministic(self) -> bool {
        !matches!(self, DeviceKind::Cuda(_))
    }

    /// The burn device (without autodiff).
    // burn 0.22 marks burn-tch deprecated; it is still the LibTorch backend this version ships.
    #[allow(deprecated)]
    pub fn device(self) -> Result<Device, Error> {
        match self {
            DeviceKind::Cpu => Ok(Device::flex()),
            #[cfg(feature = "tch")]
            DeviceKind::TchCpu => Ok(Device::libtorch()),
            #[cfg(feature = "tch")]
            DeviceKind::Cuda(i) => {
                // Let cuDNN time its convolution algorithms for each shape once (CUDA runs are
                // not bit-reproducible anyway; their tolerance is declared).
                tch::Cuda::cudnn_set_benchmark(true);
                Ok(Device::libtorch_cuda(i))
            }
            #[cfg(not(feature = "tch"))]
            other => Err(Error::NotBuilt(other)),
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceKind::Cpu => f.write_str("cpu"),
            DeviceKind::TchCpu => f.write_str("tch-cpu"),
            DeviceKind::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl FromStr for DeviceKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<DeviceKind, Error> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "tch-cpu" => Ok(DeviceKind::TchCpu),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(DeviceKind::Cuda)
                .ok_or_else(|| Error::Unknown(s.to_string())),
        }
    }
}

impl From<DeviceKind> for String {
    fn from(d: DeviceKind) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for DeviceKind {
    type Error = Error;
    fn try_from(s: String) -> Result<DeviceKind, Error> {
        s.parse()
    }
}

/// The arithmetic of a run's convolutions and matrix products (`precision` in `[train]` and
/// `[pretrain]`). `bf16`: bfloat16 compute for those, float32 weights, optimizer state,
/// BatchNorm and everything else (LibTorch only). Part of a run's identity when not `fp32`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

impl Precision {
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }

    /// Refuses what a device cannot do: bf16 needs LibTorch.
    pub fn check(self, device: DeviceKind) -> Result<(), Error> {
        match (self, device.backend()) {
            (Precision::Bf16, "flex") => Err(Error::Bf16OnFlex),
            _ => Ok(()),
        }
    }

    /// Computes in this precision on the current thread until the guard is dropped.
    pub fn enter(self) -> PrecisionGuard {
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        {
            let previous =
                burn::backend::libtorch::native_ops::set_bf16_compute(self == Precision::Bf16);
            PrecisionGuard { previous }
        }
        #[cfg(not(feature = "tch"))]
        PrecisionGuard { previous: false }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

/// Restores the thread's previous precision when dropped.
pub struct PrecisionGuard {
    #[cfg_attr(not(feature = "tch"), allow(dead_code))]
    previous: bool,
}

impl Drop for PrecisionGuard {
    fn drop(&mut self) {
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        burn::backend::libtorch::native_ops::set_bf16_compute(self.previous);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "precision `bf16` needs LibTorch, but the run's device is `cpu` (the pure-Rust backend)"
    )]
    Bf16OnFlex,
    #[error("unknown device `{0}`: expected cpu, tch-cpu or cuda:N")]
    Unknown(String),
    #[error("device `{0}` needs LibTorch, but this ktrack was built without the `tch` feature")]
    NotBuilt(DeviceKind),
}

impl crate::hint::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::NotBuilt(_) => Some(
                "build with `cargo build --release --features tch` (see README, \"LibTorch and GPUs\"), or use --device cpu"
                    .into(),
            ),
            Error::Unknown(_) => None,
            Error::Bf16OnFlex => Some(
                "set `[run] device = \"tch-cpu\"` or `\"cuda:0\"` (a build with `--features tch`), or `precision = \"fp32\"`"
                    .into(),
            ),
        }
    }
}

/// True when this build trains on LibTorch with its native backward passes (convolution
/// through `convolution_backward`, ReLU through `threshold_backward`: `vendor/burn-tch`),
/// which needs LibTorch's headers at build time.
#[allow(deprecated)]
pub fn native_libtorch_backward() -> bool {
    #[cfg(feature = "tch")]
    {
        burn::backend::libtorch::native_backward()
    }
    #[cfg(not(feature = "tch"))]
    {
        false
    }
}

/// Sets the CPU thread pool size once per process; returns the size in effect.
pub fn pin_threads(threads: usize) -> usize {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    #[cfg(feature = "tch")]
    {
        // LibTorch has its own intra-op pool.
        tch::set_num_threads(threads as i32);
    }
    rayon::current_num_threads()
}

pub use crate::env::BackendInfo;

pub fn describe(kind: DeviceKind) -> BackendInfo {
    let cpu_name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    #[allow(unused_mut)]
    let mut info = BackendInfo {
        device: kind.to_string(),
        backend: kind.backend().to_string(),
        device_name: cpu_name,
        threads: rayon::current_num_threads(),
        libtorch: None,
        cuda: None,
    };
    #[cfg(feature = "tch")]
    if kind.backend() == "tch" {
        info.libtorch = Some(tch_version());
        if let DeviceKind::Cuda(_) = kind {
            info.device_name = format!(
                "CUDA device (cudnn {}, cudnn benchmark on)",
                tch::Cuda::cudnn_is_available()
            );
            info.cuda = Some(format!(
                "{} device(s), CUDA runtime {}, cuDNN {}",
                tch::Cuda::device_count(),
                tch::utils::version_cudart(),
                tch::utils::version_cudnn()
            ));
        }
    }
    info
}

#[cfg(feature = "tch")]
fn tch_version() -> String {
    // build.rs records the LibTorch this binary was built against.
    env!("KTRACK_LIBTORCH_VERSION").to_string()
}
