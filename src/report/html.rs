//! `ktrack report` and `ktrack ui`: the study as one self-contained HTML page. Styles, script,
//! the font and every figure (SVG drawn by [`super::figure`]) are inlined, and a
//! Content-Security-Policy forbids the page any request, so the file reads the same offline
//! years later. Sections: the sweeps' plans and statuses (with skipped inits and errors), every
//! comparison table as `compare` computes it (sortable, metric switchable), metric against label
//! fraction with CI bands, ROC and precision-recall curves of each binary cell, and per run its
//! training curves, lineage graph with every hash, reproduction verdicts and environment.
//! `ktrack ui` serves this page live and lets its script poll the sweep's status.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::compare::{self, Axis, CompareOptions, CompareTable};
use super::figure::{self, Chart, Point, Series, Ticks, esc};
use super::plot::{self, Curve, CurveKind};
use crate::audit::lineage::{self, Lineage};
use crate::context::Ktrack;
use crate::record::{Record, RunRecord, SkippedInit};
use crate::runner::status::{self, StatusRow};

static CSS: &str = include_str!("assets/report.css");
static JS: &str = include_str!("assets/report.js");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Index(#[from] crate::index::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Compare(#[from] compare::Error),
    #[error(transparent)]
    Lineage(#[from] lineage::Error),
    #[error(transparent)]
    Plot(#[from] plot::Error),
    #[error("sweep `{0}` is not in the index")]
    UnknownSweep(String),
}

#[derive(Clone, Debug)]
pub struct ReportOptions {
    pub sweep: Option<String>,
    /// As `compare`'s options of the same names.
    pub bootstrap: usize,
    pub level: f64,
    pub seed: u64,
    /// Served by `ktrack ui`: the script may fetch `/api/status` from the same origin.
    pub live: bool,
}

impl Default for ReportOptions {
    fn default() -> ReportOptions {
        ReportOptions {
            sweep: None,
            bootstrap: 2000,
            level: 0.95,
            seed: 0,
            live: false,
        }
    }
}

/// What the report shows of one sweep.
struct SweepInfo {
    name: String,
    spec_path: String,
    updated_at: String,
    skipped: Vec<SkippedInit>,
}

/// A finished run with its lineage (which holds its record).
struct Done {
    row: StatusRow,
    lineage: Lineage,
}

impl Done {
    fn record(&self) -> &RunRecord {
        &self.lineage.record
    }
}

/// The whole report as one HTML document.
pub fn build(k: &Ktrack, opts: &ReportOptions) -> Result<String, Error> {
    let sweeps = sweeps(k, opts.sweep.as_deref())?;
    let rows = status::rows(k, opts.sweep.as_deref())?;
    let mut done = Vec::new();
    for r in &rows {
        if r.status == "done"
            && let Ok(id) = r.id.parse()
        {
            done.push(Done {
                row: r.clone(),
                lineage: lineage::lineage(k, &id)?,
            });
        }
    }
    let tables = tables(k, opts)?;
    let title = match &opts.sweep {
        Some(s) => format!("ktrack report: {s}"),
        None => "ktrack report".to_string(),
    };
    let mut body = String::new();
    nav(&mut body);
    let _ = write!(
        body,
        r#"<header><h1>{}</h1><p class="meta">Generated {} by ktrack {} from home <code>{}</code>.</p></header>"#,
        esc(&title),
        esc(&k.clock.now()),
        crate::env::VERSION,
        esc(&k.home.display().to_string())
    );
    status_section(&mut body, &sweeps, &rows);
    compare_section(&mut body, &tables, opts);
    figures_section(&mut body, k, &tables, &done)?;
    runs_section(&mut body, k, &rows, &done)?;
    Ok(page(&title, &body, opts.live))
}

/// The status part alone, as JSON, for `ktrack ui`'s refresh.
pub fn status_json(k: &Ktrack, sweep: Option<&str>) -> Result<String, Error> {
    let rows = status::rows(k, sweep)?;
    let counts = status::counts(&rows);
    let runs: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::json!({"id": r.id, "status": r.status_text(), "headline": r.headline(), "error": r.error}))
        .collect();
    Ok(serde_json::json!({"counts": counts, "runs": runs}).to_string())
}

fn page(title: &str, body: &str, live: bool) -> String {
    let connect = if live { "'self'" } else { "'none'" };
    format!(
        r#"<!DOCTYPE html>
<html lang="en" data-live="{live}">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; font-src data:; connect-src {connect}; base-uri 'none'; form-action 'none'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{}</title>
<style>{}{CSS}</style>
</head>
<body>
{body}
<div id="tip" hidden></div>
<script>{JS}</script>
</body>
</html>
"#,
        esc(title),
        figure::font_face_css()
    )
}

fn nav(s: &mut String) {
    s.push_str(r##"<nav><a href="#status">Status</a><a href="#compare">Comparisons</a><a href="#figures">Figures</a><a href="#runs">Runs</a></nav>"##);
}

fn sweeps(k: &Ktrack, only: Option<&str>) -> Result<Vec<SweepInfo>, Error> {
    let list = k.index.read()?.sweeps().list()?;
    let mut out = Vec::new();
    for s in list
        .into_iter()
        .filter(|s| only.is_none_or(|o| o == s.name))
    {
        let skipped = match s.record {
            Some(h) => match Record::parse(h, &k.store.read(&h)?) {
                Ok(Some(Record::Sweep(r))) => r.skipped,
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        out.push(SweepInfo {
            name: s.name,
            spec_path: s.spec_path,
            updated_at: s.updated_at,
            skipped,
        });
    }
    if let Some(o) = only
        && out.is_empty()
    {
        return Err(Error::UnknownSweep(o.to_string()));
    }
    Ok(out)
}

/// Every comparison table: for each task, its headline metric first, then every other metric.
fn tables(k: &Ktrack, opts: &ReportOptions) -> Result<Vec<(String, bool, CompareTable)>, Error> {
    let metrics = k.index.read()?.points().metrics()?;
    let mut out = Vec::new();
    for (task, metric) in metrics {
        let headline = metric == if task == "kl" { "qwk" } else { "auroc" };
        let o = CompareOptions {
            sweep: opts.sweep.clone(),
            task: Some(task.clone()),
            metric: Some(metric.clone()),
            rows: Axis::Init,
            cols: Axis::Fraction,
            bootstrap: opts.bootstrap,
            level: opts.level,
            seed: opts.seed,
            ..CompareOptions::default()
        };
        match compare::compare(k, &o) {
            Ok(ts) => out.extend(ts.into_iter().map(|t| (metric.clone(), headline, t))),
            Err(compare::Error::Nothing(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Headline tables first, each group in task order (a stable sort keeps `compare`'s order).
    out.sort_by_key(|(_, h, _)| !*h);
    Ok(out)
}

fn status_section(s: &mut String, sweeps: &[SweepInfo], rows: &[StatusRow]) {
    s.push_str(r#"<section id="status"><h2>Status</h2>"#);
    let summary: Vec<String> = status::counts(rows)
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let _ = write!(
        s,
        r#"<p id="status-counts">{} runs: {}</p><p id="live-note" hidden></p>"#,
        rows.len(),
        esc(&summary.join(", "))
    );
    for sw in sweeps {
        let _ = write!(
            s,
            "<h3>Sweep <code>{}</code></h3><p class=\"meta\">spec <code>{}</code>, planned {}</p>",
            esc(&sw.name),
            esc(&sw.spec_path),
            esc(&sw.updated_at)
        );
        for sk in &sw.skipped {
            let _ = write!(
                s,
                r#"<p class="skipped">Skipped: init <b>{}</b> ({} runs): {}</p>"#,
                esc(&sk.init),
                sk.runs,
                esc(&sk.reason)
            );
        }
    }
    s.push_str(r#"<table class="sortable" id="runs-table"><thead><tr><th>run</th><th>kind</th><th>what</th><th>status</th><th>headline</th><th>error</th></tr></thead><tbody>"#);
    for r in rows {
        let _ = write!(
            s,
            r##"<tr data-run="{id}" class="st-{st}"><td><a href="#run-{id}"><code>{short}</code></a></td><td>{}</td><td>{}</td><td class="status">{}</td><td>{}</td><td class="error">{}</td></tr>"##,
            esc(&r.kind),
            esc(&r.label),
            esc(&r.status_text()),
            esc(&r.headline()),
            esc(r.error.as_deref().unwrap_or("")),
            id = esc(&r.id),
            st = r.status,
            short = esc(&r.id[..r.id.len().min(12)]),
        );
    }
    s.push_str("</tbody></table></section>");
}

fn compare_section(s: &mut String, tables: &[(String, bool, CompareTable)], opts: &ReportOptions) {
    s.push_str(r#"<section id="compare"><h2>Comparisons</h2>"#);
    let mut metrics: Vec<&str> = tables.iter().map(|(m, _, _)| m.as_str()).collect();
    metrics.sort();
    metrics.dedup();
    s.push_str(r#"<p><label>Metric <select id="metric"><option value="">headline (QWK for KL, AUROC otherwise)</option>"#);
    for m in &metrics {
        let _ = write!(s, r#"<option value="{0}">{0}</option>"#, esc(m));
    }
    let _ = write!(
        s,
        r#"</select></label> <span class="meta">{:.0}% CIs; single-seed cells: patient-level bootstrap ({} replicates, seed {}); click a column to sort.</span></p>"#,
        opts.level * 100.0,
        opts.bootstrap,
        opts.seed
    );
    if tables.is_empty() {
        s.push_str("<p>No finished downstream runs yet.</p>");
    }
    for (metric, headline, t) in tables {
        let _ = write!(
            s,
            r#"<div class="table" data-metric="{}" data-headline="{headline}"{}><h3>{}</h3><table class="sortable compare"><thead><tr><th>{}</th>"#,
            esc(metric),
            if *headline { "" } else { " hidden" },
            esc(&super::render::caption(t)),
            esc(t.row_axis)
        );
        for c in &t.cols {
            let _ = write!(s, "<th>{}</th>", esc(c));
        }
        s.push_str("</tr></thead><tbody>");
        for r in &t.rows {
            let _ = write!(s, "<tr><th>{}</th>", esc(r));
            for c in &t.cols {
                match t.cell(r, c) {
                    Some(cell) => {
                        let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
                        let _ = write!(
                            s,
                            r#"<td data-sort="{}" data-estimate="{}" data-lo="{}" data-hi="{}" data-diff="{}" data-p="{}" data-seeds="{}" title="{}">{}</td>"#,
                            num(Some(cell.estimate).filter(|v| v.is_finite())),
                            num(Some(cell.estimate).filter(|v| v.is_finite())),
                            num(cell.lo),
                            num(cell.hi),
                            num(cell.diff),
                            num(cell.p),
                            cell.seeds,
                            esc(&cell_title(cell)),
                            esc(&compare::cell_text(cell))
                        );
                    }
                    None => s.push_str("<td></td>"),
                }
            }
            s.push_str("</tr>");
        }
        s.push_str("</tbody></table>");
        for n in &t.notes {
            let _ = write!(s, r#"<p class="note">{}</p>"#, esc(n.trim_end()));
        }
        s.push_str("</div>");
    }
    s.push_str("</section>");
}

fn cell_title(c: &compare::Cell) -> String {
    let mut t = format!("{} seeds", c.seeds);
    if let Some(test) = c.test {
        t.push_str(&format!(", {test}"));
    }
    if let Some(p) = c.p {
        t.push_str(&format!(", p = {p:.4}"));
    }
    if let Some(r) = &c.run {
        t.push_str(&format!(", run {r}"));
    }
    t
}

fn figures_section(
    s: &mut String,
    k: &Ktrack,
    tables: &[(String, bool, CompareTable)],
    done: &[Done],
) -> Result<(), Error> {
    s.push_str(r#"<section id="figures"><h2>Figures</h2><h3>Metric against label fraction</h3><div class="figures">"#);
    let headline: Vec<CompareTable> = tables
        .iter()
        .filter(|(_, h, _)| *h)
        .map(|(_, _, t)| t.clone())
        .collect();
    for c in plot::fraction_charts(&headline) {
        s.push_str(&figure::svg(&c, 520.0, 360.0, false));
    }
    s.push_str("</div><h3>ROC and precision-recall curves of binary cells</h3>");
    // Cells: (task, protocol, fraction, eval set) → runs, one curve per run.
    let mut cells: BTreeMap<(String, String, String, String), Vec<&Done>> = BTreeMap::new();
    for d in done {
        let Some(ax) = &d.record().axes else { continue };
        if ax.task == "kl" {
            continue;
        }
        for eval in d
            .record()
            .metrics
            .keys()
            .filter(|e| *e != "val" && *e != "train")
        {
            cells
                .entry((
                    ax.task.clone(),
                    ax.protocol.clone(),
                    crate::output::pct(ax.fraction),
                    eval.clone(),
                ))
                .or_default()
                .push(d);
        }
    }
    if cells.is_empty() {
        s.push_str("<p>No finished binary-task runs yet.</p>");
    }
    for ((task, protocol, fraction, eval), runs) in &cells {
        let mut curves = Vec::new();
        for d in runs {
            let ax = d.record().axes.as_ref().expect("filtered");
            if let Some(c) = curve(k, d, eval, format!("{} seed {}", ax.init, ax.seed))? {
                curves.push(c);
            }
        }
        if curves.is_empty() {
            continue;
        }
        let title = format!("{task}, {protocol}, {fraction} labels, {eval}");
        s.push_str(r#"<div class="figures">"#);
        for kind in [CurveKind::Roc, CurveKind::Pr] {
            let what = if kind == CurveKind::Roc { "ROC" } else { "PR" };
            let chart = plot::curve_chart(&format!("{what}: {title}"), &curves, kind);
            s.push_str(&figure::svg(&chart, 460.0, 420.0, false));
        }
        s.push_str("</div>");
    }
    s.push_str("</section>");
    Ok(())
}

fn curve(k: &Ktrack, d: &Done, eval: &str, label: String) -> Result<Option<Curve>, Error> {
    let Some(hash) = d.record().outputs.get(&format!("predictions:{eval}")) else {
        return Ok(None);
    };
    let preds = plot::read_predictions(k, &d.record().id, hash)?;
    if preds.kind != crate::predictions::TaskKind::Binary {
        return Ok(None);
    }
    Ok(Some(Curve::of(
        label,
        d.record().id,
        &preds.label,
        &preds.scores(),
    )))
}

fn runs_section(
    s: &mut String,
    k: &Ktrack,
    rows: &[StatusRow],
    done: &[Done],
) -> Result<(), Error> {
    s.push_str(r#"<section id="runs"><h2>Runs</h2>"#);
    let by_id: BTreeMap<&str, &Done> = done.iter().map(|d| (d.row.id.as_str(), d)).collect();
    for r in rows {
        let _ = write!(
            s,
            r#"<details class="run" id="run-{id}"><summary><code>{short}</code> {} — {}</summary>"#,
            esc(&r.label),
            esc(&r.status_text()),
            id = esc(&r.id),
            short = esc(&r.id[..r.id.len().min(12)])
        );
        match by_id.get(r.id.as_str()) {
            Some(d) => run_detail(s, k, d)?,
            None => {
                let _ = write!(
                    s,
                    "<p>Run <code>{}</code> is {}; its curves, lineage and environment appear once it has finished.</p>",
                    esc(&r.id),
                    esc(&r.status_text())
                );
                if let Some(e) = &r.error {
                    let _ = write!(s, r#"<pre class="error">{}</pre>"#, esc(e));
                }
            }
        }
        s.push_str("</details>");
    }
    s.push_str("</section>");
    Ok(())
}

fn run_detail(s: &mut String, k: &Ktrack, d: &Done) -> Result<(), Error> {
    let rec = d.record();
    s.push_str(r#"<h4>Training curves</h4><div class="figures">"#);
    for c in training_charts(k, rec)? {
        s.push_str(&figure::svg(&c, 420.0, 300.0, false));
    }
    s.push_str("</div><h4>Metrics</h4><table><thead><tr><th>set</th><th>metric</th><th>value</th></tr></thead><tbody>");
    for (set, vals) in &rec.metrics {
        for (m, v) in vals {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(set),
                esc(m),
                match v {
                    Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
                    Some(v) => format!("{v:.4}"),
                    None => "n/a".into(),
                }
            );
        }
    }
    s.push_str("</tbody></table><h4>Lineage</h4>");
    let l = &d.lineage;
    let (mut nodes, mut edges) = (Vec::new(), Vec::new());
    lineage_nodes(l, &mut nodes, &mut edges);
    s.push_str(&lineage_svg(&nodes, &edges));
    lineage_table(s, l, &nodes);
    s.push_str("<h4>Reproductions</h4>");
    if l.reproductions.is_empty() {
        let _ = write!(
            s,
            "<p>Not reproduced yet (<code>ktrack reproduce {}</code>).</p>",
            esc(&rec.id.hex())
        );
    } else {
        s.push_str(
            "<table><thead><tr><th>verdict</th><th>when</th><th>record</th></tr></thead><tbody>",
        );
        for r in &l.reproductions {
            let _ = write!(
                s,
                r#"<tr><td class="verdict v-{0}">{0}</td><td>{1}</td><td><code>{2}</code></td></tr>"#,
                esc(&r.verdict),
                esc(&r.created_at),
                r.record.hex()
            );
        }
        s.push_str("</tbody></table>");
    }
    environment(s, rec);
    Ok(())
}

fn environment(s: &mut String, rec: &RunRecord) {
    let e = &rec.environment;
    let b = &e.backend;
    let rows: Vec<(&str, String)> = vec![
        ("ktrack", e.ktrack_version.clone()),
        (
            "commit",
            format!(
                "{}{}",
                e.git_commit,
                if e.git_dirty { " (dirty)" } else { "" }
            ),
        ),
        ("rustc", e.rustc.clone()),
        (
            "backend",
            format!("{} on {} ({})", b.backend, b.device, b.device_name),
        ),
        ("threads", b.threads.to_string()),
        ("LibTorch", b.libtorch.clone().unwrap_or_else(|| "—".into())),
        ("CUDA", b.cuda.clone().unwrap_or_else(|| "—".into())),
        ("host", e.host.clone()),
        ("OS", e.os.clone()),
        ("started", e.started_at.clone()),
        ("finished", e.finished_at.clone()),
        ("seconds", format!("{:.1}", rec.seconds)),
        ("seed", e.seed.to_string()),
        (
            "tolerance",
            format!(
                "probabilities {}, metrics {}",
                rec.tolerance.probability, rec.tolerance.metric
            ),
        ),
    ];
    s.push_str(r#"<h4>Environment</h4><table class="env"><tbody>"#);
    for (k, v) in rows {
        let _ = write!(s, "<tr><th>{k}</th><td>{}</td></tr>", esc(&v));
    }
    s.push_str("</tbody></table>");
}

/// Loss (and validation metric) per epoch from a run's `curves` output, best epoch marked.
fn training_charts(k: &Ktrack, rec: &RunRecord) -> Result<Vec<Chart>, Error> {
    let Some(h) = rec.outputs.get("curves") else {
        return Ok(Vec::new());
    };
    let v: serde_json::Value = serde_json::from_slice(&k.store.read(h)?).unwrap_or_default();
    let Some(epochs) = v.as_array() else {
        return Ok(Vec::new());
    };
    let num = |e: &serde_json::Value, key: &str| e[key].as_f64().unwrap_or(f64::NAN);
    let best = rec.details["best_epoch"].as_f64();
    let mark = |c: &mut Chart| {
        if let Some(b) = best {
            c.marks.push((b, format!("best epoch {b}")));
        }
    };
    // LP-FT runs tag each epoch with its phase: one series per phase, and a mark where the
    // fine-tune starts.
    let phase = |e: &serde_json::Value| e["phase"].as_str().map(str::to_string);
    let mut phases: Vec<Option<String>> = Vec::new();
    for e in epochs {
        if !phases.contains(&phase(e)) {
            phases.push(phase(e));
        }
    }
    let mark = |c: &mut Chart| {
        mark(c);
        if let Some(e) = epochs
            .iter()
            .find(|e| phase(e).as_deref() == Some("finetune"))
        {
            c.marks.push((num(e, "epoch"), "fine-tune starts".into()));
        }
    };
    let series = |key: &str, name: &str| -> Vec<Series> {
        phases
            .iter()
            .enumerate()
            .map(|(i, p)| Series {
                name: match p {
                    Some(p) => format!("{name} ({p})"),
                    None => name.to_string(),
                },
                points: epochs
                    .iter()
                    .filter(|e| phase(e) == *p)
                    .map(|e| Point::at(num(e, "epoch"), num(e, key)))
                    .collect(),
                markers: epochs.len() <= 40,
                colour: (i > 0).then_some(2 + i),
                ..Series::default()
            })
            .collect()
    };
    let mut out = Vec::new();
    let loss_key = if epochs
        .first()
        .is_some_and(|e| e.get("train_loss").is_some())
    {
        "train_loss"
    } else {
        "loss"
    };
    let mut loss = Chart::new("Training loss", "epoch", "loss");
    loss.x_ticks = Ticks::Integer;
    loss.series.extend(series(loss_key, "training loss"));
    mark(&mut loss);
    out.push(loss);
    if epochs.iter().any(|e| num(e, "val_metric").is_finite()) {
        let metric = match &rec.axes {
            Some(a) if a.task == "kl" => "qwk",
            Some(_) => "auroc",
            None => "metric",
        };
        let mut val = Chart::new("Validation", "epoch", metric);
        val.x_ticks = Ticks::Integer;
        for (i, mut se) in series("val_metric", &format!("validation {metric}"))
            .into_iter()
            .enumerate()
        {
            se.colour = Some(1 + 2 * i);
            val.series.push(se);
        }
        mark(&mut val);
        out.push(val);
    }
    Ok(out)
}

/// A node of the lineage graph: (column, kind, name, hash).
type Node = (usize, String, String, String);

fn lineage_nodes(l: &Lineage, nodes: &mut Vec<Node>, edges: &mut Vec<(usize, usize)>) -> usize {
    let add = |nodes: &mut Vec<Node>, col, kind: &str, name: String, hash: String| {
        nodes.push((col, kind.to_string(), name, hash));
        nodes.len() - 1
    };
    let run = add(
        nodes,
        3,
        l.run.kind.as_str(),
        l.run.label.clone(),
        l.run.id.hex(),
    );
    if let Some(c) = &l.cohort {
        let cn = add(nodes, 0, "cohort", c.name.clone(), c.hash.hex());
        let mut last = cn;
        if let Some(sp) = &l.split {
            let sn = add(
                nodes,
                1,
                "split",
                format!("{} {}/{}/{}", sp.strategy, sp.train, sp.val, sp.test),
                sp.hash.hex(),
            );
            edges.push((last, sn));
            last = sn;
        }
        if let Some(f) = &l.fraction {
            let f_n = add(
                nodes,
                2,
                "fraction",
                crate::output::pct(f.fraction),
                f.hash.hex(),
            );
            edges.push((last, f_n));
            last = f_n;
        }
        edges.push((last, run));
    }
    for (c, sp) in &l.sources {
        let cn = add(nodes, 0, "source cohort", c.name.clone(), c.hash.hex());
        match sp {
            Some(sp) => {
                let sn = add(
                    nodes,
                    1,
                    "split (train part)",
                    sp.strategy.clone(),
                    sp.hash.hex(),
                );
                edges.push((cn, sn));
                edges.push((sn, run));
            }
            None => edges.push((cn, run)),
        }
    }
    for (name, c) in &l.external {
        if let Some(c) = c {
            let cn = add(nodes, 0, "external cohort", name.clone(), c.hash.hex());
            edges.push((cn, run));
        }
    }
    if let Some(w) = l.weights {
        let wn = add(nodes, 2, "weights", "torchvision".into(), w.hex());
        edges.push((wn, run));
    }
    if let Some(p) = &l.pretrain {
        let pn = add(nodes, 2, "pretraining", p.run.label.clone(), p.run.id.hex());
        edges.push((pn, run));
    }
    for (role, h) in &l.outputs {
        let on = add(nodes, 4, "output", role.clone(), h.hex());
        edges.push((run, on));
    }
    run
}

/// The lineage as a left-to-right graph: inputs → run → outputs, each node with its hash.
fn lineage_svg(nodes: &[Node], edges: &[(usize, usize)]) -> String {
    let (fs, line, pad) = (11.0, 14.0, 6.0);
    let label = |n: &Node| [n.1.clone(), n.2.clone(), n.3[..12].to_string()];
    let mut col_w = [0.0f64; 5];
    for n in nodes {
        let w = label(n)
            .iter()
            .map(|t| figure::text_width(t, fs))
            .fold(0.0, f64::max);
        col_w[n.0] = col_w[n.0].max(w + 2.0 * pad);
    }
    let gap = 40.0;
    let mut col_x = [0.0f64; 5];
    let mut x = 10.0;
    for c in 0..5 {
        col_x[c] = x;
        if col_w[c] > 0.0 {
            x += col_w[c] + gap;
        }
    }
    let box_h = 3.0 * line + pad;
    let mut count = [0usize; 5];
    let mut pos = Vec::new();
    for n in nodes {
        pos.push((col_x[n.0], 10.0 + count[n.0] as f64 * (box_h + 12.0)));
        count[n.0] += 1;
    }
    let height = 20.0 + *count.iter().max().unwrap_or(&1) as f64 * (box_h + 12.0);
    let width = x - gap + 10.0;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="lineage" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="{}, sans-serif">"#,
        figure::FONT_FAMILY
    );
    for (a, b) in edges {
        let (ax, ay) = (pos[*a].0 + col_w[nodes[*a].0], pos[*a].1 + box_h / 2.0);
        let (bx, by) = (pos[*b].0, pos[*b].1 + box_h / 2.0);
        let _ = write!(
            s,
            r##"<path d="M{ax:.1},{ay:.1} C{:.1},{ay:.1} {:.1},{by:.1} {bx:.1},{by:.1}" fill="none" stroke="#777"/><polygon points="{bx:.1},{by:.1} {:.1},{:.1} {:.1},{:.1}" fill="#777"/>"##,
            ax + gap / 2.0,
            bx - gap / 2.0,
            bx - 6.0,
            by - 4.0,
            bx - 6.0,
            by + 4.0
        );
    }
    for (i, n) in nodes.iter().enumerate() {
        let (x, y) = pos[i];
        let fill = match n.1.as_str() {
            "downstream" | "pretrain" => "#e8f1fa",
            "output" => "#f3f3f3",
            _ => "#fff8e6",
        };
        let _ = write!(
            s,
            r##"<g class="node" data-hash="{}"><title>{} {}: {}</title><rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{box_h:.1}" rx="4" fill="{fill}" stroke="#999"/>"##,
            n.3,
            esc(&n.1),
            esc(&n.2),
            n.3,
            col_w[n.0]
        );
        for (j, t) in label(n).iter().enumerate() {
            let weight = if j == 0 { r#" font-weight="bold""# } else { "" };
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="{fs}"{weight} fill="#222">{}</text>"##,
                x + pad,
                y + pad / 2.0 + line * (j as f64 + 1.0) - 3.0,
                esc(t)
            );
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    s
}

fn lineage_table(s: &mut String, l: &Lineage, nodes: &[Node]) {
    s.push_str(r#"<table class="hashes"><thead><tr><th>what</th><th>name</th><th>hash</th></tr></thead><tbody>"#);
    for n in nodes {
        let _ = write!(
            s,
            r#"<tr><td>{}</td><td>{}</td><td><code class="hash">{}</code></td></tr>"#,
            esc(&n.1),
            esc(&n.2),
            n.3
        );
    }
    if let Some(r) = l.run.record {
        let _ = write!(
            s,
            r#"<tr><td>record</td><td>run record</td><td><code class="hash">{}</code></td></tr>"#,
            r.hex()
        );
    }
    s.push_str("</tbody></table>");
    if let Some(p) = &l.pretrain {
        let _ = write!(
            s,
            r##"<p>The encoder comes from pretraining run <a href="#run-{0}"><code>{0}</code></a>.</p>"##,
            p.run.id.hex()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, status: &'static str, error: Option<&str>) -> StatusRow {
        StatusRow {
            attempts: 1,
            error: error.map(String::from),
            finished_at: None,
            holder: None,
            id: id.to_string(),
            kind: "downstream".into(),
            label: "kl linear random 100% seed 0".into(),
            metrics: Vec::new(),
            record: None,
            started_at: None,
            status,
        }
    }

    #[test]
    fn the_status_shows_failed_runs_with_their_error_and_skipped_inits_with_why() {
        let sweeps = [SweepInfo {
            name: "mini".into(),
            spec_path: "experiments/mini.toml".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
            skipped: vec![SkippedInit {
                init: "imagenet".into(),
                reason: "no torchvision weights file".into(),
                runs: 4,
            }],
        }];
        let rows = [
            row(&"a".repeat(64), "done", None),
            row(
                &"b".repeat(64),
                "failed",
                Some("image <x> & co could not be read"),
            ),
        ];
        let mut s = String::new();
        status_section(&mut s, &sweeps, &rows);
        assert!(s.contains("2 runs: 1 done, 1 failed"), "{s}");
        assert!(s.contains("Skipped: init <b>imagenet</b> (4 runs): no torchvision weights file"));
        let failed = &s[s.find(r#"class="st-failed""#).unwrap()..];
        // The error is shown escaped, in the failed run's row.
        assert!(
            failed.contains(r#"<td class="error">image &lt;x&gt; &amp; co could not be read</td>"#)
        );
        assert!(s.contains(&format!(r##"href="#run-{}""##, "b".repeat(64))));
    }

    #[test]
    fn the_lineage_graph_draws_every_node_with_its_hash() {
        let nodes: Vec<Node> = vec![
            (0, "cohort".into(), "oai".into(), "1".repeat(64)),
            (3, "downstream".into(), "a run".into(), "2".repeat(64)),
            (
                4,
                "output".into(),
                "predictions:test".into(),
                "3".repeat(64),
            ),
        ];
        let svg = lineage_svg(&nodes, &[(0, 1), (1, 2)]);
        for n in &nodes {
            assert!(svg.contains(&format!(r#"data-hash="{}""#, n.3)));
            assert!(svg.contains(&format!(">{}</text>", &n.3[..12])));
        }
        // One arrow per edge.
        assert_eq!(svg.matches("<polygon").count(), 2);
    }
}
