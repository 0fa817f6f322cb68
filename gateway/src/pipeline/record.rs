//! The record of one request, filled in by the steps that handle it and settled exactly once:
//! when its answer is complete, when it fails, or when the client goes away mid-way (the record
//! is dropped with the response). Settling prices the answer, settles the tenant's reservation,
//! and writes the ledger entry, the metrics and the request's one log line.

use std::sync::Arc;
use std::time::Duration;

use switchboard_policies::{Afterwards, Placement, Reason, Usd};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::{Answerer, Findings};
use crate::api::Usage;
use crate::error::ApiError;
use crate::ledger::{Entry, Ledger};
use crate::metrics::{Metrics, SettledRequest, UNCLASSIFIED, UNKNOWN};
use crate::policy::{Costs, Policy};
use crate::providers::StreamChunk;
use crate::shared_state::Reservation;

/// `status` of a request whose client disconnected first (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

/// How a request is settled: at the prices of the policy it started with, releasing the
/// estimate it held.
pub struct Settlement {
    pub policy: Arc<Policy>,
    pub reservation: Option<Reservation>,
}

pub struct RequestRecord {
    metrics: Arc<Metrics>,
    request_id: String,
    started: Instant,
    /// Unix milliseconds at arrival, for the ledger.
    arrived_ms: u64,
    /// Where the request is recorded when it settles (once its tenant is known).
    ledger: Option<Arc<Ledger>>,
    /// Whose request it is, once its key is known.
    tenant: Option<String>,
    /// Held until the request settles: its slot in the in-flight limit.
    _permit: Option<OwnedSemaphorePermit>,
    findings: Findings,
    /// Bytes of the prompt's text: with the answer's, the usage estimate when an upstream
    /// reports none.
    prompt_bytes: u64,
    /// The router's text of the request, kept in the ledger where the policy asks for it.
    routing_text: Option<String>,
    /// Why the policy sent it where it went, and what happened after.
    reason: Option<(Reason, Option<Afterwards>)>,
    settlement: Option<Settlement>,
    /// Who answers: until someone does, the route the request started on and an unknown model.
    route: Placement,
    provider: Option<String>,
    model: String,
    usage: Option<Usage>,
    /// Whether `usage` is an estimate from the text's bytes.
    usage_estimated: bool,
    answer_bytes: u64,
    first_token: Option<Duration>,
    status: u16,
    /// The error code sent to the client, for the log line.
    error_code: Option<&'static str>,
}

impl RequestRecord {
    /// Starts the record of a request that arrived at `started`, to be answered on `route`.
    /// Until something else is known, a request counts as cancelled by its client.
    pub fn start(
        metrics: Arc<Metrics>,
        request_id: String,
        started: Instant,
        route: Placement,
    ) -> Self {
        metrics.request_started();
        Self {
            metrics,
            request_id,
            started,
            arrived_ms: crate::api::unix_millis(),
            ledger: None,
            tenant: None,
            _permit: None,
            findings: Findings::default(),
            prompt_bytes: 0,
            routing_text: None,
            reason: None,
            settlement: None,
            route,
            provider: None,
            model: UNKNOWN.to_owned(),
            usage: None,
            usage_estimated: false,
            answer_bytes: 0,
            first_token: None,
            status: CLIENT_CLOSED,
            error_code: None,
        }
    }

    /// Records the request in `ledger` when it settles (once it has a tenant).
    pub fn kept_in(mut self, ledger: &Arc<Ledger>) -> Self {
        self.ledger = Some(ledger.clone());
        self
    }

    /// The request is `tenant`'s, holding `permit` (its in-flight slot) until it settles.
    pub fn admitted(&mut self, tenant: &str, permit: Option<OwnedSemaphorePermit>) {
        self.tenant = Some(tenant.to_owned());
        self._permit = permit;
    }

    /// What the router found, and the request's size.
    pub fn classified(
        &mut self,
        findings: Findings,
        prompt_bytes: u64,
        routing_text: Option<String>,
    ) {
        self.findings = findings;
        self.prompt_bytes = prompt_bytes;
        self.routing_text = routing_text;
    }

    /// The policy's reason (`None`: no routing section) and the prices and reservation the
    /// request settles with. A routed request sent to a remote tier counts as an escalation,
    /// by its reason.
    pub fn planned(&mut self, reason: Option<Reason>, settlement: Settlement) {
        let routed = settlement.reservation.as_ref().and_then(|r| r.routed());
        if let (Some(reason), Some(true)) = (&reason, routed) {
            self.metrics.escalated(self.tenant(), reason.label());
        }
        self.reason = reason.map(|reason| (reason, None));
        self.settlement = Some(settlement);
    }

    /// Who answers (or, for a remote chain, who is asked first).
    pub fn answered_by(&mut self, by: &Answerer) {
        self.route = by.route;
        self.provider = Some(by.provider.clone());
        self.model = by.model.clone();
    }

    /// A complete answer's usage, as its upstream reported it, and the bytes of its text
    /// (for an estimate when it reported none).
    pub fn answered(&mut self, usage: Option<Usage>, text_bytes: u64) {
        self.usage = usage;
        self.answer_bytes = text_bytes;
    }

    /// A chunk of a streamed answer went out now.
    pub fn streamed(&mut self, chunk: &StreamChunk) {
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        self.answer_bytes += chunk.text_bytes as u64;
    }

    /// Marks the first streamed chunk as sent now.
    pub fn first_token_now(&mut self) {
        self.first_token
            .get_or_insert_with(|| self.started.elapsed());
    }

    /// Something after the decision changed who answered.
    pub fn afterwards(&mut self, afterwards: Afterwards) {
        if let Some((_, after)) = &mut self.reason {
            *after = Some(afterwards);
        }
    }

    /// The confidence cascade sent the request to a remote tier after all: it counts as an
    /// escalation of its tenant.
    pub fn escalated_after_all(&mut self, afterwards: Afterwards) {
        let reservation = self
            .settlement
            .as_mut()
            .and_then(|s| s.reservation.as_mut());
        if let Some(reservation) = reservation {
            reservation.escalate();
        }
        self.metrics.escalated(self.tenant(), "low_confidence");
        self.afterwards(afterwards);
    }

    /// The answer went out whole with `status`.
    pub fn finished(&mut self, status: u16) {
        self.status = status;
    }

    /// The client got `error` (before or in the middle of its answer).
    pub fn failed(&mut self, error: &ApiError) {
        self.status = error.status().as_u16();
        self.error_code = Some(error.code());
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    pub fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or(UNKNOWN)
    }

    pub fn findings(&self) -> &Findings {
        &self.findings
    }

    /// Why the request went where it went, and what happened after: for the client's
    /// `x-switchboard-reason`, the ledger and the log line.
    pub fn told_reason(&self) -> Option<String> {
        let (reason, afterwards) = self.reason.as_ref()?;
        Some(match afterwards {
            Some(afterwards) => format!("{reason}{afterwards}"),
            None => reason.to_string(),
        })
    }

    /// What the answer cost so far, by the tokens known now.
    pub fn costs(&self) -> Option<Costs> {
        let usage = self.usage.as_ref()?;
        Some(self.settlement.as_ref()?.policy.costs(&self.model, usage))
    }

    /// Settles the request now and returns once its ledger record is on disk: awaited before
    /// a response's last bytes leave, so that a crash never loses an answered request.
    pub async fn settle_durably(self) {
        let ledger = self.ledger.clone().filter(|_| self.tenant.is_some());
        drop(self);
        if let Some(ledger) = ledger {
            ledger.durable().await;
        }
    }

    /// An upstream that reported no usage for an answer is accounted by an estimate from
    /// the text's bytes, so that what it cost is not counted as nothing.
    fn estimate_missing_usage(&mut self) {
        if self.usage.is_none() && self.answer_bytes > 0 {
            self.usage = Some(Usage::estimated(self.prompt_bytes, self.answer_bytes));
            self.usage_estimated = true;
            tracing::debug!(request_id = %self.request_id, "no usage from upstream: estimated");
        }
    }

    /// Prices the answer and settles the tenant's reservation. Returns the costs and, for a
    /// routed request, whether it escalated.
    fn settle_costs(&mut self) -> (Option<Costs>, Option<bool>) {
        let costs = self.costs();
        let Some(settlement) = self.settlement.take() else {
            return (costs, None);
        };
        let Some(reservation) = settlement.reservation else {
            return (costs, None);
        };
        let escalated = reservation.routed();
        let actual = costs.map_or(Usd::ZERO, |c| c.actual);
        reservation.settle(actual, crate::api::unix_now());
        (costs, escalated)
    }

    /// Appends the request to the ledger; a failure to write is logged, never the client's.
    fn write_to_ledger(&mut self, costs: Option<Costs>, escalated: Option<bool>, took: Duration) {
        let (Some(ledger), Some(tenant)) = (&self.ledger, &self.tenant) else {
            return;
        };
        let usage = self.usage.unwrap_or_default();
        let classification = self.findings.classification.as_ref();
        let entry = Entry {
            request_id: self.request_id.clone(),
            at_ms: self.arrived_ms,
            tenant: tenant.clone(),
            route: self.route.as_str().to_owned(),
            model: self.model.clone(),
            domain: classification.map(|c| c.domain.clone()),
            complexity: classification.map(|c| c.complexity),
            reason: self.told_reason(),
            reason_code: self.reason.as_ref().map(|(r, _)| r.label().to_owned()),
            escalated,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cost: costs.map_or(Usd::ZERO, |c| c.actual),
            counterfactual: costs.map_or(Usd::ZERO, |c| c.counterfactual),
            duration_ms: took.as_millis() as u64,
            first_token_ms: self.first_token.map(|d| d.as_millis() as u64),
            status: self.status,
            routing_text: self.routing_text.take(),
            usage_estimated: self.usage_estimated,
        };
        if let Err(error) = ledger.record(&entry) {
            tracing::error!(request_id = %self.request_id, %error, "cannot write the ledger");
        }
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        self.estimate_missing_usage();
        let took = self.started.elapsed();
        let (costs, escalated) = self.settle_costs();
        self.write_to_ledger(costs, escalated, took);
        let classification = self.findings.classification.as_ref();
        let domain = classification.map_or(UNCLASSIFIED, |c| c.domain.as_str());
        self.metrics.request_settled(&SettledRequest {
            tenant: self.tenant(),
            route: self.route.as_str(),
            model: &self.model,
            domain,
            status: self.status,
            duration: took,
            first_token: self.first_token,
            scored: classification.map(|c| (c.complexity, c.took)),
            private_data: &self.findings.private_data,
            usage: self.usage,
            costs,
        });
        tracing::info!(
            request_id = %self.request_id,
            tenant = %self.tenant(),
            model = %self.model,
            route = self.route.as_str(),
            provider = self.provider.as_deref().unwrap_or("-"),
            status = self.status,
            error = self.error_code.unwrap_or("-"),
            duration_ms = took.as_millis() as u64,
            first_token_ms = self.first_token.map(|d| d.as_millis() as u64),
            prompt_tokens = self.usage.map(|u| u.prompt_tokens),
            completion_tokens = self.usage.map(|u| u.completion_tokens),
            private_data = %super::classify::kinds_list(&self.findings.private_data),
            language = self.findings.language.unwrap_or("-"),
            complexity = classification.map(|c| c.complexity),
            domain,
            reason = self.told_reason().as_deref().unwrap_or("-"),
            "request settled"
        );
    }
}
