//! Seeded randomness: ChaCha8 streams seeded from blake3 of (purpose, inputs, seed), with the
//! few draws ktrack needs written here, so results never depend on a `rand` version's
//! sampling algorithms. Nothing in ktrack uses an unseeded RNG.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use rand_chacha::ChaCha8Rng as Rng;

/// A stream for one purpose (e.g. `"split"`), keyed by the identities it depends on and a seed.
pub fn stream(purpose: &str, parts: &[&[u8]], seed: u64) -> ChaCha8Rng {
    let mut h = blake3::Hasher::new();
    h.update(b"ktrack.rng/1\0");
    h.update(purpose.as_bytes());
    h.update(b"\0");
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.update(&seed.to_le_bytes());
    ChaCha8Rng::from_seed(*h.finalize().as_bytes())
}

/// A uniform integer in `0..n` (rejection sampling; `n > 0`).
pub fn below(rng: &mut impl RngCore, n: u64) -> u64 {
    assert!(n > 0, "below(0) has no values");
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let v = rng.next_u64();
        if v < zone {
            return v % n;
        }
    }
}

/// A uniform float in [0, 1) with 53 random bits.
pub fn unit(rng: &mut impl RngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal draw (Box-Muller).
pub fn normal(rng: &mut impl RngCore) -> f64 {
    let u1 = 1.0 - unit(rng);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Fisher-Yates shuffle.
pub fn shuffle<T>(rng: &mut impl RngCore, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(stream("x", &[b"c"], 1), |r, _: u64| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(stream("x", &[b"c"], 1), |r, _: u64| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(stream("x", &[b"c"], 2), |r, _: u64| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn draws_stay_in_range() {
        let mut r = stream("t", &[], 0);
        for n in 1..50 {
            assert!(below(&mut r, n) < n);
        }
        let mut v: Vec<u32> = (0..100).collect();
        shuffle(&mut r, &mut v);
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_ne!(v, s);
        let x = unit(&mut r);
        assert!((0.0..1.0).contains(&x));
    }
}
