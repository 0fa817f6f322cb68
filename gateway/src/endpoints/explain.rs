//! `POST /v1/route/explain`: the same body as a chat completion; the router's scores and the
//! policy's decision come back, and nothing is generated, reserved against a budget or
//! recorded (the request is admitted like a chat request: rate limit, in-flight slot).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::extract::{Admitted, JsonBody};
use crate::api::ChatCompletionRequest;
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::pipeline::plan::{self, Route};
use crate::pipeline::{self, ClientHints, classify};
use crate::state::Gateway;

/// Admitted like a chat completion (the router's work is the same), and its in-flight slot
/// held until the answer is ready.
pub async fn explain(
    State(gateway): State<Arc<Gateway>>,
    Admitted {
        tenant,
        permit: _permit,
    }: Admitted,
    hints: ClientHints,
    body: JsonBody<ChatCompletionRequest>,
) -> Result<Json<Value>, ApiError> {
    let request = body.read().await?;
    explained(&gateway, &tenant, &hints, request)
        .await
        .map(Json)
}

async fn explained(
    gateway: &Gateway,
    tenant: &Tenant,
    hints: &ClientHints,
    request: ChatCompletionRequest,
) -> Result<Value, ApiError> {
    if !tenant.may_use(&request.model) {
        return Err(ApiError::ModelNotFound(request.model));
    }
    let policy = gateway.policy();
    let language = policy.reads_language(&request.model);
    let findings = classify::classify(gateway.classifier.as_ref(), &request, language).await;
    let scores = json!({
        "complexity": findings.classification.as_ref().map(|c| c.complexity),
        "domain": findings.classification.as_ref().map(|c| c.domain.as_str()),
        "language": findings.language,
        "private_data": findings.private_data.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
    });
    let planner = pipeline::planner(gateway);
    let explained = planner.explain(plan::Request {
        policy: &policy,
        tenant,
        chat: &request,
        hints,
        findings: &findings,
    });
    let explained = explained.await?;
    let decision = match explained {
        None => json!({
            "route": "named",
            "reason": "no routing section: the named model answers",
            "models": [request.model],
        }),
        Some((decision, route)) => {
            let (route, models, refusal) = match route {
                Ok(Route::Local(model)) => ("local", vec![model.name.clone()], None),
                Ok(Route::Remote(chain)) => (
                    "remote",
                    chain.iter().map(|t| t.model.name.clone()).collect(),
                    None,
                ),
                Err(error) => ("refused", Vec::new(), Some(error.body()["error"].clone())),
            };
            let tier = match decision.destination {
                switchboard_policies::Destination::Tier(tier) => {
                    policy.routing.as_ref().map(|r| r.tier(tier).name.clone())
                }
                _ => None,
            };
            json!({
                "route": route,
                "tier": tier,
                "models": models,
                "reason": decision.reason.to_string(),
                "reason_code": decision.reason.label(),
                "redact": decision.redact,
                "refusal": refusal,
            })
        }
    };
    Ok(json!({
        "object": "route.explanation",
        "model": request.model,
        "tenant": tenant.name,
        "scores": scores,
        "decision": decision,
    }))
}
