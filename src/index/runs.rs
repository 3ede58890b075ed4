//! Runs in the index: planned rows, atomic claims with heartbeats, outcomes, lineage, sweeps.
//!
//! A claim is one conditional UPDATE: it succeeds for a planned or failed run, or a running
//! run whose heartbeat is older than the stale limit (its claimer died). SQLite serialises
//! writers, so two processes can never both claim a run.

use std::collections::HashMap;

use sqlx::{Sqlite, SqliteConnection};

use super::{Result, parse_hash};
use crate::id::Hash;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Planned,
    Running,
    Done,
    Failed,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Planned => "planned",
            Status::Running => "running",
            Status::Done => "done",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Status {
        match s {
            "running" => Status::Running,
            "done" => Status::Done,
            "failed" => Status::Failed,
            _ => Status::Planned,
        }
    }
}

/// Grid coordinates of a downstream run (as its record keeps them).
pub use crate::record::RunAxes as Axes;

/// A run to plan.
#[derive(Clone, Debug)]
pub struct NewRun {
    pub id: Hash,
    pub kind: &'static str,
    pub spec: String,
    pub label: String,
    pub deps: Vec<Hash>,
    pub inputs: Vec<(String, String)>,
    pub axes: Option<Axes>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RunRow {
    pub id: Hash,
    pub kind: String,
    pub spec: String,
    pub label: String,
    pub status: Status,
    pub claimed_by: Option<String>,
    pub heartbeat_ms: Option<i64>,
    pub attempts: i64,
    pub error: Option<String>,
    pub record: Option<Hash>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

type RawRun = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    i64,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
);

const COLUMNS: &str = "id, kind, spec, label, status, claimed_by, heartbeat_ms, attempts, error, record, created_at, started_at, finished_at";

fn from_raw(r: RawRun) -> Result<RunRow> {
    Ok(RunRow {
        id: parse_hash(&r.0)?,
        kind: r.1,
        spec: r.2,
        label: r.3,
        status: Status::parse(&r.4),
        claimed_by: r.5,
        heartbeat_ms: r.6,
        attempts: r.7,
        error: r.8,
        record: r.9.as_deref().map(parse_hash).transpose()?,
        created_at: r.10,
        started_at: r.11,
        finished_at: r.12,
    })
}

/// Inserts runs that are not in the index yet (with their deps, inputs and axes).
pub async fn insert_planned(
    conn: &mut SqliteConnection,
    runs: &[NewRun],
    now: &str,
) -> Result<usize> {
    let mut added = 0;
    for chunk in runs.chunks(100) {
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT OR IGNORE INTO runs (id, kind, spec, label, status, created_at) ",
        );
        qb.push_values(chunk, |mut b, r| {
            b.push_bind(r.id.hex())
                .push_bind(r.kind)
                .push_bind(&r.spec)
                .push_bind(&r.label)
                .push_bind("planned")
                .push_bind(now);
        });
        added += qb.build().execute(&mut *conn).await?.rows_affected() as usize;
    }
    for r in runs {
        for d in &r.deps {
            sqlx::query("INSERT OR IGNORE INTO run_deps (run, needs) VALUES (?1, ?2)")
                .bind(r.id.hex())
                .bind(d.hex())
                .execute(&mut *conn)
                .await?;
        }
        for (role, hash) in &r.inputs {
            sqlx::query("INSERT OR IGNORE INTO run_inputs (run, role, hash) VALUES (?1, ?2, ?3)")
                .bind(r.id.hex())
                .bind(role)
                .bind(hash)
                .execute(&mut *conn)
                .await?;
        }
        if let Some(a) = &r.axes {
            sqlx::query(
                "INSERT OR IGNORE INTO run_axes (run, init, task, protocol, fraction, seed, arch)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .bind(r.id.hex())
            .bind(&a.init)
            .bind(&a.task)
            .bind(&a.protocol)
            .bind(a.fraction)
            .bind(a.seed)
            .bind(&a.arch)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(added)
}

/// Status of every known run among `ids`.
pub async fn statuses(
    conn: &mut SqliteConnection,
    ids: &[Hash],
) -> Result<HashMap<Hash, (Status, Option<i64>)>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(500) {
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new(
            "SELECT id, status, heartbeat_ms FROM runs WHERE id IN (",
        );
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(id.hex());
        }
        qb.push(")");
        let rows: Vec<(String, String, Option<i64>)> =
            qb.build_query_as().fetch_all(&mut *conn).await?;
        for (id, status, hb) in rows {
            out.insert(parse_hash(&id)?, (Status::parse(&status), hb));
        }
    }
    Ok(out)
}

/// Claims a run for `worker`. Returns false if someone else holds it or it is done.
pub async fn claim(
    conn: &mut SqliteConnection,
    id: &Hash,
    worker: &str,
    now_ms: i64,
    stale_ms: i64,
    now: &str,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE runs SET status = 'running', claimed_by = ?2, heartbeat_ms = ?3,
                attempts = attempts + 1, error = NULL, started_at = ?5
         WHERE id = ?1 AND (status IN ('planned', 'failed')
                            OR (status = 'running' AND (heartbeat_ms IS NULL OR heartbeat_ms < ?3 - ?4)))",
    )
    .bind(id.hex())
    .bind(worker)
    .bind(now_ms)
    .bind(stale_ms)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes over a run from `holder`, a process known to be dead (call inside a write
/// transaction, after checking). Returns false if the claim changed hands meanwhile.
pub async fn claim_from(
    conn: &mut SqliteConnection,
    id: &Hash,
    worker: &str,
    holder: &str,
    now_ms: i64,
    now: &str,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE runs SET status = 'running', claimed_by = ?2, heartbeat_ms = ?3,
                attempts = attempts + 1, error = NULL, started_at = ?5
         WHERE id = ?1 AND status = 'running' AND claimed_by = ?4",
    )
    .bind(id.hex())
    .bind(worker)
    .bind(now_ms)
    .bind(holder)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Refreshes the heartbeat of every run `worker` holds.
pub async fn heartbeat(conn: &mut SqliteConnection, worker: &str, now_ms: i64) -> Result<()> {
    sqlx::query("UPDATE runs SET heartbeat_ms = ?2 WHERE claimed_by = ?1 AND status = 'running'")
        .bind(worker)
        .bind(now_ms)
        .execute(conn)
        .await?;
    Ok(())
}

/// Gives a run back (interrupted: it resumes from its checkpoint on the next claim).
pub async fn release(conn: &mut SqliteConnection, id: &Hash, worker: &str) -> Result<()> {
    sqlx::query("UPDATE runs SET status = 'planned', claimed_by = NULL, heartbeat_ms = NULL WHERE id = ?1 AND claimed_by = ?2 AND status = 'running'")
        .bind(id.hex())
        .bind(worker)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn fail(
    conn: &mut SqliteConnection,
    id: &Hash,
    worker: &str,
    error: &str,
    now: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE runs SET status = 'failed', error = ?3, claimed_by = NULL, heartbeat_ms = NULL, finished_at = ?4
         WHERE id = ?1 AND claimed_by = ?2",
    )
    .bind(id.hex())
    .bind(worker)
    .bind(error)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// What a finished run produced.
pub struct Finished<'a> {
    pub record: Hash,
    pub outputs: &'a [(String, Hash)],
    pub metrics: &'a [(String, String, f64)],
    pub started_at: &'a str,
    pub finished_at: &'a str,
    /// Allowed leakage: patients of the evaluated sets in the init's pretraining data.
    pub leaked_patients: Option<i64>,
}

/// Marks a run done with its record, outputs and metrics (call inside a transaction).
pub async fn finish(conn: &mut SqliteConnection, id: &Hash, f: &Finished<'_>) -> Result<()> {
    sqlx::query(
        "UPDATE runs SET status = 'done', record = ?2, claimed_by = NULL, heartbeat_ms = NULL,
                error = NULL, started_at = ?3, finished_at = ?4, leaked_patients = ?5 WHERE id = ?1",
    )
    .bind(id.hex())
    .bind(f.record.hex())
    .bind(f.started_at)
    .bind(f.finished_at)
    .bind(f.leaked_patients)
    .execute(&mut *conn)
    .await?;
    for (role, hash) in f.outputs {
        sqlx::query("INSERT OR REPLACE INTO run_outputs (run, role, hash) VALUES (?1, ?2, ?3)")
            .bind(id.hex())
            .bind(role)
            .bind(hash.hex())
            .execute(&mut *conn)
            .await?;
    }
    for (set, metric, value) in f.metrics {
        sqlx::query("INSERT OR REPLACE INTO run_metrics (run, eval_set, metric, value) VALUES (?1, ?2, ?3, ?4)")
            .bind(id.hex())
            .bind(set)
            .bind(metric)
            .bind(value.is_finite().then_some(*value))
            .execute(&mut *conn)
            .await?;
    }
    index_points(conn, Some(id)).await
}

/// (Re)fills `run_points` from axes and metrics, for one run or all.
pub async fn index_points(conn: &mut SqliteConnection, run: Option<&Hash>) -> Result<()> {
    let hex = run.map(|r| r.hex()).unwrap_or_default();
    sqlx::query(
        "INSERT OR REPLACE INTO run_points (task, protocol, fraction, eval_set, metric, init, seed, run, value)
         SELECT a.task, a.protocol, a.fraction, m.eval_set, m.metric, a.init, a.seed, a.run, m.value
         FROM run_axes a JOIN run_metrics m ON m.run = a.run
         WHERE ?1 = '' OR a.run = ?1",
    )
    .bind(hex)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut SqliteConnection, id: &Hash) -> Result<Option<RunRow>> {
    let sql = format!("SELECT {COLUMNS} FROM runs WHERE id = ?1");
    let row: Option<RawRun> = sqlx::query_as(&sql)
        .bind(id.hex())
        .fetch_optional(conn)
        .await?;
    row.map(from_raw).transpose()
}

/// Runs of a sweep (or all), by creation then id.
pub async fn list(conn: &mut SqliteConnection, sweep: Option<&str>) -> Result<Vec<RunRow>> {
    let rows: Vec<RawRun> = match sweep {
        Some(s) => {
            let sql = format!(
                "SELECT {} FROM runs r JOIN sweep_runs s ON s.run = r.id WHERE s.sweep = ?1 ORDER BY r.kind DESC, r.label, r.id",
                COLUMNS
                    .split(", ")
                    .map(|c| format!("r.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            sqlx::query_as(&sql).bind(s).fetch_all(conn).await?
        }
        None => {
            let sql = format!("SELECT {COLUMNS} FROM runs ORDER BY kind DESC, label, id");
            sqlx::query_as(&sql).fetch_all(conn).await?
        }
    };
    rows.into_iter().map(from_raw).collect()
}

/// The runs a run needs, with their status.
pub async fn deps(conn: &mut SqliteConnection, id: &Hash) -> Result<Vec<(Hash, Status)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT d.needs, r.status FROM run_deps d JOIN runs r ON r.id = d.needs WHERE d.run = ?1 ORDER BY d.needs",
    )
    .bind(id.hex())
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|(h, s)| Ok((parse_hash(&h)?, Status::parse(&s))))
        .collect()
}

pub async fn outputs(conn: &mut SqliteConnection, id: &Hash) -> Result<Vec<(String, Hash)>> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT role, hash FROM run_outputs WHERE run = ?1 ORDER BY role")
            .bind(id.hex())
            .fetch_all(conn)
            .await?;
    rows.into_iter()
        .map(|(r, h)| Ok((r, parse_hash(&h)?)))
        .collect()
}

pub async fn inputs(conn: &mut SqliteConnection, id: &Hash) -> Result<Vec<(String, String)>> {
    Ok(
        sqlx::query_as("SELECT role, hash FROM run_inputs WHERE run = ?1 ORDER BY role")
            .bind(id.hex())
            .fetch_all(conn)
            .await?,
    )
}

pub async fn metrics(
    conn: &mut SqliteConnection,
    id: &Hash,
) -> Result<Vec<(String, String, Option<f64>)>> {
    Ok(sqlx::query_as(
        "SELECT eval_set, metric, value FROM run_metrics WHERE run = ?1 ORDER BY eval_set, metric",
    )
    .bind(id.hex())
    .fetch_all(conn)
    .await?)
}

/// A run's label and the object it holds for `role`, if the run exists.
pub async fn label_and_output(
    conn: &mut SqliteConnection,
    id: &Hash,
    role: &str,
) -> Result<Option<(String, Option<Hash>)>> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT r.label, o.hash FROM runs r LEFT JOIN run_outputs o ON o.run = r.id AND o.role = ?2 WHERE r.id = ?1",
    )
    .bind(id.hex())
    .bind(role)
    .fetch_optional(conn)
    .await?;
    row.map(|(label, h)| Ok((label, h.map(|h| parse_hash(&h)).transpose()?)))
        .transpose()
}

/// Records a sweep and its runs.
pub async fn upsert_sweep(
    conn: &mut SqliteConnection,
    name: &str,
    path: &str,
    spec_hash: &Hash,
    runs: &[Hash],
    now: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sweeps (name, spec_path, spec_hash, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET spec_path = excluded.spec_path, spec_hash = excluded.spec_hash, updated_at = excluded.updated_at",
    )
    .bind(name)
    .bind(path)
    .bind(spec_hash.hex())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    for chunk in runs.chunks(400) {
        let mut qb =
            sqlx::QueryBuilder::<Sqlite>::new("INSERT OR IGNORE INTO sweep_runs (sweep, run) ");
        qb.push_values(chunk, |mut b, r| {
            b.push_bind(name).push_bind(r.hex());
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

pub async fn sweeps(conn: &mut SqliteConnection) -> Result<Vec<(String, String, String)>> {
    Ok(
        sqlx::query_as("SELECT name, spec_path, updated_at FROM sweeps ORDER BY name")
            .fetch_all(conn)
            .await?,
    )
}

/// A cached file hash, if the file's size, mtime and inode are unchanged.
pub async fn cached_hash(
    conn: &mut SqliteConnection,
    path: &str,
    size: i64,
    mtime_ns: i64,
    inode: i64,
) -> Result<Option<Hash>> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT hash FROM file_stats WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3 AND inode = ?4",
    )
    .bind(path)
    .bind(size)
    .bind(mtime_ns)
    .bind(inode)
    .fetch_optional(conn)
    .await?;
    row.map(|(h,)| parse_hash(&h)).transpose()
}

/// Remembers file hashes (path, size, mtime_ns, inode, hash).
pub async fn remember_files(
    conn: &mut SqliteConnection,
    rows: &[(String, i64, i64, i64, Hash)],
) -> Result<()> {
    for chunk in rows.chunks(150) {
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT OR REPLACE INTO file_stats (path, size, mtime_ns, inode, hash) ",
        );
        qb.push_values(chunk, |mut b, (p, s, m, i, h)| {
            b.push_bind(p)
                .push_bind(s)
                .push_bind(m)
                .push_bind(i)
                .push_bind(h.hex());
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}
