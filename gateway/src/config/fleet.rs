//! `fleet:`: several replicas behind a load balancer share their tenants' budgets, escalation
//! caps, rate limits and sticky conversations in Redis, and ship their ledger records to one
//! table in PostgreSQL. Absent: one gateway, its state and ledger its own.

use std::time::Duration;

use serde::Deserialize;

use super::seconds;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    pub redis: RedisConfig,
    /// How many replicas share the rate limits: while Redis is unreachable, each admits its
    /// share of a tenant's limit (the limit ÷ replicas, rounded up).
    pub replicas: u32,
    /// How long a request's estimate stays held when its replica dies before settling it.
    /// Longer than `limits.request_timeout`, so that no running request's hold lapses; the
    /// default is that timeout plus a minute.
    #[serde(default, with = "seconds::optional")]
    pub hold_ttl: Option<Duration>,
    /// The fleet's ledger: every replica ships its records to one table, which reports read.
    /// Absent: each replica keeps its own ledger only.
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// The environment variable holding the connection string (`postgresql://user:password@host/db`
    /// or `host=… user=… password=… dbname=…`): it may carry a password.
    #[serde(default = "default_postgres_env")]
    pub url_env: String,
    /// A batch of records leaves the local outbox at least this often…
    #[serde(default = "default_flush_every_ms")]
    pub flush_every_ms: u64,
    /// …or as soon as this many wait.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// How long one statement (or the connection) may take before the batch is retried.
    #[serde(default = "default_postgres_timeout", with = "seconds")]
    pub timeout: Duration,
    /// How often Redis's spend is checked against the table (and raised where Redis lost it).
    #[serde(default = "default_reconcile_every", with = "seconds")]
    pub reconcile_every: Duration,
}

fn default_reconcile_every() -> Duration {
    Duration::from_secs(60)
}

fn default_postgres_env() -> String {
    "SWITCHBOARD_POSTGRES_URL".to_owned()
}

fn default_flush_every_ms() -> u64 {
    100
}

fn default_batch_rows() -> usize {
    1000
}

fn default_postgres_timeout() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The environment variable holding the server's URL (`redis://[user:password@]host:port[/db]`,
    /// `rediss://` for TLS): it may carry a password, so it is not written in the file.
    #[serde(default = "default_url_env")]
    pub url_env: String,
    /// Every key starts with it, so that several fleets can share one server.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// How long one call may take before the store counts as unreachable for that request.
    #[serde(default = "default_timeout", with = "seconds")]
    pub timeout: Duration,
}

fn default_url_env() -> String {
    "SWITCHBOARD_REDIS_URL".to_owned()
}

fn default_key_prefix() -> String {
    "switchboard".to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}

impl FleetConfig {
    /// The hold time to live in force for requests that may run `request_timeout`.
    pub fn hold_ttl(&self, request_timeout: Duration) -> Duration {
        self.hold_ttl
            .unwrap_or(request_timeout + Duration::from_secs(60))
    }
}
