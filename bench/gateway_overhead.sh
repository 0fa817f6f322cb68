#!/usr/bin/env bash
# The gateway's added latency at fixed request rates, against the fake upstream called directly,
# in the same run. Builds the release binaries first. BENCH_SECONDS sets the length of each step.
# With Debian's redis-server and postgresql installed, it also starts both (throwaway, on
# 127.0.0.1) and compares one gateway with fleets of one and three replicas.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p switchboard-cli -p fake-upstream -p switchboard-bench

pg_bin=$(compgen -G "/usr/lib/postgresql/*/bin" | sort -V | tail -1 || true)
if command -v redis-server >/dev/null && [ -n "$pg_bin" ]; then
    dir=$(mktemp -d /tmp/switchboard-bench-fleet-XXXXXX)
    free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
    redis_port=$(free_port)
    pg_port=$(free_port)
    # PostgreSQL refuses to run as root: as root, run it as the postgres user.
    as_postgres=()
    if [ "$(id -u)" = 0 ]; then
        chown postgres "$dir"
        as_postgres=(runuser -u postgres --)
    fi
    stop() {
        redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
        "${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$dir/pg" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$dir"
    }
    trap stop EXIT
    redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
        --dir "$dir" --daemonize yes >/dev/null
    "${as_postgres[@]}" "$pg_bin/initdb" -D "$dir/pg" --auth=trust --username=switchboard >/dev/null
    "${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$dir/pg" -w -l "$dir/pg.log" \
        -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir" start >/dev/null
    export BENCH_REDIS_URL="redis://127.0.0.1:$redis_port"
    export BENCH_POSTGRES_URL="host=127.0.0.1 port=$pg_port user=switchboard dbname=postgres"
fi
target/release/gateway_overhead target/release
