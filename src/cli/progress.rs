//! The terminal's [`Reporter`]: status lines through the [`Printer`], progress bars drawn
//! only when the printer says so (a terminal, and neither quiet, verbose nor `--no-progress`),
//! and for a sweep one bar for the sweep and one per running run.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::id::Hash;
use crate::output::Printer;
use crate::progress::{Reporter, RunSummary, Task};

/// Lines and bars on stderr.
pub struct Terminal<'a> {
    printer: &'a Printer,
    multi: MultiProgress,
    /// The sweep's bar (runs done), when this reports a sweep.
    sweep: Option<ProgressBar>,
}

impl<'a> Terminal<'a> {
    pub fn new(printer: &'a Printer) -> Terminal<'a> {
        let target = if printer.draws_progress() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Terminal {
            printer,
            multi: MultiProgress::with_draw_target(target),
            sweep: None,
        }
    }

    /// With a bar that counts the finished runs of a sweep.
    pub fn for_sweep(printer: &'a Printer) -> Terminal<'a> {
        let mut t = Terminal::new(printer);
        let bar = if printer.draws_progress() {
            t.multi.add(ProgressBar::new(0))
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>12.green.bold} [{bar:30}] {pos}/{len} runs ({elapsed}, {eta} left)",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message("Sweep");
        t.sweep = Some(bar);
        t
    }

    fn bar(&self, label: &str, template: Option<&str>) -> Bar {
        if !self.printer.draws_progress() {
            return Bar(ProgressBar::hidden());
        }
        let bar = self.multi.add(self.printer.bar(0, label));
        if let Some(t) = template {
            bar.set_style(
                ProgressStyle::with_template(t)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
        }
        Bar(bar)
    }
}

impl Drop for Terminal<'_> {
    fn drop(&mut self) {
        if let Some(s) = &self.sweep {
            s.finish_and_clear();
        }
    }
}

/// A progress bar as a [`Task`]; cleared when dropped.
struct Bar(ProgressBar);

impl Task for Bar {
    fn start(&self, total: usize, done: usize) {
        self.0.set_length(total as u64);
        self.0.set_position(done as u64);
    }

    fn step(&self) {
        self.0.inc(1);
    }

    fn epoch(&self, epoch: usize, loss: f64, metric: f64) {
        self.0
            .set_prefix(format!("epoch {epoch} loss {loss:.3} val {metric:.3}"));
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

impl Reporter for Terminal<'_> {
    fn status(&self, verb: &str, message: String) {
        self.multi.suspend(|| self.printer.status(verb, message));
    }

    fn task(&self, label: &str) -> Box<dyn Task + '_> {
        Box::new(self.bar(label, None))
    }

    fn run_started(&self, id: &Hash, label: &str) -> Box<dyn Task + '_> {
        let bar = self.bar(
            label,
            Some("{msg:>40.cyan} [{bar:25}] {pos}/{len} {prefix} ({eta} left)"),
        );
        self.status("Running", format!("{label} ({id})"));
        Box::new(bar)
    }

    fn run_finished(&self, id: &Hash, label: &str, outcome: Result<RunSummary<'_>, &str>) {
        if let Some(s) = &self.sweep {
            s.inc(1);
        }
        match outcome {
            Ok(o) => {
                let headline = crate::runner::status::headline(
                    o.metrics
                        .iter()
                        .filter(|(set, _, _)| set == "test")
                        .map(|(s, m, v)| (s.as_str(), m.as_str(), Some(*v))),
                )
                .map(|(m, v)| format!(", test {m} {:.3}", v.unwrap_or(f64::NAN)))
                .unwrap_or_default();
                self.status(
                    "Finished",
                    format!(
                        "{label} ({id}) in {:.1}s, {:.0} images/s{headline}",
                        o.seconds, o.images_per_second
                    ),
                );
            }
            Err(e) => self.multi.suspend(|| {
                self.printer
                    .warn(format!("run {label} ({id}) stopped: {e}"))
            }),
        }
    }
}
