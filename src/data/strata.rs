//! Stratified, patient-level orderings shared by splits and label fractions.
//!
//! Each patient gets one stratum (the sorted labels of its knees at its first labelled
//! visit, so both knees count). Within a stratum patients are shuffled; patient j of n gets the key (j + u) / n
//! with a random phase u, and all patients are sorted by key. Every prefix and every contiguous
//! slice of that order is then close to the cohort's stratum proportions, so cutting it gives a
//! stratified split, and taking growing prefixes gives nested stratified fractions.

use std::collections::BTreeMap;

use crate::cohort::Sample;
use crate::data::Label;
use crate::rng;

/// A patient's stratum for a label: the sorted labels of its knees at its first labelled
/// visit (empty: the patient has no value for the label, or no label was asked for).
pub type Stratum = Vec<u8>;

pub fn patient_strata(samples: &[Sample], label: Option<Label>) -> BTreeMap<String, Stratum> {
    // (first labelled visit, labels at that visit)
    let mut first: BTreeMap<String, Option<(i64, Vec<u8>)>> = BTreeMap::new();
    for s in samples {
        let entry = first.entry(s.patient_id.clone()).or_insert(None);
        let Some(v) = label.and_then(|l| s.label(l)) else {
            continue;
        };
        match entry {
            Some((visit, labels)) if s.visit == *visit => labels.push(v),
            Some((visit, _)) if s.visit > *visit => {}
            _ => *entry = Some((s.visit, vec![v])),
        }
    }
    first
        .into_iter()
        .map(|(p, f)| {
            let mut labels = f.map(|(_, l)| l).unwrap_or_default();
            labels.sort_unstable();
            (p, labels)
        })
        .collect()
}

/// The stratified order of `patients` (sorted by id on entry); returns patient ids.
pub fn stratified_order(patients: &BTreeMap<String, Stratum>, rng: &mut rng::Rng) -> Vec<String> {
    let mut strata: BTreeMap<&Stratum, Vec<&String>> = BTreeMap::new();
    for (p, s) in patients {
        strata.entry(s).or_default().push(p);
    }
    let mut keyed: Vec<(f64, u64, &String)> = Vec::with_capacity(patients.len());
    for members in strata.values_mut() {
        rng::shuffle(rng, members);
        let n = members.len() as f64;
        let phase = rng::unit(rng);
        for (j, p) in members.iter().enumerate() {
            keyed.push(((j as f64 + phase) / n, rand::RngCore::next_u64(rng), p));
        }
    }
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().map(|(_, _, p)| p.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Side;
    use crate::id::Hash;

    fn row(p: &str, visit: i64, kl: Option<u8>) -> Sample {
        Sample {
            sample_id: format!("{p}-{visit}-{kl:?}"),
            patient_id: p.into(),
            side: Side::L,
            visit,
            image: Hash::of(p.as_bytes()),
            kl,
            incidence_4y: None,
            progression_4y: None,
            class: None,
            report: None,
        }
    }

    #[test]
    fn stratum_is_first_labelled_visit_highest_knee() {
        let s = vec![
            row("a", 12, Some(4)),
            row("a", 0, Some(1)),
            row("a", 0, Some(2)),
            row("b", 0, None),
            row("b", 12, Some(3)),
            row("c", 0, None),
        ];
        let m = patient_strata(&s, Some(Label::Kl));
        assert_eq!(m["a"], vec![1, 2]);
        assert_eq!(m["b"], vec![3]);
        assert_eq!(m["c"], Vec::<u8>::new());
    }

    #[test]
    fn prefixes_are_stratified() {
        let patients: BTreeMap<String, Stratum> = (0..1000)
            .map(|i| (format!("p{i:04}"), vec![if i % 10 < 7 { 0 } else { 1 }]))
            .collect();
        let order = stratified_order(&patients, &mut rng::stream("t", &[], 3));
        assert_eq!(order.len(), 1000);
        for n in [10, 50, 100, 500] {
            let ones = order[..n].iter().filter(|p| patients[*p] == [1]).count();
            let expected = n as f64 * 0.3;
            assert!(
                (ones as f64 - expected).abs() <= 1.0 + 1e-9,
                "n={n} ones={ones}"
            );
        }
    }
}
