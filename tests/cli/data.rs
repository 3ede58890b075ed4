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

#[test]
fn bad_duplicate_column_names_both_positions() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    edit_manifest(&ctx, "bad", |t| t.replacen("kl,incidence_4y", "kl,kl", 1));
    let out = failing_import(&ctx, "bad.toml");
    assert!(
        out.contains("has two columns named `kl`: columns 6 and 7"),
        "{out}"
    );
}

#[test]
fn bad_control_character_in_an_id() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    edit_manifest(&ctx, "bad", |t| t.replacen("P001,", "P0\u{0}01,", 1));
    let out = failing_import(&ctx, "bad.toml");
    assert!(
        out.contains("field `patient_id`") && out.contains("control character U+0000"),
        "{out}"
    );
}

#[test]
fn bad_truncated_jpeg() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    let img =
        image::GrayImage::from_fn(64, 64, |x, y| image::Luma([((x * 3 + y * 5) % 256) as u8]));
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageLuma8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    // The whole JPEG imports; cut short, it is refused.
    jpeg.truncate(jpeg.len() - 40);
    ctx.write("bad/img/001_R_0.png", &jpeg);
    let out = failing_import(&ctx, "bad.toml");
    assert!(out.contains("is a truncated JPEG"), "{out}");
}

/// A valid PNG header claiming `width` × `height` pixels, with a tiny body.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut png = ktrack::data::image::encode_png16(2, 2, &[1, 2, 3, 4]);
    // IHDR data starts at byte 16 (8 signature + 4 length + 4 type); its CRC follows 13 bytes.
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

#[test]
fn bad_image_too_large_is_refused_from_its_header() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    ctx.write("bad/img/001_R_0.png", png_claiming(33_000, 33_000));
    let out = failing_import(&ctx, "bad.toml");
    assert!(
        out.contains("33000x33000 pixels, more than the limit of 100000000 pixels"),
        "{out}"
    );
}

#[test]
fn bad_manifest_that_is_a_directory() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    let m = ctx.root().join("bad/manifest.csv");
    std::fs::remove_file(&m).unwrap();
    std::fs::create_dir(&m).unwrap();
    let out = failing_import(&ctx, "bad.toml");
    assert!(out.contains("is a directory, not a table file"), "{out}");
}

#[test]
fn bad_huge_descriptor_line_is_not_echoed() {
    let ctx = TestContext::new();
    ctx.cohort("bad", 3, 1);
    let huge = format!("name = \"{}", "x".repeat(30 << 20));
    ctx.write("huge.toml", huge);
    let out = failing_import(&ctx, "huge.toml");
    assert!(
        out.contains("is invalid"),
        "{}",
        &out[..out.len().min(2000)]
    );
    assert!(out.len() < 4000, "the error is {} bytes long", out.len());
}

#[test]
fn bad_list_typed_parquet_id() {
    use arrow::array::{ArrayRef, ListBuilder, StringArray, StringBuilder};
    use std::sync::Arc;
    let ctx = TestContext::new();
    ctx.cohort("bad", 1, 1);
    let mut ids = ListBuilder::new(StringBuilder::new());
    for id in ["P000_L_0", "P000_R_0"] {
        ids.values().append_value(id);
        ids.append(true);
    }
    let col = |v: &[&str]| -> ArrayRef { Arc::new(StringArray::from(v.to_vec())) };
    let batch = arrow::record_batch::RecordBatch::try_from_iter([
        ("sample_id", Arc::new(ids.finish()) as ArrayRef),
        ("patient_id", col(&["P000", "P000"])),
        ("side", col(&["L", "R"])),
        ("visit_month", col(&["0", "0"])),
        ("image_path", col(&["img/000_L_0.png", "img/000_R_0.png"])),
        ("kl", col(&["0", "1"])),
        ("incidence_4y", col(&["", ""])),
    ])
    .unwrap();
    let mut bytes = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    ctx.write("bad/manifest.parquet", &bytes);
    let d = std::fs::read_to_string(ctx.root().join("bad.toml"))
        .unwrap()
        .replace("manifest.csv", "manifest.parquet");
    ctx.write("bad.toml", d);
    let out = failing_import(&ctx, "bad.toml");
    assert!(out.contains("column `sample_id` holds List"), "{out}");
}
