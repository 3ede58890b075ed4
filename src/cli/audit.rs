//! Auditor commands: `show`, `reproduce`, `verify`, `gc`, `reindex`, `bundle`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use super::Env;
use crate::audit::{bundle, lineage, maintain, reproduce};
use crate::index::IdKind;
use crate::output::{Format, Table, bytes, thousands};

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// A run id (or a cohort, split or fraction id; any unique prefix).
    pub id: String,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub fn show(env: &Env, args: ShowArgs) -> Result<()> {
    let k = env.open()?;
    let prefix = args.id.parse()?;
    let (hash, kind) = k.index.resolve(
        &prefix,
        &[IdKind::Run, IdKind::Cohort, IdKind::Split, IdKind::Fraction],
    )?;
    if kind != IdKind::Run {
        return super::data::run(
            env,
            super::data::Command::Show(super::data::show::Args {
                id: hash.hex(),
                format: args.format,
            }),
        );
    }
    let l = lineage::lineage(&k, &hash).with_context(|| format!("could not show run {hash}"))?;
    match args.format {
        Format::Json => env.printer.data(&serde_json::to_string_pretty(&l)?)?,
        _ => {
            env.printer.data(&lineage::render(&l))?;
            env.printer.data(&format!(
                "resolved spec:\n{}",
                serde_json::to_string_pretty(&l.record.spec)?
            ))?;
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ReproduceArgs {
    /// Run id (any unique prefix).
    pub run: String,
    /// Reproduce on another device (cpu, tch-cpu, cuda:N).
    #[arg(long)]
    pub device: Option<crate::train::DeviceKind>,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub fn reproduce(env: &Env, args: ReproduceArgs) -> Result<()> {
    let k = env.open()?;
    let id = crate::data::catalog::resolve(&k, &args.run, IdKind::Run)?;
    let term = super::progress::Terminal::new(&env.printer);
    let bar = crate::progress::Reporter::task(&term, "Reproducing");
    let opts = reproduce::ReproduceOptions {
        device: args.device,
        threads: args.threads,
    };
    let r = reproduce::reproduce(&k, &id, &opts, bar.as_ref(), &env.interrupt)
        .with_context(|| format!("could not reproduce run {id}"))?;
    drop(bar);
    if args.format == Format::Json {
        env.printer.data(&serde_json::to_string_pretty(&r)?)?;
    } else {
        let mut t = Table::new(["output", "recorded", "reproduced", "identical", "max |Δp|"]);
        for c in &r.comparisons {
            t.row([
                c.role.clone(),
                c.original.short(),
                c.reproduced
                    .map(|h| h.short())
                    .unwrap_or_else(|| "missing".into()),
                if c.identical { "yes" } else { "no" }.to_string(),
                c.max_diff.map(|d| format!("{d:.3e}")).unwrap_or_default(),
            ]);
        }
        env.printer.data(&super::data::render(&t, args.format))?;
        let mut m = Table::new(["eval", "metric", "recorded", "reproduced"]);
        for (set, name, a, b) in &r.metrics {
            m.row([
                set.clone(),
                name.clone(),
                format!("{a:.6}"),
                format!("{b:.6}"),
            ]);
        }
        env.printer.data(&super::data::render(&m, args.format))?;
        env.printer.data(&format!(
            "verdict: {}  (inputs checked: {}; max |Δp| {:.3e}, max |Δmetric| {:.3e}; declared tolerance {:.0e} / {:.0e}; record {})",
            r.verdict.as_str(),
            r.inputs_checked,
            r.max_probability_diff,
            r.max_metric_diff,
            r.tolerance.0,
            r.tolerance.1,
            r.record
        ))?;
    }
    if r.verdict == reproduce::Verdict::Different {
        anyhow::bail!("run {id} did not reproduce");
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub fn verify(env: &Env, args: VerifyArgs) -> Result<()> {
    let k = env.open()?;
    let term = super::progress::Terminal::new(&env.printer);
    let bar = crate::progress::Reporter::task(&term, "Verifying");
    let r =
        maintain::verify(&k, bar.as_ref(), &env.interrupt).context("could not verify the store")?;
    drop(bar);
    if args.format == Format::Json {
        env.printer.data(&serde_json::to_string_pretty(&r)?)?;
    } else {
        let mut t = Table::new(["problem", "object", "detail"]);
        for (h, actual) in &r.corrupt {
            t.row([
                "corrupt".to_string(),
                h.hex(),
                format!("content hashes to {actual:#}"),
            ]);
        }
        for (h, place) in &r.missing {
            t.row([
                "missing".to_string(),
                h.hex(),
                format!("referenced by {place}"),
            ]);
        }
        for (h, place) in &r.dangling {
            t.row([
                "dangling".to_string(),
                h.hex(),
                format!("{place} refers to an object the index does not know"),
            ]);
        }
        if !t.rows.is_empty() {
            env.printer.data(&super::data::render(&t, args.format))?;
        }
    }
    env.printer.status(
        if r.ok() { "Verified" } else { "Problems" },
        format!(
            "{} objects ({}): {} corrupt, {} missing, {} dangling references",
            thousands(r.objects as u64),
            bytes(r.bytes),
            r.corrupt.len(),
            r.missing.len(),
            r.dangling.len()
        ),
    );
    if !r.ok() {
        anyhow::bail!("the store or the index has problems (listed above)");
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Delete the unreachable objects (default: only list them).
    #[arg(long)]
    pub apply: bool,
    /// Keep unreachable objects younger than this many seconds (an import may be writing them).
    #[arg(long, default_value_t = 3600)]
    pub min_age: u64,
    /// Also the preprocessed-image cache (runs make the entries they need again, even one
    /// that is running now).
    #[arg(long)]
    pub pixel_cache: bool,
    /// Also the linear probes' frozen-feature cache (probes compute again what they need).
    #[arg(long)]
    pub feature_cache: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// Lists or deletes one of the home's caches (`label`: its name in the status line, `noun`:
/// what its entries are).
fn gc_cache(
    env: &Env,
    (label, noun): (&str, &str),
    cache: &dyn crate::train::cache::CacheDir,
    apply: bool,
) -> Result<()> {
    let dir = cache.dir();
    let (files, size) = cache
        .usage()
        .with_context(|| format!("could not read `{}`", dir.display()))?;
    if apply && files > 0 {
        cache
            .clear()
            .with_context(|| format!("could not delete `{}`", dir.display()))?;
    }
    env.printer.status(
        if apply { "Deleted" } else { label },
        format!(
            "{files} {noun} ({}) in {}{}",
            bytes(size),
            dir.display(),
            if !apply && files > 0 {
                "; run with --apply to delete them"
            } else {
                ""
            }
        ),
    );
    Ok(())
}

pub fn gc(env: &Env, args: GcArgs) -> Result<()> {
    let k = env.open()?;
    if args.pixel_cache {
        let names = ("Pixel cache", "cached images");
        gc_cache(env, names, &k.pixel_cache, args.apply)?;
    }
    if args.feature_cache {
        let names = ("Feature cache", "cached feature sets");
        gc_cache(env, names, &k.feature_cache, args.apply)?;
    }
    let r = maintain::gc(&k, args.apply, Duration::from_secs(args.min_age))
        .context("could not collect garbage")?;
    if args.format == Format::Json {
        env.printer.data(&serde_json::to_string_pretty(&r)?)?;
    } else if !r.unreachable.is_empty() {
        let mut t = Table::new(["object", "size"]);
        for (h, s) in &r.unreachable {
            t.row([h.hex(), bytes(*s)]);
        }
        env.printer.data(&super::data::render(&t, args.format))?;
    }
    env.printer.status(
        if r.deleted { "Deleted" } else { "Unreachable" },
        format!(
            "{} objects ({}){}{}",
            r.unreachable.len(),
            bytes(r.bytes),
            if r.young > 0 {
                format!("; {} younger than --min-age kept", r.young)
            } else {
                String::new()
            },
            if !r.deleted && !r.unreachable.is_empty() {
                "; run with --apply to delete them"
            } else {
                ""
            }
        ),
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ReindexArgs {}

pub fn reindex(env: &Env, _args: ReindexArgs) -> Result<()> {
    let r = maintain::reindex(env.home(), env.database.as_deref(), env.clock.clone())
        .context("could not rebuild the index")?;
    if let Some(p) = &r.previous {
        env.printer
            .status("Moved", format!("the previous index to `{p}`"));
    }
    env.printer.status("Reindexed", rebuilt(&r));
    Ok(())
}

/// What a reindex (or an index migration) rebuilt, in one line.
pub fn rebuilt(r: &maintain::ReindexReport) -> String {
    let i = &r.ingested;
    format!(
        "{} objects, {} records: {} cohorts, {} splits, {} fractions, {} runs, {} sweeps, {} reproductions",
        thousands(r.objects as u64),
        r.records,
        i.cohorts,
        i.splits,
        i.fractions,
        i.runs,
        i.sweeps,
        i.reproductions
    )
}

#[derive(Debug, clap::Subcommand)]
pub enum BundleCommand {
    /// Import a bundle written by `ktrack bundle write`.
    Import { file: PathBuf },
    /// Write everything needed to reproduce a run elsewhere into a tar file.
    Write {
        /// Run id (any unique prefix).
        run: String,
        #[arg(short, long)]
        output: PathBuf,
    },
}

pub fn bundle(env: &Env, cmd: BundleCommand) -> Result<()> {
    let k = env.open()?;
    match cmd {
        BundleCommand::Write { run, output } => {
            let id = crate::data::catalog::resolve(&k, &run, IdKind::Run)?;
            let r = bundle::write(&k, &id, &output)
                .with_context(|| format!("could not bundle run {id}"))?;
            env.printer.status(
                "Bundled",
                format!(
                    "run {} with {} objects ({}) → {}",
                    r.run,
                    r.objects,
                    bytes(r.bytes),
                    r.path.display()
                ),
            );
        }
        BundleCommand::Import { file } => {
            let r = bundle::import(&k, &file)
                .with_context(|| format!("could not import bundle `{}`", file.display()))?;
            env.printer.status(
                "Imported",
                format!(
                    "bundle of run {}: {} objects ({} new), {} cohorts, {} runs indexed; `ktrack reproduce {}` checks it",
                    r.run, r.objects, r.new_objects, r.ingested.cohorts, r.ingested.runs, r.run
                ),
            );
        }
    }
    Ok(())
}
