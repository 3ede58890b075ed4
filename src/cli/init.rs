//! `ktrack init`: create the home (store + index); harmless when it exists.

use anyhow::Result;

use super::Env;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(env: &Env, _args: Args) -> Result<()> {
    let k = env.open()?;
    env.printer
        .status("Ready", format!("ktrack home `{}`", k.home.display()));
    Ok(())
}
