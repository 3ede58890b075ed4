//! Lossless JSON for `f64` where a value must come back bit for bit (checkpointed loop state,
//! training curves): finite values are written as numbers (serde_json prints the shortest
//! representation that round-trips, and parses it exactly with its `float_roundtrip` feature),
//! non-finite ones as the strings `"NaN"`, `"inf"` and `"-inf"` (JSON has no number for them,
//! and serde_json would write `null`). `null` reads as NaN, so checkpoints written before this
//! format still load.

use serde::{Deserialize, Deserializer, Serializer};

/// `#[serde(with = "crate::lossless::f64")]`
pub mod f64 {
    use super::*;

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(f64),
            Text(String),
            Null(()),
        }
        match Option::<Repr>::deserialize(d)? {
            Some(Repr::Number(v)) => Ok(v),
            None | Some(Repr::Null(())) => Ok(f64::NAN),
            Some(Repr::Text(t)) => match t.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!(
                    "expected a number, \"NaN\", \"inf\" or \"-inf\", found \"{}\"",
                    crate::quote::clip(other)
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Holder {
        #[serde(with = "super::f64")]
        v: f64,
    }

    fn round_trip(v: f64) -> f64 {
        let json = serde_json::to_string(&Holder { v }).unwrap();
        serde_json::from_str::<Holder>(&json).unwrap().v
    }

    #[test]
    fn non_finite_values_survive() {
        assert!(round_trip(f64::NAN).is_nan());
        assert_eq!(round_trip(f64::INFINITY), f64::INFINITY);
        assert_eq!(round_trip(f64::NEG_INFINITY), f64::NEG_INFINITY);
        let old: Holder = serde_json::from_str(r#"{"v": null}"#).unwrap();
        assert!(old.v.is_nan());
        assert!(serde_json::from_str::<Holder>(r#"{"v": "x"}"#).is_err());
    }

    #[test]
    fn values_that_lost_a_ulp_before_come_back_exactly() {
        // Parsed without `float_roundtrip`, this value came back one ULP off.
        let v = f64::from_bits(0x3f52_9edb_3e6c_8e1c); // 0.0011365071347392347
        assert_eq!(round_trip(v).to_bits(), v.to_bits());
    }

    proptest! {
        #[test]
        fn every_finite_value_round_trips_bit_for_bit(bits in any::<u64>()) {
            let v = f64::from_bits(bits);
            prop_assume!(v.is_finite());
            prop_assert_eq!(round_trip(v).to_bits(), bits);
        }
    }
}
