//! The synthetic cohorts: determinism, prevalence, outcome rules, and labels that are
//! learnable from the pixels but not trivially.

use std::collections::BTreeMap;

use super::*;
use crate::metrics::binary::auroc;

fn spec(kind: Kind, patients: usize) -> SynthSpec {
    SynthSpec {
        kind,
        patients,
        image_size: 64,
        seed: 7,
    }
}

#[test]
fn same_seed_same_bytes() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let s = SynthSpec {
        image_size: 32,
        ..spec(Kind::Hospital, 5)
    };
    for d in [&a, &b] {
        let r = generate(
            &s,
            &d.path().join("manifest.csv"),
            d.path(),
            &crate::progress::Quiet,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(!r.skipped);
    }
    let files = |d: &Path| -> BTreeMap<String, Vec<u8>> {
        walk(d)
            .into_iter()
            .map(|p| {
                (
                    p.strip_prefix(d).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect()
    };
    let fa = files(a.path());
    assert_eq!(fa, files(b.path()));
    assert_eq!(fa.len(), 5 + 2, "images, manifest, stamp");
    // A second run finds the stamp and writes nothing.
    let again = generate(
        &s,
        &a.path().join("manifest.csv"),
        a.path(),
        &crate::progress::Quiet,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert!(again.skipped);
    // Another seed gives other images.
    let c = tempfile::tempdir().unwrap();
    generate(
        &SynthSpec { seed: 8, ..s },
        &c.path().join("manifest.csv"),
        c.path(),
        &crate::progress::Quiet,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_ne!(fa, files(c.path()));
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn baseline_prevalence_follows_the_cohort() {
    let images = simulate(&spec(Kind::OaiLike, 3000));
    let baseline: Vec<&SimImage> = images.iter().filter(|i| i.visit == 0).collect();
    let mut counts = [0usize; 5];
    for i in &baseline {
        counts[i.kl.unwrap() as usize] += 1;
    }
    let target = [0.39, 0.18, 0.26, 0.13, 0.03];
    for g in 0..5 {
        let p = counts[g] as f64 / baseline.len() as f64;
        assert!((p - target[g] / 0.99).abs() < 0.035, "KL{g}: {p:.3}");
    }
    let hospital = simulate(&spec(Kind::Hospital, 2000));
    let kl3 = hospital.iter().filter(|i| i.true_kl == 3).count() as f64 / hospital.len() as f64;
    assert!((0.8..0.95).contains(&kl3), "hospital KL3 share {kl3}");
    assert!(
        hospital
            .iter()
            .all(|i| i.kl.is_none() && i.report.is_some())
    );
    assert!(
        simulate(&spec(Kind::NyuLike, 50))
            .iter()
            .all(|i| i.kl.is_none())
    );
}

#[test]
fn outcomes_follow_the_four_year_rules() {
    for (kind, horizon) in [(Kind::OaiLike, 48), (Kind::MostLike, 60)] {
        let images = simulate(&spec(kind, 800));
        let mut knees: BTreeMap<(String, Side), BTreeMap<i64, &SimImage>> = BTreeMap::new();
        for i in &images {
            knees
                .entry((i.patient_id.clone(), i.side))
                .or_default()
                .insert(i.visit, i);
        }
        let (mut inc, mut prog, mut excluded) = (0, 0, 0);
        for visits in knees.values() {
            let base = visits[&0];
            for (v, i) in visits {
                assert!(*v == 0 || (i.incidence_4y.is_none() && i.progression_4y.is_none()));
            }
            // The real-data rules, written out independently: an event at any follow-up
            // within the horizon; a negative needs a reading at the horizon; baseline KL 4
            // cannot progress.
            let g0 = base.kl.unwrap();
            let worst = visits
                .iter()
                .filter(|(v, _)| **v > 0 && **v <= horizon)
                .map(|(_, i)| i.kl.unwrap())
                .max();
            let read_at_horizon = visits.contains_key(&horizon);
            let decide = |event: bool| {
                if event {
                    Some(1)
                } else {
                    read_at_horizon.then_some(0)
                }
            };
            let incidence = (g0 <= 1)
                .then(|| decide(worst.is_some_and(|g| g >= 2)))
                .flatten();
            let progression = (1..=3)
                .contains(&g0)
                .then(|| decide(worst.is_some_and(|g| g > g0)))
                .flatten();
            assert_eq!(base.incidence_4y, incidence);
            assert_eq!(base.progression_4y, progression);
            excluded +=
                usize::from(!read_at_horizon && incidence.is_none() && progression.is_none());
            inc += usize::from(base.incidence_4y == Some(1));
            prog += usize::from(base.progression_4y == Some(1));
            // Grades never go down.
            let grades: Vec<u8> = visits.values().map(|i| i.kl.unwrap()).collect();
            assert!(grades.windows(2).all(|w| w[0] <= w[1]));
        }
        assert!(
            inc > 10 && prog > 10 && excluded > 0,
            "{kind:?}: {inc} {prog} {excluded}"
        );
    }
}

/// Features a reader could measure on a right-oriented image of `n` x `n` pixels.
fn measure(px: &[u16], n: usize) -> [f64; 7] {
    let at = |i: usize, j: usize| f64::from(px[j * n + i]) / 65535.0;
    let band = |x0: f64, x1: f64, y0: f64, y1: f64| {
        let (i0, i1, j0, j1) = (
            (x0 * n as f64) as usize,
            (x1 * n as f64) as usize,
            (y0 * n as f64) as usize,
            (y1 * n as f64) as usize,
        );
        let mut s = 0.0;
        for j in j0..j1 {
            for i in i0..i1 {
                s += at(i, j);
            }
        }
        s / ((i1 - i0) * (j1 - j0)) as f64
    };
    // Joint space: the darkest row in the compartment's columns (brighter = narrower).
    let gap = |x0: f64, x1: f64| {
        (n * 40 / 100..n * 64 / 100)
            .map(|j| {
                let y = j as f64 / n as f64;
                band(x0, x1, y, y + 1.0 / n as f64)
            })
            .fold(f64::INFINITY, f64::min)
    };
    [
        gap(0.3, 0.42),
        gap(0.58, 0.7),
        band(0.18, 0.24, 0.46, 0.58) + band(0.76, 0.82, 0.46, 0.58), // marginal osteophytes
        band(0.3, 0.45, 0.56, 0.62),                                 // medial subchondral bone
        band(0.02, 0.12, 0.3, 0.7),                                  // soft tissue
        band(0.44, 0.48, 0.45, 0.5),                                 // medial spine lip
        {
            // Medial subchondral roughness: sd of the band's pixels.
            let (i0, i1, j0, j1) = (n * 30 / 100, n * 45 / 100, n * 55 / 100, n * 65 / 100);
            let v: Vec<f64> = (j0..j1)
                .flat_map(|j| (i0..i1).map(move |i| (i, j)))
                .map(|(i, j)| at(i, j))
                .collect();
            let m = v.iter().sum::<f64>() / v.len() as f64;
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
        },
    ]
}

fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (
        crate::metrics::binary::midranks(a),
        crate::metrics::binary::midranks(b),
    );
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// Logistic regression by Newton steps on standardised features (with a small ridge).
fn fit_logistic(x: &[Vec<f64>], y: &[u8]) -> Vec<f64> {
    let d = x[0].len() + 1;
    let mut w = vec![0.0; d];
    for _ in 0..25 {
        let mut g = vec![0.0; d];
        let mut h = vec![vec![0.0; d]; d];
        for (xi, &yi) in x.iter().zip(y) {
            let z: f64 = w[0] + xi.iter().zip(&w[1..]).map(|(a, b)| a * b).sum::<f64>();
            let p = 1.0 / (1.0 + (-z).exp());
            let row: Vec<f64> = std::iter::once(1.0).chain(xi.iter().copied()).collect();
            for a in 0..d {
                g[a] += (p - f64::from(yi)) * row[a];
                for b in 0..d {
                    h[a][b] += p * (1.0 - p) * row[a] * row[b];
                }
            }
        }
        for a in 0..d {
            g[a] += 1e-3 * w[a];
            h[a][a] += 1e-3;
        }
        // Solve h · step = g (Gaussian elimination).
        let mut m: Vec<Vec<f64>> = h
            .iter()
            .zip(&g)
            .map(|(r, gi)| r.iter().copied().chain([*gi]).collect())
            .collect();
        for c in 0..d {
            let piv = (c..d)
                .max_by(|&a, &b| m[a][c].abs().total_cmp(&m[b][c].abs()))
                .unwrap();
            m.swap(c, piv);
            let pivot_row = m[c].clone();
            for (r, row) in m.iter_mut().enumerate() {
                if r != c {
                    let f = row[c] / pivot_row[c];
                    for (x, p) in row.iter_mut().zip(&pivot_row).skip(c) {
                        *x -= f * p;
                    }
                }
            }
        }
        for a in 0..d {
            w[a] -= m[a][d] / m[a][a];
        }
    }
    w
}

#[test]
fn labels_are_learnable_from_pixels_but_not_trivially() {
    let n = 64;
    let images = simulate(&spec(Kind::OaiLike, 500));
    let baseline: Vec<&SimImage> = images.iter().filter(|i| i.visit == 0).collect();
    let features: Vec<[f64; 7]> = baseline
        .par_iter()
        .map(|img| {
            let mut px = img.render(n as u32);
            if img.side == Side::L {
                for row in px.chunks_mut(n) {
                    row.reverse();
                }
            }
            measure(&px, n)
        })
        .collect();
    // Joint-space darkness tracks KL: narrower (brighter) gaps at higher grades.
    let kl: Vec<f64> = baseline.iter().map(|i| f64::from(i.kl.unwrap())).collect();
    let gap: Vec<f64> = features.iter().map(|f| f[0]).collect();
    let rho = spearman(&gap, &kl);
    assert!(rho > 0.4, "medial gap vs KL: Spearman {rho:.3}");

    // Progression from a few measured features: better than chance, far from perfect.
    let rows: Vec<(Vec<f64>, u8, &str)> = baseline
        .iter()
        .zip(&features)
        .filter_map(|(i, f)| {
            i.progression_4y
                .map(|y| (f.to_vec(), y, i.patient_id.as_str()))
        })
        .collect();
    let d = rows[0].0.len();
    let mean: Vec<f64> = (0..d)
        .map(|c| rows.iter().map(|r| r.0[c]).sum::<f64>() / rows.len() as f64)
        .collect();
    let sd: Vec<f64> = (0..d)
        .map(|c| {
            (rows.iter().map(|r| (r.0[c] - mean[c]).powi(2)).sum::<f64>() / rows.len() as f64)
                .sqrt()
                .max(1e-12)
        })
        .collect();
    let z = |v: &Vec<f64>| -> Vec<f64> {
        v.iter()
            .enumerate()
            .map(|(c, x)| (x - mean[c]) / sd[c])
            .collect()
    };
    // Train on the first half of patients, evaluate on the rest.
    let cut = "O00250";
    let (train, test): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.2 < cut);
    let w = fit_logistic(
        &train.iter().map(|r| z(&r.0)).collect::<Vec<_>>(),
        &train.iter().map(|r| r.1).collect::<Vec<_>>(),
    );
    let scores: Vec<f64> = test
        .iter()
        .map(|r| w[0] + z(&r.0).iter().zip(&w[1..]).map(|(a, b)| a * b).sum::<f64>())
        .collect();
    let labels: Vec<u8> = test.iter().map(|r| r.1).collect();
    let auc = auroc(&labels, &scores);
    eprintln!(
        "synthetic learnability: Spearman(medial gap, KL) = {rho:.3}; progression AUROC from 7 pixel features = {auc:.3} (n = {})",
        labels.len()
    );
    assert!(auc > 0.55 && auc < 0.97, "progression AUROC {auc:.3}");
}

#[test]
fn example_pictures_show_every_grade_of_every_kind() {
    // `ktrack data synth --examples DIR` writes these for a look; here they must decode, hold one
    // knee per KL grade the cohort kind has (a hospital population has no KL 0), and not be
    // blank.
    let decode = |png: &[u8]| {
        ::image::load_from_memory(png)
            .expect("a PNG the image crate reads")
            .into_luma8()
    };
    for kind in [Kind::OaiLike, Kind::MostLike, Kind::NyuLike, Kind::Hospital] {
        let grades = kind
            .profile()
            .expect("a knee cohort")
            .prevalence
            .iter()
            .filter(|p| **p > 0.0)
            .count() as u32;
        let img = decode(&grade_montage(kind, 64, 1));
        assert_eq!(
            img.dimensions(),
            (64 * grades, 64),
            "{} montage",
            kind.name()
        );
        for g in 0..grades {
            let panel: Vec<u8> = (0..64)
                .flat_map(|y| (0..64).map(move |x| (g * 64 + x, y)))
                .map(|(x, y)| img.get_pixel(x, y)[0])
                .collect();
            let (lo, hi) = (panel.iter().min().unwrap(), panel.iter().max().unwrap());
            assert!(hi - lo > 32, "{} grade {g} panel is blank", kind.name());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let files = write_examples(dir.path()).unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(
        decode(&std::fs::read(&files[1]).unwrap()).dimensions(),
        (128 * 4, 128)
    );
}
