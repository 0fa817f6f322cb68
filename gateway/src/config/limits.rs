//! `listen`, `limits:` and `upstream:`: where the gateway listens, what one request and the
//! whole process may take, and how remote calls are retried.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::seconds;

pub(super) fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// Bounds on what one client and the whole server may take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted request body; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Requests handled at once; beyond this the gateway sheds load with 503 + `Retry-After`.
    pub max_in_flight: usize,
    /// Client connections open at once; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long a request's headers may take to arrive, and how long a connection may sit
    /// idle between requests, before it is closed.
    #[serde(with = "seconds")]
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive; slower clients get 408.
    #[serde(with = "seconds")]
    pub body_timeout: Duration,
    /// How long the gateway waits for a client to read what it writes (a stream nobody reads)
    /// before it closes the connection.
    #[serde(with = "seconds")]
    pub send_timeout: Duration,
    /// The overall deadline of one request, retries, fallbacks and streaming included.
    #[serde(with = "seconds")]
    pub request_timeout: Duration,
    /// After SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[serde(with = "seconds")]
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_in_flight: 1024,
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// How the one shared HTTP client talks to every provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    #[serde(with = "seconds")]
    pub connect_timeout: Duration,
    /// Longest silence between two reads of a response (headers or body bytes).
    #[serde(with = "seconds")]
    pub read_timeout: Duration,
    pub retry: RetrySettings,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            retry: RetrySettings::default(),
        }
    }
}

/// Retries of one target before the fallback chain moves on: exponential backoff with full
/// jitter, at least as long as the upstream's `Retry-After`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Attempts per target, the first one included (1 = no retry).
    pub max_attempts: u32,
    #[serde(with = "seconds")]
    pub initial_backoff: Duration,
    #[serde(with = "seconds")]
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited for: the chain moves to its next target.
    #[serde(with = "seconds")]
    pub max_retry_after: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
        }
    }
}
