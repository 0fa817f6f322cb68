"""Fleet crash safety: `kill -9` of a real `switchboard serve` replica in the middle of requests
that hold estimates against a tenant's budget in Redis. Another replica sees the budget short
by those holds, then whole again once they lapse (`fleet.hold_ttl`); the killed replica, started
again on its ledger, ships every record of an answered request to PostgreSQL exactly once.
Redis and PostgreSQL are Debian's, started here on 127.0.0.1 with throwaway directories
(./test.sh installs them)."""

import glob
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from http.client import HTTPException

import pytest

from harness import BIN, FakeUpstream, Serve, fake_openai_provider, free_port, http, key_hash

KEY, UPSTREAM_KEY = "sk-fleet-crash", "sk-fleet-crash-upstream"
HOLD_TTL_S = 4
BUDGET_USD = 1000


def postgres_program(name):
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    assert versions, "PostgreSQL is missing: ./test.sh installs Debian's postgresql"
    return os.path.join(versions[-1], name)


def as_postgres(args):
    """PostgreSQL refuses to run as root: as root, it runs as Debian's postgres user."""
    return (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + args


@pytest.fixture
def servers(tmp_path):
    redis_port, pg_port = free_port(), free_port()
    redis = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pg_dir = f"/tmp/switchboard-test-fleet-crash-{pg_port}"
    os.makedirs(pg_dir)
    if os.geteuid() == 0:
        shutil.chown(pg_dir, "postgres", "postgres")
    subprocess.run(as_postgres([postgres_program("initdb"), "-D", f"{pg_dir}/data", "--auth=trust",
                                "--username=switchboard", "--no-sync"]),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(as_postgres([postgres_program("pg_ctl"), "-D", f"{pg_dir}/data", "-w", "-l",
                                f"{pg_dir}/log", "-o",
                                f"-p {pg_port} -c listen_addresses=127.0.0.1 "
                                f"-c unix_socket_directories={pg_dir} -c fsync=off", "start"]),
                   check=True, stdout=subprocess.DEVNULL)
    env = {
        "SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{redis_port}",
        "SWITCHBOARD_POSTGRES_URL":
            f"host=127.0.0.1 port={pg_port} user=switchboard dbname=postgres",
    }
    yield env, pg_port
    subprocess.run(as_postgres([postgres_program("pg_ctl"), "-D", f"{pg_dir}/data", "-m",
                                "immediate", "stop"]), stdout=subprocess.DEVNULL)
    shutil.rmtree(pg_dir, ignore_errors=True)
    redis.terminate()
    redis.wait(10)


def policy(tmp_path, name, fake):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""
limits: {{ request_timeout: 3 }}
ledger: {{ path: {tmp_path / name} }}
upstream:
  retry: {{ max_attempts: 1 }}
  read_timeout: 3
{fake_openai_provider(fake, "FLEET_UPSTREAM_KEY", [("gpt-test", 1000, 1000)])}local_models:
  - {{ name: smollm2, default_model: smollm2 }}
routing:
  reference_model: gpt-test
  tiers:
    - {{ name: local, below: 0.5, targets: [smollm2] }}
    - {{ name: remote, targets: [gpt-test] }}
tenants:
  - {{ name: acme, api_key_hashes: ["{key_hash(KEY)}"], allowed_models: ["*"],
      budget: {{ daily_usd: {BUDGET_USD} }} }}
fleet:
  replicas: 2
  hold_ttl: {HOLD_TTL_S}
  redis: {{ key_prefix: crash }}
  postgres: {{ flush_every_ms: 50 }}
""")
    return path


def ask(url, request_id):
    """True when answered; False when refused, or cut off by the replica's death."""
    body = {"model": "gpt-test", "max_tokens": 1000,
            "messages": [{"role": "user", "content": f"ticket {request_id}"}]}
    try:
        status, _ = http(f"{url}/v1/chat/completions", body, KEY,
                         headers={"x-request-id": request_id}, timeout=30)
    except (OSError, HTTPException):
        return False
    return status == 200


def remaining(url):
    """What the replica says is left of acme's budget (refreshed from Redis at the scrape)."""
    metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    line = next(l for l in metrics.splitlines()
                if l.startswith('switchboard_budget_remaining_usd{tenant="acme"}'))
    return float(line.split()[-1])


def shipped_ids(pg_port):
    out = subprocess.run([postgres_program("psql"), "-h", "127.0.0.1", "-p", str(pg_port), "-U",
                          "switchboard", "-d", "postgres", "-At", "-c",
                          "SELECT request_id FROM switchboard_requests"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def test_a_killed_replicas_holds_lapse_and_its_answered_records_ship_once(tmp_path, servers):
    env, pg_port = servers
    fake = FakeUpstream(UPSTREAM_KEY)
    env = dict(env, FLEET_UPSTREAM_KEY=UPSTREAM_KEY)
    doomed = Serve(policy(tmp_path, "doomed", fake), env)
    witness = Serve(policy(tmp_path, "witness", fake), env)
    try:
        answered = [f"done-{i}" for i in range(5) if ask(doomed.url, f"done-{i}")]
        assert len(answered) == 5
        whole = remaining(witness.url)

        # Requests that hold large estimates (1,000 tokens at $1,000 per million) while the
        # upstream takes its time; the replica dies under them.
        fake.script(*[{"delay_ms": 2500}] * 6)
        threads = [threading.Thread(target=ask, args=(doomed.url, f"cut-{i}")) for i in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(0.8)
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait(10)
        for thread in threads:
            thread.join()
        held = whole - remaining(witness.url)
        assert held > 5, f"the dead replica's estimates still hold {held} USD"

        time.sleep(HOLD_TTL_S + 1)
        assert abs(remaining(witness.url) - whole) < 1e-6, "the holds lapsed"

        restarted = Serve(policy(tmp_path, "doomed", fake), env)
        try:
            deadline = time.monotonic() + 30
            while not set(answered) <= set(shipped_ids(pg_port)):
                assert time.monotonic() < deadline, "the outbox did not ship"
                time.sleep(0.2)
            ids = shipped_ids(pg_port)
            for request_id in answered:
                assert ids.count(request_id) == 1, request_id
            assert not any(i.startswith("cut-") for i in ids), "no record of an unanswered request"

            # `switchboard report` with any replica's policy reads the fleet's table, although
            # the running replicas hold their own ledgers.
            report = subprocess.run(
                [BIN / "switchboard", "report", "--config", policy(tmp_path, "witness", fake),
                 "--since", "1h", "--format", "json"],
                capture_output=True, text=True, timeout=60, env=dict(os.environ, **env))
            assert report.returncode == 0, report.stderr
            assert json.loads(report.stdout)["total"]["requests"] == len(answered)
        finally:
            restarted.stop()
    finally:
        if doomed.proc.poll() is None:
            doomed.stop()
        witness.stop()
        fake.stop()
