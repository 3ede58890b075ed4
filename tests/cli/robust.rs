//! Homes that survive what users do to them: a lost, emptied or damaged index is an error with
//! `hint: ktrack reindex`, never a silent empty home; concurrent first use is safe; reindex
//! and gc leave a home verify accepts; a dead holder's run is reported and taken at once; a
//! stale limit below a few heartbeats is refused; bundles are imported all or nothing.

use std::io::Write;

use crate::common::TestContext;

fn imported(ctx: &TestContext) {
    let d = ctx.cohort("c", 3, 1);
    ctx.ok(["data", "import", d.to_str().unwrap()]);
}

fn db(ctx: &TestContext) -> std::path::PathBuf {
    ctx.home().join("ktrack.db")
}

fn remove_db(ctx: &TestContext) {
    ctx.remove_index();
}

/// What a removed index reads as: a missing SQLite file, an empty PostgreSQL schema.
fn gone(ctx: &TestContext) -> &'static str {
    if ctx.on_postgres() {
        "is empty"
    } else {
        "is missing"
    }
}

#[test]
fn a_missing_or_emptied_index_is_an_error_until_reindexed() {
    let ctx = TestContext::new();
    imported(&ctx);
    let before = ctx.ok(["data", "ls", "--format", "csv"]);
    remove_db(&ctx);
    let out = ctx.run(["data", "ls"]);
    assert!(out.starts_with("exit_code: 1"), "{out}");
    assert!(
        out.contains(gone(&ctx)) && out.contains("hint: rebuild it"),
        "{out}"
    );
    assert!(out.contains("ktrack reindex"), "{out}");
    let location = ktrack::index::home::location(&ctx.home(), None).unwrap();
    assert!(
        !ktrack::index::Index::exists(&location).unwrap(),
        "a failed open creates no empty index"
    );
    // A truncated file is the same.
    if !ctx.on_postgres() {
        std::fs::write(db(&ctx), b"").unwrap();
    }
    let out = ctx.run(["status"]);
    assert!(
        out.contains("is empty") && out.contains("ktrack reindex"),
        "{out}"
    );
    ctx.ok(["reindex"]);
    assert_eq!(ctx.ok(["data", "ls", "--format", "csv"]), before);
}

#[test]
fn a_lost_index_without_its_id_file_is_still_noticed() {
    let ctx = TestContext::new();
    imported(&ctx);
    remove_db(&ctx);
    std::fs::remove_file(ctx.home().join("index-id")).unwrap();
    let out = ctx.run(["data", "ls"]);
    assert!(
        out.contains(&format!("{}, but the store holds objects", gone(&ctx)))
            && out.contains("ktrack reindex"),
        "{out}"
    );
}

#[test]
fn a_damaged_or_foreign_index_names_the_fix() {
    let ctx = TestContext::new();
    imported(&ctx);
    let other = TestContext::new();
    imported(&other);
    remove_db(&ctx);
    if let Some(theirs) = &other.database {
        // This home pointed at another home's database.
        std::fs::write(
            ctx.home().join("config.toml"),
            format!("database = \"{}\"\n", theirs.url),
        )
        .unwrap();
    }
    for f in ["ktrack.db", "ktrack.db-wal"] {
        let from = other.home().join(f);
        if from.exists() {
            std::fs::copy(from, ctx.home().join(f)).unwrap();
        }
    }
    let out = ctx.run(["data", "ls"]);
    assert!(
        out.contains("is not this home's") && out.contains("ktrack reindex"),
        "{out}"
    );
    if ctx.sqlite_only("a damaged index file") {
        return;
    }
    // Garbage where the database was.
    remove_db(&ctx);
    std::fs::write(db(&ctx), vec![0x5au8; 8192]).unwrap();
    let out = ctx.run(["data", "ls"]);
    assert!(out.starts_with("exit_code: 1"), "{out}");
    assert!(
        out.contains("is damaged") && out.contains("ktrack reindex"),
        "{out}"
    );
    ctx.ok(["reindex"]);
    ctx.ok(["data", "ls"]);
    assert!(ctx.run(["verify"]).starts_with("exit_code: 0"));
}

#[test]
fn concurrent_first_use_of_a_home_is_safe() {
    for round in 0..4 {
        let ctx = TestContext::new();
        let children: Vec<_> = (0..8)
            .map(|_| {
                ctx.spawnable(["init"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ctx.ok(["status"]);
    }
}

#[test]
fn reindex_leaves_the_old_index_in_place_until_the_new_one_is_whole() {
    let ctx = TestContext::new();
    imported(&ctx);
    if let Some(pg) = &ctx.database {
        // A reindex killed half-way on PostgreSQL leaves a partial schema beside the live one.
        pg.exec("CREATE SCHEMA ktrack_reindex");
        pg.exec("CREATE TABLE ktrack_reindex.objects (junk TEXT)");
        let before = ctx.ok(["data", "ls", "--format", "csv"]);
        let out = ctx.run(["reindex"]);
        assert!(
            out.starts_with("exit_code: 0") && out.contains("ktrack_before_reindex_"),
            "{out}"
        );
        assert_eq!(ctx.ok(["data", "ls", "--format", "csv"]), before);
        assert!(ctx.run(["verify"]).starts_with("exit_code: 0"));
        return;
    }
    // What a reindex killed half-way leaves behind: a partial build beside the index.
    let partial = ctx.home().join("ktrack.db.reindex");
    std::fs::write(&partial, vec![0x11u8; 4096]).unwrap();
    let before = ctx.ok(["data", "ls", "--format", "csv"]);
    assert_eq!(ctx.ok(["data", "ls", "--format", "csv"]), before);
    let out = ctx.run(["reindex"]);
    assert!(out.starts_with("exit_code: 0"), "{out}");
    assert!(!partial.exists());
    assert_eq!(ctx.ok(["data", "ls", "--format", "csv"]), before);
    let kept: Vec<_> = std::fs::read_dir(ctx.home())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("ktrack.db.before-reindex-")
        })
        .collect();
    assert!(!kept.is_empty(), "the previous index is kept");
}

#[test]
fn staging_files_of_a_killed_import_are_removed() {
    let ctx = TestContext::new();
    imported(&ctx);
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let host = ktrack::env::hostname().replace('-', "_");
    let tmp = ctx.home().join("tmp");
    for n in 0..50 {
        std::fs::write(tmp.join(format!("put-{host}-{dead}-{n}")), b"half an image").unwrap();
    }
    let d = ctx.cohort("d", 2, 1);
    ctx.ok(["data", "import", d.to_str().unwrap()]);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

#[test]
fn a_stale_limit_below_a_few_heartbeats_is_refused() {
    let ctx = TestContext::new();
    let spec = ctx.mini_study(
        "[grid]\ninits = [\"random\"]\ntasks = [\"kl\"]\nprotocols = [\"linear\"]\nfractions = [1.0]\nseeds = [0]",
        "",
    );
    let out = ctx.run(["run", spec.to_str().unwrap(), "--stale-after", "5"]);
    assert!(out.starts_with("exit_code: 1"), "{out}");
    assert!(
        out.contains("is too short: a live holder refreshes its heartbeat")
            && out.contains("hint: pass --stale-after 15"),
        "{out}"
    );
    let out = ctx.run(["exec", "0123456789ab", "--stale-after", "2"]);
    assert!(out.contains("is too short"), "{out}");
}

/// A finished study of one probe; returns (its run id, the bundle path).
fn bundled(ctx: &TestContext) -> (String, std::path::PathBuf) {
    let spec = ctx.mini_study(
        "[grid]\ninits = [\"random\"]\ntasks = [\"kl\"]\nprotocols = [\"linear\"]\nfractions = [1.0]\nseeds = [0]",
        "",
    );
    ctx.ok(["run", spec.to_str().unwrap(), "--no-compare"]);
    let v: serde_json::Value =
        serde_json::from_str(&ctx.ok(["status", "--format", "json"])).unwrap();
    let id = v[0]["id"].as_str().unwrap().to_string();
    ctx.ok(["bundle", "write", &id[..10], "-o", "run.tar"]);
    (id, ctx.root().join("run.tar"))
}

/// (name, bytes) of every entry of a tar file.
fn entries(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

fn write_tar(
    path: &std::path::Path,
    entries: &[(String, Vec<u8>)],
    extra: impl FnOnce(&mut tar::Builder<std::fs::File>),
) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    extra(&mut b);
    b.finish().unwrap();
}

/// Imports `bundle` into a fresh home; expects a refusal and an untouched home.
fn refused(ctx: &TestContext, bundle: &std::path::Path, needle: &str) {
    let other = ctx.root().join(format!(
        "other-{}",
        bundle.file_name().unwrap().to_string_lossy()
    ));
    let init = ctx
        .ktrack(["init"])
        .env("KTRACK_HOME", &other)
        .output()
        .unwrap();
    assert!(init.status.success());
    let out = ctx
        .ktrack(["bundle", "import", bundle.to_str().unwrap()])
        .env("KTRACK_HOME", &other)
        .output()
        .unwrap();
    let text = ctx.render(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(needle), "`{needle}` not in:\n{text}");
    let objects = std::fs::read_dir(other.join("objects")).unwrap().count();
    assert_eq!(
        objects, 0,
        "nothing is stored from a refused bundle: {text}"
    );
    assert_eq!(std::fs::read_dir(other.join("tmp")).unwrap().count(), 0);
}

#[test]
fn bundles_are_imported_all_or_nothing() {
    let ctx = TestContext::new();
    let (id, tar) = bundled(&ctx);
    let all = entries(&tar);
    let manifest: serde_json::Value = serde_json::from_slice(&all[0].1).unwrap();

    // An object the manifest lists is missing.
    let missing = ctx.root().join("missing.tar");
    write_tar(&missing, &all[..all.len() - 1], |_| {});
    refused(&ctx, &missing, "but the bundle does not hold it");

    // The manifest names a run the bundle holds no record of.
    let mut m = manifest.clone();
    m["run"] = serde_json::json!(ktrack::id::Hash::of(b"another run").hex());
    let mut e = all.clone();
    e[0].1 = serde_json::to_vec(&m).unwrap();
    let ghost = ctx.root().join("ghost.tar");
    write_tar(&ghost, &e, |_| {});
    refused(&ctx, &ghost, "holds no record of that run");

    // A forged run record: its spec altered, its id kept (stored under its true hash).
    let rec_at = all
        .iter()
        .position(|(n, b)| {
            n.starts_with("objects/")
                && serde_json::from_slice::<serde_json::Value>(b)
                    .is_ok_and(|v| v["ktrack"] == "run" && v["id"] == id.as_str())
        })
        .unwrap();
    let mut rec: serde_json::Value = serde_json::from_slice(&all[rec_at].1).unwrap();
    rec["spec"]["config"]["lr"] = serde_json::json!(0.5);
    let forged_bytes = serde_json::to_vec(&rec).unwrap();
    let forged_hash = ktrack::id::Hash::of(&forged_bytes).hex();
    let mut e = all.clone();
    let old = e[rec_at].0.trim_start_matches("objects/").to_string();
    e[rec_at] = (format!("objects/{forged_hash}"), forged_bytes);
    let mut m = manifest.clone();
    for o in m["objects"].as_array_mut().unwrap() {
        if o == old.as_str() {
            *o = serde_json::json!(forged_hash);
        }
    }
    e[0].1 = serde_json::to_vec(&m).unwrap();
    let forged = ctx.root().join("forged.tar");
    write_tar(&forged, &e, |_| {});
    refused(&ctx, &forged, "the record was altered");

    // Entries that are not plain files with expected names.
    let link = ctx.root().join("link.tar");
    write_tar(&link, &all, |b| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_cksum();
        b.append_link(&mut h, "objects/evil", "/etc/passwd")
            .unwrap();
    });
    refused(&ctx, &link, "is a symbolic link");
    let dotdot = ctx.root().join("dotdot.tar");
    {
        // tar::Builder refuses `..` itself; write the header by hand.
        let mut f = std::fs::File::create(&dotdot).unwrap();
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_size(1);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        f.write_all(h.as_bytes()).unwrap();
        f.write_all(&[b'x'; 512]).unwrap();
        f.write_all(&[0u8; 1024]).unwrap();
    }
    refused(&ctx, &dotdot, "outside the bundle");

    // Not a tar file at all, and a directory.
    let junk = ctx.write("junk.tar", vec![0xffu8; 3000]);
    refused(&ctx, &junk, "is not a ktrack bundle");
    std::fs::create_dir(ctx.root().join("dir.tar")).unwrap();
    refused(
        &ctx,
        &ctx.root().join("dir.tar"),
        "is a directory, not a bundle file",
    );

    // The genuine bundle still imports.
    let other = ctx.root().join("good-home");
    let out = ctx
        .ktrack(["bundle", "import", tar.to_str().unwrap()])
        .env("KTRACK_HOME", &other)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", ctx.render(&out));
}

/// Unmounts a test filesystem when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &std::path::Path, bytes: u64) -> Mounted {
    std::fs::create_dir_all(at).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "mounting a tmpfs needs root (this test is run by name in .ci/run)"
    );
    Mounted(at.to_path_buf())
}

fn du(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(path).unwrap().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    total
}

#[test]
#[ignore = "mounts a small tmpfs (needs root); .ci/run runs it by name"]
fn a_full_disk_stops_the_sweep_with_the_os_error_and_a_rerun_finishes() {
    let ctx = TestContext::new();
    let spec = ctx.mini_study(
        "[grid]\ninits = [\"random\", \"img\"]\ntasks = [\"kl\"]\nprotocols = [\"linear\", \"finetune\"]\nfractions = [1.0]\nseeds = [0]",
        "",
    );
    // How much a finished home takes, measured in a roomy one.
    let roomy = ctx.root().join("roomy");
    let out = ctx
        .ktrack(["run", spec.to_str().unwrap(), "--no-compare"])
        .env("KTRACK_HOME", &roomy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", ctx.render(&out));
    let need = du(&roomy);
    for share in [3, 6] {
        let mnt = ctx.root().join(format!("small-{share}"));
        let fs = mount_tmpfs(&mnt, (need * share / 10).max(64 << 10));
        let home = mnt.join("home");
        let mut child = ctx
            .spawnable(["run", spec.to_str().unwrap(), "--no-compare"])
            .env("KTRACK_HOME", &home)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("`ktrack run` kept going on a full disk");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("No space left on device") || err.contains("database or disk is full"),
            "{err}"
        );
        assert!(err.contains("the filesystem is full"), "{err}");
        // Room again: the rerun finishes and the home verifies.
        let grown = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={}", need * 4 + (16 << 20))])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(grown.success());
        let out = ctx
            .ktrack(["run", spec.to_str().unwrap(), "--no-compare"])
            .env("KTRACK_HOME", &home)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", ctx.render(&out));
        let v = ctx
            .ktrack(["verify"])
            .env("KTRACK_HOME", &home)
            .output()
            .unwrap();
        assert!(v.status.success(), "{}", ctx.render(&v));
        drop(fs);
    }
}

#[test]
fn an_external_cohort_holding_training_patients_is_refused() {
    let ctx = TestContext::new();
    let spec = ctx.mini_study(
        "[grid]\ninits = [\"random\"]\ntasks = [\"kl\"]\nprotocols = [\"linear\"]\nfractions = [1.0]\nseeds = [0]",
        "",
    );
    let text = std::fs::read_to_string(&spec).unwrap().replace(
        "external = [\"../datasets/most-like.toml\"]",
        "external = [\"../datasets/oai-like.toml\"]",
    );
    std::fs::write(&spec, text).unwrap();
    let out = ctx.run(["run", spec.to_str().unwrap()]);
    assert!(out.starts_with("exit_code: 1"), "{out}");
    assert!(
        out.contains("external cohort `oai-like`") && out.contains("is not external: it shares"),
        "{out}"
    );
    assert!(
        out.contains("hint: an external validation cohort must hold none"),
        "{out}"
    );
    assert!(ctx.runs().is_empty(), "nothing was planned");
}

#[test]
fn reindex_refuses_a_damaged_record_instead_of_filling_in_defaults() {
    use std::os::unix::fs::PermissionsExt;
    let ctx = TestContext::new();
    imported(&ctx);
    ctx.ok(["data", "split", "c", "--stratify", "kl"]);
    // Find the split record and drop a field from it.
    let objects = ctx.home().join("objects");
    let mut damaged = None;
    for shard in std::fs::read_dir(&objects).unwrap().flatten() {
        for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let text = std::fs::read_to_string(f.path()).unwrap_or_default();
            if text.starts_with("{\"") && text.contains("\"ktrack\":\"split\"") {
                let hex = format!(
                    "{}{}",
                    shard.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                );
                let broken = text.replace("\"seed\":", "\"sead\":");
                std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
                std::fs::write(f.path(), broken).unwrap();
                damaged = Some(hex);
            }
        }
    }
    let hex = damaged.expect("a split record");
    let out = ctx.run(["reindex"]);
    assert!(out.starts_with("exit_code: 1"), "{out}");
    assert!(
        out.contains(&format!("record {}", &hex[..12])) || out.contains(&hex),
        "{out}"
    );
    assert!(
        out.contains("is malformed") && out.contains("seed"),
        "{out}"
    );
    // The old index is still in place.
    ctx.ok(["data", "ls"]);
}

#[test]
fn a_worker_stopped_past_the_stale_limit_cannot_record_its_result() {
    let ctx = TestContext::new();
    let spec = ctx.mini_study(
        "[grid]\ninits = [\"img\"]\ntasks = [\"kl\"]\nprotocols = [\"linear\"]\nfractions = [1.0]\nseeds = [0]",
        "",
    );
    // Long enough a pretraining that the first worker is stopped in the middle of it.
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replacen("epochs = 2", "epochs = 12", 1)).unwrap();
    let pretrain = ctx.planned_id(&spec, "pretrain img (simclr)");
    let spawn = || {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("ktrack"))
            .current_dir(ctx.root())
            .env("KTRACK_HOME", ctx.home())
            .env("NO_COLOR", "1")
            .args(["exec", &pretrain[..12], "--stale-after", "15"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let status_of = || {
        ctx.runs()
            .into_iter()
            .find(|r| r.0 == "pretrain img (simclr)")
            .unwrap()
    };
    let first = spawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while status_of().1 != "running" {
        assert!(std::time::Instant::now() < deadline, "never claimed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(800));
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &first.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    signal("-STOP");
    // Past the stale limit (15 s) another worker takes the run over and finishes it.
    std::thread::sleep(std::time::Duration::from_secs(16));
    let second = spawn().wait_with_output().unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(
        status_of(),
        ("pretrain img (simclr)".into(), "done".into(), 2)
    );
    // The stopped worker, continued, learns it lost the claim and records nothing.
    signal("-CONT");
    let first = first.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(1), "{err}");
    assert!(
        err.contains("was taken over while this worker") && err.contains("hint:"),
        "{err}"
    );
    assert_eq!(
        status_of(),
        ("pretrain img (simclr)".into(), "done".into(), 2)
    );
    assert!(
        !ctx.home().join("runs").join(&pretrain).exists(),
        "the stopped worker's scratch is removed"
    );
    let verify = ctx.run(["verify"]);
    assert!(verify.starts_with("exit_code: 0"), "{verify}");
}
