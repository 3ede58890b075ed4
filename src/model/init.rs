//! Seeded weight initialisation from ktrack's own ChaCha streams (not the backend's RNG, which
//! may be global to the process), so the same seed gives the same initial weights on every
//! backend and in every thread. Distributions follow torchvision/PyTorch defaults.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use crate::rng;

/// A seeded source of initial weights.
pub struct Seeder {
    rng: rng::Rng,
}

impl Seeder {
    pub fn new(purpose: &str, seed: u64) -> Seeder {
        Seeder {
            rng: rng::stream("init", &[purpose.as_bytes()], seed),
        }
    }

    /// `n` normal draws with standard deviation `sd`.
    pub fn normals(&mut self, n: usize, sd: f64) -> Vec<f32> {
        self.normal(n, sd)
    }

    /// `n` uniform draws in ±`bound`.
    pub fn uniforms(&mut self, n: usize, bound: f64) -> Vec<f32> {
        self.uniform(n, bound)
    }

    fn normal(&mut self, n: usize, sd: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (sd * rng::normal(&mut self.rng)) as f32)
            .collect()
    }

    fn uniform(&mut self, n: usize, bound: f64) -> Vec<f32> {
        (0..n)
            .map(|_| ((2.0 * rng::unit(&mut self.rng) - 1.0) * bound) as f32)
            .collect()
    }

    /// A bias-free `k`x`k` convolution, Kaiming-normal (fan-out, ReLU) as torchvision's ResNet.
    pub fn conv(
        &mut self,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        device: &Device,
    ) -> Conv2d {
        let pad = k / 2;
        let mut conv = Conv2dConfig::new([c_in, c_out], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_bias(false)
            .with_initializer(Initializer::Zeros)
            .init(device);
        let sd = (2.0 / (c_out * k * k) as f64).sqrt();
        let values = self.normal(c_out * c_in * k * k, sd);
        conv.weight = Param::from_data(TensorData::new(values, [c_out, c_in, k, k]), device);
        conv
    }

    /// A linear layer with PyTorch's default: weight and bias uniform in ±1/√fan_in.
    pub fn linear(&mut self, d_in: usize, d_out: usize, device: &Device) -> Linear {
        let mut linear = LinearConfig::new(d_in, d_out)
            .with_initializer(Initializer::Zeros)
            .init(device);
        let bound = 1.0 / (d_in as f64).sqrt();
        // burn stores the weight as [d_in, d_out].
        let w = self.uniform(d_in * d_out, bound);
        linear.weight = Param::from_data(TensorData::new(w, [d_in, d_out]), device);
        let b = self.uniform(d_out, bound);
        linear.bias = Some(Param::from_data(TensorData::new(b, [d_out]), device));
        linear
    }
}
