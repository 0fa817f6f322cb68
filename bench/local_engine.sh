#!/usr/bin/env bash
# The local engine against llama.cpp (llama-cpp-python) on the same GGUF (SmolLM2-135M Q4_1), the
# same two threads and the same prompt tokens, in the same run (see bench/local_engine.py).
# Builds the release binary; builds llama-cpp-python from source into target/bench-llama-venv
# (about 6 minutes on 2 cores; set BENCH_LLAMA_PYTHON to a Python that has it to skip that).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p switchboard-bench --bin local_engine
cargo build --release --locked -p switchboard-cli --bin switchboard
target/release/switchboard models fetch --only smollm2 >/dev/null
python="${BENCH_LLAMA_PYTHON:-}"
if [ -z "$python" ]; then
    if [ ! -x target/bench-llama-venv/bin/python ]; then
        python3 -m venv target/bench-llama-venv
    fi
    target/bench-llama-venv/bin/pip install --quiet --disable-pip-version-check cmake ninja
    CMAKE_BUILD_PARALLEL_LEVEL=2 target/bench-llama-venv/bin/pip install --quiet \
        --disable-pip-version-check llama-cpp-python==0.3.36
    python=target/bench-llama-venv/bin/python
fi
model="${SWITCHBOARD_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard}/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p target/bench
SWITCHBOARD_LOCAL_THREADS=2 target/release/local_engine "$model" target/bench/local_engine.json
exec "$python" bench/local_engine.py "$model" target/bench/local_engine.json
