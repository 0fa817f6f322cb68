"""The official OpenAI Python SDK as a client of a real `switchboard serve` process, in front of
the fake upstream (also its own process). Run by ./test.sh after the binaries are built."""

import json
import os
import subprocess
import threading
import time
import urllib.request

import openai
import pytest

from harness import BIN, FakeUpstream, key_hash

CLIENT_KEY = "sk-sdk-test-client-key"
UPSTREAM_KEY = "sk-sdk-test-upstream-secret"
PROMPT = "please reset my vpn password"


@pytest.fixture(scope="module")
def fake():
    upstream = FakeUpstream(UPSTREAM_KEY)
    yield upstream
    upstream.stop()


class Gateway:
    def __init__(self, proc, url, logs):
        self.proc, self.url, self.logs = proc, url, logs

    def client(self, key=CLIENT_KEY, **kwargs):
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, **kwargs)


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    config = tmp_path_factory.mktemp("gateway") / "policy.yaml"
    ledger = tmp_path_factory.mktemp("ledger")
    config.write_text(f"""
ledger:
  path: {ledger}
upstream:
  retry: {{ max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.02 }}
providers:
  - name: fake-openai
    kind: openai
    base_url: {fake.url}/v1
    api_key_env: SDK_TEST_UPSTREAM_KEY
    models:
      - name: gpt-test
        upstream_name: gpt-upstream
        price: {{ input_per_mtok: 0.15, output_per_mtok: 0.6 }}
  - name: fake-anthropic
    kind: anthropic
    base_url: {fake.url}
    api_key_env: SDK_TEST_UPSTREAM_KEY
    models:
      - name: claude-test
        price: {{ input_per_mtok: 3, output_per_mtok: 15 }}
local_models:
  - name: smollm2
    default_model: smollm2
    queue_capacity: 1
    max_batch: 2
embedding_models:
  - name: minilm
    default_model: all-minilm-l6-v2
router:
  embedding_model: minilm
  domains:
    facilities:
      - "The heating in meeting room 3 is broken"
      - "Can someone fix the light in the second floor kitchen?"
      - "The badge reader at the north entrance does not work"
routing:
  reference_model: claude-test
  tiers:
    - {{ name: local, below: 0.35, targets: [smollm2] }}
    - {{ name: remote, targets: [gpt-test] }}
tenants:
  - name: sdk
    api_key_hashes: ["{key_hash(CLIENT_KEY)}"]
    allowed_models: ["*"]
""")
    env = dict(os.environ, SDK_TEST_UPSTREAM_KEY=UPSTREAM_KEY, RUST_LOG="trace")
    proc = subprocess.Popen(
        [BIN / "switchboard", "serve", "--config", config, "--listen", "127.0.0.1:0",
         "--log-format", "json"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    logs = []
    url = None
    for line in proc.stderr:
        logs.append(line)
        event = json.loads(line)
        if event.get("message") == "switchboard listening":
            url = f"http://{event['addr']}"
            break
    assert url, "".join(logs)
    drain = threading.Thread(target=lambda: logs.extend(proc.stderr), daemon=True)
    drain.start()
    yield Gateway(proc, url, logs)
    proc.terminate()
    assert proc.wait(15) == 0, "SIGTERM shuts down cleanly"
    drain.join(5)


def test_create(gateway):
    answer = gateway.client().chat.completions.create(
        model="gpt-test",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}],
        temperature=0.3,
    )
    assert answer.choices[0].message.content == f"gpt-upstream says: {PROMPT}"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens == 7
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


@pytest.mark.parametrize("model,upstream", [("gpt-test", "gpt-upstream"), ("claude-test", "claude-test")])
def test_stream(gateway, model, upstream):
    stream = gateway.client().chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"{upstream} says: {PROMPT}"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.completion_tokens == len(text.split(" "))


def test_models(gateway):
    ids = sorted(m.id for m in gateway.client().models.list())
    assert ids == ["auto", "claude-test", "gpt-test", "minilm", "smollm2"]


def test_embeddings(gateway):
    client = gateway.client()
    texts = ["How do I reset my VPN password?", "I forgot my VPN password", "Prove that 2 is prime"]
    # The SDK asks for base64 by default and decodes it; float must give the same numbers.
    encoded = client.embeddings.create(model="minilm", input=texts)
    floats = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    assert [len(d.embedding) for d in encoded.data] == [384, 384, 384]
    for a, b in zip(encoded.data, floats.data):
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding)) < 1e-6
    cos = lambda a, b: sum(x * y for x, y in zip(a, b))
    v = [d.embedding for d in floats.data]
    assert cos(v[0], v[1]) > cos(v[0], v[2]) + 0.3
    assert encoded.usage.prompt_tokens > 10


def test_local_completion(gateway):
    answer = gateway.client().chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "How do I reset my VPN password?"}],
        max_tokens=10,
        temperature=0,
    )
    assert answer.choices[0].message.content.startswith("To reset your VPN password")
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 10

    stream = gateway.client().chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "How do I reset my VPN password?"}],
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == answer.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == 10


def test_local_stop_sequence(gateway):
    answer = gateway.client().chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "How do I reset my VPN password?"}],
        max_tokens=30,
        temperature=0,
        stop=["VPN password"],
    )
    assert answer.choices[0].message.content == "To reset your "
    assert answer.choices[0].finish_reason == "stop"


def metric(gateway, series):
    metrics = urllib.request.urlopen(f"{gateway.url}/metrics").read().decode()
    line = next(l for l in metrics.splitlines() if l.startswith(series + " "))
    return float(line.split()[-1])


def generated_tokens(gateway):
    return metric(gateway, 'switchboard_local_generated_tokens_total{model="smollm2"}')


def wait_for_full_local_queue(gateway, deadline_s=30):
    """Returns once every waiting place of the local model is taken: on a loaded 2-core machine
    the waiting request may take longer than any fixed sleep to be scored and queued."""
    capacity = metric(gateway, 'switchboard_local_queue_capacity{model="smollm2"}')
    deadline = time.monotonic() + deadline_s
    while metric(gateway, 'switchboard_local_queue_depth{model="smollm2"}') < capacity:
        assert time.monotonic() < deadline, "the waiting request never reached the local queue"
        time.sleep(0.02)


def test_local_batching_cancellation_and_full_queue(gateway):
    client = gateway.client(max_retries=0)
    streams = [
        client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": f"Count from {n} to one hundred."}],
            max_tokens=300,
            stream=True,
        )
        for n in ("one", "two")
    ]
    for stream in streams:
        next(iter(stream))  # the first token is out: the request is in the batch
    # Both decode together, and the batch (max_batch: 2) is full. The gauge is read between
    # decoding steps: on a loaded machine a first read may fall between a join and its step.
    running = 'switchboard_local_running{model="smollm2"}'
    deadline = time.monotonic() + 10
    while metric(gateway, running) != 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert metric(gateway, running) == 2
    waiting = threading.Thread(target=lambda: client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=2))
    waiting.start()
    wait_for_full_local_queue(gateway)
    with pytest.raises(openai.InternalServerError) as error:
        client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
    assert error.value.status_code == 503
    assert error.value.response.headers["retry-after"] == "1"

    before = generated_tokens(gateway)
    for stream in streams:
        stream.close()  # the clients go away mid-answer
    waiting.join(30)
    time.sleep(0.3)
    after = generated_tokens(gateway)
    time.sleep(0.3)
    assert generated_tokens(gateway) == after, "the abandoned generations stopped"
    assert after - before < 200


def test_a_repeated_local_prompt_comes_from_the_prefix_cache(gateway):
    hits = 'switchboard_local_prompt_tokens_total{cache="hit",model="smollm2"}'
    ask = lambda: gateway.client().chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Where is the printer?"}],
        max_tokens=1, temperature=0)
    first = ask()
    before = metric(gateway, hits)
    second = ask()
    # Everything but the prompt's last token: its keys and values are still in the cache.
    assert metric(gateway, hits) - before == second.usage.prompt_tokens - 1
    assert metric(gateway, 'switchboard_local_prefix_cache_bytes{model="smollm2"}') > 0
    assert second.choices[0].message.content == first.choices[0].message.content


def test_errors_surface_as_typed_exceptions(gateway, fake):
    with pytest.raises(openai.AuthenticationError) as error:
        gateway.client(key="sk-wrong").chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": PROMPT}]
        )
    assert error.value.code == "invalid_api_key"

    with pytest.raises(openai.NotFoundError):
        gateway.client().chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": PROMPT}]
        )

    with pytest.raises(openai.BadRequestError) as error:
        gateway.client().chat.completions.create(model="gpt-test", messages=[])
    assert error.value.body["param"] == "messages"

    fake.script({"status": 500}, {"status": 500})
    with pytest.raises(openai.InternalServerError) as error:
        gateway.client(max_retries=0).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": PROMPT}]
        )
    assert error.value.status_code == 502

    fake.script({"status": 429, "retry_after": 60})
    with pytest.raises(openai.RateLimitError) as error:
        gateway.client(max_retries=0).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": PROMPT}]
        )
    assert error.value.response.headers["retry-after"] == "60"


def scored(gateway, text):
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": text}]
    )
    return float(raw.headers["x-switchboard-complexity"]), raw.headers["x-switchboard-domain"]


def test_auto_routes_by_complexity_with_costs_in_headers(gateway):
    def ask(text):
        raw = gateway.client().chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": text}], max_tokens=6, temperature=0,
        )
        return raw.headers, raw.parse()

    headers, answer = ask("How do I reset my VPN password?")
    assert headers["x-switchboard-route"] == "local" and answer.model == "smollm2"
    assert headers["x-switchboard-reason"].startswith("complexity")
    assert float(headers["x-switchboard-cost-usd"]) == 0
    usage = answer.usage
    assert float(headers["x-switchboard-savings-usd"]) == pytest.approx(
        (usage.prompt_tokens * 3 + usage.completion_tokens * 15) / 1e6, abs=1e-9)

    headers, answer = ask("Write a Python function that merges two sorted linked lists in O(n) time.")
    assert headers["x-switchboard-route"] == "remote" and headers["x-switchboard-model"] == "gpt-test"
    assert answer.choices[0].message.content.startswith("gpt-upstream says:")
    # gpt-test ($0.15 / $0.60) against the reference claude-test ($3 / $15).
    cost, saved = float(headers["x-switchboard-cost-usd"]), float(headers["x-switchboard-savings-usd"])
    usage = answer.usage
    assert cost == pytest.approx((usage.prompt_tokens * 0.15 + usage.completion_tokens * 0.6) / 1e6, abs=1e-9)
    assert saved == pytest.approx((usage.prompt_tokens * 2.85 + usage.completion_tokens * 14.4) / 1e6, abs=1e-9)


def call(gateway, path, body=None):
    request = urllib.request.Request(
        f"{gateway.url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def test_feedback_on_an_answer_shows_in_usage(gateway):
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Where do I find the holiday calendar?"}],
        max_tokens=4, temperature=0,
    )
    request_id = raw.headers["x-switchboard-request-id"]
    assert call(gateway, "/v1/feedback", {"request_id": request_id, "score": -1})["score"] == -1
    usage = call(gateway, "/v1/usage?by=route&since=1h")
    assert usage["total"]["feedback"] == 1 and usage["total"]["feedback_mean"] == -1
    assert usage["total"]["requests"] >= 1


def test_router_scores_every_request(gateway):
    easy, _ = scored(gateway, "How do I reset my VPN password?")
    assert scored(gateway, "How do I reset my VPN password?")[0] == easy
    hard, hard_domain = scored(
        gateway,
        "A train leaves at 3:40 pm at 84 km/h; a second one leaves the same station at 4:05 pm "
        "at 102 km/h on a parallel track. At what time and distance does it catch up? Show each step.",
    )
    assert 0 <= easy < hard <= 1
    assert hard_domain == "math"
    _, custom = scored(gateway, "The radiator in the third floor meeting room is cold")
    assert custom == "facilities"

    metrics = urllib.request.urlopen(f"{gateway.url}/metrics").read().decode()
    assert 'switchboard_router_complexity_count{domain="math"}' in metrics
    decisions = [l for l in metrics.splitlines() if l.startswith("switchboard_router_decision_seconds_count")]
    assert decisions and float(decisions[0].split()[-1]) >= 4
    hits = [l for l in metrics.splitlines() if l.startswith('switchboard_router_cache_lookups_total{result="hit"}')]
    assert hits and float(hits[0].split()[-1]) >= 1


def test_logs_hold_no_keys_and_no_prompt_text(gateway):
    # Runs last in this module: everything above (local, remote, streamed, failed, routed,
    # embedded) has been logged by now, at trace level.
    gateway.client().chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": PROMPT}]
    )
    logs = "".join(gateway.logs)
    assert "request settled" in logs
    assert '"level":"TRACE"' in logs or '"level":"DEBUG"' in logs, "the lower levels were on"
    key_hash_text = key_hash(CLIENT_KEY).split(":")[-1]
    prompts = (PROMPT, "reset my vpn", "count from one", "holiday calendar", "be brief")
    for secret in (CLIENT_KEY, UPSTREAM_KEY, key_hash_text, *prompts):
        assert secret.lower() not in logs.lower(), secret
