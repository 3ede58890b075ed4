//! Many workers on one index, as a cluster runs them (and as the suite's PostgreSQL pass runs
//! them on PostgreSQL): eight `exec`s of one run train it once; a worker killed mid-epoch is
//! reclaimed and its run finishes once, bit-identical to an uninterrupted run; a database
//! server restarted mid-sweep costs a rerun, never a run marked done without its record; a
//! home's index moves to PostgreSQL with `index migrate`; SQLite on a network filesystem is
//! refused.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::TestContext;

const ONE_RUN: &str = r#"[grid]
inits = ["random"]
tasks = ["kl"]
protocols = ["finetune"]
fractions = [1.0]
seeds = [0]"#;

/// A one-run study whose fine-tune lasts `epochs` epochs.
fn one_run(ctx: &TestContext, epochs: usize) -> std::path::PathBuf {
    let spec = ctx.mini_study(ONE_RUN, "");
    let text = std::fs::read_to_string(&spec).unwrap().replace(
        "[train.finetune]\nepochs = 2",
        &format!("[train.finetune]\nepochs = {epochs}\npatience = {epochs}"),
    );
    std::fs::write(&spec, text).unwrap();
    ctx.ok(["run", spec.to_str().unwrap(), "--dry-run"]);
    spec
}

/// The record of a done run: its metrics and the objects it wrote (checkpoint, predictions).
fn results(ctx: &TestContext, id: &str) -> (serde_json::Value, Vec<(String, String)>) {
    let record = ctx.ok(["show", id, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&record).unwrap();
    let rec = &v["record"];
    let outputs = rec["outputs"]
        .as_object()
        .unwrap_or_else(|| panic!("no outputs in {v}"))
        .iter()
        .filter(|(role, _)| *role == "checkpoint" || role.starts_with("predictions:"))
        .map(|(role, h)| (role.clone(), h.as_str().unwrap().to_string()))
        .collect();
    (rec["metrics"].clone(), outputs)
}

#[test]
fn eight_workers_exec_one_run_and_exactly_one_trains_it() {
    let ctx = TestContext::new();
    let spec = one_run(&ctx, 3);
    let id = ctx.planned_id(&spec, "kl finetune random 100% seed 0");
    let workers: Vec<_> = (0..8)
        .map(|_| {
            ctx.spawnable(["exec", &id])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = workers
        .into_iter()
        .map(|w| w.wait_with_output().unwrap())
        .collect();
    let texts: Vec<String> = outs.iter().map(|o| ctx.render(o)).collect();
    let trained = texts.iter().filter(|t| t.contains("Finished")).count();
    assert_eq!(
        trained,
        1,
        "exactly one worker trains:\n{}",
        texts.join("\n")
    );
    for t in &texts {
        assert!(
            !t.contains("database is locked") && !t.contains("panicked"),
            "{t}"
        );
    }
    let runs = ctx.runs();
    assert_eq!(
        runs.iter().map(|r| (r.1.as_str(), r.2)).collect::<Vec<_>>(),
        [("done", 1)],
        "claimed once, done once: {runs:?}"
    );
    assert!(ctx.run(["verify"]).starts_with("exit_code: 0"));
}

#[test]
fn a_worker_killed_mid_epoch_is_reclaimed_and_its_run_matches_an_uninterrupted_one() {
    let whole = TestContext::new();
    let spec = one_run(&whole, 6);
    let id = whole.planned_id(&spec, "kl finetune random 100% seed 0");
    whole.ok(["exec", &id]);
    let expected = results(&whole, &id);

    let ctx = TestContext::new();
    let spec = one_run(&ctx, 6);
    assert_eq!(ctx.planned_id(&spec, "kl finetune random 100% seed 0"), id);
    let mut worker = ctx
        .spawnable(["exec", &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill -9 once the first epoch's checkpoint is written: the worker is inside epoch 2.
    let current = ctx.run_dir_of(&id).join("checkpoints/current");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !current.exists() {
        assert!(Instant::now() < deadline, "no checkpoint was written");
        assert!(
            worker.try_wait().unwrap().is_none(),
            "the worker finished before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert_eq!(
        ctx.runs()[0].1,
        "running",
        "the dead worker's claim is still held"
    );
    // Another worker takes the dead holder's claim and resumes from the checkpoint.
    ctx.ok(["exec", &id]);
    let runs = ctx.runs();
    assert_eq!((runs[0].1.as_str(), runs[0].2), ("done", 2), "{runs:?}");
    assert_eq!(
        results(&ctx, &id),
        expected,
        "bit-identical to the uninterrupted run"
    );
    let again = ctx.run(["exec", &id]);
    assert!(again.contains("had already finished"), "{again}");
}

/// On PostgreSQL only: `KTRACK_TEST_PG_RESTART` is a command that restarts the server of the
/// suite's database (`.ci/run` sets it inside its throwaway cluster and runs this by name).
#[test]
#[ignore = "restarts the PostgreSQL server; .ci/run runs it by name with KTRACK_TEST_PG_RESTART set"]
#[allow(clippy::disallowed_methods)] // the suite's own setting, not ktrack's
fn a_database_restart_mid_sweep_is_finished_by_a_rerun_with_every_record_in_place() {
    let ctx = TestContext::new();
    let restart = std::env::var("KTRACK_TEST_PG_RESTART")
        .expect("KTRACK_TEST_PG_RESTART names the command that restarts the server");
    assert!(ctx.on_postgres(), "run with KTRACK_TEST_DATABASE_URL set");
    let grid = r#"[grid]
inits = ["random"]
tasks = ["kl", "progression_4y"]
protocols = ["linear", "finetune"]
fractions = [0.5, 1.0]
seeds = [0]"#;
    let spec = ctx.mini_study(grid, "");
    ctx.ok(["run", spec.to_str().unwrap(), "--dry-run"]);
    let sweep = ctx
        .spawnable(["run", spec.to_str().unwrap(), "--no-compare"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Restart once some runs are done and others are not.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = ctx.runs().iter().filter(|r| r.1 == "done").count();
        if done >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no run finished");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = std::process::Command::new("sh")
        .args(["-c", &restart])
        .status()
        .unwrap();
    assert!(status.success(), "`{restart}` failed");
    let first = sweep.wait_with_output().unwrap();
    let first_text = ctx.render(&first);
    // The rerun finishes the sweep (reclaiming what the lost connection left running).
    let rerun = ctx.run([
        "run",
        spec.to_str().unwrap(),
        "--no-compare",
        "--stale-after",
        "15",
    ]);
    assert!(rerun.starts_with("exit_code: 0"), "{first_text}\n{rerun}");
    let runs = ctx.runs();
    assert_eq!(runs.len(), 8, "{runs:?}");
    assert!(runs.iter().all(|r| r.1 == "done"), "{runs:?}");
    // Every done run has its record and outputs: verify re-hashes them all.
    let verify = ctx.run(["verify"]);
    assert!(verify.starts_with("exit_code: 0"), "{verify}");
    let status: serde_json::Value =
        serde_json::from_str(&ctx.ok(["status", "--format", "json"])).unwrap();
    for r in status.as_array().unwrap() {
        assert!(
            r["record"].is_string(),
            "a done run without its record: {r}"
        );
    }
}

/// Moves a SQLite home's index to PostgreSQL: the same tables, compare and status as before,
/// the home's `config.toml` names the database, and a second home cannot take it over.
#[test]
#[ignore = "needs a PostgreSQL server; .ci/run runs it by name with KTRACK_TEST_DATABASE_URL set"]
fn index_migrate_moves_a_home_to_postgresql() {
    let ctx = TestContext::sqlite();
    let grid = r#"[grid]
inits = ["random"]
tasks = ["kl"]
protocols = ["linear"]
fractions = [0.5, 1.0]
seeds = [0, 1]"#;
    let spec = ctx.mini_study(grid, "");
    ctx.ok(["run", spec.to_str().unwrap(), "--no-compare"]);
    let compare = ctx.ok(["compare", "--format", "csv", "--bootstrap", "100"]);
    let status = ctx.ok(["status", "--format", "json"]);
    let ls = ctx.ok(["data", "ls", "--format", "csv"]);
    assert!(ctx.ok(["index", "where"]).trim().ends_with("ktrack.db"));
    let db = TestContext::new_database();
    let out = ctx.run(["index", "migrate", "--to", &db.url]);
    assert!(
        out.starts_with("exit_code: 0") && out.contains("Migrated") && out.contains("4 runs"),
        "{out}"
    );
    let config = std::fs::read_to_string(ctx.home().join("config.toml")).unwrap();
    assert!(config.contains(&db.url), "{config}");
    // The password (if the URL has one) is never shown.
    assert_eq!(
        ctx.ok(["index", "where"]).trim(),
        ktrack::index::redact_password(&db.url)
    );
    // Everything reads the same from PostgreSQL (the SQLite file stays, unused).
    assert_eq!(
        ctx.ok(["compare", "--format", "csv", "--bootstrap", "100"]),
        compare
    );
    assert_eq!(ctx.ok(["status", "--format", "json"]), status);
    assert_eq!(ctx.ok(["data", "ls", "--format", "csv"]), ls);
    assert!(ctx.run(["verify"]).starts_with("exit_code: 0"));
    let again = ctx.run(["run", spec.to_str().unwrap(), "--no-compare"]);
    assert!(
        again.starts_with("exit_code: 0") && !again.contains("Finished"),
        "{again}"
    );
    // Another home may not migrate into a database that holds this one's index.
    let other = TestContext::sqlite();
    other.ok(["init"]);
    let refused = other.run(["index", "migrate", "--to", &db.url]);
    assert!(
        refused.starts_with("exit_code: 1")
            && refused.contains("already holds another home's index"),
        "{refused}"
    );
    // A second migrate of the same home rebuilds in place, keeping the old schema aside.
    let out = ctx.run(["index", "migrate", "--to", &db.url]);
    assert!(out.starts_with("exit_code: 0"), "{out}");
    assert_eq!(ctx.ok(["status", "--format", "json"]), status);
}

/// A home on a FUSE mount (bindfs over a temp dir, as a network filesystem looks to statfs)
/// with a SQLite index is refused before anything is written, with the PostgreSQL hint.
#[test]
#[ignore = "mounts a FUSE filesystem (needs bindfs and /dev/fuse); .ci/run runs it by name"]
fn a_sqlite_index_on_a_network_filesystem_is_refused() {
    let ctx = TestContext::sqlite();
    let (under, mnt) = (ctx.root().join("under"), ctx.root().join("mnt"));
    std::fs::create_dir_all(&under).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("bindfs")
        .args([&under, &mnt])
        .status()
        .expect("bindfs");
    assert!(mounted.success(), "bindfs could not mount");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("fusermount")
                .arg("-u")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let home = mnt.join("home");
    let out = ctx.render(
        &ctx.ktrack(["init"])
            .env("KTRACK_HOME", &home)
            .env_remove("KTRACK_DATABASE_URL")
            .output()
            .unwrap(),
    );
    assert!(
        out.starts_with("exit_code: 1")
            && out.contains("is on FUSE, where a SQLite index is not safe")
            && out.contains("KTRACK_DATABASE_URL")
            && out.contains("ktrack index migrate"),
        "{out}"
    );
    assert!(!home.exists(), "nothing is created before the refusal");
}

/// A database URL that is not PostgreSQL's is refused by name, wherever it comes from, and
/// nothing is created.
#[test]
fn a_database_url_that_is_not_postgresql_is_refused() {
    let ctx = TestContext::sqlite();
    let out = ctx.run(["--database", "mysql://ann:pw@db/x", "init"]);
    assert!(
        out.starts_with("exit_code: 1")
            && out.contains("--database (or KTRACK_DATABASE_URL) names `mysql://ann:***@db/x`, which is not a PostgreSQL URL")
            && !out.contains("pw@"),
        "{out}"
    );
    let out = ctx.run(["index", "migrate", "--to", "sqlite:///tmp/x.db"]);
    assert!(
        out.starts_with("exit_code: 1") && out.contains("--to names `sqlite:///tmp/x.db`"),
        "{out}"
    );
    std::fs::create_dir_all(ctx.home()).unwrap();
    std::fs::write(
        ctx.home().join("config.toml"),
        "databse = \"postgres://x/y\"\n",
    )
    .unwrap();
    let out = ctx.run(["status"]);
    assert!(
        out.starts_with("exit_code: 1") && out.contains("config.toml") && out.contains("databse"),
        "{out}"
    );
    assert!(!ctx.home().join("ktrack.db").exists());
}
