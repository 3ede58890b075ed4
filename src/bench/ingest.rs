//! `ktrack bench ingest`: write N 16-bit PNG knee radiographs (the synthetic generator), then time plain blake3 hashing of the files
//! (parallel over files, as `b3sum` would) and a full `data import` of the same files into a
//! fresh home (decode-validate, hash, store, index). Reports MB/s of each and their ratio.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use rayon::prelude::*;

use crate::context::Ktrack;
use crate::data::descriptor::Dataset;
use crate::data::{image, import, synth};

#[derive(Clone, Debug)]
pub struct IngestOptions {
    pub images: usize,
    pub size: u32,
    /// Where to write the images and the scratch home (a temp dir if `None`).
    pub dir: Option<PathBuf>,
    pub seed: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct IngestReport {
    pub images: usize,
    pub size: u32,
    pub bytes: u64,
    pub threads: usize,
    pub write_seconds: f64,
    pub hash_seconds: f64,
    pub hash_mb_s: f64,
    /// Reading and decoding every image alone (the validation part of an import).
    pub decode_seconds: f64,
    pub ingest_seconds: f64,
    pub ingest_mb_s: f64,
    /// ingest MB/s ÷ plain hashing MB/s.
    pub ratio: f64,
}

pub fn run(
    opts: &IngestOptions,
    progress: &dyn crate::progress::Task,
) -> anyhow::Result<IngestReport> {
    let tmp;
    let dir: &Path = match &opts.dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path()
        }
    };
    let images = dir.join("images");
    std::fs::create_dir_all(&images)?;
    let t0 = Instant::now();
    // Synthetic OAI-like knees: 2 knees x 5 visits per patient; take the first N images.
    let sims = synth::simulate(&synth::SynthSpec {
        kind: synth::Kind::OaiLike,
        patients: opts.images / 9 + 2,
        image_size: opts.size,
        seed: opts.seed,
    });
    anyhow::ensure!(
        sims.len() >= opts.images,
        "the simulated cohort is too small"
    );
    progress.start(opts.images, 0);
    (0..opts.images).into_par_iter().try_for_each(|i| {
        let png = image::encode_png16(opts.size, opts.size, &sims[i].render(opts.size));
        progress.step();
        std::fs::write(images.join(format!("{i:06}.png")), png)
    })?;
    let mut csv = String::from("sample_id,patient_id,side,image\n");
    for i in 0..opts.images {
        csv.push_str(&format!(
            "s{i:06},p{:06},{},{i:06}.png\n",
            i / 2,
            if i % 2 == 0 { "L" } else { "R" }
        ));
    }
    std::fs::write(dir.join("manifest.csv"), csv)?;
    let descriptor = dir.join("bench.toml");
    std::fs::write(
        &descriptor,
        "name = \"bench\"\nmanifest = \"manifest.csv\"\nimage_root = \"images\"\n[columns]\n\
         sample_id = \"sample_id\"\npatient_id = \"patient_id\"\nside = \"side\"\nimage = \"image\"\n",
    )?;
    // Flush the written files so the import's own flush does not pay for them.
    crate::store::syncfs(dir)?;
    let write_seconds = t0.elapsed().as_secs_f64();
    let files: Vec<PathBuf> = (0..opts.images)
        .map(|i| images.join(format!("{i:06}.png")))
        .collect();

    // Reference: plain blake3 of every file, parallel over files. Best of two passes.
    let mut hash_seconds = f64::INFINITY;
    let mut bytes = 0;
    for _ in 0..2 {
        let t = Instant::now();
        bytes = files
            .par_iter()
            .map(|f| crate::store::hash_file(f).map(|(_, n)| n))
            .try_reduce(|| 0, |a, b| Ok(a + b))?;
        hash_seconds = hash_seconds.min(t.elapsed().as_secs_f64());
    }

    // Where import time goes: decoding alone (parallel, as in the import).
    let t = Instant::now();
    files.par_iter().try_for_each(|f| -> anyhow::Result<()> {
        let bytes = std::fs::read(f)?;
        image::validate(&bytes)?;
        Ok(())
    })?;
    let decode_seconds = t.elapsed().as_secs_f64();

    let home = dir.join("home");
    let _ = std::fs::remove_dir_all(&home);
    let t = Instant::now();
    let k = Ktrack::open(&home)?;
    let dataset = Dataset::load(&descriptor)?;
    import::import(
        &k,
        &dataset,
        &crate::progress::Quiet,
        &AtomicBool::new(false),
    )?;
    let ingest_seconds = t.elapsed().as_secs_f64();

    let mb = bytes as f64 / 1e6;
    Ok(IngestReport {
        images: opts.images,
        size: opts.size,
        bytes,
        threads: rayon::current_num_threads(),
        write_seconds,
        hash_seconds,
        hash_mb_s: mb / hash_seconds,
        decode_seconds,
        ingest_seconds,
        ingest_mb_s: mb / ingest_seconds,
        ratio: hash_seconds / ingest_seconds,
    })
}
