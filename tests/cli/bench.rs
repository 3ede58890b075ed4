//! `ktrack bench`: the benchmarks run end to end; `bench ssl` is also the evidence that
//! self-supervised pretraining learns something on the synthetic cohorts.

use crate::common::TestContext;

/// Linear probes for KL at 100% labels on a SimCLR encoder and on a CLIP encoder each beat the
/// probe on a random-init encoder (the numbers are printed; deterministic from the seed).
#[test]
fn ssl_probes_beat_a_random_init_probe() {
    let ctx = TestContext::new();
    let out = ctx.ok([
        "bench",
        "ssl",
        "--patients",
        "120",
        "--size",
        "48",
        "--pretrain-epochs",
        "8",
        "--probe-epochs",
        "20",
        "--fractions",
        "1.0",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let qwk = |init: &str| {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["init"] == init)
            .and_then(|r| r["test_qwk"].as_f64())
            .unwrap_or_else(|| panic!("no {init} row in {out}"))
    };
    let (random, image, text) = (qwk("random"), qwk("image-ssl"), qwk("image-text-ssl"));
    eprintln!("KL linear probe test QWK: random {random:.3}, SimCLR {image:.3}, CLIP {text:.3}");
    assert!(
        image > random + 0.1,
        "SimCLR probe {image:.3} vs random {random:.3}"
    );
    assert!(
        text > random + 0.05,
        "CLIP probe {text:.3} vs random {random:.3}"
    );
}

#[test]
fn train_bench_prints_every_backend_with_its_ratio() {
    let ctx = TestContext::new();
    let out = ctx.ok([
        "bench",
        "train",
        "--arch",
        "resnet-tiny",
        "--size",
        "32",
        "--batch",
        "4",
        "--steps",
        "1",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows[0]["device"], "cpu");
    assert_eq!(rows[0]["ratio"], 1.0);
    for r in rows {
        assert!(r["images_per_second"].as_f64().unwrap() > 0.0, "{out}");
        assert!(
            r["forward_images_per_second"].as_f64().unwrap() > 0.0,
            "{out}"
        );
    }
}
