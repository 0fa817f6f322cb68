"""The dashboards and alert rules against a real Prometheus scraping a real `switchboard serve`
(with the local model, a local pool whose server is the fake, the router and the fake upstream,
as a fleet of one on a real Redis, so that the fleet and pool panels have data too): after a
short mixed load, every panel's PromQL returns data and every alert rule's expression
evaluates. Run by ./test.sh, which installs Debian's
prometheus and redis-server when they are missing."""

import json
import random
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import openai
import pytest

from harness import (ROOT, FakeUpstream, Serve, fake_openai_provider, free_port, http, key_hash,
                     wait_until_ready)

DASHBOARDS = ROOT / "dashboards"
KEY, THRIFTY_KEY, UPSTREAM_KEY = "sk-dash-test", "sk-dash-thrifty", "sk-dash-upstream"
HARD = "Write a Python function that merges two sorted linked lists in O(n) time."


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboards")
    fake = FakeUpstream(UPSTREAM_KEY)
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    policy = tmp / "policy.yaml"
    policy.write_text(f"""
ledger: {{ path: {tmp / "ledger"} }}
upstream:
  retry: {{ max_attempts: 1 }}
{fake_openai_provider(fake, "DASH_UPSTREAM_KEY", [("gpt-test", 0.15, 0.6), ("gpt-big", 2.5, 10)])}local_models:
  - {{ name: smollm2, default_model: smollm2, queue_capacity: 4 }}
  - {{ name: pool, max_context: 2048, servers: [{{ url: "{fake.url}/v1", api_key_env: DASH_UPSTREAM_KEY }}] }}
embedding_models:
  - {{ name: minilm, default_model: all-minilm-l6-v2 }}
router: {{ embedding_model: minilm }}
routing:
  reference_model: gpt-big
  tiers:
    - {{ name: local, below: 0.35, targets: [smollm2] }}
    - {{ name: remote, targets: [gpt-test] }}
  cascade: {{ min_mean_logprob: -0.000001 }}
tenants:
  - {{ name: acme, api_key_hashes: ["{key_hash(KEY)}"], allowed_models: ["*"],
      budget: {{ daily_usd: 100 }} }}
  - {{ name: thrifty, api_key_hashes: ["{key_hash(THRIFTY_KEY)}"], allowed_models: ["*"],
      budget: {{ daily_usd: 0.000001, when_spent: reject }} }}
fleet: {{ replicas: 1, redis: {{ key_prefix: dashboards }} }}
""")
    gateway = Serve(policy, {"DASH_UPSTREAM_KEY": UPSTREAM_KEY,
                             "SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{redis_port}"})
    url, port = gateway.url, gateway.port
    prometheus_port = free_port()
    config = tmp / "prometheus.yml"
    shutil.copy(DASHBOARDS / "alerts.yml", tmp / "alerts.yml")
    config.write_text(f"""
global: {{ scrape_interval: 1s, evaluation_interval: 1s }}
rule_files: [{tmp / "alerts.yml"}]
scrape_configs:
  - job_name: switchboard
    static_configs: [{{ targets: ["127.0.0.1:{port}"] }}]
""")
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prometheus_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    wait_until_ready(f"{prometheus_url}/-/ready", prometheus)
    yield url, fake, prometheus_url
    prometheus.terminate()
    prometheus.wait(15)
    gateway.stop()
    fake.stop()
    redis.terminate()
    redis.wait(15)


def drive_load(url, fake):
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    ask = lambda text, **kw: client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": text}], max_tokens=4, **kw)
    ask("How do I reset my VPN password?")                       # local, then the cascade
    for chunk in ask("How do I reset my VPN password?", stream=True):  # local, streamed
        pass
    ask(HARD)                                                    # escalated by complexity
    for chunk in ask(HARD, stream=True):                         # escalated, streamed
        pass
    ask("Send the report to jane.doe@example.com please")        # private data: stays local
    # A failing upstream: the policy's local fallback answers.
    fake.script({"status": 500})
    ask(HARD)
    thrifty = openai.OpenAI(base_url=f"{url}/v1", api_key=THRIFTY_KEY, max_retries=0)
    thrifty.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.APIStatusError) as spent:
        thrifty.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert spent.value.status_code == 402
    # Noise that must not grow the label sets: random model names and unknown keys.
    for _ in range(20):
        name = f"model-{random.randrange(10**9)}"
        assert http(f"{url}/v1/chat/completions",
                    {"model": name, "messages": [{"role": "user", "content": "x"}]}, KEY)[0] == 404
        assert http(f"{url}/v1/chat/completions",
                    {"model": name, "messages": [{"role": "user", "content": "x"}]},
                    f"sk-wrong-{random.randrange(10**9)}")[0] == 401


def wait_for_scrapes_after(prometheus_url, since, count, deadline_s=60):
    """Returns once Prometheus has scraped the gateway `count` times after `since` (seconds since
    the epoch), so that every series the load created has the samples a rate needs. A fixed
    sleep was not enough: Prometheus's first scrape may come seconds after it is ready, and a
    fast load ended before it."""
    seen = set()
    deadline = time.monotonic() + deadline_s
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only {len(seen)} scrapes after the load"
        for sample in query(prometheus_url, "timestamp(up)")[1]["data"]["result"]:
            if float(sample["value"][1]) > since:
                seen.add(sample["value"][1])
        time.sleep(0.2)


def query(prometheus_url, expr):
    params = urllib.parse.urlencode({"query": expr})
    status, body = http(f"{prometheus_url}/api/v1/query?{params}")
    return status, json.loads(body)


def panel_queries():
    for name in ("switchboard-overview.json", "switchboard-router.json"):
        dashboard = json.loads((DASHBOARDS / name).read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = (target["expr"].replace("$tenant", ".*")
                        .replace("$__rate_interval", "1m").replace("$__range", "10m"))
                yield f"{name}: {panel['title']} ({target['refId']})", expr


def test_the_dashboards_are_what_generate_py_writes():
    import importlib.util
    spec = importlib.util.spec_from_file_location("generate", DASHBOARDS / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for file, text in generate.rendered().items():
        assert (DASHBOARDS / file).read_text() == text, f"run python3 dashboards/generate.py ({file})"


def test_every_panel_has_data_and_every_alert_evaluates(stack):
    url, fake, prometheus_url = stack
    drive_load(url, fake)
    wait_for_scrapes_after(prometheus_url, time.time(), 2)
    empty = []
    for title, expr in panel_queries():
        status, answer = query(prometheus_url, expr)
        assert status == 200 and answer["status"] == "success", f"{title}: {expr}: {answer}"
        if not answer["data"]["result"]:
            empty.append(f"{title}: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)

    rules = http(f"{prometheus_url}/api/v1/rules")[1]
    groups = json.loads(rules)["data"]["groups"]
    alerts = [rule for group in groups for rule in group["rules"]]
    assert len(alerts) == 11
    for rule in alerts:
        assert rule["health"] == "ok", rule
        status, answer = query(prometheus_url, rule["query"])
        assert status == 200 and answer["status"] == "success", rule["name"]


def test_the_metrics_pass_promtool_and_their_labels_stay_bounded(stack):
    url, _, _ = stack
    metrics = urllib.request.urlopen(f"{url}/metrics").read().decode()
    lint = subprocess.run(["promtool", "check", "metrics"], input=metrics,
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    models, tenants = set(), set()
    for line in metrics.splitlines():
        if line.startswith("switchboard_requests_total{"):
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
            models.add(labels["model"].strip('"'))
            tenants.add(labels["tenant"].strip('"'))
    assert models <= {"smollm2", "gpt-test", "gpt-big", "unknown"}, models
    assert tenants <= {"acme", "thrifty", "unknown"}, tenants
