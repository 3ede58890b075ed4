//! The open ktrack home: store, index and clock, passed to every operation.
//!
//! `$KTRACK_HOME` (default `./.ktrack`) holds `objects/`, `tmp/`, `ktrack.db` and `runs/`; it
//! is created mode 0700 because the store may hold patient data.

use std::path::{Path, PathBuf};

use crate::index::{self, Index};
use crate::store::{self, Store};

/// Where time comes from; tests pin it.
#[derive(Clone, Debug)]
pub enum Clock {
    System,
    Fixed(String),
}

impl Clock {
    /// The current time as RFC 3339 UTC, to the second.
    #[allow(clippy::disallowed_methods)] // the one place the system clock is read for records
    pub fn now(&self) -> String {
        match self {
            Clock::System => chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            Clock::Fixed(t) => t.clone(),
        }
    }

    /// The current time as a `SystemTime` (a fixed clock that does not parse reads as the
    /// epoch).
    pub fn system_time(&self) -> std::time::SystemTime {
        let secs = match self {
            Clock::System => wall_ms().div_euclid(1000),
            Clock::Fixed(t) => chrono::DateTime::parse_from_rfc3339(t).map_or(0, |d| d.timestamp()),
        };
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64)
    }
}

/// Milliseconds since the epoch by the machine's clock, whatever [`Clock`] says: heartbeats,
/// claim ages and unique scratch names need real time even when a test pins the recorded time.
/// Nothing written into a record comes from here.
#[allow(clippy::disallowed_methods)]
pub fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The machine's time as `YYYYMMDDTHHMMSS` (UTC), for names of files kept aside.
pub fn wall_stamp() -> String {
    chrono::DateTime::from_timestamp_millis(wall_ms())
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%S")
        .to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
}

/// An open ktrack home.
pub struct Ktrack {
    pub home: PathBuf,
    pub store: Store,
    pub index: Index,
    pub clock: Clock,
    /// The preprocessed-image cache (`pixel_cache` in `config.toml`, default `cache/pixels`).
    pub pixel_cache: crate::train::cache::PixelCache,
    /// Linear probes' frozen features (`cache/features`).
    pub feature_cache: crate::train::cache::FeatureCache,
}

/// The default preprocessed-image cache, relative to the home.
pub const PIXEL_CACHE: &str = "cache/pixels";
/// The frozen-feature cache, relative to the home.
pub const FEATURE_CACHE: &str = "cache/features";

impl Ktrack {
    /// Opens the home, creating the store and index if they do not exist yet; the index is
    /// where the home's `config.toml` says (SQLite in the home by default).
    pub fn open(home: &Path) -> Result<Ktrack, Error> {
        Ktrack::open_with(home, None)
    }

    /// Opens the home with its index in the PostgreSQL database `database` when one is given
    /// (`--database`, `KTRACK_DATABASE_URL`), else where [`Ktrack::open`] looks.
    pub fn open_with(home: &Path, database: Option<&str>) -> Result<Ktrack, Error> {
        let absolute = std::path::absolute(home).map_err(store::Error::io("resolve", home))?;
        let at = index::home::location(&absolute, database)?;
        Ktrack::open_at(&absolute, &at)
    }

    /// Opens the home with its index at `at`.
    pub fn open_at(home: &Path, at: &index::Location) -> Result<Ktrack, Error> {
        // Absolute, so that links into the store and paths handed to other processes (cluster
        // jobs) do not depend on the working directory.
        let home = &std::path::absolute(home).map_err(store::Error::io("resolve", home))?;
        index::home::refuse_sqlite_on_a_network_filesystem(home, at)?;
        let store = Store::open(home)?;
        store::create_private_dir(&home.join("runs"))?;
        let index = index::home::open(home, at, &|| usize::from(store.has_any()))?;
        let pixel_cache = crate::train::cache::PixelCache::at(
            home.join(
                index::home::read_config(home)?
                    .pixel_cache
                    .unwrap_or_else(|| PIXEL_CACHE.into()),
            ),
        );
        Ok(Ktrack {
            home: home.to_path_buf(),
            store,
            index,
            clock: Clock::System,
            pixel_cache,
            feature_cache: crate::train::cache::FeatureCache::at(home.join(FEATURE_CACHE)),
        })
    }

    pub fn with_clock(mut self, clock: Clock) -> Ktrack {
        self.clock = clock;
        self
    }

    /// The store's images with the home's pixel cache, for training.
    pub fn images(&self) -> std::sync::Arc<dyn crate::train::data::ImageSource> {
        std::sync::Arc::new(crate::runner::exec::StoreImages {
            store: self.store.clone(),
            cache: Some(self.pixel_cache.clone()),
            features: Some(self.feature_cache.clone()),
        })
    }

    /// Scratch directory of a running run.
    pub fn run_dir(&self, run: &crate::id::Hash) -> PathBuf {
        self.home.join("runs").join(run.hex())
    }
}
