//! Benchmarks that measure ktrack against a reference in the same run and report the ratio
//! (never absolute targets in tests): `ktrack bench ingest`, …

pub mod compare;
pub mod ingest;
pub mod skip;
pub mod ssl;
pub mod train;

/// The index backends a benchmark measures side by side: SQLite in its scratch home always,
/// and PostgreSQL (a scratch schema of the database `postgres`, dropped afterwards) when one is
/// given.
pub fn backends(home: &std::path::Path, postgres: Option<&str>) -> Vec<crate::index::Location> {
    let mut out = vec![crate::index::Location::Sqlite(
        home.join(crate::index::home::DB),
    )];
    if let Some(url) = postgres {
        out.push(
            crate::index::Location::postgres(url)
                .with_schema(&format!("ktrack_bench_{}", std::process::id())),
        );
    }
    out
}

/// The backend's name in a report.
pub fn backend_name(at: &crate::index::Location) -> &'static str {
    if at.is_postgres() {
        "PostgreSQL"
    } else {
        "SQLite"
    }
}

/// Drops a scratch PostgreSQL schema when dropped (a no-op on SQLite).
pub struct Scratch(pub crate::index::Location);

impl Scratch {
    /// A fresh scratch index location (an old schema of the same name is dropped first).
    pub fn new(at: crate::index::Location) -> crate::index::Result<Scratch> {
        if let crate::index::Location::Postgres { schema, .. } = &at {
            crate::index::Index::drop_schema(&at, schema)?;
        }
        Ok(Scratch(at))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let crate::index::Location::Postgres { schema, .. } = &self.0 {
            let _ = crate::index::Index::drop_schema(&self.0, schema);
        }
    }
}
