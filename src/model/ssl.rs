//! Self-supervised model parts: projection heads, a small Transformer text encoder, seeded
//! re-initialisation of burn-built modules, and the momentum (EMA) update of MoCo's key
//! encoder. The projection heads are dropped after pretraining; encoders are kept.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{Embedding, EmbeddingConfig, Linear};
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::init::Seeder;
use super::resnet::{Arch, ResNet};
use crate::rng;

/// A projection head: one linear layer, or Linear-ReLU-Linear.
#[derive(Module, Debug)]
pub struct Projection {
    pub fc1: Linear,
    pub fc2: Option<Linear>,
}

impl Projection {
    pub fn new(
        s: &mut Seeder,
        d_in: usize,
        d_out: usize,
        mlp: bool,
        device: &Device,
    ) -> Projection {
        if mlp {
            Projection {
                fc1: s.linear(d_in, d_in, device),
                fc2: Some(s.linear(d_in, d_out, device)),
            }
        } else {
            Projection {
                fc1: s.linear(d_in, d_out, device),
                fc2: None,
            }
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match &self.fc2 {
            Some(fc2) => fc2.forward(relu(self.fc1.forward(x))),
            None => self.fc1.forward(x),
        }
    }
}

/// L2-normalises rows.
pub fn normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powf_scalar(2.0).sum_dim(1).sqrt().clamp_min(1e-8);
    x.div(norm)
}

/// Image encoder + projection (SimCLR; MoCo's query and key networks).
#[derive(Module, Debug)]
pub struct ImageSsl {
    pub encoder: ResNet,
    pub projection: Projection,
}

impl ImageSsl {
    pub fn new(arch: Arch, projection_dim: usize, seed: u64, device: &Device) -> ImageSsl {
        ImageSsl {
            encoder: ResNet::new(arch, &mut Seeder::new("encoder", seed), device),
            projection: Projection::new(
                &mut Seeder::new("projection", seed),
                arch.feature_dim(),
                projection_dim,
                true,
                device,
            ),
        }
    }

    /// Normalised embeddings `[batch, projection_dim]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        normalize(self.embed(x))
    }

    /// The projection (expander) outputs before normalisation (VICReg's embeddings).
    pub fn embed(&self, x: Tensor<4>) -> Tensor<2> {
        self.projection.forward(self.encoder.forward(x))
    }
}

/// Token and position embeddings, a Transformer encoder and masked mean pooling.
#[derive(Module, Debug)]
pub struct TextEncoder {
    pub tokens: Embedding,
    pub positions: Embedding,
    pub transformer: TransformerEncoder,
}

/// The text tower: ktrack's own small Transformer (its shape), or a BERT from a local
/// Hugging Face folder (`model`; then `vocab_size`, `dim`, `layers` and `heads` are the
/// folder's).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextConfig {
    pub max_len: usize,
    pub vocab_size: usize,
    pub dim: usize,
    pub layers: usize,
    pub heads: usize,
    /// A BERT folder (in a spec, relative to it). A resolved run names its files by hash
    /// instead, so this is absent there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<std::path::PathBuf>,
    /// BERT: the embeddings and the first `freeze_layers` layers do not train.
    #[serde(skip_serializing_if = "is_zero")]
    pub freeze_layers: usize,
    /// The text tower's own peak learning rate (default: the pretraining's `lr`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for TextConfig {
    fn default() -> TextConfig {
        TextConfig {
            max_len: 48,
            vocab_size: 2000,
            dim: 64,
            layers: 2,
            heads: 4,
            model: None,
            freeze_layers: 0,
            lr: None,
        }
    }
}

/// The report tower of an image-text model (one per run, so variant sizes do not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum TextTower {
    Own(TextEncoder),
    Bert(super::bert::Bert),
}

impl TextTower {
    /// Text features `[batch, dim]` (BERT: the `[CLS]` token's last hidden state).
    pub fn forward(&self, ids: Tensor<2, Int>, pad: Tensor<2, Bool>) -> Tensor<2> {
        match self {
            TextTower::Own(t) => t.forward(ids, pad),
            TextTower::Bert(b) => b.cls(ids, pad),
        }
    }

    pub fn dim(&self) -> usize {
        match self {
            TextTower::Own(t) => t.tokens.weight.dims()[1],
            TextTower::Bert(b) => b.hidden_size(),
        }
    }

    /// Whether `[CLS] … [SEP]` go around each report.
    pub fn special_tokens(&self) -> bool {
        matches!(self, TextTower::Bert(_))
    }
}

impl TextEncoder {
    pub fn new(cfg: &TextConfig, vocab: usize, seed: u64, device: &Device) -> TextEncoder {
        let enc = TextEncoder {
            tokens: EmbeddingConfig::new(vocab, cfg.dim).init(device),
            positions: EmbeddingConfig::new(cfg.max_len, cfg.dim).init(device),
            // No dropout: training stays deterministic.
            transformer: TransformerEncoderConfig::new(cfg.dim, cfg.dim * 2, cfg.heads, cfg.layers)
                .with_dropout(0.0)
                .with_norm_first(true)
                .init(device),
        };
        reinit(enc, &mut Seeder::new("text", seed))
    }

    /// `ids`: `[batch, len]` token ids, `pad`: `[batch, len]` true where padding.
    /// Output: `[batch, dim]`.
    pub fn forward(&self, ids: Tensor<2, Int>, pad: Tensor<2, Bool>) -> Tensor<2> {
        let [b, len] = ids.dims();
        let device = ids.device();
        let pos = Tensor::<1, Int>::arange(0..len as i64, &device)
            .reshape([1, len])
            .repeat_dim(0, b);
        let x = self.tokens.forward(ids) + self.positions.forward(pos);
        let h = self
            .transformer
            .forward(TransformerEncoderInput::new(x).mask_pad(pad.clone()));
        // Mean over real tokens.
        let keep = pad.bool_not().float().reshape([b, len, 1]);
        let summed = (h * keep.clone())
            .sum_dim(1)
            .reshape([b, self.tokens.weight.dims()[1]]);
        let count = keep.sum_dim(1).reshape([b, 1]).clamp_min(1.0);
        summed.div(count)
    }
}

/// Image and text towers with their projections (CLIP, ConVIRT).
#[derive(Module, Debug)]
pub struct ImageText {
    pub encoder: ResNet,
    pub image_projection: Projection,
    pub text: TextTower,
    pub text_projection: Projection,
}

impl ImageText {
    /// The seeded towers; `mlp`: ConVIRT's non-linear projections (CLIP's are linear).
    pub fn new(
        arch: Arch,
        projection_dim: usize,
        text: TextTower,
        mlp: bool,
        seed: u64,
        device: &Device,
    ) -> ImageText {
        let text_dim = text.dim();
        ImageText {
            encoder: ResNet::new(arch, &mut Seeder::new("encoder", seed), device),
            image_projection: Projection::new(
                &mut Seeder::new("image-projection", seed),
                arch.feature_dim(),
                projection_dim,
                mlp,
                device,
            ),
            text,
            text_projection: Projection::new(
                &mut Seeder::new("text-projection", seed),
                text_dim,
                projection_dim,
                mlp,
                device,
            ),
        }
    }
}

/// SLIP: the image-text towers and SimCLR's projection head on the same image encoder.
#[derive(Module, Debug)]
pub struct Slip {
    pub towers: ImageText,
    pub simclr_projection: Projection,
}

/// Replaces every float parameter with seeded values: linear and other weights uniform in
/// ±1/√fan_in, embeddings standard normal, biases zero; normalisation layers keep their
/// (deterministic) ones and zeros.
pub fn reinit<M: Module>(module: M, seeder: &mut Seeder) -> M {
    struct Reinit<'a> {
        seeder: &'a mut Seeder,
        stack: Vec<String>,
    }
    impl ModuleMapper for Reinit<'_> {
        fn enter_module(&mut self, _name: &str, container_type: &str) {
            self.stack.push(container_type.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.stack.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let container = self.stack.last().map(String::as_str).unwrap_or("");
            if container.contains("Norm") {
                return param;
            }
            let shape: Vec<usize> = param.val().dims().to_vec();
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if D == 1 {
                vec![0.0; n]
            } else if container.contains("Embedding") {
                self.seeder.normals(n, 1.0)
            } else {
                self.seeder.uniforms(n, 1.0 / (shape[0] as f64).sqrt())
            };
            let device = param.val().device();
            let tensor = Tensor::<D>::from_data(TensorData::new(values, shape), &device);
            // The new values train as the old ones would have (a tensor made from data does
            // not track gradients by itself).
            param.map(|old| {
                if old.is_require_grad() {
                    tensor.require_grad()
                } else {
                    tensor
                }
            })
        }
    }
    module.map(&mut Reinit {
        seeder,
        stack: Vec::new(),
    })
}

/// MoCo's momentum update: key ← m·key + (1 − m)·query, parameter by parameter (the two
/// modules have the same structure, so their traversal orders match).
pub fn momentum_update<M: Module>(key: M, query: &M, m: f64) -> M {
    struct Collect(Vec<Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val().inner();
            let n = t.shape().num_elements();
            self.0.push(t.reshape([n]));
        }
    }
    struct Blend {
        query: std::vec::IntoIter<Tensor<1>>,
        m: f64,
    }
    impl ModuleMapper for Blend {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let q = self
                .query
                .next()
                .expect("key and query have the same parameters");
            let m = self.m;
            param.map(|k| {
                let shape = k.shape();
                let q = q.to_device(&k.device()).reshape(shape);
                k.mul_scalar(m).add(q.mul_scalar(1.0 - m))
            })
        }
    }
    let mut collect = Collect(Vec::new());
    query.visit(&mut collect);
    key.map(&mut Blend {
        query: collect.0.into_iter(),
        m,
    })
}

/// A queue of negative keys for MoCo, initialised with seeded random unit vectors.
pub fn initial_queue(size: usize, dim: usize, seed: u64, device: &Device) -> Tensor<2> {
    let mut r = rng::stream("moco-queue", &[], seed);
    let values: Vec<f32> = (0..size * dim)
        .map(|_| rng::normal(&mut r) as f32)
        .collect();
    normalize(Tensor::<2>::from_data(
        TensorData::new(values, [size, dim]),
        device,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_weight_of_the_text_encoder_trains() {
        // Re-seeded weights must keep tracking gradients: a text tower whose embeddings and
        // attention do not train (only its norms would) is a silent scientific error.
        struct Frozen(Vec<String>, Vec<String>);
        impl burn::module::ModuleVisitor for Frozen {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.1.push(name.to_string());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.1.pop();
            }
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
                if !p.val().is_require_grad() {
                    self.0.push(self.1.join("."));
                }
            }
        }
        let device = Device::flex().autodiff();
        let enc = TextEncoder::new(&TextConfig::default(), 30, 1, &device);
        let mut frozen = Frozen(Vec::new(), Vec::new());
        enc.visit(&mut frozen);
        assert!(frozen.0.is_empty(), "not training: {:?}", frozen.0);
    }

    #[test]
    fn text_encoder_is_seeded_and_pools() {
        let device = Device::flex();
        let cfg = TextConfig {
            max_len: 8,
            ..TextConfig::default()
        };
        let a = TextEncoder::new(&cfg, 30, 1, &device);
        let b = TextEncoder::new(&cfg, 30, 1, &device);
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(vec![3i64, 4, 5, 0, 6, 7, 0, 0], [2, 4]),
            &device,
        );
        let pad = ids.clone().equal_elem(0);
        let ya = a.forward(ids.clone(), pad.clone()).into_data();
        let yb = b.forward(ids, pad).into_data();
        assert_eq!(ya, yb);
        assert_eq!(ya.shape().to_vec(), vec![2, 64]);
    }

    #[test]
    fn momentum_update_blends() {
        let device = Device::flex();
        let q = ImageSsl::new(Arch::ResnetTiny, 8, 1, &device);
        let k = ImageSsl::new(Arch::ResnetTiny, 8, 2, &device);
        let k0 = k
            .projection
            .fc1
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let q0 = q
            .projection
            .fc1
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let k1 = momentum_update(k, &q, 0.9)
            .projection
            .fc1
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!((k1[0] - (0.9 * k0[0] + 0.1 * q0[0])).abs() < 1e-6);
    }
}
