//! The record of one request, settled exactly once: when its answer is complete, when it fails,
//! or when the client goes away mid-way (the record is dropped with the response). Settling
//! writes the metrics and the request's one log line.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use switchboard_router::pii::PiiKind;

use crate::api::Usage;
use crate::metrics::{Metrics, UNCLASSIFIED, UNKNOWN};

/// `status` of a request whose client disconnected first (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

/// The router's scores that the record keeps: bounded values only (the domain is one of the
/// heads' or the config's).
#[derive(Debug, Clone)]
pub struct Classification {
    pub complexity: f32,
    pub domain: String,
    pub took: Duration,
}

pub struct RequestRecord {
    metrics: Arc<Metrics>,
    pub request_id: String,
    started: Instant,
    pub tenant: String,
    pub model: String,
    pub route: &'static str,
    pub provider: Option<String>,
    pub status: u16,
    /// The error code sent to the client, for the log line.
    pub error_code: Option<&'static str>,
    pub usage: Option<Usage>,
    pub first_token: Option<Duration>,
    /// The kinds of private data found in the request (never the data).
    pub private_data: Vec<PiiKind>,
    /// The language of the last user message (ISO 639-1), when it could be told.
    pub language: Option<&'static str>,
    /// What the router made of the request, when it scored it.
    pub classification: Option<Classification>,
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
            tenant: UNKNOWN.to_owned(),
            model: UNKNOWN.to_owned(),
            route: "remote",
            provider: None,
            status: CLIENT_CLOSED,
            error_code: None,
            usage: None,
            first_token: None,
            private_data: Vec::new(),
            language: None,
            classification: None,
            _permit: None,
        }
    }

    pub fn hold(&mut self, permit: OwnedSemaphorePermit) {
        self._permit = Some(permit);
    }

    /// Marks the first streamed chunk as sent now.
    pub fn first_token_now(&mut self) {
        self.first_token
            .get_or_insert_with(|| self.started.elapsed());
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        let m = &self.metrics;
        m.in_flight.dec();
        let status = self.status.to_string();
        let domain = self
            .classification
            .as_ref()
            .map_or(UNCLASSIFIED, |c| c.domain.as_str());
        m.requests
            .with_label_values(&[&self.tenant, self.route, &self.model, domain, &status])
            .inc();
        if let Some(c) = &self.classification {
            m.router_decision.observe(c.took.as_secs_f64());
            m.router_complexity
                .with_label_values(&[domain])
                .observe(f64::from(c.complexity));
        }
        let elapsed = self.started.elapsed();
        m.request_duration
            .with_label_values(&[self.route, &self.model])
            .observe(elapsed.as_secs_f64());
        if let Some(first) = self.first_token {
            m.time_to_first_token
                .with_label_values(&[self.route, &self.model])
                .observe(first.as_secs_f64());
        }
        for kind in &self.private_data {
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
            private_data = %crate::classify::kinds_list(&self.private_data),
            language = self.language.unwrap_or("-"),
            complexity = self.classification.as_ref().map(|c| c.complexity),
            domain,
            "request settled"
        );
    }
}
