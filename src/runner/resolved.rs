//! A run's fully resolved inputs, stored with the run and hashed into its identity.
//!
//! Identity = blake3 of the canonical JSON of the resolved run with the machine-specific parts
//! (device index, thread count) replaced by the backend kind ("flex" or "tch"): the same inputs
//! on another machine are the same run. Every input is named by hash.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::id::Hash;
use crate::train::downstream::DownstreamConfig;
use crate::train::pretrain::PretrainConfig;

/// Where pretraining images come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub cohort: Hash,
    /// When set, only the train partition of this split.
    pub split: Option<Hash>,
}

/// How a downstream encoder is initialised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InitRef {
    Random,
    Torchvision {
        weights: Hash,
        /// File extension the importer needs ("pth" or "safetensors").
        format: String,
    },
    Pretrain {
        run: Hash,
        allow_leakage: bool,
    },
}

/// An external evaluation cohort.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct External {
    pub name: String,
    pub cohort: Hash,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainRun {
    pub ktrack: String,
    pub config: PretrainConfig,
    pub sources: Vec<Source>,
    /// Object hash of a user's tokenizer.json, if one is used.
    pub tokenizer: Option<Hash>,
    /// The files of a BERT text model folder (file name → object), if one is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_model: Option<std::collections::BTreeMap<String, Hash>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DownstreamRun {
    pub ktrack: String,
    pub config: DownstreamConfig,
    pub cohort: Hash,
    pub split: Hash,
    pub fraction: Hash,
    pub fraction_value: f64,
    pub init: InitRef,
    pub external: Vec<External>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResolvedRun {
    Pretrain(PretrainRun),
    Downstream(DownstreamRun),
}

impl ResolvedRun {
    pub fn kind(&self) -> &'static str {
        match self {
            ResolvedRun::Pretrain(_) => "pretrain",
            ResolvedRun::Downstream(_) => "downstream",
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("resolved runs serialize")
    }

    pub fn from_json(text: &str) -> Result<ResolvedRun, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The run's identity.
    pub fn id(&self) -> Hash {
        Hash::of_json(&identity_json(&self.to_json()))
    }
}

/// The resolved JSON with `config.device` → `backend` and `config.threads` removed.
pub fn identity_json(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(cfg) = v.get_mut("config").and_then(Value::as_object_mut) {
        let device = cfg.remove("device");
        cfg.remove("threads");
        let backend = device
            .and_then(|d| {
                d.as_str()
                    .and_then(|s| s.parse::<crate::train::DeviceKind>().ok())
            })
            .map_or("flex", |d| d.backend());
        cfg.insert("backend".into(), Value::String(backend.into()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Label;
    use crate::model::Arch;
    use crate::train::DeviceKind;
    use crate::train::data::{Augment, Normalize, Preprocess};
    use crate::train::downstream::Protocol;

    fn run(device: DeviceKind, threads: usize, seed: u64) -> ResolvedRun {
        ResolvedRun::Downstream(DownstreamRun {
            ktrack: "0.1.0".into(),
            config: DownstreamConfig {
                arch: Arch::ResnetTiny,
                task: Label::Kl,
                protocol: Protocol::Linear,
                preprocess: Preprocess {
                    image_size: 64,
                    normalize: Normalize::Zscore,
                    flip_left: true,
                },
                augment: Augment::off(),
                epochs: 3,
                batch_size: 16,
                lr: 0.01,
                weight_decay: 0.0,
                warmup_epochs: 0.0,
                patience: None,
                select: Default::default(),
                head_init: Default::default(),
                seed,
                device,
                threads,
                precision: Default::default(),
                probe: None,
            },
            cohort: Hash::of(b"c"),
            split: Hash::of(b"s"),
            fraction: Hash::of(b"f"),
            fraction_value: 0.1,
            init: InitRef::Random,
            external: vec![],
        })
    }

    #[test]
    fn identity_ignores_threads_and_device_index_but_not_backend_or_seed() {
        let a = run(DeviceKind::Cpu, 2, 0);
        assert_eq!(a.id(), run(DeviceKind::Cpu, 8, 0).id());
        assert_ne!(a.id(), run(DeviceKind::Cpu, 2, 1).id());
        assert_ne!(a.id(), run(DeviceKind::TchCpu, 2, 0).id());
        assert_eq!(
            run(DeviceKind::Cuda(0), 2, 0).id(),
            run(DeviceKind::Cuda(3), 2, 0).id()
        );
        let back = ResolvedRun::from_json(&a.to_json().to_string()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn fp32_identities_are_unchanged_and_bf16_is_part_of_the_identity() {
        let a = run(DeviceKind::TchCpu, 2, 0);
        // fp32 is not written, so runs planned before `precision` existed keep their ids.
        assert!(a.to_json()["config"].get("precision").is_none());
        let mut b = a.clone();
        if let ResolvedRun::Downstream(d) = &mut b {
            d.config.precision = crate::train::Precision::Bf16;
        }
        assert_eq!(b.to_json()["config"]["precision"], "bf16");
        assert_ne!(a.id(), b.id());
        assert_eq!(ResolvedRun::from_json(&b.to_json().to_string()).unwrap(), b);
        assert_eq!(crate::runner::exec::tolerance(&a), (0.0, 0.0));
        assert_eq!(crate::runner::exec::tolerance(&b), (1e-2, 2e-2));
    }
}
