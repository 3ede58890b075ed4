//! Opening a home's index so that a lost one is never silent and first use is safe.
//!
//! The index is `ktrack.db` in the home, or a PostgreSQL database named by
//! `KTRACK_DATABASE_URL` or by the `database` key of the home's `config.toml` (so every node of
//! a cluster job that shares the home makes the same choice). A SQLite index on a network
//! filesystem is refused: its locks and WAL do not work across hosts.
//!
//! The index's id (a row of `home_meta`) is also written to the file `index-id` beside the
//! store when the index is created. Opening then tells apart:
//! - a new home (no `index-id`, empty store): the index is created and its id recorded;
//! - a lost index (`ktrack.db` missing or emptied while `index-id` exists, or an empty index
//!   over a store that holds objects): an error whose hint is `ktrack reindex`, and nothing is
//!   created;
//! - a foreign index (its id differs from `index-id`): an error, same hint;
//! - a damaged file (SQLite's "malformed" or "not a database"): an error, same hint.
//!
//! Concurrent first use is serialised by an exclusive `flock` on `index.lock` held while the
//! file is created and migrated (sqlx's SQLite migrator takes no lock of its own; on
//! PostgreSQL an advisory lock does the same across hosts).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{Error, Index, Location, Result};

/// The index file in a home.
pub const DB: &str = "ktrack.db";
/// The home's settings file (its `database` key names a PostgreSQL index).
pub const CONFIG: &str = "config.toml";
/// The environment variable that names a PostgreSQL index (before the home's `config.toml`).
pub const DATABASE_URL: &str = "KTRACK_DATABASE_URL";
/// The file beside the store that names the home's index.
pub const ID_FILE: &str = "index-id";
const LOCK: &str = "index.lock";

/// An exclusive lock on a home's `index.lock`, released when dropped.
pub struct HomeLock {
    _file: File,
}

/// Takes the home's index lock (blocking until other openers are done).
pub fn lock(home: &Path) -> Result<HomeLock> {
    let path = home.join(LOCK);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_error("open", &path))?;
    loop {
        // SAFETY: flock only takes a lock on the descriptor `file` keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(HomeLock { _file: file });
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            // A filesystem without locks (an NFS mount without lockd): opening proceeds
            // unserialised, as it did before this lock existed.
            Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP) => {
                tracing::warn!(path = %path.display(), "the filesystem does not support locks; opening without the home lock");
                return Ok(HomeLock { _file: file });
            }
            _ => return Err(io_error("lock", &path)(e)),
        }
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

/// The id in `index-id`, if the file exists.
pub fn read_id(home: &Path) -> Result<Option<String>> {
    let path = home.join(ID_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", &path)(e)),
    }
}

/// Writes `index-id` atomically (temp file, fsync, rename, fsync of the home).
pub fn write_id(home: &Path, id: &str) -> Result<()> {
    write_atomically(home, ID_FILE, &format!("{id}\n"))
}

/// Writes `home/name` through a temp file, fsync, rename and an fsync of the home.
fn write_atomically(home: &Path, name: &str, text: &str) -> Result<()> {
    let path = home.join(name);
    let tmp = home.join(format!("{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(home)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error("write", &path)(e)
    })
}

/// A fresh index id: the kernel's random UUID (an id names the index, it is no part of any
/// result), mixed with host and process.
pub fn new_id() -> String {
    let mut seed = fs::read("/proc/sys/kernel/random/uuid").unwrap_or_default();
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(crate::env::hostname().as_bytes());
    blake3::hash(&seed).to_hex()[..32].to_string()
}

/// The home's settings as `config.toml` holds them.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A `postgres://` URL: the index lives there instead of in `ktrack.db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The preprocessed-image cache's directory (relative to the home; default
    /// `cache/pixels`). On a cluster whose home is on shared storage, node-local scratch
    /// makes each node decode the images once and read them locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel_cache: Option<PathBuf>,
}

/// Reads the home's `config.toml` (an absent file is the default).
pub fn read_config(home: &Path) -> Result<Config> {
    let path = home.join(CONFIG);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => return Err(io_error("read", &path)(e)),
    };
    toml::from_str(&text).map_err(|e| Error::Config {
        path,
        message: e.message().to_string(),
    })
}

/// Writes the home's `config.toml` atomically.
pub fn write_config(home: &Path, config: &Config) -> Result<()> {
    let path = home.join(CONFIG);
    let text = toml::to_string(config).map_err(|e| Error::Config {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_atomically(home, CONFIG, &text)
}

/// Where the index of `home` lives: `database` (the command line's `--database`, or
/// `KTRACK_DATABASE_URL`), else the `database` key of the home's `config.toml`, else
/// `ktrack.db` in the home.
pub fn location(home: &Path, database: Option<&str>) -> Result<Location> {
    let given = database
        .map(str::to_string)
        .filter(|u| !u.trim().is_empty());
    let (url, source) = match given {
        Some(url) => (url, format!("--database (or {DATABASE_URL})")),
        None => match read_config(home)?.database {
            Some(url) => (url, home.join(CONFIG).display().to_string()),
            None => return Ok(Location::Sqlite(home.join(DB))),
        },
    };
    Location::parse_postgres(&url, &source)
}

/// Refuses a SQLite index for a home on a network filesystem (NFS, SMB, Lustre, GPFS, CephFS,
/// FUSE): SQLite's locks and WAL do not work across hosts. The home need not exist yet (its
/// nearest existing parent is asked), so nothing is created before the refusal.
pub fn refuse_sqlite_on_a_network_filesystem(home: &Path, at: &Location) -> Result<()> {
    if at.is_postgres() {
        return Ok(());
    }
    let there = home.ancestors().find(|p| p.exists()).unwrap_or(home);
    match crate::fault::network_filesystem(there) {
        Some(fs) => Err(Error::NetworkFilesystem {
            home: home.to_path_buf(),
            fs,
        }),
        None => Ok(()),
    }
}

/// Opens the index of `home` at `at` (see [`location`]). `store_objects` counts (at least
/// one of) the store's objects; it is asked only when the index is new or empty.
pub fn open(home: &Path, at: &Location, store_objects: &dyn Fn() -> usize) -> Result<Index> {
    let at = at.clone();
    if let Location::Sqlite(path) = &at
        && let Some(kind) = crate::fault::file_kind(path)
    {
        return Err(Error::NotAFile {
            path: path.clone(),
            kind,
        });
    }
    refuse_sqlite_on_a_network_filesystem(home, &at)?;
    let _lock = lock(home)?;
    let existed = Index::exists(&at)?;
    let recorded = read_id(home)?;
    if !existed {
        let what = match &at {
            Location::Sqlite(path) if path.exists() => "empty",
            Location::Sqlite(_) => "missing",
            Location::Postgres { .. } => "empty",
        };
        if recorded.is_some() {
            return Err(Error::Lost {
                at: at.to_string(),
                what,
                why: format!("`{ID_FILE}` says this home had one"),
            });
        }
        if store_objects() > 0 {
            return Err(Error::Lost {
                at: at.to_string(),
                what,
                why: "the store holds objects".into(),
            });
        }
    }
    let index = Index::connect(&at)?;
    let found = index.meta("index_id")?;
    match (found, recorded) {
        (Some(found), Some(expected)) if found != expected => Err(Error::Foreign {
            at: at.to_string(),
            found,
            expected,
        }),
        (Some(_), Some(_)) => Ok(index),
        (Some(found), None) => {
            write_id(home, &found)?;
            Ok(index)
        }
        (None, recorded) => {
            // A new index, or one made before ids: an empty one over a full store was lost.
            if existed && index.is_empty()? && store_objects() > 0 {
                return Err(Error::Lost {
                    at: at.to_string(),
                    what: "empty",
                    why: "the store holds objects".into(),
                });
            }
            let id = recorded.unwrap_or_else(new_id);
            index.set_meta("index_id", &id)?;
            write_id(home, &id)?;
            Ok(index)
        }
    }
}

/// The paths of a SQLite database and its side files.
pub fn with_side_files(db: &Path) -> [PathBuf; 3] {
    let name = db.as_os_str().to_string_lossy().to_string();
    [
        db.to_path_buf(),
        PathBuf::from(format!("{name}-wal")),
        PathBuf::from(format!("{name}-shm")),
    ]
}
