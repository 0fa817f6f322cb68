//! The HTTP routes, one module per group.

mod chat;
mod health;
mod models;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::server::Gateway;

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
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
    gateway.auth.authenticate(header).map_err(|reason| {
        tracing::info!(%reason, "request not authenticated");
        ApiError::Unauthorized
    })
}
