"""Overload: a real `switchboard serve` driven above its capacity for a bounded time with a mix of
remote answers (whole and streamed, each held 200 ms by the fake upstream) and local answers,
while its limits are small (16 requests in flight, 2 waiting for the local model, a 16 MiB prefix
cache: the default 256 MiB would still be filling with sampled answers when memory is measured).
It sheds what it cannot take with 503 and Retry-After and answers the rest, its memory stays flat,
and it ends with nothing in flight.

SOAK_SECONDS sets the length of the loaded phase (20 by default, for CI; a soak is e.g.
SOAK_SECONDS=600 .venv/bin/python -m pytest tests/reliability -k overload -s). The figures are
printed (-s shows them)."""

import json
import os
import statistics
import threading
import time
import urllib.error
import urllib.request
from http.client import HTTPException

from harness import FakeUpstream, Serve, fake_openai_provider, http, key_hash

KEY, UPSTREAM_KEY = "sk-overload-test", "sk-overload-upstream"
SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))
CLIENTS = 48
# RSS may grow by this much after the warm-up (allocator pools, sled's cache, connection
# buffers at their high-water mark); a leak of a few KB per request would pass it within
# seconds at these rates.
RSS_MARGIN_MB = 48


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        line = next(l for l in status if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def ask(url, kind):
    """(status, retry-after header, seconds) of one request; status 0 for a broken exchange."""
    model = "smollm2" if kind == "local" else "gpt-test"
    body = {"model": model, "messages": [{"role": "user", "content": "reset my password"}],
            "max_tokens": 4, "stream": kind == "stream"}
    headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
    request = urllib.request.Request(f"{url}/v1/chat/completions", json.dumps(body).encode(),
                                     headers)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode()
            complete = text.endswith("data: [DONE]\n\n") if kind == "stream" else "choices" in text
            return (200 if complete else 0), None, time.monotonic() - started
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, error.headers.get("retry-after"), time.monotonic() - started
    except (OSError, HTTPException):
        return 0, None, time.monotonic() - started


def test_overload_is_shed_with_retry_after_and_memory_stays_flat(tmp_path):
    fake = FakeUpstream(UPSTREAM_KEY)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
limits: {{ max_in_flight: 16 }}
ledger: {{ path: {tmp_path / "ledger"} }}
upstream:
  retry: {{ max_attempts: 1 }}
{fake_openai_provider(fake, "OVERLOAD_UPSTREAM_KEY")}local_models:
  - {{ name: smollm2, default_model: smollm2, queue_capacity: 2, prefix_cache_mib: 16 }}
tenants:
  - {{ name: acme, api_key_hashes: ["{key_hash(KEY)}"], allowed_models: ["*"] }}
""")
    gateway = Serve(policy, {"OVERLOAD_UPSTREAM_KEY": UPSTREAM_KEY})
    url = gateway.url
    try:
        # Every upstream answer takes 200 ms: more clients than in-flight places.
        for _ in range(int(SECONDS * 20) // 100 + 20):  # 10,000 a batch: well over the need
            fake.script(*[{"delay_ms": 200}] * 10_000)

        results, lock, stop = [], threading.Lock(), threading.Event()

        def client(n):
            kinds = ["whole", "stream", "whole", "stream", "local"]
            i = n
            while not stop.is_set():
                outcome = ask(url, kinds[i % len(kinds)])
                i += 1
                with lock:
                    results.append((kinds[(i - 1) % len(kinds)], *outcome))

        clients = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for c in clients:
            c.start()
        time.sleep(min(5, SECONDS / 4))
        warm_rss = rss_mb(gateway.proc.pid)
        warm_count = len(results)
        time.sleep(SECONDS)
        end_rss = rss_mb(gateway.proc.pid)
        stop.set()
        for c in clients:
            c.join(120)

        measured = results[warm_count:]
        admitted = [r for r in measured if r[1] == 200]
        shed = [r for r in measured if r[1] == 503]
        broken = [r for r in measured if r[1] not in (200, 503)]
        latencies = sorted(r[3] for r in admitted)
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(f"\noverload: {len(measured)} requests in {SECONDS:.0f} s "
              f"({len(measured) / SECONDS:.0f}/s offered by {CLIENTS} clients), "
              f"{len(admitted) / SECONDS:.0f}/s answered, {len(shed) / SECONDS:.0f}/s shed; "
              f"answered p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; "
              f"RSS {warm_rss:.1f} MB after warm-up, {end_rss:.1f} MB at the end")

        assert not broken, f"{len(broken)} requests neither answered nor shed: {broken[:5]}"
        assert shed, "the load was above capacity: some requests were shed"
        assert all(r[2] is not None for r in shed), "every 503 says when to retry"
        assert {r[0] for r in admitted} == {"whole", "stream", "local"}, "every kind is served"
        assert end_rss <= warm_rss + RSS_MARGIN_MB, f"RSS grew from {warm_rss} to {end_rss} MB"
        # Admitted requests wait at most for the local model's short answers ahead of them.
        assert p99 < 30, f"p99 of answered requests {p99:.1f} s"

        metrics = http(f"{url}/metrics")[1]
        in_flight = next(l for l in metrics.splitlines()
                         if l.startswith("switchboard_in_flight_requests "))
        assert in_flight.split()[-1] == "0"
    finally:
        gateway.stop()
        fake.stop()
