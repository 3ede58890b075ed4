//! `ktrack bench loader`: the loader at real resolution — 16-bit images (default 1024²) to the
//! input size (default 224 px) — per core, without and with the preprocessed-image cache; and
//! a loading run's peak resident memory at two cohort sizes, pixels in memory and cached, each
//! measured in a fresh process (`VmHWM`) so one measurement cannot inflate the next.
//!
//! Timed, on the rayon pool of `--threads` threads (1 by default: per core):
//! - decode + resize, and an epoch from memory (augment + normalise); an epoch without a cache
//!   costs both, every epoch (the reference the other rows are divided by);
//! - filling the cache: decode + resize + write, once per study;
//! - an epoch from the cache: read + checksum + augment + normalise, every epoch.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use rayon::prelude::*;

use crate::data::Side;
use crate::data::image;
use crate::id::Hash;
use crate::runner::exec::StoreImages;
use crate::store::Store;
use crate::train::cache::{CacheDir, PixelCache};
use crate::train::data::{
    Augment, BaseImages, Example, Loader, MemoryImages, Normalize, Pass, Preprocess, epoch_order,
};

#[derive(Clone, Debug)]
pub struct LoaderBenchOptions {
    /// Images timed.
    pub images: usize,
    /// Their side in pixels (16-bit grayscale PNG).
    pub source: u32,
    /// The input size they are resized to.
    pub size: u32,
    /// Cohort sizes whose peak resident memory is measured (smaller images: the memory that
    /// matters is what a run keeps per image at the input size).
    pub rss_images: Vec<usize>,
    pub rss_source: u32,
    pub seed: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct LoaderRow {
    pub stage: &'static str,
    pub images_per_second: f64,
    /// `images_per_second` ÷ threads.
    pub per_core: f64,
    /// `images_per_second` ÷ an uncached epoch's.
    pub vs_uncached: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RssRow {
    pub images: usize,
    pub pixels: &'static str,
    pub peak_rss_mib: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct LoaderReport {
    pub images: usize,
    pub source: u32,
    pub size: u32,
    pub threads: usize,
    pub rows: Vec<LoaderRow>,
    pub rss: Vec<RssRow>,
    /// What one cached image takes on disk.
    pub cache_entry_bytes: u64,
}

/// A distinct, smooth 16-bit test image (gradients, rings and noise, as hard to compress as a
/// radiograph).
fn test_image(side: u32, index: usize, seed: u64) -> Vec<u8> {
    let mut r = crate::rng::stream("bench-loader", &[&(index as u64).to_le_bytes()], seed);
    let (fx, fy, phase) = (
        1.0 + 6.0 * crate::rng::unit(&mut r),
        1.0 + 6.0 * crate::rng::unit(&mut r),
        6.3 * crate::rng::unit(&mut r),
    );
    let n = f64::from(side);
    let px: Vec<u16> = (0..side * side)
        .map(|i| {
            let (x, y) = (f64::from(i % side) / n, f64::from(i / side) / n);
            let ring = ((x - 0.5).hypot(y - 0.5) * fx * 12.0 + phase).sin();
            let v =
                0.45 + 0.2 * ring + 0.2 * (x * fy).sin() * y + 0.03 * crate::rng::normal(&mut r);
            (v.clamp(0.0, 1.0) * 65535.0) as u16
        })
        .collect();
    image::encode_png16(side, side, &px)
}

fn examples(hashes: &[Hash]) -> Vec<Example> {
    hashes
        .iter()
        .enumerate()
        .map(|(i, h)| Example {
            sample_id: format!("knee-{i}"),
            patient_id: format!("patient-{i}"),
            side: if i % 2 == 0 { Side::L } else { Side::R },
            image: *h,
            label: 0,
        })
        .collect()
}

fn preprocess(size: u32) -> Preprocess {
    Preprocess {
        image_size: size,
        normalize: Normalize::Zscore,
        flip_left: true,
    }
}

/// One augmented training epoch over `images` through the loader; returns images/s.
fn epoch(images: &Arc<BaseImages>, seed: u64) -> anyhow::Result<f64> {
    let n = images.len();
    let pass = Pass {
        order: epoch_order(n, seed, 0, true),
        batch_size: 32,
        augment: Some(Augment::default()),
        normalize: Normalize::Zscore,
        seed,
        epoch: 0,
        skip: 0,
        prefetch: 2,
        min_batch: 1,
        views: 1,
    };
    let t = Instant::now();
    let mut seen = 0;
    for batch in Loader::spawn(images.clone(), Arc::new(vec![0; n]), pass) {
        seen += batch.map_err(anyhow::Error::msg)?.len();
    }
    Ok(seen as f64 / t.elapsed().as_secs_f64())
}

/// Runs the benchmark (the rayon pool must already have its threads).
pub fn run(o: &LoaderBenchOptions) -> anyhow::Result<LoaderReport> {
    let threads = rayon::current_num_threads();
    let no = AtomicBool::new(false);
    let files: Vec<(Hash, Vec<u8>)> = (0..o.images)
        .into_par_iter()
        .map(|i| {
            let bytes = test_image(o.source, i, o.seed);
            (Hash::of(&bytes), bytes)
        })
        .collect();
    let hashes: Vec<Hash> = files.iter().map(|(h, _)| *h).collect();
    let ex = examples(&hashes);
    let dir = tempfile::tempdir()?;
    let cache = PixelCache::at(dir.path().join("pixels"));
    let plain = Arc::new(MemoryImages(files.into_iter().collect(), None));
    let cached = Arc::new(MemoryImages(plain.0.clone(), Some(cache.clone())));
    let pre = preprocess(o.size);
    let rate = |t: Instant| o.images as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let memory = Arc::new(BaseImages::load(&ex, plain, &pre, &no).map_err(anyhow::Error::msg)?);
    let decode = rate(t);
    let t = Instant::now();
    let on_disk = Arc::new(BaseImages::load(&ex, cached, &pre, &no).map_err(anyhow::Error::msg)?);
    let fill = rate(t);
    let from_cache = epoch(&on_disk, o.seed)?;
    let from_memory = epoch(&memory, o.seed)?;
    // A loader without a cache decodes and resizes every image every epoch, then augments it.
    let uncached = 1.0 / (1.0 / decode + 1.0 / from_memory);
    let row = |stage, ips: f64| LoaderRow {
        stage,
        images_per_second: ips,
        per_core: ips / threads as f64,
        vs_uncached: ips / uncached,
    };
    let rows = vec![
        row(
            "epoch without a cache (decode + resize + augment)",
            uncached,
        ),
        row("  decode + resize alone", decode),
        row(
            "fill the cache (decode + resize + write, once per study)",
            fill,
        ),
        row("epoch from the cache (read + augment)", from_cache),
        row(
            "epoch from memory (the cohort's pixels in RAM)",
            from_memory,
        ),
    ];
    let entry = cache.path(&PixelCache::key(&hashes[0], o.size as usize));
    let cache_entry_bytes = std::fs::metadata(&entry)?.len();
    Ok(LoaderReport {
        images: o.images,
        source: o.source,
        size: o.size,
        threads,
        rows,
        rss: rss(o)?,
        cache_entry_bytes,
    })
}

/// Peak resident memory of a fresh process that loads `n` images and runs an epoch over
/// them, for each cohort size, pixels in memory and cached.
fn rss(o: &LoaderBenchOptions) -> anyhow::Result<Vec<RssRow>> {
    let largest = o.rss_images.iter().copied().max().unwrap_or(0);
    if largest == 0 {
        return Ok(vec![]);
    }
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let hashes: Vec<String> = (0..largest)
        .into_par_iter()
        .map(|i| {
            let bytes = test_image(o.rss_source, i, o.seed ^ 0x5eed);
            store.put_bytes(&bytes).map(|p| p.hash.hex())
        })
        .collect::<Result<_, _>>()?;
    std::fs::write(dir.path().join("images.txt"), hashes.join("\n"))?;
    let exe = std::env::current_exe().context("finding the ktrack executable")?;
    let mut out = Vec::new();
    for &n in &o.rss_images {
        for cached in [false, true] {
            let output = Command::new(&exe)
                .args(["bench", "loader-rss", "--dir"])
                .arg(dir.path())
                .args(["--images", &n.to_string(), "--size", &o.size.to_string()])
                .args(cached.then_some("--cached"))
                .output()
                .context("running the memory probe")?;
            anyhow::ensure!(
                output.status.success(),
                "the memory probe failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let kib: f64 = String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .context("reading the memory probe's peak RSS")?;
            out.push(RssRow {
                images: n,
                pixels: if cached { "cached" } else { "in memory" },
                peak_rss_mib: kib / 1024.0,
            });
        }
    }
    Ok(out)
}

/// The memory probe (a child process of [`run`]): loads the first `images` of `dir`'s store,
/// runs one epoch, and returns its peak resident memory in KiB.
pub fn probe(dir: &Path, images: usize, size: u32, cached: bool) -> anyhow::Result<u64> {
    let store = Store::open(dir)?;
    let list = std::fs::read_to_string(dir.join("images.txt"))?;
    let hashes: Vec<Hash> = list
        .lines()
        .take(images)
        .map(|l| l.parse().map_err(|e| anyhow::anyhow!("{l}: {e}")))
        .collect::<anyhow::Result<_>>()?;
    let cache = cached.then(|| PixelCache::at(dir.join(format!("pixels-{images}"))));
    let source = Arc::new(StoreImages {
        store,
        cache,
        features: None,
    });
    let base = BaseImages::load(
        &examples(&hashes),
        source,
        &preprocess(size),
        &AtomicBool::new(false),
    )
    .map_err(anyhow::Error::msg)?;
    epoch(&Arc::new(base), 0)?;
    peak_rss_kib()
}

/// This process's peak resident set size (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")
}
