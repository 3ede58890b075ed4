//! Figures drawn by ktrack: line charts (with confidence bands, point markers and tooltips)
//! written as SVG, and rasterised to PNG from that same SVG by resvg. Text is set in the
//! embedded DejaVu Sans (`assets/DejaVuSans.ttf`, licence beside it) and measured with its own
//! advance widths, so the layout makes room for every title, tick label, axis label and legend
//! entry: the figure grows rather than cutting text. Colours are the Okabe–Ito palette, which
//! stays distinguishable under the common colour-vision deficiencies.
//!
//! No plotting crate lays out SVG this way (hover targets carrying a run id, text measured from
//! the font the reader sees), hence this module; the rasteriser is resvg's.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

/// The font every figure and the report use.
pub static FONT: &[u8] = include_bytes!("assets/DejaVuSans.ttf");
pub const FONT_FAMILY: &str = "DejaVu Sans";

/// Okabe–Ito colours (black last).
pub const PALETTE: [&str; 7] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
];

pub fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

fn face() -> &'static ttf_parser::Face<'static> {
    static FACE: OnceLock<ttf_parser::Face<'static>> = OnceLock::new();
    FACE.get_or_init(|| ttf_parser::Face::parse(FONT, 0).expect("the embedded font parses"))
}

/// The width of `s` set in the embedded font at `size` px (advance widths, no kerning).
pub fn text_width(s: &str, size: f64) -> f64 {
    let f = face();
    let em = f64::from(f.units_per_em());
    let units: f64 = s
        .chars()
        .map(|c| {
            let g = f.glyph_index(c).unwrap_or(ttf_parser::GlyphId(0));
            f64::from(f.glyph_hor_advance(g).unwrap_or(0))
        })
        .sum();
    units / em * size
}

/// Escapes text for SVG/HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A point of a series; `tip` is shown on hover, `run` is the run it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub tip: Option<String>,
    pub run: Option<String>,
}

impl Point {
    pub fn at(x: f64, y: f64) -> Point {
        Point {
            x,
            y,
            tip: None,
            run: None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<Point>,
    /// A confidence band: (x, lo, hi).
    pub band: Vec<(f64, f64, f64)>,
    /// Draw a marker (and hover target) at each point.
    pub markers: bool,
    /// Steps (ROC/PR curves) are drawn as given; `dashed` draws a dashed line.
    pub dashed: bool,
    /// Colour index in [`PALETTE`] (default: the series' position).
    pub colour: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log10,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ticks {
    /// Round numbers, two decimals at most.
    Nice,
    /// Integers only (epochs).
    Integer,
    /// These x values, shown as percentages (label fractions).
    Percent,
}

#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub x_ticks: Ticks,
    /// Fixed ranges (default: the data's, padded).
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
    pub series: Vec<Series>,
    /// A dashed reference line from (x0, y0) to (x1, y1), e.g. chance on a ROC plot.
    pub reference: Option<((f64, f64), (f64, f64))>,
    /// Vertical markers with a label (e.g. the best epoch).
    pub marks: Vec<(f64, String)>,
}

impl Chart {
    pub fn new(title: impl Into<String>, x_label: &str, y_label: &str) -> Chart {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            x_scale: Scale::Linear,
            x_ticks: Ticks::Nice,
            x_range: None,
            y_range: None,
            series: Vec::new(),
            reference: None,
            marks: Vec::new(),
        }
    }
}

const TITLE: f64 = 15.0;
const LABEL: f64 = 13.0;
const TICK: f64 = 11.5;
const LEGEND: f64 = 12.0;
const PAD: f64 = 10.0;

/// Round tick positions covering [lo, hi].
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

fn tick_text(v: f64, step: f64) -> String {
    // As many decimals as the step needs (0.25 → 2, 0.2 → 1, 5 → 0).
    let mut d = 0usize;
    while d < 4 {
        let scaled = step * 10f64.powi(d as i32);
        if (scaled - scaled.round()).abs() < 1e-6 {
            break;
        }
        d += 1;
    }
    format!("{v:.d$}")
}

pub fn percent(f: f64) -> String {
    let p = f * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else {
        format!("{p}%")
    }
}

struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
    /// Plot area in pixels: left, top, width, height.
    left: f64,
    top: f64,
    w: f64,
    h: f64,
    log: bool,
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        let (x, a, b) = if self.log {
            (x.max(1e-9).log10(), self.x0.log10(), self.x1.log10())
        } else {
            (x, self.x0, self.x1)
        };
        self.left + (x - a) / (b - a) * self.w
    }
    fn py(&self, y: f64) -> f64 {
        self.top + self.h - (y - self.y0) / (self.y1 - self.y0) * self.h
    }
}

fn ranges(c: &Chart) -> ((f64, f64), (f64, f64)) {
    let xs = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.x))
        .filter(|v| v.is_finite());
    let ys = c
        .series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .map(|p| p.y)
                .chain(s.band.iter().flat_map(|b| [b.1, b.2]))
        })
        .filter(|v| v.is_finite());
    let span = |it: &mut dyn Iterator<Item = f64>| {
        it.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        })
    };
    let (mut x0, mut x1) = c.x_range.unwrap_or_else(|| span(&mut xs.into_iter()));
    let (mut y0, mut y1) = c.y_range.unwrap_or_else(|| {
        let (a, b) = span(&mut ys.into_iter());
        let pad = ((b - a) * 0.08).max(0.01);
        (a - pad, b + pad)
    });
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    if c.x_range.is_none() {
        if c.x_scale == Scale::Log10 {
            let (a, b) = (x0.max(1e-9).log10(), x1.max(1e-9).log10());
            let pad = ((b - a) * 0.08).max(0.08);
            (x0, x1) = (10f64.powf(a - pad), 10f64.powf(b + pad));
        } else {
            let pad = ((x1 - x0) * 0.03).max(if c.x_ticks == Ticks::Integer {
                0.5
            } else {
                0.01
            });
            (x0, x1) = (x0 - pad, x1 + pad);
        }
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    ((x0, x1), (y0, y1))
}

fn x_tick_values(c: &Chart, x0: f64, x1: f64) -> Vec<(f64, String)> {
    match c.x_ticks {
        Ticks::Percent => {
            let mut v: Vec<f64> = c
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.x))
                .filter(|x| x.is_finite())
                .collect();
            v.sort_by(f64::total_cmp);
            v.dedup();
            v.into_iter().map(|x| (x, percent(x))).collect()
        }
        Ticks::Integer => {
            let t = nice_ticks(x0, x1, 6);
            let mut out: Vec<(f64, String)> = t
                .into_iter()
                .filter(|v| v.fract() == 0.0)
                .map(|v| (v, format!("{v:.0}")))
                .collect();
            if out.is_empty() {
                out.push((x0.ceil(), format!("{:.0}", x0.ceil())));
            }
            out
        }
        Ticks::Nice => {
            let t = nice_ticks(x0, x1, 5);
            let step = if t.len() > 1 { t[1] - t[0] } else { 1.0 };
            t.into_iter().map(|v| (v, tick_text(v, step))).collect()
        }
    }
}

/// Lays a legend out in rows no wider than `width`; returns (rows of entry indices, height).
fn legend_rows(names: &[&str], width: f64) -> Vec<Vec<usize>> {
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut used = f64::INFINITY;
    for (i, n) in names.iter().enumerate() {
        let w = 26.0 + text_width(n, LEGEND) + 16.0;
        if used + w > width {
            rows.push(Vec::new());
            used = 0.0;
        }
        rows.last_mut().expect("a row").push(i);
        used += w;
    }
    rows
}

/// The chart as an SVG document of at least `width` × `height` px (it grows to fit its text).
/// With `embed_font`, the font is inlined so the file renders the same anywhere.
pub fn svg(c: &Chart, width: f64, height: f64, embed_font: bool) -> String {
    let ((x0, x1), (y0, y1)) = ranges(c);
    let yt = nice_ticks(y0, y1, 5);
    let ystep = if yt.len() > 1 { yt[1] - yt[0] } else { 1.0 };
    let ylabels: Vec<(f64, String)> = yt.iter().map(|v| (*v, tick_text(*v, ystep))).collect();
    let xlabels = x_tick_values(c, x0, x1);
    let ytick_w = ylabels
        .iter()
        .map(|(_, s)| text_width(s, TICK))
        .fold(0.0, f64::max);
    let left = PAD + LABEL + 8.0 + ytick_w + 8.0;
    let last_x = xlabels
        .last()
        .map_or(0.0, |(_, s)| text_width(s, TICK) / 2.0);
    let right = PAD + last_x.max(8.0);
    let names: Vec<&str> = c.series.iter().map(|s| s.name.as_str()).collect();
    let longest = names
        .iter()
        .map(|n| 26.0 + text_width(n, LEGEND) + 16.0)
        .fold(0.0, f64::max);
    let width = width
        .max(text_width(&c.title, TITLE) + 2.0 * PAD)
        .max(longest + 2.0 * PAD)
        .max(left + right + text_width(&c.y_label, LABEL).max(text_width(&c.x_label, LABEL)))
        .ceil();
    let rows = if names.iter().any(|n| !n.is_empty()) {
        legend_rows(&names, width - 2.0 * PAD)
    } else {
        Vec::new()
    };
    let legend_h = rows.len() as f64 * (LEGEND + 8.0);
    let top = PAD + TITLE + 10.0;
    let bottom = TICK + 8.0 + LABEL + 10.0 + legend_h + PAD;
    let height = height.max(top + bottom + 120.0).ceil();
    let plot_w = (width - left - right).max(60.0);
    let f = Frame {
        x0,
        x1,
        y0,
        y1,
        left,
        top,
        w: plot_w,
        h: height - top - bottom,
        log: c.x_scale == Scale::Log10,
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="{FONT_FAMILY}, sans-serif" class="ktrack-figure">"#
    );
    if embed_font {
        let _ = write!(s, "<style>{}</style>", font_face_css());
    }
    let _ = write!(
        s,
        r##"<title>{}</title><rect width="100%" height="100%" fill="#ffffff"/>"##,
        esc(&c.title)
    );
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" font-size="{TITLE}" font-weight="bold" text-anchor="middle" fill="#111">{}</text>"##,
        width / 2.0,
        PAD + TITLE,
        esc(&c.title)
    );
    axes(&mut s, c, &f, &ylabels, &xlabels);
    let _ = write!(
        s,
        r#"<clipPath id="clip-{id}"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"/></clipPath><g clip-path="url(#clip-{id})">"#,
        f.left,
        f.top,
        f.w,
        f.h,
        id = clip_id(c, width, height)
    );
    if let Some(((ax, ay), (bx, by))) = c.reference {
        let _ = write!(
            s,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#888" stroke-dasharray="4 4"/>"##,
            f.px(ax),
            f.py(ay),
            f.px(bx),
            f.py(by)
        );
    }
    for (i, se) in c.series.iter().enumerate() {
        series(&mut s, se, se.colour.unwrap_or(i), &f);
    }
    s.push_str("</g>");
    for (x, label) in &c.marks {
        let px = f.px(*x);
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="#555" stroke-dasharray="2 3"/><text x="{:.1}" y="{:.1}" font-size="{TICK}" fill="#333">{}</text>"##,
            f.top,
            f.top + f.h,
            (px + 4.0).min(width - PAD - text_width(label, TICK)),
            f.top + TICK + 2.0,
            esc(label)
        );
    }
    legend(&mut s, c, &rows, width, height - PAD - legend_h);
    s.push_str("</svg>");
    s
}

/// A per-figure id for the clip path, so many figures can share one HTML page.
fn clip_id(c: &Chart, w: f64, h: f64) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(c.title.as_bytes());
    for se in &c.series {
        hasher.update(se.name.as_bytes());
        for p in &se.points {
            hasher.update(&p.x.to_le_bytes());
            hasher.update(&p.y.to_le_bytes());
        }
    }
    hasher.update(&w.to_le_bytes());
    hasher.update(&h.to_le_bytes());
    hasher.finalize().to_hex()[..12].to_string()
}

fn axes(
    s: &mut String,
    c: &Chart,
    f: &Frame,
    ylabels: &[(f64, String)],
    xlabels: &[(f64, String)],
) {
    let _ = write!(
        s,
        r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
        f.left, f.top, f.w, f.h
    );
    for (v, t) in ylabels {
        let y = f.py(*v);
        let _ = write!(
            s,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" font-size="{TICK}" text-anchor="end" fill="#333">{}</text>"##,
            f.left,
            f.left + f.w,
            f.left - 6.0,
            y + TICK * 0.35,
            esc(t)
        );
    }
    for (v, t) in xlabels {
        let x = f.px(*v);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#e3e3e3"/><text x="{x:.1}" y="{:.1}" font-size="{TICK}" text-anchor="middle" fill="#333">{}</text>"##,
            f.top,
            f.top + f.h,
            f.top + f.h + TICK + 5.0,
            esc(t)
        );
    }
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" font-size="{LABEL}" text-anchor="middle" fill="#111">{}</text>"##,
        f.left + f.w / 2.0,
        f.top + f.h + TICK + 8.0 + LABEL,
        esc(&c.x_label)
    );
    let (lx, ly) = (PAD + LABEL, f.top + f.h / 2.0);
    let _ = write!(
        s,
        r##"<text x="{lx:.1}" y="{ly:.1}" font-size="{LABEL}" text-anchor="middle" fill="#111" transform="rotate(-90 {lx:.1} {ly:.1})">{}</text>"##,
        esc(&c.y_label)
    );
}

fn series(s: &mut String, se: &Series, i: usize, f: &Frame) {
    let col = colour(i);
    if !se.band.is_empty() {
        let mut d = String::new();
        for (k, (x, _, hi)) in se.band.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.2},{:.2}",
                if k == 0 { "M" } else { "L" },
                f.px(*x),
                f.py(*hi)
            );
        }
        for (x, lo, _) in se.band.iter().rev() {
            let _ = write!(d, "L{:.2},{:.2}", f.px(*x), f.py(*lo));
        }
        let _ = write!(
            s,
            r#"<path d="{d}Z" fill="{col}" fill-opacity="0.15" stroke="none"/>"#
        );
    }
    let mut d = String::new();
    for (k, p) in se.points.iter().filter(|p| p.y.is_finite()).enumerate() {
        let _ = write!(
            d,
            "{}{:.2},{:.2}",
            if k == 0 { "M" } else { "L" },
            f.px(p.x),
            f.py(p.y)
        );
    }
    let dash = if se.dashed {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    };
    let _ = write!(
        s,
        r#"<path d="{d}" fill="none" stroke="{col}" stroke-width="2"{dash}><title>{}</title></path>"#,
        esc(&se.name)
    );
    if se.markers {
        for p in se.points.iter().filter(|p| p.y.is_finite()) {
            let run = p
                .run
                .as_deref()
                .map(|r| format!(r#" data-run="{}""#, esc(r)))
                .unwrap_or_default();
            let tip = p
                .tip
                .clone()
                .unwrap_or_else(|| format!("{}: {:.3}", se.name, p.y));
            let _ = write!(
                s,
                r##"<circle class="point" cx="{:.2}" cy="{:.2}" r="4" fill="{col}" stroke="#fff"{run} data-tip="{}"><title>{}</title></circle>"##,
                f.px(p.x),
                f.py(p.y),
                esc(&tip),
                esc(&tip)
            );
        }
    }
}

fn legend(s: &mut String, c: &Chart, rows: &[Vec<usize>], width: f64, top: f64) {
    for (r, row) in rows.iter().enumerate() {
        let row_w: f64 = row
            .iter()
            .map(|i| 26.0 + text_width(&c.series[*i].name, LEGEND) + 16.0)
            .sum::<f64>()
            - 16.0;
        let mut x = (width - row_w) / 2.0;
        let y = top + r as f64 * (LEGEND + 8.0) + LEGEND;
        for i in row {
            let se = &c.series[*i];
            let col = colour(se.colour.unwrap_or(*i));
            let dash = if se.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{col}" stroke-width="3"{dash}/><text x="{:.1}" y="{y:.1}" font-size="{LEGEND}" fill="#111">{}</text>"##,
                y - LEGEND * 0.35,
                x + 20.0,
                y - LEGEND * 0.35,
                x + 26.0,
                esc(&se.name)
            );
            x += 26.0 + text_width(&se.name, LEGEND) + 16.0;
        }
    }
}

/// `@font-face` for the embedded font, as CSS.
pub fn font_face_css() -> String {
    use base64::Engine as _;
    static CSS: OnceLock<String> = OnceLock::new();
    CSS.get_or_init(|| {
        format!(
            "@font-face{{font-family:'{FONT_FAMILY}';src:url(data:font/ttf;base64,{}) format('truetype');}}",
            base64::engine::general_purpose::STANDARD.encode(FONT)
        )
    })
    .clone()
}

/// Several figures side by side in rows of `cols`, as one SVG document.
pub fn grid(figures: &[String], cols: usize, embed_font: bool) -> String {
    let sizes: Vec<(f64, f64)> = figures.iter().map(|f| svg_size(f)).collect();
    let cw = sizes.iter().map(|s| s.0).fold(0.0, f64::max);
    let ch = sizes.iter().map(|s| s.1).fold(0.0, f64::max);
    let cols = cols.clamp(1, figures.len().max(1));
    let rows = figures.len().div_ceil(cols);
    let (w, h) = (cw * cols as f64, ch * rows as f64);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT_FAMILY}, sans-serif">"#
    );
    if embed_font {
        let _ = write!(s, "<style>{}</style>", font_face_css());
    }
    s.push_str(r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    for (i, fig) in figures.iter().enumerate() {
        let (x, y) = ((i % cols) as f64 * cw, (i / cols) as f64 * ch);
        // Nested <svg> elements take x and y.
        let inner = fig.replacen("<svg ", &format!(r#"<svg x="{x}" y="{y}" "#), 1);
        s.push_str(&inner);
    }
    s.push_str("</svg>");
    s
}

fn svg_size(svg: &str) -> (f64, f64) {
    let attr = |name: &str| {
        let key = format!(r#" {name}=""#);
        svg.find(&key)
            .and_then(|i| {
                let rest = &svg[i + key.len()..];
                rest[..rest.find('"')?].parse().ok()
            })
            .unwrap_or(0.0)
    };
    (attr("width"), attr("height"))
}

fn fontdb() -> Arc<resvg::usvg::fontdb::Database> {
    static DB: OnceLock<Arc<resvg::usvg::fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = resvg::usvg::fontdb::Database::new();
        db.load_font_data(FONT.to_vec());
        db.set_sans_serif_family(FONT_FAMILY);
        Arc::new(db)
    })
    .clone()
}

/// Rasterises an SVG document to PNG at `scale` × its size, with the embedded font only.
pub fn png(svg: &str, scale: f32) -> Result<Vec<u8>, String> {
    let opt = resvg::usvg::Options {
        font_family: FONT_FAMILY.to_string(),
        fontdb: fontdb(),
        ..Default::default()
    };
    let tree = resvg::usvg::Tree::from_str(svg, &opt).map_err(|e| e.to_string())?;
    let size = tree
        .size()
        .to_int_size()
        .scale_by(scale)
        .ok_or("empty figure")?;
    let mut pixmap =
        resvg::tiny_skia::Pixmap::new(size.width(), size.height()).ok_or("empty figure")?;
    pixmap.fill(resvg::tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap.encode_png().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        let mut c = Chart::new(
            "KL grade, linear probe, test: qwk",
            "label fraction",
            "true positive rate",
        );
        c.x_scale = Scale::Log10;
        c.x_ticks = Ticks::Percent;
        for (i, name) in ["image-text-ssl (AUROC 0.701)", "imagenet (AUROC 0.599)"]
            .iter()
            .enumerate()
        {
            c.series.push(Series {
                name: name.to_string(),
                points: vec![
                    Point {
                        x: 0.1,
                        y: 0.6 + i as f64 * 0.1,
                        tip: None,
                        run: Some(format!("run{i}")),
                    },
                    Point::at(1.0, 0.8),
                ],
                band: vec![(0.1, 0.5, 0.7), (1.0, 0.75, 0.85)],
                markers: true,
                ..Series::default()
            });
        }
        c
    }

    #[test]
    fn text_is_measured_with_the_font() {
        // DejaVu Sans: 'i' is narrower than 'W'; width scales with size.
        assert!(text_width("i", 12.0) < text_width("W", 12.0));
        let w = text_width("true positive rate", 13.0);
        assert!((w - 2.0 * text_width("true positive rate", 6.5)).abs() < 1e-9);
        assert!(w > 90.0 && w < 140.0, "{w}");
    }

    #[test]
    fn every_label_and_legend_entry_is_written_whole() {
        let svg = svg(&chart(), 300.0, 200.0, false);
        for t in [
            "true positive rate",
            "label fraction",
            "image-text-ssl (AUROC 0.701)",
            "imagenet (AUROC 0.599)",
            "10%",
            "100%",
        ] {
            assert!(svg.contains(&format!(">{}<", esc(t))), "{t} missing");
        }
        assert!(svg.contains(r#"data-run="run1""#));
        // The figure grew to hold its title and legend.
        let (w, h) = svg_size(&svg);
        assert!(w >= text_width("KL grade, linear probe, test: qwk", TITLE));
        assert!(h > 200.0);
    }

    #[test]
    fn a_long_legend_wraps_inside_the_figure() {
        let mut c = chart();
        for i in 0..6 {
            c.series.push(Series {
                name: format!("a rather long init name number {i}"),
                points: vec![Point::at(0.1, 0.5), Point::at(1.0, 0.6)],
                ..Series::default()
            });
        }
        let svg = svg(&c, 400.0, 300.0, false);
        let (w, _) = svg_size(&svg);
        // Every legend text starts and ends inside the figure.
        for se in &c.series {
            let needle = format!(">{}</text>", esc(&se.name));
            let at = svg.find(&needle).unwrap();
            let head = &svg[..at];
            let x_at = head.rfind(r#"<text x=""#).unwrap() + 9;
            let x: f64 = head[x_at..x_at + head[x_at..].find('"').unwrap()]
                .parse()
                .unwrap();
            assert!(
                x >= 0.0 && x + text_width(&se.name, LEGEND) <= w,
                "{} at {x}",
                se.name
            );
        }
    }

    #[test]
    fn nice_ticks_are_round() {
        assert_eq!(
            nice_ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(tick_text(0.25, 0.05), "0.25");
        assert_eq!(tick_text(0.6000000000000001, 0.2), "0.6");
        assert_eq!(percent(0.1), "10%");
        assert_eq!(percent(0.025), "2.5%");
    }

    #[test]
    fn the_png_is_drawn_at_twice_the_size_with_text() {
        let svg = svg(&chart(), 400.0, 300.0, true);
        let (w, h) = svg_size(&svg);
        let bytes = png(&svg, 2.0).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        assert_eq!(
            (info.width, info.height),
            ((w * 2.0) as u32, (h * 2.0) as u32)
        );
        // Text was rendered: the title row holds dark pixels.
        let img = image::load_from_memory(&bytes).unwrap().to_luma8();
        let dark = (0..img.width())
            .filter(|x| img.get_pixel(*x, (PAD + TITLE * 0.6) as u32 * 2).0[0] < 100)
            .count();
        assert!(dark > 20, "{dark} dark pixels in the title row");
    }
}
