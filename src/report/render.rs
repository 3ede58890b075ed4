//! Renderings of comparison tables. Every format carries the same numbers; text formats show
//! `estimate [lo, hi] ±diff marker`, machine formats one row per cell.

use super::compare::{CompareTable, cell_text, marker};

fn header(t: &CompareTable) -> Vec<String> {
    std::iter::once(t.row_axis.to_string())
        .chain(t.cols.iter().cloned())
        .collect()
}

fn body(t: &CompareTable) -> Vec<Vec<String>> {
    t.rows
        .iter()
        .map(|r| {
            std::iter::once(r.clone())
                .chain(
                    t.cols
                        .iter()
                        .map(|c| t.cell(r, c).map(cell_text).unwrap_or_default()),
                )
                .collect()
        })
        .collect()
}

pub fn caption(t: &CompareTable) -> String {
    let metric = t
        .cells
        .first()
        .map(|(_, _, c)| c.metric.as_str())
        .unwrap_or("metric");
    let base = t
        .baseline
        .as_deref()
        .map(|b| format!("; difference to `{b}`: * p<0.05, ** p<0.01, *** p<0.001"))
        .unwrap_or_default();
    format!(
        "{} — {metric} [{:.0}% CI]{base}",
        t.title(),
        t.level * 100.0
    )
}

/// comfy-table text for a terminal.
pub fn text(tables: &[CompareTable]) -> String {
    let mut out = String::new();
    for t in tables {
        out.push_str(&caption(t));
        out.push('\n');
        let mut ct = comfy_table::Table::new();
        ct.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
        ct.set_header(header(t));
        for r in body(t) {
            ct.add_row(r);
        }
        out.push_str(&ct.to_string());
        out.push('\n');
        for n in &t.notes {
            out.push_str(n);
            out.push('\n');
        }
        out.push('\n');
    }
    out.trim_end().to_string() + "\n"
}

pub fn markdown(tables: &[CompareTable]) -> String {
    let mut out = String::new();
    for t in tables {
        out.push_str(&format!("**{}**\n\n", caption(t)));
        let h = header(t);
        out.push_str(&format!("| {} |\n", h.join(" | ")));
        out.push_str(&format!(
            "|{}\n",
            h.iter().map(|_| "---|").collect::<String>()
        ));
        for r in body(t) {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        out.push('\n');
        for n in &t.notes {
            out.push_str(&format!("{n}\n\n"));
        }
    }
    out
}

fn num(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map(|x| format!("{x}"))
        .unwrap_or_default()
}

pub fn csv(tables: &[CompareTable]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "table", "row_axis", "row", "col_axis", "col", "metric", "seeds", "estimate", "lo", "hi",
        "diff", "p", "test",
    ])
    .expect("CSV to memory");
    for t in tables {
        for (r, c, cell) in &t.cells {
            w.write_record([
                t.title(),
                t.row_axis.to_string(),
                r.clone(),
                t.col_axis.to_string(),
                c.clone(),
                cell.metric.clone(),
                cell.seeds.to_string(),
                num(Some(cell.estimate)),
                num(cell.lo),
                num(cell.hi),
                num(cell.diff),
                num(cell.p),
                cell.test.unwrap_or("").to_string(),
            ])
            .expect("CSV to memory");
        }
    }
    String::from_utf8(w.into_inner().expect("CSV to memory")).expect("UTF-8")
}

pub fn json(tables: &[CompareTable]) -> String {
    // NaN becomes null.
    let v = serde_json::to_value(tables).expect("tables serialize");
    serde_json::to_string_pretty(&v).expect("JSON values serialize")
}

fn latex_escape(s: &str) -> String {
    s.replace('\\', r"\textbackslash{}")
        .replace('%', r"\%")
        .replace('_', r"\_")
        .replace('&', r"\&")
        .replace('#', r"\#")
}

pub fn latex(tables: &[CompareTable]) -> String {
    let mut out = String::new();
    for t in tables {
        let h = header(t);
        out.push_str("\\begin{table}\n\\centering\n");
        out.push_str(&format!("\\caption{{{}}}\n", latex_escape(&caption(t))));
        out.push_str(&format!(
            "\\begin{{tabular}}{{l{}}}\n\\toprule\n",
            "r".repeat(h.len() - 1)
        ));
        out.push_str(&format!(
            "{} \\\\\n\\midrule\n",
            h.iter()
                .map(|c| latex_escape(c))
                .collect::<Vec<_>>()
                .join(" & ")
        ));
        for r in &t.rows {
            let mut cells = vec![latex_escape(r)];
            for c in &t.cols {
                cells.push(match t.cell(r, c) {
                    Some(cell) => {
                        let mut s = format!("{:.3}", cell.estimate);
                        if let (Some(lo), Some(hi)) = (cell.lo, cell.hi) {
                            s.push_str(&format!(" [{lo:.3}, {hi:.3}]"));
                        }
                        if let Some(d) = cell.diff {
                            s.push_str(&format!(
                                " ({d:+.3}){}",
                                marker(cell.p).replace('*', "$^*$")
                            ));
                        }
                        s
                    }
                    None => String::new(),
                });
            }
            out.push_str(&format!("{} \\\\\n", cells.join(" & ")));
        }
        out.push_str("\\bottomrule\n\\end{tabular}\n");
        for n in &t.notes {
            let n = n
                .replace('‡', "$\\ddagger$")
                .replace('_', "\\_")
                .replace('`', "");
            out.push_str(&format!("\\par\\footnotesize {n}\n"));
        }
        out.push_str("\\end{table}\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::compare::Cell;

    fn table() -> CompareTable {
        let cell = |e: f64, d: Option<f64>, p: Option<f64>| Cell {
            metric: "auroc".into(),
            seeds: 1,
            estimate: e,
            lo: Some(e - 0.05),
            hi: Some(e + 0.05),
            diff: d,
            p,
            test: d.map(|_| "DeLong"),
            run: None,
        };
        CompareTable {
            fixed: vec![
                ("task".into(), "progression_4y".into()),
                ("protocol".into(), "linear".into()),
            ],
            row_axis: "init",
            col_axis: "fraction",
            rows: vec!["imagenet".into(), "image-text".into()],
            cols: vec!["most 10%".into()],
            baseline: Some("imagenet".into()),
            cells: vec![
                (
                    "imagenet".into(),
                    "most 10%".into(),
                    cell(0.599, None, None),
                ),
                (
                    "image-text".into(),
                    "most 10%".into(),
                    cell(0.701, Some(0.102), Some(0.004)),
                ),
            ],
            level: 0.95,
            notes: vec![],
        }
    }

    #[test]
    fn every_format_carries_the_numbers() {
        let t = vec![table()];
        assert!(
            text(&t).contains("0.701 [0.651, 0.751] +0.102**"),
            "{}",
            text(&t)
        );
        assert!(markdown(&t).contains("| image-text | 0.701 [0.651, 0.751] +0.102** |"));
        let c = csv(&t);
        assert!(
            c.lines()
                .nth(2)
                .unwrap()
                .contains("image-text,fraction,most 10%,auroc,1,0.701"),
            "{c}"
        );
        assert!(latex(&t).contains(r"most 10\%") && latex(&t).contains(r"(+0.102)$^*$$^*$"));
        let j: serde_json::Value = serde_json::from_str(&json(&t)).unwrap();
        assert_eq!(j[0]["cells"][1][2]["diff"], 0.102);
    }
}
