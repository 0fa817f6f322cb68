//! Liveness, readiness and the Prometheus scrape endpoint.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::state::Gateway;

/// Alive: the process answers HTTP.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready: serving, not shutting down; lists which providers have their keys.
pub async fn readyz(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    let providers: Vec<_> = gateway
        .catalog
        .providers()
        .iter()
        .map(|p| json!({ "name": p.name, "kind": p.kind.as_str(), "usable": p.is_usable() }))
        .collect();
    let (status, state) = if gateway.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else {
        (StatusCode::OK, "ready")
    };
    (
        status,
        Json(json!({ "status": state, "providers": providers })),
    )
}

pub async fn metrics(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    gateway.refresh_component_metrics().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        gateway.metrics.render(),
    )
}
