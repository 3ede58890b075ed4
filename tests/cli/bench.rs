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
    let rows = v["ktrack"].as_array().unwrap();
    assert_eq!(rows[0]["device"], "cpu");
    assert_eq!(rows[0]["ratio"], 1.0);
    for r in rows {
        assert!(r["images_per_second"].as_f64().unwrap() > 0.0, "{out}");
        assert!(
            r["forward_images_per_second"].as_f64().unwrap() > 0.0,
            "{out}"
        );
    }
    assert_eq!(v["eager"].as_array().unwrap().len(), 0, "{out}");
}

/// `--eager PYTHON` runs the eager reference script with the bench's settings and divides by
/// it. A stand-in "Python" records its arguments and reports a fixed rate, so the plumbing is
/// checked here; `benches/eager_train.py` itself needs torch and torchvision.
#[test]
fn train_bench_divides_by_the_eager_reference_it_runs() {
    use std::os::unix::fs::PermissionsExt;
    let ctx = TestContext::new();
    let python = ctx.write(
        "fake-python",
        format!(
            "#!/bin/sh\necho \"$@\" > {}/eager-args\necho '{{\"torch\": \"9.9\", \"device\": \"cpu\", \"threads\": 2, \"images_per_second\": 1000.0, \"forward_images_per_second\": 3000.0}}'\n",
            ctx.root().display()
        ),
    );
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let args = [
        "bench",
        "train",
        "--arch",
        "resnet18",
        "--size",
        "32",
        "--batch",
        "2",
        "--steps",
        "1",
        "--devices",
        "cpu",
        "--eager",
    ];
    let out = ctx.ok(args.iter().copied().chain([python.to_str().unwrap()]));
    assert!(out.contains("PyTorch 9.9 eager (cpu)"), "{out}");
    let called = std::fs::read_to_string(ctx.root().join("eager-args")).unwrap();
    for want in [
        "--arch resnet18",
        "--device cpu",
        "--size 32",
        "--batch 2",
        "--threads 2",
    ] {
        assert!(called.contains(want), "{called}");
    }
    let json = ctx.ok(args
        .iter()
        .copied()
        .chain([python.to_str().unwrap(), "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ours = v["ktrack"][0]["images_per_second"].as_f64().unwrap();
    assert_eq!(v["eager"][0]["images_per_second"], 1000.0);
    assert_eq!(
        v["ktrack"][0]["vs_eager"].as_f64().unwrap(),
        ours / 1000.0,
        "{json}"
    );
    // A model torchvision does not have is refused by name.
    let bad = ctx.run([
        "bench",
        "train",
        "--arch",
        "resnet-tiny",
        "--devices",
        "cpu",
        "--steps",
        "1",
        "--eager",
        python.to_str().unwrap(),
    ]);
    assert!(
        bad.starts_with("exit_code: 1") && bad.contains("torchvision has no model"),
        "{bad}"
    );
}
