//! `ktrack bench calibration`: the negative control of `compare`'s tests. A/A comparisons —
//! one init and protocol trained with two different seeds, compared as if they were two
//! inits — on a fresh synthetic cohort in a temporary home, through `ktrack run`'s code path.
//!
//! For each pair it applies the test `compare` uses when a cell has one seed (DeLong for
//! AUROC, a patient-clustered paired bootstrap otherwise) and the paired-bootstrap CI of the
//! difference. A calibrated test flags p < 0.05 in about 5% of A/A pairs, and a 95% CI covers
//! the true difference of 0 in about 95%. Both resample the test set only, so the variance a
//! training seed brings shows up as excess flags: the reason `compare` marks single-seed
//! p-values as test-set-only, and the shipped specs use several seeds.

use std::time::Instant;

use crate::context::Ktrack;
use crate::data::Label;
use crate::data::synth::{self, Kind, SynthSpec};
use crate::report::compare::{self, CompareOptions};
use crate::train::downstream::Protocol;

#[derive(Clone, Debug)]
pub struct CalibrationOptions {
    /// A/A pairs per task and protocol (2 × pairs training seeds).
    pub pairs: usize,
    /// Patients of the OAI-like cohort.
    pub patients: usize,
    pub image_size: u32,
    /// SimCLR epochs of the shared init (0: random init, whose encoder the seed also draws).
    pub pretrain_epochs: usize,
    pub epochs: usize,
    pub tasks: Vec<Label>,
    pub protocols: Vec<Protocol>,
    pub bootstrap: usize,
    pub seed: u64,
    pub threads: usize,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct CalibrationRow {
    pub task: String,
    pub protocol: String,
    pub metric: String,
    pub test: String,
    pub pairs: usize,
    /// Pairs whose test gave p < 0.05.
    pub flagged: usize,
    pub flag_rate: f64,
    /// Pairs whose 95% CI of the difference holds 0.
    pub covered: usize,
    pub coverage: f64,
    /// The A/A differences' mean absolute value and standard deviation (ddof 1).
    pub mean_abs_diff: f64,
    pub sd_diff: f64,
    /// The mean half-width of the pairs' CIs, to set beside `sd_diff`.
    pub mean_ci_half_width: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct CalibrationReport {
    pub rows: Vec<CalibrationRow>,
    pub seconds: f64,
}

pub fn run(
    o: &CalibrationOptions,
    interrupt: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<CalibrationReport> {
    anyhow::ensure!(o.pairs >= 1, "--pairs must be at least 1");
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    write_study(root, o)?;
    let k = super::run_study(root, "calibration.toml", 1, interrupt)?;
    let copts = CompareOptions {
        bootstrap: o.bootstrap,
        seed: o.seed,
        ..CompareOptions::default()
    };
    let mut rows = Vec::new();
    for task in &o.tasks {
        for protocol in &o.protocols {
            rows.push(calibrate(&k, o, *task, *protocol, &copts)?);
        }
    }
    Ok(CalibrationReport {
        rows,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The A/A pairs of one task and protocol: seeds 2i and 2i + 1 on the internal test set.
fn calibrate(
    k: &Ktrack,
    o: &CalibrationOptions,
    task: Label,
    protocol: Protocol,
    copts: &CompareOptions,
) -> anyhow::Result<CalibrationRow> {
    let metric = if task == Label::Kl { "qwk" } else { "auroc" };
    let runs = k.index.read()?.runs().list(None)?;
    let run_of = |seed: usize| -> anyhow::Result<crate::predictions::Predictions> {
        let label = format!("{} {} init 100% seed {seed}", task.name(), protocol.name());
        let row = runs
            .iter()
            .find(|r| r.label == label)
            .ok_or_else(|| anyhow::anyhow!("no run `{label}` in the calibration sweep"))?;
        Ok(compare::predictions_of(k, &row.id.hex(), "test")?)
    };
    let mut tests = Vec::new();
    for i in 0..o.pairs {
        let (a, b) = (run_of(2 * i)?, run_of(2 * i + 1)?);
        tests.push(compare::single_seed_test(metric, &a, &b, copts, true));
    }
    let n = tests.len();
    let flagged = tests
        .iter()
        .filter(|t| t.p.is_some_and(|p| p < 0.05))
        .count();
    let covered = tests
        .iter()
        .filter(|t| matches!((t.lo, t.hi), (Some(lo), Some(hi)) if lo <= 0.0 && 0.0 <= hi))
        .count();
    let diffs: Vec<f64> = tests.iter().map(|t| t.diff).collect();
    let mean = diffs.iter().sum::<f64>() / n as f64;
    let sd = if n > 1 {
        (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        f64::NAN
    };
    let halves: Vec<f64> = tests
        .iter()
        .filter_map(|t| Some((t.hi? - t.lo?) / 2.0))
        .collect();
    Ok(CalibrationRow {
        task: task.name().into(),
        protocol: protocol.name().into(),
        metric: metric.into(),
        test: tests.first().map_or("", |t| t.test).into(),
        pairs: n,
        flagged,
        flag_rate: flagged as f64 / n as f64,
        covered,
        coverage: covered as f64 / n as f64,
        mean_abs_diff: diffs.iter().map(|d| d.abs()).sum::<f64>() / n as f64,
        sd_diff: sd,
        mean_ci_half_width: halves.iter().sum::<f64>() / halves.len().max(1) as f64,
    })
}

/// The OAI-like cohort's descriptor, an NYU-like one for the shared SimCLR init, and the
/// sweep (`calibration.toml`) under `root`: one init, every task and protocol, 2 × pairs seeds.
fn write_study(root: &std::path::Path, o: &CalibrationOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(root.join("datasets"))?;
    for kind in [Kind::OaiLike, Kind::NyuLike] {
        let spec = SynthSpec {
            kind,
            patients: o.patients,
            image_size: o.image_size,
            seed: o.seed,
        };
        let name = kind.name();
        std::fs::write(
            root.join(format!("datasets/{name}.toml")),
            synth::descriptor_toml(&spec, name, &format!("{name}/manifest.csv"), name),
        )?;
    }
    let init = if o.pretrain_epochs == 0 {
        "[inits.init]\nkind = \"random\"\n".to_string()
    } else {
        format!(
            "[pretrain.simclr]\nmethod = \"simclr\"\ndata = [\"train\", \"datasets/nyu-like.toml\"]\n\
             epochs = {}\nbatch_size = 64\nlr = 2e-3\ntemperature = 0.2\nprojection_dim = 64\nseed = {}\n\
             [inits.init]\nkind = \"pretrain\"\npretrain = \"simclr\"\n",
            o.pretrain_epochs, o.seed
        )
    };
    let list = |v: Vec<String>| v.join(", ");
    let tasks = list(
        o.tasks
            .iter()
            .map(|t| format!("\"{}\"", t.name()))
            .collect(),
    );
    let protocols = list(
        o.protocols
            .iter()
            .map(|p| format!("\"{}\"", p.name()))
            .collect(),
    );
    let seeds = list((0..2 * o.pairs).map(|s| s.to_string()).collect());
    std::fs::write(
        root.join("calibration.toml"),
        format!(
            r#"name = "bench-calibration"
[cohorts]
train = "datasets/oai-like.toml"
[split]
seed = {seed}
[fractions]
values = [1.0]
seed = {seed}
{init}
[grid]
inits = ["init"]
tasks = [{tasks}]
protocols = [{protocols}]
seeds = [{seeds}]
[train]
arch = "resnet-tiny"
image_size = {size}
[train.linear]
epochs = {epochs}
[train.finetune]
epochs = {epochs}
[train.lpft]
epochs = {epochs}
[run]
threads = {threads}
"#,
            seed = o.seed,
            size = o.image_size,
            epochs = o.epochs,
            threads = o.threads,
        ),
    )?;
    Ok(())
}
