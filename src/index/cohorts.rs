//! Cohort versions and their samples in the index.

use sqlx::{Sqlite, SqliteConnection};

use super::{Result, parse_hash};
use crate::cohort::{Label, Sample, Side};
use crate::id::Hash;

/// One imported cohort version.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CohortRow {
    pub hash: Hash,
    pub name: String,
    pub record: Hash,
    pub n_samples: i64,
    pub n_patients: i64,
    pub imported_at: String,
}

type RawCohort = (String, String, String, i64, i64, String);

fn from_raw(r: RawCohort) -> Result<CohortRow> {
    Ok(CohortRow {
        hash: parse_hash(&r.0)?,
        name: r.1,
        record: parse_hash(&r.2)?,
        n_samples: r.3,
        n_patients: r.4,
        imported_at: r.5,
    })
}

const COLUMNS: &str = "hash, name, record, n_samples, n_patients, imported_at";

/// Inserts a cohort; returns false if this version was already there.
pub async fn insert(conn: &mut SqliteConnection, row: &CohortRow) -> Result<bool> {
    let done = sqlx::query(
        "INSERT OR IGNORE INTO cohorts (hash, name, record, n_samples, n_patients, imported_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(row.hash.hex())
    .bind(&row.name)
    .bind(row.record.hex())
    .bind(row.n_samples)
    .bind(row.n_patients)
    .bind(&row.imported_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Inserts a cohort's samples in multi-row statements.
pub async fn insert_samples(
    conn: &mut SqliteConnection,
    cohort: &Hash,
    samples: &[Sample],
) -> Result<()> {
    let cohort = cohort.hex();
    for chunk in samples.chunks(400) {
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO samples (cohort, sample_id, patient_id, side, visit, image, kl,
             incidence_4y, progression_4y, has_report) ",
        );
        qb.push_values(chunk, |mut b, s| {
            b.push_bind(&cohort)
                .push_bind(&s.sample_id)
                .push_bind(&s.patient_id)
                .push_bind(s.side.as_str())
                .push_bind(s.visit)
                .push_bind(s.image.hex())
                .push_bind(s.kl.map(i64::from))
                .push_bind(s.incidence_4y.map(i64::from))
                .push_bind(s.progression_4y.map(i64::from))
                .push_bind(i64::from(s.report.is_some()));
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

pub async fn list(conn: &mut SqliteConnection) -> Result<Vec<CohortRow>> {
    let sql = format!("SELECT {COLUMNS} FROM cohorts ORDER BY name, imported_at, hash");
    let rows: Vec<RawCohort> = sqlx::query_as(&sql).fetch_all(conn).await?;
    rows.into_iter().map(from_raw).collect()
}

pub async fn get(conn: &mut SqliteConnection, hash: &Hash) -> Result<Option<CohortRow>> {
    let sql = format!("SELECT {COLUMNS} FROM cohorts WHERE hash = ?1");
    let row: Option<RawCohort> = sqlx::query_as(&sql)
        .bind(hash.hex())
        .fetch_optional(conn)
        .await?;
    row.map(from_raw).transpose()
}

/// Versions of a cohort name, newest first.
pub async fn by_name(conn: &mut SqliteConnection, name: &str) -> Result<Vec<CohortRow>> {
    let sql =
        format!("SELECT {COLUMNS} FROM cohorts WHERE name = ?1 ORDER BY imported_at DESC, hash");
    let rows: Vec<RawCohort> = sqlx::query_as(&sql).bind(name).fetch_all(conn).await?;
    rows.into_iter().map(from_raw).collect()
}

/// A sample as the index keeps it (no report text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleRow {
    pub sample_id: String,
    pub patient_id: String,
    pub side: Side,
    pub visit: i64,
    pub image: Hash,
    pub kl: Option<u8>,
    pub incidence_4y: Option<u8>,
    pub progression_4y: Option<u8>,
}

impl SampleRow {
    pub fn label(&self, label: Label) -> Option<u8> {
        match label {
            Label::Kl => self.kl,
            Label::Incidence4y => self.incidence_4y,
            Label::Progression4y => self.progression_4y,
        }
    }
}

type RawSample = (
    String,
    String,
    String,
    i64,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// A cohort's samples, sorted by sample id.
pub async fn samples(conn: &mut SqliteConnection, cohort: &Hash) -> Result<Vec<SampleRow>> {
    let rows: Vec<RawSample> = sqlx::query_as(
        "SELECT sample_id, patient_id, side, visit, image, kl, incidence_4y, progression_4y
         FROM samples WHERE cohort = ?1 ORDER BY sample_id",
    )
    .bind(cohort.hex())
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(SampleRow {
                sample_id: r.0,
                patient_id: r.1,
                side: Side::parse(&r.2).unwrap_or(Side::R),
                visit: r.3,
                image: parse_hash(&r.4)?,
                kl: r.5.map(|v| v as u8),
                incidence_4y: r.6.map(|v| v as u8),
                progression_4y: r.7.map(|v| v as u8),
            })
        })
        .collect()
}
