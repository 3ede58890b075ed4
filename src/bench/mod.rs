//! Benchmarks that measure ktrack against a reference in the same run and report the ratio
//! (never absolute targets in tests): `ktrack bench ingest`, …

pub mod compare;
pub mod ingest;
pub mod loader;
pub mod skip;
pub mod ssl;
pub mod train;

/// The indexes a benchmark measures side by side: SQLite in its scratch home (`None`) always,
/// and a scratch schema of the PostgreSQL database `postgres`, dropped afterwards, when one is
/// given.
pub fn backends(postgres: Option<&str>) -> Vec<Option<crate::index::Location>> {
    let mut out = vec![None];
    if let Some(url) = postgres {
        out.push(Some(
            crate::index::Location::postgres(url)
                .with_schema(&format!("ktrack_bench_{}", std::process::id())),
        ));
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

/// A benchmark's scratch index: `ktrack.db` in its home, or a PostgreSQL schema that is
/// dropped before use and when this is dropped.
pub struct Scratch(pub crate::index::Location);

impl Scratch {
    pub fn new(
        home: &std::path::Path,
        at: Option<crate::index::Location>,
    ) -> crate::index::Result<Scratch> {
        let at =
            at.unwrap_or_else(|| crate::index::Location::Sqlite(home.join(crate::index::home::DB)));
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
