"""What the Python tests share: the binaries that ./test.sh built, the fake upstream as its own
process, free ports, key hashes, plain HTTP calls and readiness waits. `tests/conftest.py` puts
this folder on the import path."""

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("SWITCHBOARD_BIN_DIR", ROOT / "target" / "debug"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def key_hash(key):
    done = subprocess.run([BIN / "switchboard", "keys", "hash"], input=key,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def http(url, body=None, key=None, headers=None, timeout=60):
    """(status, body text) of a GET, or of a JSON POST when `body` is given."""
    sent = {"content-type": "application/json", **(headers or {})}
    if key:
        sent["authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, sent), timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_until_ready(url, process, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args[0]} exited with {process.returncode}"
        try:
            if http(url, timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {seconds} s")


class FakeUpstream:
    """`fake-upstream` (OpenAI and Anthropic wire formats) in its own process."""

    def __init__(self, key):
        self.proc = subprocess.Popen([BIN / "fake-upstream", "--key", key],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line
        self.url = line.split()[-1]

    def script(self, *behaviours):
        """The next requests' behaviours, in order (`{"status": 500}`, `{"stall_ms": …}`…)."""
        status, body = http(f"{self.url}/_fake/script", list(behaviours))
        assert 200 <= status < 300, body

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def fake_openai_provider(fake, key_env, models=(("gpt-test", 0.15, 0.6),)):
    """A policy's `providers:` section: `fake` on the OpenAI wire, its key in `key_env`, serving
    `models` as (name, USD per million input tokens, per million output tokens)."""
    lines = [
        "providers:",
        "  - name: fake-openai",
        "    kind: openai",
        f"    base_url: {fake.url}/v1",
        f"    api_key_env: {key_env}",
        "    models:",
    ]
    for name, input_price, output_price in models:
        lines.append(f"      - {{ name: {name}, price: {{ input_per_mtok: {input_price}, "
                     f"output_per_mtok: {output_price} }} }}")
    return "\n".join(lines) + "\n"


class Serve:
    """`switchboard serve` with `policy` on a free loopback port, ready once constructed."""

    def __init__(self, policy, env, stderr=subprocess.DEVNULL, args=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [BIN / "switchboard", "serve", "--config", policy,
             "--listen", f"127.0.0.1:{self.port}", *args],
            stderr=stderr, env=dict(os.environ, **env))
        wait_until_ready(f"{self.url}/readyz", self.proc)

    def stop(self, seconds=30):
        """SIGTERM; the exit status."""
        self.proc.terminate()
        return self.proc.wait(seconds)
