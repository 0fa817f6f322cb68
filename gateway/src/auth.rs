//! Who is calling: each client key belongs to one tenant. A presented key is hashed and compared
//! against every stored hash ([`crate::keys`]) in constant time, so neither the config file nor
//! response timings reveal a key.

use std::sync::Arc;

use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::config::TenantConfig;
use crate::keys::{DEMO_KEY, KeyHash};
use crate::rate_limit::RateLimiter;

/// A tenant as the gateway sees it at run time.
#[derive(Debug)]
pub struct Tenant {
    pub name: String,
    /// May read every tenant's usage.
    pub admin: bool,
    allowed_models: AllowedModels,
    /// Its rate limit, with the bucket of a gateway on its own.
    rate_limit: Option<(u32, RateLimiter)>,
}

#[derive(Debug)]
enum AllowedModels {
    All,
    Only(Vec<String>),
}

impl Tenant {
    /// Its rate limit, if it has one.
    pub fn requests_per_minute(&self) -> Option<u32> {
        self.rate_limit.as_ref().map(|(per_minute, _)| *per_minute)
    }

    /// Takes one request from its own bucket, or says how long until one is there.
    pub fn admit_locally(&self) -> Result<(), std::time::Duration> {
        match &self.rate_limit {
            Some((_, limiter)) => limiter.acquire(std::time::Instant::now()),
            None => Ok(()),
        }
    }

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
                rate_limit: config.rate_limit.map(|limit| {
                    let per_minute = limit.requests_per_minute;
                    (per_minute, RateLimiter::new(per_minute))
                }),
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
            let equal = stored.ct_eq(&presented);
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
}
