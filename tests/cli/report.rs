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
        svg.contains("label fraction") && svg.contains("\nimg\n"),
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
