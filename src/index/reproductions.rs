//! `reproductions`: the verdicts `ktrack reproduce` reached for a run, each with its record.

use sqlx::FromRow;

use super::{Result, Session};
use crate::id::Hash;

/// One reproduction of a run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, FromRow)]
pub struct ReproductionRow {
    pub verdict: String,
    pub record: Hash,
    pub created_at: String,
}

pub struct Reproductions<'s, 'i>(pub(super) &'s mut Session<'i>);

impl Reproductions<'_, '_> {
    /// Records a reproduction (its record object must be indexed); false if it was known.
    pub fn insert(
        &mut self,
        record: &Hash,
        run: &Hash,
        verdict: &str,
        max_diff: Option<f64>,
        created_at: &str,
    ) -> Result<bool> {
        on!(self.0, |conn, Db| {
            let done = sqlx::query(
                "INSERT INTO reproductions (record, run, verdict, max_diff, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(record)
            .bind(run)
            .bind(verdict)
            .bind(max_diff)
            .bind(created_at)
            .execute(conn)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// A run's reproductions, oldest first.
    pub fn of_run(&mut self, run: &Hash) -> Result<Vec<ReproductionRow>> {
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_as(
                "SELECT verdict, record, created_at FROM reproductions WHERE run = $1 ORDER BY created_at",
            )
            .bind(run)
            .fetch_all(conn)
            .await?)
        })
    }
}
