//! Splits and label fractions in the index.

use sqlx::FromRow;

use super::{Result, Session};
use crate::cohort::Partition;
use crate::id::Hash;

/// A row of `splits`.
#[derive(Clone, Debug, serde::Serialize, FromRow)]
pub struct SplitRow {
    pub hash: Hash,
    pub cohort: Hash,
    pub assignment: Hash,
    pub record: Hash,
    pub strategy: String,
    pub train: f64,
    pub val: f64,
    pub test: f64,
    pub stratify: Option<String>,
    pub seed: i64,
    pub created_at: String,
}

const SPLIT_COLUMNS: &str =
    "hash, cohort, assignment, record, strategy, train, val, test, stratify, seed, created_at";

/// The `splits` and `split_members` tables.
pub struct Splits<'s, 'i>(pub(super) &'s mut Session<'i>);

impl Splits<'_, '_> {
    /// Inserts a split and its members; returns false if it existed.
    pub fn insert(&mut self, row: &SplitRow, members: &[(String, Partition)]) -> Result<bool> {
        on!(self.0, |conn, Db| {
            let done = sqlx::query(
                "INSERT INTO splits (hash, cohort, assignment, record, strategy, train, val, test,
                 stratify, seed, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT DO NOTHING",
            )
            .bind(row.hash)
            .bind(row.cohort)
            .bind(row.assignment)
            .bind(row.record)
            .bind(&row.strategy)
            .bind(row.train)
            .bind(row.val)
            .bind(row.test)
            .bind(&row.stratify)
            .bind(row.seed)
            .bind(&row.created_at)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            for chunk in members.chunks(400) {
                let mut qb = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO split_members (split, sample_id, partition) ",
                );
                qb.push_values(chunk, |mut b, (sample, part)| {
                    b.push_bind(row.hash).push_bind(sample).push_bind(*part);
                });
                qb.build().execute(&mut *conn).await?;
            }
            Ok(true)
        })
    }

    pub fn get(&mut self, hash: &Hash) -> Result<Option<SplitRow>> {
        let sql = format!("SELECT {SPLIT_COLUMNS} FROM splits WHERE hash = $1");
        on!(self.0, |conn, Db| Ok(sqlx::query_as(&sql)
            .bind(hash)
            .fetch_optional(conn)
            .await?))
    }

    pub fn list(&mut self) -> Result<Vec<SplitRow>> {
        let sql = format!("SELECT {SPLIT_COLUMNS} FROM splits ORDER BY created_at, hash");
        on!(self.0, |conn, Db| Ok(sqlx::query_as(&sql)
            .fetch_all(conn)
            .await?))
    }

    /// (sample id, partition) of a split, sorted by sample id.
    pub fn members(&mut self, split: &Hash) -> Result<Vec<(String, Partition)>> {
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_as(
                "SELECT sample_id, partition FROM split_members WHERE split = $1 ORDER BY sample_id",
            )
            .bind(split)
            .fetch_all(conn)
            .await?)
        })
    }
}

/// A row of `fractions`.
#[derive(Clone, Debug, serde::Serialize, FromRow)]
pub struct FractionRow {
    pub hash: Hash,
    pub split: Hash,
    pub fraction: f64,
    pub stratify: String,
    pub seed: i64,
    pub members: Hash,
    pub record: Hash,
    pub n_samples: i64,
    pub n_patients: i64,
    pub created_at: String,
}

const FRACTION_COLUMNS: &str =
    "hash, split, fraction, stratify, seed, members, record, n_samples, n_patients, created_at";

/// The `fractions` and `fraction_members` tables.
pub struct Fractions<'s, 'i>(pub(super) &'s mut Session<'i>);

impl Fractions<'_, '_> {
    /// Inserts a fraction and its members; returns false if it existed.
    pub fn insert(&mut self, row: &FractionRow, members: &[String]) -> Result<bool> {
        on!(self.0, |conn, Db| {
            let done = sqlx::query(
                "INSERT INTO fractions (hash, split, fraction, stratify, seed, members, record,
                 n_samples, n_patients, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT DO NOTHING",
            )
            .bind(row.hash)
            .bind(row.split)
            .bind(row.fraction)
            .bind(&row.stratify)
            .bind(row.seed)
            .bind(row.members)
            .bind(row.record)
            .bind(row.n_samples)
            .bind(row.n_patients)
            .bind(&row.created_at)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            for chunk in members.chunks(400) {
                let mut qb = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO fraction_members (fraction, sample_id) ",
                );
                qb.push_values(chunk, |mut b, sample| {
                    b.push_bind(row.hash).push_bind(sample);
                });
                qb.build().execute(&mut *conn).await?;
            }
            Ok(true)
        })
    }

    pub fn get(&mut self, hash: &Hash) -> Result<Option<FractionRow>> {
        let sql = format!("SELECT {FRACTION_COLUMNS} FROM fractions WHERE hash = $1");
        on!(self.0, |conn, Db| Ok(sqlx::query_as(&sql)
            .bind(hash)
            .fetch_optional(conn)
            .await?))
    }

    pub fn list(&mut self) -> Result<Vec<FractionRow>> {
        let sql = format!(
            "SELECT {FRACTION_COLUMNS} FROM fractions ORDER BY split, stratify, seed, fraction"
        );
        on!(self.0, |conn, Db| Ok(sqlx::query_as(&sql)
            .fetch_all(conn)
            .await?))
    }

    /// Sample ids of a fraction, sorted.
    pub fn members(&mut self, fraction: &Hash) -> Result<Vec<String>> {
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_scalar(
                "SELECT sample_id FROM fraction_members WHERE fraction = $1 ORDER BY sample_id",
            )
            .bind(fraction)
            .fetch_all(conn)
            .await?)
        })
    }
}
