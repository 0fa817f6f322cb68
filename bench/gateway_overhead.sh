#!/usr/bin/env bash
# The gateway's added latency at fixed request rates, against the fake upstream called directly,
# in the same run. Builds the release binaries first. BENCH_SECONDS sets the length of each step.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p switchboard-cli -p fake-upstream -p switchboard-bench
exec target/release/gateway_overhead target/release
