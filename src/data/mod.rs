//! Cohort data: descriptors, manifests, images, imports, splits and label fractions.
//!
//! A cohort version is the blake3 of its canonical manifest (Parquet, rows sorted by sample
//! id, one image hash per row); splits and fractions are identified by the hash of their
//! inputs and stored as Parquet member tables. Everything enters through [`import`], real or
//! synthetic.

pub mod catalog;
pub mod descriptor;
pub mod fraction;
pub mod image;
pub mod import;
pub mod manifest;
pub mod real;
pub mod split;
pub mod strata;
pub mod synth;

pub use crate::cohort::{Label, Partition, Sample, Side};
