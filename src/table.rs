//! Parquet bytes in and out, with writer settings fixed so that equal tables give equal bytes
//! (identities hash these files). Also small helpers to pull typed columns out of batches.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

/// The `created_by` written into every file (instead of the library's version string).
pub const CREATED_BY: &str = "ktrack";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("column `{column}` is missing")]
    MissingColumn { column: String },
    #[error("column `{column}` has type {actual}, expected {expected}")]
    ColumnType {
        column: String,
        expected: &'static str,
        actual: DataType,
    },
    #[error("column `{column}` has a null at row {row}")]
    Null { column: String, row: usize },
}

/// Writes one batch as Parquet bytes, with `metadata` as file key-value metadata.
pub fn write(batch: &RecordBatch, metadata: &BTreeMap<String, String>) -> Result<Vec<u8>, Error> {
    let kv: Vec<KeyValue> = metadata
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    let props = WriterProperties::builder()
        .set_created_by(CREATED_BY.to_string())
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(if kv.is_empty() { None } else { Some(kv) })
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(out)
}

/// A Parquet file read back: its batches concatenated, and its key-value metadata.
pub struct ReadTable {
    pub batch: RecordBatch,
    pub metadata: BTreeMap<String, String>,
}

/// Reads Parquet bytes into one batch.
pub fn read(bytes: &[u8]) -> Result<ReadTable, Error> {
    let bytes = bytes::Bytes::copy_from_slice(bytes);
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let metadata = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter(|e| e.key != "ARROW:schema")
                .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    // Key-value metadata is returned separately; the batch's schema carries none.
    let schema: SchemaRef = Arc::new(
        builder
            .schema()
            .as_ref()
            .clone()
            .with_metadata(std::collections::HashMap::<String, String>::new()),
    );
    let batches = builder
        .build()?
        .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
    let batches: Vec<RecordBatch> = batches
        .into_iter()
        .map(|b| b.with_schema(schema.clone()))
        .collect::<Result<_, _>>()?;
    let batch = arrow::compute::concat_batches(&schema, &batches)?;
    Ok(ReadTable { batch, metadata })
}

pub fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, Error> {
    batch
        .column_by_name(name)
        .ok_or_else(|| Error::MissingColumn {
            column: name.to_string(),
        })
}

pub fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray, Error> {
    let col = column(batch, name)?;
    col.as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::ColumnType {
            column: name.to_string(),
            expected: "utf8",
            actual: col.data_type().clone(),
        })
}

pub fn int64s<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Int64Array, Error> {
    let col = column(batch, name)?;
    col.as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| Error::ColumnType {
            column: name.to_string(),
            expected: "int64",
            actual: col.data_type().clone(),
        })
}

pub fn float64s<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Float64Array, Error> {
    let col = column(batch, name)?;
    col.as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| Error::ColumnType {
            column: name.to_string(),
            expected: "float64",
            actual: col.data_type().clone(),
        })
}

/// A non-null string at `row`.
pub fn required_str<'a>(col: &'a StringArray, name: &str, row: usize) -> Result<&'a str, Error> {
    if col.is_null(row) {
        return Err(Error::Null {
            column: name.to_string(),
            row,
        });
    }
    Ok(col.value(row))
}

/// Builds a batch from named columns.
pub fn batch(columns: Vec<(&str, ArrayRef, bool)>) -> Result<RecordBatch, Error> {
    let fields: Vec<arrow::datatypes::Field> = columns
        .iter()
        .map(|(name, arr, nullable)| {
            arrow::datatypes::Field::new(*name, arr.data_type().clone(), *nullable)
        })
        .collect();
    let schema = Arc::new(arrow::datatypes::Schema::new(fields));
    Ok(RecordBatch::try_new(
        schema,
        columns.into_iter().map(|(_, a, _)| a).collect(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_tables_give_equal_bytes_and_round_trip() {
        let make = || {
            batch(vec![
                (
                    "a",
                    Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef,
                    false,
                ),
                (
                    "b",
                    Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
                    true,
                ),
            ])
            .unwrap()
        };
        let meta = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let one = write(&make(), &meta).unwrap();
        let two = write(&make(), &meta).unwrap();
        assert_eq!(one, two);
        let back = read(&one).unwrap();
        assert_eq!(back.batch, make());
        assert_eq!(back.metadata, meta);
    }
}
