//! The SQLite index (sqlx): a queryable catalogue of what the store holds and how it relates.
//!
//! Opening applies the embedded `migrations/` (never edited once shipped), and sets WAL, foreign
//! keys and a busy timeout. The library is synchronous; the index owns a small tokio runtime and
//! callers run their async query blocks with [`Index::run`]. Write transactions start with
//! `BEGIN IMMEDIATE` so concurrent processes queue on the busy timeout instead of failing with
//! "database is locked". Everything here can be rebuilt from record objects in the store.

pub mod cohorts;
pub mod home;
pub mod runs;
pub mod splits;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::id::{Hash, Prefix};

/// How long a writer waits for another process's transaction before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not open the index `{path}`")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("could not apply the index migrations to `{path}`")]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("index query failed")]
    Query(#[from] sqlx::Error),
    #[error("the index `{path}` is damaged")]
    Damaged {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("the index `{path}` is {what}, but {why}")]
    Lost {
        path: PathBuf,
        what: &'static str,
        why: String,
    },
    #[error(
        "the index `{path}` is not this home's: it has id {found}, the home's `index-id` says {expected}"
    )]
    Foreign {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("`{path}` is {kind}, not an index database file")]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("could not {action} `{path}`")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the index holds a malformed hash `{0}`")]
    BadHash(String),
    #[error("no {kinds} matches id `{prefix}`")]
    NotFound { prefix: String, kinds: String },
    #[error("id `{prefix}` is ambiguous; it matches:\n{}", candidates.iter().map(|(h, k)| format!("  {h:#} ({k})")).collect::<Vec<_>>().join("\n"))]
    Ambiguous {
        prefix: String,
        candidates: Vec<(Hash, &'static str)>,
    },
}

impl crate::hint::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::NotFound { .. } => {
                Some("list what the index holds with `ktrack data ls`".into())
            }
            Error::Ambiguous { .. } => Some("type more characters of the id".into()),
            Error::Damaged { .. } | Error::Lost { .. } | Error::Foreign { .. } => Some(
                "rebuild it from the record objects in the store with `ktrack reindex` (the old file is kept beside it)".into(),
            ),
            Error::Query(e) | Error::Open { source: e, .. } if is_damage(e) => Some(
                "the index file is damaged: rebuild it with `ktrack reindex`".into(),
            ),
            Error::Query(sqlx::Error::Database(e)) if e.message().contains("locked") => {
                Some("another ktrack process holds the index; retry when it is done".into())
            }
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// SQLite's codes for a damaged file: SQLITE_CORRUPT (11) and SQLITE_NOTADB (26).
fn is_damage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            let code = d.code();
            let code = code.as_deref().unwrap_or("");
            code == "11"
                || code == "26"
                || code
                    .parse::<i64>()
                    .is_ok_and(|c| c & 0xff == 11 || c & 0xff == 26)
                || d.message().contains("malformed")
                || d.message().contains("not a database")
        }
        _ => false,
    }
}

/// Classifies an open or migration error: a damaged file says so.
fn open_error(path: &Path, source: sqlx::Error) -> Error {
    if is_damage(&source) {
        Error::Damaged {
            path: path.to_path_buf(),
            source,
        }
    } else {
        Error::Open {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The index database.
pub struct Index {
    rt: tokio::runtime::Runtime,
    pool: SqlitePool,
    path: PathBuf,
}

impl Index {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Index> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ktrack-index")
            .enable_all()
            .build()
            .map_err(|e| Error::Open {
                path: path.to_path_buf(),
                source: sqlx::Error::Io(e),
            })?;
        let url = format!("sqlite://{}", path.display());
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = rt
            .block_on(
                SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(BUSY_TIMEOUT)
                    .connect_with(options),
            )
            .map_err(|source| open_error(path, source))?;
        rt.block_on(sqlx::migrate!("./migrations").run(&pool))
            .map_err(|source| match source {
                sqlx::migrate::MigrateError::Execute(e) if is_damage(&e) => Error::Damaged {
                    path: path.to_path_buf(),
                    source: e,
                },
                source => Error::Migrate {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        Ok(Index {
            rt,
            pool,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A value of `home_meta`.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self.run(
            sqlx::query_scalar("SELECT value FROM home_meta WHERE key = ?1")
                .bind(key)
                .fetch_optional(&self.pool),
        )?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.run(
            sqlx::query("INSERT OR REPLACE INTO home_meta (key, value) VALUES (?1, ?2)")
                .bind(key)
                .bind(value)
                .execute(&self.pool),
        )?;
        Ok(())
    }

    /// True when the index records no object at all.
    pub fn is_empty(&self) -> Result<bool> {
        let any: Option<i64> = self
            .run(sqlx::query_scalar("SELECT 1 FROM objects LIMIT 1").fetch_optional(&self.pool))?;
        Ok(any.is_none())
    }

    /// Moves everything into the main file (WAL checkpoint) and closes every connection, so
    /// the file can be renamed into place on its own.
    pub fn close(self) -> Result<()> {
        self.run(async {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
            self.pool.close().await;
            Ok::<_, Error>(())
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Runs an async block of queries to completion.
    pub fn run<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE`: takes the write lock up front).
    pub async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Resolves a typed prefix among the given kinds of ids.
    pub fn resolve(&self, prefix: &Prefix, kinds: &[IdKind]) -> Result<(Hash, IdKind)> {
        let pattern = format!("{}%", prefix.as_str());
        let mut found: Vec<(Hash, IdKind)> = Vec::new();
        for kind in kinds {
            let key = if *kind == IdKind::Run { "id" } else { "hash" };
            let sql = format!(
                "SELECT {key} FROM {} WHERE {key} LIKE ?1 LIMIT 10",
                kind.table()
            );
            let rows: Vec<(String,)> =
                self.run(sqlx::query_as(&sql).bind(&pattern).fetch_all(&self.pool))?;
            for (hex,) in rows {
                found.push((parse_hash(&hex)?, *kind));
            }
        }
        found.sort();
        found.dedup_by_key(|(h, _)| *h);
        match found.len() {
            0 => Err(Error::NotFound {
                prefix: prefix.to_string(),
                kinds: kinds
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(" or "),
            }),
            1 => Ok(found[0]),
            _ => Err(Error::Ambiguous {
                prefix: prefix.to_string(),
                candidates: found.into_iter().map(|(h, k)| (h, k.name())).collect(),
            }),
        }
    }
}

/// The kinds of ids a user can type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdKind {
    Cohort,
    Split,
    Fraction,
    Run,
    Object,
}

impl IdKind {
    fn table(self) -> &'static str {
        match self {
            IdKind::Cohort => "cohorts",
            IdKind::Split => "splits",
            IdKind::Fraction => "fractions",
            IdKind::Run => "runs",
            IdKind::Object => "objects",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            IdKind::Cohort => "cohort",
            IdKind::Split => "split",
            IdKind::Fraction => "fraction",
            IdKind::Run => "run",
            IdKind::Object => "object",
        }
    }
}

pub(crate) fn parse_hash(hex: &str) -> Result<Hash> {
    hex.parse().map_err(|_| Error::BadHash(hex.to_string()))
}

/// Records an object row (idempotent).
pub async fn insert_object(
    conn: &mut sqlx::SqliteConnection,
    hash: &Hash,
    size: u64,
    kind: &str,
    now: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT OR IGNORE INTO objects (hash, size, kind, created_at) VALUES (?1, ?2, ?3, ?4)",
    )
    .bind(hash.hex())
    .bind(size as i64)
    .bind(kind)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records many object rows in multi-row statements.
pub async fn insert_objects(
    conn: &mut sqlx::SqliteConnection,
    rows: &[(Hash, u64, &str)],
    now: &str,
) -> Result<()> {
    for chunk in rows.chunks(200) {
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT OR IGNORE INTO objects (hash, size, kind, created_at) ",
        );
        qb.push_values(chunk, |mut b, (hash, size, kind)| {
            b.push_bind(hash.hex())
                .push_bind(*size as i64)
                .push_bind(*kind)
                .push_bind(now);
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_migrates_and_resolves_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("k.db")).unwrap();
        let a = Hash::of(b"a");
        let b = Hash::of(b"b");
        index
            .run(async {
                let mut tx = index.begin_write().await?;
                insert_objects(&mut tx, &[(a, 1, "test"), (b, 1, "test")], "now").await?;
                tx.commit().await?;
                Ok::<_, Error>(())
            })
            .unwrap();
        let p: Prefix = a.hex()[..6].parse().unwrap();
        assert_eq!(index.resolve(&p, &[IdKind::Object]).unwrap().0, a);
        let none: Prefix = "ffffffffff".parse().unwrap();
        let err = index.resolve(&none, &[IdKind::Cohort]).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        // Reopening an existing database is fine (migrations are already applied).
        drop(index);
        Index::open(&dir.path().join("k.db")).unwrap();
    }
}
