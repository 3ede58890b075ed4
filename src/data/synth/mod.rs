//! Synthetic knee cohorts written as real files: 16-bit PNG crops, a CSV manifest and report
//! text, imported afterwards through the ordinary import path (nothing bypasses it).
//!
//! A cohort is simulated patient by patient from seeded streams: patient factors (bone size,
//! load, alignment) set a latent progression rate; each knee starts at a severity drawn from
//! the cohort's KL prevalence and worsens at that rate; the recorded KL is the rounded
//! severity, so grades overlap in appearance. 4-year outcomes are derived from the readings
//! exactly as for real data. The same spec gives byte-identical files (and cohort hash).

pub mod generic;
pub mod knee;
pub mod report;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Side;
use crate::data::image::encode_png16;
use crate::data::real::outcomes::{self, Replacement, Rules};
use crate::data::real::readings::{Reading, Value};
use crate::rng::{self, Rng};
use knee::{KneeParams, Look};

/// Which synthetic cohort to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// OAI-like: full KL spectrum, visits 0/12/24/36/48, 4-year outcomes.
    OaiLike,
    /// MOST-like external cohort: another scanner look and prevalence, visits 0/15/30/60.
    MostLike,
    /// NYU-like: unlabelled images for image-only self-supervision.
    NyuLike,
    /// Hospital image-text pairs: mostly KL 3, each with a radiologist impression.
    Hospital,
    /// A generic labelled image set (12 classes of shapes and textures over clutter): the
    /// out-of-domain corpus whose supervised encoder stands in for ImageNet's.
    Generic,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::OaiLike => "oai-like",
            Kind::MostLike => "most-like",
            Kind::NyuLike => "nyu-like",
            Kind::Hospital => "hospital",
            Kind::Generic => "generic",
        }
    }

    /// A knee cohort's profile; none for the generic set.
    fn profile(self) -> Option<Profile> {
        Some(match self {
            Kind::Generic => return None,
            Kind::OaiLike => Profile {
                prefix: "O",
                prevalence: [0.39, 0.18, 0.26, 0.13, 0.03],
                visits: &[0, 12, 24, 36, 48],
                outcome_visit: Some(48),
                knees: 2,
                dropout: 0.04,
                labelled: true,
                reports: false,
                look: Look {
                    gamma: 1.0,
                    gain: 0.78,
                    offset: 0.06,
                    noise: 0.018,
                    blur: 0.45,
                    resolution: 1.0,
                    zoom_out: 1.0,
                },
            },
            Kind::MostLike => Profile {
                prefix: "M",
                prevalence: [0.30, 0.17, 0.24, 0.20, 0.09],
                visits: &[0, 15, 30, 60],
                outcome_visit: Some(60),
                knees: 2,
                dropout: 0.05,
                labelled: true,
                reports: false,
                look: Look {
                    gamma: 0.75,
                    gain: 0.7,
                    offset: 0.12,
                    noise: 0.035,
                    blur: 0.7,
                    resolution: 0.75,
                    zoom_out: 1.12,
                },
            },
            Kind::NyuLike => Profile {
                prefix: "N",
                prevalence: [0.35, 0.2, 0.25, 0.15, 0.05],
                visits: &[0],
                outcome_visit: None,
                knees: 2,
                dropout: 0.0,
                labelled: false,
                reports: false,
                look: Look {
                    gamma: 1.15,
                    gain: 0.82,
                    offset: 0.04,
                    noise: 0.025,
                    blur: 0.55,
                    resolution: 0.9,
                    zoom_out: 1.05,
                },
            },
            Kind::Hospital => Profile {
                prefix: "H",
                prevalence: [0.0, 0.01, 0.05, 0.89, 0.05],
                visits: &[0],
                outcome_visit: None,
                knees: 1,
                dropout: 0.0,
                labelled: false,
                reports: true,
                look: Look {
                    gamma: 0.9,
                    gain: 0.75,
                    offset: 0.08,
                    noise: 0.022,
                    blur: 0.5,
                    resolution: 1.0,
                    zoom_out: 0.95,
                },
            },
        })
    }
}

struct Profile {
    prefix: &'static str,
    prevalence: [f64; 5],
    visits: &'static [i64],
    /// The visit that counts as the 4-year follow-up (MOST: 60 months, the stated rule).
    outcome_visit: Option<i64>,
    knees: usize,
    /// Chance of leaving the study at each follow-up visit.
    dropout: f64,
    labelled: bool,
    reports: bool,
    look: Look,
}

/// The `[synth]` table of a synthetic dataset descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthSpec {
    pub kind: Kind,
    pub patients: usize,
    #[serde(default = "default_image_size")]
    pub image_size: u32,
    #[serde(default)]
    pub seed: u64,
}

fn default_image_size() -> u32 {
    64
}

/// Bumped whenever the generator's output changes for the same spec.
pub const GENERATOR_VERSION: u32 = 5;

/// One simulated image with its labels.
#[derive(Clone, Debug)]
pub struct SimImage {
    pub sample_id: String,
    pub patient_id: String,
    pub side: Side,
    pub visit: i64,
    pub kl: Option<u8>,
    pub incidence_4y: Option<u8>,
    pub progression_4y: Option<u8>,
    pub report: Option<String>,
    pub params: KneeParams,
    pub look: Look,
    /// Seed of this image's noise stream.
    pub noise_seed: u64,
    /// The grade the anatomy shows (for tests; not written to unlabelled manifests).
    pub true_kl: u8,
}

impl SimImage {
    pub fn file_name(&self) -> String {
        format!("images/{}.png", self.sample_id)
    }

    pub fn render(&self, size: u32) -> Vec<u16> {
        let mut r = rng::stream("synth-noise", &[], self.noise_seed);
        knee::render(&self.params, &self.look, size, &mut r)
    }
}

fn draw_grade(r: &mut Rng, prevalence: &[f64; 5]) -> u8 {
    let total: f64 = prevalence.iter().sum();
    let u = rng::unit(r) * total;
    let mut acc = 0.0;
    for (g, p) in prevalence.iter().enumerate() {
        acc += p;
        if u < acc {
            return g as u8;
        }
    }
    4
}

fn grade_of(severity: f64) -> u8 {
    severity.round().clamp(0.0, 4.0) as u8
}

/// A knee's 4-year incidence and progression, from its readings at the visits it attended, by
/// the same rules as real cohorts' (none for a cohort without outcomes).
fn knee_outcomes(
    prof: &Profile,
    patient_id: &str,
    side: Side,
    present: &[i64],
    grade_at: impl Fn(i64) -> u8,
) -> (Option<u8>, Option<u8>) {
    match prof.outcome_visit {
        Some(v) if prof.labelled => {
            let readings: Vec<Reading> = present
                .iter()
                .map(|&visit| Reading {
                    id: patient_id.to_string(),
                    side,
                    visit,
                    value: Value::Kl(grade_at(visit)),
                })
                .collect();
            let rules = Rules {
                horizon_months: v,
                followup_visit: v,
                progression_min_baseline_kl: 1,
                knee_replacement: Replacement::Event,
            };
            let o = outcomes::derive(&readings, &rules)
                .0
                .into_values()
                .next()
                .unwrap_or_default();
            (o.incidence_4y, o.progression_4y)
        }
        _ => (None, None),
    }
}

/// Simulates every image of a knee cohort (no pixels yet), in a fixed order; the generic set
/// has no knees (see [`generic::simulate`]).
pub fn simulate(spec: &SynthSpec) -> Vec<SimImage> {
    let kind = spec.kind;
    let Some(prof) = kind.profile() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in 0..spec.patients {
        let mut r = rng::stream(
            "synth-patient",
            &[kind.name().as_bytes()],
            spec.seed.wrapping_mul(1_000_003).wrapping_add(p as u64),
        );
        let patient_id = format!("{}{:05}", prof.prefix, p + 1);
        let scale = 1.0 + 0.06 * rng::normal(&mut r);
        let load = rng::unit(&mut r);
        let alignment_p = 1.0 + 2.5 * rng::normal(&mut r);
        let rate_p = 0.05 * (0.8 * rng::normal(&mut r) + 0.9 * load + 0.12 * alignment_p).exp();
        let sides: &[Side] = if prof.knees == 2 {
            &[Side::L, Side::R]
        } else if rng::unit(&mut r) < 0.5 {
            &[Side::L]
        } else {
            &[Side::R]
        };
        let mut first_grade = None;
        for &side in sides {
            let alignment = alignment_p + rng::normal(&mut r);
            // The two knees of a patient tend to be alike.
            let kl0 = match first_grade {
                Some(g) if rng::unit(&mut r) < 0.55 => {
                    let step = rng::below(&mut r, 3) as i64 - 1;
                    (i64::from(g) + step).clamp(0, 4) as u8
                }
                _ => draw_grade(&mut r, &prof.prevalence),
            };
            first_grade.get_or_insert(kl0);
            let s0 = f64::from(kl0) + 0.9 * (rng::unit(&mut r) - 0.5);
            let rate = rate_p * (0.35 * rng::normal(&mut r)).exp() * (0.6 + 0.25 * s0.max(0.0));
            let knee_seed = rand::RngCore::next_u64(&mut r);
            let effusion_draw = rng::unit(&mut r);
            let hardware = prof.reports && rng::unit(&mut r) < 0.03;
            let report_seed = rand::RngCore::next_u64(&mut r);
            // Loss to follow-up: once a visit is missed, later ones are too.
            let mut present = Vec::new();
            for (vi, &visit) in prof.visits.iter().enumerate() {
                if vi > 0 && rng::unit(&mut r) < prof.dropout {
                    break;
                }
                present.push(visit);
            }
            let grade_at = |visit: i64| grade_of(s0 + rate * visit as f64 / 12.0);
            let (incidence, progression) =
                knee_outcomes(&prof, &patient_id, side, &present, grade_at);
            for &visit in &present {
                let severity = s0 + rate * visit as f64 / 12.0;
                // What the image shows varies around the true severity (positioning, beam
                // angle), so neighbouring grades overlap as in real readings.
                let shown = severity + 0.3 * rng::normal(&mut r);
                let params = KneeParams {
                    severity: shown,
                    rate,
                    scale,
                    alignment_deg: alignment,
                    shift: (0.015 * rng::normal(&mut r), 0.015 * rng::normal(&mut r)),
                    soft_tissue: (0.15 + 0.7 * load).min(1.0),
                    // Effusion comes with active disease: more often in fast progressors.
                    effusion: effusion_draw
                        < 0.04 + 0.04 * shown.max(0.0) + 0.2 * knee::progression_signs(rate),
                    hardware,
                    mirror: side == Side::L,
                    knee_seed,
                };
                let mut look = prof.look.clone();
                look.gain *= 1.0 + 0.05 * rng::normal(&mut r);
                look.offset += 0.015 * rng::normal(&mut r);
                let noise_seed = rand::RngCore::next_u64(&mut r);
                let report = prof.reports.then(|| {
                    let findings = report::Findings {
                        medial_narrowing: knee::medial_narrowing(shown, alignment),
                        lateral_narrowing: knee::lateral_narrowing(shown, alignment),
                        osteophytes: knee::osteophyte_size(shown),
                        sclerosis: knee::sclerosis(shown),
                        effusion: params.effusion,
                        alignment_deg: alignment,
                        hardware,
                        progression_signs: knee::progression_signs(rate),
                    };
                    report::impression(
                        &findings,
                        &mut rng::stream("synth-report", &[], report_seed),
                    )
                });
                let true_kl = grade_of(severity);
                out.push(SimImage {
                    sample_id: format!("{patient_id}_{}_{visit:02}", side.as_str()),
                    patient_id: patient_id.clone(),
                    side,
                    visit,
                    kl: prof.labelled.then_some(true_kl),
                    incidence_4y: if visit == 0 { incidence } else { None },
                    progression_4y: if visit == 0 { progression } else { None },
                    report,
                    params,
                    look,
                    noise_seed,
                    true_kl,
                });
            }
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not write `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dataset descriptor `{0}` has no `[synth]` table, so there is nothing to generate")]
    NotSynthetic(PathBuf),
    #[error("interrupted; rerun to generate the cohort again")]
    Interrupted,
}

#[derive(Clone, Debug, Serialize)]
pub struct SynthReport {
    pub kind: Kind,
    pub images: usize,
    pub patients: usize,
    pub manifest: PathBuf,
    pub seconds: f64,
    pub images_per_second: f64,
    /// True when matching files were already there and nothing was written.
    pub skipped: bool,
}

/// The stamp written last: the files under `image_root` are complete for this spec.
#[derive(Serialize, Deserialize, PartialEq)]
struct Stamp {
    generator: u32,
    spec: SynthSpec,
    images: usize,
}

const STAMP: &str = "synth.json";

/// What a cohort's files are drawn from: knees, or the generic set's objects.
enum Drawn {
    Knees(Vec<SimImage>),
    Generic(Vec<generic::Object>),
}

impl Drawn {
    fn of(spec: &SynthSpec) -> Drawn {
        match spec.kind {
            Kind::Generic => Drawn::Generic(generic::simulate(spec.patients, spec.seed)),
            _ => Drawn::Knees(simulate(spec)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Drawn::Knees(v) => v.len(),
            Drawn::Generic(v) => v.len(),
        }
    }

    fn patients(&self) -> usize {
        match self {
            Drawn::Knees(v) => v
                .iter()
                .map(|i| i.patient_id.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            Drawn::Generic(v) => v.len(),
        }
    }

    /// The `i`th image's file (relative to the image root) and pixels.
    fn image(&self, i: usize, size: u32) -> (String, Vec<u16>) {
        match self {
            Drawn::Knees(v) => (v[i].file_name(), v[i].render(size)),
            Drawn::Generic(v) => (v[i].file_name(), v[i].render(size)),
        }
    }

    fn write_manifest(&self, kind: Kind, manifest: &Path) -> std::io::Result<()> {
        match self {
            Drawn::Knees(v) => write_manifest(kind, v, manifest),
            Drawn::Generic(v) => generic::write_manifest(v, manifest),
        }
    }
}

/// Writes the cohort's images and manifest (skipped when a matching stamp is present).
pub fn generate(
    spec: &SynthSpec,
    manifest: &Path,
    image_root: &Path,
    progress: &dyn crate::progress::Task,
    interrupt: &AtomicBool,
) -> Result<SynthReport, Error> {
    let start = Instant::now();
    let drawn = Drawn::of(spec);
    let stamp = Stamp {
        generator: GENERATOR_VERSION,
        spec: spec.clone(),
        images: drawn.len(),
    };
    let stamp_path = image_root.join(STAMP);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    let report = |seconds: f64, skipped: bool| SynthReport {
        kind: spec.kind,
        images: drawn.len(),
        patients: drawn.patients(),
        manifest: manifest.to_path_buf(),
        seconds,
        images_per_second: if skipped {
            0.0
        } else {
            drawn.len() as f64 / seconds.max(1e-9)
        },
        skipped,
    };
    if manifest.is_file()
        && let Ok(text) = std::fs::read_to_string(&stamp_path)
        && serde_json::from_str::<Stamp>(&text).is_ok_and(|s| s == stamp)
    {
        return Ok(report(start.elapsed().as_secs_f64(), true));
    }
    let _ = std::fs::remove_file(&stamp_path);
    let dir = image_root.join("images");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    progress.start(drawn.len(), 0);
    (0..drawn.len()).into_par_iter().try_for_each(|i| {
        if interrupt.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let (file, px) = drawn.image(i, spec.image_size);
        let path = image_root.join(file);
        std::fs::write(&path, encode_png16(spec.image_size, spec.image_size, &px))
            .map_err(io(&path))?;
        progress.step();
        Ok(())
    })?;
    drawn
        .write_manifest(spec.kind, manifest)
        .map_err(io(manifest))?;
    let stamp_text = serde_json::to_string_pretty(&stamp).expect("the stamp serializes");
    std::fs::write(&stamp_path, stamp_text).map_err(io(&stamp_path))?;
    Ok(report(start.elapsed().as_secs_f64(), false))
}

/// Image paths in the manifest are relative to the image root (`images/<sample>.png`).
fn write_manifest(kind: Kind, images: &[SimImage], manifest: &Path) -> std::io::Result<()> {
    let prof = kind.profile().expect("a knee cohort has a profile");
    let mut header = vec![
        "sample_id",
        "patient_id",
        "side",
        "visit_month",
        "image_path",
    ];
    if prof.labelled {
        header.extend(["kl", "incidence_4y", "progression_4y"]);
    }
    if prof.reports {
        header.push("impression");
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&header)?;
    for img in images {
        let opt = |v: Option<u8>| v.map(|x| x.to_string()).unwrap_or_default();
        let mut row = vec![
            img.sample_id.clone(),
            img.patient_id.clone(),
            img.side.as_str().to_string(),
            img.visit.to_string(),
            img.file_name(),
        ];
        if prof.labelled {
            row.extend([opt(img.kl), opt(img.incidence_4y), opt(img.progression_4y)]);
        }
        if prof.reports {
            row.push(img.report.clone().unwrap_or_default());
        }
        w.write_record(&row)?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    write_atomically(manifest, &bytes)
}

/// Writes a manifest through a synced temporary file, so a kill leaves the old one or none.
fn write_atomically(manifest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = manifest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = manifest.with_extension("csv.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, manifest)
}

#[cfg(test)]
mod tests;

/// A montage (8-bit PNG) of one image per KL grade of a cohort kind, at baseline, for docs.
pub fn grade_montage(kind: Kind, size: u32, seed: u64) -> Vec<u8> {
    let images = simulate(&SynthSpec {
        kind,
        patients: 400,
        image_size: size,
        seed,
    });
    // A right knee at baseline where the cohort has one of that grade, else any knee of it
    // (a hospital population has few KL 4 knees at baseline).
    let picks: Vec<&SimImage> = (0..5u8)
        .filter_map(|g| {
            images
                .iter()
                .find(|i| i.visit == 0 && i.true_kl == g && i.side == Side::R)
                .or_else(|| images.iter().find(|i| i.true_kl == g))
        })
        .collect();
    montage(&picks, size)
}

/// One image of each cohort kind (a KL 2-3 right knee at baseline), showing their looks.
pub fn cohort_montage(size: u32, seed: u64) -> Vec<u8> {
    let kinds = [Kind::OaiLike, Kind::MostLike, Kind::NyuLike, Kind::Hospital];
    let sims: Vec<Vec<SimImage>> = kinds
        .iter()
        .map(|&kind| {
            simulate(&SynthSpec {
                kind,
                patients: 50,
                image_size: size,
                seed,
            })
        })
        .collect();
    let picks: Vec<&SimImage> = sims
        .iter()
        .filter_map(|imgs| {
            imgs.iter()
                .find(|i| i.visit == 0 && (2..=3).contains(&i.true_kl) && i.side == Side::R)
        })
        .collect();
    montage(&picks, size)
}

/// Writes the README's example images into `dir`; returns the files written.
pub fn write_examples(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let files = [
        (
            dir.join("synthetic-kl-grades.png"),
            grade_montage(Kind::OaiLike, 128, 1),
        ),
        (dir.join("synthetic-cohorts.png"), cohort_montage(128, 1)),
    ];
    for (path, bytes) in &files {
        std::fs::write(path, bytes).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

/// Side-by-side 8-bit grayscale PNG of the given images.
pub fn montage(images: &[&SimImage], size: u32) -> Vec<u8> {
    let n = size as usize;
    let width = n * images.len().max(1);
    let mut canvas = vec![0u8; width * n];
    for (k, img) in images.iter().enumerate() {
        let px = img.render(size);
        for j in 0..n {
            for i in 0..n {
                canvas[j * width + k * n + i] = (px[j * n + i] >> 8) as u8;
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, size);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().expect("writing to a Vec cannot fail");
        w.write_image_data(&canvas).expect("canvas size matches");
    }
    out
}

/// The dataset descriptor (TOML) of a generated cohort whose manifest and images are in
/// `dir` (paths relative to the descriptor, which is written beside `dir`'s contents).
/// Writes `DIR/dataset.toml`, a descriptor of an ad-hoc synthetic cohort generated into `dir`
/// (manifest `manifest.csv`, images beside it); returns its path.
pub fn write_descriptor(dir: &Path, spec: &SynthSpec) -> Result<PathBuf, Error> {
    let write = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write(dir))?;
    let path = dir.join("dataset.toml");
    std::fs::write(
        &path,
        descriptor_toml(spec, spec.kind.name(), "manifest.csv", "."),
    )
    .map_err(write(&path))?;
    Ok(path)
}

pub fn descriptor_toml(spec: &SynthSpec, name: &str, manifest: &str, image_root: &str) -> String {
    let mut columns =
        String::from("sample_id = \"sample_id\"\npatient_id = \"patient_id\"\nside = \"side\"\n");
    match spec.kind.profile() {
        // One image per object: no visits, no knee labels, the class.
        None => columns.push_str("image = \"image_path\"\nclass = \"class\"\n"),
        Some(prof) => {
            columns.push_str("visit = \"visit_month\"\nimage = \"image_path\"\n");
            if prof.labelled {
                columns.push_str(
                    "kl = \"kl\"\nincidence_4y = \"incidence_4y\"\nprogression_4y = \"progression_4y\"\n",
                );
            }
            if prof.reports {
                columns.push_str("report = \"impression\"\n");
            }
        }
    }
    format!(
        "name = \"{name}\"\nmanifest = \"{manifest}\"\nimage_root = \"{image_root}\"\n\n[columns]\n{columns}\n\
         [synth]\nkind = \"{}\"\npatients = {}\nimage_size = {}\nseed = {}\n",
        spec.kind.name(),
        spec.patients,
        spec.image_size,
        spec.seed
    )
}
