//! Results as the reports read them: `run_points` (one metric value per grid point, init and
//! seed, kept by `runs().finish`) grouped for `compare`, leakage per init, and the flat tables
//! `export` writes.

use sqlx::FromRow;

use super::{Dialect, Result, Session};
use crate::id::Hash;

/// Which points to read; `None` is "any".
#[derive(Clone, Copy, Debug, Default)]
pub struct PointFilter<'a> {
    pub sweep: Option<&'a str>,
    pub task: Option<&'a str>,
    pub protocol: Option<&'a str>,
    /// The metric; `None` is each task's headline (`qwk` for KL grade, else `auroc`).
    pub metric: Option<&'a str>,
    pub seed: Option<i64>,
}

/// The values of one grid point (task, protocol, fraction, evaluation set, metric) for one
/// init, over its seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct PointGroup {
    pub task: String,
    pub protocol: String,
    pub fraction: f64,
    pub eval_set: String,
    pub metric: String,
    pub init: String,
    /// The smallest run id of the group (the run a single-seed cell is paired by).
    pub run: Hash,
    /// (seed, value) for every run with a finite value.
    pub values: Vec<(i64, f64)>,
}

/// Runs of one (init, task, protocol) that allowed leakage, and the most patients leaked.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct Leak {
    pub init: String,
    pub task: String,
    pub protocol: String,
    pub runs: i64,
    pub most_patients: i64,
}

/// One value of one metric for one init at one fraction.
#[derive(Clone, Debug, PartialEq, FromRow)]
pub struct PointValue {
    pub init: String,
    pub fraction: f64,
    pub seed: i64,
    pub value: Option<f64>,
}

/// One cell of the grid: an init's runs of one task, protocol and label fraction, read on
/// one evaluation set with one metric.
#[derive(Clone, Copy, Debug)]
pub struct CellKey<'a> {
    pub init: &'a str,
    pub task: &'a str,
    pub protocol: &'a str,
    pub fraction: f64,
    pub eval_set: &'a str,
    pub metric: &'a str,
}

/// One training seed's run of a cell.
#[derive(Clone, Debug, PartialEq, FromRow)]
pub struct SeedRun {
    pub seed: i64,
    pub run: Hash,
}

/// A run with its grid coordinates (absent for pretraining), as `export` writes it.
#[derive(Clone, Debug, FromRow)]
pub struct ExportRun {
    pub id: Hash,
    pub kind: String,
    pub label: String,
    pub status: String,
    pub attempts: i64,
    pub error: Option<String>,
    pub record: Option<Hash>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub init: Option<String>,
    pub task: Option<String>,
    pub protocol: Option<String>,
    pub fraction: Option<f64>,
    pub seed: Option<i64>,
    pub arch: Option<String>,
}

/// One metric of one run, as `export` writes it.
#[derive(Clone, Debug, FromRow)]
pub struct ExportMetric {
    pub run: Hash,
    pub eval_set: String,
    pub metric: String,
    pub value: Option<f64>,
}

/// One input or output of one run, as `export` writes it.
#[derive(Clone, Debug, FromRow)]
pub struct LineageRow {
    pub run: Hash,
    /// `input` or `output`.
    pub direction: String,
    pub role: String,
    pub hash: String,
}

/// Runs of a sweep, or all when the sweep is '' (bound as $1).
const IN_SWEEP: &str = "($1 = '' OR r.id IN (SELECT run FROM sweep_runs WHERE sweep = $1))";

/// The `seed:value` list of a group of `run_points` rows, in (seed, run) order, as text that
/// parses back to the very same f64s: SQLite's own real-to-text conversion keeps 15
/// significant digits, so it prints 17 (`%!.17g`; the test below checks the bundled SQLite's
/// digits round-trip), and PostgreSQL prints the shortest exact form (sqlx sets
/// `extra_float_digits`). A point without a value is not in the list.
fn seed_values(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "group_concat(CASE WHEN value IS NOT NULL THEN seed || ':' || printf('%!.17g', value) END, ',')"
        }
        Dialect::Postgres => "string_agg(seed || ':' || value::text, ',' ORDER BY seed, run)",
    }
}

/// Parses [`seed_values`]' list; values that are not finite are left out.
fn parse_seed_values(list: Option<&str>) -> Vec<(i64, f64)> {
    list.unwrap_or("")
        .split(',')
        .filter_map(|pair| {
            let (s, v) = pair.split_once(':')?;
            Some((s.parse().ok()?, v.parse().ok()?))
        })
        .filter(|(_, v): &(i64, f64)| v.is_finite())
        .collect()
}

// A group row: its key, first run and the values by seed.
from_rows!(PointGroup, |row| {
    let list: Option<String> = row.try_get("seed_values")?;
    let values = parse_seed_values(list.as_deref());
    Ok(PointGroup {
        task: row.try_get("task")?,
        protocol: row.try_get("protocol")?,
        fraction: row.try_get("fraction")?,
        eval_set: row.try_get("eval_set")?,
        metric: row.try_get("metric")?,
        init: row.try_get("init")?,
        run: row.try_get("run")?,
        values,
    })
});

pub struct Points<'s, 'i>(pub(super) &'s mut Session<'i>);

impl Points<'_, '_> {
    /// Every init with a run in the index.
    pub fn inits(&mut self) -> Result<Vec<String>> {
        on!(self.0, |conn, Db| {
            Ok(
                sqlx::query_scalar("SELECT DISTINCT init FROM run_axes ORDER BY init")
                    .fetch_all(conn)
                    .await?,
            )
        })
    }

    /// Every (task, metric) with a value outside `val`.
    pub fn metrics(&mut self) -> Result<Vec<(String, String)>> {
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_as(
                "SELECT DISTINCT task, metric FROM run_points WHERE eval_set <> 'val' ORDER BY task, metric",
            )
            .fetch_all(conn)
            .await?)
        })
    }

    /// The points outside `val`, grouped by grid point and init in SQL (one pass over
    /// `run_points` in its key order, which is this grouping order).
    pub fn groups(&mut self, f: &PointFilter<'_>) -> Result<Vec<PointGroup>> {
        // SQLite concatenates in scan order, which is the key order (seed, run).
        let seed_values = seed_values(self.0.dialect());
        let sql = format!(
            "SELECT task, protocol, fraction, eval_set, metric, init, min(run) AS run,
                    {seed_values} AS seed_values
             FROM run_points
             WHERE eval_set <> 'val'
               AND ($1 = '' OR run IN (SELECT run FROM sweep_runs WHERE sweep = $1))
               AND ($2 = '' OR task = $2)
               AND ($3 = '' OR protocol = $3)
               AND metric = CASE WHEN $4 <> '' THEN $4 WHEN task = 'kl' THEN 'qwk' ELSE 'auroc' END
               AND ($5 IS NULL OR seed = $5)
             GROUP BY task, protocol, fraction, eval_set, metric, init
             ORDER BY task, protocol, fraction, eval_set, metric, init"
        );
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_as(&sql)
                .bind(f.sweep.unwrap_or_default())
                .bind(f.task.unwrap_or_default())
                .bind(f.protocol.unwrap_or_default())
                .bind(f.metric.unwrap_or_default())
                .bind(f.seed)
                .fetch_all(conn)
                .await?)
        })
    }

    /// The runs of one cell with a value, by seed (in seed order; the smallest run id where
    /// a seed has several).
    pub fn seed_runs(&mut self, c: &CellKey<'_>) -> Result<Vec<SeedRun>> {
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_as(
                "SELECT seed, min(run) AS run FROM run_points
                 WHERE init = $1 AND task = $2 AND protocol = $3 AND abs(fraction - $4) < 1e-6
                   AND eval_set = $5 AND metric = $6 AND value IS NOT NULL
                 GROUP BY seed ORDER BY seed",
            )
            .bind(c.init)
            .bind(c.task)
            .bind(c.protocol)
            .bind(c.fraction)
            .bind(c.eval_set)
            .bind(c.metric)
            .fetch_all(conn)
            .await?)
        })
    }

    /// Values of one metric on one evaluation set, by fraction, init and seed.
    pub fn values(&mut self, eval_set: &str, metric: &str) -> Result<Vec<PointValue>> {
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_as(
                "SELECT init, fraction, seed, value FROM run_points
                 WHERE eval_set = $1 AND metric = $2 ORDER BY fraction, init, seed",
            )
            .bind(eval_set)
            .bind(metric)
            .fetch_all(conn)
            .await?)
        })
    }

    /// How many points hold a value (a plain scan of what `groups` reads).
    pub fn count(&mut self) -> Result<i64> {
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_scalar("SELECT count(value) FROM run_points")
                .fetch_one(conn)
                .await?)
        })
    }

    /// Runs that allowed leakage, by init, task and protocol.
    pub fn leakage(&mut self, sweep: Option<&str>) -> Result<Vec<Leak>> {
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_as(
                "SELECT a.init, a.task, a.protocol, COUNT(*) AS runs, MAX(r.leaked_patients) AS most_patients
                 FROM runs r JOIN run_axes a ON a.run = r.id
                 WHERE r.leaked_patients IS NOT NULL AND r.leaked_patients > 0
                   AND ($1 = '' OR r.id IN (SELECT run FROM sweep_runs WHERE sweep = $1))
                 GROUP BY a.init, a.task, a.protocol ORDER BY a.init, a.task, a.protocol",
            )
            .bind(sweep.unwrap_or_default())
            .fetch_all(conn)
            .await?)
        })
    }

    /// Runs of a sweep (or all) with their grid coordinates, by id.
    pub fn export_runs(&mut self, sweep: Option<&str>) -> Result<Vec<ExportRun>> {
        let sql = format!(
            "SELECT r.id, r.kind, r.label, r.status, r.attempts, r.error, r.record, r.started_at, r.finished_at,
                    a.init, a.task, a.protocol, a.fraction, a.seed, a.arch
             FROM runs r LEFT JOIN run_axes a ON a.run = r.id WHERE {IN_SWEEP} ORDER BY r.id"
        );
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_as(&sql)
                .bind(sweep.unwrap_or_default())
                .fetch_all(conn)
                .await?)
        })
    }

    /// Metrics of the runs of a sweep (or all), by run, set and metric.
    pub fn export_metrics(&mut self, sweep: Option<&str>) -> Result<Vec<ExportMetric>> {
        let sql = format!(
            "SELECT m.run, m.eval_set, m.metric, m.value FROM run_metrics m JOIN runs r ON r.id = m.run
             WHERE {IN_SWEEP} ORDER BY m.run, m.eval_set, m.metric"
        );
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_as(&sql)
                .bind(sweep.unwrap_or_default())
                .fetch_all(conn)
                .await?)
        })
    }

    /// Inputs and outputs of the runs of a sweep (or all), by run, direction and role.
    pub fn export_lineage(&mut self, sweep: Option<&str>) -> Result<Vec<LineageRow>> {
        let sql = format!(
            "SELECT run, direction, role, hash FROM (
                SELECT i.run AS run, 'input' AS direction, i.role AS role, i.hash AS hash FROM run_inputs i
                UNION ALL
                SELECT o.run, 'output', o.role, o.hash FROM run_outputs o) l
             JOIN runs r ON r.id = l.run WHERE {IN_SWEEP} ORDER BY run, direction, role"
        );
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_as(&sql)
                .bind(sweep.unwrap_or_default())
                .fetch_all(conn)
                .await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Points<'_, '_> {
        /// Runs [`seed_values`] over `rows` (seed, run, value) in a scratch table.
        fn seed_values_of(&mut self, rows: &[(i64, &str, Option<f64>)]) -> Vec<(i64, f64)> {
            let list = seed_values(self.0.dialect());
            let list: Option<String> = on!(self.0, |conn, Db| {
                sqlx::query(
                    "CREATE TEMPORARY TABLE scratch (seed BIGINT, run TEXT, value DOUBLE PRECISION)",
                )
                .execute(&mut *conn)
                .await?;
                for (seed, run, value) in rows {
                    sqlx::query("INSERT INTO scratch VALUES ($1, $2, $3)")
                        .bind(seed)
                        .bind(run)
                        .bind(value)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(
                    sqlx::query_scalar(&format!(
                        "SELECT {list} FROM (SELECT * FROM scratch ORDER BY seed, run) s"
                    ))
                    .fetch_one(&mut *conn)
                    .await?,
                )
            })
            .unwrap();
            parse_seed_values(list.as_deref())
        }
    }

    /// Metric values come back from the grouping query bit for bit, on both backends: the
    /// values whose shortest form has 16 or 17 significant digits too, which SQLite's own
    /// real-to-text conversion rounds.
    #[test]
    fn grouped_values_come_back_bit_for_bit() {
        let mut values = vec![
            0.014_610_556_641_629_69,
            0.1 + 0.2,
            1.0 / 3.0,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            // (Not -0.0: SQLite stores an integral real as an integer, and -0.0 as 0.)
            0.0,
            1.0,
            -2.5e-17,
        ];
        let mut r = crate::rng::stream("points-test", &[], 1);
        values.extend((0..200).map(|_| crate::rng::unit(&mut r)));
        let mut rows: Vec<(i64, String, Option<f64>)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as i64, format!("r{i:04}"), Some(*v)))
            .collect();
        rows.push((rows.len() as i64, "none".into(), None));
        let rows: Vec<_> = rows.iter().map(|(s, r, v)| (*s, r.as_str(), *v)).collect();
        let dir = tempfile::tempdir().unwrap();
        for (index, _schema) in crate::index::test_indexes(dir.path()) {
            let mut tx = index.write().unwrap();
            let got = tx.points().seed_values_of(&rows);
            assert_eq!(got.len(), values.len(), "{}", index.location());
            for ((seed, got), want) in got.iter().zip(&values) {
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "seed {seed}: {got:e} read back for {want:e} on {}",
                    index.location()
                );
            }
        }
    }
}
