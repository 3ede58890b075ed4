//! `ktrack data synth`: generate synthetic knee cohorts as real files, from descriptors or ad
//! hoc (`--kind … --out DIR`, which writes `DIR/dataset.toml` too).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::Env;
use crate::data::descriptor::Dataset;
use crate::data::synth::{self, SynthSpec};
use crate::output::{Format, thousands};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Synthetic dataset descriptors.
    descriptors: Vec<PathBuf>,
    #[arg(long, value_enum, requires = "out")]
    kind: Option<synth::Kind>,
    #[arg(long, default_value_t = 100)]
    patients: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    size: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder for `--kind`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Import each generated cohort afterwards.
    #[arg(long)]
    import: bool,
    /// Also write example images (one per KL grade, one per cohort) into this folder.
    #[arg(long)]
    examples: Option<PathBuf>,
}

pub fn run(env: &Env, args: Args) -> Result<()> {
    let wrote_examples = args.examples.is_some();
    if let Some(dir) = &args.examples {
        for path in synth::write_examples(dir)? {
            env.printer.status("Wrote", path.display());
        }
    }
    let mut paths = args.descriptors;
    if let (Some(kind), Some(out)) = (args.kind, &args.out) {
        let spec = SynthSpec {
            kind,
            patients: args.patients,
            image_size: args.size,
            seed: args.seed,
        };
        paths.push(synth::write_descriptor(out, &spec)?);
    }
    if paths.is_empty() {
        if wrote_examples {
            return Ok(());
        }
        anyhow::bail!("nothing to generate: name synthetic descriptors, or use --kind with --out");
    }
    for path in &paths {
        let report = synth_one(env, path)?;
        let what = if report.skipped {
            (
                "Fresh",
                format!(
                    "{} images of {} already generated → {}",
                    thousands(report.images as u64),
                    report.kind.name(),
                    report.manifest.display()
                ),
            )
        } else {
            (
                "Generated",
                format!(
                    "{} images of {} ({} patients) in {:.1}s ({:.0} images/s) → {}",
                    thousands(report.images as u64),
                    report.kind.name(),
                    thousands(report.patients as u64),
                    report.seconds,
                    report.images_per_second,
                    report.manifest.display()
                ),
            )
        };
        env.printer.status(what.0, what.1);
    }
    if args.import {
        super::run_import(env, &paths, Format::Table)?;
    }
    Ok(())
}

/// Generates the cohort a synthetic descriptor describes.
fn synth_one(env: &Env, path: &Path) -> Result<synth::SynthReport> {
    let dataset = Dataset::load(path)?;
    let spec = dataset
        .descriptor
        .synth
        .clone()
        .ok_or_else(|| synth::Error::NotSynthetic(path.to_path_buf()))?;
    let term = crate::cli::progress::Terminal::new(&env.printer);
    let bar = crate::progress::Reporter::task(&term, "Generating");
    let report = synth::generate(
        &spec,
        dataset.synth_manifest()?,
        &dataset.image_root,
        bar.as_ref(),
        &env.interrupt,
    )
    .with_context(|| format!("could not generate `{}`", path.display()))?;
    drop(bar);
    Ok(report)
}
