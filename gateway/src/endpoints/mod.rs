//! The HTTP routes, one module per group.

mod chat;
mod embeddings;
mod explain;
mod extract;
mod health;
mod models;
mod usage;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use self::extract::{Admitted, Refused};
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::pipeline::RequestRecord;
use crate::state::Gateway;

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

/// Answers with `error`, noting its status and code in the request's record.
fn failed(error: ApiError, record: &mut RequestRecord) -> Response {
    record.failed(&error);
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

/// Notes a request's admission in its record: whose it is, and the in-flight slot it holds
/// until it settles.
fn admit(
    admission: Result<Admitted, Refused>,
    record: &mut RequestRecord,
) -> Result<Arc<Tenant>, ApiError> {
    match admission {
        Ok(Admitted { tenant, permit }) => {
            record.admitted(&tenant.name, Some(permit));
            Ok(tenant)
        }
        Err(Refused { error, tenant }) => {
            if let Some(tenant) = tenant {
                record.admitted(&tenant.name, None);
            }
            Err(error)
        }
    }
}
