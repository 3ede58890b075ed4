//! `ktrack data …`: one file per subcommand — `import`, `split`, `fraction`, `synth`, `ls`,
//! `show`. Each parses its arguments, calls the library (`crate::data`) and prints; none
//! holds logic of its own.

mod fraction;
mod import;
mod ls;
pub(crate) mod show;
mod split;
mod synth;

use anyhow::Result;

use super::Env;
use crate::output::{Format, Table};

pub(crate) use import::run_import;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Import the cohort a dataset descriptor names (idempotent).
    Import(import::Args),
    /// Split a cohort by patient into train/val/test, stratified by a label.
    Split(split::Args),
    /// Nested, stratified label fractions of a split's train partition.
    Fraction(fraction::Args),
    /// Generate synthetic knee cohorts as real files (PNG + CSV + reports).
    ///
    /// Either from descriptors with a `[synth]` table (`datasets/synthetic-*.toml`), or ad hoc
    /// with `--kind … --out DIR` (which also writes `DIR/dataset.toml`).
    Synth(synth::Args),
    /// List cohorts, splits and fractions.
    Ls(ls::Args),
    /// Counts and hashes of one cohort, split or fraction.
    Show(show::Args),
}

pub fn run(env: &Env, cmd: Command) -> Result<()> {
    match cmd {
        Command::Import(args) => import::run(env, args),
        Command::Split(args) => split::run(env, args),
        Command::Fraction(args) => fraction::run(env, args),
        Command::Synth(args) => synth::run(env, args),
        Command::Ls(args) => ls::run(env, args),
        Command::Show(args) => show::run(env, args),
    }
}

pub(crate) fn render(t: &Table, format: Format) -> String {
    match format {
        Format::Csv => t.to_csv(),
        _ => t.to_text(),
    }
}
