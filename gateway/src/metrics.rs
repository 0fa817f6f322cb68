//! The Prometheus registry and every metric name, in one place (the contract with `dashboards/`),
//! and every write to them: the rest of the gateway says what happened ([`Metrics::escalated`],
//! [`Metrics::request_settled`], …), never which series to touch.
//! Label values come from bounded sets only: tenant and model names from the config, routes,
//! error kinds and status codes; never free text from a request.

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use switchboard_local_engine::Engine;
use switchboard_policies::tenant::{Budget, Spend};
use switchboard_router::pii::PiiKind;

use crate::api::Usage;
use crate::policy::Costs;
use crate::providers::local::ServerStats;

/// Label value for requests whose tenant or model is not known (failed auth, unknown model).
pub const UNKNOWN: &str = "unknown";

/// The domain of requests the router did not classify (router off, or the request failed first).
pub const UNCLASSIFIED: &str = "unclassified";

pub struct Metrics {
    registry: Registry,
    /// `switchboard_requests_total{tenant,route,model,domain,status}`
    requests: IntCounterVec,
    /// `switchboard_request_duration_seconds{route,model}`
    request_duration: HistogramVec,
    /// `switchboard_time_to_first_token_seconds{route,model}`, streamed requests only.
    time_to_first_token: HistogramVec,
    /// `switchboard_tokens_total{route,model,kind}`, kind `prompt` or `completion`.
    tokens: IntCounterVec,
    /// `switchboard_upstream_errors_total{provider,kind}`, one per failed attempt.
    upstream_errors: IntCounterVec,
    /// `switchboard_fallbacks_total{from,to,reason}`
    fallbacks: IntCounterVec,
    /// `switchboard_pii_detections_total{kind}`: requests holding private data of that kind.
    pii_detections: IntCounterVec,
    /// `switchboard_in_flight_requests`
    in_flight: IntGauge,
    /// `switchboard_open_connections`: client connections open now.
    open_connections: IntGauge,
    /// `switchboard_local_queue_depth{model}`: requests waiting for a local model.
    local_queue_depth: IntGaugeVec,
    /// `switchboard_local_generated_tokens_total{model}`
    local_generated_tokens: IntCounterVec,
    /// `switchboard_local_prompt_tokens_total{model,cache}`: prompt tokens whose keys and
    /// values came from the previous sequence (`hit`) or were computed (`miss`).
    local_prompt_tokens: IntCounterVec,
    /// `switchboard_router_decision_seconds`: embedding and scoring one request.
    router_decision: Histogram,
    /// `switchboard_router_complexity{domain}`: the complexity scores, by top domain.
    router_complexity: HistogramVec,
    /// `switchboard_router_cache_lookups_total{result}`: routing texts found (`hit`) or not
    /// (`miss`) among the recently embedded ones.
    router_cache_lookups: IntCounterVec,
    /// `switchboard_cost_usd_total{tenant,route,model}`: what answered requests cost.
    cost: CounterVec,
    /// `switchboard_counterfactual_cost_usd_total{tenant}`: what they would have cost at the
    /// policy's reference model.
    counterfactual_cost: CounterVec,
    /// `switchboard_savings_usd{tenant}`: counterfactual minus actual since start. A gauge (so
    /// no `_total`), since a route dearer than the reference makes it go down.
    savings: GaugeVec,
    /// `switchboard_escalations_total{tenant,reason}`: routed requests sent to a remote tier.
    escalations: IntCounterVec,
    /// `switchboard_budget_remaining_usd{tenant}`: what is left of the tighter budget window.
    budget_remaining: GaugeVec,
    /// `switchboard_cascade_wasted_tokens_total{model}`: tokens of local answers discarded by
    /// the confidence cascade (prompt and completion).
    cascade_wasted_tokens: IntCounterVec,
    /// `switchboard_policy_reloads_total{result}`: `applied`, `invalid`, `needs_restart`.
    policy_reloads: IntCounterVec,
    /// `switchboard_budget_remaining_ratio{tenant}`: the smallest share of a budget window's
    /// limit that is left.
    budget_remaining_ratio: GaugeVec,
    /// `switchboard_local_queue_capacity{model}`: requests that may wait for a local model.
    local_queue_capacity: IntGaugeVec,
    /// `switchboard_local_running{model}`: generations decoded together now.
    local_running: IntGaugeVec,
    /// `switchboard_local_prefix_cache_bytes{model}`: memory of the keys and values kept for
    /// prompts that share a prefix.
    local_prefix_cache_bytes: IntGaugeVec,
    /// `switchboard_local_server_up{model,server}`: 1 while a server of a local model's pool
    /// passes its probes.
    local_server_up: IntGaugeVec,
    /// `switchboard_local_server_in_flight{model,server}`: requests sent to it and not yet
    /// answered.
    local_server_in_flight: IntGaugeVec,
    /// `switchboard_local_server_requests_total{model,server,outcome}`: requests it
    /// `answered`, or `failed` (passed on to the pool's next member, or refused).
    local_server_requests: IntCounterVec,
    /// `switchboard_state_store_seconds{operation}`: calls to a fleet's Redis that answered.
    state_store_seconds: HistogramVec,
    /// `switchboard_state_store_errors_total{operation}`: calls that failed or timed out.
    state_store_errors: IntCounterVec,
    /// `switchboard_state_store_up`: 1 while the shared state store answers (always, for a
    /// gateway on its own); 0 after a call to the fleet's Redis failed.
    state_store_up: IntGauge,
    /// `switchboard_state_store_fallbacks_total{kind}`: what a replica did without Redis:
    /// `budget_refused` (503), `rate_limit_local_share`, `sticky_forgotten`.
    state_store_fallbacks: IntCounterVec,
    /// `switchboard_ledger_outbox_records`: records waiting to be shipped to the fleet's table.
    ledger_outbox: IntGauge,
    /// `switchboard_ledger_shipped_records_total`: records shipped to the fleet's table.
    ledger_shipped: IntCounter,
    /// `switchboard_ledger_ship_errors_total`: batches PostgreSQL did not take (retried).
    ledger_ship_errors: IntCounter,
    /// `switchboard_reconciler_drift_usd{tenant}`: Redis's settled spend this month minus the
    /// fleet ledger's, before the reconciler raised it (negative: Redis had lost spend).
    reconciler_drift: GaugeVec,
}

/// A Redis call on the same network takes tens to hundreds of microseconds; the default
/// timeout (1 s) is the last bucket that matters.
const STATE_STORE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

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
        let server_gauge = |name: &str, help: &str| {
            register(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), &["model", "server"]),
            )
        };
        let local_server_up = server_gauge(
            "local_server_up",
            "1 while a server of a local model's pool passes its health probes, else 0.",
        );
        let local_server_in_flight = server_gauge(
            "local_server_in_flight",
            "Requests sent to a server of a local model's pool and not yet answered.",
        );
        let local_server_requests = counter(
            "local_server_requests_total",
            "Requests to a server of a local model's pool, by outcome (answered, failed).",
            &["model", "server", "outcome"],
        );
        let policy_reloads = counter(
            "policy_reloads_total",
            "Reloads of the policy file, by result (applied, invalid, needs_restart).",
            &["result"],
        );
        let state_store_seconds = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "state_store_seconds",
                    "Calls to the fleet's Redis that answered, by operation.",
                )
                .buckets(STATE_STORE_BUCKETS.to_vec()),
                &["operation"],
            ),
        );
        let state_store_errors = counter(
            "state_store_errors_total",
            "Calls to the fleet's Redis that failed or timed out, by operation.",
            &["operation"],
        );
        let state_store_fallbacks = counter(
            "state_store_fallbacks_total",
            "What replicas did without Redis: budget_refused (503), rate_limit_local_share, sticky_forgotten.",
            &["kind"],
        );
        let state_store_up = register(
            &registry,
            IntGauge::new(
                "state_store_up",
                "1 while the shared state store answers (always, on its own); 0 after a call to the fleet's Redis failed.",
            ),
        );
        let ledger_outbox = register(
            &registry,
            IntGauge::new(
                "ledger_outbox_records",
                "Ledger records waiting in this replica's outbox for the fleet's PostgreSQL table.",
            ),
        );
        let ledger_shipped = register(
            &registry,
            IntCounter::new(
                "ledger_shipped_records_total",
                "Ledger records shipped to the fleet's PostgreSQL table.",
            ),
        );
        let ledger_ship_errors = register(
            &registry,
            IntCounter::new(
                "ledger_ship_errors_total",
                "Batches of ledger records that PostgreSQL did not take (they are retried).",
            ),
        );
        let reconciler_drift = tenant_gauge(
            "reconciler_drift_usd",
            "Redis's settled spend this month minus the fleet ledger's, at the last reconciliation (negative: Redis had lost spend, raised since).",
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
            local_server_up,
            local_server_in_flight,
            local_server_requests,
            state_store_seconds,
            state_store_errors,
            state_store_up,
            state_store_fallbacks,
            ledger_outbox,
            ledger_shipped,
            ledger_ship_errors,
            reconciler_drift,
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

/// A settled request, as the metrics count it.
pub struct SettledRequest<'a> {
    pub tenant: &'a str,
    pub route: &'a str,
    pub model: &'a str,
    /// The router's top domain, else [`UNCLASSIFIED`].
    pub domain: &'a str,
    pub status: u16,
    pub duration: Duration,
    pub first_token: Option<Duration>,
    /// The router's complexity score, and how long scoring took, when it scored the request.
    pub scored: Option<(f32, Duration)>,
    pub private_data: &'a [PiiKind],
    pub usage: Option<Usage>,
    pub costs: Option<Costs>,
}

/// Counts a client connection as open until it is dropped.
pub struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the gateway counts, each written here and nowhere else.
impl Metrics {
    /// A request arrived: it is in flight until it settles.
    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// A request settled: its count, cost, latency, tokens, scores and private data.
    pub fn request_settled(&self, request: &SettledRequest<'_>) {
        let SettledRequest {
            tenant,
            route,
            model,
            domain,
            ..
        } = *request;
        self.in_flight.dec();
        if let Some(costs) = request.costs {
            self.cost
                .with_label_values(&[tenant, route, model])
                .inc_by(costs.actual.as_dollars());
            self.counterfactual_cost
                .with_label_values(&[tenant])
                .inc_by(costs.counterfactual.as_dollars());
            self.savings
                .with_label_values(&[tenant])
                .add(costs.savings().as_dollars());
        }
        let status = request.status.to_string();
        self.requests
            .with_label_values(&[tenant, route, model, domain, &status])
            .inc();
        if let Some((complexity, took)) = request.scored {
            self.router_decision.observe(took.as_secs_f64());
            self.router_complexity
                .with_label_values(&[domain])
                .observe(f64::from(complexity));
        }
        self.request_duration
            .with_label_values(&[route, model])
            .observe(request.duration.as_secs_f64());
        if let Some(first) = request.first_token {
            self.time_to_first_token
                .with_label_values(&[route, model])
                .observe(first.as_secs_f64());
        }
        for kind in request.private_data {
            self.pii_detections
                .with_label_values(&[kind.as_str()])
                .inc();
        }
        if let Some(usage) = request.usage {
            let tokens = [
                ("prompt", usage.prompt_tokens),
                ("completion", usage.completion_tokens),
            ];
            for (kind, count) in tokens {
                self.tokens
                    .with_label_values(&[route, model, kind])
                    .inc_by(count);
            }
        }
    }

    /// A routed request of `tenant` went to a remote tier, for `reason` (its label).
    pub fn escalated(&self, tenant: &str, reason: &str) {
        self.escalations.with_label_values(&[tenant, reason]).inc();
    }

    /// `from` failed with an error of `kind` and `to` was asked instead.
    pub fn fell_back(&self, from: &str, to: &str, kind: &str) {
        self.fallbacks.with_label_values(&[from, to, kind]).inc();
    }

    /// The confidence cascade discarded a local answer of `model` that took `tokens`.
    pub fn cascade_wasted(&self, model: &str, tokens: u64) {
        self.cascade_wasted_tokens
            .with_label_values(&[model])
            .inc_by(tokens);
    }

    /// One attempt at `provider` failed with an error of `kind`.
    pub fn upstream_error(&self, provider: &str, kind: &str) {
        self.upstream_errors
            .with_label_values(&[provider, kind])
            .inc();
    }

    /// A policy file was read again: `applied`, `invalid` or `needs_restart`.
    /// A call to the fleet's Redis answered after `took`.
    pub fn state_store_call(&self, operation: &str, took: Duration) {
        self.state_store_seconds
            .with_label_values(&[operation])
            .observe(took.as_secs_f64());
    }

    /// A call to the fleet's Redis failed or timed out.
    pub fn state_store_error(&self, operation: &str) {
        self.state_store_errors
            .with_label_values(&[operation])
            .inc();
    }

    /// Redis answers again (`true`) or stopped answering.
    pub fn state_store_reachable(&self, up: bool) {
        self.state_store_up.set(i64::from(up));
    }

    /// A replica did without Redis: `kind` says how.
    pub fn state_store_fallback(&self, kind: &str) {
        self.state_store_fallbacks.with_label_values(&[kind]).inc();
    }

    /// A batch of `shipped` records reached the fleet's table; `waiting` are left.
    pub fn ledger_shipped(&self, shipped: usize, waiting: usize) {
        self.ledger_shipped.inc_by(shipped as u64);
        self.ledger_outbox.set(waiting as i64);
    }

    /// A batch did not reach the fleet's table; `waiting` records wait.
    pub fn ledger_ship_failed(&self, waiting: usize) {
        self.ledger_ship_errors.inc();
        self.ledger_outbox.set(waiting as i64);
    }

    /// The reconciler found Redis's spend of `tenant` `drift` away from the fleet's ledger.
    pub fn reconciled(&self, tenant: &str, drift: switchboard_policies::Usd) {
        self.reconciler_drift
            .with_label_values(&[tenant])
            .set(drift.as_dollars());
    }

    pub fn policy_reloaded(&self, result: &str) {
        self.policy_reloads.with_label_values(&[result]).inc();
    }

    pub fn connection_opened(&self) -> OpenConnection {
        self.open_connections.inc();
        OpenConnection(self.open_connections.clone())
    }

    /// The router's repeats served from its recent embeddings, as totals since start.
    pub fn router_cache_totals(&self, hits: u64, misses: u64) {
        let lookups = &self.router_cache_lookups;
        catch_up(&lookups.with_label_values(&["hit"]), hits);
        catch_up(&lookups.with_label_values(&["miss"]), misses);
    }

    /// What is left of `tenant`'s budget after `spend`.
    pub fn budget_left(&self, tenant: &str, budget: Budget, spend: Spend) {
        if let Some(remaining) = budget.remaining(spend) {
            self.budget_remaining
                .with_label_values(&[tenant])
                .set(remaining.as_dollars());
        }
        if let Some(share) = budget.remaining_share(spend) {
            self.budget_remaining_ratio
                .with_label_values(&[tenant])
                .set(share);
        }
    }

    /// The state of the local engine serving `model`, read now.
    pub fn local_engine(&self, model: &str, engine: &Engine) {
        let labels = [model];
        let gauges = [
            (&self.local_queue_depth, engine.queue_depth()),
            (&self.local_queue_capacity, engine.capacity()),
            (&self.local_running, engine.running()),
            (&self.local_prefix_cache_bytes, engine.prefix_cache_bytes()),
        ];
        for (gauge, value) in gauges {
            gauge.with_label_values(&labels).set(value as i64);
        }
        let generated = self.local_generated_tokens.with_label_values(&labels);
        catch_up(&generated, engine.generated_tokens() as u64);
        let (cached, computed) = engine.prompt_token_counts();
        let prompt_tokens = &self.local_prompt_tokens;
        catch_up(
            &prompt_tokens.with_label_values(&[model, "hit"]),
            cached as u64,
        );
        catch_up(
            &prompt_tokens.with_label_values(&[model, "miss"]),
            computed as u64,
        );
    }

    /// What a server of the local model `model`'s pool has done, before a scrape.
    pub fn local_server(&self, model: &str, server: &str, stats: ServerStats) {
        let labels = [model, server];
        let up = self.local_server_up.with_label_values(&labels);
        up.set(i64::from(stats.up));
        let in_flight = self.local_server_in_flight.with_label_values(&labels);
        in_flight.set(stats.in_flight as i64);
        for (outcome, total) in [("answered", stats.answered), ("failed", stats.failed)] {
            let counter = self
                .local_server_requests
                .with_label_values(&[model, server, outcome]);
            catch_up(&counter, total);
        }
    }
}

/// A counter that mirrors a total kept elsewhere catches up with it.
fn catch_up(counter: &IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
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
