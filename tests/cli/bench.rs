//! `ktrack bench`: the benchmarks run end to end; `bench ssl` is also the evidence that
//! self-supervised pretraining learns something on the synthetic cohorts.

use crate::common::TestContext;

/// Linear probes for KL at 100% labels on SimCLR, VICReg, CLIP and SLIP encoders each beat the
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
    let (vicreg, slip) = (qwk("vicreg-ssl"), qwk("slip-ssl"));
    let slip_convirt = qwk("slip-convirt-ssl");
    eprintln!(
        "KL linear probe test QWK: random {random:.3}, SimCLR {image:.3}, VICReg {vicreg:.3}, \
         CLIP {text:.3}, SLIP (CLIP) {slip:.3}, SLIP (ConVIRT) {slip_convirt:.3}"
    );
    assert!(
        image > random + 0.1,
        "SimCLR probe {image:.3} vs random {random:.3}"
    );
    assert!(
        vicreg > random + 0.1,
        "VICReg probe {vicreg:.3} vs random {random:.3}"
    );
    assert!(
        text > random + 0.05,
        "CLIP probe {text:.3} vs random {random:.3}"
    );
    for (name, q) in [("SLIP (CLIP)", slip), ("SLIP (ConVIRT)", slip_convirt)] {
        assert!(
            q > random + 0.05,
            "{name} probe {q:.3} vs random {random:.3}"
        );
    }
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

/// The loader benchmark times every stage and measures peak memory in fresh processes: a
/// cohort's pixels in memory grow a run's resident memory with the cohort, cached ones do not.
#[test]
fn loader_bench_times_every_stage_and_memory_stays_flat_with_the_cache() {
    let ctx = TestContext::new();
    let out = ctx.ok([
        "bench",
        "loader",
        "--images",
        "4",
        "--source",
        "256",
        "--size",
        "128",
        "--rss-images",
        "50,400",
        "--rss-source",
        "64",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "{out}");
    for r in rows {
        assert!(r["images_per_second"].as_f64().unwrap() > 0.0, "{out}");
    }
    assert_eq!(v["cache_entry_bytes"], 48 + 128 * 128 * 2);
    let rss = |n: u64, pixels: &str| {
        v["rss"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["images"] == n && r["pixels"] == pixels)
            .and_then(|r| r["peak_rss_mib"].as_f64())
            .unwrap_or_else(|| panic!("no {n} {pixels} row in {out}"))
    };
    // 350 more images of 32 KiB each held in memory: about 11 MiB more.
    let memory_growth = rss(400, "in memory") - rss(50, "in memory");
    let cached_growth = rss(400, "cached") - rss(50, "cached");
    assert!(memory_growth > 8.0, "{out}");
    assert!(cached_growth < memory_growth / 2.0, "{out}");
}

/// `bench calibration` runs A/A pairs through compare's single-seed tests and reports rates
/// that agree with their counts (3 pairs here; the README gives the 20-pair figures).
#[test]
fn calibration_reports_its_a_a_pairs() {
    let ctx = TestContext::new();
    let out = ctx.ok([
        "bench",
        "calibration",
        "--pairs",
        "3",
        "--patients",
        "60",
        "--size",
        "32",
        "--pretrain-epochs",
        "0",
        "--epochs",
        "3",
        "--bootstrap",
        "100",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{out}");
    for (row, test) in rows.iter().zip(["DeLong", "paired bootstrap"]) {
        assert_eq!(row["test"], test, "{row}");
        assert_eq!(row["pairs"], 3);
        let rate = |n: &str, r: &str| {
            let (n, r) = (row[n].as_f64().unwrap(), row[r].as_f64().unwrap());
            assert!(
                (r - n / 3.0).abs() < 1e-12 && (0.0..=3.0).contains(&n),
                "{row}"
            );
        };
        rate("flagged", "flag_rate");
        rate("covered", "coverage");
        assert!(row["sd_diff"].as_f64().unwrap() >= 0.0, "{row}");
    }
}

/// `bench findings --quick` runs the shipped paper study (a tenth the size) in a fresh world
/// and reads F1–F4 and the power of its evaluation sets from it; each verdict follows from
/// its difference and p-value. Kept in `--dir`, the study is reread (every run skipped) to
/// the same figures, and a folder holding another world's study is refused before anything
/// is written.
#[test]
fn findings_reads_the_paper_study() {
    let ctx = TestContext::new();
    let dir = ctx.root().join("world-5");
    let dir = dir.to_str().unwrap();
    let args = [
        "bench", "findings", "--quick", "--seed", "5", "--format", "json", "--dir", dir,
    ];
    let out = ctx.ok(args);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let again: serde_json::Value = serde_json::from_str(&ctx.ok(args)).unwrap();
    assert_eq!(again["rows"], v["rows"]);
    assert_eq!(again["runs"], v["runs"]);
    let spec = std::fs::read(ctx.root().join("world-5/experiments/paper.toml")).unwrap();
    let other = ctx.run(["bench", "findings", "--quick", "--seed", "6", "--dir", dir]);
    assert!(
        other.contains("world-5/datasets/paper-oai-like.toml holds another study"),
        "{other}"
    );
    assert!(!other.starts_with("exit_code: 0"), "{other}");
    let after = std::fs::read(ctx.root().join("world-5/experiments/paper.toml")).unwrap();
    assert_eq!(after, spec, "nothing rewritten");
    assert_eq!(v["seed"], 5);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 7, "{out}");
    for row in rows {
        assert_eq!(row["seeds"], 2, "{row}");
        assert_eq!(row["baseline"], "generic-supervised");
        let diff = row["diff"].as_f64().unwrap();
        let (a, b) = (
            row["init_value"].as_f64().unwrap(),
            row["baseline_value"].as_f64().unwrap(),
        );
        assert!((diff - (a - b)).abs() < 1e-9, "{row}");
        // The interval is about the difference; both variances are in it. (A 2-epoch probe
        // from a zero head may predict one grade for every knee: QWK 0 for both inits, a
        // difference of exactly 0 with no variance.)
        let (lo, hi) = (row["lo"].as_f64().unwrap(), row["hi"].as_f64().unwrap());
        assert!(lo <= diff && diff <= hi, "{row}");
        assert!(row["se_test"].as_f64().unwrap() >= 0.0, "{row}");
        assert!(row["se_seeds"].as_f64().unwrap() >= 0.0, "{row}");
        let better = diff > 0.0 && row["p"].as_f64().is_some_and(|p| p < 0.05);
        let holds = match row["claim"].as_str().unwrap() {
            "better" => better,
            _ => !better,
        };
        assert_eq!(row["holds"], holds, "{row}");
    }
    assert!(
        rows.iter().any(|r| r["se_test"].as_f64().unwrap() > 0.0),
        "the test patients' variance is in the intervals: {out}"
    );
    let power = v["power"].as_array().unwrap();
    assert_eq!(power.len(), 4, "{out}");
    for p in power {
        assert!(p["positives"].as_u64().unwrap() > 0, "{p}");
        assert!(p["detectable"].as_f64().unwrap() > 0.0, "{p}");
    }
    // 4 inits × 3 tasks × 2 protocols × 2 fractions × 2 seeds, and 3 pretrainings.
    assert_eq!(v["runs"], 99, "{out}");
}
