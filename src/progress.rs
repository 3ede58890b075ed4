//! How the library reports what it does, without printing: one [`Reporter`] for status lines
//! and the runs of a sweep, and [`Task`] handles for the progress of one piece of work (an
//! import, a verify, a training run). The command line implements both once (bars and lines
//! on a terminal, as quiet, verbose and `--no-progress` say); tests implement [`Task`] to stop
//! a training run at a chosen step; [`Quiet`] ignores everything.

use crate::id::Hash;

/// The progress of one piece of work.
pub trait Task: Sync {
    /// The number of steps is known (`done` of them already, when a run resumes).
    fn start(&self, _total: usize, _done: usize) {}
    /// One more step is done (an image, an object, an optimizer step).
    fn step(&self) {}
    /// A training epoch ended with its validation (NaN where there is none).
    fn epoch(&self, _epoch: usize, _train_loss: f64, _val_metric: f64) {}
}

/// What a finished run of a sweep reports.
pub struct RunSummary<'a> {
    pub seconds: f64,
    pub images_per_second: f64,
    /// (evaluation set, metric, value)
    pub metrics: &'a [(String, String, f64)],
}

/// Where status lines, progress and the runs of a sweep are reported.
pub trait Reporter: Sync {
    /// A status line: a verb and what it is about (`Imported`, `3 cohorts`).
    fn status(&self, _verb: &str, _message: String) {}
    /// A piece of work starts; progress goes to the returned task.
    fn task(&self, _label: &str) -> Box<dyn Task + '_> {
        Box::new(Quiet)
    }
    /// A run of a sweep starts; its training reports to the returned task.
    fn run_started(&self, _id: &Hash, _label: &str) -> Box<dyn Task + '_> {
        Box::new(Quiet)
    }
    /// A run of a sweep ended: finished, or stopped with an error.
    fn run_finished(&self, _id: &Hash, _label: &str, _outcome: Result<RunSummary<'_>, &str>) {}
}

/// Reports nothing.
pub struct Quiet;

impl Task for Quiet {}

impl Reporter for Quiet {}
