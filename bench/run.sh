#!/usr/bin/env bash
# Runs weir's benchmarks (release build). Usage: bench/run.sh [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}
scripts/deps.sh
cargo build --release --quiet -p weir -p weir-bench --bins
"$CARGO_TARGET_DIR/release/weir-bench" "$CARGO_TARGET_DIR/release/weir" "${1:-1000000}"
