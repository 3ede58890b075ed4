//! Content identities: a 32-byte blake3 [`Hash`], shown as 12 hex characters, stored as 64.
//!
//! Every object, cohort version, split, label fraction and run is named by a `Hash`. Users may
//! type any unique prefix of at least [`MIN_PREFIX`] hex characters; [`Prefix`] validates one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How many hex characters ids are shown with.
pub const SHORT_LEN: usize = 12;
/// The shortest prefix accepted on the command line.
pub const MIN_PREFIX: usize = 4;

/// A blake3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash([u8; 32]);

impl Hash {
    /// The hash of a byte string.
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// The hash of a value's canonical JSON (sorted keys, no whitespace).
    pub fn of_json(value: &serde_json::Value) -> Hash {
        Hash::of(canonical_json(value).as_bytes())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Hash {
        Hash(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The full 64-character lowercase hex form, as stored in the index.
    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// The 12-character form shown to users.
    pub fn short(&self) -> String {
        let mut s = self.hex();
        s.truncate(SHORT_LEN);
        s
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Hash {
        Hash(*h.as_bytes())
    }
}

impl fmt::Display for Hash {
    /// `{}` prints the short form, `{:#}` the full one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            f.write_str(&self.hex())
        } else {
            f.write_str(&self.short())
        }
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.short())
    }
}

/// A string that is not a 64-character hex hash.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a hash: expected 64 hexadecimal characters")]
pub struct BadHash(pub String);

impl FromStr for Hash {
    type Err = BadHash;
    fn from_str(s: &str) -> Result<Hash, BadHash> {
        blake3::Hash::from_hex(s)
            .map(Hash::from)
            .map_err(|_| BadHash(s.to_string()))
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A user-typed id prefix: at least [`MIN_PREFIX`] lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix(String);

/// Why a typed id is not a usable prefix.
#[derive(Debug, thiserror::Error)]
pub enum PrefixError {
    #[error("id `{0}` is too short: type at least {MIN_PREFIX} hex characters")]
    TooShort(String),
    #[error("id `{0}` is not hexadecimal")]
    NotHex(String),
}

impl Prefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, hash: &Hash) -> bool {
        hash.hex().starts_with(&self.0)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let t = s.trim().to_ascii_lowercase();
        if t.len() > 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PrefixError::NotHex(s.to_string()));
        }
        if t.len() < MIN_PREFIX {
            return Err(PrefixError::TooShort(s.to_string()));
        }
        Ok(Prefix(t))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Canonical JSON: object keys sorted, no insignificant whitespace. Identities hash this form.
///
/// Keys are sorted here explicitly, so the form does not depend on serde_json's map order.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_short_form() {
        let h = Hash::of(b"knee");
        let parsed: Hash = h.hex().parse().expect("own hex parses");
        assert_eq!(parsed, h);
        assert_eq!(h.short().len(), SHORT_LEN);
        assert_eq!(format!("{h}"), h.short());
        assert_eq!(format!("{h:#}"), h.hex());
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(matches!(
            "ab".parse::<Prefix>(),
            Err(PrefixError::TooShort(_))
        ));
        assert!(matches!(
            "zzzz".parse::<Prefix>(),
            Err(PrefixError::NotHex(_))
        ));
        let p: Prefix = "ABCD12".parse().expect("valid prefix");
        assert_eq!(p.as_str(), "abcd12");
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let v: serde_json::Value = serde_json::from_str(r#"{"b":1,"a":{"d":2,"c":3}}"#).unwrap();
        assert_eq!(canonical_json(&v), r#"{"a":{"c":3,"d":2},"b":1}"#);
    }
}
