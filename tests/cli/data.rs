//! `ktrack data import|split|fraction|ls|show`, including every bad-input case: each gives one
//! clear error naming the file, row and field, exits 1, and leaves store and index unchanged.

use crate::common::TestContext;

#[test]
fn import_is_idempotent() {
    let ctx = TestContext::new();
    let d = ctx.cohort("mini", 6, 2);
    insta::assert_snapshot!(
        "import_first",
        ctx.run(["data", "import", d.to_str().unwrap()])
    );
    let before = ctx.fingerprint();
    assert_eq!(
        before.files.len(),
        6 * 2 * 2 + 2,
        "24 images, a manifest and a record"
    );
    insta::assert_snapshot!(
        "import_again",
        ctx.run(["data", "import", d.to_str().unwrap()])
    );
    assert_eq!(ctx.fingerprint(), before, "a second import writes nothing");
}

#[test]
fn the_same_files_give_the_same_cohort_in_another_home() {
    let ctx = TestContext::new();
    let d = ctx.cohort("mini", 4, 1);
    let a = ctx.ok(["data", "import", d.to_str().unwrap(), "--format", "json"]);
    let other = ctx.root().join("other-home");
    let out = ctx
        .ktrack(["data", "import", d.to_str().unwrap(), "--format", "json"])
        .env("KTRACK_HOME", &other)
        .output()
        .unwrap();
    let b = String::from_utf8(out.stdout).unwrap();
    let cohort =
        |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()[0]["cohort"].clone();
    assert_eq!(cohort(&a), cohort(&b));
}

#[test]
fn split_fraction_ls_show() {
    let ctx = TestContext::new();
    let d = ctx.cohort("mini", 40, 2);
    ctx.ok(["data", "import", d.to_str().unwrap()]);
    let split = ctx.run([
        "data", "split", "mini", "--train", "0.6", "--val", "0.2", "--test", "0.2", "--seed", "1",
    ]);
    insta::assert_snapshot!("split", split);
    let json = ctx.ok([
        "data", "split", "mini", "--train", "0.6", "--val", "0.2", "--test", "0.2", "--seed", "1",
        "--format", "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["new"], false, "the same split again is found, not made");
    let split_id = v["id"].as_str().unwrap().to_string();
    let fractions = ctx.run([
        "data",
        "fraction",
        &split_id[..8],
        "--fractions",
        "0.1,0.5,1.0",
        "--stratify",
        "kl",
        "--seed",
        "2",
    ]);
    insta::assert_snapshot!("fraction", fractions);
    insta::assert_snapshot!("ls", ctx.run(["data", "ls"]));
    insta::assert_snapshot!("show_split", ctx.run(["data", "show", &split_id[..12]]));
    let ls: serde_json::Value =
        serde_json::from_str(&ctx.ok(["data", "ls", "--format", "json"])).unwrap();
    assert_eq!(ls["fractions"].as_array().unwrap().len(), 3);
    let cohort = ls["cohorts"][0]["hash"].as_str().unwrap().to_string();
    insta::assert_snapshot!("show_cohort", ctx.run(["data", "show", &cohort[..6]]));
    let csv = ctx.ok(["data", "show", &cohort[..6], "--format", "csv"]);
    assert!(
        csv.contains("visit (months),samples\n0,80\n12,80\n"),
        "{csv}"
    );
}

#[test]
fn unknown_and_short_ids_are_clear_errors() {
    let ctx = TestContext::new();
    insta::assert_snapshot!("show_unknown", ctx.run(["data", "show", "abcdef"]));
    insta::assert_snapshot!("show_short", ctx.run(["data", "show", "ab"]));
}

/// Runs an import that must fail; checks exit 1 and that nothing changed.
fn failing_import(ctx: &TestContext, descriptor: &str) -> String {
    let good = ctx.cohort("good", 2, 1);
    ctx.ok(["data", "import", good.to_str().unwrap()]);
    let before = ctx.fingerprint();
    let out = ctx.ktrack(["data", "import", descriptor]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", ctx.render(&out));
    assert_eq!(
        ctx.fingerprint(),
        before,
        "a failed import must leave store and index unchanged"
    );
    ctx.render(&out)
}

fn edit_manifest(ctx: &TestContext, name: &str, f: impl Fn(String) -> String) {
    let p = ctx.root().join(name).join("manifest.csv");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, f(text)).unwrap();
}

#[test]
fn bad_missing_manifest_column() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    edit_manifest(&ctx, "bad", |t| t.replacen("side,", "knee,", 1));
    insta::assert_snapshot!(failing_import(&ctx, "bad.toml"));
}

#[test]
fn bad_mapping_to_unknown_column() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    ctx.descriptor("bad", "progression_4y = \"prog_4y\"\n");
    insta::assert_snapshot!(failing_import(&ctx, "bad.toml"));
}

#[test]
fn bad_duplicate_sample_id() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    edit_manifest(&ctx, "bad", |t| t.replace("P002_R_0,", "P001_L_0,"));
    insta::assert_snapshot!(failing_import(&ctx, "bad.toml"));
}

#[test]
fn bad_missing_image_file() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    std::fs::remove_file(ctx.root().join("bad/img/001_R_0.png")).unwrap();
    insta::assert_snapshot!(failing_import(&ctx, "bad.toml"));
}

#[test]
fn bad_undecodable_image() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    let p = ctx.root().join("bad/img/002_L_0.png");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&p, bytes).unwrap();
    insta::assert_snapshot!(failing_import(&ctx, "bad.toml"));
}

#[test]
fn bad_kl_outside_range() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    edit_manifest(&ctx, "bad", |t| {
        let mut lines: Vec<String> = t.lines().map(String::from).collect();
        let cells: Vec<&str> = lines[3].split(',').collect();
        let mut cells: Vec<String> = cells.into_iter().map(String::from).collect();
        cells[5] = "7".into();
        lines[3] = cells.join(",");
        lines.join("\n") + "\n"
    });
    insta::assert_snapshot!(failing_import(&ctx, "bad.toml"));
}

#[test]
fn bad_non_numeric_label() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    edit_manifest(&ctx, "bad", |t| {
        let mut lines: Vec<String> = t.lines().map(String::from).collect();
        let mut cells: Vec<String> = lines[2].split(',').map(String::from).collect();
        cells[5] = "2: Minimal".into();
        lines[2] = cells.join(",");
        lines.join("\n") + "\n"
    });
    insta::assert_snapshot!(failing_import(&ctx, "bad.toml"));
}

#[test]
fn bad_image_path_with_dotdot() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    edit_manifest(&ctx, "bad", |t| {
        t.replace("img/001_L_0.png", "../good/img/000_L_0.png")
    });
    insta::assert_snapshot!(failing_import(&ctx, "bad.toml"));
}

#[test]
fn bad_absolute_image_path() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    edit_manifest(&ctx, "bad", |t| {
        t.replace("img/001_L_0.png", "/etc/hostname")
    });
    insta::assert_snapshot!(failing_import(&ctx, "bad.toml"));
}

#[test]
fn bad_symlink_out_of_root() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    let outside = ctx.write(
        "elsewhere/secret.png",
        ktrack::data::image::encode_png16(2, 2, &[1, 2, 3, 4]),
    );
    let link = ctx.root().join("bad/img/001_L_0.png");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    insta::assert_snapshot!(failing_import(&ctx, "bad.toml"));
}

#[test]
fn bad_empty_manifest() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    edit_manifest(&ctx, "bad", |t| {
        t.lines().next().unwrap().to_string() + "\n"
    });
    insta::assert_snapshot!(failing_import(&ctx, "bad.toml"));
}

#[test]
fn bad_descriptor_with_unknown_key() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    ctx.descriptor("bad", "klgrade = \"kl\"\n");
    insta::assert_snapshot!(failing_import(&ctx, "bad.toml"));
}
