//! The index (sqlx): a queryable catalogue of what the store holds and how it relates, in a
//! SQLite file in the home (the default) or in a PostgreSQL database (for many nodes).
//!
//! Opening applies the embedded migrations (never edited once shipped): `migrations/` on
//! SQLite, with WAL, foreign keys and a busy timeout; `migrations/postgres/` on PostgreSQL, in
//! the schema `ktrack`, under an advisory lock. Everything here can be rebuilt from record
//! objects in the store.
//!
//! Each query is one SQL text that both backends read (`$N` placeholders, `ON CONFLICT`),
//! written once and compiled for each by `on!`; the few statements the dialects spell apart
//! (the clock, `group_concat`/`string_agg`) ask [`Session::dialect`]. `sqlx::Any` is not used:
//! its query builder emits `?` placeholders, which PostgreSQL does not read.
//!
//! All SQL of ktrack lives in this module, behind a synchronous facade: [`Index::read`] lends a
//! pooled connection and [`Index::write`] opens a write transaction (`BEGIN IMMEDIATE`, or on
//! PostgreSQL `BEGIN` and an advisory lock, so concurrent processes queue instead of failing
//! with "database is locked"); either is a [`Session`], whose tables are reached by name —
//! `k.index.read()?.runs().get(&id)?`, `tx.objects().insert_many(..)?; tx.commit()?`. Rows come
//! back as plain structs (`sqlx::FromRow`), never tuples. A write session dropped without
//! `commit` rolls back. The index owns a small tokio runtime that sqlx runs on; nothing outside
//! this module sees sqlx or the runtime.

/// Runs a block of queries on a session's connection, to completion, whichever backend it is:
/// `on!(session, |conn, Db| { … })` compiles the block once for SQLite and once for
/// PostgreSQL, with `conn` the connection and `Db` the sqlx database type (for a
/// `QueryBuilder::<Db>`). The block returns [`Result`].
macro_rules! on {
    ($session:expr, |$conn:ident, $db:ident| $body:expr) => {{
        let session: &mut $crate::index::Session<'_> = $session;
        let rt = session.runtime();
        match session.connection() {
            $crate::index::Connection::Sqlite($conn) => {
                #[allow(dead_code)]
                type $db = sqlx::Sqlite;
                $crate::index::block_on(rt, async { $body })
            }
            $crate::index::Connection::Postgres($conn) => {
                #[allow(dead_code)]
                type $db = sqlx::Postgres;
                $crate::index::block_on(rt, async { $body })
            }
        }
    }};
}

/// Implements `sqlx::FromRow` for a type on both backends' rows from one body:
/// `from_rows!(Type, |row| Ok(Type { a: row.try_get("a")?, … }))`.
macro_rules! from_rows {
    ($t:ty, |$row:ident| $body:expr) => {
        impl sqlx::FromRow<'_, sqlx::sqlite::SqliteRow> for $t {
            fn from_row($row: &sqlx::sqlite::SqliteRow) -> sqlx::Result<$t> {
                use sqlx::Row as _;
                $body
            }
        }

        impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for $t {
            fn from_row($row: &sqlx::postgres::PgRow) -> sqlx::Result<$t> {
                use sqlx::Row as _;
                $body
            }
        }
    };
}

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

use sqlx::ConnectOptions;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool, Transaction};

use crate::id::{Hash, Prefix};

/// How long a writer waits for another process's transaction before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not open the index `{at}`")]
    Open {
        at: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("could not apply the index migrations to `{at}`")]
    Migrate {
        at: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("index query failed")]
    Query(#[from] sqlx::Error),
    #[error("the index `{at}` is damaged")]
    Damaged {
        at: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("the index `{at}` is {what}, but {why}")]
    Lost {
        at: String,
        what: &'static str,
        why: String,
    },
    #[error(
        "the index `{at}` is not this home's: it has id {found}, the home's `index-id` says {expected}"
    )]
    Foreign {
        at: String,
        found: String,
        expected: String,
    },
    #[error(
        "the home `{home}` is on {fs}, where a SQLite index is not safe: SQLite's locks and WAL do not work across hosts"
    )]
    NetworkFilesystem { home: PathBuf, fs: &'static str },
    #[error("`{path}`: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{source_of} names `{url}`, which is not a PostgreSQL URL")]
    BadUrl { source_of: String, url: String },
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
            Error::BadUrl { .. } => Some(
                "the index is SQLite in the home unless a `postgres://USER@HOST/DATABASE` URL names a PostgreSQL one".into(),
            ),
            Error::NetworkFilesystem { .. } => Some(
                "keep the index in PostgreSQL: set `KTRACK_DATABASE_URL=postgres://USER@HOST/DB` (or `database = \"postgres://…\"` in the home's `config.toml`) for every process, and move what this home has there with `ktrack index migrate --to URL`; or put the home on a local disk".into(),
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
fn open_error(at: &Location, source: sqlx::Error) -> Error {
    if is_damage(&source) {
        Error::Damaged {
            at: at.to_string(),
            source,
        }
    } else {
        Error::Open {
            at: at.to_string(),
            source,
        }
    }
}

fn migrate_error(at: &Location, source: sqlx::migrate::MigrateError) -> Error {
    match source {
        sqlx::migrate::MigrateError::Execute(e) if is_damage(&e) => Error::Damaged {
            at: at.to_string(),
            source: e,
        },
        source => Error::Migrate {
            at: at.to_string(),
            source,
        },
    }
}

/// Opens a SQLite file in WAL mode with foreign keys and the busy timeout, and migrates it.
async fn open_sqlite(path: &Path) -> Result<SqlitePool> {
    let at = Location::Sqlite(path.to_path_buf());
    let url = format!("sqlite://{}", path.display());
    let options = SqliteConnectOptions::from_str(&url)
        .map_err(|source| open_error(&at, source))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(BUSY_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|source| open_error(&at, source))?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .map_err(|source| migrate_error(&at, source))?;
    Ok(pool)
}

/// Connection options of a PostgreSQL URL; what the URL leaves out comes from the libpq
/// environment (`PGHOST`, `PGUSER`, `PGPASSWORD`, `~/.pgpass`, …), so `postgres://` alone
/// reaches the server those name.
fn postgres_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(url)?
        .application_name("ktrack")
        .log_statements(tracing::log::LevelFilter::Trace))
}

/// Connects to PostgreSQL with the schema first on the search path, creating the schema and
/// applying `migrations/postgres/` under an advisory lock (so simultaneous first opens from
/// many nodes are safe).
async fn open_postgres(at: &Location, url: &str, schema: &str) -> Result<PgPool> {
    let base = postgres_options(url).map_err(|source| open_error(at, source))?;
    let quoted = ident(schema);
    let options = base.clone().options([
        ("search_path", quoted.as_str()),
        ("lock_timeout", "60s"),
        ("idle_in_transaction_session_timeout", "600s"),
    ]);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(BUSY_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|source| open_error(at, source))?;
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(WRITE_LOCK - 1)
        .execute(&mut *conn)
        .await?;
    let migrated = async {
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))
            .execute(&mut *conn)
            .await
            .map_err(|source| open_error(at, source))?;
        sqlx::migrate!("./migrations/postgres")
            .run(&mut *conn)
            .await
            .map_err(|source| migrate_error(at, source))
    }
    .await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(WRITE_LOCK - 1)
        .execute(&mut *conn)
        .await?;
    migrated?;
    Ok(pool)
}

/// Where an index lives: a SQLite file (the embedded default) or a PostgreSQL database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    /// A `postgres://` URL (its password, if any, is never shown) and the schema the tables
    /// live in.
    Postgres {
        url: String,
        schema: String,
    },
}

/// The PostgreSQL schema a home's tables live in.
pub const SCHEMA: &str = "ktrack";

impl Location {
    /// A PostgreSQL location in the default schema.
    pub fn postgres(url: &str) -> Location {
        Location::Postgres {
            url: url.to_string(),
            schema: SCHEMA.to_string(),
        }
    }

    /// A PostgreSQL location from a URL the user gave (`source_of` names where: a flag, a
    /// variable, a file); anything but `postgres://` or `postgresql://` is refused.
    pub fn parse_postgres(url: &str, source_of: &str) -> Result<Location> {
        let url = url.trim();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::BadUrl {
                source_of: source_of.to_string(),
                url: redact_password(url),
            });
        }
        Ok(Location::postgres(url))
    }

    /// The same database, another schema (a reindex builds into one beside the live one).
    pub fn with_schema(&self, schema: &str) -> Location {
        match self {
            Location::Sqlite(p) => Location::Sqlite(p.clone()),
            Location::Postgres { url, .. } => Location::Postgres {
                url: url.clone(),
                schema: schema.to_string(),
            },
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Location::Postgres { .. })
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres { url, schema } => {
                write!(f, "{}", redact_password(url))?;
                if schema != SCHEMA {
                    write!(f, " (schema {schema})")?;
                }
                Ok(())
            }
        }
    }
}

/// A database URL with its password replaced by `***`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}{tail}")
        }
        _ => url.to_string(),
    }
}

/// The SQL dialect of a session's connection, for the few statements the two spell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The key of the advisory lock every PostgreSQL write transaction takes, so that writers
/// queue one after another as SQLite's `BEGIN IMMEDIATE` makes them (b"ktrackwr").
const WRITE_LOCK: i64 = 0x6b74_7261_636b_7772;

/// The index database.
pub struct Index {
    rt: tokio::runtime::Runtime,
    pool: Pool,
    at: Location,
}

impl Index {
    /// Opens (creating if needed) the SQLite database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Index> {
        Index::connect(&Location::Sqlite(path.to_path_buf()))
    }

    /// Opens the index at `at` (creating a SQLite file or a PostgreSQL schema if needed) and
    /// applies its migrations.
    pub fn connect(at: &Location) -> Result<Index> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ktrack-index")
            .enable_all()
            .build()
            .map_err(no_runtime(at))?;
        let pool = match at {
            Location::Sqlite(path) => Pool::Sqlite(rt.block_on(open_sqlite(path))?),
            Location::Postgres { url, schema } => {
                Pool::Postgres(rt.block_on(open_postgres(at, url, schema))?)
            }
        };
        Ok(Index {
            rt,
            pool,
            at: at.clone(),
        })
    }

    /// True when an index exists at `at` (a non-empty SQLite file; a PostgreSQL schema with
    /// ktrack's migrations applied). Creates nothing.
    pub fn exists(at: &Location) -> Result<bool> {
        match at {
            Location::Sqlite(path) => Ok(std::fs::metadata(path).is_ok_and(|m| m.len() > 0)),
            Location::Postgres { url, schema } => on_postgres(at, url, async |conn| {
                let found: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM information_schema.tables
                     WHERE table_schema = $1 AND table_name = '_sqlx_migrations'",
                )
                .bind(schema)
                .fetch_optional(conn)
                .await?;
                Ok(found.is_some())
            }),
        }
    }

    /// Where this index lives.
    pub fn location(&self) -> &Location {
        &self.at
    }

    /// A value of `home_meta`.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        on!(&mut self.read()?, |c, _Db| {
            Ok(
                sqlx::query_scalar("SELECT value FROM home_meta WHERE key = $1")
                    .bind(key)
                    .fetch_optional(c)
                    .await?,
            )
        })
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        on!(&mut self.read()?, |c, _Db| {
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
        on!(&mut self.read()?, |c, _Db| {
            let any: Option<i32> = sqlx::query_scalar("SELECT 1 FROM objects LIMIT 1")
                .fetch_optional(c)
                .await?;
            Ok(any.is_none())
        })
    }

    /// Closes every connection; on SQLite, first moves everything into the main file (WAL
    /// checkpoint), so the file can be renamed into place on its own.
    pub fn close(self) -> Result<()> {
        self.rt.block_on(async {
            match &self.pool {
                Pool::Sqlite(pool) => {
                    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                        .execute(pool)
                        .await?;
                    pool.close().await;
                }
                Pool::Postgres(pool) => pool.close().await,
            }
            Ok::<_, Error>(())
        })
    }

    /// A pooled connection for reads (and single-statement writes, each its own transaction).
    /// Hold it briefly: the pool is small.
    pub fn read(&self) -> Result<Session<'_>> {
        let conn = match &self.pool {
            Pool::Sqlite(p) => Conn::Sqlite(self.rt.block_on(p.acquire())?),
            Pool::Postgres(p) => Conn::Postgres(self.rt.block_on(p.acquire())?),
        };
        Ok(Session {
            rt: &self.rt,
            conn: Some(conn),
        })
    }

    /// A write transaction that holds the index's write lock from its start (SQLite's
    /// `BEGIN IMMEDIATE`; on PostgreSQL, `BEGIN` and a transaction-level advisory lock), so
    /// writers queue instead of interleaving. Nothing it wrote is visible until
    /// [`Session::commit`]; dropping it rolls back.
    pub fn write(&self) -> Result<Session<'_>> {
        let conn = match &self.pool {
            Pool::Sqlite(p) => Conn::SqliteTx(self.rt.block_on(p.begin_with("BEGIN IMMEDIATE"))?),
            Pool::Postgres(p) => Conn::PostgresTx(self.rt.block_on(async {
                let mut tx = p.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                Ok::<_, sqlx::Error>(tx)
            })?),
        };
        Ok(Session {
            rt: &self.rt,
            conn: Some(conn),
        })
    }

    /// PostgreSQL: removes `schema` and everything in it, if it is there (a half-built
    /// reindex).
    pub fn drop_schema(at: &Location, schema: &str) -> Result<()> {
        let Location::Postgres { url, .. } = at else {
            return Ok(());
        };
        on_postgres(at, url, async |conn| {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(schema)))
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// PostgreSQL: puts the index built in `building` in place of the live schema in one
    /// transaction, keeping the old one as `aside` (if there was one). Returns whether there
    /// was one. Other processes' next statements see the new tables.
    pub fn swap_schema(at: &Location, building: &str, aside: &str) -> Result<bool> {
        let Location::Postgres { url, schema } = at else {
            return Ok(false);
        };
        on_postgres(at, url, async |conn| {
            let mut tx = sqlx::Connection::begin(conn).await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(WRITE_LOCK)
                .execute(&mut *tx)
                .await?;
            let live: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = $1",
            )
            .bind(schema)
            .fetch_optional(&mut *tx)
            .await?;
            let renames = live
                .map(|_| (schema.as_str(), aside))
                .into_iter()
                .chain([(building, schema.as_str())]);
            for (from, to) in renames {
                sqlx::query(&format!(
                    "ALTER SCHEMA {} RENAME TO {}",
                    ident(from),
                    ident(to)
                ))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(live.is_some())
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
            let rows: Vec<Hash> = on!(&mut self.read()?, |c, _Db| {
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

/// A schema name as an SQL identifier (ktrack's own names: lowercase letters, digits, `_`).
fn ident(schema: &str) -> String {
    assert!(
        schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "schema names are ktrack's own: `{schema}`"
    );
    format!("\"{schema}\"")
}

/// The error for a runtime the index could not start (threads refused).
fn no_runtime(at: &Location) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Open {
        at: at.to_string(),
        source: sqlx::Error::Io(e),
    }
}

/// Runs `f` on one plain PostgreSQL connection to `url` (no pool, no search path).
fn on_postgres<T>(
    at: &Location,
    url: &str,
    f: impl AsyncFnOnce(&mut PgConnection) -> Result<T>,
) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(no_runtime(at))?;
    rt.block_on(async {
        let mut conn = postgres_options(url)
            .map_err(|source| open_error(at, source))?
            .connect()
            .await
            .map_err(|source| open_error(at, source))?;
        f(&mut conn).await
    })
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
    Sqlite(PoolConnection<Sqlite>),
    SqliteTx(Transaction<'static, Sqlite>),
    Postgres(PoolConnection<Postgres>),
    PostgresTx(Transaction<'static, Postgres>),
}

/// A session's connection, by backend (what `on!` matches on).
pub(crate) enum Connection<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

/// Runs a future on the index's runtime (the async half of `on!`); the bound gives the
/// block its `Result` type, so `?` works inside it.
pub(crate) fn block_on<T>(
    rt: &tokio::runtime::Runtime,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    rt.block_on(f)
}

impl<'i> Session<'i> {
    pub(crate) fn runtime(&self) -> &'i tokio::runtime::Runtime {
        self.rt
    }

    pub(crate) fn connection(&mut self) -> Connection<'_> {
        match self.conn.as_mut().expect("an open session") {
            Conn::Sqlite(c) => Connection::Sqlite(c),
            Conn::SqliteTx(t) => Connection::Sqlite(t),
            Conn::Postgres(c) => Connection::Postgres(c),
            Conn::PostgresTx(t) => Connection::Postgres(t),
        }
    }

    /// The SQL dialect of this session's connection.
    pub fn dialect(&self) -> Dialect {
        match self.conn.as_ref().expect("an open session") {
            Conn::Sqlite(_) | Conn::SqliteTx(_) => Dialect::Sqlite,
            Conn::Postgres(_) | Conn::PostgresTx(_) => Dialect::Postgres,
        }
    }

    /// Commits a write session (a read session has nothing to commit).
    pub fn commit(mut self) -> Result<()> {
        let _in_runtime = self.rt.enter();
        match self.conn.take() {
            Some(Conn::SqliteTx(tx)) => self.rt.block_on(tx.commit())?,
            Some(Conn::PostgresTx(tx)) => self.rt.block_on(tx.commit())?,
            _ => {}
        }
        Ok(())
    }

    /// True when the table of `kind` has a row with this id.
    pub fn has(&mut self, kind: IdKind, id: &Hash) -> Result<bool> {
        let key = if kind == IdKind::Run { "id" } else { "hash" };
        let sql = format!("SELECT 1 FROM {} WHERE {key} = $1", kind.table());
        on!(self, |c, _Db| {
            let one: Option<i32> = sqlx::query_scalar(&sql).bind(id).fetch_optional(c).await?;
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

/// Indexes for unit tests: a SQLite file in `dir`, and, when `KTRACK_TEST_DATABASE_URL` names
/// a PostgreSQL server, a fresh schema there (dropped with the returned guard).
/// True when `e` is another transaction getting in the way on PostgreSQL (a lock wait past
/// `lock_timeout`, a deadlock, a serialisation failure): worth retrying, as SQLite's "database
/// is locked" is.
pub fn is_contention(e: &(dyn std::error::Error + 'static)) -> bool {
    let db = match (e.downcast_ref::<sqlx::Error>(), e.downcast_ref::<Error>()) {
        (Some(sqlx::Error::Database(d)), _) | (_, Some(Error::Query(sqlx::Error::Database(d)))) => {
            d
        }
        _ => return false,
    };
    matches!(db.code().as_deref(), Some("55P03" | "40P01" | "40001"))
}

#[cfg(test)]
pub(crate) fn test_indexes(dir: &Path) -> Vec<(Index, TestSchema)> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut out = vec![(
        Index::open(&dir.join("k.db")).expect("a SQLite index"),
        TestSchema(None),
    )];
    #[allow(clippy::disallowed_methods)] // the test suite's own setting
    if let Some(url) = std::env::var("KTRACK_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let at = Location::postgres(&url)
            .with_schema(&format!("ktrack_unit_{}_{n}", std::process::id()));
        if let Location::Postgres { schema, .. } = &at {
            Index::drop_schema(&at, schema).expect("drop an old test schema");
        }
        out.push((
            Index::connect(&at).expect("a PostgreSQL index"),
            TestSchema(Some(at)),
        ));
    }
    out
}

/// Drops a unit test's PostgreSQL schema.
#[cfg(test)]
pub(crate) struct TestSchema(Option<Location>);

#[cfg(test)]
impl Drop for TestSchema {
    fn drop(&mut self) {
        if let Some(at @ Location::Postgres { schema, .. }) = &self.0 {
            let _ = Index::drop_schema(at, schema);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_shown() {
        assert_eq!(
            redact_password("postgres://ann:s3cret@db.lab:5432/study?sslmode=require"),
            "postgres://ann:***@db.lab:5432/study?sslmode=require"
        );
        assert_eq!(
            redact_password("postgres://ann@db/x"),
            "postgres://ann@db/x"
        );
        assert_eq!(
            Location::postgres("postgres://a:b@h/d").to_string(),
            "postgres://a:***@h/d"
        );
    }

    #[test]
    fn writes_queue_and_prefixes_resolve_on_every_backend() {
        let dir = tempfile::tempdir().unwrap();
        for (index, _schema) in test_indexes(dir.path()) {
            let a = Hash::of(b"a");
            let mut tx = index.write().unwrap();
            tx.objects().insert_many(&[(a, 1, "test")], "now").unwrap();
            // A dropped write session rolls back.
            drop(tx);
            assert!(!index.read().unwrap().has(IdKind::Object, &a).unwrap());
            // A second writer waits for the first to commit.
            let order = std::sync::Mutex::new(Vec::new());
            std::thread::scope(|s| {
                let mut first = index.write().unwrap();
                first
                    .objects()
                    .insert(&Hash::of(b"z"), 1, "t", "now")
                    .unwrap();
                order.lock().unwrap().push("first began");
                s.spawn(|| {
                    let second = index.write().unwrap();
                    order.lock().unwrap().push("second began");
                    second.commit().unwrap();
                });
                std::thread::sleep(std::time::Duration::from_millis(300));
                order.lock().unwrap().push("first commits");
                first.commit().unwrap();
            });
            assert_eq!(
                order.into_inner().unwrap(),
                ["first began", "first commits", "second began"],
                "{}",
                index.location()
            );
            assert!(
                index
                    .read()
                    .unwrap()
                    .has(IdKind::Object, &Hash::of(b"z"))
                    .unwrap()
            );
            let p: Prefix = Hash::of(b"z").hex()[..6].parse().unwrap();
            assert_eq!(
                index.resolve(&p, &[IdKind::Object]).unwrap().0,
                Hash::of(b"z"),
                "{}",
                index.location()
            );
        }
    }

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
