//! A batch of puts that become durable and visible together.
//!
//! Puts stage temp files (any thread may put; the batch is `Sync`); [`Batch::commit`] makes
//! them durable with one `syncfs` (or an fsync each for a few), renames them into place and
//! fsyncs the directories touched. Dropping a batch without committing deletes its temp files,
//! so an import that fails half-way leaves the store exactly as it was.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Error, LARGE_FILE, Put, Result, Store};
use crate::id::Hash;

/// Below this many staged files, each is fsynced on its own instead of one `syncfs`.
const FSYNC_EACH_MAX: usize = 16;

struct Staged {
    temp: PathBuf,
    hash: Hash,
}

/// Staged puts; see the module header.
pub struct Batch<'s> {
    store: &'s Store,
    staged: Mutex<Vec<Staged>>,
    committed: bool,
}

impl<'s> Batch<'s> {
    pub(super) fn new(store: &'s Store) -> Batch<'s> {
        Batch {
            store,
            staged: Mutex::new(Vec::new()),
            committed: false,
        }
    }

    /// Stages a byte string.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Put> {
        let hash = Hash::of(bytes);
        let size = bytes.len() as u64;
        if self.store.reuse(&hash) || self.is_staged(&hash) {
            return Ok(Put {
                hash,
                size,
                new: false,
            });
        }
        let temp = super::write_temp(&self.store.tmp, bytes)?;
        Ok(self.stage(temp, hash, size))
    }

    /// Stages a file. Large files are copied without being read into memory, then hashed with
    /// mmap + rayon from the staged copy (so the hash always matches what is stored).
    pub fn put_file(&self, path: &Path) -> Result<Put> {
        let meta = fs::metadata(path).map_err(Error::io("read", path))?;
        if meta.len() < LARGE_FILE {
            let bytes = fs::read(path).map_err(Error::io("read", path))?;
            return self.put_bytes(&bytes);
        }
        let mut source = File::open(path).map_err(Error::io("open", path))?;
        self.put_reader_large(&mut source, path)
    }

    /// Stages whatever a reader yields, hashing while it streams.
    pub fn put_reader(&self, reader: &mut dyn Read) -> Result<Put> {
        let (mut file, temp) = super::new_temp(&self.store.tmp)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = fs::remove_file(&temp);
                    return Err(Error::Io {
                        action: "read input for",
                        path: temp,
                        source: e,
                    });
                }
            };
            hasher.update(&buf[..n]);
            if let Err(e) = file.write_all(&buf[..n]) {
                let _ = fs::remove_file(&temp);
                return Err(Error::Io {
                    action: "write",
                    path: temp,
                    source: e,
                });
            }
            size += n as u64;
        }
        drop(file);
        self.finish_temp(temp, hasher.finalize().into(), size)
    }

    fn put_reader_large(&self, source: &mut File, path: &Path) -> Result<Put> {
        let (mut file, temp) = super::new_temp(&self.store.tmp)?;
        let copied = io::copy(source, &mut file);
        drop(file);
        let size = match copied {
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(Error::Io {
                    action: "copy",
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        };
        let mut hasher = blake3::Hasher::new();
        if let Err(e) = hasher.update_mmap_rayon(&temp) {
            let _ = fs::remove_file(&temp);
            return Err(Error::Io {
                action: "hash",
                path: temp,
                source: e,
            });
        }
        self.finish_temp(temp, hasher.finalize().into(), size)
    }

    fn finish_temp(&self, temp: PathBuf, hash: Hash, size: u64) -> Result<Put> {
        if self.store.reuse(&hash) || self.is_staged(&hash) {
            let _ = fs::remove_file(&temp);
            return Ok(Put {
                hash,
                size,
                new: false,
            });
        }
        Ok(self.stage(temp, hash, size))
    }

    fn is_staged(&self, hash: &Hash) -> bool {
        self.staged
            .lock()
            .expect("batch lock is never poisoned: no panics while held")
            .iter()
            .any(|s| s.hash == *hash)
    }

    fn stage(&self, temp: PathBuf, hash: Hash, size: u64) -> Put {
        let mut staged = self
            .staged
            .lock()
            .expect("batch lock is never poisoned: no panics while held");
        if staged.iter().any(|s| s.hash == hash) {
            // Another thread staged the same content meanwhile.
            let _ = fs::remove_file(&temp);
            return Put {
                hash,
                size,
                new: false,
            };
        }
        staged.push(Staged { temp, hash });
        Put {
            hash,
            size,
            new: true,
        }
    }

    /// The bytes of an object staged in this batch, or else of one in the store.
    pub fn read(&self, hash: &Hash) -> Result<Vec<u8>> {
        let temp = self
            .staged
            .lock()
            .expect("batch lock is never poisoned: no panics while held")
            .iter()
            .find(|s| s.hash == *hash)
            .map(|s| s.temp.clone());
        match temp {
            Some(t) => fs::read(&t).map_err(Error::io("read staged", &t)),
            None => self.store.read(hash),
        }
    }

    /// How many new objects are staged.
    pub fn len(&self) -> usize {
        self.staged
            .lock()
            .expect("batch lock is never poisoned")
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes every staged object durable and visible. Returns how many were new.
    pub fn commit(mut self) -> Result<usize> {
        let staged = std::mem::take(
            &mut *self
                .staged
                .lock()
                .expect("batch lock is never poisoned: no panics while held"),
        );
        self.committed = true;
        if staged.is_empty() {
            return Ok(0);
        }
        let result = self.publish(&staged);
        if result.is_err() {
            for s in &staged {
                let _ = fs::remove_file(&s.temp);
            }
        }
        result.map(|()| staged.len())
    }

    fn publish(&self, staged: &[Staged]) -> Result<()> {
        // 1. Durable content before any rename.
        if staged.len() <= FSYNC_EACH_MAX {
            for s in staged {
                File::open(&s.temp)
                    .and_then(|f| f.sync_all())
                    .map_err(Error::io("sync", &s.temp))?;
            }
        } else {
            syncfs(&self.store.tmp)?;
        }
        // 2. Rename into the shards.
        let mut touched = BTreeSet::new();
        let mut new_shard = false;
        for s in staged {
            let dest = self.store.path_of(&s.hash);
            let shard = dest.parent().expect("object paths have a shard directory");
            if !shard.is_dir() {
                match fs::DirBuilder::new().mode(0o700).create(shard) {
                    Ok(()) => new_shard = true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io("create directory", shard)(e)),
                }
            }
            super::make_read_only(&s.temp)?;
            fs::rename(&s.temp, &dest).map_err(Error::io("rename into", &dest))?;
            touched.insert(shard.to_path_buf());
        }
        // 3. Durable directory entries.
        for dir in &touched {
            super::fsync_dir(dir)?;
        }
        if new_shard {
            super::fsync_dir(&self.store.objects)?;
        }
        Ok(())
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Ok(staged) = self.staged.get_mut() {
            for s in staged.drain(..) {
                let _ = fs::remove_file(&s.temp);
            }
        }
    }
}

/// Flushes every dirty page of the filesystem holding `dir`.
pub fn syncfs(dir: &Path) -> Result<()> {
    let file = File::open(dir).map_err(Error::io("open", dir))?;
    // SAFETY: `syncfs` only reads the descriptor, which `file` keeps open for the call.
    let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::io("sync filesystem of", dir)(
            io::Error::last_os_error(),
        ))
    }
}
