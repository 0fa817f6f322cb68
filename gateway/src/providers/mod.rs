//! Who answers: remote providers (one module per wire format, and the chain that tries a
//! model's targets in order with retries), and the local tier (the in-process engine and the
//! servers of its pool).
//!
//! Everything a provider returns is already in OpenAI's format: a non-streamed body, or a stream
//! of chunks, each with the usage it reports so that accounting never has to re-parse.

mod anthropic;
mod chain;
pub mod local;
mod openai;
mod retry;
pub mod sse;

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

pub use chain::{ChainFailed, FromTarget, RemoteClient, StreamStart, Target};

use crate::api::{ChatCompletionRequest, Usage};
use crate::config::{ModelConfig, ProviderConfig, ProviderKind};
use crate::error::ApiError;

/// A configured upstream, ready to call.
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// The full URL of the chat endpoint, query included.
    url: reqwest::Url,
    credentials: Credentials,
    headers: HeaderMap,
}

/// Where a provider's key stands. The key itself lives only in a sensitive `HeaderValue`, which
/// `Debug` prints as `Sensitive`.
pub enum Credentials {
    /// The provider takes no key (a local vLLM or Ollama).
    NotNeeded,
    Key(HeaderName, HeaderValue),
    /// The environment variable that should hold the key is unset or empty.
    Missing {
        env: String,
    },
}

impl Provider {
    /// Builds a provider from its config, reading its key from the environment through `env`.
    pub fn new(config: &ProviderConfig, env: impl Fn(&str) -> Option<String>) -> Self {
        let key_header = config.api_key_header.as_deref().map_or_else(
            || match config.kind {
                ProviderKind::Openai => AUTHORIZATION,
                ProviderKind::Anthropic => HeaderName::from_static("x-api-key"),
            },
            // Validated with the config.
            |name| HeaderName::from_bytes(name.as_bytes()).unwrap_or(AUTHORIZATION),
        );
        let credentials = match &config.api_key_env {
            None => Credentials::NotNeeded,
            Some(var) => match env(var).filter(|k| !k.trim().is_empty()) {
                None => Credentials::Missing { env: var.clone() },
                Some(key) => {
                    let key = key.trim();
                    let value = if key_header == AUTHORIZATION {
                        format!("Bearer {key}")
                    } else {
                        key.to_owned()
                    };
                    match HeaderValue::from_str(&value) {
                        Ok(mut value) => {
                            value.set_sensitive(true);
                            Credentials::Key(key_header, value)
                        }
                        Err(_) => Credentials::Missing { env: var.clone() },
                    }
                }
            },
        };
        let mut headers = HeaderMap::new();
        if config.kind == ProviderKind::Anthropic {
            headers.insert(
                "anthropic-version",
                HeaderValue::from_static(anthropic::API_VERSION),
            );
        }
        for (name, value) in &config.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        let path = match config.kind {
            ProviderKind::Openai => "/chat/completions",
            ProviderKind::Anthropic => "/v1/messages",
        };
        let url = format!("{}{path}", config.base_url.trim_end_matches('/'));
        // Validated with the config; an unparsable URL fails every call with a connect error.
        let url = reqwest::Url::parse_with_params(&url, &config.query)
            .unwrap_or_else(|_| reqwest::Url::parse("http://invalid.invalid/").expect("valid"));
        Self {
            name: config.name.clone(),
            kind: config.kind,
            url,
            credentials,
            headers,
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn is_usable(&self) -> bool {
        !matches!(self.credentials, Credentials::Missing { .. })
    }

    /// The request body this provider wants for `request` sent to `model`.
    fn body(
        &self,
        model: &ModelConfig,
        request: &ChatCompletionRequest,
    ) -> Result<Bytes, UpstreamError> {
        match self.kind {
            ProviderKind::Openai => openai::body(model, request),
            ProviderKind::Anthropic => anthropic::body(model, request),
        }
    }

    fn post(&self, http: &reqwest::Client, body: Bytes) -> reqwest::RequestBuilder {
        let builder = http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.authorized(builder)
    }

    /// A GET of `url` with this provider's headers and key: a health probe.
    fn get(&self, http: &reqwest::Client, url: reqwest::Url) -> reqwest::RequestBuilder {
        self.authorized(http.get(url))
    }

    fn authorized(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let builder = builder.headers(self.headers.clone());
        match &self.credentials {
            Credentials::Key(name, value) => builder.header(name, value),
            _ => builder,
        }
    }

    async fn completion(
        &self,
        response: reqwest::Response,
        model: &ModelConfig,
    ) -> Result<Completion, UpstreamError> {
        let body = read_limited(response, MAX_COMPLETION_BYTES).await?;
        match self.kind {
            ProviderKind::Openai => openai::completion(body),
            ProviderKind::Anthropic => anthropic::completion(&body, model),
        }
    }

    fn chunks(&self, response: reqwest::Response, model: &ModelConfig) -> ChunkStream {
        let events = sse::events(response.bytes_stream());
        match self.kind {
            ProviderKind::Openai => openai::chunks(events),
            ProviderKind::Anthropic => anthropic::chunks(events, model),
        }
    }
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

/// An HTTP client for upstream servers: the timeouts given, keep-alive connections closed
/// after `idle`, no Nagle delay, Switchboard's user agent.
pub fn http_client(
    connect: Duration,
    read: Duration,
    idle: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .read_timeout(read)
        .pool_idle_timeout(idle)
        .tcp_nodelay(true)
        .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A non-streamed answer in OpenAI's format.
#[derive(Debug, Clone)]
pub struct Completion {
    pub body: Bytes,
    pub usage: Option<Usage>,
}

/// One streamed chunk in OpenAI's format (the JSON after `data: `).
#[derive(Debug, Clone)]
pub struct StreamChunk {
    pub json: Bytes,
    /// The usage this chunk reports, if any.
    pub usage: Option<Usage>,
    /// Bytes of answer text it carries: the usage estimate of a stream that reports none.
    pub text_bytes: usize,
    /// A chunk that carries only usage: the gateway asks every upstream for it, and forwards it
    /// only to clients that asked for `stream_options.include_usage`.
    pub usage_only: bool,
}

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<StreamChunk, UpstreamError>> + Send>>;

/// Largest non-streamed upstream body read.
const MAX_COMPLETION_BYTES: usize = 32 * 1024 * 1024;
/// Largest error body read: enough for any provider's message.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// How a call to an upstream failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    #[error("answered {status}: {message}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("sent a malformed response: {0}")]
    Protocol(String),
    #[error("broke off the stream: {0}")]
    Interrupted(String),
    #[error("cannot take this request: {0}")]
    Unsupported(String),
    #[error("has no API key: environment variable {env} is not set")]
    NoCredentials { env: String },
}

impl UpstreamError {
    /// A bounded label for `upstream_errors_total{kind}` and `fallbacks_total{reason}`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Status { status: 429, .. } => "rate_limited",
            UpstreamError::Status { status, .. } if *status >= 500 => "server_error",
            UpstreamError::Status {
                status: 401 | 403, ..
            } => "auth",
            UpstreamError::Status { .. } => "client_error",
            UpstreamError::Protocol(_) => "protocol",
            UpstreamError::Interrupted(_) => "interrupted",
            UpstreamError::Unsupported(_) => "unsupported",
            UpstreamError::NoCredentials { .. } => "no_credentials",
        }
    }

    /// The upstream's HTTP status, when it answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            UpstreamError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Worth another try of the same target.
    fn is_retryable(&self) -> bool {
        match self {
            UpstreamError::Connect(_) | UpstreamError::Timeout | UpstreamError::Interrupted(_) => {
                true
            }
            UpstreamError::Status { status, .. } => matches!(status, 408 | 409 | 429 | 500..),
            _ => false,
        }
    }

    /// Worth trying the next model of the chain: anything but a request the upstream judged
    /// malformed, which the next one would reject too.
    fn allows_fallback(&self) -> bool {
        match self {
            UpstreamError::Status { status, .. } => {
                self.is_retryable() || matches!(status, 401 | 403 | 404)
            }
            _ => true,
        }
    }

    fn from_reqwest(error: reqwest::Error) -> Self {
        // The URL is dropped: it names the provider, and Azure-style URLs carry deployment names.
        let error = error.without_url();
        if error.is_timeout() {
            UpstreamError::Timeout
        } else if error.is_connect() {
            UpstreamError::Connect(error.to_string())
        } else if error.is_body() || error.is_decode() {
            UpstreamError::Interrupted(error.to_string())
        } else {
            UpstreamError::Connect(error.to_string())
        }
    }

    /// What the client gets once the whole chain has failed with this error.
    pub fn into_api_error(self, provider: &str) -> ApiError {
        let message = format!("Upstream provider '{provider}' {self}");
        match self {
            UpstreamError::Timeout => ApiError::UpstreamTimeout { message },
            UpstreamError::Status {
                status: 429,
                retry_after,
                ..
            } => ApiError::RateLimited {
                message,
                retry_after,
            },
            UpstreamError::Status { status, .. } if !is_upstream_fault(status) => {
                ApiError::BadRequest {
                    message,
                    param: None,
                }
            }
            UpstreamError::Unsupported(_) => ApiError::BadRequest {
                message,
                param: None,
            },
            UpstreamError::NoCredentials { .. } => ApiError::Unavailable { message },
            _ => ApiError::UpstreamFailed { message },
        }
    }
}

/// 4xx answers other than these mean the client's request was at fault.
fn is_upstream_fault(status: u16) -> bool {
    matches!(status, 401 | 403 | 404 | 408 | 409 | 429 | 500..)
}

/// Turns a non-2xx response into its error, with the provider's message and `Retry-After`.
async fn check_status(response: reqwest::Response) -> Result<reqwest::Response, UpstreamError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry::retry_after(response.headers());
    let body = read_limited(response, MAX_ERROR_BYTES)
        .await
        .unwrap_or_default();
    Err(UpstreamError::Status {
        status: status.as_u16(),
        retry_after,
        message: error_message(&body),
    })
}

/// The message inside an OpenAI (`{"error":{"message"}}`) or Anthropic
/// (`{"type":"error","error":{"message"}}`) error body, else the start of the body.
fn error_message(body: &[u8]) -> String {
    const MAX_CHARS: usize = 500;
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .and_then(|m| m.as_str())
    });
    let text = match message {
        Some(m) => m.to_owned(),
        None => String::from_utf8_lossy(body).into_owned(),
    };
    let text = text.trim();
    if text.is_empty() {
        "no message".to_owned()
    } else {
        text.chars().take(MAX_CHARS).collect()
    }
}

/// Reads a whole body, refusing more than `limit` bytes.
async fn read_limited(response: reqwest::Response, limit: usize) -> Result<Bytes, UpstreamError> {
    let mut stream = response.bytes_stream();
    let mut body = Vec::new();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(UpstreamError::from_reqwest)?;
        if body.len() + piece.len() > limit {
            return Err(UpstreamError::Protocol(format!(
                "response body larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&piece);
    }
    Ok(body.into())
}

/// Parses one usage object in either format's field names.
fn parse_usage(value: &serde_json::Value) -> Option<Usage> {
    let prompt = value.get("prompt_tokens")?.as_u64()?;
    let completion = value.get("completion_tokens")?.as_u64()?;
    Some(Usage::new(prompt, completion))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_found_in_both_formats() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad model","type":"x"}}"#),
            "bad model"
        );
        assert_eq!(
            error_message(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "Overloaded"
        );
        assert_eq!(error_message(b"<html>502</html>"), "<html>502</html>");
        assert_eq!(error_message(b""), "no message");
        assert_eq!(error_message(&[b'x'; 2000]).len(), 500);
    }

    #[test]
    fn errors_are_classified_for_retry_and_fallback() {
        let status = |status| UpstreamError::Status {
            status,
            retry_after: None,
            message: String::new(),
        };
        assert!(status(503).is_retryable() && status(503).allows_fallback());
        assert!(status(429).is_retryable());
        assert!(!status(401).is_retryable() && status(401).allows_fallback());
        assert!(!status(400).is_retryable() && !status(400).allows_fallback());
        assert!(UpstreamError::Timeout.is_retryable());
        assert_eq!(status(502).kind(), "server_error");
        assert_eq!(
            status(400).into_api_error("p").status(),
            axum::http::StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(500).into_api_error("p").status(),
            axum::http::StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            UpstreamError::Timeout.into_api_error("p").status(),
            axum::http::StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[test]
    fn a_missing_key_leaves_the_provider_unusable_and_a_present_one_is_sensitive() {
        let config: ProviderConfig = serde_yaml::from_str(
            "name: p\nkind: openai\nbase_url: http://x/v1\napi_key_env: K\nmodels: []",
        )
        .unwrap();
        let missing = Provider::new(&config, |_| None);
        assert!(!missing.is_usable());
        let present = Provider::new(&config, |_| Some("sk-secret".into()));
        let Credentials::Key(name, value) = present.credentials() else {
            panic!("expected a key");
        };
        assert_eq!(name, AUTHORIZATION);
        assert!(value.is_sensitive());
        assert!(!format!("{present:?}").contains("sk-secret"));
    }
}
