//! The SQLite index (sqlx): a queryable catalogue of what the store holds and how it relates.
//!
//! Opening applies the embedded `migrations/` (never edited once shipped), and sets WAL, foreign
//! keys and a busy timeout. Everything here can be rebuilt from record objects in the store.
//!
//! All SQL of ktrack lives in this module, behind a synchronous facade: [`Index::read`] lends a
//! pooled connection and [`Index::write`] opens a write transaction (`BEGIN IMMEDIATE`, so
//! concurrent processes queue on the busy timeout instead of failing with "database is
//! locked"); either is a [`Session`], whose tables are reached by name —
//! `k.index.read()?.runs().get(&id)?`, `tx.objects().insert_many(..)?; tx.commit()?`. Rows come
//! back as plain structs (`sqlx::FromRow`), never tuples. A write session dropped without
//! `commit` rolls back. The index owns a small tokio runtime that sqlx runs on; nothing outside
//! this module sees sqlx or the runtime.

mod codec;
pub mod cohorts;
pub mod files;
pub mod home;
pub mod objects;
pub mod points;
pub mod reproductions;
pub mod runs;
pub mod splits;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

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
    #[error(
        "run {run} was taken over while this worker ({worker}) ran it (now {status}{}): its result is not recorded",
        holder.as_deref().map(|h| format!(", held by {h}")).unwrap_or_default()
    )]
    ClaimLost {
        run: Hash,
        worker: String,
        holder: Option<String>,
        status: &'static str,
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
            Error::ClaimLost { .. } => Some(
                "its heartbeat went stale (a stopped or disconnected process) and another worker claimed it; this worker's outputs stay in the store until `ktrack gc`".into(),
            ),
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
        self.read()?.block(async |c| {
            Ok(
                sqlx::query_scalar("SELECT value FROM home_meta WHERE key = $1")
                    .bind(key)
                    .fetch_optional(c)
                    .await?,
            )
        })
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.read()?.block(async |c| {
            sqlx::query(
                "INSERT INTO home_meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(key)
            .bind(value)
            .execute(c)
            .await?;
            Ok(())
        })
    }

    /// True when the index records no object at all.
    pub fn is_empty(&self) -> Result<bool> {
        self.read()?.block(async |c| {
            let any: Option<i64> = sqlx::query_scalar("SELECT 1 FROM objects LIMIT 1")
                .fetch_optional(c)
                .await?;
            Ok(any.is_none())
        })
    }

    /// Moves everything into the main file (WAL checkpoint) and closes every connection, so
    /// the file can be renamed into place on its own.
    pub fn close(self) -> Result<()> {
        self.rt.block_on(async {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
            self.pool.close().await;
            Ok::<_, Error>(())
        })
    }

    /// A pooled connection for reads (and single-statement writes, each its own transaction).
    /// Hold it briefly: the pool is small.
    pub fn read(&self) -> Result<Session<'_>> {
        let conn = self.rt.block_on(self.pool.acquire())?;
        Ok(Session {
            rt: &self.rt,
            conn: Some(Conn::Pooled(conn)),
        })
    }

    /// A write transaction (`BEGIN IMMEDIATE`: takes the write lock up front). Nothing it wrote
    /// is visible until [`Session::commit`]; dropping it rolls back.
    pub fn write(&self) -> Result<Session<'_>> {
        let tx = self.rt.block_on(self.pool.begin_with("BEGIN IMMEDIATE"))?;
        Ok(Session {
            rt: &self.rt,
            conn: Some(Conn::Tx(tx)),
        })
    }

    /// Resolves a typed prefix among the given kinds of ids.
    pub fn resolve(&self, prefix: &Prefix, kinds: &[IdKind]) -> Result<(Hash, IdKind)> {
        let pattern = format!("{}%", prefix.as_str());
        let mut found: Vec<(Hash, IdKind)> = Vec::new();
        for kind in kinds {
            let key = if *kind == IdKind::Run { "id" } else { "hash" };
            let sql = format!(
                "SELECT {key} FROM {} WHERE {key} LIKE $1 LIMIT 10",
                kind.table()
            );
            let rows: Vec<Hash> = self.read()?.block(async |c| {
                Ok(sqlx::query_scalar(&sql).bind(&pattern).fetch_all(c).await?)
            })?;
            found.extend(rows.into_iter().map(|h| (h, *kind)));
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

/// A connection lent by [`Index::read`] or a transaction opened by [`Index::write`], used
/// synchronously. Its tables are reached by name: [`Session::runs`], [`Session::objects`], ….
pub struct Session<'i> {
    rt: &'i tokio::runtime::Runtime,
    conn: Option<Conn>,
}

enum Conn {
    Pooled(PoolConnection<Sqlite>),
    Tx(Transaction<'static, Sqlite>),
}

impl<'i> Session<'i> {
    /// Runs one async block of queries on this session's connection, to completion.
    fn block<T>(&mut self, f: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T>) -> Result<T> {
        let conn: &mut SqliteConnection = match self.conn.as_mut().expect("an open session") {
            Conn::Pooled(c) => c,
            Conn::Tx(t) => t,
        };
        self.rt.block_on(f(conn))
    }

    /// Commits a write session (a read session has nothing to commit).
    pub fn commit(mut self) -> Result<()> {
        if let Some(Conn::Tx(tx)) = self.conn.take() {
            let _in_runtime = self.rt.enter();
            self.rt.block_on(tx.commit())?;
        }
        Ok(())
    }

    /// True when the table of `kind` has a row with this id.
    pub fn has(&mut self, kind: IdKind, id: &Hash) -> Result<bool> {
        let key = if kind == IdKind::Run { "id" } else { "hash" };
        let sql = format!("SELECT 1 FROM {} WHERE {key} = $1", kind.table());
        self.block(async |c| {
            let one: Option<i64> = sqlx::query_scalar(&sql).bind(id).fetch_optional(c).await?;
            Ok(one.is_some())
        })
    }

    pub fn objects(&mut self) -> objects::Objects<'_, 'i> {
        objects::Objects(self)
    }

    pub fn cohorts(&mut self) -> cohorts::Cohorts<'_, 'i> {
        cohorts::Cohorts(self)
    }

    pub fn splits(&mut self) -> splits::Splits<'_, 'i> {
        splits::Splits(self)
    }

    pub fn fractions(&mut self) -> splits::Fractions<'_, 'i> {
        splits::Fractions(self)
    }

    pub fn runs(&mut self) -> runs::Runs<'_, 'i> {
        runs::Runs(self)
    }

    pub fn sweeps(&mut self) -> runs::Sweeps<'_, 'i> {
        runs::Sweeps(self)
    }

    pub fn files(&mut self) -> files::Files<'_, 'i> {
        files::Files(self)
    }

    pub fn points(&mut self) -> points::Points<'_, 'i> {
        points::Points(self)
    }

    pub fn reproductions(&mut self) -> reproductions::Reproductions<'_, 'i> {
        reproductions::Reproductions(self)
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // Returning a connection to the pool (and rolling back an open transaction) is queued
        // on the index's runtime.
        let _in_runtime = self.rt.enter();
        self.conn.take();
    }
}

/// True when `e` is the index's pool giving up waiting for a free connection (other work held
/// them all: worth retrying).
pub fn is_pool_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        e.downcast_ref::<sqlx::Error>(),
        Some(sqlx::Error::PoolTimedOut)
    ) || matches!(
        e.downcast_ref::<Error>(),
        Some(Error::Query(sqlx::Error::PoolTimedOut))
    )
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
        let mut tx = index.write().unwrap();
        tx.objects()
            .insert_many(&[(a, 1, "test"), (b, 1, "test")], "now")
            .unwrap();
        tx.commit().unwrap();
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
