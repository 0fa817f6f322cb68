//! What every handler takes from a request, as typed extractors: its id, its caller, its
//! admission, and its JSON body read within the limits.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::Tenant;
use crate::config::Limits;
use crate::error::ApiError;
use crate::pipeline::ClientHints;
use crate::state::Gateway;

/// The caller's `x-request-id` when it is a sane token, else a new one; it is echoed back and
/// tags every log line of the request.
pub struct RequestId(pub String);

impl<S: Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|id| {
                !id.is_empty()
                    && id.len() <= 128
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            })
            .map_or_else(|| format!("req_{:016x}", fastrand::u64(..)), str::to_owned);
        Ok(Self(id))
    }
}

/// The tenant whose key the request carries; 401 otherwise, logging only why.
pub struct Caller(pub Arc<Tenant>);

impl FromRequestParts<Arc<Gateway>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        gateway: &Arc<Gateway>,
    ) -> Result<Self, ApiError> {
        authenticate(gateway, &parts.headers).map(Self)
    }
}

fn authenticate(gateway: &Gateway, headers: &HeaderMap) -> Result<Arc<Tenant>, ApiError> {
    let key = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    gateway.auth().authenticate(key).map_err(|reason| {
        tracing::info!(%reason, "request not authenticated");
        ApiError::Unauthorized
    })
}

/// A request let in to do work: the gateway is not shutting down, it holds a slot in the
/// in-flight limit, its key is known and its tenant is under its rate limit.
pub struct Admitted {
    pub tenant: Arc<Tenant>,
    /// The request's slot in the in-flight limit: held until it is answered.
    pub permit: OwnedSemaphorePermit,
}

/// Why a request was not let in, and whose it was when that is known (a tenant over its rate
/// limit is counted as that tenant's).
pub struct Refused {
    pub error: ApiError,
    pub tenant: Option<Arc<Tenant>>,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        self.error.into_response()
    }
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            tenant: None,
        }
    }
}

impl FromRequestParts<Arc<Gateway>> for Admitted {
    type Rejection = Refused;

    async fn from_request_parts(
        parts: &mut Parts,
        gateway: &Arc<Gateway>,
    ) -> Result<Self, Refused> {
        if gateway.is_shutting_down() {
            return Err(ApiError::ShuttingDown.into());
        }
        let overloaded = |_| ApiError::Overloaded {
            retry_after: Duration::from_secs(1),
        };
        let permit = gateway.in_flight.clone().try_acquire_owned();
        let permit = permit.map_err(overloaded)?;
        let tenant = authenticate(gateway, &parts.headers)?;
        if let Err(wait) = gateway.shared.admit(&tenant).await {
            return Err(Refused {
                error: ApiError::RateLimited {
                    message: format!("Tenant '{}' is over its request rate limit.", tenant.name),
                    retry_after: Some(wait),
                },
                tenant: Some(tenant),
            });
        }
        Ok(Self { tenant, permit })
    }
}

impl<S: Sync> FromRequestParts<S> for ClientHints {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(ClientHints::from_headers(&parts.headers))
    }
}

/// What serde's types cannot check about a request body.
pub trait Validate {
    fn validate(&self) -> Result<(), ApiError>;
}

/// A JSON body of type `T`, read only when the handler asks for it ([`JsonBody::read`]): a
/// request that is not let in is answered without reading its body.
pub struct JsonBody<T> {
    body: Body,
    /// The length the client declared, to refuse an oversized body before reading it.
    declared: Option<u64>,
    limits: Limits,
    of: PhantomData<fn() -> T>,
}

impl<T> FromRequest<Arc<Gateway>> for JsonBody<T> {
    type Rejection = Infallible;

    async fn from_request(request: Request, gateway: &Arc<Gateway>) -> Result<Self, Infallible> {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        Ok(Self {
            body: request.into_body(),
            declared,
            limits: gateway.limits.clone(),
            of: PhantomData,
        })
    }
}

impl<T: DeserializeOwned + Validate> JsonBody<T> {
    /// Reads, parses and validates the body; errors name the JSON path of the problem.
    pub async fn read(self) -> Result<T, ApiError> {
        let bytes = self.read_bytes().await?;
        let value: T = parse_json(&bytes)?;
        value.validate()?;
        Ok(value)
    }

    /// Reads the body within `limits.body_timeout`, refusing more than
    /// `limits.max_body_bytes` (before reading them when the client says how long it is).
    async fn read_bytes(self) -> Result<Bytes, ApiError> {
        let limits = self.limits;
        let limit = limits.max_body_bytes;
        if self.declared.is_some_and(|len| len > limit as u64) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let read = axum::body::to_bytes(self.body, limit);
        let Ok(read) = tokio::time::timeout(limits.body_timeout, read).await else {
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
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
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
