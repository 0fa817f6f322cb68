"""Writes the Grafana dashboards (switchboard-overview.json, switchboard-router.json) from the
panel list below, so that their PromQL stays in one readable place. Run it after changing a
panel: `python3 dashboards/generate.py`. The test suite checks every expression against a real
Prometheus scraping a real gateway (tests/dashboards/)."""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RATE = "[$__rate_interval]"
TENANT = '{tenant=~"$tenant"}'
LOCAL = '{tenant=~"$tenant",route="local"}'
HIT = '{result="hit"}'
PREFIX_HIT = '{cache="hit"}'
CASCADE = '{reason="low_confidence"}'
FAILED = '{outcome="failed"}'


def datasource():
    return {"type": "prometheus", "uid": "${datasource}"}


def saved(window, by=None):
    total = f"sum by ({by}) " if by else "sum "
    return (
        f"{total}(increase(switchboard_counterfactual_cost_usd_total{TENANT}[{window}]))"
        f" - {total}(increase(switchboard_cost_usd_total{TENANT}[{window}]))"
    )


def quantiles(metric, by, qs, legend):
    return [
        (
            f"histogram_quantile({q}, sum by (le{', ' + by if by else ''}) (rate({metric}_bucket{RATE})))",
            f"{legend} p{round(q * 100)}",
        )
        for q in qs
    ]


# (title, panel type, unit, [(expr, legend)], width, height, description)
OVERVIEW = [
    ("Saved today", "stat", "currencyUSD", [(saved("1d"), "saved")], 6, 5,
     "The reference model's price for the same tokens minus what was paid, over 24 hours."),
    ("Saved, 7 days", "stat", "currencyUSD", [(saved("7d"), "saved")], 6, 5, ""),
    ("Saved by tenant, 7 days", "bargauge", "currencyUSD", [(saved("7d", "tenant"), "{{tenant}}")], 12, 5, ""),
    ("Spend: actual vs on the reference model (USD/hour)", "timeseries", "currencyUSD", [
        (f"sum(rate(switchboard_cost_usd_total{TENANT}{RATE})) * 3600", "actual"),
        (f"sum(rate(switchboard_counterfactual_cost_usd_total{TENANT}{RATE})) * 3600", "on the reference model"),
    ], 12, 8, ""),
    ("Share answered locally", "timeseries", "percentunit", [
        (f"sum(rate(switchboard_requests_total{LOCAL}{RATE})) / sum(rate(switchboard_requests_total{TENANT}{RATE}))", "local"),
    ], 12, 8, ""),
    ("Escalations by reason", "timeseries", "reqps", [
        (f"sum by (reason) (rate(switchboard_escalations_total{TENANT}{RATE}))", "{{reason}}"),
    ], 12, 8, ""),
    ("Requests by domain and route", "timeseries", "reqps", [
        (f"sum by (domain, route) (rate(switchboard_requests_total{TENANT}{RATE}))", "{{domain}} / {{route}}"),
    ], 12, 8, ""),
    ("Latency by route", "timeseries", "s",
     quantiles("switchboard_request_duration_seconds", "route", (0.5, 0.95, 0.99), "{{route}}"), 12, 8, ""),
    ("Time to first token by route", "timeseries", "s",
     quantiles("switchboard_time_to_first_token_seconds", "route", (0.5, 0.95), "{{route}}"), 12, 8, ""),
    ("Local tokens/s", "timeseries", "short", [
        (f"sum by (model) (rate(switchboard_local_generated_tokens_total{RATE}))", "{{model}}"),
    ], 8, 8, ""),
    ("Local batch and queue", "timeseries", "short", [
        ("sum by (model) (switchboard_local_running)", "decoding together {{model}}"),
        ("sum by (model) (switchboard_local_queue_depth)", "waiting {{model}}"),
    ], 8, 8, "Requests a local model decodes together (up to max_batch), and those waiting."),
    ("Upstream errors by provider and kind", "timeseries", "reqps", [
        (f"sum by (provider, kind) (rate(switchboard_upstream_errors_total{RATE}))", "{{provider}} {{kind}}"),
    ], 8, 8, ""),
    ("Budget remaining", "bargauge", "currencyUSD", [
        (f"switchboard_budget_remaining_usd{TENANT}", "{{tenant}}"),
    ], 16, 6, "What is left of each tenant's tighter budget window."),
    ("Fleet: Redis calls p99 by operation", "timeseries", "s",
     quantiles("switchboard_state_store_seconds", "operation", (0.99,), "{{operation}}"), 8, 6,
     "Calls to the fleet's shared state in Redis (fleet mode): admission, standing, reservation, settle."),
    ("Fleet: Redis up and ledger outbox", "timeseries", "short", [
        ("min(switchboard_state_store_up)", "state store up (lowest replica)"),
        ("sum(switchboard_ledger_outbox_records)", "records waiting for PostgreSQL"),
    ], 8, 6, "1 while every replica's state store answers; the outbox grows while PostgreSQL is down and drains after."),
    ("Local prompt tokens from the prefix cache", "timeseries", "percentunit", [
        (f"sum by (model) (rate(switchboard_local_prompt_tokens_total{PREFIX_HIT}{RATE}))"
         f" / sum by (model) (rate(switchboard_local_prompt_tokens_total{RATE}))", "{{model}}"),
    ], 8, 6, "Share of local prompt tokens whose keys and values came from the prefix cache (shared system prompts, follow-up turns)."),
    ("Local pool servers", "timeseries", "short", [
        ("min by (model, server) (switchboard_local_server_up)", "up {{model}} {{server}}"),
        ("sum by (model, server) (switchboard_local_server_in_flight)", "in flight {{model}} {{server}}"),
        (f"sum by (model, server) (rate(switchboard_local_server_requests_total{FAILED}{RATE}))",
         "failed/s {{model}} {{server}}"),
    ], 24, 6, "Servers answering a local model besides the in-process engine: 1 while a server passes its health probes; its requests in flight; the rate of requests it failed (passed on to the pool's next member)."),
]

ROUTER = [
    ("Complexity by domain", "timeseries", "percentunit",
     quantiles("switchboard_router_complexity", "domain", (0.5, 0.9), "{{domain}}"), 12, 8, ""),
    ("Complexity distribution", "bargauge", "short", [
        ("sum by (le) (increase(switchboard_router_complexity_bucket[$__range]))", "{{le}}"),
    ], 12, 8, "Requests per complexity bucket (cumulative buckets)."),
    ("Routing decision latency", "timeseries", "s",
     quantiles("switchboard_router_decision_seconds", None, (0.5, 0.99), ""), 12, 8, ""),
    ("Router cache hit ratio", "timeseries", "percentunit", [
        (f"sum(rate(switchboard_router_cache_lookups_total{HIT}{RATE})) / sum(rate(switchboard_router_cache_lookups_total{RATE}))", "hits"),
    ], 12, 8, ""),
    ("Cascade: escalations and discarded local tokens", "timeseries", "short", [
        (f"sum(rate(switchboard_escalations_total{CASCADE}{RATE}))", "escalations/s"),
        (f"sum by (model) (rate(switchboard_cascade_wasted_tokens_total{RATE}))", "discarded tokens/s {{model}}"),
    ], 12, 8, ""),
    ("Private data found, by kind", "timeseries", "reqps", [
        (f"sum by (kind) (rate(switchboard_pii_detections_total{RATE}))", "{{kind}}"),
    ], 12, 8, ""),
]

VARIABLES = [
    {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
     "current": {}, "hide": 0},
    {"name": "tenant", "label": "Tenant", "type": "query", "datasource": datasource(),
     "query": {"query": "label_values(switchboard_requests_total, tenant)", "refId": "tenants"},
     "definition": "label_values(switchboard_requests_total, tenant)", "refresh": 2,
     "multi": True, "includeAll": True, "allValue": ".*", "current": {}, "hide": 0},
]


def panels(rows):
    out, x, y, row_height = [], 0, 0, 0
    for number, (title, kind, unit, targets, width, height, description) in enumerate(rows, 1):
        if x + width > 24:
            x, y, row_height = 0, y + row_height, 0
        out.append({
            "id": number, "type": kind, "title": title, "description": description,
            "datasource": datasource(),
            "gridPos": {"x": x, "y": y, "w": width, "h": height},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
            "targets": [
                {"datasource": datasource(), "expr": expr, "legendFormat": legend,
                 "refId": chr(ord("A") + i), "range": True}
                for i, (expr, legend) in enumerate(targets)
            ],
        })
        x, row_height = x + width, max(row_height, height)
    return out


def dashboard(uid, title, description, rows):
    return {
        "uid": uid, "title": title, "description": description, "tags": ["switchboard"],
        "timezone": "utc", "editable": True, "schemaVersion": 39, "version": 1,
        "refresh": "30s", "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": VARIABLES}, "annotations": {"list": []},
        "panels": panels(rows),
    }


DASHBOARDS = [
    ("switchboard-overview", "Switchboard: overview",
     "What Switchboard saved, where traffic went, how fast it was answered.", OVERVIEW),
    ("switchboard-router", "Switchboard: router",
     "How the router scores requests: complexity, decision latency, cascade, private data.", ROUTER),
]


def rendered():
    """File name -> JSON text of every dashboard."""
    return {
        f"{name}.json": json.dumps(dashboard(name, title, description, rows), indent=2) + "\n"
        for name, title, description, rows in DASHBOARDS
    }


def main():
    for file, text in rendered().items():
        (HERE / file).write_text(text)


if __name__ == "__main__":
    main()
