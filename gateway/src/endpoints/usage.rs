//! `GET /v1/usage` (the ledger's report: a tenant's own, or any tenant's for an admin key) and
//! `POST /v1/feedback` (a user's verdict on an answer, kept in the ledger).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::extract::{Caller, JsonBody, Validate};
use crate::error::ApiError;
use crate::ledger::postgres::FleetTable;
use crate::ledger::{Feedback, FeedbackError};
use crate::report::{self, GroupBy};
use crate::state::Gateway;

#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    since: Option<String>,
    by: Option<String>,
    tenant: Option<String>,
}

pub async fn usage(
    State(gateway): State<Arc<Gateway>>,
    Caller(tenant): Caller,
    Query(query): Query<UsageQuery>,
) -> Response {
    let answer = async {
        let since = report::parse_since(query.since.as_deref().unwrap_or("7d"))
            .map_err(|message| ApiError::bad_request(message, Some("since")))?;
        let by = match query.by.as_deref() {
            None => GroupBy::Tenant,
            Some(text) => GroupBy::parse(text).ok_or_else(|| {
                ApiError::bad_request("'by' must be tenant, domain, route or model.", Some("by"))
            })?,
        };
        // A tenant sees its own requests; an admin key any tenant's, or all.
        let only = match (tenant.admin, query.tenant) {
            (true, wanted) => wanted,
            (false, _) => Some(tenant.name.clone()),
        };
        let since_ms = report::since_ms(since);
        let ledger = gateway.ledger.clone();
        // A fleet's usage is the fleet's table, with its users' verdicts.
        let fleet_entries = match &gateway.fleet_ledger {
            Some(fleet) => {
                let scored = fleet.table.scored_since(since_ms, only.as_deref()).await;
                Some(scored.map_err(|error| {
                    tracing::error!(%error, "cannot read the fleet's ledger");
                    ApiError::Unavailable {
                        message:
                            "The fleet's ledger (PostgreSQL) cannot be read now; retry shortly."
                                .to_owned(),
                    }
                })?)
            }
            None => None,
        };
        let report = tokio::task::spawn_blocking(move || match fleet_entries {
            Some(scored) => report::summarize(scored.into_iter().map(Ok), since_ms, by),
            None => report::build(&ledger, since_ms, by, only.as_deref()),
        })
        .await
        .map_err(|_| ledger_failed())?
        .map_err(|error| {
            tracing::error!(%error, "cannot read the ledger");
            ledger_failed()
        })?;
        Ok::<_, ApiError>(axum::Json(report))
    };
    match answer.await {
        Ok(report) => report.into_response(),
        Err(error) => error.into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    request_id: String,
    /// From -1 (bad) to 1 (good).
    score: f64,
    #[serde(default)]
    comment: Option<String>,
}

const MAX_COMMENT_CHARS: usize = 2000;

impl Validate for FeedbackRequest {
    fn validate(&self) -> Result<(), ApiError> {
        if !(self.score.is_finite() && (-1.0..=1.0).contains(&self.score)) {
            return Err(ApiError::bad_request(
                "'score' must be a number from -1 (bad) to 1 (good).",
                Some("score"),
            ));
        }
        if self
            .comment
            .as_ref()
            .is_some_and(|c| c.chars().count() > MAX_COMMENT_CHARS)
        {
            return Err(ApiError::bad_request(
                format!("'comment' must be at most {MAX_COMMENT_CHARS} characters."),
                Some("comment"),
            ));
        }
        Ok(())
    }
}

pub async fn feedback(
    State(gateway): State<Arc<Gateway>>,
    Caller(tenant): Caller,
    body: JsonBody<FeedbackRequest>,
) -> Response {
    let answer = async {
        let request = body.read().await?;
        let feedback = Feedback {
            request_id: request.request_id,
            tenant: tenant.name.clone(),
            at_ms: crate::api::unix_millis(),
            score: request.score,
            comment: request.comment,
        };
        if let Some(fleet) = &gateway.fleet_ledger {
            return fleet_feedback(&gateway, &fleet.table, feedback).await;
        }
        let written = gateway.ledger.add_feedback(&feedback);
        if let Ok(Ok(())) = written {
            gateway.ledger.durable().await;
        }
        match written {
            Ok(Ok(())) => Ok(axum::Json(json!({
                "object": "feedback",
                "request_id": feedback.request_id,
                "score": feedback.score,
            }))),
            Ok(Err(FeedbackError::UnknownRequest(id))) => Err(ApiError::UnknownRequest(id)),
            Err(error) => {
                tracing::error!(%error, "cannot write feedback to the ledger");
                Err(ledger_failed())
            }
        }
    };
    match answer.await {
        Ok(json) => json.into_response(),
        Err(error) => error.into_response(),
    }
}

/// A verdict in a fleet: kept in the fleet's table (where every replica's reports read it), for
/// a request any replica answered; also in this replica's ledger when it answered it.
async fn fleet_feedback(
    gateway: &Gateway,
    table: &FleetTable,
    feedback: Feedback,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let known = gateway
        .ledger
        .knows(&feedback.tenant, &feedback.request_id)
        .map_err(|error| {
            tracing::error!(%error, "cannot read the ledger");
            ledger_failed()
        })?;
    let recorded = table
        .add_feedback(&feedback, known)
        .await
        .map_err(|error| {
            tracing::error!(%error, "cannot write feedback to the fleet's ledger");
            ApiError::Unavailable {
                message: "The fleet's ledger (PostgreSQL) cannot be written now; retry shortly."
                    .to_owned(),
            }
        })?;
    if !recorded {
        return Err(ApiError::UnknownRequest(feedback.request_id));
    }
    if known && let Ok(Ok(())) = gateway.ledger.add_feedback(&feedback) {
        gateway.ledger.durable().await;
    }
    Ok(axum::Json(json!({
        "object": "feedback",
        "request_id": feedback.request_id,
        "score": feedback.score,
    })))
}

fn ledger_failed() -> ApiError {
    ApiError::Unavailable {
        message: "The ledger cannot be read or written now; retry shortly.".to_owned(),
    }
}
