//! What an auditor uses: environment capture, lineage (`show`), `reproduce`, `verify`, `gc`,
//! `reindex` and bundles.

pub mod env;
