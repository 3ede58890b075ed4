//! The preprocessed-image cache: each image decoded, resized and quantised to 16 bits once per
//! study, in one file per (image, preprocessing), shared by every run (and every process) that
//! asks for the same pixels. A run then reads a sample's file when its batch is prepared, so
//! its resident memory does not grow with the cohort.
//!
//! An entry is `<dir>/<key[..2]>/<key[2..]>`, key = blake3 of the image's hash and the
//! preprocessing that made the pixels (size, resize algorithm, bit depth). The file is a
//! 48-byte header (magic, format version, side, blake3 of the payload) and the pixels as
//! little-endian u16. It is written to a temporary file and renamed, so a kill leaves either
//! the whole entry or none; an entry whose header, length or checksum does not match is made
//! again. Mirroring left knees is applied on reading, so both sides share entries.
//!
//! The quantisation (round(v × 65535) of the resized [0, 1] intensity) is part of the
//! preprocessing on every path: the loader without a cache keeps the same u16 pixels in memory,
//! so a run reads identical pixels with or without one.
//!
//! The frozen-feature cache ([`FeatureCache`]) keeps a linear probe's encoder features of a
//! whole set, keyed by the encoder's weights, the set's (image, side) list and everything else
//! the values depend on; other probes of the same encoder read them. Its entries are a 56-byte
//! header (magic, format version, rows, width, blake3 of the payload) and little-endian f32,
//! written and checked the same way.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::id::Hash;

const MAGIC: &[u8; 4] = b"KTPX";
const FORMAT: u32 = 1;
const HEADER: usize = 48;
/// What made the pixels; a change to the resize or the quantisation changes every key.
const RESIZE: &str = "fast_image_resize-5 bilinear convolution, no SIMD; u16 = round(v*65535)";

/// A cache directory (normally `<home>/cache/pixels`).
#[derive(Clone, Debug)]
pub struct PixelCache {
    dir: PathBuf,
}

/// One image's pixels at one size, quantised.
pub fn quantise(px: &[f32]) -> Vec<u16> {
    px.iter()
        .map(|&v| (f64::from(v).clamp(0.0, 1.0) * 65535.0).round() as u16)
        .collect()
}

/// The length of a whole entry of `size` x `size` pixels.
pub fn entry_len(size: usize) -> u64 {
    (HEADER + size * size * 2) as u64
}

/// The [0, 1] intensity of a quantised pixel.
pub fn dequantise(v: u16) -> f32 {
    (f64::from(v) / 65535.0) as f32
}

impl PixelCache {
    pub fn at(dir: impl Into<PathBuf>) -> PixelCache {
        PixelCache { dir: dir.into() }
    }

    /// The key of an image's pixels at `size` x `size`.
    pub fn key(image: &Hash, size: usize) -> Hash {
        Hash::of_json(&serde_json::json!({
            "image": image.hex(),
            "size": size,
            "resize": RESIZE,
        }))
    }

    /// Reads an entry; `Ok(None)` when it is absent or not a whole, intact entry of `size`.
    pub fn read(path: &Path, size: usize) -> io::Result<Option<Vec<u16>>> {
        let Some(bytes) = read_file(path)? else {
            return Ok(None);
        };
        Ok(
            payload(&bytes, (MAGIC, FORMAT), &[size as u64], size * size * 2).map(|p| {
                p.chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .collect()
            }),
        )
    }

    /// Writes an entry atomically (a temporary file in the same directory, then a rename).
    /// A directory removed meanwhile (`gc --pixel-cache --apply` while runs write) is made
    /// again once.
    pub fn write(&self, key: &Hash, size: usize, px: &[u16]) -> io::Result<PathBuf> {
        let path = self.path(key);
        write_entry(&path, &entry_bytes(size, px))?;
        Ok(path)
    }
}

/// A cache directory of entries fanned out by key: `<dir>/<key[..2]>/<key[2..]>`.
pub trait CacheDir {
    fn dir(&self) -> &Path;

    /// Where an entry lives.
    fn path(&self, key: &Hash) -> PathBuf {
        let hex = key.hex();
        self.dir().join(&hex[..2]).join(&hex[2..])
    }

    /// How many entries the cache holds and their bytes (none when it does not exist).
    fn usage(&self) -> io::Result<(u64, u64)> {
        usage(self.dir())
    }

    /// Deletes the whole cache (runs that are reading it make the entries they need again).
    fn clear(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(self.dir()) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

impl CacheDir for PixelCache {
    fn dir(&self) -> &Path {
        &self.dir
    }
}

impl CacheDir for FeatureCache {
    fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Files and bytes under `dir` (none when it does not exist).
fn usage(dir: &Path) -> io::Result<(u64, u64)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let mut total = (0, 0);
    for e in entries {
        let e = e?;
        let meta = e.metadata()?;
        let (files, size) = if meta.is_dir() {
            usage(&e.path())?
        } else {
            (1, meta.len())
        };
        total = (total.0 + files, total.1 + size);
    }
    Ok(total)
}

/// Writes an entry atomically (a temporary file in the same directory, then a rename). A
/// directory removed meanwhile (`gc` of the cache while runs write) is made again once.
fn write_entry(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("entries live in a fan-out directory");
    let attempt = || -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.persist(path).map(drop).map_err(|e| e.error)
    };
    match attempt() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => attempt(),
        other => other,
    }
}

/// The frozen-feature cache (normally `<home>/cache/features`): a linear probe's encoder
/// features of one set of images, computed once and shared by every probe (of any task,
/// label fraction or seed, in any process) that asks for the same features.
///
/// An entry is keyed by everything the values depend on: the encoder's weights (their hash),
/// the set's images in order with their sides, the preprocessing, and how the features were
/// computed (batch size, device, threads, precision), so a probe reads exactly the floats it
/// would have computed itself and a run is bit-identical with or without the cache. The file
/// is a 56-byte header (magic, format version, rows, row length, blake3 of the payload) and the
/// values as little-endian f32, written atomically like a pixel entry.
#[derive(Clone, Debug)]
pub struct FeatureCache {
    dir: PathBuf,
}

const FEATURE_MAGIC: &[u8; 4] = b"KTFT";
const FEATURE_FORMAT: u32 = 1;

impl FeatureCache {
    pub fn at(dir: impl Into<PathBuf>) -> FeatureCache {
        FeatureCache { dir: dir.into() }
    }

    /// The key of an encoder's features of `images` (hash and side, in order); `how` is the
    /// rest of what the values depend on (preprocessing, batching, device).
    pub fn key(
        encoder: &Hash,
        images: &[(Hash, crate::data::Side)],
        how: &serde_json::Value,
    ) -> Hash {
        let mut set = blake3::Hasher::new();
        for (image, side) in images {
            set.update(image.as_bytes());
            set.update(&[u8::from(*side == crate::data::Side::L)]);
        }
        Hash::of_json(&serde_json::json!({
            "format": FEATURE_FORMAT,
            "encoder": encoder.hex(),
            "images": Hash::from(set.finalize()).hex(),
            "how": how,
        }))
    }

    /// Reads an entry: `Ok(None)` when it is absent or not a whole, intact entry of `rows` x
    /// `dim` values.
    pub fn read(&self, key: &Hash, rows: usize, dim: usize) -> io::Result<Option<Vec<f32>>> {
        let Some(bytes) = read_file(&self.path(key))? else {
            return Ok(None);
        };
        let shape = [rows as u64, dim as u64];
        let format = (FEATURE_MAGIC, FEATURE_FORMAT);
        Ok(payload(&bytes, format, &shape, rows * dim * 4).map(|p| {
            p.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        }))
    }

    /// Writes an entry of `values.len() / dim` rows atomically.
    pub fn write(&self, key: &Hash, dim: usize, values: &[f32]) -> io::Result<()> {
        let shape = [(values.len() / dim.max(1)) as u64, dim as u64];
        let values = values.iter().flat_map(|v| v.to_le_bytes());
        let bytes = encode((FEATURE_MAGIC, FEATURE_FORMAT), &shape, values);
        write_entry(&self.path(key), &bytes)
    }
}

/// An entry's bytes: magic, format version, its shape as u64s, blake3 of the payload, then
/// the payload.
fn encode(
    (magic, format): (&[u8; 4], u32),
    shape: &[u64],
    payload: impl Iterator<Item = u8>,
) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(&format.to_le_bytes());
    for d in shape {
        bytes.extend_from_slice(&d.to_le_bytes());
    }
    let sum_at = bytes.len();
    bytes.extend_from_slice(&[0; 32]);
    bytes.extend(payload);
    let sum = blake3::hash(&bytes[sum_at + 32..]);
    bytes[sum_at..sum_at + 32].copy_from_slice(sum.as_bytes());
    bytes
}

/// The payload of an entry written by [`encode`], if it is whole and intact: magic, format and
/// shape as expected, `len` bytes of payload, and their checksum.
fn payload<'a>(
    bytes: &'a [u8],
    (magic, format): (&[u8; 4], u32),
    shape: &[u64],
    len: usize,
) -> Option<&'a [u8]> {
    let header = 8 + 8 * shape.len() + 32;
    let sum_at = header - 32;
    let expected: Vec<u8> = magic
        .iter()
        .copied()
        .chain(format.to_le_bytes())
        .chain(shape.iter().flat_map(|d| d.to_le_bytes()))
        .collect();
    (bytes.len() == header + len
        && bytes[..sum_at] == expected[..]
        && bytes[sum_at..header] == *blake3::hash(&bytes[header..]).as_bytes())
    .then(|| &bytes[header..])
}

/// A file's bytes; `None` when it does not exist.
fn read_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// An entry's bytes: header (magic, format, size, blake3 of the payload), then the pixels.
fn entry_bytes(size: usize, px: &[u16]) -> Vec<u8> {
    let px = px.iter().flat_map(|v| v.to_le_bytes());
    encode((MAGIC, FORMAT), &[size as u64], px)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PixelCache::at(dir.path());
        let key = PixelCache::key(&Hash::of(b"image"), 4);
        assert_ne!(key, PixelCache::key(&Hash::of(b"image"), 8));
        let px: Vec<u16> = (0..16).map(|i| i * 4000).collect();
        let path = cache.write(&key, 4, &px).unwrap();
        assert_eq!(PixelCache::read(&path, 4).unwrap(), Some(px.clone()));
        // Wrong size, truncated, flipped bit, missing: not an entry.
        assert_eq!(PixelCache::read(&path, 8).unwrap(), None);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(PixelCache::read(&path, 4).unwrap(), None);
        let mut flipped = bytes.clone();
        flipped[HEADER + 3] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(PixelCache::read(&path, 4).unwrap(), None);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(PixelCache::read(&path, 4).unwrap(), None);
        assert_eq!(cache.usage().unwrap(), (0, 0));
        cache.write(&key, 4, &px).unwrap();
        assert_eq!(cache.usage().unwrap(), (1, entry_len(4)));
        // The whole cache removed (gc): the next write makes its directories again.
        cache.clear().unwrap();
        assert_eq!(cache.usage().unwrap(), (0, 0));
        assert_eq!(cache.write(&key, 4, &px).unwrap(), path);
        // No temporary file is left beside the entries.
        cache.write(&key, 4, &px).unwrap();
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn quantisation_is_exact_for_eight_and_sixteen_bit_sources() {
        for k in [0u16, 1, 255, 257, 32768, 65535] {
            assert_eq!(quantise(&[dequantise(k)]), vec![k]);
        }
        assert_eq!(quantise(&[-0.1, 1.2]), vec![0, 65535]);
    }

    #[test]
    fn feature_entries_round_trip_keys_separate_and_damage_is_detected() {
        use crate::data::Side;
        let dir = tempfile::tempdir().unwrap();
        let cache = FeatureCache::at(dir.path());
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        let how = serde_json::json!({"batch_size": 4});
        let key = FeatureCache::key(&Hash::of(b"enc"), &[(a, Side::R), (b, Side::L)], &how);
        // Another encoder, order, side or computation: another entry.
        for other in [
            FeatureCache::key(&Hash::of(b"enc2"), &[(a, Side::R), (b, Side::L)], &how),
            FeatureCache::key(&Hash::of(b"enc"), &[(b, Side::L), (a, Side::R)], &how),
            FeatureCache::key(&Hash::of(b"enc"), &[(a, Side::R), (b, Side::R)], &how),
            FeatureCache::key(
                &Hash::of(b"enc"),
                &[(a, Side::R), (b, Side::L)],
                &serde_json::json!({"batch_size": 8}),
            ),
        ] {
            assert_ne!(key, other);
        }
        let values: Vec<f32> = vec![0.5, -0.0, f32::MIN_POSITIVE / 2.0, 1e30, 3.25, -7.0];
        assert_eq!(cache.read(&key, 2, 3).unwrap(), None);
        cache.write(&key, 3, &values).unwrap();
        let back = cache.read(&key, 2, 3).unwrap().unwrap();
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        // Another shape, a truncated or flipped entry: none.
        assert_eq!(cache.read(&key, 3, 2).unwrap(), None);
        let path = cache.path(&key);
        let bytes = std::fs::read(&path).unwrap();
        let mut flipped = bytes.clone();
        flipped[56 + 5] ^= 1; // a value, past the 56-byte header
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(cache.read(&key, 2, 3).unwrap(), None);
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        assert_eq!(cache.read(&key, 2, 3).unwrap(), None);
        assert_eq!(cache.usage().unwrap().0, 1);
        cache.clear().unwrap();
        assert_eq!(cache.usage().unwrap(), (0, 0));
    }
}
