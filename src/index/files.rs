//! `file_stats`: the hash of every imported file with its size, mtime and inode, so that an
//! unchanged file is not read again on the next import (as git's index does).

use std::collections::HashMap;

use sqlx::FromRow;

use super::{Result, Session};
use crate::id::Hash;

/// What the index remembers of one file.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct FileStat {
    pub path: String,
    pub size: i64,
    pub mtime_ns: i64,
    pub inode: i64,
    pub hash: Hash,
}

pub struct Files<'s, 'i>(pub(super) &'s mut Session<'i>);

impl Files<'_, '_> {
    /// Every remembered file, by path.
    pub fn all(&mut self) -> Result<HashMap<String, FileStat>> {
        on!(self.0, |conn, Db| {
            let rows: Vec<FileStat> =
                sqlx::query_as("SELECT path, size, mtime_ns, inode, hash FROM file_stats")
                    .fetch_all(conn)
                    .await?;
            Ok(rows.into_iter().map(|f| (f.path.clone(), f)).collect())
        })
    }

    /// Remembers file hashes (replacing what was known of the same paths; of one path given
    /// twice, the last row counts — PostgreSQL refuses a statement that upserts a row twice).
    pub fn remember(&mut self, rows: &[FileStat]) -> Result<()> {
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(rows.len());
        for (i, f) in rows.iter().enumerate() {
            last.insert(&f.path, i);
        }
        let rows: Vec<&FileStat> = rows
            .iter()
            .enumerate()
            .filter(|(i, f)| last[f.path.as_str()] == *i)
            .map(|(_, f)| f)
            .collect();
        on!(self.0, |conn, Db| {
            for chunk in rows.chunks(150) {
                let mut qb = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO file_stats (path, size, mtime_ns, inode, hash) ",
                );
                qb.push_values(chunk, |mut b, f| {
                    b.push_bind(&f.path)
                        .push_bind(f.size)
                        .push_bind(f.mtime_ns)
                        .push_bind(f.inode)
                        .push_bind(f.hash);
                });
                qb.push(" ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, inode = excluded.inode, hash = excluded.hash");
                qb.build().execute(&mut *conn).await?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_given_twice_keeps_its_last_row_on_every_backend() {
        let dir = tempfile::tempdir().unwrap();
        for (index, _schema) in crate::index::test_indexes(dir.path()) {
            let stat = |size| FileStat {
                path: "a.png".into(),
                size,
                mtime_ns: 1,
                inode: 2,
                hash: Hash::of(b"a"),
            };
            let mut tx = index.write().unwrap();
            tx.files().remember(&[stat(1), stat(2)]).unwrap();
            tx.commit().unwrap();
            let all = index.read().unwrap().files().all().unwrap();
            assert_eq!(all["a.png"].size, 2, "{}", index.location());
        }
    }
}
