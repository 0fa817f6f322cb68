//! Client API keys and their hashes: only SHA-256 hashes of keys are stored (in the policy
//! file's `api_key_hashes`), never the keys.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// The key that the shipped example config accepts, shown in the README for trying things out.
/// `serve` warns while a tenant accepts it.
pub const DEMO_KEY: &str = "sk-switchboard-demo";

/// SHA-256 of an API key, written `sha256:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }
}

/// Compared in constant time, so that response timings reveal nothing of a stored hash.
impl ConstantTimeEq for KeyHash {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.0.ct_eq(&other.0)
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("'{0}' is not a key hash: expected sha256: followed by 64 hex digits")]
pub struct BadKeyHash(String);

impl FromStr for KeyHash {
    type Err = BadKeyHash;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadKeyHash(s.chars().take(80).collect());
        let digits = s.strip_prefix("sha256:").ok_or_else(bad)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(digits, &mut bytes).map_err(|_| bad())?;
        Ok(Self(bytes))
    }
}

/// Makes a new random client key (`sk-sb-` and 43 base-62 characters, about 256 bits).
pub fn generate_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut random = [0u8; 64];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    let body: String = random
        .iter()
        .filter(|&&b| b < 248) // 248 = 4 * 62: keeps the choice uniform
        .take(43)
        .map(|&b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect();
    format!("sk-sb-{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_through_their_text_form() {
        let hash = KeyHash::of("foo");
        assert_eq!(
            hash.to_string(),
            "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        );
        assert_eq!(hash.to_string().parse::<KeyHash>(), Ok(hash));
        assert!("2c26b46b".parse::<KeyHash>().is_err());
        assert!("sha256:2c26".parse::<KeyHash>().is_err());
    }

    #[test]
    fn generated_keys_are_distinct_and_well_formed() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), "sk-sb-".len() + 43);
        assert!(a[6..].chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
