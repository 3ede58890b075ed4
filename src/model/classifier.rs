//! An encoder with a linear head: 5 logits for KL grade, 1 for a binary outcome.

use burn::module::Module;
use burn::nn::Linear;
use burn::prelude::*;

use super::init::Seeder;
use super::resnet::{Arch, ResNet};

#[derive(Module, Debug)]
pub struct Classifier {
    pub encoder: ResNet,
    pub head: Linear,
}

impl Classifier {
    /// A seeded random model (encoder and head from separate streams of the seed).
    pub fn new(arch: Arch, outputs: usize, seed: u64, device: &Device) -> Classifier {
        Classifier {
            encoder: ResNet::new(arch, &mut Seeder::new("encoder", seed), device),
            head: Seeder::new("head", seed).linear(arch.feature_dim(), outputs, device),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, 3, height, width]`
    /// - output: `[batch, outputs]` logits
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.encoder.forward(x))
    }
}
