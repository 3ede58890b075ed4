//! Benchmarks that measure ktrack against a reference in the same run and report the ratio
//! (never absolute targets in tests): `ktrack bench ingest`, …

pub mod calibration;
pub mod compare;
pub mod findings;
pub mod ingest;
pub mod loader;
pub mod skip;
pub mod ssl;
pub mod train;

/// Runs the sweep `spec` (a file under `root`) in the home `root/home` (created when new),
/// through `ktrack run`'s code path, `jobs` runs at once; a failed run is an error, and so is
/// an interrupt (Ctrl-C sets `interrupt`: the running runs stop at their next checkpoint).
pub fn run_study(
    root: &std::path::Path,
    spec: &str,
    jobs: usize,
    interrupt: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<std::sync::Arc<crate::context::Ktrack>> {
    let k = std::sync::Arc::new(crate::context::Ktrack::open(&root.join("home"))?);
    let opts = crate::runner::RunOptions {
        spec: root.join(spec),
        plan: crate::runner::plan::PlanOptions::default(),
        jobs,
        dry_run: false,
        stale_after: std::time::Duration::from_secs(120),
        retry_failed: true,
    };
    let report = crate::runner::run_sweep(&k, &opts, &crate::progress::Quiet, interrupt)?;
    if let Some((id, label, err)) = report.failed.first() {
        anyhow::bail!("run {id} ({label}) failed: {err}");
    }
    if report.interrupted {
        anyhow::bail!(
            "interrupted: {} of the study's runs finished in this call",
            report.executed.len()
        );
    }
    Ok(k)
}

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
