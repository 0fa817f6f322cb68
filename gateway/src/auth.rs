//! Client API keys: each key belongs to one tenant. Only SHA-256 hashes of keys are stored, and a
//! presented key is compared against every stored hash in constant time, so neither the config
//! file nor response timings reveal a key.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::config::TenantConfig;
use crate::rate_limit::RateLimiter;

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

/// A tenant as the gateway sees it at run time.
#[derive(Debug)]
pub struct Tenant {
    pub name: String,
    /// May read every tenant's usage.
    pub admin: bool,
    allowed_models: AllowedModels,
    pub rate_limiter: Option<RateLimiter>,
}

#[derive(Debug)]
enum AllowedModels {
    All,
    Only(Vec<String>),
}

impl Tenant {
    pub fn may_use(&self, model: &str) -> bool {
        match &self.allowed_models {
            AllowedModels::All => true,
            AllowedModels::Only(models) => models.iter().any(|m| m == model),
        }
    }
}

/// Why a request is not authenticated. Clients get one message for all of them, so that a
/// caller cannot tell a missing key from a wrong one; the reason goes only to the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no Authorization header")]
    Missing,
    #[error("Authorization header is not 'Bearer <key>'")]
    Malformed,
    #[error("unknown key")]
    Unknown,
}

/// Maps presented keys to tenants.
pub struct Authenticator {
    hashes: Vec<KeyHash>,
    /// `owners[i]` is the tenant of `hashes[i]`.
    owners: Vec<Arc<Tenant>>,
    tenants: Vec<Arc<Tenant>>,
}

impl Authenticator {
    /// Builds the table from validated tenant configs.
    pub fn new(configs: &[TenantConfig]) -> Self {
        let mut hashes = Vec::new();
        let mut owners = Vec::new();
        let mut tenants = Vec::new();
        for config in configs {
            let allowed_models = if config.allowed_models.iter().any(|m| m == "*") {
                AllowedModels::All
            } else {
                AllowedModels::Only(config.allowed_models.clone())
            };
            let tenant = Arc::new(Tenant {
                name: config.name.clone(),
                admin: config.admin,
                allowed_models,
                rate_limiter: config.rate_limit.map(RateLimiter::per_minute),
            });
            for hash in &config.api_key_hashes {
                // Validated before: an unparsable hash cannot reach this point.
                if let Ok(hash) = hash.parse() {
                    hashes.push(hash);
                    owners.push(tenant.clone());
                }
            }
            tenants.push(tenant);
        }
        Self {
            hashes,
            owners,
            tenants,
        }
    }

    pub fn tenants(&self) -> &[Arc<Tenant>] {
        &self.tenants
    }

    /// Whether some tenant accepts [`DEMO_KEY`].
    pub fn accepts_demo_key(&self) -> bool {
        self.find(KeyHash::of(DEMO_KEY)).is_some()
    }

    /// Authenticates the value of an `Authorization` header.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Arc<Tenant>, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let key = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
            .ok_or(AuthError::Malformed)?;
        let key = std::str::from_utf8(key)
            .map_err(|_| AuthError::Malformed)?
            .trim();
        if key.is_empty() {
            return Err(AuthError::Malformed);
        }
        self.find(KeyHash::of(key)).ok_or(AuthError::Unknown)
    }

    /// Looks at every stored hash whatever matches, without branching on the bytes.
    fn find(&self, presented: KeyHash) -> Option<Arc<Tenant>> {
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, stored) in self.hashes.iter().enumerate() {
            let equal = stored.0.ct_eq(&presented.0);
            index.conditional_assign(&(i as u32), equal);
            found |= equal;
        }
        bool::from(found).then(|| self.owners[index as usize].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str, keys: &[&str], models: &[&str]) -> TenantConfig {
        TenantConfig {
            name: name.to_owned(),
            api_key_hashes: keys.iter().map(|k| KeyHash::of(k).to_string()).collect(),
            allowed_models: models.iter().map(|m| m.to_string()).collect(),
            rate_limit: None,
            budget: None,
            max_escalation_share: None,
            may_force_route: false,
            admin: false,
        }
    }

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
    fn keys_map_to_their_tenant() {
        let auth = Authenticator::new(&[
            tenant("acme", &["k-acme-1", "k-acme-2"], &["*"]),
            tenant("globex", &["k-globex"], &["m1"]),
        ]);
        let found = |h: &str| {
            auth.authenticate(Some(h.as_bytes()))
                .map(|t| t.name.clone())
        };
        assert_eq!(found("Bearer k-acme-2").as_deref(), Ok("acme"));
        assert_eq!(found("Bearer k-globex").as_deref(), Ok("globex"));
        assert_eq!(found("Bearer k-nobody"), Err(AuthError::Unknown));
        assert_eq!(found("Basic k-acme-1"), Err(AuthError::Malformed));
        assert_eq!(found("Bearer "), Err(AuthError::Malformed));
        assert_eq!(auth.authenticate(None).map(|_| ()), Err(AuthError::Missing));
        let globex = auth.authenticate(Some(b"Bearer k-globex")).unwrap();
        assert!(globex.may_use("m1"));
        assert!(!globex.may_use("m2"));
        assert!(!auth.accepts_demo_key());
    }

    #[test]
    fn generated_keys_are_distinct_and_well_formed() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), "sk-sb-".len() + 43);
        assert!(a[6..].chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
