//! `ktrack metrics FILE`: the JSON keys users script against, NaN as null, and bad input.

use ktrack::predictions::{Predictions, TaskKind};

use crate::common::TestContext;

fn write(ctx: &TestContext, name: &str, p: &Predictions) -> String {
    ctx.write(name, p.to_parquet()).display().to_string()
}

#[test]
fn kl_and_binary_json() {
    let ctx = TestContext::new();
    let kl = Predictions {
        sample_id: (0..4).map(|i| format!("s{i}")).collect(),
        patient_id: (0..4).map(|i| format!("p{i}")).collect(),
        label: vec![0, 1, 2, 4],
        probs: vec![
            vec![0.9, 0.1, 0.0, 0.0, 0.0],
            vec![0.1, 0.2, 0.7, 0.0, 0.0],
            vec![0.0, 0.0, 1.0, 0.0, 0.0],
            vec![0.0, 0.0, 0.0, 0.6, 0.4],
        ],
        kind: TaskKind::Kl,
    };
    let f = write(&ctx, "kl.parquet", &kl);
    let out = ctx.ok(["metrics", &f, "--task", "kl", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["n"], 4);
    assert_eq!(v["accuracy"], 0.5);
    assert_eq!(v["mae"], 0.5);
    for key in ["balanced_accuracy", "qwk", "macro_f1"] {
        assert!(v[key].is_number(), "{key} in {out}");
    }

    let one_class = Predictions {
        sample_id: vec!["a".into(), "b".into()],
        patient_id: vec!["p".into(), "q".into()],
        label: vec![0, 0],
        probs: vec![vec![0.2], vec![0.4]],
        kind: TaskKind::Binary,
    };
    let f = write(&ctx, "bin.parquet", &one_class);
    let v: serde_json::Value =
        serde_json::from_str(&ctx.ok(["metrics", &f, "--format", "json"])).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"n": 2, "auroc": null, "average_precision": null, "prevalence": 0.0})
    );
    let wrong = ctx.run(["metrics", &f, "--task", "kl"]);
    insta::assert_snapshot!("metrics_wrong_task", wrong);
    ctx.write("junk.parquet", "not parquet");
    let junk = ctx.run(["metrics", "junk.parquet"]);
    assert!(
        junk.starts_with("exit_code: 1") && junk.contains("junk.parquet"),
        "{junk}"
    );
}
