//! Models: ResNet encoders ported from torchvision, classification heads, and weight import.
//! Nothing here touches the store, the index or the runner.

pub mod classifier;
pub mod import;
pub mod init;
pub mod resnet;
pub mod ssl;

pub use classifier::Classifier;
pub use resnet::{Arch, ResNet};
