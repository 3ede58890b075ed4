//! Plots with plotters, needing no system font library: SVG writes text as `<text>` elements;
//! PNG draws labels with an embedded 8x8 bitmap font. `compare --plot`: metric vs label
//! fraction, one line per init with its confidence band, a panel per table and evaluation set.
//! `plot roc`: ROC curves of binary runs.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind, text_anchor,
};

use super::compare::CompareTable;

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

/// A bitmap backend that draws text with the public-domain 8x8 font (no font files needed).
struct PixelFont<'a> {
    inner: BitMapBackend<'a>,
}

impl DrawingBackend for PixelFont<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }
    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        ul: BackendCoord,
        br: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(ul, br, style, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_path(path, style)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }
    fn estimate_text_size<T: BackendTextStyle>(
        &self,
        text: &str,
        style: &T,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let scale = glyph_scale(style.size());
        Ok((
            (text.chars().count() * 8 * scale) as u32,
            (8 * scale) as u32,
        ))
    }
    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        use font8x8::UnicodeFonts;
        let scale = glyph_scale(style.size()) as i32;
        let (w, h) = (text.chars().count() as i32 * 8 * scale, 8 * scale);
        let anchor = style.anchor();
        let x0 = pos.0
            - match anchor.h_pos {
                text_anchor::HPos::Left => 0,
                text_anchor::HPos::Center => w / 2,
                text_anchor::HPos::Right => w,
            };
        let y0 = pos.1
            - match anchor.v_pos {
                text_anchor::VPos::Top => 0,
                text_anchor::VPos::Center => h / 2,
                text_anchor::VPos::Bottom => h,
            };
        let color = style.color();
        for (i, ch) in text.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS
                .get(ch)
                .or_else(|| font8x8::BASIC_FONTS.get('?'))
                .unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        let x = x0 + (i as i32 * 8 + col) * scale;
                        let y = y0 + row as i32 * scale;
                        for dy in 0..scale {
                            for dx in 0..scale {
                                self.inner.draw_pixel((x + dx, y + dy), color)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn glyph_scale(size: f64) -> usize {
    ((size / 12.0).round() as usize).max(1)
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// One panel: (title, metric, lines of (init, points of (fraction, estimate, lo, hi))).
type Panel = (String, String, Vec<(String, Vec<(f64, f64, f64, f64)>)>);

fn panels(tables: &[CompareTable]) -> Vec<Panel> {
    let mut out = Vec::new();
    for t in tables {
        // Columns are "<eval> <fraction>%" (or just "<fraction>%").
        let mut evals: Vec<String> = Vec::new();
        for c in &t.cols {
            let e = c
                .rsplit_once(' ')
                .map(|(e, _)| e.to_string())
                .unwrap_or_default();
            if !evals.contains(&e) {
                evals.push(e);
            }
        }
        for e in evals {
            let mut lines = Vec::new();
            for r in &t.rows {
                let mut pts = Vec::new();
                for c in t
                    .cols
                    .iter()
                    .filter(|c| c.rsplit_once(' ').map(|(x, _)| x).unwrap_or("") == e)
                {
                    let frac: f64 = c
                        .rsplit(' ')
                        .next()
                        .unwrap_or("")
                        .trim_end_matches('%')
                        .parse()
                        .unwrap_or(f64::NAN)
                        / 100.0;
                    if let Some(cell) = t.cell(r, c)
                        && cell.estimate.is_finite()
                        && frac.is_finite()
                    {
                        pts.push((
                            frac,
                            cell.estimate,
                            cell.lo.unwrap_or(cell.estimate),
                            cell.hi.unwrap_or(cell.estimate),
                        ));
                    }
                }
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                if !pts.is_empty() {
                    lines.push((r.clone(), pts));
                }
            }
            let metric = t
                .cells
                .first()
                .map(|(_, _, c)| c.metric.clone())
                .unwrap_or_default();
            let title = if e.is_empty() {
                t.title()
            } else {
                format!("{}, {e}", t.title())
            };
            out.push((title, metric, lines));
        }
    }
    out
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> Result<(), String> {
    let (title, metric, lines) = panel;
    let all: Vec<&(f64, f64, f64, f64)> = lines.iter().flat_map(|(_, p)| p).collect();
    let (xmin, xmax) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let (ymin, ymax) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.2), b.max(p.3))
        });
    let pad = ((ymax - ymin) * 0.1).max(0.02);
    let (lx0, lx1) = (xmin.max(1e-4).log10() - 0.1, xmax.max(1e-4).log10() + 0.1);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{title}: {metric}"), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(lx0..lx1, (ymin - pad)..(ymax + pad))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("label fraction")
        .x_label_formatter(&|v| format!("{:.0}%", 10f64.powf(*v) * 100.0))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (init, pts)) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let band: Vec<(f64, f64)> = pts
            .iter()
            .map(|p| (p.0.log10(), p.3))
            .chain(pts.iter().rev().map(|p| (p.0.log10(), p.2)))
            .collect();
        chart
            .draw_series(std::iter::once(Polygon::new(
                band,
                color.mix(0.15).filled(),
            )))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0.log10(), p.1)),
                Color::stroke_width(&color, 2),
            ))
            .map_err(|e| e.to_string())?
            .label(init.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], Color::stroke_width(&color, 2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn render<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    panels: &[Panel],
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let cols = if panels.len() > 1 { 2 } else { 1 };
    let rows = panels.len().div_ceil(cols);
    let areas = root.split_evenly((rows, cols));
    for (area, panel) in areas.iter().zip(panels) {
        draw_panel(area, panel)?;
    }
    root.present().map_err(|e| e.to_string())
}

/// Metric vs label fraction from comparison tables.
pub fn fraction_plot(tables: &[CompareTable], path: &Path) -> Result<usize, Error> {
    let panels = panels(tables);
    if panels.iter().all(|p| p.2.is_empty()) {
        return Err(Error::Empty("no cells with a value".into()));
    }
    let cols = if panels.len() > 1 { 2 } else { 1 };
    let size = (560 * cols as u32, 400 * panels.len().div_ceil(cols) as u32);
    draw(path, size, |root| match root {
        Root::Svg(r) => render(r, &panels),
        Root::Png(r) => render(r, &panels),
    })?;
    Ok(panels.len())
}

/// ROC curve points (false positive rate, true positive rate) at every distinct threshold, as
/// scikit-learn's `roc_curve` with `drop_intermediate=False`.
pub fn roc_points(labels: &[u8], scores: &[f64]) -> Vec<(f64, f64)> {
    let pos = labels.iter().filter(|&&l| l == 1).count() as f64;
    let neg = labels.len() as f64 - pos;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut pts = vec![(0.0, 0.0)];
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
        pts.push((
            if neg > 0.0 { fp / neg } else { 0.0 },
            if pos > 0.0 { tp / pos } else { 0.0 },
        ));
    }
    pts
}

/// One ROC curve: label, (false positive rate, true positive rate) points, AUROC.
pub type Curve = (String, Vec<(f64, f64)>, f64);

/// The ROC curve of each binary run on one evaluation set, from its stored predictions.
pub fn roc_curves(
    k: &crate::context::Ktrack,
    runs: &[crate::id::Hash],
    eval: &str,
) -> Result<Vec<Curve>, Error> {
    use crate::predictions::{Predictions, TaskKind};
    let role = format!("predictions:{eval}");
    let mut curves = Vec::new();
    for id in runs {
        let found = k.index.read()?.runs().label_and_output(id, &role)?;
        let (label, hash) = found.ok_or(Error::UnknownRun(*id))?;
        let hash = hash.ok_or_else(|| Error::NoPredictions {
            run: *id,
            eval: eval.to_string(),
        })?;
        let preds =
            Predictions::from_parquet(&k.store.read(&hash)?).map_err(|e| Error::Predictions {
                run: *id,
                message: e.to_string(),
            })?;
        if preds.kind != TaskKind::Binary {
            return Err(Error::NotBinary(*id));
        }
        let scores = preds.scores();
        let auc = crate::metrics::binary::auroc(&preds.label, &scores);
        curves.push((label, roc_points(&preds.label, &scores), auc));
    }
    Ok(curves)
}

/// ROC curves.
pub fn roc_plot(curves: &[Curve], path: &Path) -> Result<(), Error> {
    if curves.is_empty() {
        return Err(Error::Empty("no curves".into()));
    }
    draw(path, (640, 600), |root| match root {
        Root::Svg(r) => roc_render(r, curves),
        Root::Png(r) => roc_render(r, curves),
    })
}

fn roc_render<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    curves: &[Curve],
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("ROC", ("sans-serif", 18))
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(44)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("false positive rate")
        .y_desc("true positive rate")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            BLACK.mix(0.3),
        ))
        .map_err(|e| e.to_string())?;
    for (i, (label, pts, auc)) in curves.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                pts.iter().copied(),
                Color::stroke_width(&color, 2),
            ))
            .map_err(|e| e.to_string())?
            .label(format!("{label} (AUROC {auc:.3})"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], Color::stroke_width(&color, 2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

enum Root<'a> {
    Svg(DrawingArea<SVGBackend<'a>, Shift>),
    Png(DrawingArea<PixelFont<'a>, Shift>),
}

fn draw(
    path: &Path,
    size: (u32, u32),
    f: impl FnOnce(Root<'_>) -> Result<(), String>,
) -> Result<(), Error> {
    let err = |message: String| Error::Draw {
        path: path.to_path_buf(),
        message,
    };
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("svg") => f(Root::Svg(SVGBackend::new(path, size).into_drawing_area())).map_err(err),
        Some("png") => {
            let backend = PixelFont {
                inner: BitMapBackend::new(path, size),
            };
            f(Root::Png(backend.into_drawing_area())).map_err(err)
        }
        _ => Err(Error::Extension(path.to_path_buf())),
    }
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
    fn roc_files_are_written_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let curves = vec![(
            "a".to_string(),
            roc_points(&[0, 1, 1, 0], &[0.2, 0.9, 0.6, 0.4]),
            1.0,
        )];
        for name in ["roc.svg", "roc.png"] {
            let p = dir.path().join(name);
            roc_plot(&curves, &p).unwrap();
            let bytes = std::fs::read(&p).unwrap();
            assert!(bytes.len() > 500);
        }
        let svg = std::fs::read_to_string(dir.path().join("roc.svg")).unwrap();
        assert!(svg.contains("AUROC 1.000"));
        assert!(
            std::fs::read(dir.path().join("roc.png"))
                .unwrap()
                .starts_with(b"\x89PNG")
        );
        assert!(matches!(
            roc_plot(&curves, &dir.path().join("roc.pdf")),
            Err(Error::Extension(_))
        ));
    }
}
