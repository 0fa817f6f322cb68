//! `GET /v1/models`: the models the caller's key may use and that can answer now.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::authenticate;
use crate::error::ApiError;
use crate::server::Gateway;

fn model_object(name: &str, owner: &str) -> Value {
    json!({
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": owner,
    })
}

pub async fn list(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let tenant = authenticate(&gateway, &headers)?;
    let data: Vec<Value> = gateway
        .catalog
        .usable_models()
        .filter(|(name, _)| tenant.may_use(name))
        .map(|(name, owner)| model_object(name, owner))
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

pub async fn retrieve(
    State(gateway): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let tenant = authenticate(&gateway, &headers)?;
    gateway
        .catalog
        .usable_models()
        .find(|(name, _)| *name == id && tenant.may_use(name))
        .map(|(name, owner)| Json(model_object(name, owner)))
        .ok_or(ApiError::ModelNotFound(id))
}
