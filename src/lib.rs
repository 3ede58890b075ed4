//! ktrack runs, tracks and reproduces a knee-osteoarthritis representation-learning study.
//!
//! A tour, in the order data flows:
//! - [`data`]: dataset descriptors and manifests are validated and imported (images decoded
//!   once, hashed, stored) into cohort versions; splits and label fractions derive from them.
//! - [`store`]: immutable blake3-addressed objects under `$KTRACK_HOME/objects`.
//! - [`index`]: the SQLite catalogue (sqlx) of cohorts, samples, splits and fractions.
//! - [`context`]: an open home (store + index + clock) handed to every operation.
//! - [`bench`]: benchmarks that report ratios against a reference measured in the same run.
//! - [`cli`]: the thin command line over all of the above; the library itself never prints.
//!
//! Support: [`id`] (hashes and prefixes), [`rng`] (seeded ChaCha streams), [`table`] (Parquet
//! in and out), [`output`] (printer, tables, progress), [`lossless`] (exact JSON floats),
//! [`quote`] (input values quoted in errors, clipped).

pub mod audit;
pub mod bench;
pub mod cli;
pub mod cohort;
pub mod context;
pub mod data;
pub mod env;
pub mod fault;
pub mod id;
pub mod index;
pub mod lossless;
pub mod metrics;
pub mod model;
pub mod output;
pub mod predictions;
pub mod quote;
pub mod report;
pub mod rng;
pub mod runner;
pub mod store;
pub mod table;
pub mod train;
