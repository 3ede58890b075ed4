//! Every case of the scikit-learn reference file (`tests/data/sklearn-reference.json`, made
//! with scikit-learn 1.9.1; its `source` field says how) must match within 1e-12 (metrics) and
//! 1e-9 (DeLong z and p).

use super::*;

fn reference() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sklearn-reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference file"))
        .expect("valid JSON")
}

fn u8s(v: &serde_json::Value) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u8)
        .collect()
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn close(name: &str, case: usize, got: f64, want: &serde_json::Value, tol: f64) {
    let want = want.as_f64().unwrap_or(f64::NAN);
    assert!(
        (got - want).abs() <= tol || (got.is_nan() && want.is_nan()),
        "case {case}: {name} = {got:.17}, scikit-learn {want:.17}"
    );
}

#[test]
fn kl_metrics_match_scikit_learn() {
    let r = reference();
    let cases = r["cases"].as_array().unwrap();
    assert!(cases.len() >= 40);
    for (i, c) in cases.iter().enumerate() {
        let k = &c["kl"];
        let (t, p) = (u8s(&k["y_true"]), u8s(&k["y_pred"]));
        let m = kl_metrics(&t, &p);
        for name in ["accuracy", "balanced_accuracy", "qwk", "macro_f1", "mae"] {
            close(name, i, m[name], &k[name], 1e-12);
        }
    }
}

#[test]
fn binary_metrics_and_delong_match_the_reference() {
    let r = reference();
    for (i, c) in r["cases"].as_array().unwrap().iter().enumerate() {
        let b = &c["binary"];
        let y = u8s(&b["y_true"]);
        let (a, bb) = (f64s(&b["score_a"]), f64s(&b["score_b"]));
        close("auroc_a", i, binary::auroc(&y, &a), &b["auroc_a"], 1e-12);
        close("auroc_b", i, binary::auroc(&y, &bb), &b["auroc_b"], 1e-12);
        close(
            "ap_a",
            i,
            binary::average_precision(&y, &a),
            &b["ap_a"],
            1e-12,
        );
        close(
            "ap_b",
            i,
            binary::average_precision(&y, &bb),
            &b["ap_b"],
            1e-12,
        );
        let d = stats::delong(&y, &a, &bb);
        close("delong_z", i, d.z, &b["delong_z"], 1e-9);
        close("delong_p", i, d.p, &b["delong_p"], 1e-9);
        close("delong_var_a", i, d.var_a, &b["delong_var_a"], 1e-12);
        close("delong_var_b", i, d.var_b, &b["delong_var_b"], 1e-12);
        close("delong_cov", i, d.cov, &b["delong_cov"], 1e-12);
    }
}
