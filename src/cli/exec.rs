//! `ktrack exec RUN`: execute exactly one planned run (what a cluster job calls).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::Env;
use crate::index::IdKind;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run id (any unique prefix).
    pub run: String,
    /// Seconds without a heartbeat after which another process's claim is taken over.
    #[arg(long, default_value_t = 120)]
    pub stale_after: u64,
}

pub fn run(env: &Env, args: Args) -> Result<()> {
    crate::runner::check_stale_after(Duration::from_secs(args.stale_after))?;
    let k = Arc::new(env.open()?);
    let id = crate::data::catalog::resolve(&k, &args.run, IdKind::Run)?;
    let term = super::progress::Terminal::new(&env.printer);
    let bar = crate::progress::Reporter::task(&term, "Training");
    let outcome = crate::runner::exec_one(
        &k,
        &id,
        Duration::from_secs(args.stale_after),
        bar.as_ref(),
        &env.interrupt,
    )
    .with_context(|| format!("could not execute run {id}"))?;
    drop(bar);
    match outcome {
        None => env
            .printer
            .status("Done", format!("run {id} had already finished")),
        Some(o) => env.printer.status(
            "Finished",
            format!("run {id} in {:.1}s → record {}", o.seconds, o.record),
        ),
    }
    Ok(())
}
