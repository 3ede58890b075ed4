//! `compare` renderings and plots, `plot roc`, and `export` read back with arrow-rs.

use crate::common::TestContext;

const GRID: &str = r#"[grid]
inits = ["random", "img"]
tasks = ["progression_4y"]
protocols = ["linear"]
fractions = [0.5, 1.0]
seeds = [0, 1]"#;

#[test]
fn compare_formats_plots_roc_and_export() {
    let ctx = TestContext::new();
    let spec = ctx.mini_study(GRID, "");
    ctx.ok(["run", spec.to_str().unwrap(), "--no-compare"]);

    // Two seeds per cell: mean with a t-interval and a paired t-test over seeds.
    let json = ctx.ok(["compare", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let cell = &v[0]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c[0] == "img")
        .unwrap()[2];
    assert_eq!(cell["seeds"], 2);
    assert_eq!(cell["test"], "paired t over seeds");
    let md = ctx.ok(["compare", "--format", "md"]);
    assert!(
        md.contains("| init | test 50% | test 100% | most-like 50% | most-like 100% |"),
        "{md}"
    );
    let latex = ctx.ok(["compare", "--format", "latex"]);
    assert!(
        latex.contains("\\begin{tabular}") && latex.contains("50\\%"),
        "{latex}"
    );
    // Other axes: rows by eval set, columns by init.
    let swapped = ctx.ok([
        "compare", "--rows", "eval", "--cols", "init", "--format", "csv",
    ]);
    assert!(
        swapped.contains(",eval,test,init,img,auroc,2,"),
        "{swapped}"
    );
    let same = ctx.run(["compare", "--rows", "init", "--cols", "init"]);
    assert!(
        same.starts_with("exit_code: 1") && same.contains("different axes"),
        "{same}"
    );

    for plot in ["fractions.svg", "fractions.png"] {
        ctx.ok(["compare", "--plot", plot]);
        assert!(
            std::fs::metadata(ctx.root().join(plot)).unwrap().len() > 1000,
            "{plot}"
        );
    }
    let svg = std::fs::read_to_string(ctx.root().join("fractions.svg")).unwrap();
    assert!(
        svg.contains(">label fraction<") && svg.contains(">img</text>"),
        "the SVG carries axis and legend text"
    );

    let status: serde_json::Value =
        serde_json::from_str(&ctx.ok(["status", "--format", "json"])).unwrap();
    let ids: Vec<String> = status
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["kind"] == "downstream" && r["label"].as_str().unwrap().contains("100% seed 0")
        })
        .map(|r| r["id"].as_str().unwrap()[..10].to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    ctx.ok([
        "plot",
        "roc",
        &ids[0],
        &ids[1],
        "--eval",
        "most-like",
        "-o",
        "roc.svg",
    ]);
    assert!(
        std::fs::read_to_string(ctx.root().join("roc.svg"))
            .unwrap()
            .contains("AUROC")
    );

    ctx.ok(["export", "--format", "parquet", "-o", "out"]);
    let read = |name: &str| {
        ktrack::table::read(&std::fs::read(ctx.root().join("out").join(name)).unwrap())
            .unwrap()
            .batch
    };
    let runs = read("runs.parquet");
    assert_eq!(
        runs.num_rows(),
        9,
        "8 downstream runs and the pretraining run"
    );
    for col in [
        "run", "kind", "label", "status", "init", "task", "protocol", "fraction", "seed", "record",
    ] {
        assert!(runs.column_by_name(col).is_some(), "runs.{col}");
    }
    let metrics = read("metrics.parquet");
    assert!(metrics.num_rows() >= 8 * 3 * 3, "{}", metrics.num_rows());
    let lineage = read("lineage.parquet");
    let direction = ktrack::table::strings(&lineage, "direction").unwrap();
    assert!((0..lineage.num_rows()).any(|i| direction.value(i) == "input"));
    assert!((0..lineage.num_rows()).any(|i| direction.value(i) == "output"));
    ctx.ok(["export", "--format", "csv", "-o", "csv", "--sweep", "mini"]);
    let csv = std::fs::read_to_string(ctx.root().join("csv/runs.csv")).unwrap();
    assert!(csv.starts_with("run,kind,label,status,attempts,error,record,started_at,finished_at,init,task,protocol,fraction,seed,arch\n"), "{csv}");
    assert_eq!(csv.lines().count(), 10);
}

/// Snapshots of what people read, on a small fixed sweep: `status`, `compare` (table, md,
/// json), `show` and `reproduce`. Seeded CPU runs and a pinned clock make every number and
/// hash stable; only machine facts (host, OS, toolchain, commit, timings) are redacted.
mod snapshots {
    use crate::common::TestContext;

    const GRID: &str = r#"[grid]
inits = ["random", "img"]
tasks = ["kl"]
protocols = ["linear"]
fractions = [1.0]
seeds = [0]"#;

    /// Redacts what differs between machines and runs: host, OS, toolchain, commit, times,
    /// and the objects that hold them (logs, curves with their seconds, records).
    fn machine_facts(text: &str) -> String {
        let timed = regex::Regex::new(r"\b(curves|log|record)(\s+)[0-9a-f]{12,64}\b").unwrap();
        let text = timed.replace_all(text, "$1$2[HASH]");
        // Trained weights and predictions are bit-identical on one machine, but matrix kernels
        // chosen at run time (AVX2, AVX-512) may round differently on another: their hashes
        // and the digits past the third are not part of the snapshot.
        let trained =
            regex::Regex::new(r"\b(checkpoint|encoder|predictions:[\w-]+)(\s+)[0-9a-f]{64}\b")
                .unwrap();
        let text = trained.replace_all(&text, "$1$2[TRAINED]");
        let short = regex::Regex::new(r"┆ [0-9a-f]{12} ").unwrap();
        let text = short.replace_all(&text, "┆ [TRAINED]    ");
        let digits = regex::Regex::new(r"(\d\.\d{3})\d+").unwrap();
        let text = digits.replace_all(&text, "$1");
        let text = text.as_ref();
        let keys = [
            "host",
            "os",
            "rustc",
            "git_commit",
            "git_dirty",
            "device_name",
            "threads",
            "started_at",
            "finished_at",
            "seconds",
            "ktrack_version",
        ];
        let mut out = Vec::new();
        for line in text.lines() {
            let t = line.trim_start();
            let key = t
                .trim_start_matches('"')
                .split(['"', ':', ' '])
                .next()
                .unwrap_or("");
            if keys.contains(&key) {
                let indent = &line[..line.len() - t.len()];
                out.push(format!("{indent}{key}: [MACHINE]"));
            } else if let Some(i) = line.find("environment: ") {
                out.push(format!("{}environment: [MACHINE]", &line[..i]));
            } else {
                out.push(line.to_string());
            }
        }
        out.join("\n")
    }

    #[test]
    fn what_people_read_stays_the_same() {
        let ctx = TestContext::new();
        let spec = ctx.mini_study(GRID, "");
        ctx.ok(["run", spec.to_str().unwrap(), "--no-compare"]);
        let v: serde_json::Value =
            serde_json::from_str(&ctx.ok(["status", "--format", "json"])).unwrap();
        let probe = v
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["label"] == "kl linear img 100% seed 0")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let show = |args: &[&str]| machine_facts(&ctx.run(args));
        insta::assert_snapshot!("status", show(&["status"]));
        insta::assert_snapshot!("compare_table", show(&["compare", "--bootstrap", "200"]));
        insta::assert_snapshot!(
            "compare_md",
            show(&["compare", "--bootstrap", "200", "--format", "md"])
        );
        insta::assert_snapshot!(
            "compare_json",
            show(&["compare", "--bootstrap", "200", "--format", "json"])
        );
        insta::assert_snapshot!("show", show(&["show", &probe[..12]]));
        insta::assert_snapshot!("reproduce", show(&["reproduce", &probe[..12]]));
    }
}
