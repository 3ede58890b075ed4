//! A generic, out-of-domain labelled image set: the embedded study's stand-in for ImageNet.
//!
//! Each image shows one object of one of [`CLASSES`] classes (eight shapes, four textured
//! patches) at a random place, size, rotation and contrast polarity, over clutter: a
//! brightness gradient, soft blobs, thin lines and two small, faint distractor objects of
//! other classes. A supervised encoder trained to name the object learns edges, corners,
//! curvature and texture, as an ImageNet encoder does, but nothing about knees. The images are
//! 16-bit grayscale like the knee crops, and the manifest has the knee schema's columns (one
//! image per "patient", right side, visit 0) plus `class`.

use std::path::Path;

use crate::rng::{self, Rng};

use super::knee::gaussian_blur;

/// The object classes, in class-number order.
pub const CLASSES: [&str; 12] = [
    "disc", "ring", "square", "triangle", "cross", "star", "bars", "crescent", "stripes",
    "checker", "dots", "target",
];

/// One simulated image of the generic set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub sample_id: String,
    pub class: u8,
    /// Seed of everything drawn on the image.
    pub seed: u64,
}

impl Object {
    pub fn file_name(&self) -> String {
        format!("images/{}.png", self.sample_id)
    }

    pub fn render(&self, size: u32) -> Vec<u16> {
        render(self.class, self.seed, size)
    }
}

/// The set's images: `count` objects, classes balanced (class = position mod the class count,
/// so any prefix is balanced too).
pub fn simulate(count: usize, seed: u64) -> Vec<Object> {
    (0..count)
        .map(|i| Object {
            sample_id: format!("G{:06}", i + 1),
            class: (i % CLASSES.len()) as u8,
            seed: rand::RngCore::next_u64(&mut rng::stream(
                "synth-generic",
                &[&(i as u64).to_le_bytes()],
                seed,
            )),
        })
        .collect()
}

/// Where and how an object is drawn, in image fractions.
struct Placement {
    cx: f64,
    cy: f64,
    radius: f64,
    angle: f64,
    /// Pattern frequency of the textured classes (cycles per radius).
    freq: f64,
}

impl Placement {
    fn draw(r: &mut Rng, radius: (f64, f64)) -> Placement {
        Placement {
            cx: 0.3 + 0.4 * rng::unit(r),
            cy: 0.3 + 0.4 * rng::unit(r),
            radius: radius.0 + (radius.1 - radius.0) * rng::unit(r),
            angle: rng::unit(r) * std::f64::consts::TAU,
            freq: 2.5 + 1.5 * rng::unit(r),
        }
    }

    /// Object-local coordinates (radius 1) of an image point.
    fn local(&self, x: f64, y: f64) -> (f64, f64) {
        let (dx, dy) = ((x - self.cx) / self.radius, (y - self.cy) / self.radius);
        let (s, c) = self.angle.sin_cos();
        (c * dx + s * dy, -s * dx + c * dy)
    }
}

fn smooth(d: f64, edge: f64) -> f64 {
    1.0 / (1.0 + (d / edge).exp())
}

/// Signed distance (negative inside) to a regular `n`-gon of circumradius 1.
fn polygon(u: f64, v: f64, n: f64) -> f64 {
    let sector = std::f64::consts::TAU / n;
    let a = v.atan2(u).rem_euclid(sector) - sector / 2.0;
    u.hypot(v) * a.cos() - (sector / 2.0).cos()
}

/// How much of the object covers local point (u, v), in [0, 1], edges `edge` wide.
fn coverage(class: u8, u: f64, v: f64, freq: f64, edge: f64) -> f64 {
    let d = u.hypot(v);
    let patch = || smooth(d - 1.0, edge);
    let wave = |t: f64| smooth(-(t * std::f64::consts::PI).sin(), edge * freq * 2.0);
    match class {
        0 => smooth(d - 1.0, edge),
        1 => smooth((d - 0.75).abs() - 0.2, edge),
        2 => smooth(u.abs().max(v.abs()) - 0.75, edge),
        3 => smooth(polygon(u, v, 3.0), edge),
        4 => smooth(u.abs().max(v.abs()) - 0.9, edge) * smooth(u.abs().min(v.abs()) - 0.25, edge),
        5 => {
            let a = v.atan2(u);
            let r = 0.55 + 0.4 * (5.0 * a).cos();
            smooth(d - r, edge)
        }
        6 => smooth((u.abs() - 0.5).abs() - 0.18, edge) * smooth(v.abs() - 0.9, edge),
        7 => smooth(d - 1.0, edge) * (1.0 - smooth((u - 0.45).hypot(v) - 0.8, edge)),
        8 => patch() * wave(u * freq),
        9 => {
            patch()
                * smooth(
                    -((u * freq * 1.5).sin() * (v * freq * 1.5).sin()),
                    edge * 4.0,
                )
        }
        10 => {
            let cell = |t: f64| (t * freq * 0.8).rem_euclid(1.0) - 0.5;
            patch() * smooth(cell(u).hypot(cell(v)) - 0.28, edge * 3.0)
        }
        _ => patch() * wave(d * freq),
    }
}

/// Renders one image: clutter, two faint distractors of other classes, the object, blur and
/// noise.
pub fn render(class: u8, seed: u64, size: u32) -> Vec<u16> {
    let n = size as usize;
    let mut r = rng::stream("synth-generic-image", &[], seed);
    let base = 0.35 + 0.3 * rng::unit(&mut r);
    let gradient = (0.15 * rng::normal(&mut r), 0.15 * rng::normal(&mut r));
    let blobs: Vec<(f64, f64, f64, f64)> = (0..5)
        .map(|_| {
            (
                rng::unit(&mut r),
                rng::unit(&mut r),
                0.08 + 0.2 * rng::unit(&mut r),
                0.2 * rng::normal(&mut r),
            )
        })
        .collect();
    let lines: Vec<(f64, f64, f64, f64)> = (0..3)
        .map(|_| {
            let a = rng::unit(&mut r) * std::f64::consts::PI;
            (
                a.cos(),
                a.sin(),
                rng::unit(&mut r),
                0.12 * rng::normal(&mut r),
            )
        })
        .collect();
    let classes = CLASSES.len() as u64;
    let distractors: Vec<(u8, Placement, f64)> = (0..2)
        .map(|_| {
            let other = ((u64::from(class) + 1 + rng::below(&mut r, classes - 1)) % classes) as u8;
            let p = Placement::draw(&mut r, (0.05, 0.09));
            (other, p, 0.15 * rng::normal(&mut r))
        })
        .collect();
    let object = Placement::draw(&mut r, (0.16, 0.3));
    let sign = if rng::unit(&mut r) < 0.5 { -1.0 } else { 1.0 };
    let contrast = sign * (0.2 + 0.2 * rng::unit(&mut r));
    let edge = 0.6 / (f64::from(size) * object.radius);
    let mut field = vec![0.0; n * n];
    for j in 0..n {
        for i in 0..n {
            let (x, y) = ((i as f64 + 0.5) / n as f64, (j as f64 + 0.5) / n as f64);
            let mut v = base + gradient.0 * (x - 0.5) + gradient.1 * (y - 0.5);
            for (bx, by, br, amp) in &blobs {
                v += amp * (-((x - bx).powi(2) + (y - by).powi(2)) / (2.0 * br * br)).exp();
            }
            for (c, s, off, amp) in &lines {
                let d = (c * (x - 0.5) + s * (y - 0.5) - (off - 0.5)).abs();
                v += amp * smooth(d - 0.004, 0.6 / f64::from(size));
            }
            for (k, p, amp) in &distractors {
                let (u, w) = p.local(x, y);
                v += amp * coverage(*k, u, w, p.freq, 0.6 / (f64::from(size) * p.radius));
            }
            let (u, w) = object.local(x, y);
            v += contrast * coverage(class, u, w, object.freq, edge);
            field[j * n + i] = v;
        }
    }
    let blurred = gaussian_blur(&field, n, 0.5);
    let noise = 0.02 + 0.02 * rng::unit(&mut r);
    blurred
        .into_iter()
        .map(|v| {
            let v = v + noise * rng::normal(&mut r);
            (v.clamp(0.0, 1.0) * 65535.0).round() as u16
        })
        .collect()
}

/// The set's manifest: the knee schema's columns (one image per patient, right side, visit
/// 0) and `class`; image paths relative to the image root.
pub fn write_manifest(objects: &[Object], manifest: &Path) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["sample_id", "patient_id", "side", "image_path", "class"])?;
    for o in objects {
        w.write_record([
            o.sample_id.as_str(),
            o.sample_id.as_str(),
            "R",
            &o.file_name(),
            &o.class.to_string(),
        ])?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    super::write_atomically(manifest, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_draws_an_object_and_images_are_reproducible() {
        let objects = simulate(24, 3);
        assert_eq!(objects, simulate(24, 3));
        assert_ne!(objects[0].seed, simulate(24, 4)[0].seed);
        let mut seeds: Vec<u64> = objects.iter().map(|o| o.seed).collect();
        seeds.sort_unstable();
        seeds.dedup();
        assert_eq!(seeds.len(), 24, "every image has its own stream");
        for class in 0..CLASSES.len() as u8 {
            assert_eq!(objects.iter().filter(|o| o.class == class).count(), 2);
            // Each object covers part of its square and leaves part of it bare.
            let grid: Vec<f64> = (0..40)
                .map(|k| -1.0 + (f64::from(k) + 0.5) / 20.0)
                .collect();
            let covered = grid
                .iter()
                .flat_map(|u| grid.iter().map(move |v| (*u, *v)))
                .filter(|(u, v)| coverage(class, *u, *v, 3.0, 0.02) > 0.5)
                .count() as f64
                / 1600.0;
            let name = CLASSES[class as usize];
            assert!((0.05..0.8).contains(&covered), "{name} covers {covered}");
        }
        let a = objects[5].render(32);
        assert_eq!(a, objects[5].render(32));
        assert_eq!(a.len(), 32 * 32);
        assert!(a.iter().max() > a.iter().min(), "not a flat image");
    }

    #[test]
    fn classes_differ_in_shape() {
        // The same placement and clutter with two classes: the pictures differ where the
        // objects do.
        let diff = |a: &[u16], b: &[u16]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
                .sum::<f64>()
                / a.len() as f64
        };
        let disc = render(0, 7, 48);
        let square = render(2, 7, 48);
        let changed = disc.iter().zip(&square).filter(|(a, b)| a != b).count();
        assert!(diff(&disc, &square) > 0.0);
        assert!(changed > 48 * 48 / 50, "only {changed} pixels differ");
    }
}
