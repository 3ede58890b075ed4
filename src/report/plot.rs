//! The study's plots, drawn by [`super::figure`] (SVG with the embedded TrueType font; PNG
//! rasterised from it at twice its size). `compare --plot`: metric vs label fraction, one line
//! per init with its confidence band, a panel per table and evaluation set. `plot roc` and
//! `plot pr`: ROC and precision-recall curves of binary runs. The report draws the same charts.

use std::path::Path;

use super::compare::CompareTable;
use super::figure::{self, Chart, Point, Scale, Series, Ticks};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not draw `{path}`: {message}")]
    Draw {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("plot file `{0}` must end in .svg or .png")]
    Extension(std::path::PathBuf),
    #[error("nothing to plot: {0}")]
    Empty(String),
    #[error("run {run} has no predictions on `{eval}` (is it finished?)")]
    NoPredictions { run: crate::id::Hash, eval: String },
    #[error("run {0} is a KL run; ROC curves need a binary task")]
    NotBinary(crate::id::Hash),
    #[error("run {0} is not in the index")]
    UnknownRun(crate::id::Hash),
    #[error("could not read the predictions of run {run}: {message}")]
    Predictions {
        run: crate::id::Hash,
        message: String,
    },
    #[error(transparent)]
    Index(#[from] crate::index::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// The metric-vs-fraction charts of comparison tables: one per table and evaluation set, a
/// line per init with its confidence band. Each point's tooltip names its value, CI and run.
pub fn fraction_charts(tables: &[CompareTable]) -> Vec<Chart> {
    let mut out = Vec::new();
    for t in tables {
        // Columns are "<eval> <fraction>%" (or just "<fraction>%").
        let eval_of = |c: &str| {
            c.rsplit_once(' ')
                .map(|(e, _)| e.to_string())
                .unwrap_or_default()
        };
        let mut evals: Vec<String> = Vec::new();
        for c in &t.cols {
            let e = eval_of(c);
            if !evals.contains(&e) {
                evals.push(e);
            }
        }
        let metric = t
            .cells
            .first()
            .map(|(_, _, c)| c.metric.clone())
            .unwrap_or_default();
        for e in evals {
            let title = if e.is_empty() {
                format!("{}: {metric}", t.title())
            } else {
                format!("{}, {e}: {metric}", t.title())
            };
            let mut chart = Chart::new(title, "label fraction", &metric);
            chart.x_scale = Scale::Log10;
            chart.x_ticks = Ticks::Percent;
            for (i, r) in t.rows.iter().enumerate() {
                let mut pts: Vec<(Point, (f64, f64, f64))> = Vec::new();
                for c in t.cols.iter().filter(|c| eval_of(c) == e) {
                    let frac = c
                        .rsplit(' ')
                        .next()
                        .unwrap_or("")
                        .trim_end_matches('%')
                        .parse::<f64>()
                        .unwrap_or(f64::NAN)
                        / 100.0;
                    if let Some(cell) = t.cell(r, c)
                        && cell.estimate.is_finite()
                        && frac.is_finite()
                    {
                        let (lo, hi) = (
                            cell.lo.unwrap_or(cell.estimate),
                            cell.hi.unwrap_or(cell.estimate),
                        );
                        let seeds = if cell.seeds == 1 {
                            String::new()
                        } else {
                            format!(", {} seeds", cell.seeds)
                        };
                        let run = cell.run.clone();
                        let tip = format!(
                            "{r} at {}: {metric} {:.3} [{lo:.3}, {hi:.3}]{seeds}{}",
                            figure::percent(frac),
                            cell.estimate,
                            run.as_deref()
                                .map(|r| format!(", run {}", &r[..r.len().min(12)]))
                                .unwrap_or_default()
                        );
                        pts.push((
                            Point {
                                x: frac,
                                y: cell.estimate,
                                tip: Some(tip),
                                run,
                            },
                            (frac, lo, hi),
                        ));
                    }
                }
                pts.sort_by(|a, b| a.0.x.total_cmp(&b.0.x));
                if pts.is_empty() {
                    continue;
                }
                chart.series.push(Series {
                    name: r.clone(),
                    band: pts.iter().map(|p| p.1).collect(),
                    points: pts.into_iter().map(|p| p.0).collect(),
                    markers: true,
                    colour: Some(i),
                    ..Series::default()
                });
            }
            out.push(chart);
        }
    }
    out
}

/// Metric vs label fraction from comparison tables, as one figure of panels.
pub fn fraction_plot(tables: &[CompareTable], path: &Path) -> Result<usize, Error> {
    let charts = fraction_charts(tables);
    if charts.iter().all(|c| c.series.is_empty()) {
        return Err(Error::Empty("no cells with a value".into()));
    }
    let figures: Vec<String> = charts
        .iter()
        .map(|c| figure::svg(c, 560.0, 400.0, false))
        .collect();
    save(&figure::grid(&figures, 2, true), path)?;
    Ok(charts.len())
}

/// ROC curve points (false positive rate, true positive rate) at every distinct threshold, as
/// scikit-learn's `roc_curve` with `drop_intermediate=False`.
pub fn roc_points(labels: &[u8], scores: &[f64]) -> Vec<(f64, f64)> {
    let pos = labels.iter().filter(|&&l| l == 1).count() as f64;
    let neg = labels.len() as f64 - pos;
    let mut pts = vec![(0.0, 0.0)];
    for (tp, fp) in thresholds(labels, scores) {
        pts.push((
            if neg > 0.0 { fp / neg } else { 0.0 },
            if pos > 0.0 { tp / pos } else { 0.0 },
        ));
    }
    pts
}

/// Precision-recall points (recall, precision) from the highest threshold down, starting at
/// (0, 1) as scikit-learn's `precision_recall_curve` ends; its step area is average precision.
pub fn pr_points(labels: &[u8], scores: &[f64]) -> Vec<(f64, f64)> {
    let pos = labels.iter().filter(|&&l| l == 1).count() as f64;
    let mut pts = vec![(0.0, 1.0)];
    for (tp, fp) in thresholds(labels, scores) {
        let recall = if pos > 0.0 { tp / pos } else { 0.0 };
        pts.push((recall, tp / (tp + fp)));
    }
    pts
}

/// Cumulative (true positives, false positives) at each distinct score, highest first.
fn thresholds(labels: &[u8], scores: &[f64]) -> Vec<(f64, f64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut out = Vec::new();
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if labels[order[i]] == 1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        out.push((tp, fp));
    }
    out
}

/// One binary run's curve data on one evaluation set.
#[derive(Clone, Debug)]
pub struct Curve {
    pub label: String,
    pub run: crate::id::Hash,
    pub roc: Vec<(f64, f64)>,
    pub auroc: f64,
    pub pr: Vec<(f64, f64)>,
    pub auprc: f64,
    /// Positives among all cases (the chance level of precision).
    pub prevalence: f64,
}

impl Curve {
    pub fn of(label: String, run: crate::id::Hash, labels: &[u8], scores: &[f64]) -> Curve {
        let pos = labels.iter().filter(|&&l| l == 1).count() as f64;
        Curve {
            label,
            run,
            roc: roc_points(labels, scores),
            auroc: crate::metrics::binary::auroc(labels, scores),
            pr: pr_points(labels, scores),
            auprc: crate::metrics::binary::average_precision(labels, scores),
            prevalence: pos / labels.len().max(1) as f64,
        }
    }
}

/// The ROC and PR curves of each binary run on one evaluation set, from its predictions.
pub fn roc_curves(
    k: &crate::context::Ktrack,
    runs: &[crate::id::Hash],
    eval: &str,
) -> Result<Vec<Curve>, Error> {
    use crate::predictions::TaskKind;
    let role = format!("predictions:{eval}");
    let mut curves = Vec::new();
    for id in runs {
        let found = k.index.read()?.runs().label_and_output(id, &role)?;
        let (label, hash) = found.ok_or(Error::UnknownRun(*id))?;
        let hash = hash.ok_or_else(|| Error::NoPredictions {
            run: *id,
            eval: eval.to_string(),
        })?;
        let preds = read_predictions(k, id, &hash)?;
        if preds.kind != TaskKind::Binary {
            return Err(Error::NotBinary(*id));
        }
        curves.push(Curve::of(label, *id, &preds.label, &preds.scores()));
    }
    Ok(curves)
}

/// A run's predictions object, read from the store.
pub fn read_predictions(
    k: &crate::context::Ktrack,
    run: &crate::id::Hash,
    hash: &crate::id::Hash,
) -> Result<crate::predictions::Predictions, Error> {
    crate::predictions::Predictions::from_parquet(&k.store.read(hash)?).map_err(|e| {
        Error::Predictions {
            run: *run,
            message: e.to_string(),
        }
    })
}

/// Which curve of a binary run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CurveKind {
    Roc,
    Pr,
}

/// The ROC or precision-recall chart of some curves.
pub fn curve_chart(title: &str, curves: &[Curve], kind: CurveKind) -> Chart {
    let mut c = match kind {
        CurveKind::Roc => Chart::new(title, "false positive rate", "true positive rate"),
        CurveKind::Pr => Chart::new(title, "recall", "precision"),
    };
    c.x_range = Some((0.0, 1.0));
    c.y_range = Some((0.0, 1.0));
    c.reference = match kind {
        CurveKind::Roc => Some(((0.0, 0.0), (1.0, 1.0))),
        CurveKind::Pr => {
            let p = curves.first().map_or(0.5, |c| c.prevalence);
            Some(((0.0, p), (1.0, p)))
        }
    };
    for (i, cu) in curves.iter().enumerate() {
        let (pts, name) = match kind {
            CurveKind::Roc => (&cu.roc, format!("{} (AUROC {:.3})", cu.label, cu.auroc)),
            CurveKind::Pr => (&cu.pr, format!("{} (AP {:.3})", cu.label, cu.auprc)),
        };
        let pts: Vec<Point> = if kind == CurveKind::Pr {
            // Precision is a step function of recall: draw the steps.
            let mut out: Vec<Point> = Vec::new();
            for w in pts.windows(2) {
                out.push(Point::at(w[0].0, w[1].1));
                out.push(Point::at(w[1].0, w[1].1));
            }
            out
        } else {
            pts.iter().map(|p| Point::at(p.0, p.1)).collect()
        };
        c.series.push(Series {
            name,
            points: pts,
            colour: Some(i),
            ..Series::default()
        });
    }
    c
}

/// ROC (or PR) curves to a file.
pub fn curve_plot(curves: &[Curve], kind: CurveKind, path: &Path) -> Result<(), Error> {
    if curves.is_empty() {
        return Err(Error::Empty("no curves".into()));
    }
    let title = match kind {
        CurveKind::Roc => "ROC",
        CurveKind::Pr => "Precision-recall",
    };
    save(
        &figure::svg(&curve_chart(title, curves, kind), 640.0, 600.0, true),
        path,
    )
}

/// Writes an SVG document as `.svg`, or rasterised at twice its size as `.png`, atomically.
pub fn save(svg: &str, path: &Path) -> Result<(), Error> {
    let err = |message: String| Error::Draw {
        path: path.to_path_buf(),
        message,
    };
    let bytes = match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("svg") => svg.as_bytes().to_vec(),
        Some("png") => figure::png(svg, 2.0).map_err(err)?,
        _ => return Err(Error::Extension(path.to_path_buf())),
    };
    crate::output::write_atomic(path, &bytes).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_points_match_the_step_curve() {
        let pts = roc_points(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8]);
        assert_eq!(
            pts,
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
    }

    #[test]
    fn pr_points_match_sklearn() {
        // sklearn: precision_recall_curve([0,0,1,1], [0.1,0.4,0.35,0.8]) read from the top.
        let pts = pr_points(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8]);
        assert_eq!(
            pts,
            vec![
                (0.0, 1.0),
                (0.5, 1.0),
                (0.5, 0.5),
                (1.0, 2.0 / 3.0),
                (1.0, 0.5)
            ]
        );
    }

    #[test]
    fn curve_files_are_written_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let curves = vec![Curve::of(
            "a".to_string(),
            crate::id::Hash::of(b"a"),
            &[0, 1, 1, 0],
            &[0.2, 0.9, 0.6, 0.4],
        )];
        for kind in [CurveKind::Roc, CurveKind::Pr] {
            for name in ["c.svg", "c.png"] {
                let p = dir.path().join(name);
                curve_plot(&curves, kind, &p).unwrap();
                assert!(std::fs::read(&p).unwrap().len() > 500);
            }
            let svg = std::fs::read_to_string(dir.path().join("c.svg")).unwrap();
            let (label, axis) = match kind {
                CurveKind::Roc => ("a (AUROC 1.000)", "true positive rate"),
                CurveKind::Pr => ("a (AP 1.000)", "precision"),
            };
            assert!(svg.contains(&format!(">{label}<")), "{label}");
            assert!(svg.contains(&format!(">{axis}<")), "{axis}");
            // The font travels with the file.
            assert!(svg.contains("@font-face"));
        }
        assert!(
            std::fs::read(dir.path().join("c.png"))
                .unwrap()
                .starts_with(b"\x89PNG")
        );
        assert!(matches!(
            curve_plot(&curves, CurveKind::Roc, &dir.path().join("roc.pdf")),
            Err(Error::Extension(_))
        ));
    }
}
