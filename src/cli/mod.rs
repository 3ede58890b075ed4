//! The command line: clap definitions and global options. Each subcommand lives in its own file,
//! builds the options of one library call, makes it, and renders the report it gets back.
//! Errors are rendered here: `error:` + `Caused by:` chain + `hint:`; exit 1 for user and data
//! errors, 2 for usage (clap), 101 for bugs (panics).

mod audit;
mod bench;
mod compare;
mod data;
mod exec;
mod index;
mod init;
mod metrics;
mod plot;
mod progress;
mod report;
mod run;
mod status;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::context::{Clock, Ktrack};
use crate::hint::Hint;
use crate::output::Printer;

#[derive(Debug, Parser)]
#[command(
    name = "ktrack",
    version,
    about = "Run, track and reproduce knee-osteoarthritis representation-learning studies",
    propagate_version = true
)]
pub struct Cli {
    /// The ktrack home: object store, index and run scratch.
    #[arg(
        long,
        global = true,
        env = "KTRACK_HOME",
        hide_env_values = true,
        default_value = ".ktrack"
    )]
    pub home: PathBuf,
    /// Keep the index in this PostgreSQL database (`postgres://USER@HOST[:PORT]/DATABASE`)
    /// instead of `ktrack.db` in the home; without it, the home's `config.toml` decides.
    #[arg(
        long,
        global = true,
        env = "KTRACK_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database: Option<String>,
    /// Print only data and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print debug logs (hides progress bars).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Never draw progress bars.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Refuse images of more pixels (read from the header).
    #[arg(
        long,
        global = true,
        env = "KTRACK_MAX_IMAGE_PIXELS",
        hide_env_values = true,
        value_name = "N",
        default_value_t = crate::data::image::DEFAULT_MAX_PIXELS
    )]
    pub max_image_pixels: u64,
    /// Memory for image decodes at once.
    #[arg(
        long,
        global = true,
        env = "KTRACK_DECODE_MEMORY_MB",
        hide_env_values = true,
        value_name = "MIB",
        default_value_t = crate::data::image::DEFAULT_DECODE_BUDGET >> 20
    )]
    pub decode_memory_mb: u64,
    /// Pin the clock (RFC 3339); for reproducible test output.
    #[arg(long, global = true, env = "KTRACK_NOW", hide = true)]
    pub now: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the ktrack home (store + index) if it does not exist.
    Init(init::Args),
    /// Cohorts: import, generate, split, fraction, list, show.
    #[command(subcommand)]
    Data(data::Command),
    /// Run a sweep: plan, skip what is done, resume what was cut, execute the rest.
    Run(run::Args),
    /// Execute exactly one planned run (what a cluster job calls).
    Exec(exec::Args),
    /// Runs by status; failed runs show their error.
    Status(status::Args),
    /// Compare inits: metric tables with confidence intervals and paired tests.
    Compare(compare::Args),
    /// The study as one self-contained HTML file (tables, figures, lineage, environment).
    Report(report::ReportArgs),
    /// Serve that report live from the home (read-only, loopback by default).
    Ui(report::UiArgs),
    /// Plots of runs (ROC and precision-recall curves).
    #[command(subcommand)]
    Plot(plot::PlotCommand),
    /// Runs, metrics and lineage as Parquet or CSV tables.
    Export(plot::ExportArgs),
    /// A run's lineage (cohort → split → fraction → init → run → outputs) with hashes.
    Show(audit::ShowArgs),
    /// Re-execute a run from its inputs by hash and compare: IDENTICAL, WITHIN TOLERANCE or DIFFERENT.
    Reproduce(audit::ReproduceArgs),
    /// Re-hash every object and check every reference of the index.
    Verify(audit::VerifyArgs),
    /// List (or with --apply delete) objects no cohort, run or sweep reaches.
    Gc(audit::GcArgs),
    /// Rebuild the index from the record objects in the store.
    Reindex(audit::ReindexArgs),
    /// Where the index lives; move it to PostgreSQL (`index migrate --to URL`).
    #[command(subcommand)]
    Index(index::Command),
    /// Bundles: everything needed to reproduce a run elsewhere, in one tar file.
    #[command(subcommand)]
    Bundle(audit::BundleCommand),
    /// Metrics of a predictions file (scikit-learn definitions).
    Metrics(metrics::Args),
    /// Benchmarks that print ratios against a reference measured in the same run.
    #[command(subcommand)]
    Bench(bench::Command),
}

/// Shared state of a command invocation.
pub struct Env {
    pub printer: Printer,
    pub home: PathBuf,
    /// `--database` / `KTRACK_DATABASE_URL`.
    pub database: Option<String>,
    pub clock: Clock,
    pub interrupt: Arc<AtomicBool>,
}

impl Env {
    /// Opens the home (creating it on first use).
    pub fn open(&self) -> Result<Ktrack> {
        let k = Ktrack::open_with(&self.home, self.database.as_deref())
            .with_context(|| format!("could not open the ktrack home `{}`", self.home.display()))?;
        Ok(k.with_clock(self.clock.clone()))
    }

    pub fn home(&self) -> &Path {
        &self.home
    }
}

/// Parses arguments, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let printer = Printer::new(cli.quiet, cli.verbose, cli.no_progress);
    init_tracing(cli.verbose);
    crate::data::image::set_limits(cli.max_image_pixels, cli.decode_memory_mb << 20);
    let interrupt = Arc::new(AtomicBool::new(false));
    install_interrupt_handler(interrupt.clone());
    let env = Env {
        printer,
        home: cli.home.clone(),
        database: cli.database.clone(),
        clock: cli.now.clone().map_or(Clock::System, Clock::Fixed),
        interrupt,
    };
    let result = match cli.command {
        Command::Init(args) => init::run(&env, args),
        Command::Data(cmd) => data::run(&env, cmd),
        Command::Run(args) => run::run(&env, args),
        Command::Exec(args) => exec::run(&env, args),
        Command::Status(args) => status::run(&env, args),
        Command::Compare(args) => compare::run(&env, args),
        Command::Report(args) => report::report(&env, args),
        Command::Ui(args) => report::ui(&env, args),
        Command::Plot(cmd) => plot::plot_cmd(&env, cmd),
        Command::Export(args) => plot::export_cmd(&env, args),
        Command::Show(args) => audit::show(&env, args),
        Command::Reproduce(args) => audit::reproduce(&env, args),
        Command::Verify(args) => audit::verify(&env, args),
        Command::Gc(args) => audit::gc(&env, args),
        Command::Reindex(args) => audit::reindex(&env, args),
        Command::Index(cmd) => index::run(&env, cmd),
        Command::Bundle(cmd) => audit::bundle(&env, cmd),
        Command::Metrics(args) => metrics::run(&env, args),
        Command::Bench(cmd) => bench::run(&env, cmd),
    };
    match result {
        Ok(()) => 0,
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            eprint!("{}", render_error(&e, &env.home));
            1
        }
    }
}

fn init_tracing(verbose: bool) {
    let filter = if verbose {
        "ktrack=debug"
    } else {
        "ktrack=warn"
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KTRACK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The first Ctrl-C sets the interrupt flag (work stops at the next safe point); a second
/// one exits at once.
fn install_interrupt_handler(flag: Arc<AtomicBool>) {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    let _ = FLAG.set(flag);
    extern "C" fn on_sigint(_: libc::c_int) {
        if let Some(flag) = FLAG.get()
            && flag.swap(true, Ordering::SeqCst)
        {
            // SAFETY: `_exit` is async-signal-safe.
            unsafe { libc::_exit(130) };
        }
    }
    // SAFETY: installing a handler that only touches an atomic and calls `_exit`.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigint as *const () as libc::sighandler_t);
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `error: …`, the `Caused by:` chain and a `hint:` from the first cause that has one.
pub fn render_error(e: &anyhow::Error, home: &Path) -> String {
    // No message echoes a whole input line, however a cause quoted it.
    let mut out = format!(
        "error: {}\n",
        crate::quote::clip_lines_to(&e.to_string(), 1000)
    );
    let causes: Vec<String> = e
        .chain()
        .skip(1)
        .map(|c| crate::quote::clip_lines_to(&c.to_string(), 1000))
        .collect();
    // `transparent` wrappers repeat their inner message; show each message once.
    let mut shown: Vec<String> = vec![crate::quote::clip_lines_to(&e.to_string(), 1000)];
    let mut lines = Vec::new();
    for c in causes {
        if !shown.contains(&c) {
            lines.push(c.clone());
            shown.push(c);
        }
    }
    if !lines.is_empty() {
        out.push_str("\nCaused by:\n");
        for l in lines {
            for (i, part) in l.lines().enumerate() {
                out.push_str(if i == 0 { "  " } else { "    " });
                out.push_str(part);
                out.push('\n');
            }
        }
    }
    let h = if crate::fault::out_of_space(e.as_ref()) {
        Some(crate::fault::out_of_space_hint(home))
    } else {
        hint(e)
    };
    if let Some(h) = h {
        out.push_str(&format!("\nhint: {h}\n"));
    }
    out
}

/// Every error type that implements [`Hint`], by path. The test below fails when a type
/// implements it without being listed here.
macro_rules! hinted {
    ($($ty:path),* $(,)?) => {
        /// The hint of one error of the chain, if its type has one.
        fn hint_of(c: &(dyn std::error::Error + 'static)) -> Option<String> {
            $(
                if let Some(x) = c.downcast_ref::<$ty>() {
                    return x.hint();
                }
            )*
            if let Some(crate::context::Error::Index(x)) = c.downcast_ref::<crate::context::Error>() {
                return x.hint();
            }
            None
        }

        #[cfg(test)]
        const HINTED: &[&str] = &[$(stringify!($ty)),*];
    };
}

hinted!(
    crate::data::import::Error,
    crate::data::descriptor::Error,
    crate::data::manifest::Error,
    crate::data::split::Error,
    crate::data::fraction::Error,
    crate::index::Error,
    crate::runner::Error,
    crate::runner::spec::Error,
    crate::runner::plan::Error,
    crate::runner::exec::Error,
    crate::report::compare::Error,
    crate::train::backend::Error,
    crate::model::import::Error,
    crate::audit::reproduce::Error,
);

/// The first hint along the error's chain.
fn hint(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(hint_of)
}

#[cfg(test)]
mod tests {
    /// Every `impl Hint for T` in the sources is listed in `hinted!`, so its hint is shown.
    #[test]
    fn every_hinted_error_type_is_listed() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src, &mut files);
        let listed: Vec<String> = super::HINTED.iter().map(|s| s.replace(' ', "")).collect();
        let mut found = 0;
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let rel = f.strip_prefix(&src).unwrap().with_extension("");
            let mut module: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .collect();
            if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                module.pop();
            }
            for line in text.lines() {
                let Some(rest) = line
                    .trim_start()
                    .strip_prefix("impl Hint for ")
                    .or_else(|| {
                        line.trim_start()
                            .strip_prefix("impl crate::hint::Hint for ")
                    })
                else {
                    continue;
                };
                let ty = rest.trim_end_matches(" {").trim();
                let path = std::iter::once("crate".to_string())
                    .chain(module.iter().cloned())
                    .chain(std::iter::once(ty.to_string()))
                    .collect::<Vec<_>>()
                    .join("::");
                assert!(
                    listed.contains(&path),
                    "`{path}` implements Hint but is not listed in cli::hinted!"
                );
                found += 1;
            }
        }
        assert_eq!(found, listed.len(), "every listed type implements Hint");
    }
}
