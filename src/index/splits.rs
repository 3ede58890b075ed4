//! Splits and label fractions in the index.

use sqlx::{Sqlite, SqliteConnection};

use super::{Result, parse_hash};
use crate::cohort::Partition;
use crate::id::Hash;

#[derive(Clone, Debug, serde::Serialize)]
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

type RawSplit = (
    String,
    String,
    String,
    String,
    String,
    f64,
    f64,
    f64,
    Option<String>,
    i64,
    String,
);

const SPLIT_COLUMNS: &str =
    "hash, cohort, assignment, record, strategy, train, val, test, stratify, seed, created_at";

fn split_from_raw(r: RawSplit) -> Result<SplitRow> {
    Ok(SplitRow {
        hash: parse_hash(&r.0)?,
        cohort: parse_hash(&r.1)?,
        assignment: parse_hash(&r.2)?,
        record: parse_hash(&r.3)?,
        strategy: r.4,
        train: r.5,
        val: r.6,
        test: r.7,
        stratify: r.8,
        seed: r.9,
        created_at: r.10,
    })
}

/// Inserts a split and its members; returns false if it existed.
pub async fn insert_split(
    conn: &mut SqliteConnection,
    row: &SplitRow,
    members: &[(String, Partition)],
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT OR IGNORE INTO splits (hash, cohort, assignment, record, strategy, train, val, test,
         stratify, seed, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .bind(row.hash.hex())
    .bind(row.cohort.hex())
    .bind(row.assignment.hex())
    .bind(row.record.hex())
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
    let split = row.hash.hex();
    for chunk in members.chunks(400) {
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO split_members (split, sample_id, partition) ",
        );
        qb.push_values(chunk, |mut b, (sample, part)| {
            b.push_bind(&split).push_bind(sample).push_bind(part.name());
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(true)
}

pub async fn get_split(conn: &mut SqliteConnection, hash: &Hash) -> Result<Option<SplitRow>> {
    let sql = format!("SELECT {SPLIT_COLUMNS} FROM splits WHERE hash = ?1");
    let row: Option<RawSplit> = sqlx::query_as(&sql)
        .bind(hash.hex())
        .fetch_optional(conn)
        .await?;
    row.map(split_from_raw).transpose()
}

pub async fn list_splits(conn: &mut SqliteConnection) -> Result<Vec<SplitRow>> {
    let sql = format!("SELECT {SPLIT_COLUMNS} FROM splits ORDER BY created_at, hash");
    let rows: Vec<RawSplit> = sqlx::query_as(&sql).fetch_all(conn).await?;
    rows.into_iter().map(split_from_raw).collect()
}

/// (sample id, partition) of a split, sorted by sample id.
pub async fn split_members(
    conn: &mut SqliteConnection,
    split: &Hash,
) -> Result<Vec<(String, Partition)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT sample_id, partition FROM split_members WHERE split = ?1 ORDER BY sample_id",
    )
    .bind(split.hex())
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(s, p)| Partition::parse(&p).map(|p| (s, p)))
        .collect())
}

#[derive(Clone, Debug, serde::Serialize)]
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

type RawFraction = (
    String,
    String,
    f64,
    String,
    i64,
    String,
    String,
    i64,
    i64,
    String,
);

const FRACTION_COLUMNS: &str =
    "hash, split, fraction, stratify, seed, members, record, n_samples, n_patients, created_at";

fn fraction_from_raw(r: RawFraction) -> Result<FractionRow> {
    Ok(FractionRow {
        hash: parse_hash(&r.0)?,
        split: parse_hash(&r.1)?,
        fraction: r.2,
        stratify: r.3,
        seed: r.4,
        members: parse_hash(&r.5)?,
        record: parse_hash(&r.6)?,
        n_samples: r.7,
        n_patients: r.8,
        created_at: r.9,
    })
}

/// Inserts a fraction and its members; returns false if it existed.
pub async fn insert_fraction(
    conn: &mut SqliteConnection,
    row: &FractionRow,
    members: &[String],
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT OR IGNORE INTO fractions (hash, split, fraction, stratify, seed, members, record,
         n_samples, n_patients, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .bind(row.hash.hex())
    .bind(row.split.hex())
    .bind(row.fraction)
    .bind(&row.stratify)
    .bind(row.seed)
    .bind(row.members.hex())
    .bind(row.record.hex())
    .bind(row.n_samples)
    .bind(row.n_patients)
    .bind(&row.created_at)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    let fraction = row.hash.hex();
    for chunk in members.chunks(400) {
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO fraction_members (fraction, sample_id) ",
        );
        qb.push_values(chunk, |mut b, sample| {
            b.push_bind(&fraction).push_bind(sample);
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(true)
}

pub async fn get_fraction(conn: &mut SqliteConnection, hash: &Hash) -> Result<Option<FractionRow>> {
    let sql = format!("SELECT {FRACTION_COLUMNS} FROM fractions WHERE hash = ?1");
    let row: Option<RawFraction> = sqlx::query_as(&sql)
        .bind(hash.hex())
        .fetch_optional(conn)
        .await?;
    row.map(fraction_from_raw).transpose()
}

pub async fn list_fractions(conn: &mut SqliteConnection) -> Result<Vec<FractionRow>> {
    let sql = format!(
        "SELECT {FRACTION_COLUMNS} FROM fractions ORDER BY split, stratify, seed, fraction"
    );
    let rows: Vec<RawFraction> = sqlx::query_as(&sql).fetch_all(conn).await?;
    rows.into_iter().map(fraction_from_raw).collect()
}

/// Sample ids of a fraction, sorted.
pub async fn fraction_members(conn: &mut SqliteConnection, fraction: &Hash) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT sample_id FROM fraction_members WHERE fraction = ?1 ORDER BY sample_id",
    )
    .bind(fraction.hex())
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}
