//! `ktrack data synth`: synthetic cohorts go through the real import, deterministically.

use crate::common::TestContext;

#[test]
fn synth_then_import_gives_a_stable_cohort() {
    let ctx = TestContext::new();
    let first = ctx.run([
        "data",
        "synth",
        "--kind",
        "most-like",
        "--patients",
        "6",
        "--size",
        "32",
        "--seed",
        "3",
        "--out",
        "most",
        "--import",
    ]);
    insta::assert_snapshot!("synth_import", first);
    // The same spec elsewhere gives the same files, so the same cohort version.
    let again = ctx.run([
        "data",
        "synth",
        "--kind",
        "most-like",
        "--patients",
        "6",
        "--size",
        "32",
        "--seed",
        "3",
        "--out",
        "most2",
        "--import",
    ]);
    let cohort = |out: &str| {
        out.lines()
            .find(|l| l.contains("most-like"))
            .map(|l| l.split('┆').next().unwrap().trim().to_string())
    };
    assert_eq!(cohort(&first), cohort(&again));
    // Regenerating in place finds the stamp.
    let fresh = ctx.run(["data", "synth", "most/dataset.toml"]);
    assert!(fresh.contains("Fresh"), "{fresh}");
    let manifest = std::fs::read_to_string(ctx.root().join("most/manifest.csv")).unwrap();
    assert!(manifest.starts_with(
        "sample_id,patient_id,side,visit_month,image_path,kl,incidence_4y,progression_4y\n"
    ));
}

#[test]
fn a_descriptor_without_synth_table_is_refused() {
    let ctx = TestContext::new();
    let d = ctx.cohort("real", 1, 1);
    let out = ctx.run(["data", "synth", d.to_str().unwrap()]);
    assert!(
        out.starts_with("exit_code: 1") && out.contains("has no `[synth]` table"),
        "{out}"
    );
}
