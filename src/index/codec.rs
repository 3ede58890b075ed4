//! How ktrack's own types are stored in index columns: hashes as lowercase hex text, statuses,
//! sides and partitions by name. With these, rows decode straight into the index's structs.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use crate::cohort::{Partition, Side};
use crate::id::Hash;

use super::runs::Status;

/// Implements TEXT storage for a type from its parse and name functions, on every backend
/// that stores text.
macro_rules! text_column {
    ($t:ty, $parse:expr, $name:expr) => {
        impl<DB: Database> Type<DB> for $t
        where
            str: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $t
        where
            &'r str: Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&str as Decode<DB>>::decode(value)?;
                let parse: fn(&str) -> Result<$t, String> = $parse;
                Ok(parse(text)?)
            }
        }

        impl<'q, DB: Database> Encode<'q, DB> for $t
        where
            String: Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut DB::ArgumentBuffer<'q>,
            ) -> Result<IsNull, BoxDynError> {
                let name: fn(&$t) -> String = $name;
                <String as Encode<'q, DB>>::encode(name(self), buf)
            }
        }
    };
}

text_column!(
    Hash,
    |s| s
        .parse()
        .map_err(|_| format!("the index holds a malformed hash `{s}`")),
    |h| h.hex()
);
text_column!(
    Status,
    |s| Status::from_name(s).ok_or_else(|| format!("the index holds an unknown run status `{s}`")),
    |s| s.name().to_string()
);
text_column!(
    Side,
    |s| Side::parse(s).ok_or_else(|| format!("the index holds an unknown side `{s}`")),
    |s| s.as_str().to_string()
);
text_column!(
    Partition,
    |s| Partition::parse(s).ok_or_else(|| format!("the index holds an unknown partition `{s}`")),
    |p| p.name().to_string()
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_names_round_trip_through_a_column() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
            let h = Hash::of(b"x");
            let (back, side, part, status): (Hash, Side, Partition, Status) =
                sqlx::query_as("SELECT $1, $2, $3, $4")
                    .bind(h)
                    .bind(Side::L)
                    .bind(Partition::Val)
                    .bind(Status::Failed)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_eq!(
                (back, side, part, status),
                (h, Side::L, Partition::Val, Status::Failed)
            );
            // `$N` placeholders bind by number, as PostgreSQL's do.
            let (two, one): (i64, i64) = sqlx::query_as("SELECT $2, $1")
                .bind(1i64)
                .bind(2i64)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!((two, one), (2, 1));
            let bad: Result<(Hash,), _> = sqlx::query_as("SELECT 'nothex'").fetch_one(&pool).await;
            let err = bad.unwrap_err().to_string();
            assert!(err.contains("malformed hash `nothex`"), "{err}");
        });
    }
}
