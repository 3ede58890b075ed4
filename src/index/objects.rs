//! `objects`: one row per store object the index knows (hash, size, kind), and every place the
//! index refers to an object, which `verify` checks and `gc` keeps.

use std::collections::{BTreeMap, BTreeSet};

use super::{Result, Session};
use crate::id::Hash;

/// Every (table.column, query) the index refers to objects through. Objects, not rows: split,
/// fraction and run ids are identities, not objects, and are not listed.
const REFERENCES: &[(&str, &str)] = &[
    ("objects.hash", "SELECT hash FROM objects"),
    ("cohorts.hash", "SELECT hash FROM cohorts"),
    ("cohorts.record", "SELECT record FROM cohorts"),
    ("samples.image", "SELECT DISTINCT image FROM samples"),
    ("splits.assignment", "SELECT assignment FROM splits"),
    ("splits.record", "SELECT record FROM splits"),
    ("fractions.members", "SELECT members FROM fractions"),
    ("fractions.record", "SELECT record FROM fractions"),
    (
        "runs.record",
        "SELECT record FROM runs WHERE record IS NOT NULL",
    ),
    ("run_outputs.hash", "SELECT DISTINCT hash FROM run_outputs"),
    (
        "run_inputs.hash",
        "SELECT DISTINCT hash FROM run_inputs WHERE role IN ('weights', 'tokenizer')",
    ),
    (
        "sweeps.record",
        "SELECT record FROM sweeps WHERE record IS NOT NULL",
    ),
    ("sweeps.spec_hash", "SELECT spec_hash FROM sweeps"),
    ("reproductions.record", "SELECT record FROM reproductions"),
];

/// Where `references` lists the objects table itself (every known object, reachable or not).
pub const OBJECTS_TABLE: &str = "objects.hash";

pub struct Objects<'s, 'i>(pub(super) &'s mut Session<'i>);

impl Objects<'_, '_> {
    /// Records an object row (idempotent).
    pub fn insert(&mut self, hash: &Hash, size: u64, kind: &str, now: &str) -> Result<()> {
        self.insert_many(&[(*hash, size, kind)], now)
    }

    /// Records many object rows (hash, size, kind) in multi-row statements (idempotent).
    pub fn insert_many(&mut self, rows: &[(Hash, u64, &str)], now: &str) -> Result<()> {
        on!(self.0, |conn, Db| {
            for chunk in rows.chunks(200) {
                let mut qb = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO objects (hash, size, kind, created_at) ",
                );
                qb.push_values(chunk, |mut b, (hash, size, kind)| {
                    b.push_bind(*hash)
                        .push_bind(*size as i64)
                        .push_bind(*kind)
                        .push_bind(now);
                });
                qb.push(" ON CONFLICT DO NOTHING");
                qb.build().execute(&mut *conn).await?;
            }
            Ok(())
        })
    }

    /// Every object the index knows.
    pub fn hashes(&mut self) -> Result<BTreeSet<Hash>> {
        on!(self.0, |conn, Db| {
            let rows: Vec<Hash> = sqlx::query_scalar("SELECT hash FROM objects")
                .fetch_all(conn)
                .await?;
            Ok(rows.into_iter().collect())
        })
    }

    /// The kind of every object the index knows.
    pub fn kinds(&mut self) -> Result<BTreeMap<Hash, String>> {
        on!(self.0, |conn, Db| {
            let rows: Vec<(Hash, String)> = sqlx::query_as("SELECT hash, kind FROM objects")
                .fetch_all(conn)
                .await?;
            Ok(rows.into_iter().collect())
        })
    }

    /// Every (table.column, object) the index refers to; [`OBJECTS_TABLE`] lists the objects
    /// table itself.
    pub fn references(&mut self) -> Result<Vec<(&'static str, Hash)>> {
        on!(self.0, |conn, Db| {
            let mut out = Vec::new();
            for (place, sql) in REFERENCES {
                let rows: Vec<Hash> = sqlx::query_scalar(sql).fetch_all(&mut *conn).await?;
                out.extend(rows.into_iter().map(|h| (*place, h)));
            }
            Ok(out)
        })
    }

    /// The objects some row other than its own refers to.
    pub fn reachable(&mut self) -> Result<BTreeSet<Hash>> {
        Ok(self
            .references()?
            .into_iter()
            .filter(|(place, _)| *place != OBJECTS_TABLE)
            .map(|(_, h)| h)
            .collect())
    }

    /// Deletes object rows.
    pub fn delete(&mut self, hashes: &[Hash]) -> Result<()> {
        on!(self.0, |conn, Db| {
            for chunk in hashes.chunks(500) {
                let mut qb = sqlx::QueryBuilder::<Db>::new("DELETE FROM objects WHERE hash IN (");
                let mut list = qb.separated(", ");
                for h in chunk {
                    list.push_bind(*h);
                }
                qb.push(")");
                qb.build().execute(&mut *conn).await?;
            }
            Ok(())
        })
    }

    /// Names the kind of objects only the rows know: images of samples (`image`) and, with
    /// `weights`, the weights files runs were planned with. With `only_unknown`, objects that
    /// already have a kind other than `object` keep it.
    pub fn settle_kinds(&mut self, only_unknown: bool, weights: bool) -> Result<()> {
        let unknown = if only_unknown {
            "kind = 'object' AND "
        } else {
            ""
        };
        let images = format!(
            "UPDATE objects SET kind = 'image' WHERE {unknown}hash IN (SELECT image FROM samples)"
        );
        let weights_sql = format!(
            "UPDATE objects SET kind = 'weights' WHERE {unknown}hash IN (SELECT hash FROM run_inputs WHERE role = 'weights')"
        );
        on!(self.0, |conn, Db| {
            sqlx::query(&images).execute(&mut *conn).await?;
            if weights {
                sqlx::query(&weights_sql).execute(&mut *conn).await?;
            }
            Ok(())
        })
    }
}
