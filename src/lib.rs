//! ktrack runs, tracks and reproduces a knee-osteoarthritis representation-learning study.
//!
//! A tour, in the order data flows (each layer uses only the ones below it):
//! - [`cli`]: the thin command line; parses arguments, calls one library function, renders
//!   its report. The library itself never prints.
//! - [`runner`]: sweep specs → resolved runs whose identity is the hash of their inputs
//!   ([`runner::resolved`]), the DAG, claims with heartbeats ([`runner::holder`]), executors
//!   (local, Slurm). [`report`] (comparison tables, plots, exports) and [`audit`] (lineage,
//!   reproduce, verify, gc, reindex, bundles) sit beside it.
//! - [`train`]: the loader, SSL pretraining and downstream probes / fine-tunes on burn;
//!   [`model`] holds the networks.
//! - [`data`]: descriptors and manifests validated and imported (images decoded once, hashed,
//!   stored) into cohort versions ([`data::manifest`] writes the canonical manifest whose hash
//!   is the version); splits and label fractions derive from them.
//! - [`metrics`]: every metric, scikit-learn's definitions; bootstrap CIs and DeLong.
//! - [`record`]: the typed records in the store that the index is rebuilt from.
//! - [`store`] (immutable blake3-addressed objects) and [`index`] (the SQLite catalogue;
//!   [`index::home`] opens it safely) with [`context`] (an open home: store + index + clock).
//! - Bottom: [`cohort`] (the vocabulary data and index share: sample, side, label,
//!   partition), [`env`](mod@env) (environment capture and the version), [`id`] (hashes and prefixes),
//!   [`rng`] (seeded ChaCha streams), [`table`] (Parquet in and out), [`output`] (printer,
//!   tables, progress), [`lossless`] (exact JSON floats), [`quote`] (input values quoted in
//!   errors, clipped), [`fault`] (full disks, busy indexes, odd file kinds), [`hint`] (the fix an
//!   error suggests).
//! - [`progress`]: the [`progress::Reporter`] and [`progress::Task`] the library reports to
//!   (the CLI draws them; the library never prints).
//! - [`bench`]: benchmarks that report ratios against a reference measured in the same run.

pub mod audit;
pub mod bench;
pub mod cli;
pub mod cohort;
pub mod context;
pub mod data;
pub mod env;
pub mod fault;
pub mod hint;
pub mod id;
pub mod index;
pub mod lossless;
pub mod metrics;
pub mod model;
pub mod output;
pub mod predictions;
pub mod progress;
pub mod quote;
pub mod record;
pub mod report;
pub mod rng;
pub mod runner;
pub mod store;
pub mod table;
pub mod train;
