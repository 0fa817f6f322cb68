//! The HTTP routes, one module per group.

mod chat;
mod embeddings;
mod explain;
mod health;
mod models;
mod usage;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::accounting::RequestRecord;
use crate::config::Limits;
use crate::error::ApiError;
use crate::server::Gateway;

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/route/explain", post(explain::explain))
        .route("/v1/usage", get(usage::usage))
        .route("/v1/feedback", post(usage::feedback))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*id}", get(models::retrieve))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(unknown_route)
        .method_not_allowed_fallback(unknown_route)
        .with_state(gateway)
}

async fn unknown_route(request: Request) -> Response {
    ApiError::NotFound {
        method: request.method().to_string(),
        path: request.uri().path().chars().take(200).collect(),
    }
    .into_response()
}

/// The caller's `x-request-id` when it is a sane token, else a new one; it is echoed back and
/// tags every log line of the request.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| format!("req_{:016x}", fastrand::u64(..)), str::to_owned)
}

/// Resolves the caller's tenant or answers 401, logging only why.
fn authenticate(
    gateway: &Gateway,
    headers: &HeaderMap,
) -> Result<Arc<crate::auth::Tenant>, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    gateway.auth().authenticate(header).map_err(|reason| {
        tracing::info!(%reason, "request not authenticated");
        ApiError::Unauthorized
    })
}

/// Answers with `error`, noting its status and code in the request's record.
fn failed(error: ApiError, record: &mut RequestRecord) -> Response {
    record.status = error.status().as_u16();
    record.error_code = Some(error.code());
    error.into_response()
}

/// Echoes the request id (as `x-request-id` and `x-switchboard-request-id`), so that a client
/// can quote it, send feedback on the answer, and an operator find the log line.
fn tag_with_id(response: &mut Response, id: &str) {
    if let Ok(value) = axum::http::HeaderValue::from_str(id) {
        let headers = response.headers_mut();
        headers.insert("x-switchboard-request-id", value.clone());
        headers.insert("x-request-id", value);
    }
}

/// What every API request goes through first: not shutting down, a slot in the in-flight limit
/// (held by the record until it settles), a known key, the tenant's rate limit.
fn admit(
    gateway: &Gateway,
    headers: &HeaderMap,
    record: &mut RequestRecord,
) -> Result<Arc<crate::auth::Tenant>, ApiError> {
    if gateway.is_shutting_down() {
        return Err(ApiError::ShuttingDown);
    }
    let permit =
        gateway
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Overloaded {
                retry_after: std::time::Duration::from_secs(1),
            })?;
    record.hold(permit);
    let tenant = authenticate(gateway, headers)?;
    record.tenant = tenant.name.clone();
    if let Some(limiter) = &tenant.rate_limiter {
        limiter
            .acquire(std::time::Instant::now())
            .map_err(|wait| ApiError::RateLimited {
                message: format!("Tenant '{}' is over its request rate limit.", tenant.name),
                retry_after: Some(wait),
            })?;
    }
    Ok(tenant)
}

/// Reads the body within `limits.body_timeout`, refusing more than `limits.max_body_bytes`
/// (before reading them when the client says how long it is).
async fn read_body(body: Body, headers: &HeaderMap, limits: &Limits) -> Result<Bytes, ApiError> {
    let limit = limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let read = tokio::time::timeout(limits.body_timeout, axum::body::to_bytes(body, limit));
    let Ok(read) = read.await else {
        return Err(ApiError::BodyTimeout(limits.body_timeout));
    };
    read.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::bad_request("The request body could not be read.", None)
        }
    })
}

/// Parses a JSON body; errors name the JSON path of the problem.
fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "The request body is empty; send a JSON request.",
            None,
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let param = (path != "." && !path.starts_with('?')).then_some(path);
        let message = match &param {
            Some(path) => format!("Invalid request body at '{path}': {inner}"),
            None => format!("Invalid request body: {inner}"),
        };
        ApiError::BadRequest { message, param }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}"), None))?;
    Ok(value)
}
