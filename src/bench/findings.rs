//! `ktrack bench findings`: the paper's four findings, measured on a freshly generated
//! synthetic world. The study is `experiments/paper.toml` with its datasets (embedded here,
//! so the bench runs the shipped spec); `--seed` replaces every cohort's `[synth].seed`, so
//! each seed is a new world (other patients, other images, other reports) under the same
//! mechanism. It runs through `ktrack run`'s code path in a temporary home.
//!
//! Each finding is a difference between two inits at 10% labels: the mean of the per-seed
//! differences on the evaluation set, tested with both of its sources of variance
//! ([`stats::two_level`]): the test patients (a paired, patient-clustered bootstrap of the
//! seed-mean difference, one resample shared by every seed and both inits) and the training
//! seeds (the per-seed differences' spread). The paired t-test over seeds, `compare`'s
//! marker for several-seed cells, has only the second: with converged probes whose seeds
//! agree it calls a consistent 0.02 significant on any test set, and a finding about two
//! inits is a claim about new patients as much as new seeds. A finding that claims "better"
//! holds when the difference is positive with p < 0.05; one that claims "not better" holds
//! when that is not so.
//!
//! The power of each evaluation set is printed beside them: from its positives and
//! negatives, the Hanley–McNeil standard error of an AUROC of 0.7, and the smallest AUROC
//! difference a paired DeLong test (correlation 0.5 between the two models' AUROCs) detects
//! with 80% power at α = 0.05.

use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;

use crate::context::Ktrack;
use crate::index::points::{CellKey, PointFilter, PointGroup};
use crate::metrics::stats::{self, Clusters};
use crate::predictions::Predictions;
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
    /// Where the study and its home are written and kept (a temporary folder when `None`).
    /// Given again, the study there is reused: finished runs are skipped, an interrupted one
    /// resumes.
    pub dir: Option<std::path::PathBuf>,
    /// Runs executed at once, each on `threads` threads; no result depends on it.
    pub jobs: usize,
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
/// Patient bootstrap replicates of the test-set part of a finding's variance.
const REPLICATES: usize = 1000;

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
    /// Mean of the per-seed differences, its 95% interval and the two-level test's p.
    pub diff: f64,
    pub lo: f64,
    pub hi: f64,
    pub p: Option<f64>,
    /// The standard errors from the test patients and from the training seeds, and the
    /// Welch–Satterthwaite degrees of freedom of their sum (infinite: printed as null).
    pub se_test: f64,
    pub se_seeds: f64,
    pub df: Option<f64>,
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

/// Writes the study (under `o.dir`, or a temporary folder), runs it and reads the findings;
/// `interrupt` (Ctrl-C) stops it at the running runs' next checkpoint.
pub fn run(
    o: &FindingsOptions,
    interrupt: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<FindingsReport> {
    let t0 = Instant::now();
    let scratch;
    let root = match &o.dir {
        Some(d) => d.as_path(),
        None => {
            scratch = tempfile::tempdir()?;
            scratch.path()
        }
    };
    write_study(root, o)?;
    let k =
        super::run_study(root, "experiments/paper.toml", o.jobs, interrupt).map_err(
            |e| match &o.dir {
                Some(d) if interrupt.load(std::sync::atomic::Ordering::Relaxed) => {
                    e.context(format!(
                        "the finished runs are kept in {}: the same command resumes the study",
                        d.display()
                    ))
                }
                _ => e,
            },
        )?;
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
        .map(|c| finding(k, &groups, c))
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

fn finding(k: &Ktrack, groups: &[PointGroup], c: &Check) -> anyhow::Result<FindingRow> {
    let a = group(groups, c.init, c.task, c.protocol, c.eval)?;
    let b = group(groups, BASELINE, c.task, c.protocol, c.eval)?;
    let pairs = seed_pairs(k, c, &a.metric)?;
    let t = two_level(&pairs, &a.metric);
    let better = t.mean > 0.0 && t.p < 0.05;
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
        seeds: pairs.len(),
        init_value: mean(a),
        baseline_value: mean(b),
        diff: t.mean,
        lo: t.lo,
        hi: t.hi,
        p: t.p.is_finite().then_some(t.p),
        se_test: t.se_test,
        se_seeds: t.se_seeds,
        df: t.df.is_finite().then_some(t.df),
        holds: match c.claim {
            Claim::Better => better,
            Claim::NotBetter => !better,
        },
    })
}

/// The predictions of the check's init and of the baseline on its evaluation set, for every
/// training seed both have, each put in the case order of the first.
fn seed_pairs(
    k: &Ktrack,
    c: &Check,
    metric: &str,
) -> anyhow::Result<Vec<(Predictions, Predictions)>> {
    let key = |init| CellKey {
        init,
        task: c.task,
        protocol: c.protocol,
        fraction: FRACTION,
        eval_set: c.eval,
        metric,
    };
    let (ours, base) = {
        let mut r = k.index.read()?;
        let mut points = r.points();
        (
            points.seed_runs(&key(c.init))?,
            points.seed_runs(&key(BASELINE))?,
        )
    };
    let mut order: Option<Vec<String>> = None;
    let mut pairs = Vec::new();
    for s in &ours {
        let Some(b) = base.iter().find(|b| b.seed == s.seed) else {
            continue;
        };
        let pa = compare::predictions_of(k, &s.run.hex(), c.eval)?;
        let pb = compare::predictions_of(k, &b.run.hex(), c.eval)?;
        let order = order.get_or_insert_with(|| pa.sample_id.clone());
        pairs.push((in_order(pa, order, &s.run)?, in_order(pb, order, &b.run)?));
    }
    Ok(pairs)
}

/// `p`'s cases in the order of `order`; every case must be there.
fn in_order(
    p: Predictions,
    order: &[String],
    run: &crate::id::Hash,
) -> anyhow::Result<Predictions> {
    let at: std::collections::HashMap<&str, usize> = p
        .sample_id
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let idx = order
        .iter()
        .map(|s| {
            at.get(s.as_str()).copied().ok_or_else(|| {
                anyhow::anyhow!("run {run} has no prediction for case {s} of the evaluation set")
            })
        })
        .collect::<anyhow::Result<Vec<usize>>>()?;
    Ok(Predictions {
        sample_id: idx.iter().map(|&i| p.sample_id[i].clone()).collect(),
        patient_id: idx.iter().map(|&i| p.patient_id[i].clone()).collect(),
        label: idx.iter().map(|&i| p.label[i]).collect(),
        probs: idx.iter().map(|&i| p.probs[i].clone()).collect(),
        kind: p.kind,
    })
}

/// The two-level test of the pairs' mean difference: per-seed differences on every case, and
/// the seed-mean difference on [`REPLICATES`] patient resamples (seeded, so a finding reads
/// the same every time).
fn two_level(pairs: &[(Predictions, Predictions)], metric: &str) -> stats::TwoLevel {
    let Some((first, _)) = pairs.first() else {
        return stats::two_level(&[], &[], 0.95);
    };
    let diff_on = |idx: &[usize]| -> Vec<f64> {
        pairs
            .iter()
            .map(|(a, b)| a.metric_on(metric, idx) - b.metric_on(metric, idx))
            .collect()
    };
    let all: Vec<usize> = (0..first.len()).collect();
    let per_seed = diff_on(&all);
    let patients: Vec<&str> = first.patient_id.iter().map(String::as_str).collect();
    let clusters = Clusters::by_patient(&patients, &first.label);
    let mut r = crate::rng::stream("findings-bootstrap", &[], 0);
    let resamples: Vec<Vec<usize>> = (0..REPLICATES).map(|_| clusters.resample(&mut r)).collect();
    let replicates: Vec<f64> = resamples
        .par_iter()
        .map(|idx| {
            let d = diff_on(idx);
            d.iter().sum::<f64>() / d.len() as f64
        })
        .collect();
    stats::two_level(&per_seed, &replicates, 0.95)
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
/// world's seed. A file already there must be the very same (the folder of an earlier run of
/// this world, which is then resumed); another study there is an error, and nothing is written.
fn write_study(root: &Path, o: &FindingsOptions) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for (rel, text) in STUDY {
        let path = root.join(rel);
        let text = if rel.starts_with("datasets/") {
            with_seed(text, o.seed, o.quick)?
        } else {
            with_run(text, o.threads, o.quick)?
        };
        match std::fs::read_to_string(&path) {
            Ok(there) if there == text => {}
            Ok(_) => anyhow::bail!(
                "{} holds another study (another world seed, thread count or --quick): \
                 give an empty folder, or the same options as the run that wrote it",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => files.push((path, text)),
            Err(e) => anyhow::bail!("{}: {e}", path.display()),
        }
    }
    for (path, text) in files {
        std::fs::create_dir_all(path.parent().expect("a file under the root"))?;
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
                dir: None,
                jobs: 1,
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
