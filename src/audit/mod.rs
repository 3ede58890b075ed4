//! What an auditor uses: lineage (`show`), `reproduce`, `verify`, `gc`, `reindex` and bundles.

pub mod bundle;
pub mod ingest;
pub mod lineage;
pub mod maintain;
pub mod reproduce;
