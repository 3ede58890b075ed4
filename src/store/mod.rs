//! The content-addressed object store: immutable blobs named by their blake3 hash.
//!
//! Layout under the store root: `objects/ab/cdef…` (the hex hash split after two characters)
//! and `tmp/` (staging on the same filesystem). Invariants: an object is written once and never
//! changed (mode 0400); writes go to a temp file, are made durable (fsync or one `syncfs` for a
//! [`Batch`]), then renamed into place and the directory is fsynced, so a reader never sees a
//! partial object; putting an object that exists is a no-op. The store never talks to the index.

mod batch;

pub use batch::{Batch, syncfs};

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::id::Hash;

/// A staging file older than this belongs to no running import, wherever it runs.
pub const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The host part of staging file names (no `-`, which separates the name's fields).
fn temp_host() -> String {
    crate::env::hostname().replace('-', "_")
}

/// Files at least this large are hashed with blake3's mmap + rayon and never read whole.
pub const LARGE_FILE: u64 = 4 << 20;

/// An error of the store, naming the path involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not {action} `{path}`")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("object {hash:#} is missing from the store (`{path}`)")]
    Missing { hash: Hash, path: PathBuf },
    #[error("object {expected:#} is corrupt: its content hashes to {actual:#} (`{path}`)")]
    HashMismatch {
        path: PathBuf,
        expected: Hash,
        actual: Hash,
    },
}

impl Error {
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Put {
    pub hash: Hash,
    pub size: u64,
    /// False when the object was already in the store and nothing was written.
    pub new: bool,
}

/// The state of one object, as found by [`Store::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Ok,
    Missing,
    Corrupt { actual: Hash },
}

/// The object store rooted at a directory (normally `$KTRACK_HOME`).
#[derive(Clone, Debug)]
pub struct Store {
    objects: PathBuf,
    tmp: PathBuf,
    /// The network filesystem the store is on, if any: there, another node's new object can
    /// stay hidden for a few seconds (negative lookup caching), so a missing object is looked
    /// for again briefly before it is reported.
    network: Option<&'static str>,
}

/// How long a missing object is looked for again on a network filesystem (doubling waits).
const NETWORK_RETRIES_MS: [u64; 6] = [50, 100, 200, 400, 800, 1600];

impl Store {
    /// Opens (creating if needed, mode 0700) the store under `home`.
    pub fn open(home: &Path) -> Result<Store> {
        let home = &std::path::absolute(home).map_err(Error::io("resolve", home))?;
        let objects = home.join("objects");
        let tmp = home.join("tmp");
        for dir in [home, objects.as_path(), tmp.as_path()] {
            create_private_dir(dir)?;
        }
        let network = crate::fault::network_filesystem(&objects);
        Ok(Store {
            objects,
            tmp,
            network,
        })
    }

    /// Runs `attempt` again while it reports the object missing, on a network filesystem only.
    fn patiently<T>(&self, mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
        let mut waits = NETWORK_RETRIES_MS.iter();
        loop {
            match attempt() {
                Err(Error::Missing { .. }) if self.network.is_some() => match waits.next() {
                    Some(ms) => std::thread::sleep(std::time::Duration::from_millis(*ms)),
                    None => return attempt(),
                },
                other => return other,
            }
        }
    }

    /// Where an object lives (whether or not it exists).
    pub fn path_of(&self, hash: &Hash) -> PathBuf {
        let hex = hash.hex();
        self.objects.join(&hex[..2]).join(&hex[2..])
    }

    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    pub fn has(&self, hash: &Hash) -> bool {
        self.path_of(hash).is_file()
    }

    /// True if the object exists; its modification time is then set to now, so that a `gc`
    /// running meanwhile sees it as young and keeps it for the writer that is about to refer
    /// to it.
    pub(crate) fn reuse(&self, hash: &Hash) -> bool {
        let path = self.path_of(hash);
        if !path.is_file() {
            return false;
        }
        if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) {
            let now = libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            };
            // SAFETY: a valid NUL-terminated path and two timespecs that outlive the call.
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [now, now].as_ptr(), 0) };
        }
        true
    }

    /// Deletes an unreferenced object unless it was written or reused within `min_age` of
    /// `now` (a writer may be about to refer to it). Returns whether it was deleted.
    pub fn remove_if_older(
        &self,
        hash: &Hash,
        min_age: std::time::Duration,
        now: std::time::SystemTime,
    ) -> Result<bool> {
        let path = self.path_of(hash);
        let young = fs::metadata(&path)
            .ok()
            .and_then(|m| m.modified().ok())
            .is_some_and(|m| now.duration_since(m).unwrap_or_default() < min_age);
        if young {
            return Ok(false);
        }
        self.remove(hash)?;
        Ok(true)
    }

    /// True when the store holds at least one object (a quick look, no full listing).
    pub fn has_any(&self) -> bool {
        let Ok(shards) = fs::read_dir(&self.objects) else {
            return false;
        };
        shards.flatten().any(|shard| {
            shard.file_name().len() == 2
                && fs::read_dir(shard.path()).is_ok_and(|mut d| d.next().is_some())
        })
    }

    /// Removes staging files that no running process owns: those of a process of this host
    /// that is gone, and any older than [`STALE_TEMP`] (a process elsewhere sharing the home).
    /// Returns how many were removed. Called by imports and `gc`; `now` comes from the clock.
    pub fn clean_stale_temps(&self, now: std::time::SystemTime) -> Result<usize> {
        let host = temp_host();
        let mut removed = 0;
        for entry in fs::read_dir(&self.tmp).map_err(Error::io("list", &self.tmp))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(rest) = name.strip_prefix("put-") else {
                continue;
            };
            // `put-HOST-PID-N` (older files: `put-PID-N`, written on this host).
            let mut parts = rest.rsplitn(3, '-');
            let (_n, pid, owner) = (parts.next(), parts.next(), parts.next());
            let pid = pid.and_then(|p| p.parse::<i32>().ok());
            let here = owner.is_none_or(|o| o == host);
            let dead = here
                && pid.is_some_and(|p| {
                    p as u32 != std::process::id()
                        // SAFETY: signal 0 only checks that the process exists.
                        && unsafe { libc::kill(p, 0) } != 0
                        && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
                });
            let old = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > STALE_TEMP);
            if (dead || old) && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Starts a batch of puts that become durable and visible together on [`Batch::commit`].
    pub fn batch(&self) -> Batch<'_> {
        Batch::new(self)
    }

    /// Puts one file, streaming it (large files are hashed with mmap + rayon).
    pub fn put_file(&self, path: &Path) -> Result<Put> {
        let batch = self.batch();
        let put = batch.put_file(path)?;
        batch.commit()?;
        Ok(put)
    }

    /// Puts a byte string.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Put> {
        let batch = self.batch();
        let put = batch.put_bytes(bytes)?;
        batch.commit()?;
        Ok(put)
    }

    /// Puts whatever a reader yields, hashing while it streams into a temp file.
    pub fn put_reader(&self, reader: &mut dyn Read) -> Result<Put> {
        let batch = self.batch();
        let put = batch.put_reader(reader)?;
        batch.commit()?;
        Ok(put)
    }

    /// Opens an object for reading.
    pub fn open_object(&self, hash: &Hash) -> Result<File> {
        self.patiently(|| self.open_once(hash))
    }

    fn open_once(&self, hash: &Hash) -> Result<File> {
        let path = self.path_of(hash);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::Missing { hash: *hash, path }
            } else {
                Error::Io {
                    action: "open object",
                    path,
                    source: e,
                }
            }
        })
    }

    /// Reads a whole object into memory (for small objects: records, manifests, images).
    pub fn read(&self, hash: &Hash) -> Result<Vec<u8>> {
        let mut file = self.open_object(hash)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(Error::io("read object", self.path_of(hash)))?;
        Ok(bytes)
    }

    /// Re-hashes one object.
    pub fn check(&self, hash: &Hash) -> Result<Health> {
        let path = self.path_of(hash);
        let hashed = self.patiently(|| match hash_file(&path) {
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Err(Error::Missing {
                    hash: *hash,
                    path: path.clone(),
                })
            }
            other => other,
        });
        match hashed {
            Ok((actual, _)) if actual == *hash => Ok(Health::Ok),
            Ok((actual, _)) => Ok(Health::Corrupt { actual }),
            Err(Error::Missing { .. }) => Ok(Health::Missing),
            Err(e) => Err(e),
        }
    }

    /// Every object in the store, sorted. Names that are not hashes (stray files) are skipped.
    pub fn list(&self) -> Result<Vec<Hash>> {
        let shards = fs::read_dir(&self.objects).map_err(Error::io("list", &self.objects))?;
        let mut dirs = Vec::new();
        for entry in shards {
            let entry = entry.map_err(Error::io("list", &self.objects))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.len() == 2 && entry.path().is_dir() {
                dirs.push((name.to_string(), entry.path()));
            }
        }
        let mut all: Vec<Hash> = dirs
            .par_iter()
            .map(|(prefix, dir)| -> Result<Vec<Hash>> {
                let mut out = Vec::new();
                for entry in fs::read_dir(dir).map_err(Error::io("list", dir))? {
                    let entry = entry.map_err(Error::io("list", dir))?;
                    let hex = format!("{prefix}{}", entry.file_name().to_string_lossy());
                    if let Ok(hash) = hex.parse::<Hash>() {
                        out.push(hash);
                    }
                }
                Ok(out)
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        all.sort();
        Ok(all)
    }

    /// Size in bytes of an object.
    pub fn size(&self, hash: &Hash) -> Result<u64> {
        let path = self.path_of(hash);
        fs::metadata(&path)
            .map(|m| m.len())
            .map_err(Error::io("stat object", path))
    }

    /// Deletes an object (garbage collection only). Missing objects are not an error.
    pub fn remove(&self, hash: &Hash) -> Result<()> {
        let path = self.path_of(hash);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io {
                action: "remove object",
                path,
                source: e,
            }),
        }
    }
}

/// Hashes a file: small ones with one read, large ones with mmap + rayon.
pub fn hash_file(path: &Path) -> Result<(Hash, u64)> {
    let meta = fs::metadata(path).map_err(Error::io("read", path))?;
    let mut hasher = blake3::Hasher::new();
    if meta.len() >= LARGE_FILE {
        hasher
            .update_mmap_rayon(path)
            .map_err(Error::io("hash", path))?;
    } else {
        let bytes = fs::read(path).map_err(Error::io("read", path))?;
        hasher.update(&bytes);
    }
    Ok((hasher.finalize().into(), meta.len()))
}

pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(Error::Io {
            action: "create directory",
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

/// Writes `bytes` to a new temp file in `dir`, returning its path (not yet durable).
pub(crate) fn write_temp(dir: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let (mut file, path) = new_temp(dir)?;
    file.write_all(bytes).map_err(Error::io("write", &path))?;
    Ok(path)
}

pub(crate) fn new_temp(dir: &Path) -> Result<(File, PathBuf)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("put-{}-{}-{n}", temp_host(), std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::Io {
                    action: "create temp file in",
                    path: dir.to_path_buf(),
                    source: e,
                });
            }
        }
    }
}

pub(crate) fn make_read_only(path: &Path) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o400))
        .map_err(Error::io("set permissions of", path))
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_a_network_filesystem_a_missing_object_is_looked_for_again() {
        let dir = tempfile::tempdir().unwrap();
        let local = Store::open(dir.path()).unwrap();
        let hash = Hash::of(b"late");
        // Locally, missing is missing at once.
        assert!(matches!(local.read(&hash), Err(Error::Missing { .. })));
        // On a network filesystem, an object another node is publishing shows up.
        let shared = Store {
            network: Some("NFS"),
            ..local.clone()
        };
        let writer = {
            let store = local.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(300));
                store.put_bytes(b"late").unwrap();
            })
        };
        assert_eq!(shared.read(&hash).unwrap(), b"late");
        writer.join().unwrap();
        assert_eq!(shared.check(&Hash::of(b"never")).unwrap(), Health::Missing);
    }

    #[test]
    fn put_is_idempotent_and_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.put_bytes(b"femur").unwrap();
        assert!(a.new);
        let b = store.put_bytes(b"femur").unwrap();
        assert!(!b.new);
        assert_eq!(a.hash, Hash::of(b"femur"));
        assert_eq!(store.read(&a.hash).unwrap(), b"femur");
        let mode = fs::metadata(store.path_of(&a.hash))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        assert_eq!(store.list().unwrap(), vec![a.hash]);
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn large_files_stream_and_hash_like_small_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("home")).unwrap();
        let big = dir.path().join("big.bin");
        let bytes: Vec<u8> = (0..(LARGE_FILE as usize + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        fs::write(&big, &bytes).unwrap();
        let put = store.put_file(&big).unwrap();
        assert_eq!(put.hash, Hash::of(&bytes));
        assert_eq!(put.size, bytes.len() as u64);
        assert_eq!(store.check(&put.hash).unwrap(), Health::Ok);
        let mut reader: &[u8] = &bytes;
        assert_eq!(store.put_reader(&mut reader).unwrap().hash, put.hash);
    }

    #[test]
    fn check_finds_corrupt_and_missing_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let put = store.put_bytes(b"tibia").unwrap();
        let path = store.path_of(&put.hash);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, b"tibiA").unwrap();
        assert_eq!(
            store.check(&put.hash).unwrap(),
            Health::Corrupt {
                actual: Hash::of(b"tibiA")
            }
        );
        store.remove(&put.hash).unwrap();
        assert_eq!(store.check(&put.hash).unwrap(), Health::Missing);
        assert!(matches!(store.read(&put.hash), Err(Error::Missing { .. })));
    }

    #[test]
    fn stale_staging_files_are_cleaned_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let tmp = store.tmp_dir();
        let host = temp_host();
        fs::write(tmp.join(format!("put-{host}-{dead}-0")), b"x").unwrap();
        fs::write(tmp.join(format!("put-{dead}-1")), b"x").unwrap();
        let mine = tmp.join(format!("put-{host}-{}-2", std::process::id()));
        fs::write(&mine, b"x").unwrap();
        let elsewhere = tmp.join("put-otherhost-1-3");
        fs::write(&elsewhere, b"x").unwrap();
        assert_eq!(store.clean_stale_temps(std::time::UNIX_EPOCH).unwrap(), 2);
        assert!(mine.exists() && elsewhere.exists());
        assert!(!store.has_any());
        store.put_bytes(b"meniscus").unwrap();
        assert!(store.has_any());
    }

    #[test]
    fn a_reused_object_is_young_again_for_gc() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let put = store.put_bytes(b"cartilage").unwrap();
        let path = store.path_of(&put.hash);
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::open(&path).unwrap().set_modified(old).unwrap();
        let hour = std::time::Duration::from_secs(3600);
        let later = old + 2 * hour;
        // Putting the same bytes again touches the file: it is young for a gc started before.
        assert!(!store.put_bytes(b"cartilage").unwrap().new);
        assert!(!store.remove_if_older(&put.hash, hour, later).unwrap());
        assert!(store.has(&put.hash));
        assert!(
            store
                .remove_if_older(&put.hash, std::time::Duration::ZERO, later)
                .unwrap()
        );
        assert!(!store.has(&put.hash));
    }

    #[test]
    fn a_dropped_batch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        {
            let batch = store.batch();
            batch.put_bytes(b"patella").unwrap();
        }
        assert!(store.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }
}
