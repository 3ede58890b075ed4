//! Benchmarks that measure ktrack against a reference in the same run and report the ratio
//! (never absolute targets in tests): `ktrack bench ingest`, …

pub mod compare;
pub mod ingest;
pub mod skip;
pub mod ssl;
pub mod train;
