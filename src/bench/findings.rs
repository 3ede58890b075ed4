//! `ktrack bench findings`: the paper's four findings, measured on a freshly generated
//! synthetic world. The study is `experiments/paper.toml` with its datasets (embedded here,
//! so the bench runs the shipped spec); `--seed` replaces every cohort's `[synth].seed`, so
//! each seed is a new world (other patients, other images, other reports) under the same
//! mechanism. It runs through `ktrack run`'s code path in a temporary home.
//!
//! Each finding is a difference between two inits at 10% labels, summarised over the
//! training seeds: the mean of the per-seed differences, its t-interval and the paired
//! t-test, the seed-level test `compare` marks several-seed cells with. A finding that
//! claims "better" holds when the difference is positive with p < 0.05; one that claims
//! "not better" holds when that is not so.
//!
//! The power of each evaluation set is printed beside them: from its positives and
//! negatives, the Hanley–McNeil standard error of an AUROC of 0.7, and the smallest AUROC
//! difference a paired DeLong test (correlation 0.5 between the two models' AUROCs) detects
//! with 80% power at α = 0.05.

use std::path::Path;
use std::time::Instant;

use crate::context::Ktrack;
use crate::index::points::{PointFilter, PointGroup};
use crate::metrics::stats;
use crate::report::compare;

/// The shipped study and its datasets, as (path under the study root, text).
const STUDY: [(&str, &str); 6] = [
    (
        "experiments/paper.toml",
        include_str!("../../experiments/paper.toml"),
    ),
    (
        "datasets/paper-oai-like.toml",
        include_str!("../../datasets/paper-oai-like.toml"),
    ),
    (
        "datasets/paper-most-like.toml",
        include_str!("../../datasets/paper-most-like.toml"),
    ),
    (
        "datasets/paper-nyu-like.toml",
        include_str!("../../datasets/paper-nyu-like.toml"),
    ),
    (
        "datasets/paper-hospital.toml",
        include_str!("../../datasets/paper-hospital.toml"),
    ),
    (
        "datasets/paper-generic.toml",
        include_str!("../../datasets/paper-generic.toml"),
    ),
];

/// The external cohort's evaluation set, as the study names it.
const EXTERNAL: &str = "paper-most-like";
/// The stand-in for ImageNet every finding compares with.
const BASELINE: &str = "generic-supervised";

#[derive(Clone, Debug)]
pub struct FindingsOptions {
    /// The world's seed: every cohort's `[synth].seed`.
    pub seed: u64,
    pub threads: usize,
    /// A world a tenth the size at 32 px, one or two epochs and two seeds: checks the harness
    /// and the shipped spec end to end in about a minute, not the findings.
    pub quick: bool,
}

/// What a finding claims of `init` against the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Claim {
    Better,
    NotBetter,
}

/// One comparison of a finding.
struct Check {
    finding: &'static str,
    claim: Claim,
    init: &'static str,
    task: &'static str,
    protocol: &'static str,
    eval: &'static str,
}

/// The paper's findings, each as the comparisons that make it.
const CHECKS: [Check; 7] = [
    Check {
        finding: "F1 image-only SSL beats ImageNet for KL grade under linear probing",
        claim: Claim::Better,
        init: "image-ssl",
        task: "kl",
        protocol: "linear",
        eval: "test",
    },
    Check {
        finding: "F2 … but not under full fine-tuning",
        claim: Claim::NotBetter,
        init: "image-ssl",
        task: "kl",
        protocol: "finetune",
        eval: "test",
    },
    Check {
        finding: "F3 image-text SSL does not help KL grading",
        claim: Claim::NotBetter,
        init: "image-text-ssl",
        task: "kl",
        protocol: "linear",
        eval: "test",
    },
    Check {
        finding: "F4 image-text SSL beats ImageNet for prognosis",
        claim: Claim::Better,
        init: "image-text-ssl",
        task: "incidence_4y",
        protocol: "linear",
        eval: "test",
    },
    Check {
        finding: "F4",
        claim: Claim::Better,
        init: "image-text-ssl",
        task: "progression_4y",
        protocol: "linear",
        eval: "test",
    },
    Check {
        finding: "F4 (external)",
        claim: Claim::Better,
        init: "image-text-ssl",
        task: "incidence_4y",
        protocol: "linear",
        eval: EXTERNAL,
    },
    Check {
        finding: "F4 (external)",
        claim: Claim::Better,
        init: "image-text-ssl",
        task: "progression_4y",
        protocol: "linear",
        eval: EXTERNAL,
    },
];

/// The labelled fraction the findings are read at.
const FRACTION: f64 = 0.1;

#[derive(Clone, Debug, serde::Serialize)]
pub struct FindingRow {
    pub finding: String,
    pub claim: Claim,
    pub init: String,
    pub baseline: String,
    pub task: String,
    pub protocol: String,
    pub eval: String,
    pub metric: String,
    pub seeds: usize,
    pub init_value: f64,
    pub baseline_value: f64,
    /// Mean of the per-seed differences, its 95% t-interval and the paired t-test's p.
    pub diff: f64,
    pub lo: f64,
    pub hi: f64,
    pub p: Option<f64>,
    pub holds: bool,
}

/// The power of one binary task on one evaluation set.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PowerRow {
    pub task: String,
    pub eval: String,
    pub positives: usize,
    pub negatives: usize,
    /// Hanley–McNeil standard error of an AUROC of 0.7 on these cases.
    pub se: f64,
    /// The AUROC difference a paired DeLong test detects with 80% power at α = 0.05.
    pub detectable: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct FindingsReport {
    pub seed: u64,
    pub rows: Vec<FindingRow>,
    pub power: Vec<PowerRow>,
    /// Every finding holds.
    pub all_hold: bool,
    pub runs: usize,
    pub seconds: f64,
}

pub fn run(o: &FindingsOptions) -> anyhow::Result<FindingsReport> {
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    write_study(dir.path(), o)?;
    let k = super::run_study(dir.path(), "experiments/paper.toml")?;
    let report = read_findings(&k, o.seed)?;
    Ok(FindingsReport {
        seconds: t0.elapsed().as_secs_f64(),
        ..report
    })
}

/// The findings of a finished study in `k`'s index.
pub fn read_findings(k: &Ktrack, seed: u64) -> anyhow::Result<FindingsReport> {
    let groups = k.index.read()?.points().groups(&PointFilter {
        sweep: None,
        task: None,
        protocol: None,
        metric: None,
        seed: None,
    })?;
    let rows = CHECKS
        .iter()
        .map(|c| finding(&groups, c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut power = Vec::new();
    for task in ["incidence_4y", "progression_4y"] {
        for eval in ["test", EXTERNAL] {
            power.push(power_of(k, &groups, task, eval)?);
        }
    }
    let runs = k.index.read()?.runs().list(None)?.len();
    Ok(FindingsReport {
        seed,
        all_hold: rows.iter().all(|r| r.holds),
        rows,
        power,
        runs,
        seconds: 0.0,
    })
}

fn group<'a>(
    groups: &'a [PointGroup],
    init: &str,
    task: &str,
    protocol: &str,
    eval: &str,
) -> anyhow::Result<&'a PointGroup> {
    groups
        .iter()
        .find(|g| {
            g.init == init
                && g.task == task
                && g.protocol == protocol
                && g.eval_set == eval
                && (g.fraction - FRACTION).abs() < 1e-9
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the study has no {init} {task} {protocol} run at 10% labels evaluated on {eval}"
            )
        })
}

fn finding(groups: &[PointGroup], c: &Check) -> anyhow::Result<FindingRow> {
    let a = group(groups, c.init, c.task, c.protocol, c.eval)?;
    let b = group(groups, BASELINE, c.task, c.protocol, c.eval)?;
    let base: std::collections::HashMap<i64, f64> = b.values.iter().copied().collect();
    let diffs: Vec<f64> = a
        .values
        .iter()
        .filter_map(|(seed, v)| base.get(seed).map(|b| v - b))
        .collect();
    let s = stats::over_seeds(&diffs, 0.95);
    let p = compare::paired_t_p(&diffs);
    let better = s.mean > 0.0 && p.is_some_and(|p| p < 0.05);
    let mean = |g: &PointGroup| g.values.iter().map(|v| v.1).sum::<f64>() / g.values.len() as f64;
    Ok(FindingRow {
        finding: c.finding.into(),
        claim: c.claim,
        init: c.init.into(),
        baseline: BASELINE.into(),
        task: c.task.into(),
        protocol: c.protocol.into(),
        eval: c.eval.into(),
        metric: a.metric.clone(),
        seeds: diffs.len(),
        init_value: mean(a),
        baseline_value: mean(b),
        diff: s.mean,
        lo: s.lo,
        hi: s.hi,
        p,
        holds: match c.claim {
            Claim::Better => better,
            Claim::NotBetter => !better,
        },
    })
}

/// Hanley & McNeil (1982): the standard error of an AUROC `a` on `pos` positives and `neg`
/// negatives.
pub fn hanley_mcneil_se(a: f64, pos: usize, neg: usize) -> f64 {
    let (m, n) = (pos as f64, neg as f64);
    let q1 = a / (2.0 - a);
    let q2 = 2.0 * a * a / (1.0 + a);
    ((a * (1.0 - a) + (m - 1.0) * (q1 - a * a) + (n - 1.0) * (q2 - a * a)) / (m * n)).sqrt()
}

fn power_of(k: &Ktrack, groups: &[PointGroup], task: &str, eval: &str) -> anyhow::Result<PowerRow> {
    let g = group(groups, BASELINE, task, "linear", eval)?;
    let preds = compare::predictions_of(k, &g.run.hex(), eval)?;
    let positives = preds.label.iter().filter(|l| **l == 1).count();
    let negatives = preds.label.len() - positives;
    let se = hanley_mcneil_se(0.7, positives, negatives);
    // z(0.975) + z(0.8), and the sd of a difference of two AUROCs correlated at 0.5.
    let detectable = (1.959_964 + 0.841_621) * se * (2.0 * (1.0 - 0.5_f64)).sqrt();
    Ok(PowerRow {
        task: task.into(),
        eval: eval.into(),
        positives,
        negatives,
        se,
        detectable,
    })
}

/// The study's spec and datasets under `root`, every cohort's `[synth].seed` set to the
/// world's seed.
fn write_study(root: &Path, o: &FindingsOptions) -> anyhow::Result<()> {
    for (rel, text) in STUDY {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("a file under the root"))?;
        let text = if rel.starts_with("datasets/") {
            with_seed(text, o.seed, o.quick)?
        } else {
            with_run(text, o.threads, o.quick)?
        };
        std::fs::write(&path, text)?;
    }
    Ok(())
}

fn with_seed(descriptor: &str, seed: u64, quick: bool) -> anyhow::Result<String> {
    let mut t: toml::Table = descriptor.parse()?;
    let synth = t
        .get_mut("synth")
        .and_then(|s| s.as_table_mut())
        .ok_or_else(|| anyhow::anyhow!("a study dataset without [synth]"))?;
    synth.insert("seed".into(), toml::Value::Integer(i64::try_from(seed)?));
    if quick {
        let patients = synth.get("patients").and_then(toml::Value::as_integer);
        let fewer = (patients.unwrap_or(200) / 10).max(40);
        synth.insert("patients".into(), toml::Value::Integer(fewer));
        synth.insert("image_size".into(), toml::Value::Integer(32));
    }
    Ok(toml::to_string(&t)?)
}

/// The spec with the bench's thread count (and, when quick, its short settings).
fn with_run(spec: &str, threads: usize, quick: bool) -> anyhow::Result<String> {
    let mut t: toml::Table = spec.parse()?;
    let table = |t: &mut toml::Table, key: &str| -> anyhow::Result<toml::Table> {
        match t.remove(key) {
            Some(toml::Value::Table(x)) => Ok(x),
            None => Ok(toml::Table::new()),
            Some(_) => anyhow::bail!("`{key}` of the study is not a table"),
        }
    };
    let int = |v: i64| toml::Value::Integer(v);
    let mut run = table(&mut t, "run")?;
    run.insert("threads".into(), int(i64::try_from(threads)?));
    t.insert("run".into(), toml::Value::Table(run));
    if !quick {
        return Ok(toml::to_string(&t)?);
    }
    if let Some(toml::Value::Table(pretrains)) = t.get_mut("pretrain") {
        for (_, p) in pretrains.iter_mut() {
            let Some(p) = p.as_table_mut() else { continue };
            p.insert("epochs".into(), int(1));
            p.insert("batch_size".into(), int(16));
        }
    }
    let mut train = table(&mut t, "train")?;
    train.insert("image_size".into(), int(32));
    for (protocol, epochs) in [("linear", 2), ("finetune", 1)] {
        if let Some(p) = train.get_mut(protocol).and_then(toml::Value::as_table_mut) {
            p.insert("epochs".into(), int(epochs));
        }
    }
    t.insert("train".into(), toml::Value::Table(train));
    let mut grid = table(&mut t, "grid")?;
    grid.insert("seeds".into(), toml::Value::Array(vec![int(0), int(1)]));
    t.insert("grid".into(), toml::Value::Table(grid));
    Ok(toml::to_string(&t)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_world_seed_reaches_every_dataset_and_nothing_else_changes() {
        let dir = tempfile::tempdir().unwrap();
        write_study(
            dir.path(),
            &FindingsOptions {
                seed: 7,
                threads: 2,
                quick: false,
            },
        )
        .unwrap();
        for (rel, text) in STUDY.iter().filter(|(r, _)| r.starts_with("datasets/")) {
            let written = std::fs::read_to_string(dir.path().join(rel)).unwrap();
            let d: crate::data::descriptor::Descriptor = toml::from_str(&written).unwrap();
            let shipped: crate::data::descriptor::Descriptor = toml::from_str(text).unwrap();
            let synth = d.synth.clone().unwrap();
            assert_eq!(synth.seed, 7, "{rel}");
            assert_eq!(
                crate::data::descriptor::Descriptor {
                    synth: Some(crate::data::synth::SynthSpec {
                        seed: shipped.synth.as_ref().unwrap().seed,
                        ..synth
                    }),
                    ..d
                },
                shipped,
                "{rel}: only the seed changes"
            );
        }
    }

    #[test]
    fn hanley_mcneil_by_hand() {
        // A = 0.7 on 50 positives and 50 negatives, by hand: Q1 = 0.7 / 1.3 = 0.53846,
        // Q2 = 0.98 / 1.7 = 0.57647, SE² = (0.21 + 49 · 0.04846 + 49 · 0.08647) / 2500.
        let se = hanley_mcneil_se(0.7, 50, 50);
        assert!((se - 0.052_24).abs() < 5e-5, "{se}");
        assert!(hanley_mcneil_se(0.7, 200, 200) < se / 1.9);
    }
}
