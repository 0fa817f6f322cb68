//! A chat request's way from its parsed body to its answer, in three steps:
//! [`classify`] (what the router finds: scores, private data, language) → [`plan`] (the
//! policy's decision and the models that carry it out; the rules themselves are
//! `switchboard_policies::decide`) → [`execute`] (the local engine or the remote chain, the
//! confidence cascade, the local fallback). Each step notes what it did in the request's
//! [`RequestRecord`], which the caller settles.

pub mod classify;
pub mod execute;
pub mod hints;
pub mod plan;
pub mod record;

use std::sync::Arc;

pub use classify::{Classification, Findings};
pub use execute::{Answer, Answerer, Executor};
pub use hints::ClientHints;
pub use plan::Planner;
pub use record::{RequestRecord, Settlement};

use crate::api::ChatCompletionRequest;
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::state::Gateway;

/// Answers `tenant`'s chat completion `request`: classify → plan → execute.
pub async fn chat(
    gateway: &Gateway,
    tenant: &Tenant,
    request: ChatCompletionRequest,
    hints: &ClientHints,
    record: &mut RequestRecord,
) -> Result<Answer, ApiError> {
    let policy = gateway.policy();
    let language = policy.reads_language(&request.model);
    let findings = classify::classify(gateway.classifier.as_ref(), &request, language).await;
    let routing_text = gateway.keep_routing_text.then(|| {
        let turns = classify::turns(&request.messages);
        switchboard_router::conversation::routing_text(&turns)
    });
    record.classified(findings, request.text_bytes(), routing_text);
    if !tenant.may_use(&request.model) {
        return Err(ApiError::ModelNotFound(request.model));
    }

    let mut plan = planner(gateway)
        .plan(plan::Request {
            policy: &policy,
            tenant,
            chat: &request,
            hints,
            findings: record.findings(),
        })
        .await?;
    let reason = plan.decision.as_ref().map(|d| d.reason.clone());
    let settlement = Settlement {
        policy: Arc::clone(&policy),
        reservation: plan.reservation.take(),
    };
    record.planned(reason, settlement);

    executor(gateway, hints).run(plan, request, record).await
}

/// The planning step's view of the gateway.
pub fn planner(gateway: &Gateway) -> Planner<'_> {
    Planner {
        catalog: &gateway.catalog,
        shared: &gateway.shared,
        metrics: &gateway.metrics,
    }
}

fn executor<'g>(gateway: &'g Gateway, hints: &ClientHints) -> Executor<'g> {
    Executor {
        remote: &gateway.remote,
        metrics: &gateway.metrics,
        timeout: gateway.limits.request_timeout,
        local_reach: hints.local_reach,
    }
}
