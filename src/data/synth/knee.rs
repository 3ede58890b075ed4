//! A radiograph-like AP knee crop rendered from a few anatomical parameters.
//!
//! Bones are smooth signed-distance shapes (so sub-pixel narrowing shows as partial volume):
//! femoral shaft, metaphysis and two condyles with an intercondylar notch; the tibial plateau
//! with its spines; a faint patella and fibular head. Severity drives medial (more) and lateral
//! joint-space narrowing, marginal osteophytes, subchondral sclerosis and deformity; a knee's
//! progression rate shows only as subtle spine lipping and subchondral texture. The scanner
//! "look" (contrast curve, blur, noise, resolution, field of view) is applied last.

use crate::rng::{self, Rng};

/// Everything about one knee at one visit that the picture depends on.
#[derive(Clone, Debug)]
pub struct KneeParams {
    /// Continuous disease severity on the KL scale (0..=4.5).
    pub severity: f64,
    /// Progression rate (KL units per year); drives the subtle baseline signs.
    pub rate: f64,
    /// Bone size factor (~1).
    pub scale: f64,
    /// Varus (+) / valgus (-) angle in degrees.
    pub alignment_deg: f64,
    /// Knee centre offset, in image fractions.
    pub shift: (f64, f64),
    /// Soft-tissue thickness (0..1); thicker means lower contrast.
    pub soft_tissue: f64,
    pub effusion: bool,
    pub hardware: bool,
    /// Left knees are mirrored so every image shows the same orientation of anatomy.
    pub mirror: bool,
    /// Per-knee randomness of osteophyte shapes and texture (stable across visits).
    pub knee_seed: u64,
}

/// How a scanner renders the anatomy.
#[derive(Clone, Debug)]
pub struct Look {
    /// Exponent of the contrast curve.
    pub gamma: f64,
    pub gain: f64,
    pub offset: f64,
    /// Gaussian noise sd (fraction of full scale).
    pub noise: f64,
    /// Blur sd in pixels of the output image.
    pub blur: f64,
    /// Render at this fraction of the output resolution, then upsample (softer detail).
    pub resolution: f64,
    /// Field of view: > 1 shows more around the knee (bones look smaller).
    pub zoom_out: f64,
}

/// Linear interpolation over grade knots 0..=4 (clamped), for severity-driven features.
fn by_grade(knots: [f64; 5], s: f64) -> f64 {
    let s = s.clamp(0.0, 4.0);
    let i = (s.floor() as usize).min(3);
    let t = s - i as f64;
    knots[i] * (1.0 - t) + knots[i + 1] * t
}

/// How strongly a knee shows the signs of fast progression (0..=1.6), from its rate.
pub fn progression_signs(rate: f64) -> f64 {
    (rate / 0.12).clamp(0.0, 1.6)
}

/// Medial joint-space narrowing as a fraction of normal width.
pub fn medial_narrowing(s: f64, alignment_deg: f64) -> f64 {
    (by_grade([0.0, 0.08, 0.2, 0.45, 0.8], s) + 0.015 * alignment_deg.max(0.0)).clamp(0.0, 0.9)
}

pub fn lateral_narrowing(s: f64, alignment_deg: f64) -> f64 {
    (by_grade([0.0, 0.02, 0.06, 0.14, 0.3], s) + 0.015 * (-alignment_deg).max(0.0)).clamp(0.0, 0.9)
}

/// Osteophyte size (fraction of the bone scale).
pub fn osteophyte_size(s: f64) -> f64 {
    by_grade([0.0, 0.012, 0.03, 0.05, 0.08], s)
}

/// Extra subchondral density.
pub fn sclerosis(s: f64) -> f64 {
    by_grade([0.0, 0.03, 0.08, 0.2, 0.38], s)
}

fn deformity(s: f64) -> f64 {
    by_grade([0.0, 0.0, 0.0, 0.25, 1.0], s)
}

fn smooth_inside(d: f64, edge: f64) -> f64 {
    // d < 0 inside; a logistic edge a fraction of a pixel wide.
    1.0 / (1.0 + (d / edge).exp())
}

/// Approximate signed distance to an axis-aligned ellipse.
fn ellipse(x: f64, y: f64, cx: f64, cy: f64, rx: f64, ry: f64) -> f64 {
    let q = ((x - cx) / rx).hypot((y - cy) / ry);
    (q - 1.0) * rx.min(ry)
}

struct Osteophyte {
    cx: f64,
    cy: f64,
    rx: f64,
    ry: f64,
}

/// A few oriented sinusoids: trabecular-like texture in about [-1, 1].
struct Texture {
    waves: Vec<(f64, f64, f64, f64)>,
}

impl Texture {
    fn new(r: &mut Rng, freq: f64) -> Texture {
        let waves = (0..5)
            .map(|_| {
                let a = rng::unit(r) * std::f64::consts::PI;
                let f = freq * (0.7 + 0.6 * rng::unit(r));
                (
                    a.cos() * f,
                    a.sin() * f,
                    rng::unit(r) * std::f64::consts::TAU,
                    0.5 + rng::unit(r),
                )
            })
            .collect();
        Texture { waves }
    }

    fn at(&self, x: f64, y: f64) -> f64 {
        let (mut v, mut w) = (0.0, 0.0);
        for (fx, fy, ph, amp) in &self.waves {
            v += amp * (fx * x + fy * y + ph).sin();
            w += amp;
        }
        v / w
    }
}

/// Renders a `size` x `size` 16-bit image.
pub fn render(p: &KneeParams, look: &Look, size: u32, noise_rng: &mut Rng) -> Vec<u16> {
    let work = ((f64::from(size) * look.resolution).round() as usize).max(16);
    let field = anatomy(p, look, work);
    let field = if work as u32 == size {
        field
    } else {
        resample(&field, work, size as usize)
    };
    let n = size as usize;
    let blurred = gaussian_blur(&field, n, look.blur);
    let mut out = Vec::with_capacity(n * n);
    for v in blurred {
        let contrast = look.gain * v.max(0.0).powf(look.gamma) + look.offset;
        let noisy = contrast + look.noise * (0.6 + 0.4 * contrast) * rng::normal(noise_rng);
        out.push((noisy.clamp(0.0, 1.0) * 65535.0).round() as u16);
    }
    out
}

/// Density field in [0, ~1.2] on a `n` x `n` grid (before the scanner look).
fn anatomy(p: &KneeParams, look: &Look, n: usize) -> Vec<f64> {
    let shape = Shape::new(p, look, n);
    let mut field = vec![0.0; n * n];
    for j in 0..n {
        for i in 0..n {
            let mut x = (i as f64 + 0.5) / n as f64;
            let y = (j as f64 + 0.5) / n as f64;
            if p.mirror {
                x = 1.0 - x;
            }
            field[j * n + i] = shape.density(x, y);
        }
    }
    field
}

/// One knee's bones, drawn for a grid of `n` pixels: what its parameters and shape draws fix.
struct Shape<'a> {
    p: &'a KneeParams,
    k: f64,
    cx: f64,
    y0: f64,
    jsw_m: f64,
    jsw_l: f64,
    scl: f64,
    def: f64,
    sign: f64,
    tilt: f64,
    osteophytes: Vec<Osteophyte>,
    spine_lip: f64,
    trabecular: Texture,
    coarse: Texture,
    edge: f64,
}

impl<'a> Shape<'a> {
    fn new(p: &'a KneeParams, look: &Look, n: usize) -> Shape<'a> {
        let mut r = rng::stream("knee-shape", &[], p.knee_seed);
        let s = p.severity;
        let k = p.scale / look.zoom_out;
        let (cx, y0) = (0.5 + p.shift.0, 0.52 + p.shift.1);
        let jsw0 = 0.06 * k;
        let jsw_m = jsw0 * (1.0 - medial_narrowing(s, p.alignment_deg));
        let jsw_l = jsw0 * 1.1 * (1.0 - lateral_narrowing(s, p.alignment_deg));
        let ost = osteophyte_size(s) * k;
        let scl = sclerosis(s);
        let def = deformity(s);
        // Subtle signs of a fast progressor, visible before the grade changes.
        let sign = progression_signs(p.rate);
        let tilt = (p.alignment_deg + 3.0 * def).to_radians();

        // Osteophytes at the four joint margins; medial ones larger, shapes fixed per knee.
        let mut osteophytes = Vec::new();
        let margins = [
            (-0.255, 0.04, 1.0),  // medial tibial
            (0.255, 0.04, 0.65),  // lateral tibial
            (-0.235, -0.05, 0.8), // medial femoral
            (0.235, -0.05, 0.55), // lateral femoral
        ];
        for (dx, dy, weight) in margins {
            let dx: f64 = dx;
            let jitter = 0.7 + 0.6 * rng::unit(&mut r);
            let size = ost * weight * jitter;
            if size > 0.0 {
                let out = dx.signum() * (size * 0.25);
                osteophytes.push(Osteophyte {
                    cx: cx + dx * k + out,
                    cy: y0 + dy * k,
                    rx: size,
                    ry: size * (0.45 + 0.3 * rng::unit(&mut r)),
                });
            }
        }
        // A spur at the medial tibial spine that grows with the progression rate.
        let spine_lip = 0.035 * k * sign;
        let trabecular = Texture::new(&mut r, 90.0 / k);
        let coarse = Texture::new(&mut r, 35.0 / k);
        let edge = 0.6 / n as f64;
        Shape {
            p,
            k,
            cx,
            y0,
            jsw_m,
            jsw_l,
            scl,
            def,
            sign,
            tilt,
            osteophytes,
            spine_lip,
            trabecular,
            coarse,
            edge,
        }
    }

    /// The density at (x, y) in the unit square (x already mirrored for a left knee).
    fn density(&self, x: f64, y: f64) -> f64 {
        let (p, k, cx, y0) = (self.p, self.k, self.cx, self.y0);
        let (jsw_m, jsw_l, scl, def) = (self.jsw_m, self.jsw_l, self.scl, self.def);
        let (sign, tilt, spine_lip, edge) = (self.sign, self.tilt, self.spine_lip, self.edge);
        let (trabecular, coarse) = (&self.trabecular, &self.coarse);
        // Medial compartment is at x < cx.
        let medial = x < cx;
        let blend = 1.0 / (1.0 + ((x - cx) / (0.02 * k)).exp()); // 1 medial, 0 lateral
        let jsw = jsw_m * blend + jsw_l * (1.0 - blend);

        // Soft tissue silhouette and background.
        let soft = smooth_inside(
            ellipse(x, y, cx, y0, 0.42 * k + 0.08 * p.soft_tissue, 0.9),
            0.02,
        );
        let mut v = 0.08 + 0.12 * soft * (1.0 + 0.5 * p.soft_tissue);
        if p.effusion {
            v += 0.06 * smooth_inside(ellipse(x, y, cx, y0 - 0.2 * k, 0.13 * k, 0.08 * k), 0.02);
        }

        // Femur: shaft, flaring metaphysis, two condyles, notch.
        let fy = y;
        let top = y0 - 0.32 * k;
        let half = if fy < top {
            0.15 * k
        } else {
            0.15 * k + 0.09 * k * ((fy - top) / (0.2 * k)).clamp(0.0, 1.0)
        };
        let d_shaft = ((x - cx).abs() - half).max(fy - (y0 - 0.1 * k));
        let flat = 1.0 - 0.35 * def;
        let d_med = ellipse(
            x,
            fy,
            cx - 0.125 * k,
            y0 - jsw_m / 2.0 - 0.085 * k * flat,
            0.125 * k,
            0.085 * k * flat,
        );
        let d_lat = ellipse(
            x,
            fy,
            cx + 0.125 * k,
            y0 - jsw_l / 2.0 - 0.08 * k * flat,
            0.12 * k,
            0.08 * k * flat,
        );
        let d_notch = -ellipse(x, fy, cx, y0 - 0.01 * k, 0.03 * k, 0.065 * k);
        let d_femur = d_shaft.min(d_med).min(d_lat).max(d_notch);

        // Tibia (rotated by the alignment around the joint centre).
        let (sx, sy) = (x - cx, y - y0);
        let (ct, st) = (tilt.cos(), tilt.sin());
        let tx = ct * sx - st * sy;
        let ty = st * sx + ct * sy;
        let plateau = jsw / 2.0 + 0.01 * k * (tx / (0.12 * k)).powi(2) * (1.0 - 0.5 * def);
        let spines = 0.022 * k * (-((tx.abs() - 0.03 * k) / (0.012 * k)).powi(2)).exp();
        let lip = if tx < 0.0 {
            spine_lip * (-((tx + 0.035 * k) / (0.014 * k)).powi(2)).exp()
        } else {
            0.0
        };
        let top_t = plateau - spines - lip;
        let t_half = 0.255 * k - 0.11 * k * ((ty - 0.04 * k) / (0.2 * k)).clamp(0.0, 1.0).powf(0.7);
        let d_tibia = (top_t - ty).max(tx.abs() - t_half);

        let femur = smooth_inside(d_femur, edge);
        let tibia = smooth_inside(d_tibia, edge);
        let mut bone = 0.0f64;
        for (inside, d) in [(femur, d_femur), (tibia, d_tibia)] {
            if inside > 1e-4 {
                let rim = 0.22 * (-(-d).max(0.0) / (0.018 * k)).exp();
                let tex = 0.07 * trabecular.at(x, y) + 0.05 * coarse.at(x, y);
                bone = bone.max(inside * (0.55 + rim + tex));
            }
        }
        // Subchondral sclerosis (medial-weighted) and the progressor's coarse texture.
        let depth_t = (ty - top_t).max(0.0);
        let depth_f = (y0 - jsw / 2.0 - y).max(0.0);
        let near = (-depth_t / (0.05 * k)).exp() * tibia + (-depth_f / (0.04 * k)).exp() * femur;
        let weight = if medial { 1.0 } else { 0.45 };
        bone += scl * weight * near;
        if medial {
            bone += 0.1
                * sign
                * tibia
                * (-depth_t / (0.06 * k)).exp()
                * (1.0 + coarse.at(x * 1.7, y * 1.7));
        }
        for o in &self.osteophytes {
            bone = bone.max(0.75 * smooth_inside(ellipse(x, y, o.cx, o.cy, o.rx, o.ry), edge));
        }
        // Superimposed patella and fibular head (fainter).
        bone += 0.16
            * smooth_inside(
                ellipse(x, y, cx, y0 - 0.18 * k, 0.1 * k, 0.12 * k),
                edge * 3.0,
            );
        let fib_x = cx + 0.215 * k;
        bone += 0.22
            * smooth_inside(
                ellipse(x, y, fib_x, y0 + 0.2 * k, 0.045 * k, 0.12 * k),
                edge,
            );
        if p.hardware {
            let hx = cx - 0.06 * k + 0.35 * (y - y0 - 0.15 * k);
            let d = ((x - hx).abs() - 0.012 * k).max((y - y0 - 0.18 * k).abs() - 0.1 * k);
            bone = bone.max(1.2 * smooth_inside(d, edge));
        }
        v + bone
    }
}

/// Bilinear resampling of a square field.
fn resample(src: &[f64], from: usize, to: usize) -> Vec<f64> {
    let mut out = vec![0.0; to * to];
    let scale = from as f64 / to as f64;
    for j in 0..to {
        let fy = ((j as f64 + 0.5) * scale - 0.5).clamp(0.0, (from - 1) as f64);
        let (y0, ty) = (fy.floor() as usize, fy - fy.floor());
        let y1 = (y0 + 1).min(from - 1);
        for i in 0..to {
            let fx = ((i as f64 + 0.5) * scale - 0.5).clamp(0.0, (from - 1) as f64);
            let (x0, tx) = (fx.floor() as usize, fx - fx.floor());
            let x1 = (x0 + 1).min(from - 1);
            let a = src[y0 * from + x0] * (1.0 - tx) + src[y0 * from + x1] * tx;
            let b = src[y1 * from + x0] * (1.0 - tx) + src[y1 * from + x1] * tx;
            out[j * to + i] = a * (1.0 - ty) + b * ty;
        }
    }
    out
}

/// Separable Gaussian blur with clamped edges.
pub fn gaussian_blur(src: &[f64], n: usize, sigma: f64) -> Vec<f64> {
    if sigma <= 0.05 {
        return src.to_vec();
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f64> = (-radius..=radius)
        .map(|d| (-(d * d) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f64 = kernel.iter().sum();
    let pass = |input: &[f64], horizontal: bool| -> Vec<f64> {
        let mut out = vec![0.0; n * n];
        for j in 0..n {
            for i in 0..n {
                let mut acc = 0.0;
                for (ki, w) in kernel.iter().enumerate() {
                    let d = ki as isize - radius;
                    let (ii, jj) = if horizontal {
                        ((i as isize + d).clamp(0, n as isize - 1) as usize, j)
                    } else {
                        (i, (j as isize + d).clamp(0, n as isize - 1) as usize)
                    };
                    acc += w * input[jj * n + ii];
                }
                out[j * n + i] = acc / total;
            }
        }
        out
    };
    pass(&pass(src, true), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(severity: f64) -> KneeParams {
        KneeParams {
            severity,
            rate: 0.05,
            scale: 1.0,
            alignment_deg: 0.0,
            shift: (0.0, 0.0),
            soft_tissue: 0.3,
            effusion: false,
            hardware: false,
            mirror: false,
            knee_seed: 1,
        }
    }

    fn look() -> Look {
        Look {
            gamma: 1.0,
            gain: 0.8,
            offset: 0.05,
            noise: 0.0,
            blur: 0.5,
            resolution: 1.0,
            zoom_out: 1.0,
        }
    }

    /// Mean intensity of the darkest row band in the medial joint region.
    fn medial_gap(px: &[u16], n: usize) -> f64 {
        let cols = (n * 30 / 100)..(n * 42 / 100);
        (n * 40 / 100..n * 62 / 100)
            .map(|j| cols.clone().map(|i| f64::from(px[j * n + i])).sum::<f64>())
            .fold(f64::INFINITY, f64::min)
    }

    #[test]
    fn narrowing_fills_the_joint_space() {
        let n = 96;
        let mut r = rng::stream("t", &[], 0);
        let healthy = render(&params(0.0), &look(), n as u32, &mut r);
        let severe = render(&params(4.0), &look(), n as u32, &mut r);
        // A narrower joint space means the darkest band is brighter (partial volume).
        assert!(medial_gap(&severe, n) > medial_gap(&healthy, n));
        assert_eq!(healthy.len(), n * n);
    }

    #[test]
    fn mirroring_flips_the_image() {
        let mut p = params(2.0);
        let a = render(&p, &look(), 32, &mut rng::stream("t", &[], 0));
        p.mirror = true;
        let b = render(&p, &look(), 32, &mut rng::stream("t", &[], 0));
        assert_eq!(a[5 * 32 + 3], b[5 * 32 + 28]);
    }

    #[test]
    fn feature_curves_increase_with_severity() {
        for f in [osteophyte_size, sclerosis] {
            assert!(f(0.0) == 0.0 && f(1.0) < f(2.0) && f(3.0) < f(4.0));
        }
        assert!(medial_narrowing(3.0, 0.0) > lateral_narrowing(3.0, 0.0));
    }
}
