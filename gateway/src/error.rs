//! What a client sees when a request fails: an OpenAI-shaped body
//! (`{"error":{"message","type","param","code"}}`) with the status DESIGN.md gives each case.
//! Messages never carry a key or prompt text.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    #[error("Invalid API key. Send your Switchboard key as 'Authorization: Bearer <key>'.")]
    Unauthorized,
    #[error("The model '{0}' does not exist or you do not have access to it.")]
    ModelNotFound(String),
    #[error("Unknown endpoint {method} {path}.")]
    NotFound { method: String, path: String },
    #[error("Request body is larger than the limit of {limit} bytes.")]
    PayloadTooLarge { limit: usize },
    #[error("The request body did not arrive within {} seconds.", .0.as_secs_f64())]
    BodyTimeout(Duration),
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("Switchboard is at capacity; retry shortly.")]
    Overloaded { retry_after: Duration },
    #[error("{message}")]
    Unavailable { message: String },
    #[error(
        "Switchboard cannot reach the store that keeps this tenant's budget and escalation cap; retry shortly."
    )]
    StateStoreUnreachable,
    #[error("{message}")]
    UpstreamFailed { message: String },
    #[error("{message}")]
    UpstreamTimeout { message: String },
    #[error("Switchboard is shutting down.")]
    ShuttingDown,
    #[error("{message}")]
    BudgetSpent {
        message: String,
        /// Until the spent window turns.
        retry_after: Duration,
    },
    #[error(
        "The request holds private data ({kinds}), and this gateway's policy refuses such requests. Remove it and retry."
    )]
    PrivateDataRefused { kinds: String },
    #[error("No request of yours has the id '{0}'.")]
    UnknownRequest(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } | ApiError::PrivateDataRefused { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::BudgetSpent { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::ModelNotFound(_)
            | ApiError::NotFound { .. }
            | ApiError::UnknownRequest(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded { .. }
            | ApiError::Unavailable { .. }
            | ApiError::StateStoreUnreachable
            | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// OpenAI's `type` field.
    fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. }
            | ApiError::PrivateDataRefused { .. }
            | ApiError::UnknownRequest(_)
            | ApiError::ModelNotFound(_)
            | ApiError::NotFound { .. }
            | ApiError::PayloadTooLarge { .. }
            | ApiError::BodyTimeout(_) => "invalid_request_error",
            ApiError::Unauthorized => "authentication_error",
            ApiError::RateLimited { .. } => "rate_limit_error",
            ApiError::BudgetSpent { .. } => "insufficient_quota",
            ApiError::Overloaded { .. }
            | ApiError::Unavailable { .. }
            | ApiError::StateStoreUnreachable
            | ApiError::ShuttingDown
            | ApiError::UpstreamFailed { .. }
            | ApiError::UpstreamTimeout { .. } => "server_error",
        }
    }

    /// OpenAI's `code` field: stable, machine-readable.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "invalid_request",
            ApiError::Unauthorized => "invalid_api_key",
            ApiError::ModelNotFound(_) => "model_not_found",
            ApiError::NotFound { .. } => "unknown_url",
            ApiError::PayloadTooLarge { .. } => "request_too_large",
            ApiError::BodyTimeout(_) => "request_timeout",
            ApiError::RateLimited { .. } => "rate_limit_exceeded",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::Unavailable { .. } => "no_provider_available",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::StateStoreUnreachable => "state_store_unreachable",
            ApiError::UpstreamFailed { .. } => "upstream_error",
            ApiError::UpstreamTimeout { .. } => "upstream_timeout",
            ApiError::BudgetSpent { .. } => "budget_exceeded",
            ApiError::PrivateDataRefused { .. } => "private_data_refused",
            ApiError::UnknownRequest(_) => "request_not_found",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after, .. } => *retry_after,
            ApiError::Overloaded { retry_after } => Some(*retry_after),
            ApiError::ShuttingDown | ApiError::StateStoreUnreachable => {
                Some(Duration::from_secs(1))
            }
            ApiError::BudgetSpent { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The JSON error object, also used for an error in the middle of a stream.
    pub fn body(&self) -> serde_json::Value {
        let param = match self {
            ApiError::BadRequest { param, .. } => param.clone(),
            ApiError::ModelNotFound(_) => Some("model".to_owned()),
            _ => None,
        };
        json!({
            "error": {
                "message": self.to_string(),
                "type": self.kind(),
                "param": param,
                "code": self.code(),
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let Some(after) = self.retry_after() {
            // Whole seconds, rounded up: `Retry-After: 0` would invite an immediate retry.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_openai_shaped_with_retry_after_where_it_applies() {
        let error = ApiError::RateLimited {
            message: "slow down".into(),
            retry_after: Some(Duration::from_millis(1500)),
        };
        let body = error.body();
        assert_eq!(body["error"]["message"], "slow down");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let response = ApiError::UpstreamFailed {
            message: "x".into(),
        }
        .into_response();
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }
}
