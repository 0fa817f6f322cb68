//! The Prometheus registry and every metric name, in one place (the contract with `dashboards/`).
//! Label values come from bounded sets only: tenant and model names from the config, routes,
//! error kinds and status codes; never free text from a request.

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Label value for requests whose tenant or model is not known (failed auth, unknown model).
pub const UNKNOWN: &str = "unknown";

/// The domain of requests the router did not classify (router off, or the request failed first).
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
    /// `switchboard_pii_detections_total{kind}`: requests holding private data of that kind.
    pub pii_detections: IntCounterVec,
    /// `switchboard_in_flight_requests`
    pub in_flight: IntGauge,
    /// `switchboard_open_connections`: client connections open now.
    pub open_connections: IntGauge,
    /// `switchboard_local_queue_depth{model}`: requests waiting for a local model.
    pub local_queue_depth: IntGaugeVec,
    /// `switchboard_local_generated_tokens_total{model}`
    pub local_generated_tokens: IntCounterVec,
    /// `switchboard_local_prompt_tokens_total{model,cache}`: prompt tokens whose keys and
    /// values came from the previous sequence (`hit`) or were computed (`miss`).
    pub local_prompt_tokens: IntCounterVec,
    /// `switchboard_router_decision_seconds`: embedding and scoring one request.
    pub router_decision: Histogram,
    /// `switchboard_router_complexity{domain}`: the complexity scores, by top domain.
    pub router_complexity: HistogramVec,
    /// `switchboard_router_cache_lookups_total{result}`: routing texts found (`hit`) or not
    /// (`miss`) among the recently embedded ones.
    pub router_cache_lookups: IntCounterVec,
    /// `switchboard_cost_usd_total{tenant,route,model}`: what answered requests cost.
    pub cost: CounterVec,
    /// `switchboard_counterfactual_cost_usd_total{tenant}`: what they would have cost at the
    /// policy's reference model.
    pub counterfactual_cost: CounterVec,
    /// `switchboard_savings_usd{tenant}`: counterfactual minus actual since start. A gauge (so
    /// no `_total`), since a route dearer than the reference makes it go down.
    pub savings: GaugeVec,
    /// `switchboard_escalations_total{tenant,reason}`: routed requests sent to a remote tier.
    pub escalations: IntCounterVec,
    /// `switchboard_budget_remaining_usd{tenant}`: what is left of the tighter budget window.
    pub budget_remaining: GaugeVec,
    /// `switchboard_cascade_wasted_tokens_total{model}`: tokens of local answers discarded by
    /// the confidence cascade (prompt and completion).
    pub cascade_wasted_tokens: IntCounterVec,
    /// `switchboard_policy_reloads_total{result}`: `applied`, `invalid`, `needs_restart`.
    pub policy_reloads: IntCounterVec,
    /// `switchboard_budget_remaining_ratio{tenant}`: the smallest share of a budget window's
    /// limit that is left.
    pub budget_remaining_ratio: GaugeVec,
    /// `switchboard_local_queue_capacity{model}`: requests that may wait for a local model.
    pub local_queue_capacity: IntGaugeVec,
    /// `switchboard_local_running{model}`: generations decoded together now.
    pub local_running: IntGaugeVec,
    /// `switchboard_local_prefix_cache_bytes{model}`: memory of the keys and values kept for
    /// prompts that share a prefix.
    pub local_prefix_cache_bytes: IntGaugeVec,
}

/// Scoring takes about a millisecond for short texts and tens of milliseconds for long ones
/// under load.
const ROUTER_DECISION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0,
];
const COMPLEXITY_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

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
        // Gauges of money and shares, per tenant.
        let tenant_gauge = |name: &str, help: &str| {
            register(&registry, GaugeVec::new(Opts::new(name, help), &["tenant"]))
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
        let pii_detections = counter(
            "pii_detections_total",
            "Requests found to hold private data, by kind of data.",
            &["kind"],
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
        let open_connections = register(
            &registry,
            IntGauge::new("open_connections", "Client connections open now."),
        );
        let local_queue_depth = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("local_queue_depth", "Requests waiting for a local model."),
                &["model"],
            ),
        );
        let local_generated_tokens = counter(
            "local_generated_tokens_total",
            "Tokens generated by a local model.",
            &["model"],
        );
        let local_prompt_tokens = counter(
            "local_prompt_tokens_total",
            "Prompt tokens of local models, taken from the prefix cache (hit) or computed (miss).",
            &["model", "cache"],
        );
        let router_decision = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "router_decision_seconds",
                    "Time to score one request: embedding, heads, private data and language.",
                )
                .buckets(ROUTER_DECISION_BUCKETS.to_vec()),
            ),
        );
        let router_complexity = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "router_complexity",
                    "Complexity scores of requests, by their most likely domain.",
                )
                .buckets(COMPLEXITY_BUCKETS.to_vec()),
                &["domain"],
            ),
        );
        let router_cache_lookups = counter(
            "router_cache_lookups_total",
            "Routing texts looked up among the recently embedded ones, by result (hit, miss).",
            &["result"],
        );
        let cost = register(
            &registry,
            CounterVec::new(
                Opts::new("cost_usd_total", "What answered requests cost, in USD."),
                &["tenant", "route", "model"],
            ),
        );
        let counterfactual_cost = register(
            &registry,
            CounterVec::new(
                Opts::new(
                    "counterfactual_cost_usd_total",
                    "What answered requests would have cost at the policy's reference model, in USD.",
                ),
                &["tenant"],
            ),
        );
        let savings = tenant_gauge(
            "savings_usd",
            "Counterfactual cost minus actual cost, in USD (negative when routes cost more than the reference).",
        );
        let escalations = counter(
            "escalations_total",
            "Routed requests sent to a remote tier, by tenant and the reason for it.",
            &["tenant", "reason"],
        );
        let budget_remaining = tenant_gauge(
            "budget_remaining_usd",
            "What is left of the tenant's tighter budget window, in USD.",
        );
        let cascade_wasted_tokens = counter(
            "cascade_wasted_tokens_total",
            "Tokens of local answers the confidence cascade discarded before escalating, by local model.",
            &["model"],
        );
        let budget_remaining_ratio = tenant_gauge(
            "budget_remaining_ratio",
            "The smallest share of a budget window's limit that the tenant has left (0 to 1).",
        );
        let local_gauge = |name: &str, help: &str| {
            register(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), &["model"]),
            )
        };
        let local_queue_capacity = local_gauge(
            "local_queue_capacity",
            "Requests that may wait for a local model; beyond, spill or 503.",
        );
        let local_running = local_gauge(
            "local_running",
            "Generations a local model decodes together now (its batch).",
        );
        let local_prefix_cache_bytes = local_gauge(
            "local_prefix_cache_bytes",
            "Memory of the keys and values a local model keeps for prompts that share a prefix.",
        );
        let policy_reloads = counter(
            "policy_reloads_total",
            "Reloads of the policy file, by result (applied, invalid, needs_restart).",
            &["result"],
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
            pii_detections,
            in_flight,
            open_connections,
            local_queue_depth,
            local_generated_tokens,
            local_prompt_tokens,
            local_running,
            local_prefix_cache_bytes,
            router_decision,
            router_complexity,
            router_cache_lookups,
            cost,
            counterfactual_cost,
            savings,
            escalations,
            budget_remaining,
            cascade_wasted_tokens,
            policy_reloads,
            budget_remaining_ratio,
            local_queue_capacity,
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
