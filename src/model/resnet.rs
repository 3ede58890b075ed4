//! ResNet image encoders (18/34/50, and a tiny variant for CPU tests) with torchvision's
//! parameter layout: `conv1`, `bn1`, `layer1.0.conv1`, … `layer4.N.downsample.{conv,bn}` (a
//! torchvision file's `downsample.0/1` are remapped on import). The classifier `fc` is not part
//! of the encoder; heads live in [`super::Classifier`]. Grayscale input is tiled to 3 channels
//! by the data loader so ImageNet weights apply unchanged.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

use super::init::Seeder;

/// Which encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// BasicBlock, one per stage, widths 16-32-64-128: for CPU tests and the quickstart.
    ResnetTiny,
    Resnet18,
    Resnet34,
    Resnet50,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::ResnetTiny => "resnet-tiny",
            Arch::Resnet18 => "resnet18",
            Arch::Resnet34 => "resnet34",
            Arch::Resnet50 => "resnet50",
        }
    }

    /// (bottleneck blocks?, blocks per stage, stem width)
    fn layout(self) -> (bool, [usize; 4], usize) {
        match self {
            Arch::ResnetTiny => (false, [1, 1, 1, 1], 16),
            Arch::Resnet18 => (false, [2, 2, 2, 2], 64),
            Arch::Resnet34 => (false, [3, 4, 6, 3], 64),
            Arch::Resnet50 => (true, [3, 4, 6, 3], 64),
        }
    }

    /// Width of the pooled feature vector.
    pub fn feature_dim(self) -> usize {
        let (bottleneck, _, base) = self.layout();
        base * 8 * if bottleneck { 4 } else { 1 }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The 1x1 projection on a block's shortcut when its shape changes.
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

/// A BasicBlock (conv3/bn3 absent) or a Bottleneck (all three convolutions).
#[derive(Module, Debug)]
pub struct Block {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Option<Conv2d>,
    pub bn3: Option<BatchNorm>,
    pub downsample: Option<Downsample>,
}

fn bn(c: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(c).init(device)
}

impl Block {
    fn basic(s: &mut Seeder, c_in: usize, c_out: usize, stride: usize, device: &Device) -> Block {
        let downsample = (stride != 1 || c_in != c_out).then(|| Downsample {
            conv: s.conv(c_in, c_out, 1, stride, device),
            bn: bn(c_out, device),
        });
        Block {
            conv1: s.conv(c_in, c_out, 3, stride, device),
            bn1: bn(c_out, device),
            conv2: s.conv(c_out, c_out, 3, 1, device),
            bn2: bn(c_out, device),
            conv3: None,
            bn3: None,
            downsample,
        }
    }

    fn bottleneck(
        s: &mut Seeder,
        c_in: usize,
        width: usize,
        stride: usize,
        device: &Device,
    ) -> Block {
        let c_out = width * 4;
        let downsample = (stride != 1 || c_in != c_out).then(|| Downsample {
            conv: s.conv(c_in, c_out, 1, stride, device),
            bn: bn(c_out, device),
        });
        Block {
            conv1: s.conv(c_in, width, 1, 1, device),
            bn1: bn(width, device),
            // torchvision v1.5: the stride sits on the 3x3 convolution.
            conv2: s.conv(width, width, 3, stride, device),
            bn2: bn(width, device),
            conv3: Some(s.conv(width, c_out, 1, 1, device)),
            bn3: Some(bn(c_out, device)),
            downsample,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(d) => d.bn.forward(d.conv.forward(x.clone())),
            None => x.clone(),
        };
        let mut out = relu(self.bn1.forward(self.conv1.forward(x)));
        out = self.bn2.forward(self.conv2.forward(out));
        if let (Some(c3), Some(b3)) = (&self.conv3, &self.bn3) {
            out = b3.forward(c3.forward(relu(out)));
        }
        relu(out + identity)
    }
}

/// A ResNet without its classifier: image batch → pooled features.
#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: MaxPool2d,
    pub layer1: Vec<Block>,
    pub layer2: Vec<Block>,
    pub layer3: Vec<Block>,
    pub layer4: Vec<Block>,
}

impl ResNet {
    /// A randomly initialised encoder; the seeder makes the weights reproducible.
    pub fn new(arch: Arch, s: &mut Seeder, device: &Device) -> ResNet {
        let (bottleneck, blocks, base) = arch.layout();
        let expansion = if bottleneck { 4 } else { 1 };
        let mut c_in = base;
        let mut stages: Vec<Vec<Block>> = Vec::new();
        for (stage, &n) in blocks.iter().enumerate() {
            let width = base << stage;
            let mut layer = Vec::with_capacity(n);
            for b in 0..n {
                let stride = if b == 0 && stage > 0 { 2 } else { 1 };
                let block = if bottleneck {
                    Block::bottleneck(s, c_in, width, stride, device)
                } else {
                    Block::basic(s, c_in, width, stride, device)
                };
                c_in = width * expansion;
                layer.push(block);
            }
            stages.push(layer);
        }
        let mut stages = stages.into_iter();
        ResNet {
            conv1: s.conv(3, base, 7, 2, device),
            bn1: bn(base, device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1: stages.next().expect("four stages"),
            layer2: stages.next().expect("four stages"),
            layer3: stages.next().expect("four stages"),
            layer4: stages.next().expect("four stages"),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, 3, height, width]`
    /// - output: `[batch, feature_dim]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = relu(self.bn1.forward(self.conv1.forward(x)));
        x = self.maxpool.forward(x);
        for layer in [&self.layer1, &self.layer2, &self.layer3, &self.layer4] {
            for block in layer {
                x = block.forward(x);
            }
        }
        // Global average pooling.
        let [b, c, _, _] = x.dims();
        x.mean_dim(3).mean_dim(2).reshape([b, c])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::{AdamWConfig, GradientsParams};

    #[test]
    fn tiny_resnet_trains_one_step_and_round_trips() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let mut enc = ResNet::new(Arch::ResnetTiny, &mut Seeder::new("t", 3), &device);
        let head = burn::nn::LinearConfig::new(Arch::ResnetTiny.feature_dim(), 5).init(&device);
        let x = Tensor::<4>::random(
            [4, 3, 32, 32],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3], [4]), &device);
        let feats = enc.forward(x.clone());
        assert_eq!(feats.dims(), [4, 128]);
        let loss = CrossEntropyLossConfig::new()
            .init(&device)
            .forward(head.forward(feats), y);
        let grads = GradientsParams::from_grads(loss.backward(), &enc);
        let mut optim = AdamWConfig::new().init();
        enc = optim.step(1e-3, enc, grads);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enc.bpk");
        // Running statistics are synced by `valid()`; save that snapshot.
        enc.valid().save_file(&path).unwrap();
        let back =
            ResNet::new(Arch::ResnetTiny, &mut Seeder::new("t", 4), &device).load_file(&path);
        let a = enc
            .valid()
            .forward(x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let b = back
            .valid()
            .forward(x)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(Arch::Resnet50.feature_dim(), 2048);
    }
}
