//! `ktrack run SPEC`: plan a sweep and execute it here (`--jobs N`) or on Slurm.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::Env;
use crate::output::{Format, Table, thousands};
use crate::runner::plan::PlanOptions;
use crate::runner::slurm::{self, SlurmOptions};
use crate::runner::{self, RunOptions};
use crate::train::DeviceKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Executor {
    Local,
    Slurm,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep spec (`experiments/NAME.toml`).
    pub spec: PathBuf,
    /// Runs to execute at once.
    #[arg(long, short, default_value_t = 1)]
    pub jobs: usize,
    /// Print the plan (counts; which runs are done, new, failed) and stop.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, value_enum, default_value = "local")]
    pub executor: Executor,
    /// torchvision ResNet weights (.pth or .safetensors) for `torchvision` inits without a file.
    #[arg(long, env = "KTRACK_IMAGENET_WEIGHTS")]
    pub imagenet_weights: Option<PathBuf>,
    /// Override `[run].device`: cpu, tch-cpu or cuda:N.
    #[arg(long)]
    pub device: Option<DeviceKind>,
    /// Override `[run].threads`.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Leave runs that failed before as they are.
    #[arg(long)]
    pub no_retry_failed: bool,
    /// Seconds without a heartbeat after which another process's run is reclaimed.
    #[arg(long, default_value_t = 120)]
    pub stale_after: u64,
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// GPUs per Slurm task.
    #[arg(long)]
    pub gpus: Option<u32>,
    /// Slurm time limit per task (e.g. 04:00:00).
    #[arg(long)]
    pub time: Option<String>,
    /// Slurm account.
    #[arg(long)]
    pub account: Option<String>,
    #[arg(long)]
    pub cpus_per_task: Option<u32>,
    #[arg(long)]
    pub mem: Option<String>,
    /// Do not print the comparison tables at the end.
    #[arg(long)]
    pub no_compare: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub fn run(env: &Env, args: Args) -> Result<()> {
    let k = Arc::new(env.open()?);
    let opts = RunOptions {
        spec: args.spec.clone(),
        plan: PlanOptions {
            imagenet_weights: args.imagenet_weights.clone(),
            device: args.device,
            threads: args.threads,
        },
        jobs: args.jobs,
        dry_run: args.dry_run || args.executor == Executor::Slurm,
        stale_after: Duration::from_secs(args.stale_after),
        retry_failed: !args.no_retry_failed,
    };
    let ui = super::progress::Terminal::for_sweep(&env.printer);
    let ctx = || format!("could not run sweep `{}`", args.spec.display());
    let report = runner::run_sweep(&k, &opts, &ui, &env.interrupt).with_context(ctx)?;
    drop(ui);

    let c = &report.before;
    for s in &report.skipped {
        env.printer.warn(format!(
            "init `{}` skipped ({} runs): {}",
            s.init, s.runs, s.reason
        ));
    }
    if args.executor == Executor::Slurm {
        if !k.index.location().is_postgres() {
            env.printer.warn(format!(
                "the index is SQLite: the Slurm tasks may write it only from this host (a single-node cluster, or jobs pinned to the submitting node); SQLite's WAL does not work across hosts. For many nodes set `{}` to a PostgreSQL database (see `ktrack index migrate`)",
                crate::index::home::DATABASE_URL
            ));
        }
        return slurm_submit(env, &k, &args, &report);
    }
    if args.dry_run {
        if args.format == Format::Json {
            return Ok(env.printer.data(&serde_json::to_string_pretty(&report)?)?);
        }
        env.printer.status(
            "Plan",
            format!(
                "{} runs of `{}`: {} done, {} new, {} failed, {} running",
                thousands(c.total as u64),
                report.sweep,
                c.done,
                c.new,
                c.failed,
                c.running
            ),
        );
        let mut t = Table::new(["run", "kind", "what", "status"]);
        for r in &report.rows {
            t.row([
                r.id.short(),
                r.kind.to_string(),
                r.label.clone(),
                r.status.name().to_string(),
            ]);
        }
        env.printer.data(&super::data::render(&t, args.format))?;
        return Ok(());
    }
    let executed = report.executed.len();
    env.printer.status(
        if report.interrupted {
            "Interrupted"
        } else {
            "Done"
        },
        format!(
            "sweep `{}`: {} runs, {} were done, {} executed, {} failed, in {:.1}s",
            report.sweep,
            c.total,
            c.done,
            executed,
            report.failed.len(),
            report.seconds
        ),
    );
    if report.interrupted {
        env.printer.status(
            "Resume",
            format!(
                "run `ktrack run {}` again; interrupted runs resume from their checkpoints",
                args.spec.display()
            ),
        );
    }
    if args.format == Format::Json {
        env.printer.data(&serde_json::to_string_pretty(&report)?)?;
    } else if !args.no_compare && !report.interrupted {
        super::compare::print_sweep(env, &k, &report.sweep)?;
    }
    if !report.failed.is_empty() {
        for (id, label, err) in &report.failed {
            env.printer.warn(format!("{label} ({id}) failed: {err}"));
        }
        anyhow::bail!(
            "{} run(s) of sweep `{}` failed; `ktrack status {}` lists them",
            report.failed.len(),
            report.sweep,
            report.sweep
        );
    }
    Ok(())
}

fn slurm_submit(
    env: &Env,
    k: &crate::context::Ktrack,
    args: &Args,
    report: &runner::SweepReport,
) -> Result<()> {
    let pending = |kind: &str| -> Vec<crate::id::Hash> {
        report
            .rows
            .iter()
            .filter(|r| r.kind == kind && r.status != crate::index::runs::Status::Done)
            .map(|r| r.id)
            .collect()
    };
    let home = k.home.canonicalize().unwrap_or_else(|_| k.home.clone());
    let opts = SlurmOptions {
        partition: args.partition.clone(),
        gpus: args.gpus,
        time: args.time.clone(),
        account: args.account.clone(),
        cpus_per_task: args.cpus_per_task,
        mem: args.mem.clone(),
        binary: std::env::current_exe().context("cannot find the ktrack binary")?,
        home: home.clone(),
    };
    let dir = home.join("slurm").join(&report.sweep);
    let scripts = slurm::write_scripts(
        &dir,
        &report.sweep,
        &pending("pretrain"),
        &pending("downstream"),
        &opts,
    )?;
    if scripts.is_empty() {
        env.printer.status(
            "Done",
            format!("every run of `{}` is done; nothing to submit", report.sweep),
        );
        return Ok(());
    }
    if args.dry_run {
        for s in &scripts {
            env.printer.data(&format!(
                "# {} ({} runs)\n{}",
                s.path.display(),
                s.runs.len(),
                s.text
            ))?;
        }
        return Ok(());
    }
    let ids = slurm::submit(&scripts)?;
    for (s, id) in scripts.iter().zip(&ids) {
        env.printer.status(
            "Submitted",
            format!(
                "job array {id}: {} runs ({})",
                s.runs.len(),
                s.path.display()
            ),
        );
    }
    env.printer.data(&ids.join("\n"))?;
    Ok(())
}
