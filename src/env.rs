//! The environment a run executed in, recorded in every run record: ktrack version and git
//! commit (dirty flag), rustc, backend and device, LibTorch/CUDA versions under `tch`, thread
//! count, host, OS, start and end times, seeds. A bottom-level module: the training layer
//! describes its backend ([`BackendInfo`]); this module only records what it is given.

use serde::{Deserialize, Serialize};

/// Facts about the backend for run records (filled by `train::backend::describe`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    pub device: String,
    pub backend: String,
    pub device_name: String,
    pub threads: usize,
    pub libtorch: Option<String>,
    pub cuda: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub ktrack_version: String,
    pub git_commit: String,
    pub git_dirty: bool,
    pub rustc: String,
    pub backend: BackendInfo,
    pub host: String,
    pub os: String,
    pub started_at: String,
    pub finished_at: String,
    pub seed: u64,
}

/// The ktrack version that enters run identities.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn capture(
    backend: BackendInfo,
    seed: u64,
    started_at: &str,
    finished_at: &str,
) -> Environment {
    Environment {
        ktrack_version: VERSION.to_string(),
        git_commit: env!("KTRACK_GIT_COMMIT").to_string(),
        git_dirty: env!("KTRACK_GIT_DIRTY") == "true",
        rustc: env!("KTRACK_RUSTC").to_string(),
        backend,
        host: hostname(),
        os: os(),
        started_at: started_at.to_string(),
        finished_at: finished_at.to_string(),
        seed,
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).to_string()
}

fn os() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let pretty = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    format!(
        "{pretty} (kernel {}, {})",
        release.trim(),
        std::env::consts::ARCH
    )
}
