#!/usr/bin/env bash
# Runs weir's benchmarks (release build).
# Usage: bench/run.sh [EVENTS]
#        bench/run.sh pg [STREAM_EVENTS] [SNAPSHOT_ROWS] [ROUNDS]   (needs PostgreSQL on 127.0.0.1:5432)
#        bench/run.sh mysql [EVENTS] [ROUNDS]   (needs MariaDB on 127.0.0.1:3306; makes a python venv)
#        bench/run.sh stages [EVENTS] [SLEEP_SECONDS]   (needs PostgreSQL on 127.0.0.1:5432)
#        bench/run.sh sql [PGBENCH_TXNS_PER_CLIENT] [BULK_TXNS] [ROUNDS]   (needs PostgreSQL on 127.0.0.1:5432)
#        bench/run.sh mysql-sql [SYSBENCH_TXNS] [BULK_TXNS] [ROUNDS]   (needs MariaDB on 127.0.0.1:3306, sysbench)
#        bench/run.sh pg-snapshot [SCALE] [WIDE_ROWS] [ROUNDS] [WORKERS]   (needs PostgreSQL on 5432, pgcopydb)
#        bench/run.sh kafka [EVENTS] [ROUNDS] [LATENCY_SECONDS] [RATE]   (needs PostgreSQL on 5432, a Kafka broker on 9092)
# WEIR_BENCH_PROFILE=dev uses the test profile's build instead of a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}
scripts/deps.sh
if [ "${WEIR_BENCH_PROFILE:-release}" = dev ]; then
    cargo build --quiet -p weir -p weir-bench --bins
    BIN="$CARGO_TARGET_DIR/debug"
else
    cargo build --release --quiet -p weir -p weir-bench --bins
    BIN="$CARGO_TARGET_DIR/release"
fi
# sql and kafka use the shared servers as they are (never restarted from here: other runs use
# them); they fail with a message when one is not reachable.
if [ "${1:-}" = sql ]; then
    shift
    exec "$BIN/weir-bench" sql "$BIN/weir" "${1:-5000}" "${2:-2000}" "${3:-3}"
fi
if [ "${1:-}" = mysql-sql ]; then
    shift
    # The shared MariaDB as it is (never restarted from here; it needs the binlog on).
    command -v sysbench >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q sysbench >/dev/null
    exec "$BIN/weir-bench" mysql-sql "$BIN/weir" "${1:-20000}" "${2:-2000}" "${3:-3}"
fi
if [ "${1:-}" = pg-snapshot ]; then
    shift
    command -v pgcopydb >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgcopydb >/dev/null
    exec "$BIN/weir-bench" pg-snapshot "$BIN/weir" "${1:-10}" "${2:-200000}" "${3:-3}" "${4:-4}"
fi
if [ "${1:-}" = kafka ]; then
    shift
    exec "$BIN/weir-bench" kafka "$BIN/weir" "${1:-100000}" "${2:-3}" "${3:-20}" "${4:-5000}"
fi
if [ "${1:-}" = stages ]; then
    shift
    scripts/services.sh postgres >/dev/null
    exec "$BIN/weir-bench" stages "$BIN/weir" "${1:-20000}" "${2:-0.0005}"
fi
if [ "${1:-}" = pg ]; then
    shift
    # PostgreSQL 15 with wal_level = logical (idempotent; restarts only when settings change).
    scripts/services.sh postgres >/dev/null
    exec "$BIN/weir-bench" pg "$BIN/weir" \
        "${1:-1000000}" "${2:-2000000}" "${3:-3}"
fi
if [ "${1:-}" = mysql ]; then
    shift
    # MariaDB 10.11 with the binlog on (ROW, FULL metadata, GTIDs); idempotent.
    scripts/services.sh mariadb >/dev/null
    # The peer: python mysql-replication (PyPI), in its own venv.
    VENV=${WEIR_BENCH_VENV:-/tmp/weir-bench-venv}
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import pymysqlreplication' 2>/dev/null; then
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet mysql-replication
    fi
    exec "$BIN/weir-bench" mysql "$BIN/weir" \
        "${1:-1000000}" "${2:-3}" "$VENV/bin/python"
fi
"$BIN/weir-bench" "$BIN/weir" "${1:-1000000}"
