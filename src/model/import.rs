//! Loading encoder weights: ktrack's own encoder checkpoints (burnpack) and torchvision ResNet
//! state dicts (`.pth` from `torch.save(model.state_dict())`, or `.safetensors`). torchvision
//! keys map onto ours except `downsample.0/1` → `downsample.conv/bn`; BatchNorm weight/bias
//! become gamma/beta. Every encoder tensor must be present with the right shape; the only
//! leftovers accepted are the classifier `fc.*` and `num_batches_tracked`.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};

use super::resnet::ResNet;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not read weights `{path}`: {message}")]
    Read { path: PathBuf, message: String },
    #[error(
        "weights `{path}` do not fit the encoder:{}{}{}",
        list("missing tensors", missing),
        list("unexpected tensors", unused),
        list("wrong tensors", wrong)
    )]
    Mismatch {
        path: PathBuf,
        missing: Vec<String>,
        unused: Vec<String>,
        wrong: Vec<String>,
    },
    #[error("weights `{path}` must end in .pth, .pt or .safetensors")]
    Extension { path: PathBuf },
}

impl crate::hint::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Mismatch { .. } => Some(
                "use the torchvision weights of the same architecture as `arch` (e.g. resnet50 with ResNet50_Weights.IMAGENET1K_V2)"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// Missing and wrong tensors as the lines of an error message.
pub fn listed(missing: &[String], wrong: &[String]) -> String {
    format!(
        "{}{}",
        list("missing tensors", missing),
        list("wrong tensors", wrong)
    )
}

fn list(what: &str, items: &[String]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let shown: Vec<&str> = items.iter().take(8).map(String::as_str).collect();
    let more = if items.len() > 8 {
        format!(" and {} more", items.len() - 8)
    } else {
        String::new()
    };
    format!("\n  {what}: {}{more}", shown.join(", "))
}

/// What an import applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    pub applied: usize,
    /// Tensors in the file that the encoder does not use (the classifier, counters).
    pub ignored: Vec<String>,
}

/// Loads torchvision weights into `encoder`.
pub fn torchvision(mut encoder: ResNet, path: &Path) -> Result<(ResNet, Imported), Error> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let read = |message: String| Error::Read {
        path: path.to_path_buf(),
        message,
    };
    let result = match ext.as_str() {
        "pth" | "pt" => {
            let mut store = PytorchStore::from_file(path)
                .with_key_remapping(r"downsample\.0\.(.+)", "downsample.conv.$1")
                .with_key_remapping(r"downsample\.1\.(.+)", "downsample.bn.$1")
                .allow_partial(true)
                .validate(false);
            encoder
                .load_from(&mut store)
                .map_err(|e| read(e.to_string()))?
        }
        "safetensors" => {
            let mut store = SafetensorsStore::from_file(path)
                .with_from_adapter(PyTorchToBurnAdapter)
                .with_key_remapping(r"downsample\.0\.(.+)", "downsample.conv.$1")
                .with_key_remapping(r"downsample\.1\.(.+)", "downsample.bn.$1")
                .allow_partial(true)
                .validate(false);
            encoder
                .load_from(&mut store)
                .map_err(|e| read(e.to_string()))?
        }
        _ => {
            return Err(Error::Extension {
                path: path.to_path_buf(),
            });
        }
    };
    let expected_leftover = |k: &str| k.starts_with("fc.") || k.ends_with("num_batches_tracked");
    let unused: Vec<String> = result
        .unused
        .iter()
        .filter(|k| !expected_leftover(k))
        .cloned()
        .collect();
    let missing: Vec<String> = result.missing.iter().map(|(p, _)| p.clone()).collect();
    let wrong: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
    if !missing.is_empty() || !unused.is_empty() || !wrong.is_empty() {
        return Err(Error::Mismatch {
            path: path.to_path_buf(),
            missing,
            unused,
            wrong,
        });
    }
    Ok((
        encoder,
        Imported {
            applied: result.applied.len(),
            ignored: result.unused.clone(),
        },
    ))
}

/// A hash of a module's tensors (parameters and BatchNorm statistics): names, types, shapes
/// and bytes, in name order, so equal weights give equal hashes wherever they were loaded from.
pub fn weights_hash<M: Module>(model: &M) -> Result<crate::id::Hash, String> {
    let mut tensors = model.collect(None, None, false);
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = blake3::Hasher::new();
    for t in tensors {
        let bytes = t
            .to_bytes()
            .map_err(|e| format!("cannot read tensor `{}`: {e:?}", t.name))?;
        h.update(&(t.name.len() as u64).to_le_bytes());
        h.update(t.name.as_bytes());
        h.update(format!("{:?}{:?}", t.dtype, t.shape.to_vec()).as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(h.finalize().into())
}

/// Saves a module as safetensors with ktrack's names. Unlike burn's native format (which
/// stores random parameter ids), equal weights give equal bytes, so the file's blake3 can be
/// a checkpoint's identity. Save a `valid()` snapshot so BatchNorm statistics are current.
pub fn save_checkpoint<M: Module>(model: &M, path: &Path) -> Result<(), Error> {
    let err = |message: String| Error::Read {
        path: path.to_path_buf(),
        message: format!("cannot write: {message}"),
    };
    let mut tensors = Vec::new();
    for t in model.collect(None, None, false) {
        let dtype = match t.dtype {
            burn::tensor::DType::F32 => safetensors::Dtype::F32,
            burn::tensor::DType::F64 => safetensors::Dtype::F64,
            burn::tensor::DType::F16 => safetensors::Dtype::F16,
            burn::tensor::DType::BF16 => safetensors::Dtype::BF16,
            burn::tensor::DType::I64 => safetensors::Dtype::I64,
            burn::tensor::DType::I32 => safetensors::Dtype::I32,
            other => {
                return Err(err(format!(
                    "tensor `{}` has unsupported type {other:?}",
                    t.name
                )));
            }
        };
        let bytes = t.to_bytes().map_err(|e| err(format!("{e:?}")))?;
        tensors.push((t.name.clone(), dtype, t.shape.to_vec(), bytes.to_vec()));
    }
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| err(e.to_string()))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    // No metadata: the bytes depend only on the tensors (sorted by the format).
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, None, &tmp).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}

/// Loads a checkpoint written by [`save_checkpoint`]; every tensor must match exactly.
pub fn load_checkpoint<M: Module>(mut model: M, path: &Path) -> Result<M, Error> {
    let mut store = SafetensorsStore::from_file(path)
        .allow_partial(true)
        .validate(false);
    let result = model.load_from(&mut store).map_err(|e| Error::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let missing: Vec<String> = result.missing.iter().map(|(p, _)| p.clone()).collect();
    let wrong: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
    if !missing.is_empty() || !result.unused.is_empty() || !wrong.is_empty() {
        return Err(Error::Mismatch {
            path: path.to_path_buf(),
            missing,
            unused: result.unused.clone(),
            wrong,
        });
    }
    Ok(model)
}

/// Loads one of ktrack's own encoder checkpoints.
pub fn encoder_checkpoint(encoder: ResNet, path: &Path) -> Result<ResNet, Error> {
    load_checkpoint(encoder, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Arch;
    use crate::model::init::Seeder;
    use burn::prelude::*;
    use burn::store::BurnToPyTorchAdapter;

    type Entry = (String, Vec<usize>, Vec<u8>, safetensors::Dtype);

    /// Writes `encoder` as a torchvision-style safetensors state dict (with `fc.*` and
    /// `num_batches_tracked`), optionally dropping, renaming or reshaping one tensor.
    fn torchvision_file(encoder: &ResNet, path: &Path, edit: &dyn Fn(&mut Vec<Entry>)) {
        let mut tensors: Vec<Entry> = encoder
            .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
            .into_iter()
            .map(|t| {
                let name = t
                    .name
                    .replace("downsample.conv.", "downsample.0.")
                    .replace("downsample.bn.", "downsample.1.");
                let shape = t.shape.to_vec();
                (
                    name,
                    shape,
                    t.to_bytes().unwrap().to_vec(),
                    safetensors::Dtype::F32,
                )
            })
            .collect();
        let bn_prefixes: Vec<String> = tensors
            .iter()
            .filter_map(|(n, ..)| n.strip_suffix(".running_var").map(String::from))
            .collect();
        for p in bn_prefixes {
            tensors.push((
                format!("{p}.num_batches_tracked"),
                vec![],
                7i64.to_le_bytes().to_vec(),
                safetensors::Dtype::I64,
            ));
        }
        let feat = Arch::ResnetTiny.feature_dim();
        tensors.push((
            "fc.weight".into(),
            vec![1000, feat],
            vec![0u8; 1000 * feat * 4],
            safetensors::Dtype::F32,
        ));
        tensors.push((
            "fc.bias".into(),
            vec![1000],
            vec![0u8; 4000],
            safetensors::Dtype::F32,
        ));
        edit(&mut tensors);
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(n, s, b, d)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }

    #[test]
    fn torchvision_safetensors_load_exactly() {
        let device = Device::flex();
        let source = ResNet::new(Arch::ResnetTiny, &mut Seeder::new("t", 11), &device);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resnet.safetensors");
        torchvision_file(&source, &path, &|_| {});
        let (loaded, report) = torchvision(
            ResNet::new(Arch::ResnetTiny, &mut Seeder::new("t", 12), &device),
            &path,
        )
        .unwrap();
        assert!(report.ignored.iter().any(|k| k == "fc.weight"));
        let x = Tensor::<4>::random(
            [2, 3, 32, 32],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let a = source.valid().forward(x.clone()).into_data();
        let b = loaded.valid().forward(x).into_data();
        assert_eq!(
            a, b,
            "imported weights reproduce the source encoder exactly"
        );
    }

    #[test]
    fn missing_unused_and_misshapen_tensors_are_named() {
        let device = Device::flex();
        let source = ResNet::new(Arch::ResnetTiny, &mut Seeder::new("t", 1), &device);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        torchvision_file(&source, &path, &|t| {
            t.retain(|(n, ..)| n != "layer2.0.conv1.weight");
            t.push((
                "layer9.0.conv1.weight".into(),
                vec![2],
                vec![0; 8],
                safetensors::Dtype::F32,
            ));
            let conv1 = t.iter_mut().find(|(n, ..)| n == "conv1.weight").unwrap();
            conv1.1 = vec![16, 1, 7, 7];
            conv1.2.truncate(16 * 49 * 4);
        });
        let err = torchvision(
            ResNet::new(Arch::ResnetTiny, &mut Seeder::new("t", 2), &device),
            &path,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("missing tensors: layer2.0.conv1.weight"),
            "{err}"
        );
        assert!(
            err.contains("unexpected tensors: layer9.0.conv1.weight"),
            "{err}"
        );
        assert!(err.contains("conv1.weight"), "{err}");
    }
}
