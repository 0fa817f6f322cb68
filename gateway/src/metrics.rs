//! The Prometheus registry and every metric name, in one place (the contract with `dashboards/`).
//! Label values come from bounded sets only: tenant and model names from the config, routes,
//! error kinds and status codes; never free text from a request.

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Label value for requests whose tenant or model is not known (failed auth, unknown model).
pub const UNKNOWN: &str = "unknown";

/// Until the router classifies requests, every request is in this domain.
pub const UNCLASSIFIED: &str = "unclassified";

pub struct Metrics {
    registry: Registry,
    /// `switchboard_requests_total{tenant,route,model,domain,status}`
    pub requests: IntCounterVec,
    /// `switchboard_request_duration_seconds{route,model}`
    pub request_duration: HistogramVec,
    /// `switchboard_time_to_first_token_seconds{route,model}`, streamed requests only.
    pub time_to_first_token: HistogramVec,
    /// `switchboard_tokens_total{route,model,kind}`, kind `prompt` or `completion`.
    pub tokens: IntCounterVec,
    /// `switchboard_upstream_errors_total{provider,kind}`, one per failed attempt.
    pub upstream_errors: IntCounterVec,
    /// `switchboard_fallbacks_total{from,to,reason}`
    pub fallbacks: IntCounterVec,
    /// `switchboard_in_flight_requests`
    pub in_flight: IntGauge,
}

/// Requests last from milliseconds (errors, cached answers) to minutes (long generations).
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// First tokens come within tens of milliseconds (local, cached) to tens of seconds.
const FIRST_TOKEN_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("switchboard".to_owned()), None)
            .expect("a constant prefix is valid");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels);
            register(&registry, metric)
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            register(&registry, HistogramVec::new(opts, &["route", "model"]))
        };
        let requests = counter(
            "requests_total",
            "Requests answered, by tenant, route, model, domain and HTTP status.",
            &["tenant", "route", "model", "domain", "status"],
        );
        let tokens = counter(
            "tokens_total",
            "Tokens processed, by route, model and kind (prompt or completion).",
            &["route", "model", "kind"],
        );
        let upstream_errors = counter(
            "upstream_errors_total",
            "Failed attempts at a remote provider, by provider and kind of failure.",
            &["provider", "kind"],
        );
        let fallbacks = counter(
            "fallbacks_total",
            "Moves to the next model of a fallback chain, by failed model, next model and reason.",
            &["from", "to", "reason"],
        );
        let request_duration = histogram(
            "request_duration_seconds",
            "Time from request to the end of the response.",
            DURATION_BUCKETS,
        );
        let time_to_first_token = histogram(
            "time_to_first_token_seconds",
            "Time from request to the first streamed chunk.",
            FIRST_TOKEN_BUCKETS,
        );
        let in_flight = register(
            &registry,
            IntGauge::new("in_flight_requests", "Requests being handled now."),
        );
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("build_info", "Always 1; the labels say which build runs."),
                &["version"],
            ),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Self {
            registry,
            requests,
            request_duration,
            time_to_first_token,
            tokens,
            upstream_errors,
            fallbacks,
            in_flight,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on metric families that the registry never holds.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Registers a metric whose definition is a constant of this module, so neither step can fail
/// at run time.
fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("metric definitions are constant and valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_carry_the_prefix_and_build_info() {
        let metrics = Metrics::new();
        metrics
            .requests
            .with_label_values(&["acme", "remote", "m", UNCLASSIFIED, "200"])
            .inc();
        let text = metrics.render();
        assert!(text.contains("switchboard_requests_total{domain=\"unclassified\",model=\"m\",route=\"remote\",status=\"200\",tenant=\"acme\"} 1"), "{text}");
        assert!(text.contains("switchboard_build_info{version="), "{text}");
        assert!(
            text.contains("# TYPE switchboard_in_flight_requests gauge"),
            "{text}"
        );
    }
}
