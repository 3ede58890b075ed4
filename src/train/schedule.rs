//! Learning-rate schedule: linear warmup, then cosine decay to zero, per optimizer step.

/// The learning rate at `step` (0-based) of `total` steps.
pub fn warmup_cosine(base: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if total == 0 {
        return base;
    }
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = (total - warmup).max(1) as f64;
    let t = ((step - warmup) as f64 / span).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays() {
        assert!((warmup_cosine(1.0, 0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((warmup_cosine(1.0, 9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((warmup_cosine(1.0, 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!((warmup_cosine(1.0, 55, 10, 100) - 0.5).abs() < 1e-12);
        assert!(warmup_cosine(1.0, 99, 10, 100) < 0.01);
    }
}
