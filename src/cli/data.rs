//! `ktrack data …`: import, split, fraction, ls, show.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::Env;
use crate::data::catalog::{self, Detail};
use crate::data::descriptor::Dataset;
use crate::data::fraction::{self, FractionOptions};
use crate::data::split::{self, SplitOptions};
use crate::data::synth::{self, SynthSpec};
use crate::data::{Label, Partition, import};
use crate::index::IdKind;
use crate::output::{Format, Table, bytes, thousands};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Import the cohort a dataset descriptor names (idempotent).
    Import {
        /// Dataset descriptors (`datasets/NAME.toml`).
        #[arg(required = true)]
        descriptors: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Split a cohort by patient into train/val/test, stratified by a label.
    Split {
        /// Cohort id (any unique prefix) or name (newest version).
        cohort: String,
        #[arg(long, default_value_t = 0.7)]
        train: f64,
        #[arg(long, default_value_t = 0.1)]
        val: f64,
        #[arg(long, default_value_t = 0.2)]
        test: f64,
        /// Label to stratify by: kl, incidence_4y, progression_4y, or none.
        #[arg(long, default_value = "kl")]
        stratify: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Nested, stratified label fractions of a split's train partition.
    Fraction {
        /// Split id (any unique prefix).
        split: String,
        /// Comma-separated fractions in (0, 1].
        #[arg(long, value_delimiter = ',', default_value = "0.01,0.1,0.25,0.5,1.0")]
        fractions: Vec<f64>,
        /// The task label: kl, incidence_4y or progression_4y.
        #[arg(long, default_value = "kl")]
        stratify: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Generate synthetic knee cohorts as real files (PNG + CSV + reports).
    ///
    /// Either from descriptors with a `[synth]` table (`datasets/synthetic-*.toml`), or ad hoc
    /// with `--kind … --out DIR` (which also writes `DIR/dataset.toml`).
    Synth {
        /// Synthetic dataset descriptors.
        descriptors: Vec<PathBuf>,
        #[arg(long, value_enum, requires = "out")]
        kind: Option<crate::data::synth::Kind>,
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
    },
    /// List cohorts, splits and fractions.
    Ls {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Counts and hashes of one cohort, split or fraction.
    Show {
        /// Any unique id prefix (at least 4 hex characters).
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

pub fn run(env: &Env, cmd: Command) -> Result<()> {
    match cmd {
        Command::Import {
            descriptors,
            format,
        } => run_import(env, &descriptors, format),
        Command::Split {
            cohort,
            train,
            val,
            test,
            stratify,
            seed,
            format,
        } => {
            let k = env.open()?;
            let cohort = catalog::resolve_cohort(&k, &cohort)?;
            let stratify = if stratify == "none" {
                None
            } else {
                Some(stratify.parse::<Label>().map_err(anyhow::Error::msg)?)
            };
            let opts = SplitOptions {
                cohort,
                train,
                val,
                test,
                stratify,
                seed,
            };
            let report = split::split(&k, &opts)
                .with_context(|| format!("could not split cohort {cohort}"))?;
            env.printer.status(
                if report.new { "Split" } else { "Found" },
                format!("cohort {} → split {}", report.cohort, report.id),
            );
            match format {
                Format::Json => env.printer.data(&serde_json::to_string_pretty(&report)?)?,
                _ => {
                    let t = partition_table(&report.partitions, report.stratify);
                    env.printer.data(&render(&t, format))?;
                }
            }
            Ok(())
        }
        Command::Fraction {
            split,
            fractions,
            stratify,
            seed,
            format,
        } => {
            let k = env.open()?;
            let split = catalog::resolve(&k, &split, IdKind::Split)?;
            let label: Label = stratify.parse().map_err(anyhow::Error::msg)?;
            let opts = FractionOptions {
                split,
                fractions,
                stratify: label,
                seed,
            };
            let report = fraction::fraction(&k, &opts)
                .with_context(|| format!("could not take label fractions of split {split}"))?;
            match format {
                Format::Json => env.printer.data(&serde_json::to_string_pretty(&report)?)?,
                _ => {
                    let classes = label.classes();
                    let mut t = Table::new(
                        ["fraction", "id", "patients", "samples"]
                            .into_iter()
                            .map(String::from)
                            .chain(classes.iter().map(|c| format!("{label}={c}"))),
                    );
                    for f in &report.fractions {
                        env.printer.status(
                            if f.new { "Fraction" } else { "Found" },
                            format!(
                                "{:>5} of split {} → {}",
                                crate::output::pct(f.fraction),
                                report.split,
                                f.id
                            ),
                        );
                        let mut row = vec![
                            crate::output::pct(f.fraction),
                            f.id.short(),
                            thousands(f.patients as u64),
                            thousands(f.samples as u64),
                        ];
                        row.extend(
                            classes
                                .iter()
                                .map(|c| f.classes.get(c).copied().unwrap_or(0).to_string()),
                        );
                        t.rows.push(row);
                    }
                    env.printer.data(&render(&t, format))?;
                }
            }
            Ok(())
        }
        Command::Synth {
            descriptors,
            kind,
            patients,
            size,
            seed,
            out,
            import,
            examples,
        } => {
            let wrote_examples = examples.is_some();
            if let Some(dir) = examples {
                for path in synth::write_examples(&dir)? {
                    env.printer.status("Wrote", path.display());
                }
            }
            let mut paths = descriptors;
            if let (Some(kind), Some(out)) = (kind, out) {
                let spec = SynthSpec {
                    kind,
                    patients,
                    image_size: size,
                    seed,
                };
                std::fs::create_dir_all(&out)
                    .with_context(|| format!("could not create `{}`", out.display()))?;
                let path = out.join("dataset.toml");
                std::fs::write(
                    &path,
                    synth::descriptor_toml(&spec, kind.name(), "manifest.csv", "."),
                )
                .with_context(|| format!("could not write `{}`", path.display()))?;
                paths.push(path);
            }
            if paths.is_empty() && wrote_examples {
                return Ok(());
            }
            if paths.is_empty() {
                anyhow::bail!(
                    "nothing to generate: name synthetic descriptors, or use --kind with --out"
                );
            }
            for path in &paths {
                let report = synth_one(env, path)?;
                if report.skipped {
                    env.printer.status(
                        "Fresh",
                        format!(
                            "{} images of {} already generated → {}",
                            thousands(report.images as u64),
                            report.kind.name(),
                            report.manifest.display()
                        ),
                    );
                } else {
                    env.printer.status(
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
                    );
                }
            }
            if import {
                run_import(env, &paths, Format::Table)?;
            }
            Ok(())
        }
        Command::Ls { format } => {
            let k = env.open()?;
            let listing = catalog::ls(&k)?;
            if format == Format::Json {
                return Ok(env.printer.data(&serde_json::to_string_pretty(&listing)?)?);
            }
            let mut t = Table::new([
                "kind",
                "id",
                "name / parent",
                "samples",
                "patients",
                "details",
            ]);
            for c in &listing.cohorts {
                t.row([
                    "cohort".to_string(),
                    c.hash.short(),
                    c.name.clone(),
                    thousands(c.n_samples as u64),
                    thousands(c.n_patients as u64),
                    c.imported_at.clone(),
                ]);
            }
            for s in &listing.splits {
                t.row([
                    "split".to_string(),
                    s.hash.short(),
                    format!("cohort {}", s.cohort),
                    String::new(),
                    String::new(),
                    format!(
                        "{}/{}/{} by {} seed {}",
                        s.train,
                        s.val,
                        s.test,
                        s.stratify.as_deref().unwrap_or("none"),
                        s.seed
                    ),
                ]);
            }
            for f in &listing.fractions {
                t.row([
                    "fraction".to_string(),
                    f.hash.short(),
                    format!("split {}", f.split),
                    thousands(f.n_samples as u64),
                    thousands(f.n_patients as u64),
                    format!(
                        "{} by {} seed {}",
                        crate::output::pct(f.fraction),
                        f.stratify,
                        f.seed
                    ),
                ]);
            }
            env.printer.data(&render(&t, format))?;
            Ok(())
        }
        Command::Show { id, format } => {
            let k = env.open()?;
            let prefix = id.parse()?;
            let detail = catalog::show(&k, &prefix)?;
            if format == Format::Json {
                return Ok(env.printer.data(&serde_json::to_string_pretty(&detail)?)?);
            }
            env.printer.data(&render_detail(&detail, format))?;
            Ok(())
        }
    }
}

/// Generates the cohort a synthetic descriptor describes.
pub(crate) fn synth_one(env: &Env, path: &std::path::Path) -> Result<synth::SynthReport> {
    let dataset = Dataset::load(path)?;
    let spec = dataset
        .descriptor
        .synth
        .clone()
        .ok_or_else(|| synth::Error::NotSynthetic(path.to_path_buf()))?;
    let term = super::progress::Terminal::new(&env.printer);
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

pub(crate) fn run_import(env: &Env, descriptors: &[PathBuf], format: Format) -> Result<()> {
    let k = env.open()?;
    let mut reports = Vec::new();
    for path in descriptors {
        let dataset = Dataset::load(path)
            .with_context(|| format!("could not import dataset `{}`", path.display()))?;
        let term = super::progress::Terminal::new(&env.printer);
        let bar = crate::progress::Reporter::task(&term, "Importing");
        let report = import::import(&k, &dataset, bar.as_ref(), &env.interrupt)
            .with_context(|| format!("could not import dataset `{}`", path.display()))?;
        drop(bar);
        let rate = report.image_bytes as f64 / report.seconds.max(1e-9) / 1e6;
        env.printer.status(
            if report.new_cohort {
                "Imported"
            } else {
                "Unchanged"
            },
            format!(
                "{} images ({}, {} new) of `{}` in {:.1}s ({rate:.0} MB/s) → cohort {}",
                thousands(report.images as u64),
                bytes(report.image_bytes),
                thousands(report.new_images as u64),
                report.name,
                report.seconds,
                report.cohort
            ),
        );
        reports.push(report);
    }
    match format {
        Format::Json => env.printer.data(&serde_json::to_string_pretty(&reports)?)?,
        _ => {
            // Real cohorts: what the readings gave and what was excluded, and why.
            for r in reports.iter().filter(|r| !r.counts.is_empty()) {
                let mut t = Table::new(["", "count"]);
                for (what, n) in &r.counts {
                    t.row([what.clone(), thousands(*n as u64)]);
                }
                env.printer.data(&format!(
                    "`{}`: readings, images and outcome rules\n{}",
                    r.name,
                    render(&t, format)
                ))?;
            }
            let mut t = Table::new(["cohort", "name", "samples", "patients", "images", "new"]);
            for r in &reports {
                t.row([
                    r.cohort.short(),
                    r.name.clone(),
                    thousands(r.samples as u64),
                    thousands(r.patients as u64),
                    thousands(r.images as u64),
                    if r.new_cohort { "yes" } else { "no" }.to_string(),
                ]);
            }
            env.printer.data(&render(&t, format))?;
        }
    }
    Ok(())
}

pub(crate) fn render(t: &Table, format: Format) -> String {
    match format {
        Format::Csv => t.to_csv(),
        _ => t.to_text(),
    }
}

fn partition_table(
    parts: &std::collections::BTreeMap<Partition, split::PartitionCounts>,
    label: Option<Label>,
) -> Table {
    let mut classes: Vec<String> = parts
        .values()
        .flat_map(|c| c.classes.keys().cloned())
        .collect();
    classes.sort_by(|a, b| (a == "none").cmp(&(b == "none")).then(a.cmp(b)));
    classes.dedup();
    let name = label.map_or("class", Label::name);
    let mut t = Table::new(
        ["partition", "patients", "samples"]
            .into_iter()
            .map(String::from)
            .chain(classes.iter().map(|c| format!("{name}={c}"))),
    );
    for (part, c) in parts {
        let mut row = vec![
            part.name().to_string(),
            thousands(c.patients as u64),
            thousands(c.samples as u64),
        ];
        row.extend(
            classes
                .iter()
                .map(|k| c.classes.get(k).copied().unwrap_or(0).to_string()),
        );
        t.rows.push(row);
    }
    t
}

fn render_detail(detail: &Detail, format: Format) -> String {
    let mut out = String::new();
    match detail {
        Detail::Cohort(d) => {
            let c = &d.cohort;
            out.push_str(&format!(
                "cohort {:#}\nname       {}\nsamples    {}\npatients   {}\nrecord     {:#}\nimported   {}\n\n",
                c.hash,
                c.name,
                thousands(c.n_samples as u64),
                thousands(c.n_patients as u64),
                c.record,
                c.imported_at
            ));
            let mut t = Table::new(["visit (months)", "samples"]);
            for (v, n) in &d.visits {
                t.row([v.to_string(), thousands(*n as u64)]);
            }
            out.push_str(&render(&t, format));
            out.push('\n');
            for (label, counts) in &d.labels {
                let mut t = Table::new([label.name(), "samples"]);
                for (class, n) in counts {
                    t.row([class.clone(), thousands(*n as u64)]);
                }
                out.push_str(&render(&t, format));
                out.push('\n');
            }
            if !d.rules.is_empty() {
                let mut t = Table::new(["rule", "value"]);
                for (k, v) in &d.rules {
                    t.row([k.clone(), v.clone()]);
                }
                out.push_str(&render(&t, format));
                out.push('\n');
            }
        }
        Detail::Split(d) => {
            let s = &d.split;
            out.push_str(&format!(
                "split {:#}\ncohort     {} ({})\nstrategy   {}\nratios     train {} / val {} / test {}\nstratify   {}\nseed       {}\nassignment {:#}\n",
                s.hash,
                s.cohort,
                d.cohort_name,
                s.strategy,
                s.train,
                s.val,
                s.test,
                s.stratify.as_deref().unwrap_or("none"),
                s.seed,
                s.assignment
            ));
            for (label, parts) in &d.labels {
                out.push_str(&render(&partition_table(parts, Some(*label)), format));
                out.push('\n');
            }
            if !d.fractions.is_empty() {
                let mut t = Table::new(["fraction", "id", "label", "seed", "patients", "samples"]);
                for f in &d.fractions {
                    t.row([
                        crate::output::pct(f.fraction),
                        f.hash.short(),
                        f.stratify.clone(),
                        f.seed.to_string(),
                        thousands(f.n_patients as u64),
                        thousands(f.n_samples as u64),
                    ]);
                }
                out.push_str(&render(&t, format));
                out.push('\n');
            }
        }
        Detail::Fraction(d) => {
            let f = &d.fraction;
            out.push_str(&format!(
                "fraction {:#}\nsplit      {}\ncohort     {}\nfraction   {}\nlabel      {}\nseed       {}\npatients   {}\nsamples    {}\nmembers    {:#}\n\n",
                f.hash,
                f.split,
                d.cohort,
                crate::output::pct(f.fraction),
                f.stratify,
                f.seed,
                thousands(f.n_patients as u64),
                thousands(f.n_samples as u64),
                f.members
            ));
            let mut t = Table::new([f.stratify.as_str(), "samples"]);
            for (class, n) in &d.classes {
                t.row([class.clone(), thousands(*n as u64)]);
            }
            out.push_str(&render(&t, format));
            out.push('\n');
        }
    }
    out.trim_end().to_string() + "\n"
}
