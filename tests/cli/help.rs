//! `--help` output is part of the interface: pin it.

use crate::common::TestContext;

#[test]
fn top_level_help() {
    let ctx = TestContext::new();
    insta::assert_snapshot!("help", ctx.run(["--help"]));
}

#[test]
fn data_help() {
    let ctx = TestContext::new();
    insta::assert_snapshot!("data_help", ctx.run(["data", "--help"]));
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let ctx = TestContext::new();
    let out = ctx.ktrack(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
