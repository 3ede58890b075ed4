//! Binary-task metrics, equal to scikit-learn's definitions:
//! `roc_auc_score` (Mann-Whitney U with ties counted one half) and `average_precision_score`
//! (the step-wise sum of precision × recall increments over distinct thresholds, no
//! interpolation). One class present → NaN, never a panic.

/// Area under the ROC curve. `labels` are 0/1; `scores` rank the positive class.
pub fn auroc(labels: &[u8], scores: &[f64]) -> f64 {
    assert_eq!(labels.len(), scores.len(), "one score per label");
    let n_pos = labels.iter().filter(|&&l| l == 1).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return f64::NAN;
    }
    // Midranks of the scores (ties get the average rank), then Mann-Whitney U.
    let ranks = midranks(scores);
    let rank_sum: f64 = labels
        .iter()
        .zip(&ranks)
        .filter(|(l, _)| **l == 1)
        .map(|(_, r)| r)
        .sum();
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    u / (n_pos as f64 * n_neg as f64)
}

/// 1-based midranks (average rank over ties), in input order.
pub fn midranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = mid;
        }
        i = j + 1;
    }
    ranks
}

/// Average precision (sklearn): Σ (R_n − R_{n−1}) P_n over thresholds in decreasing order.
pub fn average_precision(labels: &[u8], scores: &[f64]) -> f64 {
    assert_eq!(labels.len(), scores.len(), "one score per label");
    let n_pos = labels.iter().filter(|&&l| l == 1).count();
    if n_pos == 0 {
        // sklearn warns and returns 0 when there are no positives... but recall is undefined;
        // ktrack reports undefined metrics as NaN.
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    let mut i = 0;
    while i < order.len() {
        // Consume a whole block of tied scores: one threshold.
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if labels[order[i]] == 1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let recall = tp as f64 / n_pos as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    ap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_counts_ties_as_half() {
        assert_eq!(auroc(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8]), 0.75);
        assert_eq!(auroc(&[0, 1], &[0.5, 0.5]), 0.5);
        assert!(auroc(&[1, 1], &[0.2, 0.3]).is_nan());
    }

    #[test]
    fn average_precision_matches_sklearn_examples() {
        // sklearn docs: average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.8333…
        let ap = average_precision(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8]);
        assert!((ap - 0.8333333333333333).abs() < 1e-12, "{ap}");
        assert!(average_precision(&[0, 0], &[0.1, 0.2]).is_nan());
    }
}
