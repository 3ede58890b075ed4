//! Auditing: lineage, reproduction by hash (IDENTICAL on the CPU), verify (a flipped bit, a
//! deleted object, a dangling index row), gc (never a reachable object), reindex (same
//! tables), and bundles across two store directories.

use std::collections::BTreeMap;

use crate::common::{RawIndex, TestContext};

const GRID: &str = r#"[grid]
inits = ["random", "img"]
tasks = ["kl"]
protocols = ["linear"]
fractions = [1.0]
seeds = [0]"#;

/// A finished mini sweep; returns the id of its `img` probe.
fn study(ctx: &TestContext) -> String {
    let spec = ctx.mini_study(GRID, "");
    ctx.ok(["run", spec.to_str().unwrap(), "--no-compare"]);
    let v: serde_json::Value =
        serde_json::from_str(&ctx.ok(["status", "--format", "json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|r| r["label"] == "kl linear img 100% seed 0")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn object_path(ctx: &TestContext, hex: &str) -> std::path::PathBuf {
    ctx.home().join("objects").join(&hex[..2]).join(&hex[2..])
}

#[test]
fn show_and_reproduce() {
    let ctx = TestContext::new();
    let id = study(&ctx);
    let show = ctx.ok(["show", &id[..8]]);
    for needle in [
        "├── cohort",
        "└── split",
        "└── fraction",
        "init: encoder of pretraining run",
        "pretrain img (simclr)",
        "checkpoint",
        "predictions:test",
        "environment: ktrack",
        "resolved spec:",
    ] {
        assert!(show.contains(needle), "`{needle}` missing from:\n{show}");
    }
    let out = ctx.run(["reproduce", &id[..8]]);
    assert!(out.starts_with("exit_code: 0"), "{out}");
    assert!(out.contains("verdict: IDENTICAL"), "{out}");
    let show = ctx.ok(["show", &id[..8]]);
    assert!(
        show.contains("reproduced") && show.contains("IDENTICAL"),
        "the reproduction is recorded: {show}"
    );
    // The pretraining run reproduces too.
    let v: serde_json::Value =
        serde_json::from_str(&ctx.ok(["status", "--format", "json"])).unwrap();
    let pretrain = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "pretrain")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = ctx.run(["reproduce", &pretrain[..8]]);
    assert!(out.contains("verdict: IDENTICAL"), "{out}");
}

#[test]
fn verify_finds_a_flipped_bit_a_deleted_object_and_a_dangling_row() {
    let ctx = TestContext::new();
    let id = study(&ctx);
    let clean = ctx.run(["verify"]);
    assert!(
        clean.starts_with("exit_code: 0") && clean.contains("0 corrupt, 0 missing, 0 dangling"),
        "{clean}"
    );

    // One flipped bit in a checkpoint.
    let status: serde_json::Value =
        serde_json::from_str(&ctx.ok(["status", "--format", "json"])).unwrap();
    let record = status
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap()["record"]
        .as_str()
        .unwrap()
        .to_string();
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(object_path(&ctx, &record)).unwrap())
            .unwrap();
    let ckpt = rec["outputs"]["checkpoint"].as_str().unwrap().to_string();
    let p = object_path(&ctx, &ckpt);
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(&p, &bytes).unwrap();
    let out = ctx.run(["verify"]);
    assert!(
        out.starts_with("exit_code: 1") && out.contains("corrupt") && out.contains(&ckpt),
        "{out}"
    );
    // Put the bit back.
    bytes[n / 2] ^= 0x01;
    std::fs::write(&p, &bytes).unwrap();

    // One deleted object.
    let preds = rec["outputs"]["predictions:test"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(object_path(&ctx, &preds)).unwrap();
    let out = ctx.run(["verify"]);
    assert!(
        out.starts_with("exit_code: 1") && out.contains("missing") && out.contains(&preds),
        "{out}"
    );

    // One dangling index row.
    let ctx2 = TestContext::new();
    if ctx2.sqlite_only("a row made behind the index's back") {
        return;
    }
    let id2 = study(&ctx2);
    let index = RawIndex::open(&ctx2.home().join("ktrack.db"));
    let ghost = ktrack::id::Hash::of(b"ghost").hex();
    let insert = "INSERT INTO run_outputs (run, role, hash) VALUES (?1, 'extra', ?2)";
    index.exec("PRAGMA foreign_keys = ON", &[]).unwrap();
    index.exec(insert, &[&id2, &ghost]).unwrap_err(); // the foreign key to objects refuses it…
    // …so it is made behind the index's back.
    index.exec("PRAGMA foreign_keys = OFF", &[]).unwrap();
    index.exec(insert, &[&id2, &ghost]).unwrap();
    drop(index);
    let out = ctx2.run(["verify"]);
    assert!(
        out.starts_with("exit_code: 1") && out.contains("dangling") && out.contains(&ghost),
        "{out}"
    );
}

#[test]
fn gc_never_deletes_a_reachable_object() {
    let ctx = TestContext::new();
    study(&ctx);
    // An unreachable object: a stray put.
    let k = ktrack::context::Ktrack::open(&ctx.home()).unwrap();
    let stray = k.store.put_bytes(b"nobody refers to me").unwrap().hash;
    drop(k);
    let young = ctx.ok(["gc", "--format", "json"]);
    assert!(young.contains("\"young\": 1"), "{young}");
    let listed = ctx.ok(["gc", "--min-age", "0", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let unreachable: Vec<&str> = v["unreachable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_str().unwrap())
        .collect();
    assert_eq!(
        unreachable,
        vec![stray.hex().as_str()],
        "only the stray object is unreachable"
    );
    ctx.ok(["gc", "--min-age", "0", "--apply"]);
    assert!(!object_path(&ctx, &stray.hex()).exists());
    let after = ctx.run(["verify"]);
    assert!(
        after.starts_with("exit_code: 0"),
        "every reachable object survived: {after}"
    );
}

#[test]
fn reindex_rebuilds_the_same_tables() {
    let ctx = TestContext::new();
    study(&ctx);
    let before = ctx.ok(["compare", "--format", "csv", "--bootstrap", "100"]);
    let status_before = ctx.ok(["status", "mini", "--format", "csv"]);
    // file_stats is a cache of file hashes (not rebuilt); the rest is the catalogue.
    let counts = || -> BTreeMap<String, String> {
        ctx.fingerprint()
            .tables
            .into_iter()
            .filter(|(t, _)| t != "file_stats")
            .map(|(t, rows)| (t, rows.len().to_string()))
            .collect()
    };
    let tables_before = counts();
    ctx.remove_index();
    let out = ctx.run(["reindex"]);
    let cohorts = &tables_before["cohorts"];
    assert!(out.contains(&format!(" {cohorts} cohorts")), "{out}");
    assert!(out.contains("3 runs, 1 sweeps"), "{out}");
    assert_eq!(
        counts(),
        tables_before,
        "row counts per table after reindex"
    );
    assert_eq!(
        ctx.ok(["compare", "--format", "csv", "--bootstrap", "100"]),
        before
    );
    assert_eq!(ctx.ok(["status", "mini", "--format", "csv"]), status_before);
    let verify = ctx.run(["verify"]);
    assert!(verify.starts_with("exit_code: 0"), "{verify}");
}

#[test]
fn a_bundle_reproduces_in_another_store() {
    let ctx = TestContext::new();
    let id = study(&ctx);
    ctx.ok(["bundle", "write", &id[..8], "-o", "run.tar"]);
    let other = ctx.root().join("elsewhere");
    let import = ctx
        .ktrack(["bundle", "import", "run.tar"])
        .env("KTRACK_HOME", &other)
        .output()
        .unwrap();
    assert!(import.status.success(), "{}", ctx.render(&import));
    let out = ctx
        .ktrack(["reproduce", &id[..8]])
        .env("KTRACK_HOME", &other)
        .output()
        .unwrap();
    let text = ctx.render(&out);
    assert!(
        out.status.success() && text.contains("verdict: IDENTICAL"),
        "{text}"
    );
    // A tampered bundle is refused.
    let mut tar = std::fs::read(ctx.root().join("run.tar")).unwrap();
    let at = tar.len() / 2;
    tar[at] ^= 0xff;
    std::fs::write(ctx.root().join("bad.tar"), tar).unwrap();
    let third = ctx.root().join("third");
    let bad = ctx
        .ktrack(["bundle", "import", "bad.tar"])
        .env("KTRACK_HOME", &third)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1), "{}", ctx.render(&bad));
}
