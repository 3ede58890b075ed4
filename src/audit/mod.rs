//! What an auditor uses: environment capture, lineage (`show`), `reproduce`, `verify`, `gc`,
//! `reindex` and bundles.

pub mod bundle;
pub mod env;
pub mod ingest;
pub mod lineage;
pub mod maintain;
pub mod reproduce;
