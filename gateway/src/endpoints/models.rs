//! `GET /v1/models`: the models the caller's key may use and that can answer now, and the
//! routing model (`auto`) when the policy routes.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::extract::Caller;
use crate::error::ApiError;
use crate::state::Gateway;

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
    Caller(tenant): Caller,
) -> Result<Json<Value>, ApiError> {
    let data: Vec<Value> = models(&gateway)
        .into_iter()
        .filter(|(name, _)| tenant.may_use(name))
        .map(|(name, owner)| model_object(&name, owner))
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// Every model that can answer now, by name, with its owner (`local`, the provider's name, or
/// `switchboard` for the routing model).
fn models(gateway: &Gateway) -> Vec<(String, &str)> {
    let routing = gateway.policy().routing.as_ref().map(|r| r.model.clone());
    let routing = routing.into_iter().map(|name| (name, "switchboard"));
    let catalog = gateway.catalog.usable_models();
    routing
        .chain(catalog.map(|(name, owner)| (name.to_owned(), owner)))
        .collect()
}

pub async fn retrieve(
    State(gateway): State<Arc<Gateway>>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    models(&gateway)
        .into_iter()
        .find(|(name, _)| *name == id && tenant.may_use(name))
        .map(|(name, owner)| Json(model_object(&name, owner)))
        .ok_or(ApiError::ModelNotFound(id))
}
