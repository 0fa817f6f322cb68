"""Crash safety: `kill -9` of a real `switchboard serve` in the middle of a load (remote answers
whole and streamed, local answers), then a restart, several times over one ledger. Every request
whose client got its whole answer before the kill is in the ledger; the restarted gateway opens
the ledger without an error and its tenants' budgets equal the ledger's sums.

The policy sets `ledger.flush_every_ms` to a minute, so that only the durability barrier before
each response's last bytes can keep a record: a ledger that relied on its periodic flush would
lose every record of a round."""

import datetime
import json
import random
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.client import HTTPException

import pytest

from harness import BIN, FakeUpstream, Serve, fake_openai_provider, http, key_hash

KEY, UPSTREAM_KEY = "sk-crash-test", "sk-crash-upstream"
DAILY_BUDGET_USD = 1000
ROUNDS = 3
NANO = 10**9


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crash")
    fake = FakeUpstream(UPSTREAM_KEY)
    policy = tmp / "policy.yaml"
    policy.write_text(f"""
ledger: {{ path: {tmp / "ledger"}, flush_every_ms: 60000 }}
upstream:
  retry: {{ max_attempts: 1 }}
{fake_openai_provider(fake, "CRASH_UPSTREAM_KEY")}local_models:
  - {{ name: smollm2, default_model: smollm2, queue_capacity: 8 }}
routing:
  reference_model: gpt-test
  tiers:
    - {{ name: local, below: 0.5, targets: [smollm2] }}
    - {{ name: remote, targets: [gpt-test] }}
tenants:
  - {{ name: acme, api_key_hashes: ["{key_hash(KEY)}"], allowed_models: ["*"],
      budget: {{ daily_usd: {DAILY_BUDGET_USD} }} }}
""")
    yield tmp, policy
    fake.stop()


def start_gateway(policy, log):
    """A gateway whose JSON logs go to the end of `log`."""
    with open(log, "ab") as out:
        return Serve(policy, {"CRASH_UPSTREAM_KEY": UPSTREAM_KEY}, stderr=out,
                     args=["--log-format", "json"])


def ask(url, request_id, kind):
    """True when the whole answer came back: a 200 with a complete JSON body, or a stream that
    reached `data: [DONE]`."""
    model = "smollm2" if kind == "local" else "gpt-test"
    body = {"model": model, "messages": [{"role": "user", "content": f"ticket {request_id}"}],
            "max_tokens": 3, "stream": kind == "stream"}
    headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}",
               "x-request-id": request_id}
    request = urllib.request.Request(f"{url}/v1/chat/completions", json.dumps(body).encode(),
                                     headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
    except (OSError, HTTPException):
        return False
    if kind == "stream":
        return text.endswith("data: [DONE]\n\n")
    return json.loads(text)["object"] == "chat.completion"


def load_until_killed(gateway, round_):
    """Runs clients until the gateway is killed; returns the ids of the complete answers."""
    completed, lock, killed = [], threading.Lock(), threading.Event()

    def client(worker):
        n = 0
        while not killed.is_set():
            n += 1
            request_id = f"r{round_}-w{worker}-{n}"
            kind = "local" if worker == 0 else random.choice(["whole", "stream"])
            if ask(gateway.url, request_id, kind):
                with lock:
                    completed.append(request_id)

    workers = [threading.Thread(target=client, args=(w,)) for w in range(6)]
    for w in workers:
        w.start()
    time.sleep(random.uniform(1.0, 2.0))
    gateway.proc.send_signal(signal.SIGKILL)
    gateway.proc.wait(10)
    killed.set()
    for w in workers:
        w.join(60)
    return completed


def budget_remaining(gateway):
    metrics = http(f"{gateway.url}/metrics")[1]
    line = next(l for l in metrics.splitlines()
                if l.startswith('switchboard_budget_remaining_usd{tenant="acme"}'))
    return float(line.split()[-1])


def ledger_records(policy, out):
    subprocess.run([BIN / "switchboard", "report", "--config", policy, "--since", "1d",
                    "--records", out], check=True, capture_output=True)
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_kill_9_loses_no_answered_request(setup):
    tmp, policy = setup
    log = tmp / "gateway.log"
    day = datetime.datetime.now(datetime.timezone.utc).date()
    completed = []
    gateway = start_gateway(policy, log)
    for round_ in range(ROUNDS):
        answered = load_until_killed(gateway, round_)
        assert len(answered) >= 20, f"round {round_}: the load hardly ran ({len(answered)})"
        completed += answered

        gateway = start_gateway(policy, log)  # the restart opens the ledger the kill left
        remaining = budget_remaining(gateway)
        assert gateway.stop() == 0
        records = ledger_records(policy, tmp / f"records-{round_}.jsonl")

        ids = [r["request_id"] for r in records]
        missing = sorted(set(completed) - set(ids))
        assert not missing, f"round {round_}: {len(missing)} answered requests lost: {missing[:5]}"
        assert len(ids) == len(set(ids)), "no request is recorded twice"
        if datetime.datetime.now(datetime.timezone.utc).date() == day:  # not across midnight
            spent = sum(r["cost"] for r in records if r["tenant"] == "acme")
            assert remaining == pytest.approx(DAILY_BUDGET_USD - spent / NANO, abs=1e-9)
        if round_ + 1 < ROUNDS:
            gateway = start_gateway(policy, log)

    errors = [line for line in log.read_text().splitlines()
              if json.loads(line).get("level") == "ERROR"]
    assert not errors, errors
