//! End-to-end tests of the `ktrack` binary: one module per command, sharing [`TestContext`].

mod audit;
mod bench;
mod cluster;
mod common;
mod data;
mod help;
mod html;
mod metrics;
mod real;
mod report;
mod robust;
mod run;
mod synth;
