//! The data loader: images by hash → decoded, oriented, resized, augmented, normalised batches,
//! prepared by worker threads ahead of the model.
//!
//! Determinism: the epoch's order and every sample's augmentation come from seeded streams keyed
//! by (run seed, epoch, position), never from thread scheduling, so a batch is the same however
//! many workers made it. Left knees are mirrored to the right orientation (configurable).
//! Grayscale is tiled to 3 channels so ImageNet-shaped encoders apply unchanged.

use std::f64::consts::PI;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::cache::{self, CacheDir, PixelCache};
use crate::data::{Side, image};
use crate::id::Hash;
use crate::rng;

/// Where image bytes come from (the runner reads them from the store), and where what is
/// derived from them is cached: preprocessed pixels (the runner's: `<home>/cache/pixels`) and
/// linear probes' frozen features (`<home>/cache/features`).
pub trait ImageSource: Send + Sync {
    fn bytes(&self, image: &Hash) -> Result<Vec<u8>, String>;

    /// The preprocessed-image cache, if the source has one; without one every run keeps its
    /// images' (quantised) pixels in memory.
    fn pixel_cache(&self) -> Option<&PixelCache> {
        None
    }

    /// The frozen-feature cache, if the source has one; without one every probe computes its
    /// features itself (the same values).
    fn feature_cache(&self) -> Option<&super::cache::FeatureCache> {
        None
    }
}

/// Image files held in memory by their hash (for images rendered in-process, e.g. in tests),
/// optionally with a pixel cache.
#[derive(Clone, Debug, Default)]
pub struct MemoryImages(
    pub std::collections::BTreeMap<Hash, Vec<u8>>,
    pub Option<PixelCache>,
);

impl ImageSource for MemoryImages {
    fn bytes(&self, image: &Hash) -> Result<Vec<u8>, String> {
        self.0
            .get(image)
            .cloned()
            .ok_or_else(|| format!("no image {image}"))
    }

    fn pixel_cache(&self) -> Option<&PixelCache> {
        self.1.as_ref()
    }
}

/// One labelled (or unlabelled) case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub sample_id: String,
    pub patient_id: String,
    pub side: Side,
    pub image: Hash,
    /// Class index (KL grade, or 0/1); 0 for unlabelled data.
    pub label: u8,
}

/// Intensity normalisation per image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalize {
    /// Subtract the image's mean, divide by its standard deviation.
    Zscore,
    /// ImageNet's grayscale statistics (mean 0.449, sd 0.226) on [0, 1] intensities.
    Imagenet,
    /// Leave intensities in [0, 1].
    None,
}

/// Augmentations (training only). All off means the probe can cache features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    pub enabled: bool,
    /// Smallest crop side, as a fraction of the image (random resized crop).
    pub crop_min: f64,
    /// Largest rotation in degrees (either way).
    pub rotation_deg: f64,
    /// Probability of a horizontal flip (0 by default: it swaps medial and lateral).
    pub hflip: f64,
    /// Largest brightness shift (in image standard deviations) and contrast change (factor).
    pub brightness: f64,
    pub contrast: f64,
    /// Gaussian blur sd range in pixels (0 = none) and noise sd (fraction of the range).
    pub blur_max: f64,
    pub noise: f64,
}

impl Default for Augment {
    fn default() -> Augment {
        Augment {
            enabled: true,
            crop_min: 0.85,
            rotation_deg: 7.0,
            hflip: 0.0,
            brightness: 0.1,
            contrast: 0.1,
            blur_max: 0.0,
            noise: 0.0,
        }
    }
}

impl Augment {
    pub fn off() -> Augment {
        Augment {
            enabled: false,
            ..Augment::default()
        }
    }
}

/// How images become tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub image_size: u32,
    pub normalize: Normalize,
    /// Mirror left knees so all images share the right-knee orientation.
    pub flip_left: bool,
}

/// Decoded images resized to the input size and quantised to 16 bits: in memory, or as entries
/// of the source's pixel cache read when a batch needs them (then a run's memory does not grow
/// with its cohort). Left knees are mirrored when a sample is read.
pub struct BaseImages {
    size: usize,
    source: Arc<dyn ImageSource>,
    examples: Vec<(Hash, String)>,
    flip: Vec<bool>,
    pixels: Pixels,
}

enum Pixels {
    Memory(Vec<Vec<u16>>),
    Cached(Vec<PathBuf>),
}

impl BaseImages {
    /// Makes every example's pixels once (in parallel): from the cache when it holds them,
    /// otherwise decoded and resized (and written to the cache, when there is one).
    pub fn load(
        examples: &[Example],
        source: Arc<dyn ImageSource>,
        pre: &Preprocess,
        interrupt: &AtomicBool,
    ) -> Result<BaseImages, String> {
        let size = pre.image_size as usize;
        fn check<'e>(ex: &'e Example, interrupt: &AtomicBool) -> Result<&'e Example, String> {
            if interrupt.load(Ordering::Relaxed) {
                Err("interrupted".to_string())
            } else {
                Ok(ex)
            }
        }
        let pixels = match source.pixel_cache() {
            Some(cache) => Pixels::Cached(
                examples
                    .par_iter()
                    .map(|ex| {
                        let ex = check(ex, interrupt)?;
                        let path = cache.path(&PixelCache::key(&ex.image, size));
                        // A whole entry has the right length; its checksum is checked on reading.
                        let whole = std::fs::metadata(&path)
                            .is_ok_and(|m| m.len() == cache::entry_len(size));
                        if whole {
                            Ok(path)
                        } else {
                            fill(cache, source.as_ref(), &ex.image, &ex.sample_id, size)
                                .map(|(path, _)| path)
                        }
                    })
                    .collect::<Result<Vec<_>, String>>()?,
            ),
            None => Pixels::Memory(
                examples
                    .par_iter()
                    .map(|ex| {
                        make_pixels(
                            source.as_ref(),
                            &check(ex, interrupt)?.image,
                            &ex.sample_id,
                            size,
                        )
                    })
                    .collect::<Result<Vec<_>, String>>()?,
            ),
        };
        Ok(BaseImages {
            size,
            examples: examples
                .iter()
                .map(|e| (e.image, e.sample_id.clone()))
                .collect(),
            flip: examples
                .iter()
                .map(|e| pre.flip_left && e.side == Side::L)
                .collect(),
            source,
            pixels,
        })
    }

    pub fn len(&self) -> usize {
        self.flip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flip.is_empty()
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the pixels are read from the cache (rather than held in memory).
    pub fn cached(&self) -> bool {
        matches!(self.pixels, Pixels::Cached(_))
    }

    /// Sample `i`'s oriented pixels in [0, 1]. A cache entry that was removed or damaged since
    /// the run loaded is made again from the image.
    pub fn get(&self, i: usize) -> Result<Vec<f32>, String> {
        let size = self.size;
        let mut px = match &self.pixels {
            Pixels::Memory(all) => all[i].iter().map(|&v| cache::dequantise(v)).collect(),
            Pixels::Cached(paths) => {
                let read = PixelCache::read(&paths[i], size).map_err(|e| {
                    format!(
                        "could not read pixel cache entry `{}`: {e}",
                        paths[i].display()
                    )
                })?;
                let (image, sample) = &self.examples[i];
                let q = match (read, self.source.pixel_cache()) {
                    (Some(q), _) => q,
                    (None, Some(cache)) => {
                        fill(cache, self.source.as_ref(), image, sample, size)?.1
                    }
                    (None, None) => make_pixels(self.source.as_ref(), image, sample, size)?,
                };
                q.into_iter().map(cache::dequantise).collect::<Vec<f32>>()
            }
        };
        if self.flip[i] {
            for row in px.chunks_mut(size) {
                row.reverse();
            }
        }
        Ok(px)
    }
}

/// Makes an image's pixels and writes them to the cache: the entry's path and the pixels.
fn fill(
    cache: &PixelCache,
    source: &dyn ImageSource,
    image: &Hash,
    sample: &str,
    size: usize,
) -> Result<(PathBuf, Vec<u16>), String> {
    let px = make_pixels(source, image, sample, size)?;
    let path = cache
        .write(&PixelCache::key(image, size), size, &px)
        .map_err(|e| {
            format!(
                "could not write to the pixel cache `{}`: {e}",
                cache.dir().display()
            )
        })?;
    Ok((path, px))
}

/// Decodes one image and resizes it to `size` x `size`, quantised.
fn make_pixels(
    source: &dyn ImageSource,
    image: &Hash,
    sample: &str,
    size: usize,
) -> Result<Vec<u16>, String> {
    let bytes = source.bytes(image)?;
    let img = image::decode(&bytes).map_err(|e| format!("image {image} ({sample}): {e}"))?;
    Ok(cache::quantise(&resize(
        &img.pixels,
        img.width as usize,
        img.height as usize,
        size,
    )))
}

/// Resizes a `w` x `h` image to `size` x `size` (aspect not kept: knee crops are square) with
/// `fast_image_resize`'s bilinear convolution, which is antialiased: downscaling a 1024² crop
/// averages every source pixel under the filter instead of sampling four of them. Run without
/// SIMD, so the pixels are the same on every CPU, not only from run to run on one.
pub fn resize(src: &[f32], w: usize, h: usize, size: usize) -> Vec<f32> {
    use fast_image_resize::{self as fr, images::Image};
    if w == size && h == size {
        return src.to_vec();
    }
    let mut from = Image::new(w as u32, h as u32, fr::PixelType::F32);
    for (bytes, v) in from.buffer_mut().chunks_exact_mut(4).zip(src) {
        bytes.copy_from_slice(&v.to_ne_bytes());
    }
    let mut to = Image::new(size as u32, size as u32, fr::PixelType::F32);
    let mut resizer = fr::Resizer::new();
    // SAFETY: no CPU extension at all is always supported.
    unsafe { resizer.set_cpu_extensions(fr::CpuExtensions::None) };
    let options =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
    resizer
        .resize(&from, &mut to, &options)
        .expect("same pixel type, non-empty images");
    to.buffer()
        .chunks_exact(4)
        .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// One augmented view of an image (bilinear sampling through a random crop/rotation/flip).
pub fn augment(base: &[f32], size: usize, aug: &Augment, r: &mut rng::Rng) -> Vec<f32> {
    let crop = aug.crop_min + (1.0 - aug.crop_min) * rng::unit(r);
    let angle = (2.0 * rng::unit(r) - 1.0) * aug.rotation_deg * PI / 180.0;
    let max_shift = (1.0 - crop) / 2.0;
    let (cx, cy) = (
        0.5 + (2.0 * rng::unit(r) - 1.0) * max_shift,
        0.5 + (2.0 * rng::unit(r) - 1.0) * max_shift,
    );
    let flip = rng::unit(r) < aug.hflip;
    let contrast = 1.0 + (2.0 * rng::unit(r) - 1.0) * aug.contrast;
    let brightness = (2.0 * rng::unit(r) - 1.0) * aug.brightness;
    let blur = aug.blur_max * rng::unit(r);
    let (ca, sa) = (angle.cos(), angle.sin());
    let n = size as f64;
    let mut out = vec![0.0f32; size * size];
    for j in 0..size {
        for i in 0..size {
            // Output pixel → centred unit coordinates → crop, rotate → source pixel.
            let mut u = (i as f64 + 0.5) / n - 0.5;
            let v = (j as f64 + 0.5) / n - 0.5;
            if flip {
                u = -u;
            }
            let (ru, rv) = (ca * u - sa * v, sa * u + ca * v);
            let sx = (cx + ru * crop) * n - 0.5;
            let sy = (cy + rv * crop) * n - 0.5;
            out[j * size + i] = bilinear(base, size, sx, sy);
        }
    }
    let mut out = if blur > 0.05 {
        let f: Vec<f64> = out.iter().map(|&v| f64::from(v)).collect();
        crate::data::synth::knee::gaussian_blur(&f, size, blur)
            .into_iter()
            .map(|v| v as f32)
            .collect()
    } else {
        out
    };
    let mean = out.iter().map(|&v| f64::from(v)).sum::<f64>() / out.len() as f64;
    let sd = (out
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / out.len() as f64)
        .sqrt();
    for v in &mut out {
        let mut x = (f64::from(*v) - mean) * contrast + mean + brightness * sd;
        if aug.noise > 0.0 {
            x += aug.noise * rng::normal(r);
        }
        *v = x as f32;
    }
    out
}

fn bilinear(img: &[f32], n: usize, x: f64, y: f64) -> f32 {
    let max = (n - 1) as f64;
    let (x, y) = (x.clamp(0.0, max), y.clamp(0.0, max));
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(n - 1), (y0 + 1).min(n - 1));
    let (tx, ty) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
    let a = img[y0 * n + x0] * (1.0 - tx) + img[y0 * n + x1] * tx;
    let b = img[y1 * n + x0] * (1.0 - tx) + img[y1 * n + x1] * tx;
    a * (1.0 - ty) + b * ty
}

/// Normalises one image in place.
pub fn normalize(px: &mut [f32], how: Normalize) {
    match how {
        Normalize::None => {}
        Normalize::Imagenet => {
            for v in px.iter_mut() {
                *v = (*v - 0.449) / 0.226;
            }
        }
        Normalize::Zscore => {
            let n = px.len() as f64;
            let mean = px.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let sd = (px
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n)
                .sqrt()
                .max(1e-6);
            for v in px.iter_mut() {
                *v = ((f64::from(*v) - mean) / sd) as f32;
            }
        }
    }
}

/// A batch ready for the model: `[b, 3, s, s]` row-major pixels and labels.
pub struct Batch {
    pub index: usize,
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
    pub rows: Vec<usize>,
    pub size: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// The order of an epoch: a seeded shuffle (training) or the natural order (evaluation).
pub fn epoch_order(n: usize, seed: u64, epoch: usize, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut r = rng::stream("epoch-order", &[&(epoch as u64).to_le_bytes()], seed);
        rng::shuffle(&mut r, &mut order);
    }
    order
}

/// Prepares one sample: augmentation (if asked) from its own seeded stream (per epoch,
/// position and view), normalisation, tiling to three channels.
fn prepare(
    base: &[f32],
    size: usize,
    aug: Option<&Augment>,
    normalize_how: Normalize,
    key: (u64, usize, usize, usize),
) -> Vec<f32> {
    let mut px = match aug {
        Some(a) if a.enabled => {
            let (seed, epoch, pos, view) = key;
            let (e, p, v) = (
                (epoch as u64).to_le_bytes(),
                (pos as u64).to_le_bytes(),
                (view as u64).to_le_bytes(),
            );
            // View 0 keeps the stream of single-view passes.
            let parts: Vec<&[u8]> = if view == 0 {
                vec![&e, &p]
            } else {
                vec![&e, &p, &v]
            };
            let mut r = rng::stream("augment", &parts, seed);
            augment(base, size, a, &mut r)
        }
        _ => base.to_vec(),
    };
    normalize(&mut px, normalize_how);
    let mut out = Vec::with_capacity(px.len() * 3);
    for _ in 0..3 {
        out.extend_from_slice(&px);
    }
    out
}

/// Batches prepared on a worker thread (samples in parallel), `prefetch` ahead of the model.
/// A sample that cannot be read ends the pass with its error as the last item.
pub struct Loader {
    rx: Receiver<Result<Batch, String>>,
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

/// What one pass over a dataset needs.
#[derive(Clone)]
pub struct Pass {
    pub order: Vec<usize>,
    pub batch_size: usize,
    pub augment: Option<Augment>,
    pub normalize: Normalize,
    pub seed: u64,
    pub epoch: usize,
    /// Batches to skip (resuming inside an epoch).
    pub skip: usize,
    pub prefetch: usize,
    /// Drop a last batch smaller than this (BatchNorm cannot train on one sample).
    pub min_batch: usize,
    /// Augmented views per sample (2 for contrastive pretraining); pixels hold view 0 of every
    /// sample, then view 1, …
    pub views: usize,
}

impl Loader {
    pub fn spawn(images: Arc<BaseImages>, labels: Arc<Vec<u8>>, pass: Pass) -> Loader {
        let (tx, rx) = sync_channel(pass.prefetch.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stop_worker = stop.clone();
        let handle = std::thread::Builder::new()
            .name("ktrack-loader".into())
            .spawn(move || {
                let size = images.size();
                for (bi, chunk) in pass
                    .order
                    .chunks(pass.batch_size)
                    .enumerate()
                    .skip(pass.skip)
                {
                    if stop_worker.load(Ordering::Relaxed) || chunk.len() < pass.min_batch {
                        break;
                    }
                    let start = bi * pass.batch_size;
                    let jobs: Vec<(usize, usize, usize)> = (0..pass.views.max(1))
                        .flat_map(|v| chunk.iter().enumerate().map(move |(k, &row)| (v, k, row)))
                        .collect();
                    let per: Result<Vec<Vec<f32>>, String> = jobs
                        .par_iter()
                        .map(|&(v, k, row)| {
                            Ok(prepare(
                                &images.get(row)?,
                                size,
                                pass.augment.as_ref(),
                                pass.normalize,
                                (pass.seed, pass.epoch, start + k, v),
                            ))
                        })
                        .collect();
                    let failed = per.is_err();
                    let batch = per.map(|per| Batch {
                        index: bi,
                        pixels: per.concat(),
                        labels: chunk.iter().map(|&r| i64::from(labels[r])).collect(),
                        rows: chunk.to_vec(),
                        size,
                    });
                    if tx.send(batch).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("spawning a thread only fails when the OS is out of resources");
        Loader {
            rx,
            handle: Some(handle),
            stop,
        }
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, String>;
    fn next(&mut self) -> Option<Result<Batch, String>> {
        self.rx.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Stop the worker; draining wakes a sender blocked on a full channel, and the
        // channel closes when the worker returns.
        self.stop.store(true, Ordering::Relaxed);
        while self.rx.recv().is_ok() {}
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downscaling_is_antialiased_and_keeps_the_range() {
        // A one-pixel checkerboard: sampling would alias it into stripes of 0 and 1; an
        // antialiased 4x downscale averages it to grey.
        let n = 64;
        let board: Vec<f32> = (0..n * n).map(|i| ((i / n + i % n) % 2) as f32).collect();
        let small = resize(&board, n, n, 16);
        assert_eq!(small.len(), 16 * 16);
        for v in &small {
            assert!((v - 0.5).abs() < 0.05, "{v}");
        }
        // A constant stays constant, a ramp stays in [0, 1] and increasing.
        let flat = resize(&vec![0.25; 100 * 80], 100, 80, 32);
        assert!(flat.iter().all(|v| (v - 0.25).abs() < 1e-6));
        let ramp: Vec<f32> = (0..n * n)
            .map(|i| (i % n) as f32 / (n - 1) as f32)
            .collect();
        let r = resize(&ramp, n, n, 24);
        assert!(r.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(r[..24].windows(2).all(|w| w[0] <= w[1]));
        // Same size: the image itself; repeated: the same pixels.
        assert_eq!(resize(&ramp, n, n, n), ramp);
        assert_eq!(resize(&ramp, n, n, 24), r);
        // Upscaling works too.
        assert_eq!(resize(&ramp, n, n, 100).len(), 100 * 100);
    }

    struct Synthetic;
    impl ImageSource for Synthetic {
        fn bytes(&self, image: &Hash) -> Result<Vec<u8>, String> {
            let v = image.as_bytes()[0] as u16;
            Ok(image::encode_png16(
                8,
                8,
                &(0..64).map(|i| i * 500 + v).collect::<Vec<u16>>(),
            ))
        }
    }

    fn examples(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| Example {
                sample_id: format!("s{i}"),
                patient_id: format!("p{i}"),
                side: if i % 2 == 0 { Side::L } else { Side::R },
                image: Hash::of(&[i as u8]),
                label: (i % 5) as u8,
            })
            .collect()
    }

    fn collect(
        images: &Arc<BaseImages>,
        labels: &Arc<Vec<u8>>,
        skip: usize,
    ) -> Vec<(usize, Vec<f32>, Vec<i64>)> {
        let pass = Pass {
            order: epoch_order(10, 5, 1, true),
            batch_size: 4,
            augment: Some(Augment::default()),
            normalize: Normalize::Zscore,
            seed: 5,
            epoch: 1,
            skip,
            prefetch: 2,
            min_batch: 1,
            views: 1,
        };
        Loader::spawn(images.clone(), labels.clone(), pass)
            .map(|b| b.unwrap())
            .map(|b| (b.index, b.pixels, b.labels))
            .collect()
    }

    #[test]
    fn batches_are_deterministic_and_resumable() {
        let ex = examples(10);
        let pre = Preprocess {
            image_size: 16,
            normalize: Normalize::Zscore,
            flip_left: true,
        };
        let images = Arc::new(
            BaseImages::load(&ex, Arc::new(Synthetic), &pre, &AtomicBool::new(false)).unwrap(),
        );
        let labels = Arc::new(ex.iter().map(|e| e.label).collect::<Vec<_>>());
        let a = collect(&images, &labels, 0);
        let b = collect(&images, &labels, 0);
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].1.len(), 4 * 3 * 16 * 16);
        // Skipping the first batch yields exactly the remaining ones.
        assert_eq!(collect(&images, &labels, 1), a[1..].to_vec());
        // Left knees are mirrored.
        let (l, r) = (images.get(0).unwrap(), images.get(1).unwrap());
        assert!(l[0] > l[15] && r[0] < r[15]);
    }

    /// A source that counts how often it is asked for an image's bytes.
    struct Counting(MemoryImages, std::sync::atomic::AtomicUsize);
    impl ImageSource for Counting {
        fn bytes(&self, image: &Hash) -> Result<Vec<u8>, String> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.bytes(image)
        }
        fn pixel_cache(&self) -> Option<&PixelCache> {
            self.0.pixel_cache()
        }
    }

    #[test]
    fn the_pixel_cache_gives_the_uncached_pixels_and_batches() {
        let ex = examples(10);
        let files: std::collections::BTreeMap<Hash, Vec<u8>> = ex
            .iter()
            .map(|e| (e.image, Synthetic.bytes(&e.image).unwrap()))
            .collect();
        let pre = Preprocess {
            image_size: 6,
            normalize: Normalize::Zscore,
            flip_left: true,
        };
        let no = AtomicBool::new(false);
        let plain = Arc::new(
            BaseImages::load(&ex, Arc::new(MemoryImages(files.clone(), None)), &pre, &no).unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let cache = PixelCache::at(dir.path().join("pixels"));
        let source = Arc::new(Counting(
            MemoryImages(files, Some(cache.clone())),
            Default::default(),
        ));
        let cached = Arc::new(BaseImages::load(&ex, source.clone(), &pre, &no).unwrap());
        assert!(cached.cached() && !plain.cached());
        assert_eq!(source.1.load(Ordering::Relaxed), 10);
        for i in 0..10 {
            assert_eq!(cached.get(i).unwrap(), plain.get(i).unwrap(), "image {i}");
        }
        let labels = Arc::new(ex.iter().map(|e| e.label).collect::<Vec<_>>());
        assert_eq!(collect(&cached, &labels, 0), collect(&plain, &labels, 0));
        // A second run decodes nothing; left and right knees of one image share an entry.
        let again = BaseImages::load(&ex, source.clone(), &pre, &no).unwrap();
        assert_eq!(source.1.load(Ordering::Relaxed), 10);
        assert_eq!(again.get(3).unwrap(), plain.get(3).unwrap());
        // A damaged entry is made again when read, and when the next run loads.
        let entry = cache.path(&PixelCache::key(&ex[4].image, 6));
        std::fs::write(&entry, b"garbage").unwrap();
        assert_eq!(again.get(4).unwrap(), plain.get(4).unwrap());
        assert_eq!(source.1.load(Ordering::Relaxed), 11);
        std::fs::remove_file(&entry).unwrap();
        BaseImages::load(&ex, source.clone(), &pre, &no).unwrap();
        assert_eq!(source.1.load(Ordering::Relaxed), 12);
        assert!(PixelCache::read(&entry, 6).unwrap().is_some());
        // Another size is another entry.
        let bigger = Preprocess {
            image_size: 8,
            ..pre
        };
        BaseImages::load(&ex, source.clone(), &bigger, &no).unwrap();
        assert_eq!(source.1.load(Ordering::Relaxed), 22);
    }

    #[test]
    fn an_unreadable_image_ends_the_pass_with_its_error() {
        let ex = examples(4);
        let dir = tempfile::tempdir().unwrap();
        let files = ex
            .iter()
            .map(|e| (e.image, Synthetic.bytes(&e.image).unwrap()))
            .collect();
        let cache = PixelCache::at(dir.path());
        let source = Arc::new(MemoryImages(files, Some(cache.clone())));
        let pre = Preprocess {
            image_size: 4,
            normalize: Normalize::None,
            flip_left: false,
        };
        let images =
            Arc::new(BaseImages::load(&ex, source, &pre, &AtomicBool::new(false)).unwrap());
        // The entry is damaged and its image is gone from the source.
        std::fs::write(cache.path(&PixelCache::key(&ex[2].image, 4)), b"x").unwrap();
        let broken = Arc::new(BaseImages {
            source: Arc::new(MemoryImages::default()),
            ..Arc::into_inner(images).unwrap()
        });
        let pass = Pass {
            order: (0..4).collect(),
            batch_size: 1,
            augment: None,
            normalize: Normalize::None,
            seed: 1,
            epoch: 0,
            skip: 0,
            prefetch: 1,
            min_batch: 1,
            views: 1,
        };
        let items: Vec<_> = Loader::spawn(broken, Arc::new(vec![0; 4]), pass).collect();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_ok());
        let err = items[2]
            .as_ref()
            .err()
            .expect("the third item is the error");
        assert!(err.contains("no image"), "{err}");
    }

    #[test]
    fn zscore_normalises() {
        let mut px = vec![1.0, 2.0, 3.0, 4.0];
        normalize(&mut px, Normalize::Zscore);
        let mean: f32 = px.iter().sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6);
    }
}
