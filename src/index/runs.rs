//! Runs in the index: planned rows, atomic claims with heartbeats, outcomes, lineage, sweeps.
//!
//! A claim is one conditional UPDATE: it succeeds for a planned or failed run, or a running
//! run whose heartbeat is older than the stale limit (its claimer died). SQLite serialises
//! writers, and PostgreSQL re-checks the condition on the row it locked, so two processes can
//! never both claim a run.

use std::collections::HashMap;

use sqlx::{FromRow, Row};

use super::{Result, Session};
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

    pub fn from_name(s: &str) -> Option<Status> {
        [
            Status::Planned,
            Status::Running,
            Status::Done,
            Status::Failed,
        ]
        .into_iter()
        .find(|st| st.name() == s)
    }
}

/// Grid coordinates of a downstream run (as its record keeps them).
pub use crate::record::RunAxes as Axes;

from_rows!(Axes, |row| {
    Ok(Axes {
        init: row.try_get("init")?,
        task: row.try_get("task")?,
        protocol: row.try_get("protocol")?,
        fraction: row.try_get("fraction")?,
        seed: row.try_get("seed")?,
        arch: row.try_get("arch")?,
    })
});

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

/// A row of `runs`.
#[derive(Clone, Debug, serde::Serialize, FromRow)]
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

/// A run's status and last heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromRow)]
pub struct Claim {
    pub status: Status,
    pub heartbeat_ms: Option<i64>,
}

/// One metric of a run (NULL for a value that was not finite).
#[derive(Clone, Debug, PartialEq, FromRow)]
pub struct MetricRow {
    pub eval_set: String,
    pub metric: String,
    pub value: Option<f64>,
}

const COLUMNS: &str = "id, kind, spec, label, status, claimed_by, heartbeat_ms, attempts, error, record, created_at, started_at, finished_at";

/// A claim: the holder and the attempt it claimed. Only the current holder's fence can mark a
/// run done, failed or released; a worker whose claim went stale and was taken over keeps an
/// old attempt number and is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub worker: String,
    pub attempt: i64,
}

/// Which runs a claim may take.
#[derive(Clone, Copy)]
enum Guard<'a> {
    /// Planned, failed, or running with a heartbeat older than `stale_ms`.
    Free { stale_ms: i64 },
    /// Running and held by `holder` (known to be dead).
    From { holder: &'a str },
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

/// The `runs` table and what hangs off it: deps, inputs, outputs, metrics, axes, claims.
pub struct Runs<'s, 'i>(pub(super) &'s mut Session<'i>);

impl Runs<'_, '_> {
    /// Inserts runs that are not in the index yet (with their deps, inputs and axes).
    pub fn insert_planned(&mut self, runs: &[NewRun], now: &str) -> Result<usize> {
        on!(self.0, |conn, Db| {
            let mut added = 0;
            for chunk in runs.chunks(100) {
                let mut qb = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO runs (id, kind, spec, label, status, created_at) ",
                );
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(r.id)
                        .push_bind(r.kind)
                        .push_bind(&r.spec)
                        .push_bind(&r.label)
                        .push_bind(Status::Planned)
                        .push_bind(now);
                });
                qb.push(" ON CONFLICT DO NOTHING");
                added += qb.build().execute(&mut *conn).await?.rows_affected() as usize;
            }
            for r in runs {
                for d in &r.deps {
                    sqlx::query(
                        "INSERT INTO run_deps (run, needs) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    )
                    .bind(r.id)
                    .bind(d)
                    .execute(&mut *conn)
                    .await?;
                }
                for (role, hash) in &r.inputs {
                    sqlx::query(
                        "INSERT INTO run_inputs (run, role, hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    )
                    .bind(r.id)
                    .bind(role)
                    .bind(hash)
                    .execute(&mut *conn)
                    .await?;
                }
                if let Some(a) = &r.axes {
                    sqlx::query(
                        "INSERT INTO run_axes (run, init, task, protocol, fraction, seed, arch)
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    )
                    .bind(r.id)
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
        })
    }

    /// Status and heartbeat of every known run among `ids`.
    pub fn statuses(&mut self, ids: &[Hash]) -> Result<HashMap<Hash, Claim>> {
        on!(self.0, |conn, Db| {
            let mut out = HashMap::new();
            for chunk in ids.chunks(500) {
                let mut qb = sqlx::QueryBuilder::<Db>::new(
                    "SELECT id, status, heartbeat_ms FROM runs WHERE id IN (",
                );
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(id);
                }
                qb.push(")");
                let rows = qb.build().fetch_all(&mut *conn).await?;
                for row in rows {
                    out.insert(row.try_get("id")?, Claim::from_row(&row)?);
                }
            }
            Ok(out)
        })
    }

    /// Claims a run for `worker`: its fence, or `None` if someone else holds it or it is done.
    /// A running run can be claimed once its heartbeat is older than `stale_ms`.
    pub fn claim(
        &mut self,
        id: &Hash,
        worker: &str,
        now_ms: i64,
        stale_ms: i64,
        now: &str,
    ) -> Result<Option<Fence>> {
        self.take(id, worker, now_ms, now, Guard::Free { stale_ms })
    }

    /// Takes over a run from `holder`, a process known to be dead (call inside a write
    /// transaction, after checking). `None` if the claim changed hands meanwhile.
    pub fn claim_from(
        &mut self,
        id: &Hash,
        worker: &str,
        holder: &str,
        now_ms: i64,
        now: &str,
    ) -> Result<Option<Fence>> {
        self.take(id, worker, now_ms, now, Guard::From { holder })
    }

    /// The one conditional UPDATE every claim is: the new holder, a fresh heartbeat and the
    /// next attempt number, which is the claim's fence.
    fn take(
        &mut self,
        id: &Hash,
        worker: &str,
        now_ms: i64,
        now: &str,
        guard: Guard<'_>,
    ) -> Result<Option<Fence>> {
        let condition = match guard {
            Guard::Free { .. } => {
                "(status IN ('planned', 'failed')
                  OR (status = 'running' AND (heartbeat_ms IS NULL OR heartbeat_ms < $3 - $5)))"
            }
            Guard::From { .. } => "status = 'running' AND claimed_by = $5",
        };
        let sql = format!(
            "UPDATE runs SET status = 'running', claimed_by = $2, heartbeat_ms = $3,
                    attempts = attempts + 1, error = NULL, started_at = $4
             WHERE id = $1 AND {condition}
             RETURNING attempts"
        );
        let attempt: Option<i64> = on!(self.0, |conn, Db| {
            let q = sqlx::query_scalar(&sql)
                .bind(id)
                .bind(worker)
                .bind(now_ms)
                .bind(now);
            let q = match guard {
                Guard::Free { stale_ms } => q.bind(stale_ms),
                Guard::From { holder } => q.bind(holder),
            };
            Ok(q.fetch_optional(conn).await?)
        })?;
        Ok(attempt.map(|attempt| Fence {
            worker: worker.to_string(),
            attempt,
        }))
    }

    /// The index's clock in ms since the epoch: heartbeats are written and aged by it, so
    /// processes on hosts whose clocks disagree still judge staleness alike.
    pub fn clock_ms(&mut self) -> Result<i64> {
        const CLOCK: [&str; 2] = [
            "SELECT CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)",
            "SELECT CAST(ROUND(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT)",
        ];
        let clock = CLOCK[self.0.dialect() as usize];
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_scalar(clock).fetch_one(conn).await?)
        })
    }

    /// Refreshes one claim's heartbeat; false when the claim is no longer the holder's (taken
    /// over after its heartbeat went stale, or ended).
    pub fn beat(&mut self, id: &Hash, fence: &Fence, now_ms: i64) -> Result<bool> {
        on!(self.0, |conn, Db| {
            let done = sqlx::query(
                "UPDATE runs SET heartbeat_ms = $4
                 WHERE id = $1 AND claimed_by = $2 AND attempts = $3 AND status = 'running'",
            )
            .bind(id)
            .bind(&fence.worker)
            .bind(fence.attempt)
            .bind(now_ms)
            .execute(conn)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Gives a run back (interrupted: it resumes from its checkpoint on the next claim). A
    /// claim that is no longer the holder's is left alone.
    pub fn release(&mut self, id: &Hash, fence: &Fence) -> Result<()> {
        on!(self.0, |conn, Db| {
            sqlx::query(
                "UPDATE runs SET status = 'planned', claimed_by = NULL, heartbeat_ms = NULL
                 WHERE id = $1 AND claimed_by = $2 AND attempts = $3 AND status = 'running'",
            )
            .bind(id)
            .bind(&fence.worker)
            .bind(fence.attempt)
            .execute(conn)
            .await?;
            Ok(())
        })
    }

    /// Marks the holder's run failed (a claim that is no longer its own is left alone).
    pub fn fail(&mut self, id: &Hash, fence: &Fence, error: &str, now: &str) -> Result<()> {
        on!(self.0, |conn, Db| {
            sqlx::query(
                "UPDATE runs SET status = 'failed', error = $4, claimed_by = NULL, heartbeat_ms = NULL, finished_at = $5
                 WHERE id = $1 AND claimed_by = $2 AND attempts = $3 AND status = 'running'",
            )
            .bind(id)
            .bind(&fence.worker)
            .bind(fence.attempt)
            .bind(error)
            .bind(now)
            .execute(conn)
            .await?;
            Ok(())
        })
    }

    /// Marks the holder's run done with its record, outputs and metrics (call inside a write
    /// transaction). A claim taken over meanwhile is [`Error::ClaimLost`](super::Error): the
    /// caller's transaction then records nothing.
    pub fn finish(&mut self, id: &Hash, fence: &Fence, f: &Finished<'_>) -> Result<()> {
        let held = on!(self.0, |conn, Db| {
            let done = sqlx::query(
                "UPDATE runs SET status = 'done', record = $2, claimed_by = NULL, heartbeat_ms = NULL,
                        error = NULL, started_at = $3, finished_at = $4, leaked_patients = $5
                 WHERE id = $1 AND claimed_by = $6 AND attempts = $7 AND status = 'running'",
            )
            .bind(id)
            .bind(f.record)
            .bind(f.started_at)
            .bind(f.finished_at)
            .bind(f.leaked_patients)
            .bind(&fence.worker)
            .bind(fence.attempt)
            .execute(conn)
            .await?;
            Ok(done.rows_affected() == 1)
        })?;
        if !held {
            return Err(self.lost(id, fence)?);
        }
        self.record_results(id, f)
    }

    /// The error for a claim that is no longer `fence`'s, naming who holds the run now.
    pub fn lost(&mut self, id: &Hash, fence: &Fence) -> Result<super::Error> {
        let now = self.get(id)?;
        Ok(super::Error::ClaimLost {
            run: *id,
            worker: fence.worker.clone(),
            holder: now.as_ref().and_then(|r| r.claimed_by.clone()),
            status: now.map_or("gone", |r| r.status.name()),
        })
    }

    /// Records a run as done from its record, outside any claim (a rebuilt index, an imported
    /// bundle).
    pub fn record_done(&mut self, id: &Hash, f: &Finished<'_>) -> Result<()> {
        on!(self.0, |conn, Db| {
            sqlx::query(
                "UPDATE runs SET status = 'done', record = $2, claimed_by = NULL, heartbeat_ms = NULL,
                        error = NULL, started_at = $3, finished_at = $4, leaked_patients = $5 WHERE id = $1",
            )
            .bind(id)
            .bind(f.record)
            .bind(f.started_at)
            .bind(f.finished_at)
            .bind(f.leaked_patients)
            .execute(conn)
            .await?;
            Ok(())
        })?;
        self.record_results(id, f)
    }

    /// A done run's outputs, metrics and points.
    fn record_results(&mut self, id: &Hash, f: &Finished<'_>) -> Result<()> {
        on!(self.0, |conn, Db| {
            for (role, hash) in f.outputs {
                sqlx::query(
                    "INSERT INTO run_outputs (run, role, hash) VALUES ($1, $2, $3)
                     ON CONFLICT (run, role) DO UPDATE SET hash = excluded.hash",
                )
                .bind(id)
                .bind(role)
                .bind(hash)
                .execute(&mut *conn)
                .await?;
            }
            for (set, metric, value) in f.metrics {
                sqlx::query(
                    "INSERT INTO run_metrics (run, eval_set, metric, value) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (run, eval_set, metric) DO UPDATE SET value = excluded.value",
                )
                .bind(id)
                .bind(set)
                .bind(metric)
                .bind(value.is_finite().then_some(*value))
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        })?;
        self.index_points(Some(id))
    }

    /// Sets how many times a run was claimed (a rebuilt index keeps its record's count).
    pub fn set_attempts(&mut self, id: &Hash, attempts: i64) -> Result<()> {
        on!(self.0, |conn, Db| {
            sqlx::query("UPDATE runs SET attempts = $2 WHERE id = $1")
                .bind(id)
                .bind(attempts)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// (Re)fills `run_points` from axes and metrics, for one run or all.
    pub fn index_points(&mut self, run: Option<&Hash>) -> Result<()> {
        // One run's points through the key of `run_axes` (a finish must not scan every run);
        // all points in one pass.
        let which = if run.is_some() {
            "WHERE a.run = $1"
        } else {
            "WHERE true"
        };
        let sql = format!(
            "INSERT INTO run_points (task, protocol, fraction, eval_set, metric, init, seed, run, value)
             SELECT a.task, a.protocol, a.fraction, m.eval_set, m.metric, a.init, a.seed, a.run, m.value
             FROM run_axes a JOIN run_metrics m ON m.run = a.run
             {which}
             ON CONFLICT (task, protocol, fraction, eval_set, metric, init, seed, run)
             DO UPDATE SET value = excluded.value"
        );
        on!(self.0, |conn, Db| {
            let mut q = sqlx::query(&sql);
            if let Some(run) = run {
                q = q.bind(run);
            }
            q.execute(conn).await?;
            Ok(())
        })
    }

    pub fn get(&mut self, id: &Hash) -> Result<Option<RunRow>> {
        let sql = format!("SELECT {COLUMNS} FROM runs WHERE id = $1");
        on!(self.0, |conn, Db| Ok(sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(conn)
            .await?))
    }

    /// True when the index has a row for the run.
    pub fn exists(&mut self, id: &Hash) -> Result<bool> {
        on!(self.0, |conn, Db| {
            let one: Option<i32> = sqlx::query_scalar("SELECT 1 FROM runs WHERE id = $1")
                .bind(id)
                .fetch_optional(conn)
                .await?;
            Ok(one.is_some())
        })
    }

    /// Runs of a sweep (or all), by kind (pretraining first), label and id.
    pub fn list(&mut self, sweep: Option<&str>) -> Result<Vec<RunRow>> {
        on!(self.0, |conn, Db| {
            Ok(match sweep {
                Some(s) => {
                    let sql = format!(
                        "SELECT {} FROM runs r JOIN sweep_runs s ON s.run = r.id WHERE s.sweep = $1 ORDER BY r.kind DESC, r.label, r.id",
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
            })
        })
    }

    /// The runs a run needs, with their status.
    pub fn deps(&mut self, id: &Hash) -> Result<Vec<(Hash, Status)>> {
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_as(
                "SELECT d.needs, r.status FROM run_deps d JOIN runs r ON r.id = d.needs WHERE d.run = $1 ORDER BY d.needs",
            )
            .bind(id)
            .fetch_all(conn)
            .await?)
        })
    }

    /// (role, object) a run produced, by role.
    pub fn outputs(&mut self, id: &Hash) -> Result<Vec<(String, Hash)>> {
        on!(self.0, |conn, Db| {
            Ok(
                sqlx::query_as("SELECT role, hash FROM run_outputs WHERE run = $1 ORDER BY role")
                    .bind(id)
                    .fetch_all(conn)
                    .await?,
            )
        })
    }

    /// The object a run produced for `role`.
    pub fn output(&mut self, id: &Hash, role: &str) -> Result<Option<Hash>> {
        on!(self.0, |conn, Db| {
            Ok(
                sqlx::query_scalar("SELECT hash FROM run_outputs WHERE run = $1 AND role = $2")
                    .bind(id)
                    .bind(role)
                    .fetch_optional(conn)
                    .await?,
            )
        })
    }

    /// (role, hash or value) a run was planned with, by role.
    pub fn inputs(&mut self, id: &Hash) -> Result<Vec<(String, String)>> {
        on!(self.0, |conn, Db| {
            Ok(
                sqlx::query_as("SELECT role, hash FROM run_inputs WHERE run = $1 ORDER BY role")
                    .bind(id)
                    .fetch_all(conn)
                    .await?,
            )
        })
    }

    pub fn metrics(&mut self, id: &Hash) -> Result<Vec<MetricRow>> {
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_as(
                "SELECT eval_set, metric, value FROM run_metrics WHERE run = $1 ORDER BY eval_set, metric",
            )
            .bind(id)
            .fetch_all(conn)
            .await?)
        })
    }

    /// A downstream run's grid coordinates.
    pub fn axes(&mut self, id: &Hash) -> Result<Option<Axes>> {
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_as(
                "SELECT init, task, protocol, fraction, seed, arch FROM run_axes WHERE run = $1",
            )
            .bind(id)
            .fetch_optional(conn)
            .await?)
        })
    }

    /// A run's label and the object it holds for `role`, if the run exists.
    pub fn label_and_output(
        &mut self,
        id: &Hash,
        role: &str,
    ) -> Result<Option<(String, Option<Hash>)>> {
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_as(
                "SELECT r.label, o.hash FROM runs r LEFT JOIN run_outputs o ON o.run = r.id AND o.role = $2 WHERE r.id = $1",
            )
            .bind(id)
            .bind(role)
            .fetch_optional(conn)
            .await?)
        })
    }
}

/// A row of `sweeps`.
#[derive(Clone, Debug, serde::Serialize, FromRow)]
pub struct SweepRow {
    pub name: String,
    pub spec_path: String,
    pub updated_at: String,
    /// The sweep record (its runs and skipped inits), when known.
    pub record: Option<Hash>,
}

/// The `sweeps` table: a named spec and the runs it planned.
pub struct Sweeps<'s, 'i>(pub(super) &'s mut Session<'i>);

impl Sweeps<'_, '_> {
    /// Records a sweep, its runs and (when known) its record object.
    pub fn upsert(
        &mut self,
        name: &str,
        path: &str,
        spec_hash: &Hash,
        runs: &[Hash],
        record: Option<&Hash>,
        now: &str,
    ) -> Result<()> {
        on!(self.0, |conn, Db| {
            sqlx::query(
                "INSERT INTO sweeps (name, spec_path, spec_hash, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET spec_path = excluded.spec_path, spec_hash = excluded.spec_hash, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(path)
            .bind(spec_hash)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            if let Some(record) = record {
                sqlx::query("UPDATE sweeps SET record = $2 WHERE name = $1")
                    .bind(name)
                    .bind(record)
                    .execute(&mut *conn)
                    .await?;
            }
            for chunk in runs.chunks(400) {
                let mut qb = sqlx::QueryBuilder::<Db>::new("INSERT INTO sweep_runs (sweep, run) ");
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(name).push_bind(r);
                });
                qb.push(" ON CONFLICT DO NOTHING");
                qb.build().execute(&mut *conn).await?;
            }
            Ok(())
        })
    }

    pub fn list(&mut self) -> Result<Vec<SweepRow>> {
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_as(
                "SELECT name, spec_path, updated_at, record FROM sweeps ORDER BY name",
            )
            .fetch_all(conn)
            .await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Error, Index};

    fn planned(index: &Index) -> Hash {
        let id = Hash::of(b"run");
        let mut tx = index.write().unwrap();
        tx.runs()
            .insert_planned(
                &[NewRun {
                    id,
                    kind: "downstream",
                    spec: "{}".into(),
                    label: "a run".into(),
                    deps: vec![],
                    inputs: vec![],
                    axes: None,
                }],
                "t0",
            )
            .unwrap();
        tx.commit().unwrap();
        id
    }

    fn finished(record: Hash) -> Finished<'static> {
        Finished {
            record,
            outputs: &[],
            metrics: &[],
            started_at: "t1",
            finished_at: "t2",
            leaked_patients: None,
        }
    }

    #[test]
    fn the_index_clock_is_milliseconds_since_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        for (index, _schema) in crate::index::test_indexes(dir.path()) {
            let clock = index.read().unwrap().runs().clock_ms().unwrap();
            let here = crate::context::wall_ms();
            assert!((clock - here).abs() < 5_000, "index {clock} vs host {here}");
        }
    }

    #[test]
    fn only_the_current_holder_can_finish_fail_or_release() {
        let dir = tempfile::tempdir().unwrap();
        for (index, _schema) in crate::index::test_indexes(dir.path()) {
            holders_on(&index);
        }
    }

    fn holders_on(index: &Index) {
        let id = planned(index);
        let record = Hash::of(b"record");
        index
            .read()
            .unwrap()
            .objects()
            .insert(&record, 1, "record", "t")
            .unwrap();
        let mut c = index.read().unwrap();
        // A claims; its heartbeat goes stale (60 s), B takes the run over.
        let a = c
            .runs()
            .claim(&id, "A", 1_000, 15_000, "t")
            .unwrap()
            .unwrap();
        assert!(
            c.runs()
                .claim(&id, "B", 10_000, 15_000, "t")
                .unwrap()
                .is_none()
        );
        let b = c
            .runs()
            .claim(&id, "B", 61_000, 15_000, "t")
            .unwrap()
            .unwrap();
        assert_eq!((a.attempt, b.attempt), (1, 2));
        // A's release and fail leave B's claim alone; A's finish is refused.
        c.runs().release(&id, &a).unwrap();
        c.runs().fail(&id, &a, "late", "t").unwrap();
        let row = c.runs().get(&id).unwrap().unwrap();
        assert_eq!(
            (row.status, row.claimed_by.as_deref()),
            (Status::Running, Some("B"))
        );
        let err = c.runs().finish(&id, &a, &finished(record)).unwrap_err();
        assert!(
            matches!(&err, Error::ClaimLost { holder: Some(h), status: "running", .. } if h == "B"),
            "{err}"
        );
        // The same worker with an older attempt is refused too.
        let stale_b = Fence {
            worker: "B".into(),
            attempt: 1,
        };
        assert!(c.runs().finish(&id, &stale_b, &finished(record)).is_err());
        // A's heartbeat tells it that it lost the claim; B's goes through.
        assert!(!c.runs().beat(&id, &a, 70_000).unwrap());
        assert!(c.runs().beat(&id, &b, 70_000).unwrap());
        c.runs().finish(&id, &b, &finished(record)).unwrap();
        let row = c.runs().get(&id).unwrap().unwrap();
        assert_eq!((row.status, row.attempts), (Status::Done, 2));
        // Done once: the holder cannot finish it twice.
        assert!(matches!(
            c.runs().finish(&id, &b, &finished(record)),
            Err(Error::ClaimLost { status: "done", .. })
        ));
    }
}
