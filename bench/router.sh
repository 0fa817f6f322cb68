#!/usr/bin/env bash
# The router's latency and throughput against ONNX Runtime and sentence-transformers in the same
# run (see bench/router.py). Builds the release binary; installs the Python peers into
# target/bench-venv (PyTorch is large: set BENCH_PYTHON to a Python that already has
# sentence-transformers, onnx and onnxruntime to skip that).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p switchboard-bench --bin router_latency
cargo build --release --locked -p switchboard-cli --bin switchboard
target/release/switchboard models fetch --only all-minilm-l6-v2 >/dev/null
python="${BENCH_PYTHON:-}"
if [ -z "$python" ]; then
    if [ ! -x target/bench-venv/bin/python ]; then
        python3 -m venv target/bench-venv
    fi
    target/bench-venv/bin/pip install --quiet --disable-pip-version-check \
        sentence-transformers==6.2.0 onnx==1.23.2 onnxruntime==1.32.0
    python=target/bench-venv/bin/python
fi
model_dir="${SWITCHBOARD_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard}/models/all-minilm-l6-v2"
exec "$python" bench/router.py target/release/router_latency "$model_dir" target/bench
