//! A BERT-family text encoder read from a local Hugging Face folder (`config.json`,
//! `model.safetensors`, and `tokenizer.json` or `vocab.txt`), e.g. CXR-BERT or BiomedBERT.
//! ktrack never downloads one.
//!
//! The network is written out in burn layer by layer as `transformers`' `BertModel` computes
//! it (post-norm layers, exact-erf GELU, absolute positions, token type 0, an additive
//! attention mask of the float minimum), so its hidden states and pooled output equal
//! `transformers`' (checked in `.ci/run` against a random BERT saved by `transformers`). The
//! text feature for contrastive pretraining is the `[CLS]` token's last hidden state.
//!
//! Weights load through burn's safetensors store with PyTorch's layout adapted (linear
//! weights transposed, LayerNorm weight/bias as gamma/beta). A `bert.` prefix (from a
//! `BertForMaskedLM` or `CXRBertModel` checkpoint) is dropped; heads other than the encoder
//! (`cls.*`, projection heads) are ignored; a missing or misshapen encoder tensor is an error.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::activation::{gelu, softmax};
use serde::Deserialize;

/// What is wrong with a model folder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("text model folder `{dir}`: {message}")]
    Folder { dir: PathBuf, message: String },
    #[error("text model `{path}`: {message}")]
    Architecture { path: PathBuf, message: String },
    #[error(
        "weights `{path}` do not fit the BERT of its config.json:{0}",
        crate::model::import::listed(missing, wrong)
    )]
    Mismatch {
        path: PathBuf,
        missing: Vec<String>,
        wrong: Vec<String>,
    },
    #[error("tokenizer `{path}` does not match the model: {message}")]
    Tokenizer { path: PathBuf, message: String },
}

/// The fields of a BERT `config.json` that shape the network.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct BertConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Vec<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "d_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn d_type_vocab() -> usize {
    2
}
fn d_eps() -> f64 {
    1e-12
}
fn d_act() -> String {
    "gelu".into()
}

/// The files of a model folder.
pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";

impl BertConfig {
    /// Reads and checks `config.json` in `dir`: a BERT (model_type `bert`) with absolute
    /// positions and GELU, whose hidden size the heads divide.
    pub fn read(dir: &Path) -> Result<BertConfig, Error> {
        let path = dir.join(CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Folder {
            dir: dir.to_path_buf(),
            message: format!("cannot read {CONFIG}: {e}"),
        })?;
        let arch = |message: String| Error::Architecture {
            path: path.clone(),
            message,
        };
        let cfg: BertConfig =
            serde_json::from_str(&text).map_err(|e| arch(format!("not a BERT config: {e}")))?;
        let model_type = cfg.model_type.as_deref().unwrap_or("");
        // CXR-BERT-specialized is a BERT with a projection head (ignored here).
        if !matches!(model_type, "bert" | "cxr-bert") {
            return Err(arch(format!(
                "model_type is `{model_type}` (architectures {:?}); ktrack's text tower reads BERT-family models (model_type \"bert\" or \"cxr-bert\")",
                cfg.architectures
            )));
        }
        if let Some(p) = cfg.position_embedding_type.as_deref()
            && p != "absolute"
        {
            return Err(arch(format!(
                "position_embedding_type `{p}` is not supported (only \"absolute\")"
            )));
        }
        if cfg.hidden_act != "gelu" {
            return Err(arch(format!(
                "hidden_act `{}` is not supported (only \"gelu\")",
                cfg.hidden_act
            )));
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(arch(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        Ok(cfg)
    }
}

#[derive(Module, Debug)]
pub struct Embeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub layer_norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct SelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
}

#[derive(Module, Debug)]
pub struct DenseNorm {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct Attention {
    pub self_attn: SelfAttention,
    pub output: DenseNorm,
}

#[derive(Module, Debug)]
pub struct Intermediate {
    pub dense: Linear,
}

#[derive(Module, Debug)]
pub struct Layer {
    pub attention: Attention,
    pub intermediate: Intermediate,
    pub output: DenseNorm,
}

#[derive(Module, Debug)]
pub struct Encoder {
    pub layer: Vec<Layer>,
}

#[derive(Module, Debug)]
pub struct Pooler {
    pub dense: Linear,
}

/// BERT: embeddings, post-norm Transformer layers and (when the checkpoint has one) the pooler.
#[derive(Module, Debug)]
pub struct Bert {
    pub embeddings: Embeddings,
    pub encoder: Encoder,
    pub pooler: Option<Pooler>,
    #[module(skip)]
    pub heads: usize,
}

/// A BERT's outputs: `[batch, len, hidden]` and, with a pooler, `tanh(dense(h[CLS]))`.
pub struct BertOutput {
    pub hidden: Tensor<3>,
    pub pooled: Option<Tensor<2>>,
}

impl Bert {
    /// The network of `cfg` (weights still to be loaded).
    pub fn new(cfg: &BertConfig, pooler: bool, device: &Device) -> Bert {
        let h = cfg.hidden_size;
        let ln = || {
            LayerNormConfig::new(h)
                .with_epsilon(cfg.layer_norm_eps)
                .init(device)
        };
        let linear = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        let dense_norm = |i: usize| DenseNorm {
            dense: linear(i, h),
            layer_norm: ln(),
        };
        Bert {
            embeddings: Embeddings {
                word_embeddings: EmbeddingConfig::new(cfg.vocab_size, h).init(device),
                position_embeddings: EmbeddingConfig::new(cfg.max_position_embeddings, h)
                    .init(device),
                token_type_embeddings: EmbeddingConfig::new(cfg.type_vocab_size, h).init(device),
                layer_norm: ln(),
            },
            encoder: Encoder {
                layer: (0..cfg.num_hidden_layers)
                    .map(|_| Layer {
                        attention: Attention {
                            self_attn: SelfAttention {
                                query: linear(h, h),
                                key: linear(h, h),
                                value: linear(h, h),
                            },
                            output: dense_norm(h),
                        },
                        intermediate: Intermediate {
                            dense: linear(h, cfg.intermediate_size),
                        },
                        output: dense_norm(cfg.intermediate_size),
                    })
                    .collect(),
            },
            pooler: pooler.then(|| Pooler {
                dense: linear(h, h),
            }),
            heads: cfg.num_attention_heads,
        }
    }

    /// Reads the BERT of a model folder.
    pub fn load(dir: &Path, device: &Device) -> Result<Bert, Error> {
        let cfg = BertConfig::read(dir)?;
        let path = dir.join(WEIGHTS);
        let names = tensor_names(&path)?;
        let strip = |n: &str| n.strip_prefix("bert.").unwrap_or(n).to_string();
        let pooler = names.iter().any(|n| strip(n) == "pooler.dense.weight");
        let mut bert = Bert::new(&cfg, pooler, device);
        let mut store = SafetensorsStore::from_file(&path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .with_key_remapping(r"^bert\.(.+)$", "$1")
            .with_key_remapping(r"^(.*)\.LayerNorm\.(.+)$", "$1.layer_norm.$2")
            .with_key_remapping(
                r"^(.*)\.attention\.self\.(.+)$",
                "$1.attention.self_attn.$2",
            )
            .allow_partial(true)
            .validate(false);
        let result = bert.load_from(&mut store).map_err(|e| Error::Folder {
            dir: dir.to_path_buf(),
            message: format!("cannot read {WEIGHTS}: {e}"),
        })?;
        let missing: Vec<String> = result.missing.iter().map(|(p, _)| p.clone()).collect();
        let wrong: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
        // Tensors of the encoder the config does not know (more layers than
        // num_hidden_layers) mean the config and weights disagree.
        let extra: Vec<String> = result
            .unused
            .iter()
            .filter(|k| k.starts_with("encoder."))
            .cloned()
            .collect();
        if !missing.is_empty() || !wrong.is_empty() || !extra.is_empty() {
            let mut wrong = wrong;
            wrong.extend(
                extra
                    .into_iter()
                    .map(|k| format!("{k} (beyond config.json)")),
            );
            return Err(Error::Mismatch {
                path,
                missing,
                wrong,
            });
        }
        Ok(bert)
    }

    pub fn hidden_size(&self) -> usize {
        self.embeddings.word_embeddings.weight.dims()[1]
    }

    pub fn max_len(&self) -> usize {
        self.embeddings.position_embeddings.weight.dims()[0]
    }

    /// `ids`: `[batch, len]`, `pad`: true where padded.
    pub fn forward(&self, ids: Tensor<2, Int>, pad: Tensor<2, Bool>) -> BertOutput {
        let [b, len] = ids.dims();
        let device = ids.device();
        let pos = Tensor::<1, Int>::arange(0..len as i64, &device)
            .reshape([1, len])
            .repeat_dim(0, b);
        let types = Tensor::<2, Int>::zeros([b, len], &device);
        let e = &self.embeddings;
        let mut x = e.layer_norm.forward(
            e.word_embeddings.forward(ids)
                + e.token_type_embeddings.forward(types)
                + e.position_embeddings.forward(pos),
        );
        // Padded keys get the float minimum added to their scores, as transformers does.
        let mask = pad
            .float()
            .mul_scalar(f32::MIN as f64)
            .reshape([b, 1, 1, len]);
        for layer in &self.encoder.layer {
            x = layer.forward(x, mask.clone(), self.heads);
        }
        let pooled = self.pooler.as_ref().map(|p| {
            let h = self.hidden_size();
            p.dense
                .forward(x.clone().narrow(1, 0, 1).reshape([b, h]))
                .tanh()
        });
        BertOutput { hidden: x, pooled }
    }

    /// The `[CLS]` token's last hidden state `[batch, hidden]`.
    pub fn cls(&self, ids: Tensor<2, Int>, pad: Tensor<2, Bool>) -> Tensor<2> {
        let [b, _] = ids.dims();
        let h = self.hidden_size();
        self.forward(ids, pad)
            .hidden
            .narrow(1, 0, 1)
            .reshape([b, h])
    }

    /// Freezes the embeddings and the first `layers` encoder layers.
    pub fn freeze(mut self, layers: usize) -> Bert {
        self.embeddings = self.embeddings.no_grad();
        self.encoder.layer = self
            .encoder
            .layer
            .into_iter()
            .enumerate()
            .map(|(i, l)| if i < layers { l.no_grad() } else { l })
            .collect();
        self
    }
}

impl Layer {
    fn forward(&self, x: Tensor<3>, mask: Tensor<4>, heads: usize) -> Tensor<3> {
        let [b, len, h] = x.dims();
        let dh = h / heads;
        let split = |t: Tensor<3>| t.reshape([b, len, heads, dh]).swap_dims(1, 2);
        let a = &self.attention.self_attn;
        let q = split(a.query.forward(x.clone()));
        let k = split(a.key.forward(x.clone()));
        let v = split(a.value.forward(x.clone()));
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((dh as f64).sqrt()) + mask;
        let context = softmax(scores, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b, len, h]);
        let o = &self.attention.output;
        let attended = o.layer_norm.forward(o.dense.forward(context) + x);
        let inner = gelu(self.intermediate.dense.forward(attended.clone()));
        let out = &self.output;
        out.layer_norm.forward(out.dense.forward(inner) + attended)
    }
}

/// The tensor names in a safetensors file, read from its header only.
fn tensor_names(path: &Path) -> Result<Vec<String>, Error> {
    use std::io::Read;
    let err = |message: String| Error::Folder {
        dir: path.parent().unwrap_or(path).to_path_buf(),
        message: format!("{WEIGHTS}: {message}"),
    };
    let mut f = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| err(format!("no safetensors header: {e}")))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(err(format!("a header of {n} bytes is not safetensors")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| err(format!("truncated header: {e}")))?;
    let v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| err(format!("bad header: {e}")))?;
    Ok(v.into_iter()
        .map(|(k, _)| k)
        .filter(|k| k != "__metadata__")
        .collect())
}

#[cfg(test)]
pub(crate) mod tests;
