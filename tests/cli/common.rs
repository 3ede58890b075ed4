//! The test context: a temp directory with its own `KTRACK_HOME`, fixtures written by code,
//! output capture with redactions, and a fingerprint of the store and index.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

pub const NOW: &str = "2026-01-01T00:00:00Z";

pub struct TestContext {
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database this test's home keeps its index in, when the suite runs on
    /// PostgreSQL (`KTRACK_TEST_DATABASE_URL` names a server where databases may be created).
    pub database: Option<TestDatabase>,
}

/// The environment variable that runs the CLI suite with every home's index on PostgreSQL.
pub const TEST_DATABASE_URL: &str = "KTRACK_TEST_DATABASE_URL";

impl TestContext {
    #[allow(clippy::disallowed_methods)] // the suite's own setting, not ktrack's
    pub fn new() -> TestContext {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = std::env::var(TEST_DATABASE_URL)
            .ok()
            .filter(|u| !u.is_empty())
            .map(|admin| {
                let db = TestDatabase::create(&admin);
                let home = dir.path().join("home");
                std::fs::create_dir(&home).expect("home");
                std::fs::set_permissions(
                    &home,
                    std::os::unix::fs::PermissionsExt::from_mode(0o700),
                )
                .expect("chmod home");
                std::fs::write(
                    home.join("config.toml"),
                    format!("database = \"{}\"\n", db.url),
                )
                .expect("config.toml");
                db
            });
        TestContext { dir, database }
    }

    /// A context whose home keeps its index in SQLite, whatever the suite runs on.
    pub fn sqlite() -> TestContext {
        TestContext {
            dir: tempfile::tempdir().expect("temp dir"),
            database: None,
        }
    }

    /// A fresh, empty database on the suite's PostgreSQL server (dropped with the value);
    /// panics naming `KTRACK_TEST_DATABASE_URL` when none is configured.
    #[allow(clippy::disallowed_methods)] // the suite's own setting, not ktrack's
    pub fn new_database() -> TestDatabase {
        let admin = std::env::var(TEST_DATABASE_URL)
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "set {TEST_DATABASE_URL} to a PostgreSQL server where databases may be created"
                )
            });
        TestDatabase::create(&admin)
    }

    /// True when this test's index is on PostgreSQL.
    pub fn on_postgres(&self) -> bool {
        self.database.is_some()
    }

    /// Skips a test about the SQLite file itself when the suite runs on PostgreSQL (it runs in
    /// the SQLite pass of the same suite); says so on stderr.
    pub fn sqlite_only(&self, what: &str) -> bool {
        if self.on_postgres() {
            eprintln!("note: `{what}` is about the SQLite file; it runs in the SQLite pass");
        }
        self.on_postgres()
    }

    /// Removes the home's index as a user could: the SQLite file and its side files, or the
    /// PostgreSQL schema.
    pub fn remove_index(&self) {
        match &self.database {
            Some(db) => db.exec(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                ktrack::index::SCHEMA
            )),
            None => {
                for f in ["ktrack.db", "ktrack.db-wal", "ktrack.db-shm"] {
                    let _ = std::fs::remove_file(self.home().join(f));
                }
            }
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The scratch directory of a running run.
    pub fn run_dir_of(&self, id: &str) -> PathBuf {
        self.home().join("runs").join(id)
    }

    pub fn home(&self) -> PathBuf {
        self.root().join("home")
    }

    /// The binary, run in the temp dir with its own home and a pinned clock.
    pub fn ktrack<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::cargo_bin("ktrack").expect("binary built");
        cmd.current_dir(self.root())
            .env("KTRACK_HOME", self.home())
            .env("KTRACK_NOW", NOW)
            .env_remove("KTRACK_LOG")
            .env("NO_COLOR", "1")
            .args(args);
        cmd
    }

    /// The binary as a plain `std::process::Command` (for spawning in the background).
    pub fn spawnable<I, S>(&self, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("ktrack"));
        cmd.current_dir(self.root())
            .env("KTRACK_HOME", self.home())
            .env("KTRACK_NOW", NOW)
            .env_remove("KTRACK_LOG")
            .env("NO_COLOR", "1")
            .args(args);
        cmd
    }

    /// Runs and renders exit code, stdout and stderr with the temp dir redacted.
    pub fn run<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let out = self.ktrack(args).output().expect("binary runs");
        self.render(&out)
    }

    pub fn render(&self, out: &Output) -> String {
        let root = self.root().display().to_string();
        let real = self
            .root()
            .canonicalize()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| root.clone());
        let redact = |s: &[u8]| {
            let text = String::from_utf8_lossy(s).to_string();
            let text = text.replace(&real, "[TEMP]").replace(&root, "[TEMP]");
            redact_timings(&text)
        };
        format!(
            "exit_code: {}\n----- stdout -----\n{}----- stderr -----\n{}",
            out.status.code().unwrap_or(-1),
            redact(&out.stdout),
            redact(&out.stderr)
        )
    }

    /// Runs and expects success; returns stdout.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let out = self.ktrack(args).output().expect("binary runs");
        assert!(
            out.status.success(),
            "command failed:\n{}",
            self.render(&out)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
        std::fs::write(&p, contents).expect("write fixture");
        p
    }

    /// A small cohort under `name/`: `patients` patients × 2 knees × `visits` visits of 16x16
    /// 16-bit PNGs, a manifest and a descriptor `name.toml`. Returns the descriptor path.
    pub fn cohort(&self, name: &str, patients: usize, visits: usize) -> PathBuf {
        let mut csv =
            String::from("sample_id,patient_id,side,visit_month,image_path,kl,incidence_4y\n");
        for p in 0..patients {
            for side in ["L", "R"] {
                for v in 0..visits {
                    let kl = (p * 7 + v + usize::from(side == "R")) % 5;
                    let rel = format!("img/{p:03}_{side}_{v}.png");
                    let px: Vec<u16> = (0..256)
                        .map(|i| ((i * 97 + p * 13 + v * 5 + kl * 1000) % 65535) as u16)
                        .collect();
                    self.write(
                        &format!("{name}/{rel}"),
                        ktrack::data::image::encode_png16(16, 16, &px),
                    );
                    let inc = if v == 0 && kl <= 1 {
                        ((p + 1) % 3 == 0) as u8 as i32
                    } else {
                        -1
                    };
                    let inc = if inc < 0 {
                        String::new()
                    } else {
                        inc.to_string()
                    };
                    csv.push_str(&format!(
                        "P{p:03}_{side}_{v},P{p:03},{side},{},{rel},{kl},{inc}\n",
                        v * 12
                    ));
                }
            }
        }
        self.write(&format!("{name}/manifest.csv"), csv);
        self.descriptor(name, "")
    }

    /// Writes `name.toml` for the cohort in `name/`, with extra TOML appended.
    pub fn descriptor(&self, name: &str, extra_columns: &str) -> PathBuf {
        self.write(
            &format!("{name}.toml"),
            format!(
                "name = \"{name}\"\nmanifest = \"{name}/manifest.csv\"\nimage_root = \"{name}\"\n\n[columns]\n\
                 sample_id = \"sample_id\"\npatient_id = \"patient_id\"\nside = \"side\"\n\
                 visit = \"visit_month\"\nimage = \"image_path\"\nkl = \"kl\"\nincidence_4y = \"incidence_4y\"\n{extra_columns}"
            ),
        )
    }

    /// Every file under `objects/` with its size, and every row of every index table.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut files = BTreeMap::new();
        let objects = self.home().join("objects");
        if objects.exists() {
            for shard in std::fs::read_dir(&objects).expect("objects dir") {
                let shard = shard.expect("entry").path();
                for f in std::fs::read_dir(&shard).expect("shard") {
                    let f = f.expect("entry").path();
                    let len = std::fs::metadata(&f).expect("stat").len();
                    files.insert(
                        f.strip_prefix(&objects)
                            .expect("inside")
                            .display()
                            .to_string(),
                        len,
                    );
                }
            }
        }
        let mut tables = BTreeMap::new();
        let db = self.home().join("ktrack.db");
        if let Some(pg) = &self.database {
            tables = pg.tables();
        } else if db.exists() {
            let index = RawIndex::open(&db);
            let names = index
                .texts("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '_sqlx%' ORDER BY name")
                .expect("tables");
            for name in names {
                let rows = index
                    .texts(&format!(
                        "SELECT quote(json_array(*)) FROM (SELECT * FROM \"{name}\") ORDER BY 1"
                    ))
                    .unwrap_or_default();
                tables.insert(name, rows);
            }
        }
        let tmp_files = std::fs::read_dir(self.home().join("tmp"))
            .map(|d| d.count())
            .unwrap_or(0);
        Fingerprint {
            files,
            tables,
            tmp_files,
        }
    }
}

/// Plain SQL on a home's index file, one connection, for tests that look at it or damage it
/// behind ktrack's back (ktrack itself reaches it only through `ktrack::index`).
pub struct RawIndex {
    rt: tokio::runtime::Runtime,
    pool: sqlx::SqlitePool,
}

impl RawIndex {
    pub fn open(db: &Path) -> RawIndex {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let pool = rt
            .block_on(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect(&format!("sqlite://{}", db.display())),
            )
            .expect("open the index file");
        RawIndex { rt, pool }
    }

    /// The first column of every row, as text.
    pub fn texts(&self, sql: &str) -> Result<Vec<String>, sqlx::Error> {
        self.rt
            .block_on(sqlx::query_scalar(sql).fetch_all(&self.pool))
    }

    /// Runs a statement with text parameters.
    pub fn exec(&self, sql: &str, params: &[&str]) -> Result<(), sqlx::Error> {
        let mut q = sqlx::query(sql);
        for p in params {
            q = q.bind(*p);
        }
        self.rt.block_on(q.execute(&self.pool)).map(|_| ())
    }
}

/// A database of its own for one test on the PostgreSQL server of `KTRACK_TEST_DATABASE_URL`,
/// dropped with the test.
pub struct TestDatabase {
    admin: String,
    name: String,
    pub url: String,
}

impl TestDatabase {
    fn create(admin: &str) -> TestDatabase {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("ktrack_test_{}_{n}", std::process::id());
        let db = TestDatabase {
            admin: admin.to_string(),
            url: with_database(admin, &name),
            name,
        };
        db.admin_exec(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.name));
        db.admin_exec(&format!("CREATE DATABASE {}", db.name));
        db
    }

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn admin_exec(&self, sql: &str) {
        Self::block(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&self.admin)
                .await
                .expect("the test PostgreSQL server");
            sqlx::query(sql).execute(&mut c).await.expect(sql);
        })
    }

    /// Runs a statement in this test's database.
    pub fn exec(&self, sql: &str) {
        Self::block(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("test database");
            sqlx::query(sql).execute(&mut c).await.expect(sql);
        })
    }

    /// Every row of every table of the home's schema, as JSON text, by table.
    pub fn tables(&self) -> BTreeMap<String, Vec<String>> {
        Self::block(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("test database");
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 AND table_name NOT LIKE '_sqlx%' ORDER BY 1",
            )
            .bind(ktrack::index::SCHEMA)
            .fetch_all(&mut c)
            .await
            .expect("tables");
            let mut out = BTreeMap::new();
            for name in names {
                let rows: Vec<String> = sqlx::query_scalar(&format!(
                    "SELECT row_to_json(t)::text FROM {}.\"{name}\" t ORDER BY 1",
                    ktrack::index::SCHEMA
                ))
                .fetch_all(&mut c)
                .await
                .unwrap_or_default();
                out.insert(name, rows);
            }
            out
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let admin = self.admin.clone();
        let _ = std::panic::catch_unwind(move || {
            Self::block(async move {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&sql).execute(&mut c).await;
                }
            })
        });
    }
}

/// `url` with its database (the path) replaced by `name`, keeping any `?query`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
    let authority = rest.split('/').next().unwrap_or_default();
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{scheme}://{authority}/{name}{query}")
}

#[derive(Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub files: BTreeMap<String, u64>,
    pub tables: BTreeMap<String, Vec<String>>,
    pub tmp_files: usize,
}

/// Replaces durations and rates (`1.2s`, `35 MB/s`) so snapshots are stable.
pub fn redact_timings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        let mut redacted = Vec::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            let number = |s: &str| !s.is_empty() && s.parse::<f64>().is_ok();
            let is_secs = w.strip_suffix('s').is_some_and(number);
            let next_is_rate = words
                .get(i + 1)
                .is_some_and(|n| n.starts_with("MB/s") || n.starts_with("images/s"));
            let bare = w.trim_start_matches('(');
            redacted.push(if is_secs {
                "[SECS]".to_string()
            } else if next_is_rate && number(bare) {
                format!("{}[RATE]", &w[..w.len() - bare.len()])
            } else {
                w.to_string()
            });
        }
        out.push_str(&redacted.join(" "));
        out.push('\n');
    }
    out
}

impl TestContext {
    /// A reduced quickstart in the temp dir: four tiny synthetic cohorts (32 px), two
    /// pretraining runs and a small grid. `extra` is appended to the spec.
    pub fn mini_study(&self, grid: &str, extra: &str) -> PathBuf {
        for (kind, patients) in [
            ("oai-like", 24),
            ("most-like", 10),
            ("nyu-like", 16),
            ("hospital", 40),
        ] {
            let labels = match kind {
                "oai-like" | "most-like" => {
                    "kl = \"kl\"\nincidence_4y = \"incidence_4y\"\nprogression_4y = \"progression_4y\"\n"
                }
                "hospital" => "report = \"impression\"\n",
                _ => "",
            };
            self.write(
                &format!("datasets/{kind}.toml"),
                format!(
                    "name = \"{kind}\"\nmanifest = \"data/{kind}/manifest.csv\"\nimage_root = \"data/{kind}\"\n\n[columns]\n\
                     sample_id = \"sample_id\"\npatient_id = \"patient_id\"\nside = \"side\"\nvisit = \"visit_month\"\nimage = \"image_path\"\n{labels}\n\
                     [synth]\nkind = \"{kind}\"\npatients = {patients}\nimage_size = 32\nseed = 3\n"
                ),
            );
        }
        self.write(
            "experiments/mini.toml",
            format!(
                r#"name = "mini"

[cohorts]
train = "../datasets/oai-like.toml"
external = ["../datasets/most-like.toml"]

[split]
train = 0.6
val = 0.2
test = 0.2

[fractions]
values = [0.5, 1.0]

[pretrain.img]
method = "simclr"
data = ["train", "../datasets/nyu-like.toml"]
epochs = 2
batch_size = 16
projection_dim = 16

[pretrain.txt]
method = "clip"
data = ["../datasets/hospital.toml"]
epochs = 2
batch_size = 16
projection_dim = 16
text = {{ max_len = 24, vocab_size = 200, dim = 32, layers = 1, heads = 2 }}

[inits.imagenet]
kind = "torchvision"

[inits.random]
kind = "random"

[inits.img]
kind = "pretrain"
pretrain = "img"

[inits.txt]
kind = "pretrain"
pretrain = "txt"

{grid}

[train]
arch = "resnet-tiny"
image_size = 32

[train.linear]
epochs = 3
batch_size = 16

[train.finetune]
epochs = 2
batch_size = 16

[run]
threads = 2
{extra}"#
            ),
        )
    }

    /// The id of the run labelled `label` in the plan of `spec` (`run --dry-run`).
    pub fn planned_id(&self, spec: &Path, label: &str) -> String {
        let plan = self.ok([
            "run",
            spec.to_str().unwrap(),
            "--dry-run",
            "--format",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&plan).unwrap();
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["label"] == label)
            .unwrap_or_else(|| panic!("no run `{label}` in the plan"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Every run's (label, status, attempts) from the JSON status listing.
    pub fn runs(&self) -> Vec<(String, String, i64)> {
        let out = self.ok(["status", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
        v.as_array()
            .expect("array")
            .iter()
            .map(|r| {
                (
                    r["label"].as_str().unwrap_or_default().to_string(),
                    r["status"].as_str().unwrap_or_default().to_string(),
                    r["attempts"].as_i64().unwrap_or(0),
                )
            })
            .collect()
    }
}

pub const MINI_GRID: &str = r#"[grid]
inits = ["imagenet", "random", "img", "txt"]
tasks = ["kl", "progression_4y"]
protocols = ["linear", "finetune"]
fractions = [0.5]
seeds = [0]"#;
