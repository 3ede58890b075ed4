//! Cohort versions and their samples in the index.

use sqlx::FromRow;

use super::{Result, Session};
use crate::cohort::Sample;
use crate::id::Hash;

/// One imported cohort version.
#[derive(Clone, Debug, serde::Serialize, FromRow)]
pub struct CohortRow {
    pub hash: Hash,
    pub name: String,
    pub record: Hash,
    pub n_samples: i64,
    pub n_patients: i64,
    pub imported_at: String,
}

const COLUMNS: &str = "hash, name, record, n_samples, n_patients, imported_at";

// A sample as the index keeps it: everything but the report text (`report` is `None`; the
// cohort's manifest object holds it).
from_rows!(Sample, |row| {
    Ok(Sample {
        sample_id: row.try_get("sample_id")?,
        patient_id: row.try_get("patient_id")?,
        side: row.try_get("side")?,
        visit: row.try_get("visit")?,
        image: row.try_get("image")?,
        kl: small(row.try_get("kl")?, "kl")?,
        incidence_4y: small(row.try_get("incidence_4y")?, "incidence_4y")?,
        progression_4y: small(row.try_get("progression_4y")?, "progression_4y")?,
        class: small(row.try_get("class")?, "class")?,
        report: None,
    })
});

/// A label column (stored as an integer) as the byte a sample holds.
fn small(v: Option<i64>, column: &str) -> sqlx::Result<Option<u8>> {
    v.map(|v| {
        u8::try_from(v).map_err(|_| sqlx::Error::ColumnDecode {
            index: column.to_string(),
            source: format!("{v} is not a label").into(),
        })
    })
    .transpose()
}

/// The `cohorts` and `samples` tables.
pub struct Cohorts<'s, 'i>(pub(super) &'s mut Session<'i>);

impl Cohorts<'_, '_> {
    /// Inserts a cohort; returns false if this version was already there.
    pub fn insert(&mut self, row: &CohortRow) -> Result<bool> {
        on!(self.0, |conn, Db| {
            let done = sqlx::query(
                "INSERT INTO cohorts (hash, name, record, n_samples, n_patients, imported_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(row.hash)
            .bind(&row.name)
            .bind(row.record)
            .bind(row.n_samples)
            .bind(row.n_patients)
            .bind(&row.imported_at)
            .execute(conn)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Inserts a cohort's samples in multi-row statements.
    pub fn insert_samples(&mut self, cohort: &Hash, samples: &[Sample]) -> Result<()> {
        on!(self.0, |conn, Db| {
            for chunk in samples.chunks(400) {
                let mut qb = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO samples (cohort, sample_id, patient_id, side, visit, image, kl,
                     incidence_4y, progression_4y, class, has_report) ",
                );
                qb.push_values(chunk, |mut b, s| {
                    b.push_bind(cohort)
                        .push_bind(&s.sample_id)
                        .push_bind(&s.patient_id)
                        .push_bind(s.side)
                        .push_bind(s.visit)
                        .push_bind(s.image)
                        .push_bind(s.kl.map(i64::from))
                        .push_bind(s.incidence_4y.map(i64::from))
                        .push_bind(s.progression_4y.map(i64::from))
                        .push_bind(s.class.map(i64::from))
                        .push_bind(i64::from(s.report.is_some()));
                });
                qb.build().execute(&mut *conn).await?;
            }
            Ok(())
        })
    }

    pub fn list(&mut self) -> Result<Vec<CohortRow>> {
        let sql = format!("SELECT {COLUMNS} FROM cohorts ORDER BY name, imported_at, hash");
        on!(self.0, |conn, Db| Ok(sqlx::query_as(&sql)
            .fetch_all(conn)
            .await?))
    }

    pub fn get(&mut self, hash: &Hash) -> Result<Option<CohortRow>> {
        let sql = format!("SELECT {COLUMNS} FROM cohorts WHERE hash = $1");
        on!(self.0, |conn, Db| Ok(sqlx::query_as(&sql)
            .bind(hash)
            .fetch_optional(conn)
            .await?))
    }

    /// Versions of a cohort name, newest first.
    pub fn by_name(&mut self, name: &str) -> Result<Vec<CohortRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM cohorts WHERE name = $1 ORDER BY imported_at DESC, hash"
        );
        on!(self.0, |conn, Db| Ok(sqlx::query_as(&sql)
            .bind(name)
            .fetch_all(conn)
            .await?))
    }

    /// A cohort's samples (without report text), sorted by sample id.
    pub fn samples(&mut self, cohort: &Hash) -> Result<Vec<Sample>> {
        on!(self.0, |conn, Db| {
            Ok(sqlx::query_as(
                "SELECT sample_id, patient_id, side, visit, image, kl, incidence_4y, progression_4y,
                 class FROM samples WHERE cohort = $1 ORDER BY sample_id",
            )
            .bind(cohort)
            .fetch_all(conn)
            .await?)
        })
    }
}
