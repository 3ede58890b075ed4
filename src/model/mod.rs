//! Models: ResNet encoders ported from torchvision, classification heads, weight import, and a
//! BERT text encoder read from a local Hugging Face folder.
//! Nothing here touches the store, the index or the runner.

pub mod bert;
pub mod classifier;
pub mod import;
pub mod init;
pub mod resnet;
pub mod ssl;

pub use classifier::Classifier;
pub use resnet::{Arch, ResNet};
