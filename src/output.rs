//! The one place that decides how ktrack talks: status lines and progress bars on stderr
//! (hidden when quiet or not a terminal), data on stdout, in table, JSON or CSV form.

use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How data printed on stdout is formatted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Clone, Debug)]
pub struct Printer {
    pub quiet: bool,
    pub verbose: bool,
    progress: bool,
    color: bool,
}

impl Printer {
    pub fn new(quiet: bool, verbose: bool, no_progress: bool) -> Printer {
        let tty = std::io::stderr().is_terminal();
        Printer {
            quiet,
            verbose,
            progress: tty && !quiet && !verbose && !no_progress,
            color: tty,
        }
    }

    /// Whether progress bars are drawn (a terminal, and neither quiet, verbose nor
    /// `--no-progress`).
    pub fn draws_progress(&self) -> bool {
        self.progress
    }

    /// A status line: a right-aligned verb, then the message (`    Imported 5,000 images`).
    pub fn status(&self, verb: &str, message: impl Display) {
        if self.quiet {
            return;
        }
        let line = if self.color {
            format!("\x1b[1;32m{verb:>12}\x1b[0m {message}")
        } else {
            format!("{verb:>12} {message}")
        };
        let _ = writeln!(std::io::stderr(), "{line}");
    }

    pub fn warn(&self, message: impl Display) {
        let line = if self.color {
            format!("\x1b[1;33mwarning\x1b[0m: {message}")
        } else {
            format!("warning: {message}")
        };
        let _ = writeln!(std::io::stderr(), "{line}");
    }

    /// A progress bar of `len` steps; hidden unless stderr is a terminal.
    pub fn bar(&self, len: u64, message: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>12.cyan.bold} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// Writes data to stdout. A closed pipe is not an error (exit 0).
    pub fn data(&self, text: &str) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            out.write_all(b"\n")?;
        }
        out.flush()
    }
}

/// A table that renders as comfy-table, CSV or (via serde) JSON.
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Table {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn to_text(&self) -> String {
        let mut t = comfy_table::Table::new();
        t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
        t.set_header(&self.header);
        for r in &self.rows {
            t.add_row(r);
        }
        for i in 0..self.header.len() {
            let numeric = self
                .rows
                .iter()
                .filter_map(|r| r.get(i))
                .filter(|c| !c.is_empty())
                .all(|c| looks_numeric(c));
            if numeric && let Some(col) = t.column_mut(i) {
                col.set_cell_alignment(comfy_table::CellAlignment::Right);
            }
        }
        t.to_string() + "\n"
    }

    pub fn to_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&self.header).expect("CSV to memory");
        for r in &self.rows {
            w.write_record(r).expect("CSV to memory");
        }
        String::from_utf8(w.into_inner().expect("CSV to memory")).expect("CSV of UTF-8 is UTF-8")
    }
}

/// Numbers, percentages and `a ± b` cells are right-aligned.
fn looks_numeric(cell: &str) -> bool {
    let t: String = cell
        .chars()
        .filter(|c| !matches!(c, ',' | '%' | ' ' | '±' | '*' | '+'))
        .collect();
    !t.is_empty()
        && t.split(['(', ')', '[', ']', '–'])
            .filter(|p| !p.is_empty())
            .all(|p| p.parse::<f64>().is_ok())
}

/// `1234567` → `1,234,567`.
/// A label fraction as people write it: `10%`, `2.5%`.
pub fn pct(f: f64) -> String {
    let p = f * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}%", p.round())
    } else {
        format!("{p}%")
    }
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Writes a user's output file (a plot, a report) through a temporary file beside it and a
/// rename, so an interrupted write never leaves half a file under the name asked for.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    // Mode 0666 less the umask, as a file made by `open` would be (not tempfile's 0600).
    let mut tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map(drop).map_err(|e| e.error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_format() {
        assert_eq!(thousands(5000), "5,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(bytes(1536), "1.5 KiB");
    }

    #[test]
    fn csv_quotes() {
        let mut t = Table::new(["a", "b"]);
        t.row(["x,y", "z"]);
        assert_eq!(t.to_csv(), "a,b\n\"x,y\",z\n");
    }
}
