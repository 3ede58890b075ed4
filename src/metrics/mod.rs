//! Metrics equal to scikit-learn's definitions (checked against `shared/reference`), bootstrap
//! confidence intervals and paired tests. Undefined cases give NaN, never a panic.

pub mod binary;
