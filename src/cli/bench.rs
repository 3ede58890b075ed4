//! `ktrack bench …`: benchmarks that print ratios against a reference measured in the same run.

use std::path::PathBuf;

use anyhow::Result;

use super::Env;
use crate::bench::ingest::{self, IngestOptions};
use crate::output::{Format, bytes};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Import throughput against plain blake3 hashing of the same files.
    Ingest {
        /// How many images to write.
        #[arg(long, default_value_t = 5000)]
        images: usize,
        /// Image side in pixels (16-bit grayscale PNG).
        #[arg(long, default_value_t = 256)]
        size: u32,
        /// Work directory (default: a temp directory, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Forward + backward images/s on every available backend, side by side.
    Train {
        #[arg(long, value_enum, default_value = "resnet18")]
        arch: crate::model::Arch,
        /// Image side in pixels.
        #[arg(long, default_value_t = 128)]
        size: usize,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Timed steps (after two warm-up steps).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Devices to compare (default: cpu, plus tch-cpu when built with `tch`).
        #[arg(long, value_delimiter = ',')]
        devices: Vec<crate::train::DeviceKind>,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// A Python with torch and torchvision: PyTorch eager is measured beside ktrack on the
        /// same model, batch, loss, optimiser and threads, and each row gets its ratio to it.
        #[arg(long, value_name = "PYTHON")]
        eager: Option<std::path::PathBuf>,
        /// `bf16`: bfloat16 convolutions and matrix products (LibTorch devices only), against
        /// PyTorch's bf16 autocast.
        #[arg(long, default_value = "fp32", value_parser = parse_precision)]
        precision: crate::train::Precision,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Linear probes for KL on SimCLR, VICReg, CLIP and SLIP encoders against a random-init
    /// encoder, on fresh synthetic cohorts: does self-supervised pretraining learn anything?
    Ssl {
        /// Patients per synthetic cohort (OAI-like, NYU-like, hospital).
        #[arg(long, default_value_t = 200)]
        patients: usize,
        #[arg(long, default_value_t = 64)]
        size: u32,
        #[arg(long, default_value_t = 8)]
        pretrain_epochs: usize,
        #[arg(long, default_value_t = 40)]
        probe_epochs: usize,
        /// Label fractions of the probes.
        #[arg(long, value_delimiter = ',', default_value = "0.1,1.0")]
        fractions: Vec<f64>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// The loader at real resolution (16-bit images to the input size) per core, without and
    /// with the preprocessed-image cache, and peak resident memory at two cohort sizes.
    Loader {
        /// Images timed.
        #[arg(long, default_value_t = 64)]
        images: usize,
        /// Their side in pixels (16-bit grayscale PNG).
        #[arg(long, default_value_t = 1024)]
        source: u32,
        /// The input size.
        #[arg(long, default_value_t = 224)]
        size: u32,
        /// Threads of the timed stages (per core by default).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Cohort sizes whose peak resident memory is measured (empty: none).
        #[arg(long, value_delimiter = ',', default_value = "250,1000")]
        rss_images: Vec<usize>,
        /// Side of the images of the memory cohorts.
        #[arg(long, default_value_t = 256)]
        rss_source: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// The memory probe `bench loader` runs in a fresh process: prints peak RSS in KiB.
    #[command(hide = true)]
    LoaderRss {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        images: usize,
        #[arg(long)]
        size: u32,
        #[arg(long)]
        cached: bool,
    },
    /// A/A comparisons (one init and protocol, two training seeds) through compare's
    /// single-seed tests: how often they flag p < 0.05 and how often the 95% CI covers 0.
    Calibration(CalibrationArgs),
    /// The paper's four findings (F1–F4) on a fresh synthetic world: `experiments/paper.toml`
    /// with every cohort generated from `--seed`, each finding's difference, CI, p and verdict.
    Findings {
        /// The world's seed (every cohort's `[synth].seed`).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// A world a tenth the size, 1–2 epochs, 2 seeds: checks the harness, not the findings.
        #[arg(long)]
        quick: bool,
        /// Write the study and its home into DIR and keep them (inspect the runs with
        /// `ktrack --home DIR/home …`); the same command again resumes or rereads it.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
        /// Runs executed at once, each on `--threads` threads (a run's identity and results do
        /// not depend on it: on 2 cores two at once keep both busy while one evaluates).
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Re-running a finished sweep of N runs: every run skipped.
    Skip {
        #[arg(long, default_value_t = 1000)]
        runs: usize,
        /// Measure on this PostgreSQL database too, in a scratch schema dropped afterwards.
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// `compare` over an index of N finished runs, without and with bootstrap.
    Compare {
        #[arg(long, default_value_t = 100_000)]
        runs: usize,
        /// Bootstrap replicates for the one-table timing.
        #[arg(long, default_value_t = 2000)]
        bootstrap: usize,
        /// Measure on this PostgreSQL database too, in a scratch schema dropped afterwards.
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

#[derive(Debug, clap::Args)]
pub struct CalibrationArgs {
    /// A/A pairs per task and protocol.
    #[arg(long, default_value_t = 20)]
    pairs: usize,
    /// Patients of the synthetic OAI-like cohort.
    #[arg(long, default_value_t = 200)]
    patients: usize,
    #[arg(long, default_value_t = 48)]
    size: u32,
    /// SimCLR epochs of the shared init (0: random init, whose encoder each seed draws).
    #[arg(long, default_value_t = 4)]
    pretrain_epochs: usize,
    /// Epochs of each downstream run.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    #[arg(long, value_delimiter = ',', default_value = "progression_4y,kl")]
    tasks: Vec<crate::data::Label>,
    #[arg(long, value_delimiter = ',', default_value = "linear", value_enum)]
    protocols: Vec<crate::train::downstream::Protocol>,
    /// Paired-bootstrap replicates per pair.
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

fn parse_precision(s: &str) -> std::result::Result<crate::train::Precision, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("`{s}` is not a precision: expected fp32 or bf16"))
}

pub fn run(env: &Env, cmd: Command) -> Result<()> {
    match cmd {
        Command::Train {
            arch,
            size,
            batch,
            steps,
            devices,
            threads,
            eager,
            precision,
            format,
        } => {
            let devices = if devices.is_empty() {
                crate::bench::train::available()
            } else {
                devices
            };
            let opts = crate::bench::train::TrainBenchOptions {
                arch,
                size,
                batch,
                steps,
                warmup: 2,
                devices,
                threads,
                precision,
            };
            train(env, &opts, eager.as_deref(), format)
        }
        Command::Ssl {
            patients,
            size,
            pretrain_epochs,
            probe_epochs,
            fractions,
            seed,
            threads,
            format,
        } => {
            let opts = crate::bench::ssl::SslBenchOptions {
                patients,
                image_size: size,
                pretrain_epochs,
                probe_epochs,
                fractions,
                seed,
                threads,
            };
            ssl(env, &opts, format)
        }
        Command::Calibration(a) => calibration(env, a),
        Command::Findings {
            seed,
            threads,
            quick,
            dir,
            jobs,
            format,
        } => findings(
            env,
            &crate::bench::findings::FindingsOptions {
                seed,
                threads,
                quick,
                dir,
                jobs,
            },
            format,
        ),
        Command::Skip {
            runs,
            postgres,
            format,
        } => skip(env, runs, postgres.as_deref(), format),
        Command::Compare {
            runs,
            bootstrap,
            postgres,
            format,
        } => compare(env, runs, bootstrap, postgres.as_deref(), format),
        Command::Ingest {
            images,
            size,
            dir,
            seed,
            format,
        } => ingest(env, images, size, dir, seed, format),
        Command::Loader {
            images,
            source,
            size,
            threads,
            rss_images,
            rss_source,
            seed,
            format,
        } => {
            crate::train::backend::pin_threads(threads);
            let opts = crate::bench::loader::LoaderBenchOptions {
                images,
                source,
                size,
                rss_images,
                rss_source,
                seed,
            };
            loader(env, &opts, format)
        }
        Command::LoaderRss {
            dir,
            images,
            size,
            cached,
        } => {
            let kib = crate::bench::loader::probe(&dir, images, size, cached)?;
            Ok(env.printer.data(&kib.to_string())?)
        }
    }
}

fn loader(
    env: &Env,
    opts: &crate::bench::loader::LoaderBenchOptions,
    format: Format,
) -> Result<()> {
    anyhow::ensure!(opts.images > 0, "--images must be at least 1");
    let r = crate::bench::loader::run(opts)?;
    if format == Format::Json {
        return Ok(env.printer.data(&serde_json::to_string_pretty(&r)?)?);
    }
    let mut t = crate::output::Table::new(["stage", "images/s", "per core", "× uncached"]);
    for row in &r.rows {
        t.row([
            row.stage.to_string(),
            format!("{:.1}", row.images_per_second),
            format!("{:.1}", row.per_core),
            format!("{:.2}", row.vs_uncached),
        ]);
    }
    let mut text = format!(
        "{} images {}² 16-bit → {} px on {} thread(s); a cache entry is {}\n{}",
        r.images,
        r.source,
        r.size,
        r.threads,
        bytes(r.cache_entry_bytes),
        super::data::render(&t, format)
    );
    if !r.rss.is_empty() {
        let mut m = crate::output::Table::new(["cohort", "pixels", "peak RSS"]);
        for row in &r.rss {
            m.row([
                format!("{} images", row.images),
                row.pixels.to_string(),
                format!("{:.0} MiB", row.peak_rss_mib),
            ]);
        }
        text.push_str(&format!(
            "\npeak resident memory of loading and one epoch ({} px):\n{}",
            r.size,
            super::data::render(&m, format)
        ));
    }
    env.printer.data(&text)?;
    Ok(())
}

fn train(
    env: &Env,
    opts: &crate::bench::train::TrainBenchOptions,
    eager: Option<&std::path::Path>,
    format: Format,
) -> Result<()> {
    let rows = crate::bench::train::run(opts)?;
    // PyTorch eager once per piece of hardware the rows ran on.
    let mut references: Vec<(String, crate::bench::train::EagerRow)> = Vec::new();
    if let Some(python) = eager {
        for r in &rows {
            let hw = hardware(&r.device);
            if !references.iter().any(|(d, _)| d == hw) {
                let e = crate::bench::train::eager(python, opts, hw)?;
                references.push((hw.to_string(), e));
            }
        }
    }
    let eager_of = |device: &str| {
        let hw = hardware(device);
        references.iter().find(|(d, _)| d == hw).map(|(_, e)| e)
    };
    if format == Format::Json {
        let ktrack: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["vs_eager"] = eager_of(&r.device)
                    .map(|e| serde_json::json!(r.images_per_second / e.images_per_second))
                    .unwrap_or(serde_json::Value::Null);
                v
            })
            .collect();
        let eager: Vec<_> = references.iter().map(|(_, e)| e).collect();
        let json =
            serde_json::json!({ "precision": opts.precision, "ktrack": ktrack, "eager": eager });
        return Ok(env.printer.data(&serde_json::to_string_pretty(&json)?)?);
    }
    let mut t = crate::output::Table::new([
        "device",
        "images/s",
        "s/step",
        "ratio",
        "÷ PyTorch eager",
        "forward only, images/s",
    ]);
    for r in &rows {
        t.row([
            r.device.clone(),
            format!("{:.1}", r.images_per_second),
            format!("{:.3}", r.seconds_per_step),
            format!("{:.2}", r.ratio),
            eager_of(&r.device).map_or("-".into(), |e| {
                format!("{:.2}", r.images_per_second / e.images_per_second)
            }),
            format!("{:.1}", r.forward_images_per_second),
        ]);
    }
    for (_, e) in &references {
        t.row([
            format!("PyTorch {} eager ({})", e.torch, e.device),
            format!("{:.1}", e.images_per_second),
            format!("{:.3}", opts.batch as f64 / e.images_per_second),
            "-".into(),
            "1.00".into(),
            format!("{:.1}", e.forward_images_per_second),
        ]);
    }
    env.printer.data(&format!(
        "forward + backward + AdamW step, {} at {} px, batch {}, {} CPU threads, {}{}; native LibTorch backward: {}\n{}",
        opts.arch,
        opts.size,
        opts.batch,
        opts.threads,
        opts.precision,
        if opts.precision == crate::train::Precision::Bf16 && eager.is_some() {
            " (eager: bf16 autocast, channels-last on CUDA)"
        } else {
            ""
        },
        if crate::train::backend::native_libtorch_backward() { "yes" } else { "no" },
        super::data::render(&t, format)
    ))?;
    Ok(())
}

/// The PyTorch device a ktrack device runs on: `cuda:N` itself, else the CPU.
fn hardware(device: &str) -> &str {
    if device.starts_with("cuda") {
        device
    } else {
        "cpu"
    }
}

fn calibration(env: &Env, a: CalibrationArgs) -> Result<()> {
    let format = a.format;
    let opts = &crate::bench::calibration::CalibrationOptions {
        pairs: a.pairs,
        patients: a.patients,
        image_size: a.size,
        pretrain_epochs: a.pretrain_epochs,
        epochs: a.epochs,
        tasks: a.tasks,
        protocols: a.protocols,
        bootstrap: a.bootstrap,
        seed: a.seed,
        threads: a.threads,
    };
    let r = crate::bench::calibration::run(opts, &env.interrupt)?;
    if format == Format::Json {
        return Ok(env.printer.data(&serde_json::to_string_pretty(&r)?)?);
    }
    let mut t = crate::output::Table::new([
        "task",
        "protocol",
        "test",
        "A/A pairs",
        "p < 0.05 (target 5%)",
        "95% CI covers 0 (target 95%)",
        "sd of the A/A difference",
        "mean CI half-width",
    ]);
    for row in &r.rows {
        t.row([
            row.task.clone(),
            row.protocol.clone(),
            format!("{} ({})", row.test, row.metric),
            row.pairs.to_string(),
            format!("{} ({:.0}%)", row.flagged, 100.0 * row.flag_rate),
            format!("{} ({:.0}%)", row.covered, 100.0 * row.coverage),
            format!("{:.3}", row.sd_diff),
            format!("{:.3}", row.mean_ci_half_width),
        ]);
    }
    env.printer.data(&format!(
        "{} A/A pairs per row ({} patients, {} px, {} downstream epochs, init: {}), in {:.0} s
{}",
        opts.pairs,
        opts.patients,
        opts.image_size,
        opts.epochs,
        if opts.pretrain_epochs == 0 {
            "random".to_string()
        } else {
            format!("SimCLR, {} epochs", opts.pretrain_epochs)
        },
        r.seconds,
        super::data::render(&t, format)
    ))?;
    Ok(())
}

fn findings(
    env: &Env,
    opts: &crate::bench::findings::FindingsOptions,
    format: Format,
) -> Result<()> {
    let r = crate::bench::findings::run(opts, &env.interrupt)?;
    if format == Format::Json {
        return Ok(env.printer.data(&serde_json::to_string_pretty(&r)?)?);
    }
    let mut t = crate::output::Table::new([
        "finding",
        "comparison (10% labels)",
        "init − baseline",
        "95% CI",
        "SE: patients, seeds",
        "p",
        "holds",
    ]);
    for row in &r.rows {
        t.row([
            row.finding.clone(),
            format!(
                "{} vs {}: {} {} {} ({}, {} seeds)",
                row.init, row.baseline, row.task, row.protocol, row.eval, row.metric, row.seeds
            ),
            format!(
                "{:.3} − {:.3} = {:+.3}",
                row.init_value, row.baseline_value, row.diff
            ),
            format!("[{:+.3}, {:+.3}]", row.lo, row.hi),
            format!("{:.3}, {:.3}", row.se_test, row.se_seeds),
            row.p.map_or("–".into(), |p| format!("{p:.3}")),
            match (row.claim, row.holds) {
                (_, false) => "no",
                (crate::bench::findings::Claim::Better, true) => "yes (better)",
                (crate::bench::findings::Claim::NotBetter, true) => "yes (not better)",
            }
            .into(),
        ]);
    }
    let mut p = crate::output::Table::new([
        "task",
        "evaluation set",
        "positives",
        "negatives",
        "SE of AUROC 0.7",
        "detectable difference (80%, α 0.05)",
    ]);
    for row in &r.power {
        p.row([
            row.task.clone(),
            row.eval.clone(),
            row.positives.to_string(),
            row.negatives.to_string(),
            format!("{:.4}", row.se),
            format!("{:.3}", row.detectable),
        ]);
    }
    env.printer.data(&format!(
        "World seed {}: {} of {} comparisons hold ({} runs in {:.0} s)\n{}\np: the mean per-seed difference against both its variances, a patient bootstrap of the test set and the spread over training seeds (Welch–Satterthwaite t).\nPower of the evaluation sets (paired DeLong, AUROCs correlated at 0.5):\n{}",
        r.seed,
        r.rows.iter().filter(|x| x.holds).count(),
        r.rows.len(),
        r.runs,
        r.seconds,
        super::data::render(&t, format),
        super::data::render(&p, format)
    ))?;
    Ok(())
}

fn ssl(env: &Env, opts: &crate::bench::ssl::SslBenchOptions, format: Format) -> Result<()> {
    let r = crate::bench::ssl::run(opts, &env.interrupt)?;
    if format == Format::Json {
        return Ok(env.printer.data(&serde_json::to_string_pretty(&r)?)?);
    }
    let mut t = crate::output::Table::new([
        "init",
        "label fraction",
        "test QWK (KL, linear probe)",
        "difference to random init",
    ]);
    for row in &r.rows {
        t.row([
            row.init.clone(),
            format!("{}%", row.fraction * 100.0),
            format!("{:.3}", row.test_qwk),
            format!("{:+.3}", row.gain_over_random),
        ]);
    }
    env.printer.data(&format!(
        "{} patients per cohort at {} px, {} pretraining epochs, {} probe epochs, in {:.0} s\n{}",
        opts.patients,
        opts.image_size,
        opts.pretrain_epochs,
        opts.probe_epochs,
        r.seconds,
        super::data::render(&t, format)
    ))?;
    Ok(())
}

fn skip(env: &Env, runs: usize, postgres: Option<&str>, format: Format) -> Result<()> {
    let reports = crate::bench::skip::run(runs, postgres)?;
    if format == Format::Json {
        return Ok(env.printer.data(&serde_json::to_string_pretty(&reports)?)?);
    }
    let mut text = String::new();
    for r in &reports {
        text.push_str(&format!(
            "{}: re-running a finished sweep of {} runs: {:.3} s ({:.0} µs per run; target < 1 s)\n\
             {}: reference: listing the same runs from the index {:.3} s; ratio {:.1}\n",
            r.backend,
            r.runs,
            r.seconds,
            r.micros_per_run,
            r.backend,
            r.reference_count_seconds,
            r.ratio_to_reference
        ));
    }
    if let [sqlite, pg] = &reports[..] {
        text.push_str(&format!(
            "PostgreSQL / SQLite: {:.2}× the time\n",
            pg.seconds / sqlite.seconds.max(1e-9)
        ));
    }
    env.printer.data(text.trim_end())?;
    Ok(())
}

fn compare(
    env: &Env,
    runs: usize,
    bootstrap: usize,
    postgres: Option<&str>,
    format: Format,
) -> Result<()> {
    let reports = crate::bench::compare::run(runs, bootstrap, postgres)?;
    if format == Format::Json {
        return Ok(env.printer.data(&serde_json::to_string_pretty(&reports)?)?);
    }
    let mut text = String::new();
    for r in &reports {
        text.push_str(&format!(
            "{b}: compare over {} finished runs (index filled in {:.1} s)\n\
             {b}: reference: scanning the metric rows        {:.3} s\n\
             {b}: compare without bootstrap ({} tables)       {:.3} s (target < {} s; ratio to the scan {:.1})\n\
             {b}: compare one table with bootstrap ({} cells, B = {}) {:.3} s\n",
            r.runs,
            r.fill_seconds,
            r.reference_scan_seconds,
            r.compare_tables,
            r.compare_seconds,
            if r.backend == "SQLite" { "0.2" } else { "0.5" },
            r.compare_seconds / r.reference_scan_seconds.max(1e-9),
            r.bootstrap_cells,
            r.bootstrap_replicates,
            r.bootstrap_seconds,
            b = r.backend,
        ));
    }
    if let [sqlite, pg] = &reports[..] {
        text.push_str(&format!(
            "PostgreSQL / SQLite: compare {:.2}× the time\n",
            pg.compare_seconds / sqlite.compare_seconds.max(1e-9)
        ));
    }
    env.printer.data(text.trim_end())?;
    Ok(())
}

fn ingest(
    env: &Env,
    images: usize,
    size: u32,
    dir: Option<PathBuf>,
    seed: u64,
    format: Format,
) -> Result<()> {
    let term = super::progress::Terminal::new(&env.printer);
    let bar = crate::progress::Reporter::task(&term, "Writing");
    let r = ingest::run(
        &IngestOptions {
            images,
            size,
            dir,
            seed,
        },
        bar.as_ref(),
    )?;
    drop(bar);
    if format == Format::Json {
        return Ok(env.printer.data(&serde_json::to_string_pretty(&r)?)?);
    }
    env.printer.data(&format!(
        "ingest benchmark: {} images of {}x{} 16-bit PNG, {} in all, {} threads\n\
         plain blake3 hashing  {:>8.1} MB/s  ({:.3} s)\n\
         ktrack data import    {:>8.1} MB/s  ({:.3} s; decode + hash + store + index)\n\
           of which decoding   {:>8.1} MB/s  ({:.3} s alone)\n\
         ratio import/hashing  {:>8.3}   (target >= 0.8)",
        r.images,
        r.size,
        r.size,
        bytes(r.bytes),
        r.threads,
        r.hash_mb_s,
        r.hash_seconds,
        r.ingest_mb_s,
        r.ingest_seconds,
        r.bytes as f64 / 1e6 / r.decode_seconds,
        r.decode_seconds,
        r.ratio
    ))?;
    Ok(())
}
