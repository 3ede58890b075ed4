//! Statistics over metrics: stratified patient bootstrap CIs (seeded ChaCha, percentile type 7
//! as numpy's default), aggregation over seeds (mean, sd, t-interval), the paired DeLong test
//! for two AUROCs on the same cases (Sun & Xu's fast midrank algorithm), paired bootstrap
//! p-values for other metrics, and the two-level test of a difference over training seeds and
//! test patients ([`two_level`]).

use std::collections::BTreeMap;

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

use crate::metrics::binary::midranks;
use crate::rng;

/// Percentile with linear interpolation between order statistics (numpy "linear", type 7).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo])
}

/// A point estimate with a confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Interval {
    pub estimate: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Cases grouped by patient: `groups[k]` are the case indices of patient k, `strata[k]` its
/// stratum (e.g. whether it has a positive case).
#[derive(Clone, Debug)]
pub struct Clusters {
    pub groups: Vec<Vec<usize>>,
    pub strata: Vec<u8>,
}

impl Clusters {
    /// Groups cases by patient id; a patient's stratum is the largest label among its cases.
    pub fn by_patient(patients: &[&str], labels: &[u8]) -> Clusters {
        let mut map: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, p) in patients.iter().enumerate() {
            map.entry(p).or_default().push(i);
        }
        let groups: Vec<Vec<usize>> = map.into_values().collect();
        let strata = groups
            .iter()
            .map(|g| g.iter().map(|&i| labels[i]).max().unwrap_or(0))
            .collect();
        Clusters { groups, strata }
    }

    /// One stratified resample of patients (with replacement, within strata): case indices.
    pub fn resample(&self, r: &mut rng::Rng) -> Vec<usize> {
        let mut by_stratum: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
        for (k, s) in self.strata.iter().enumerate() {
            by_stratum.entry(*s).or_default().push(k);
        }
        let mut cases = Vec::new();
        for members in by_stratum.values() {
            for _ in 0..members.len() {
                let k = members[rng::below(r, members.len() as u64) as usize];
                cases.extend_from_slice(&self.groups[k]);
            }
        }
        cases
    }
}

/// Percentile bootstrap CI of `metric` (computed on a list of case indices).
pub fn bootstrap_ci(
    clusters: &Clusters,
    n_cases: usize,
    metric: &dyn Fn(&[usize]) -> f64,
    replicates: usize,
    level: f64,
    seed: u64,
) -> Interval {
    let all: Vec<usize> = (0..n_cases).collect();
    let estimate = metric(&all);
    let mut r = rng::stream("bootstrap", &[], seed);
    let mut values: Vec<f64> = (0..replicates)
        .map(|_| metric(&clusters.resample(&mut r)))
        .filter(|v| v.is_finite())
        .collect();
    values.sort_by(f64::total_cmp);
    let alpha = (1.0 - level) / 2.0;
    Interval {
        estimate,
        lo: percentile(&values, alpha),
        hi: percentile(&values, 1.0 - alpha),
    }
}

/// Paired bootstrap of a difference `metric_b − metric_a` on the same resamples: the CI of the
/// difference and a two-sided p-value (twice the smaller tail share of replicates at or beyond
/// zero, capped at 1).
pub fn paired_bootstrap(
    clusters: &Clusters,
    n_cases: usize,
    diff: &dyn Fn(&[usize]) -> f64,
    replicates: usize,
    level: f64,
    seed: u64,
) -> (Interval, f64) {
    let all: Vec<usize> = (0..n_cases).collect();
    let estimate = diff(&all);
    let mut r = rng::stream("paired-bootstrap", &[], seed);
    let mut values: Vec<f64> = (0..replicates)
        .map(|_| diff(&clusters.resample(&mut r)))
        .filter(|v| v.is_finite())
        .collect();
    values.sort_by(f64::total_cmp);
    let alpha = (1.0 - level) / 2.0;
    let n = values.len() as f64;
    let p = if values.is_empty() {
        f64::NAN
    } else {
        let below = values.iter().filter(|v| **v <= 0.0).count() as f64 / n;
        let above = values.iter().filter(|v| **v >= 0.0).count() as f64 / n;
        (2.0 * below.min(above)).min(1.0)
    };
    (
        Interval {
            estimate,
            lo: percentile(&values, alpha),
            hi: percentile(&values, 1.0 - alpha),
        },
        p,
    )
}

/// Mean, sample sd (ddof 1), n and a Student-t interval over seeds.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct SeedSummary {
    pub n: usize,
    pub mean: f64,
    pub sd: f64,
    pub lo: f64,
    pub hi: f64,
}

pub fn over_seeds(values: &[f64], level: f64) -> SeedSummary {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n == 0 {
        return SeedSummary {
            n,
            mean: f64::NAN,
            sd: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return SeedSummary {
            n,
            mean,
            sd: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .expect("degrees of freedom are positive")
        .inverse_cdf(1.0 - (1.0 - level) / 2.0);
    let half = t * sd / (n as f64).sqrt();
    SeedSummary {
        n,
        mean,
        sd,
        lo: mean - half,
        hi: mean + half,
    }
}

/// A difference of two inits over training seeds on one test set, with both sources of its
/// variance: the test patients (a paired patient bootstrap of the seed-mean difference) and
/// the training seeds (the per-seed differences' variance over the seeds).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TwoLevel {
    /// Mean of the per-seed differences.
    pub mean: f64,
    /// Standard error from resampling the test patients.
    pub se_test: f64,
    /// Standard error from the training seeds: sd / √seeds.
    pub se_seeds: f64,
    /// √(se_test² + se_seeds²).
    pub se: f64,
    /// Welch–Satterthwaite degrees of freedom (the bootstrap part counts as infinite).
    pub df: f64,
    pub lo: f64,
    pub hi: f64,
    /// Two-sided p of mean / se against Student's t with `df`.
    pub p: f64,
}

/// The two-level test: `seed_diffs` are the per-seed differences on the whole test set,
/// `test_replicates` the seed-mean difference on patient bootstrap resamples (the same
/// resample for every seed and both inits). A training seed and a test patient are both
/// drawn at random, so a difference that is to hold for new patients and new seeds has both
/// variances; the seed part alone (the paired t-test over seeds) calls a small but
/// consistent difference significant however few patients it was measured on, and the
/// test part alone ignores how far one seed's training lands from the next.
pub fn two_level(seed_diffs: &[f64], test_replicates: &[f64], level: f64) -> TwoLevel {
    let sample_var = |v: &[f64]| {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    };
    let d: Vec<f64> = seed_diffs
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    let reps: Vec<f64> = test_replicates
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    let s = d.len();
    let mean = d.iter().sum::<f64>() / s as f64;
    let var_seeds = if s >= 2 {
        sample_var(&d) / s as f64
    } else {
        0.0
    };
    let var_test = if reps.len() >= 2 {
        sample_var(&reps)
    } else {
        0.0
    };
    let var = var_seeds + var_test;
    let se = var.sqrt();
    // (A seed variance that is rounding noise against the total counts as none.)
    let df = if var_seeds > 1e-12 * var && s >= 2 {
        var * var / (var_seeds * var_seeds / (s as f64 - 1.0))
    } else {
        f64::INFINITY
    };
    // Beyond a million degrees of freedom Student's t is the normal to 1e-6.
    let t = (df.is_finite() && df < 1e6)
        .then(|| StudentsT::new(0.0, 1.0, df).expect("positive degrees of freedom"));
    let n = Normal::standard();
    let q = 1.0 - (1.0 - level) / 2.0;
    let crit = t
        .as_ref()
        .map_or_else(|| n.inverse_cdf(q), |t| t.inverse_cdf(q));
    let cdf = |x: f64| t.as_ref().map_or_else(|| n.cdf(x), |t| t.cdf(x));
    let p = if s == 0 {
        f64::NAN
    } else if se <= 1e-15 {
        if mean.abs() <= 1e-15 { 1.0 } else { 0.0 }
    } else {
        2.0 * (1.0 - cdf((mean / se).abs()))
    };
    TwoLevel {
        mean,
        se_test: var_test.sqrt(),
        se_seeds: var_seeds.sqrt(),
        se,
        df,
        lo: mean - crit * se,
        hi: mean + crit * se,
        p,
    }
}

/// The paired DeLong test of two AUROCs on the same cases.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct DeLong {
    pub auroc_a: f64,
    pub auroc_b: f64,
    pub var_a: f64,
    pub var_b: f64,
    pub cov: f64,
    /// (auroc_a − auroc_b) / sd of the difference.
    pub z: f64,
    /// Two-sided normal p-value.
    pub p: f64,
}

/// DeLong's test (Sun & Xu 2014 midrank algorithm; covariances with ddof 1).
pub fn delong(labels: &[u8], score_a: &[f64], score_b: &[f64]) -> DeLong {
    let pos: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == 1).collect();
    let neg: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] != 1).collect();
    let (m, n) = (pos.len(), neg.len());
    let nan = DeLong {
        auroc_a: f64::NAN,
        auroc_b: f64::NAN,
        var_a: f64::NAN,
        var_b: f64::NAN,
        cov: f64::NAN,
        z: f64::NAN,
        p: f64::NAN,
    };
    if m < 2 || n < 2 {
        return nan;
    }
    // Per classifier: AUC and the structural components V10 (positives) and V01 (negatives).
    let components = |s: &[f64]| -> (f64, Vec<f64>, Vec<f64>) {
        let x: Vec<f64> = pos.iter().map(|&i| s[i]).collect();
        let y: Vec<f64> = neg.iter().map(|&i| s[i]).collect();
        let z: Vec<f64> = x.iter().chain(&y).copied().collect();
        let (tx, ty, tz) = (midranks(&x), midranks(&y), midranks(&z));
        let auc = (tz[..m].iter().sum::<f64>() - (m * (m + 1)) as f64 / 2.0) / (m * n) as f64;
        let v10: Vec<f64> = (0..m).map(|i| (tz[i] - tx[i]) / n as f64).collect();
        let v01: Vec<f64> = (0..n)
            .map(|j| 1.0 - (tz[m + j] - ty[j]) / m as f64)
            .collect();
        (auc, v10, v01)
    };
    let (auc_a, v10_a, v01_a) = components(score_a);
    let (auc_b, v10_b, v01_b) = components(score_b);
    let cov = |a: &[f64], b: &[f64]| -> f64 {
        let k = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / k, b.iter().sum::<f64>() / k);
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - ma) * (y - mb))
            .sum::<f64>()
            / (k - 1.0)
    };
    let s = |a10: &[f64], b10: &[f64], a01: &[f64], b01: &[f64]| {
        cov(a10, b10) / m as f64 + cov(a01, b01) / n as f64
    };
    let var_a = s(&v10_a, &v10_a, &v01_a, &v01_a);
    let var_b = s(&v10_b, &v10_b, &v01_b, &v01_b);
    let cov_ab = s(&v10_a, &v10_b, &v01_a, &v01_b);
    let var_diff = var_a + var_b - 2.0 * cov_ab;
    let (z, p) = if var_diff > 0.0 {
        let z = (auc_a - auc_b) / var_diff.sqrt();
        let normal = Normal::standard();
        (z, 2.0 * normal.sf(z.abs()))
    } else if auc_a == auc_b {
        (0.0, 1.0)
    } else {
        (f64::NAN, f64::NAN)
    };
    DeLong {
        auroc_a: auc_a,
        auroc_b: auc_b,
        var_a,
        var_b,
        cov: cov_ab,
        z,
        p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_numpy_linear() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.5);
        assert!((percentile(&v, 0.025) - 1.075).abs() < 1e-12);
        assert_eq!(percentile(&v, 1.0), 4.0);
    }

    #[test]
    fn seeds_summary_uses_t() {
        let s = over_seeds(&[0.70, 0.72, 0.74], 0.95);
        assert!((s.mean - 0.72).abs() < 1e-12);
        assert!((s.sd - 0.02).abs() < 1e-12);
        // t(0.975, 2) = 4.302652729911275
        assert!((s.hi - (0.72 + 4.302652729911275 * 0.02 / 3f64.sqrt())).abs() < 1e-9);
        assert!(over_seeds(&[0.7], 0.95).sd.is_nan());
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_estimate() {
        let labels: Vec<u8> = (0..200).map(|i| u8::from(i % 3 == 0)).collect();
        let scores: Vec<f64> = (0..200)
            .map(|i| f64::from(labels[i]) + (i as f64 * 0.37).sin())
            .collect();
        let patients: Vec<String> = (0..200).map(|i| format!("p{}", i / 2)).collect();
        let pr: Vec<&str> = patients.iter().map(String::as_str).collect();
        let clusters = Clusters::by_patient(&pr, &labels);
        let metric = |idx: &[usize]| {
            let l: Vec<u8> = idx.iter().map(|&i| labels[i]).collect();
            let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
            crate::metrics::binary::auroc(&l, &s)
        };
        let a = bootstrap_ci(&clusters, 200, &metric, 500, 0.95, 1);
        let b = bootstrap_ci(&clusters, 200, &metric, 500, 0.95, 1);
        assert_eq!(a, b);
        assert!(a.lo < a.estimate && a.estimate < a.hi);
    }

    #[test]
    fn two_level_reduces_to_its_parts_and_weighs_them_by_satterthwaite() {
        // No test-set variance: the paired t-test over seeds and its t-interval.
        let d = [0.019, 0.014, 0.020];
        let t = two_level(&d, &[0.3, 0.3, 0.3], 0.95);
        let paired = {
            let mean = d.iter().sum::<f64>() / 3.0;
            let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
            let t = mean / (sd / 3.0_f64.sqrt());
            2.0 * (1.0 - StudentsT::new(0.0, 1.0, 2.0).unwrap().cdf(t.abs()))
        };
        let seeds = over_seeds(&d, 0.95);
        assert!((t.p - paired).abs() < 1e-12, "{} {paired}", t.p);
        assert!((t.lo - seeds.lo).abs() < 1e-12 && (t.hi - seeds.hi).abs() < 1e-12);
        assert!((t.df - 2.0).abs() < 1e-12);
        // No seed variance: a z-test with the bootstrap's standard error (z = 2).
        let t = two_level(&[0.05, 0.05, 0.05], &[0.025, 0.075], 0.95);
        let sd = (2.0_f64 * 0.025 * 0.025).sqrt();
        assert!((t.se - sd).abs() < 1e-12 && t.df.is_infinite());
        let z = 0.05 / sd;
        let want = 2.0 * (1.0 - Normal::standard().cdf(z));
        assert!((t.p - want).abs() < 1e-12);
        // Equal parts, 3 seeds: df = (2v)² / (v² / 2) = 8.
        let d = [0.1, 0.2, 0.3];
        let v: f64 = 0.01 / 3.0;
        let a = (v / 2.0).sqrt();
        let t = two_level(&d, &[0.2 - a, 0.2 + a], 0.95);
        assert!((t.df - 8.0).abs() < 1e-9, "{}", t.df);
        assert!((t.se - (2.0 * v).sqrt()).abs() < 1e-12);
        let crit = StudentsT::new(0.0, 1.0, 8.0).unwrap().inverse_cdf(0.975);
        assert!((t.hi - (0.2 + crit * t.se)).abs() < 1e-9);
        // A consistent small difference on a noisy test set is not significant.
        let t = two_level(
            &[0.019, 0.014, 0.020],
            &[-0.02, 0.05, 0.01, 0.03, -0.01],
            0.95,
        );
        assert!(t.p > 0.05, "{}", t.p);
    }
}
