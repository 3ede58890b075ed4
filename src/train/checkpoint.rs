//! Epoch checkpoints for resuming: model, optimizer and loop state written into a fresh
//! `ckpt-N/` folder, then published by atomically replacing the `current` pointer file. A kill
//! at any moment leaves either the previous checkpoint or the new one, never a mix.

use std::path::{Path, PathBuf};

use serde::{Serialize, de::DeserializeOwned};

use super::Error;

/// The checkpoint folder `current` points at, if any.
pub fn current(dir: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(dir.join("current")).ok()?;
    let path = dir.join(name.trim());
    path.join("state.json").is_file().then_some(path)
}

/// Writes a new checkpoint: `write_files` fills the new folder; `state` is saved last.
pub fn save<S: Serialize>(
    dir: &Path,
    state: &S,
    write_files: impl FnOnce(&Path) -> Result<(), Error>,
) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file("create", dir)(e.to_string()))?;
    let previous = current(dir);
    let seq = previous
        .as_ref()
        .and_then(|p| {
            p.file_name()?
                .to_str()?
                .strip_prefix("ckpt-")?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |n| n + 1);
    let name = format!("ckpt-{seq}");
    let folder = dir.join(&name);
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).map_err(|e| Error::file("create", &folder)(e.to_string()))?;
    write_files(&folder)?;
    let json = serde_json::to_vec_pretty(state).expect("checkpoint state serializes");
    write_atomic(&folder.join("state.json"), &json)?;
    write_atomic(&dir.join("current"), name.as_bytes())?;
    if let Some(prev) = previous {
        let _ = std::fs::remove_dir_all(prev);
    }
    Ok(folder)
}

/// Reads the state of the current checkpoint.
pub fn load_state<S: DeserializeOwned>(folder: &Path) -> Result<S, Error> {
    let path = folder.join("state.json");
    let bytes = std::fs::read(&path).map_err(|e| Error::file("read", &path)(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::file("parse", &path)(e.to_string()))
}

/// Writes a file through a temp name and a rename, flushing it first.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| Error::file("write", path)(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_replace_each_other() {
        let dir = tempfile::tempdir().unwrap();
        assert!(current(dir.path()).is_none());
        let a = save(dir.path(), &1u32, |f| {
            std::fs::write(f.join("m"), b"one").map_err(|e| Error::Data(e.to_string()))
        })
        .unwrap();
        let b = save(dir.path(), &2u32, |f| {
            std::fs::write(f.join("m"), b"two").map_err(|e| Error::Data(e.to_string()))
        })
        .unwrap();
        assert!(!a.exists());
        assert_eq!(current(dir.path()).unwrap(), b);
        assert_eq!(load_state::<u32>(&b).unwrap(), 2);
    }
}
