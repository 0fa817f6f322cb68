//! The record of one request, settled exactly once: when its answer is complete, when it fails,
//! or when the client goes away mid-way (the record is dropped with the response). Settling
//! writes the metrics and the request's one log line.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::api::Usage;
use crate::ledger::{Entry, Ledger};
use crate::metrics::{Metrics, UNCLASSIFIED, UNKNOWN};
use crate::pipeline::Findings;
use crate::policy::{Costs, Policy};
use crate::standing::Reservation;
use switchboard_policies::{Afterwards, Reason, Usd};

/// `status` of a request whose client disconnected first (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

pub struct RequestRecord {
    metrics: Arc<Metrics>,
    pub request_id: String,
    started: Instant,
    /// Unix milliseconds at arrival, for the ledger.
    arrived_ms: u64,
    /// Where the request is recorded when it settles.
    ledger: Option<Arc<Ledger>>,
    /// The router's text of the request, kept in the ledger where the policy asks for it.
    pub routing_text: Option<String>,
    /// Bytes of the prompt's text and of the answer's text so far: the usage estimate when an
    /// upstream reports none.
    pub prompt_bytes: u64,
    pub answer_bytes: u64,
    /// Whether `usage` is that estimate.
    usage_estimated: bool,
    pub tenant: String,
    pub model: String,
    pub route: &'static str,
    pub provider: Option<String>,
    pub status: u16,
    /// The error code sent to the client, for the log line.
    pub error_code: Option<&'static str>,
    pub usage: Option<Usage>,
    pub first_token: Option<Duration>,
    pub findings: Findings,
    /// Why the policy sent it where it went (for the log line and the header), and its label.
    pub reason: Option<Reason>,
    /// What happened after the decision that changed who answered.
    pub afterwards: Option<Afterwards>,
    /// The prices it is settled at, and the estimate held against its tenant's budget.
    pub settlement: Option<Settlement>,
    /// Held until the request settles: its slot in the in-flight limit.
    _permit: Option<OwnedSemaphorePermit>,
}

impl RequestRecord {
    /// Starts the record of a request that arrived at `started`. Until something else is
    /// known, a request counts as cancelled by its client.
    pub fn start(metrics: Arc<Metrics>, request_id: String, started: Instant) -> Self {
        metrics.in_flight.inc();
        Self {
            metrics,
            request_id,
            started,
            arrived_ms: crate::api::unix_millis(),
            ledger: None,
            routing_text: None,
            prompt_bytes: 0,
            answer_bytes: 0,
            usage_estimated: false,
            tenant: UNKNOWN.to_owned(),
            model: UNKNOWN.to_owned(),
            route: "remote",
            provider: None,
            status: CLIENT_CLOSED,
            error_code: None,
            usage: None,
            first_token: None,
            findings: Findings::default(),
            reason: None,
            afterwards: None,
            settlement: None,
            _permit: None,
        }
    }

    /// Records the request in `ledger` when it settles (once it has a tenant).
    pub fn kept_in(mut self, ledger: &Arc<Ledger>) -> Self {
        self.ledger = Some(ledger.clone());
        self
    }

    pub fn hold(&mut self, permit: OwnedSemaphorePermit) {
        self._permit = Some(permit);
    }

    /// Marks the first streamed chunk as sent now.
    pub fn first_token_now(&mut self) {
        self.first_token
            .get_or_insert_with(|| self.started.elapsed());
    }

    /// Why the request went where it went, and what happened after: for the client's
    /// `x-switchboard-reason`, the ledger and the log line.
    pub fn told_reason(&self) -> Option<String> {
        let reason = self.reason.as_ref()?;
        Some(match self.afterwards {
            Some(afterwards) => format!("{reason}{afterwards}"),
            None => reason.to_string(),
        })
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
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

    /// What the answer cost so far, by the tokens known now.
    pub fn costs(&self) -> Option<Costs> {
        let usage = self.usage.as_ref()?;
        Some(self.settlement.as_ref()?.policy.costs(&self.model, usage))
    }

    /// Prices the answer and settles the tenant's reservation; metrics follow. Returns the
    /// costs and, for a routed request, whether it escalated.
    fn settle_costs(&mut self) -> (Option<Costs>, Option<bool>) {
        let costs = self.costs();
        let Some(settlement) = self.settlement.take() else {
            return (costs, None);
        };
        let escalated = settlement.reservation.as_ref().and_then(|r| r.routed());
        let m = &self.metrics;
        let tenant = self.tenant.as_str();
        if let Some(costs) = costs {
            m.cost
                .with_label_values(&[tenant, self.route, &self.model])
                .inc_by(costs.actual.as_dollars());
            m.counterfactual_cost
                .with_label_values(&[tenant])
                .inc_by(costs.counterfactual.as_dollars());
            m.savings
                .with_label_values(&[tenant])
                .add(costs.savings().as_dollars());
        }
        if let Some(reservation) = settlement.reservation {
            let actual = costs.map_or(Usd::ZERO, |c| c.actual);
            reservation.settle(actual, crate::api::unix_now());
        }
        (costs, escalated)
    }

    /// Settles the request now and returns once its ledger record is on disk: awaited before
    /// a response's last bytes leave, so that a crash never loses an answered request.
    pub async fn settle_durably(self) {
        let ledger = self.ledger.clone().filter(|_| self.tenant != UNKNOWN);
        drop(self);
        if let Some(ledger) = ledger {
            ledger.durable().await;
        }
    }

    /// Appends the request to the ledger; a failure to write is logged, never the client's.
    fn write_to_ledger(
        &mut self,
        costs: Option<Costs>,
        escalated: Option<bool>,
        elapsed: Duration,
    ) {
        let Some(ledger) = &self.ledger else {
            return;
        };
        if self.tenant == UNKNOWN {
            return;
        }
        let usage = self.usage.unwrap_or_default();
        let classification = self.findings.classification.as_ref();
        let entry = Entry {
            request_id: self.request_id.clone(),
            at_ms: self.arrived_ms,
            tenant: self.tenant.clone(),
            route: self.route.to_owned(),
            model: self.model.clone(),
            domain: classification.map(|c| c.domain.clone()),
            complexity: classification.map(|c| c.complexity),
            reason: self.told_reason(),
            reason_code: self.reason.as_ref().map(|r| r.label().to_owned()),
            escalated,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cost: costs.map_or(Usd::ZERO, |c| c.actual),
            counterfactual: costs.map_or(Usd::ZERO, |c| c.counterfactual),
            duration_ms: elapsed.as_millis() as u64,
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

/// How a request is settled: at the prices of the policy it started with, releasing the
/// estimate it held.
pub struct Settlement {
    pub policy: Arc<Policy>,
    pub reservation: Option<Reservation>,
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        self.estimate_missing_usage();
        let elapsed = self.started.elapsed();
        let (costs, escalated) = self.settle_costs();
        self.write_to_ledger(costs, escalated, elapsed);
        let m = &self.metrics;
        m.in_flight.dec();
        let status = self.status.to_string();
        let domain = self
            .findings
            .classification
            .as_ref()
            .map_or(UNCLASSIFIED, |c| c.domain.as_str());
        m.requests
            .with_label_values(&[&self.tenant, self.route, &self.model, domain, &status])
            .inc();
        if let Some(c) = &self.findings.classification {
            m.router_decision.observe(c.took.as_secs_f64());
            m.router_complexity
                .with_label_values(&[domain])
                .observe(f64::from(c.complexity));
        }
        m.request_duration
            .with_label_values(&[self.route, &self.model])
            .observe(elapsed.as_secs_f64());
        if let Some(first) = self.first_token {
            m.time_to_first_token
                .with_label_values(&[self.route, &self.model])
                .observe(first.as_secs_f64());
        }
        for kind in &self.findings.private_data {
            m.pii_detections.with_label_values(&[kind.as_str()]).inc();
        }
        if let Some(usage) = self.usage {
            m.tokens
                .with_label_values(&[self.route, &self.model, "prompt"])
                .inc_by(usage.prompt_tokens);
            m.tokens
                .with_label_values(&[self.route, &self.model, "completion"])
                .inc_by(usage.completion_tokens);
        }
        tracing::info!(
            request_id = %self.request_id,
            tenant = %self.tenant,
            model = %self.model,
            route = self.route,
            provider = self.provider.as_deref().unwrap_or("-"),
            status = self.status,
            error = self.error_code.unwrap_or("-"),
            duration_ms = elapsed.as_millis() as u64,
            first_token_ms = self.first_token.map(|d| d.as_millis() as u64),
            prompt_tokens = self.usage.map(|u| u.prompt_tokens),
            completion_tokens = self.usage.map(|u| u.completion_tokens),
            private_data = %crate::pipeline::classify::kinds_list(&self.findings.private_data),
            language = self.findings.language.unwrap_or("-"),
            complexity = self.findings.classification.as_ref().map(|c| c.complexity),
            domain,
            reason = self.told_reason().as_deref().unwrap_or("-"),
            "request settled"
        );
    }
}
