//! KL-grade (5-class, ordinal) metrics, equal to scikit-learn's definitions:
//! `accuracy_score`, `balanced_accuracy_score` (mean recall over classes present in y_true),
//! `cohen_kappa_score(labels=[0..4], weights="quadratic")`, `f1_score(labels=[0..4],
//! average="macro", zero_division=0)` and `mean_absolute_error`. Empty input → NaN.

pub const CLASSES: usize = 5;

/// 5×5 confusion matrix, rows = truth, columns = prediction.
pub fn confusion(y_true: &[u8], y_pred: &[u8]) -> [[u64; CLASSES]; CLASSES] {
    assert_eq!(y_true.len(), y_pred.len(), "one prediction per label");
    let mut c = [[0u64; CLASSES]; CLASSES];
    for (&t, &p) in y_true.iter().zip(y_pred) {
        c[usize::from(t).min(CLASSES - 1)][usize::from(p).min(CLASSES - 1)] += 1;
    }
    c
}

pub fn accuracy(y_true: &[u8], y_pred: &[u8]) -> f64 {
    if y_true.is_empty() {
        return f64::NAN;
    }
    let hits = y_true.iter().zip(y_pred).filter(|(t, p)| t == p).count();
    hits as f64 / y_true.len() as f64
}

pub fn balanced_accuracy(y_true: &[u8], y_pred: &[u8]) -> f64 {
    let c = confusion(y_true, y_pred);
    let recalls: Vec<f64> = (0..CLASSES)
        .filter_map(|k| {
            let support: u64 = c[k].iter().sum();
            (support > 0).then(|| c[k][k] as f64 / support as f64)
        })
        .collect();
    if recalls.is_empty() {
        return f64::NAN;
    }
    recalls.iter().sum::<f64>() / recalls.len() as f64
}

/// Quadratic-weighted Cohen's kappa over the fixed labels 0..=4.
pub fn qwk(y_true: &[u8], y_pred: &[u8]) -> f64 {
    let c = confusion(y_true, y_pred);
    let n: u64 = c.iter().flatten().sum();
    if n == 0 {
        return f64::NAN;
    }
    let rows: Vec<f64> = (0..CLASSES)
        .map(|i| c[i].iter().sum::<u64>() as f64)
        .collect();
    let cols: Vec<f64> = (0..CLASSES)
        .map(|j| (0..CLASSES).map(|i| c[i][j]).sum::<u64>() as f64)
        .collect();
    let (mut observed, mut expected) = (0.0, 0.0);
    for i in 0..CLASSES {
        for j in 0..CLASSES {
            let w = ((i as f64) - (j as f64)).powi(2);
            observed += w * c[i][j] as f64;
            expected += w * rows[i] * cols[j] / n as f64;
        }
    }
    if expected == 0.0 {
        return f64::NAN;
    }
    1.0 - observed / expected
}

#[allow(clippy::needless_range_loop)] // class indices address a matrix
/// Macro F1 over all five labels; a label with no true and no predicted cases scores 0.
pub fn macro_f1(y_true: &[u8], y_pred: &[u8]) -> f64 {
    if y_true.is_empty() {
        return f64::NAN;
    }
    let c = confusion(y_true, y_pred);
    let mut total = 0.0;
    for k in 0..CLASSES {
        let tp = c[k][k] as f64;
        let fp = (0..CLASSES)
            .filter(|&i| i != k)
            .map(|i| c[i][k])
            .sum::<u64>() as f64;
        let fn_ = (0..CLASSES)
            .filter(|&j| j != k)
            .map(|j| c[k][j])
            .sum::<u64>() as f64;
        let denom = 2.0 * tp + fp + fn_;
        total += if denom > 0.0 { 2.0 * tp / denom } else { 0.0 };
    }
    total / CLASSES as f64
}

pub fn mae(y_true: &[u8], y_pred: &[u8]) -> f64 {
    if y_true.is_empty() {
        return f64::NAN;
    }
    let sum: f64 = y_true
        .iter()
        .zip(y_pred)
        .map(|(&t, &p)| (f64::from(t) - f64::from(p)).abs())
        .sum();
    sum / y_true.len() as f64
}

/// Index of the largest probability (the first one on ties, as numpy's argmax).
pub fn argmax(probs: &[f64]) -> u8 {
    let mut best = 0;
    for (i, p) in probs.iter().enumerate() {
        if *p > probs[best] {
            best = i;
        }
    }
    best as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_undefined() {
        let y = [0, 1, 2, 3, 4];
        assert_eq!(accuracy(&y, &y), 1.0);
        assert_eq!(qwk(&y, &y), 1.0);
        assert_eq!(macro_f1(&y, &y), 1.0);
        assert_eq!(mae(&y, &y), 0.0);
        assert!(accuracy(&[], &[]).is_nan());
        // All one class in truth and prediction: kappa is undefined.
        assert!(qwk(&[2, 2], &[2, 2]).is_nan());
        assert_eq!(argmax(&[0.1, 0.4, 0.4, 0.1]), 1);
    }
}
