//! `ktrack compare`: tables of a metric by init × label fraction (by default), per task and
//! protocol, internal test and external cohorts side by side. Each cell: the metric with its
//! confidence interval (over seeds: mean with a t-interval; one seed: a patient-level
//! stratified bootstrap when asked), the difference to the baseline init and a p-value marker
//! (seeds: paired t-test over seeds; one seed: DeLong for AUROC, paired bootstrap otherwise).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::context::Ktrack;
use crate::id::Hash;
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
    /// The init the others are compared with (default: `imagenet` if present, else `random`).
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

impl Error {
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Nothing(_) => Some("run a sweep first (`ktrack run experiments/quickstart.toml`), or relax the filters".into()),
            _ => None,
        }
    }
}

/// One finished run's headline numbers on one evaluation set.
#[derive(Clone, Debug)]
struct Point {
    run: Hash,
    init: String,
    task: String,
    protocol: String,
    fraction: f64,
    seed: i64,
    eval: String,
    metric: String,
    value: f64,
}

impl Point {
    fn axis(&self, a: Axis) -> String {
        match a {
            Axis::Init => self.init.clone(),
            Axis::Fraction => crate::runner::plan::pct(self.fraction),
            Axis::Task => self.task.clone(),
            Axis::Protocol => self.protocol.clone(),
            Axis::Eval => self.eval.clone(),
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

fn load_points(k: &Ktrack, opts: &CompareOptions) -> Result<Vec<Point>, Error> {
    // Every filter is bound; an empty one matches everything.
    let sql = "SELECT r.id, a.init, a.task, a.protocol, a.fraction, a.seed, m.eval_set, m.metric, m.value
         FROM runs r JOIN run_axes a ON a.run = r.id JOIN run_metrics m ON m.run = r.id
         WHERE r.status = 'done' AND m.eval_set <> 'val'
           AND (?1 = '' OR r.id IN (SELECT run FROM sweep_runs WHERE sweep = ?1))
           AND (?2 = '' OR a.task = ?2)
           AND (?3 = '' OR a.protocol = ?3)
           AND m.metric = CASE WHEN ?4 <> '' THEN ?4 WHEN a.task = 'kl' THEN 'qwk' ELSE 'auroc' END";
    type Row = (
        String,
        String,
        String,
        String,
        f64,
        i64,
        String,
        String,
        Option<f64>,
    );
    let rows: Vec<Row> = k
        .index
        .run(
            sqlx::query_as(sql)
                .bind(opts.sweep.clone().unwrap_or_default())
                .bind(opts.task.clone().unwrap_or_default())
                .bind(opts.protocol.clone().unwrap_or_default())
                .bind(opts.metric.clone().unwrap_or_default())
                .fetch_all(k.index.pool()),
        )
        .map_err(index::Error::from)?;
    let eval: BTreeSet<&str> = opts.eval.iter().map(String::as_str).collect();
    rows.into_iter()
        .filter(|r| eval.is_empty() || eval.contains(r.6.as_str()))
        .map(|r| {
            Ok(Point {
                run: parse_hash(&r.0)?,
                init: r.1,
                task: r.2,
                protocol: r.3,
                fraction: r.4,
                seed: r.5,
                eval: r.6,
                metric: r.7,
                value: r.8.unwrap_or(f64::NAN),
            })
        })
        .collect::<Result<_, index::Error>>()
        .map_err(Error::from)
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
    let points = load_points(k, opts)?;
    if points.is_empty() {
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
        let f = if filters.is_empty() {
            String::new()
        } else {
            format!(" {}", filters.join(", "))
        };
        return Err(Error::Nothing(f));
    }
    let inits: BTreeSet<&str> = points.iter().map(|p| p.init.as_str()).collect();
    let baseline = opts
        .baseline
        .clone()
        .or_else(|| {
            ["imagenet", "random"]
                .into_iter()
                .find(|b| inits.contains(b))
                .map(String::from)
        })
        .filter(|b| inits.contains(b.as_str()));
    // Evaluation sets sit side by side: unless eval is the row or column axis, it is folded
    // into the columns ("test 10%", "most-like 10%"); the other axes split tables.
    let fold_eval = opts.rows != Axis::Eval && opts.cols != Axis::Eval;
    let fixed_axes: Vec<Axis> = Axis::ALL
        .into_iter()
        .filter(|a| *a != opts.rows && *a != opts.cols && *a != Axis::Eval)
        .collect();
    let col_of = |p: &Point| -> (String, String) {
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

    let mut tables: BTreeMap<Vec<String>, Vec<&Point>> = BTreeMap::new();
    for p in &points {
        let key: Vec<String> = fixed_axes.iter().map(|a| p.axis(*a)).collect();
        tables.entry(key).or_default().push(p);
    }
    let mut out = Vec::new();
    for (key, pts) in tables {
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
        let mut by_cell: BTreeMap<(String, String), Vec<&Point>> = BTreeMap::new();
        for p in &pts {
            by_cell
                .entry((p.axis(opts.rows), col_text(&col_of(p))))
                .or_default()
                .push(p);
        }
        let mut cells = Vec::new();
        for ((r, c), cell_pts) in &by_cell {
            let cell = summarise(k, cell_pts, &pts, baseline.as_deref(), opts)?;
            cells.push((r.clone(), c.clone(), cell));
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
        });
    }
    Ok(out)
}

/// The baseline's points paired with a cell's (same task, protocol, fraction, eval, seed).
fn baseline_of<'a>(p: &Point, all: &[&'a Point], baseline: &str) -> Option<&'a Point> {
    all.iter()
        .find(|b| {
            b.init == baseline
                && b.task == p.task
                && b.protocol == p.protocol
                && b.fraction == p.fraction
                && b.eval == p.eval
                && b.seed == p.seed
                && b.metric == p.metric
        })
        .copied()
}

fn predictions_of(k: &Ktrack, run: &Hash, eval: &str) -> Result<Predictions, Error> {
    let role = format!("predictions:{eval}");
    let hash: Option<String> = k
        .index
        .run(
            sqlx::query_scalar("SELECT hash FROM run_outputs WHERE run = ?1 AND role = ?2")
                .bind(run.hex())
                .bind(&role)
                .fetch_optional(k.index.pool()),
        )
        .map_err(index::Error::from)?;
    let hash =
        parse_hash(&hash.ok_or_else(|| Error::Predictions(*run, format!("run has no {role}")))?)?;
    let bytes = k
        .store
        .read(&hash)
        .map_err(|e| Error::Predictions(hash, e.to_string()))?;
    Predictions::from_parquet(&bytes).map_err(|e| Error::Predictions(hash, e.to_string()))
}

fn summarise(
    k: &Ktrack,
    pts: &[&Point],
    all: &[&Point],
    baseline: Option<&str>,
    opts: &CompareOptions,
) -> Result<Cell, Error> {
    let metric = pts[0].metric.clone();
    let values: Vec<f64> = pts.iter().map(|p| p.value).collect();
    let is_baseline = baseline.is_some_and(|b| pts.iter().all(|p| p.init == b));
    let pairs: Vec<(&Point, &Point)> = match baseline {
        Some(b) if !is_baseline => pts
            .iter()
            .filter_map(|p| baseline_of(p, all, b).map(|q| (*p, q)))
            .collect(),
        _ => Vec::new(),
    };
    let mut cell = Cell {
        metric: metric.clone(),
        seeds: pts.len(),
        estimate: f64::NAN,
        lo: None,
        hi: None,
        diff: None,
        p: None,
        test: None,
    };
    if pts.len() >= 2 {
        let s = stats::over_seeds(&values, opts.level);
        cell.estimate = s.mean;
        cell.lo = s.lo.is_finite().then_some(s.lo);
        cell.hi = s.hi.is_finite().then_some(s.hi);
        if pairs.len() >= 2 {
            let diffs: Vec<f64> = pairs.iter().map(|(p, q)| p.value - q.value).collect();
            let d = stats::over_seeds(&diffs, opts.level);
            cell.diff = Some(d.mean);
            cell.p = paired_t_p(&diffs);
            cell.test = Some("paired t over seeds");
        }
        return Ok(cell);
    }
    let p = pts[0];
    cell.estimate = p.value;
    if let Some((_, q)) = pairs.first() {
        cell.diff = Some(p.value - q.value);
    }
    if opts.bootstrap > 0 {
        let preds = predictions_of(k, &p.run, &p.eval)?;
        let patients: Vec<&str> = preds.patient_id.iter().map(String::as_str).collect();
        let clusters = Clusters::by_patient(&patients, &preds.label);
        let m = metric.clone();
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
        if let Some((_, q)) = pairs.first() {
            let base = predictions_of(k, &q.run, &q.eval)?;
            // Pair the two prediction sets case by case (same evaluation cases).
            let order: BTreeMap<&str, usize> = base
                .sample_id
                .iter()
                .enumerate()
                .map(|(i, s)| (s.as_str(), i))
                .collect();
            let aligned: Vec<(usize, usize)> = preds
                .sample_id
                .iter()
                .enumerate()
                .filter_map(|(i, s)| order.get(s.as_str()).map(|&j| (i, j)))
                .collect();
            if metric == "auroc" {
                let labels: Vec<u8> = aligned.iter().map(|&(i, _)| preds.label[i]).collect();
                let a: Vec<f64> = aligned.iter().map(|&(i, _)| preds.probs[i][0]).collect();
                let b: Vec<f64> = aligned.iter().map(|&(_, j)| base.probs[j][0]).collect();
                let d = stats::delong(&labels, &a, &b);
                cell.p = d.p.is_finite().then_some(d.p);
                cell.test = Some("DeLong");
            } else {
                let m = metric.clone();
                let map: BTreeMap<usize, usize> = aligned.iter().copied().collect();
                let (_, pv) = stats::paired_bootstrap(
                    &clusters,
                    preds.len(),
                    &|idx| {
                        let other: Vec<usize> =
                            idx.iter().filter_map(|i| map.get(i).copied()).collect();
                        preds.metric_on(&m, idx) - base.metric_on(&m, &other)
                    },
                    opts.bootstrap,
                    opts.level,
                    opts.seed,
                );
                cell.p = pv.is_finite().then_some(pv);
                cell.test = Some("paired bootstrap");
            }
        }
    }
    Ok(cell)
}

/// Two-sided p-value of a paired t-test (mean difference zero).
fn paired_t_p(diffs: &[f64]) -> Option<f64> {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let n = diffs.len();
    if n < 2 {
        return None;
    }
    let mean = diffs.iter().sum::<f64>() / n as f64;
    let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    if sd == 0.0 {
        return Some(if mean == 0.0 { 1.0 } else { 0.0 });
    }
    let t = mean / (sd / (n as f64).sqrt());
    let dist = StudentsT::new(0.0, 1.0, (n - 1) as f64).ok()?;
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
