//! Records the git commit (and whether the tree was dirty) and the rustc version at build
//! time, for the environment every run record carries.

use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = output("git", &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = output("git", &["status", "--porcelain", "--untracked-files=no"])
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    #[allow(clippy::disallowed_methods)] // cargo passes the compiler to build scripts this way
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KTRACK_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=KTRACK_GIT_DIRTY={dirty}");
    println!("cargo:rustc-env=KTRACK_RUSTC={rustc_version}");
    // With the `tch` feature: the LibTorch this binary is built against (a PyTorch wheel's
    // `version.py`, or a libtorch archive's `build-version`).
    #[allow(clippy::disallowed_methods)] // torch-sys reads the same variable
    let libtorch = std::env::var("LIBTORCH").ok().and_then(|dir| {
        let dir = std::path::Path::new(&dir);
        let from_py = std::fs::read_to_string(dir.join("version.py"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("__version__ = "))
                    .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
            });
        from_py.or_else(|| {
            std::fs::read_to_string(dir.join("build-version"))
                .ok()
                .map(|v| v.trim().to_string())
        })
    });
    println!(
        "cargo:rustc-env=KTRACK_LIBTORCH_VERSION={}",
        libtorch.unwrap_or_else(|| "unknown".into())
    );
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    println!("cargo:rerun-if-changed=build.rs");
}
