//! `ktrack index`: where a home's index lives, and moving it to PostgreSQL.

use anyhow::{Context, Result};

use super::Env;
use crate::audit::maintain;
use crate::index;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Build this home's index in a PostgreSQL database from the record objects (as `reindex`
    /// does) and make it the home's index (`database` in the home's `config.toml`).
    Migrate {
        /// The database: `postgres://USER@HOST[:PORT]/DATABASE` (a password is better kept in
        /// `~/.pgpass` or `PGPASSWORD` than in the URL, which is written to `config.toml`).
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Where the index lives: the SQLite file, or the PostgreSQL database and what chose it.
    Where,
}

pub fn run(env: &Env, cmd: Command) -> Result<()> {
    match cmd {
        Command::Migrate { to } => migrate(env, &to),
        Command::Where => {
            let at = index::home::location(env.home(), env.database.as_deref())?;
            println!("{at}");
            Ok(())
        }
    }
}

fn migrate(env: &Env, to: &str) -> Result<()> {
    let r = maintain::migrate(env.home(), env.clock.clone(), to).with_context(|| {
        format!(
            "could not move the index of `{}` to `{}`",
            env.home().display(),
            index::redact_password(to)
        )
    })?;
    env.printer.status(
        "Migrated",
        format!(
            "{} into `{}`",
            super::audit::rebuilt(&r),
            index::redact_password(to)
        ),
    );
    if env.database.as_deref().is_some_and(|u| u.trim() != to) {
        env.printer.warn(format!(
            "--database (or `{}`) names another database, and it takes precedence over the home's `config.toml`",
            index::home::DATABASE_URL
        ));
    }
    env.printer.status(
        "Recorded",
        format!(
            "`database` in `{}`: every process using this home now uses it",
            env.home().join(index::home::CONFIG).display()
        ),
    );
    Ok(())
}
