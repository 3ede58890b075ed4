//! Training on burn: the data loader, downstream linear probes and fine-tunes, and
//! self-supervised pretraining. Training reads examples plus a config and writes checkpoints,
//! curves and predictions into a run directory; it never touches the store, the index or the
//! runner, which hash its outputs into the store afterwards.

pub mod backend;
pub mod cache;
pub mod checkpoint;
pub mod data;
pub mod downstream;
pub mod epochs;
pub mod optim;
pub mod pretrain;
pub mod schedule;
pub mod text;

use std::path::PathBuf;

pub use backend::{DeviceKind, Precision};

/// A training error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Weights(#[from] crate::model::import::Error),
    #[error(transparent)]
    TextModel(#[from] crate::model::bert::Error),
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
