//! `ktrack compare`: tables of a metric by init × label fraction (by default), per task and
//! protocol, internal test and external cohorts side by side. Each cell: the metric with its
//! confidence interval (over seeds: mean with a t-interval; one seed: a patient-level
//! stratified bootstrap when asked), the difference to the baseline init and a p-value marker
//! (seeds: paired t-test over seeds; one seed: DeLong for AUROC, paired bootstrap otherwise).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::context::Ktrack;
use crate::id::Hash;
use crate::index::points::{Leak, PointFilter};
use crate::index::{self, parse_hash};
use crate::metrics::stats::{self, Clusters};
use crate::predictions::Predictions;

/// The axes a table can be laid out on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    Init,
    Fraction,
    Task,
    Protocol,
    Eval,
}

impl Axis {
    pub const ALL: [Axis; 5] = [
        Axis::Task,
        Axis::Protocol,
        Axis::Eval,
        Axis::Init,
        Axis::Fraction,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Axis::Init => "init",
            Axis::Fraction => "fraction",
            Axis::Task => "task",
            Axis::Protocol => "protocol",
            Axis::Eval => "eval",
        }
    }
}

#[derive(Clone, Debug)]
pub struct CompareOptions {
    pub sweep: Option<String>,
    pub task: Option<String>,
    pub protocol: Option<String>,
    /// Evaluation sets to show (default: every set but `val`).
    pub eval: Vec<String>,
    pub metric: Option<String>,
    /// Only runs with this seed.
    pub run_seed: Option<i64>,
    /// The init the others are compared with (default: the first present of `imagenet`,
    /// `generic-supervised` and `random`).
    pub baseline: Option<String>,
    pub rows: Axis,
    pub cols: Axis,
    /// Bootstrap replicates for single-seed cells (0: none).
    pub bootstrap: usize,
    pub level: f64,
    pub seed: u64,
}

impl Default for CompareOptions {
    fn default() -> CompareOptions {
        CompareOptions {
            sweep: None,
            task: None,
            protocol: None,
            eval: Vec::new(),
            metric: None,
            run_seed: None,
            baseline: None,
            rows: Axis::Init,
            cols: Axis::Fraction,
            bootstrap: 0,
            level: 0.95,
            seed: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Index(#[from] index::Error),
    #[error("rows and columns must be different axes (both are `{0}`)")]
    SameAxes(&'static str),
    #[error("no finished downstream runs match{0}")]
    Nothing(String),
    #[error("predictions {0} cannot be read: {1}")]
    Predictions(Hash, String),
}

impl crate::hint::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Nothing(_) => Some("run a sweep first (`ktrack run experiments/quickstart.toml`), or relax the filters".into()),
            _ => None,
        }
    }
}

/// A table cell.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub metric: String,
    pub seeds: usize,
    pub estimate: f64,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    /// Estimate minus the baseline's (same task, protocol, fraction, eval set, seeds).
    pub diff: Option<f64>,
    pub p: Option<f64>,
    pub test: Option<&'static str>,
    /// A run of this cell (the only one when it has one seed), for figures' tooltips.
    #[serde(skip)]
    pub run: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CompareTable {
    /// The fixed axes of this table (e.g. task = kl, protocol = linear).
    pub fixed: Vec<(String, String)>,
    pub row_axis: &'static str,
    pub col_axis: &'static str,
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    pub baseline: Option<String>,
    pub cells: Vec<(String, String, Cell)>,
    pub level: f64,
    /// Notes printed under the table (e.g. allowed leakage of an init's pretraining data).
    pub notes: Vec<String>,
}

impl CompareTable {
    pub fn cell(&self, row: &str, col: &str) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|(r, c, _)| r == row && c == col)
            .map(|(_, _, cell)| cell)
    }

    pub fn title(&self) -> String {
        self.fixed
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One grid point (init, task, protocol, fraction, evaluation set) with its metric summarised
/// over seeds in SQL, and paired with the baseline's runs of the same seeds.
#[derive(Clone, Debug)]
struct Atom {
    init: String,
    task: String,
    protocol: String,
    fraction: f64,
    eval: String,
    metric: String,
    /// Seeds with a finite value, their sum and sum of squares.
    n: i64,
    sum: f64,
    sumsq: f64,
    /// A run of this point (the only one when `n` is 1) and its baseline partner.
    run: String,
    base_run: Option<String>,
    /// Seeds paired with the baseline, and sums of the differences.
    pairs: i64,
    dsum: f64,
    dsumsq: f64,
}

impl Atom {
    fn axis(&self, a: Axis) -> String {
        match a {
            Axis::Init => self.init.clone(),
            Axis::Fraction => crate::output::pct(self.fraction),
            Axis::Task => self.task.clone(),
            Axis::Protocol => self.protocol.clone(),
            Axis::Eval => self.eval.clone(),
        }
    }
}

/// Every init name in the index (the default baseline is chosen among them).
fn inits(k: &Ktrack) -> Result<BTreeSet<String>, Error> {
    Ok(k.index.read()?.points().inits()?.into_iter().collect())
}

fn load_atoms(k: &Ktrack, opts: &CompareOptions, baseline: &str) -> Result<Vec<Atom>, Error> {
    // Each grid point comes back with its seeds' values, which are summarised and paired with
    // the baseline here.
    let rows = k.index.read()?.points().groups(&PointFilter {
        sweep: opts.sweep.as_deref(),
        task: opts.task.as_deref(),
        protocol: opts.protocol.as_deref(),
        metric: opts.metric.as_deref(),
        seed: opts.run_seed,
    })?;
    let eval: BTreeSet<&str> = opts.eval.iter().map(String::as_str).collect();
    // The baseline's values by grid point and seed, and its run (for single-seed pairing).
    type Key<'a> = (&'a str, &'a str, u64, &'a str, &'a str);
    let mut base: std::collections::HashMap<Key<'_>, (std::collections::HashMap<i64, f64>, Hash)> =
        Default::default();
    for r in rows.iter().filter(|r| r.init == baseline) {
        base.insert(
            (
                &r.task,
                &r.protocol,
                r.fraction.to_bits(),
                &r.eval_set,
                &r.metric,
            ),
            (r.values.iter().copied().collect(), r.run),
        );
    }
    let mut atoms = Vec::new();
    for r in rows
        .iter()
        .filter(|r| eval.is_empty() || eval.contains(r.eval_set.as_str()))
    {
        let values = &r.values;
        let partner = (r.init != baseline)
            .then(|| {
                base.get(&(
                    r.task.as_str(),
                    r.protocol.as_str(),
                    r.fraction.to_bits(),
                    r.eval_set.as_str(),
                    r.metric.as_str(),
                ))
            })
            .flatten();
        let mut atom = Atom {
            init: r.init.clone(),
            task: r.task.clone(),
            protocol: r.protocol.clone(),
            fraction: r.fraction,
            eval: r.eval_set.clone(),
            metric: r.metric.clone(),
            n: values.len() as i64,
            sum: values.iter().map(|(_, v)| v).sum(),
            sumsq: values.iter().map(|(_, v)| v * v).sum(),
            run: r.run.hex(),
            base_run: partner.map(|p| p.1.hex()),
            pairs: 0,
            dsum: 0.0,
            dsumsq: 0.0,
        };
        if let Some((by_seed, _)) = partner {
            for (seed, v) in values {
                if let Some(b) = by_seed.get(seed) {
                    let d = v - b;
                    atom.pairs += 1;
                    atom.dsum += d;
                    atom.dsumsq += d * d;
                }
            }
        }
        atoms.push(atom);
    }
    Ok(atoms)
}

fn sort_values(axis: Axis, mut v: Vec<String>, baseline: Option<&str>) -> Vec<String> {
    v.sort();
    v.dedup();
    match axis {
        Axis::Fraction => v.sort_by(|a, b| {
            let f = |s: &str| s.trim_end_matches('%').parse::<f64>().unwrap_or(0.0);
            f(a).total_cmp(&f(b))
        }),
        Axis::Eval => v.sort_by_key(|e| (e != "test", e.clone())),
        Axis::Init => v.sort_by_key(|i| (Some(i.as_str()) != baseline, i.clone())),
        _ => {}
    }
    v
}

/// Builds the comparison tables.
pub fn compare(k: &Ktrack, opts: &CompareOptions) -> Result<Vec<CompareTable>, Error> {
    if opts.rows == opts.cols {
        return Err(Error::SameAxes(opts.rows.name()));
    }
    let inits = inits(k)?;
    let baseline = opts
        .baseline
        .clone()
        .or_else(|| {
            ["imagenet", "generic-supervised", "random"]
                .into_iter()
                .find(|b| inits.contains(*b))
                .map(String::from)
        })
        .filter(|b| inits.contains(b.as_str()));
    let atoms = load_atoms(k, opts, baseline.as_deref().unwrap_or(""))?;
    if atoms.is_empty() {
        return Err(Error::Nothing(filters_text(opts)));
    }
    // Evaluation sets sit side by side: unless eval is the row or column axis, it is folded
    // into the columns ("test 10%", "most-like 10%"); the other axes split tables.
    let fold_eval = opts.rows != Axis::Eval && opts.cols != Axis::Eval;
    let fixed_axes: Vec<Axis> = Axis::ALL
        .into_iter()
        .filter(|a| *a != opts.rows && *a != opts.cols && *a != Axis::Eval)
        .collect();
    let col_of = |p: &Atom| -> (String, String) {
        if fold_eval {
            (p.eval.clone(), p.axis(opts.cols))
        } else {
            (String::new(), p.axis(opts.cols))
        }
    };
    let col_text = |(e, c): &(String, String)| {
        if e.is_empty() {
            c.clone()
        } else {
            format!("{e} {c}")
        }
    };

    let mut tables: BTreeMap<Vec<String>, Vec<&Atom>> = BTreeMap::new();
    for a in &atoms {
        let key: Vec<String> = fixed_axes.iter().map(|x| a.axis(*x)).collect();
        tables.entry(key).or_default().push(a);
    }
    let leaks = leakage(k, opts)?;
    let mut out = Vec::new();
    for (key, pts) in tables {
        let notes = leak_notes(&leaks, &pts);
        let rows = sort_values(
            opts.rows,
            pts.iter().map(|p| p.axis(opts.rows)).collect(),
            baseline.as_deref(),
        );
        let evals = sort_values(Axis::Eval, pts.iter().map(|p| col_of(p).0).collect(), None);
        let inner = sort_values(
            opts.cols,
            pts.iter().map(|p| col_of(p).1).collect(),
            baseline.as_deref(),
        );
        let cols: Vec<String> = evals
            .iter()
            .flat_map(|e| inner.iter().map(move |c| (e.clone(), c.clone())))
            .filter(|ec| pts.iter().any(|p| &col_of(p) == ec))
            .map(|ec| col_text(&ec))
            .collect();
        let mut cells = Vec::new();
        for a in &pts {
            cells.push((
                a.axis(opts.rows),
                col_text(&col_of(a)),
                summarise(k, a, baseline.as_deref(), opts)?,
            ));
        }
        cells.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        let mut notes = notes;
        if cells
            .iter()
            .any(|c| matches!(c.2.test, Some("DeLong" | "paired bootstrap")))
        {
            notes.push(SINGLE_SEED_NOTE.to_string());
        }
        out.push(CompareTable {
            fixed: fixed_axes
                .iter()
                .map(|a| a.name().to_string())
                .zip(key)
                .collect(),
            row_axis: opts.rows.name(),
            col_axis: opts.cols.name(),
            rows,
            cols,
            baseline: baseline.clone(),
            cells,
            level: opts.level,
            notes,
        });
    }
    Ok(out)
}

/// The filters a user gave, as " sweep `x`, task `y`" ('' for none).
fn filters_text(opts: &CompareOptions) -> String {
    let mut filters = Vec::new();
    if let Some(s) = &opts.sweep {
        filters.push(format!("sweep `{s}`"));
    }
    if let Some(t) = &opts.task {
        filters.push(format!("task `{t}`"));
    }
    if let Some(p) = &opts.protocol {
        filters.push(format!("protocol `{p}`"));
    }
    if filters.is_empty() {
        String::new()
    } else {
        format!(" {}", filters.join(", "))
    }
}

/// A note for each (init, task, protocol) of the table's cells whose runs allowed leakage.
fn leak_notes(leaks: &[Leak], pts: &[&Atom]) -> Vec<String> {
    leaks
        .iter()
        .filter(|l| {
            pts.iter()
                .any(|a| a.init == l.init && a.task == l.task && a.protocol == l.protocol)
        })
        .map(|l| {
            format!(
                "‡ `{}` ({}, {}): {} run(s) allowed leakage — up to {} patient(s) of the evaluated sets were in the init's pretraining data",
                l.init, l.task, l.protocol, l.runs, l.most_patients
            )
        })
        .collect()
}

fn leakage(k: &Ktrack, opts: &CompareOptions) -> Result<Vec<Leak>, Error> {
    Ok(k.index.read()?.points().leakage(opts.sweep.as_deref())?)
}

/// The predictions of `run` (a hash) on evaluation set `eval`.
pub fn predictions_of(k: &Ktrack, run: &str, eval: &str) -> Result<Predictions, Error> {
    let run = parse_hash(run)?;
    let role = format!("predictions:{eval}");
    let hash = k
        .index
        .read()?
        .runs()
        .output(&run, &role)?
        .ok_or_else(|| Error::Predictions(run, format!("run has no {role}")))?;
    let bytes = k
        .store
        .read(&hash)
        .map_err(|e| Error::Predictions(hash, e.to_string()))?;
    Predictions::from_parquet(&bytes).map_err(|e| Error::Predictions(hash, e.to_string()))
}

/// Mean, sd (ddof 1) and t-interval from a count, sum and sum of squares.
fn from_sums(n: i64, sum: f64, sumsq: f64, level: f64) -> stats::SeedSummary {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let nf = n as f64;
    let mean = sum / nf;
    if n < 2 {
        return stats::SeedSummary {
            n: n as usize,
            mean,
            sd: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    let var = ((sumsq - nf * mean * mean) / (nf - 1.0)).max(0.0);
    let sd = var.sqrt();
    let t = StudentsT::new(0.0, 1.0, nf - 1.0)
        .map(|d| d.inverse_cdf(1.0 - (1.0 - level) / 2.0))
        .unwrap_or(f64::NAN);
    let half = t * sd / nf.sqrt();
    stats::SeedSummary {
        n: n as usize,
        mean,
        sd,
        lo: mean - half,
        hi: mean + half,
    }
}

fn summarise(
    k: &Ktrack,
    a: &Atom,
    baseline: Option<&str>,
    opts: &CompareOptions,
) -> Result<Cell, Error> {
    let mut cell = Cell {
        metric: a.metric.clone(),
        seeds: a.n as usize,
        estimate: if a.n > 0 {
            a.sum / a.n as f64
        } else {
            f64::NAN
        },
        lo: None,
        hi: None,
        diff: None,
        p: None,
        test: None,
        run: Some(a.run.clone()),
    };
    let is_baseline = baseline == Some(a.init.as_str());
    if a.pairs > 0 && !is_baseline {
        cell.diff = Some(a.dsum / a.pairs as f64);
    }
    if a.n >= 2 {
        let s = from_sums(a.n, a.sum, a.sumsq, opts.level);
        cell.lo = s.lo.is_finite().then_some(s.lo);
        cell.hi = s.hi.is_finite().then_some(s.hi);
        if a.pairs >= 2 && !is_baseline {
            cell.p = paired_t_p_from_sums(a.pairs, a.dsum, a.dsumsq);
            cell.test = Some("paired t over seeds");
        }
        return Ok(cell);
    }
    if opts.bootstrap == 0 || a.n == 0 {
        return Ok(cell);
    }
    let preds = predictions_of(k, &a.run, &a.eval)?;
    let patients: Vec<&str> = preds.patient_id.iter().map(String::as_str).collect();
    let clusters = Clusters::by_patient(&patients, &preds.label);
    let m = a.metric.clone();
    let ci = stats::bootstrap_ci(
        &clusters,
        preds.len(),
        &|idx| preds.metric_on(&m, idx),
        opts.bootstrap,
        opts.level,
        opts.seed,
    );
    cell.lo = ci.lo.is_finite().then_some(ci.lo);
    cell.hi = ci.hi.is_finite().then_some(ci.hi);
    let Some(base_run) = a.base_run.as_deref().filter(|_| !is_baseline) else {
        return Ok(cell);
    };
    let base = predictions_of(k, base_run, &a.eval)?;
    let t = single_seed_test(&a.metric, &preds, &base, opts, false);
    cell.p = t.p;
    cell.test = Some(t.test);
    Ok(cell)
}

/// Said under every table with a single-seed p-value.
pub const SINGLE_SEED_NOTE: &str = "Single-seed p-values (DeLong, paired bootstrap) resample the test set only, not \
     training seeds: A/A pairs (two seeds of one init) are flagged more often than 5% \
     (`ktrack bench calibration`). Several seeds per cell give the paired t-test over seeds.";

/// The single-seed test of one run against another on the same evaluation cases.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PairTest {
    /// `metric(a) − metric(b)` on the cases both predicted.
    pub diff: f64,
    /// The patient-clustered paired-bootstrap CI of `diff` (when asked for).
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    pub p: Option<f64>,
    /// `DeLong` (AUROC) or `paired bootstrap` (every other metric).
    pub test: &'static str,
}

/// What `compare` tests when a cell has one seed: DeLong for AUROC, else a paired bootstrap
/// over patients of the test set (`opts.bootstrap` replicates from `opts.seed`). Both resample
/// the test cases only: the training seed's own variance is not in them. `with_ci` also draws
/// the paired-bootstrap CI of the difference.
pub fn single_seed_test(
    metric: &str,
    a: &Predictions,
    b: &Predictions,
    opts: &CompareOptions,
    with_ci: bool,
) -> PairTest {
    // Pair the two prediction sets case by case (same evaluation cases).
    let order: BTreeMap<&str, usize> = b
        .sample_id
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let aligned: Vec<(usize, usize)> = a
        .sample_id
        .iter()
        .enumerate()
        .filter_map(|(i, s)| order.get(s.as_str()).map(|&j| (i, j)))
        .collect();
    let patients: Vec<&str> = a.patient_id.iter().map(String::as_str).collect();
    let clusters = Clusters::by_patient(&patients, &a.label);
    let map: BTreeMap<usize, usize> = aligned.iter().copied().collect();
    let diff_on = |idx: &[usize]| {
        let other: Vec<usize> = idx.iter().filter_map(|i| map.get(i).copied()).collect();
        a.metric_on(metric, idx) - b.metric_on(metric, &other)
    };
    let all: Vec<usize> = aligned.iter().map(|&(i, _)| i).collect();
    let mut t = PairTest {
        diff: diff_on(&all),
        lo: None,
        hi: None,
        p: None,
        test: "paired bootstrap",
    };
    if metric != "auroc" || with_ci {
        let (ci, pv) = stats::paired_bootstrap(
            &clusters,
            a.len(),
            &diff_on,
            opts.bootstrap,
            opts.level,
            opts.seed,
        );
        t.lo = (with_ci && ci.lo.is_finite()).then_some(ci.lo);
        t.hi = (with_ci && ci.hi.is_finite()).then_some(ci.hi);
        t.p = pv.is_finite().then_some(pv);
    }
    if metric == "auroc" {
        let labels: Vec<u8> = aligned.iter().map(|&(i, _)| a.label[i]).collect();
        let x: Vec<f64> = aligned.iter().map(|&(i, _)| a.probs[i][0]).collect();
        let y: Vec<f64> = aligned.iter().map(|&(_, j)| b.probs[j][0]).collect();
        let d = stats::delong(&labels, &x, &y);
        t.p = d.p.is_finite().then_some(d.p);
        t.test = "DeLong";
    }
    t
}

/// The two-sided paired t-test p-value of per-seed differences (none for fewer than two).
pub fn paired_t_p(diffs: &[f64]) -> Option<f64> {
    paired_t_p_from_sums(
        diffs.len() as i64,
        diffs.iter().sum(),
        diffs.iter().map(|d| d * d).sum(),
    )
}

fn paired_t_p_from_sums(n: i64, dsum: f64, dsumsq: f64) -> Option<f64> {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let mean = dsum / nf;
    let sd = ((dsumsq - nf * mean * mean) / (nf - 1.0)).max(0.0).sqrt();
    if sd <= 1e-15 {
        return Some(if mean.abs() <= 1e-15 { 1.0 } else { 0.0 });
    }
    let t = mean / (sd / nf.sqrt());
    let dist = StudentsT::new(0.0, 1.0, nf - 1.0).ok()?;
    Some(2.0 * (1.0 - dist.cdf(t.abs())))
}

/// `*`, `**`, `***` for p below 0.05, 0.01, 0.001.
pub fn marker(p: Option<f64>) -> &'static str {
    match p {
        Some(p) if p < 0.001 => "***",
        Some(p) if p < 0.01 => "**",
        Some(p) if p < 0.05 => "*",
        _ => "",
    }
}

/// A cell as text: `0.701 [0.65, 0.75] +0.102**`.
pub fn cell_text(c: &Cell) -> String {
    let mut s = if c.estimate.is_finite() {
        format!("{:.3}", c.estimate)
    } else {
        "n/a".into()
    };
    if let (Some(lo), Some(hi)) = (c.lo, c.hi) {
        s.push_str(&format!(" [{lo:.3}, {hi:.3}]"));
    }
    if let Some(d) = c.diff
        && d.is_finite()
    {
        s.push_str(&format!(" {d:+.3}{}", marker(c.p)));
    }
    s
}
