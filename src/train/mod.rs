//! Training on burn: the data loader, downstream linear probes and fine-tunes, and
//! self-supervised pretraining. Training reads examples plus a config and writes checkpoints,
//! curves and predictions into a run directory; it never touches the store, the index or the
//! runner, which hash its outputs into the store afterwards.

pub mod backend;
pub mod checkpoint;
pub mod data;
pub mod downstream;
pub mod pretrain;
pub mod schedule;
pub mod text;

use std::path::PathBuf;

pub use backend::DeviceKind;

/// Receives training progress (the CLI draws bars; tests can interrupt at a given step).
pub trait Observer: Sync {
    /// Called once the number of optimizer steps is known (and where a resumed run starts).
    fn start(&self, _total_steps: usize, _done: usize) {}
    /// After every optimizer step.
    fn step(&self, _epoch: usize, _batch: usize) {}
    /// After every epoch's validation.
    fn epoch(&self, _epoch: usize, _train_loss: f64, _val_metric: f64) {}
}

impl Observer for indicatif::ProgressBar {
    fn start(&self, total: usize, done: usize) {
        self.set_length(total as u64);
        self.set_position(done as u64);
    }

    fn step(&self, _epoch: usize, _batch: usize) {
        self.inc(1);
    }
}

/// An observer that ignores everything.
pub struct Quiet;

impl Observer for Quiet {}

/// A training error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Weights(#[from] crate::model::import::Error),
    #[error(transparent)]
    Backend(#[from] backend::Error),
    #[error("could not {action} `{path}`: {message}")]
    File {
        action: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("the {set} set is empty")]
    EmptySet { set: String },
    #[error("interrupted in epoch {epoch}; a checkpoint was saved and the run resumes from it")]
    Interrupted { epoch: usize },
}

impl Error {
    pub fn file(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(String) -> Error {
        let path = path.into();
        move |message| Error::File {
            action,
            path,
            message,
        }
    }
}
