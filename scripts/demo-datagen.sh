#!/usr/bin/env bash
# The engine demo (no database needed): builds weir, runs a pipeline from the synthetic `datagen` source through the
# embedded staging log into JSON-lines files, and shows what arrived.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}
scripts/deps.sh
cargo build --quiet --bin weir
WEIR="$CARGO_TARGET_DIR/debug/weir"
rm -rf weir-data/demo out/demo

echo "== weir check examples/demo.toml"
"$WEIR" check examples/demo.toml
echo
echo "== weir run --once examples/demo.toml   (200,000 changes in 2,000 transactions)"
start=$(date +%s.%N)
"$WEIR" run --once examples/demo.toml
end=$(date +%s.%N)
echo
echo "== weir status examples/demo.toml"
"$WEIR" status examples/demo.toml
echo
echo "== what arrived in out/demo/"
wc -l out/demo/*.jsonl
echo
echo "== the first change of datagen.t0"
head -n 1 out/demo/datagen.t0.jsonl
echo
awk -v s="$start" -v e="$end" 'BEGIN { printf "== 200000 events in %.2f s (%.0f events/s, debug build)\n", e - s, 200000 / (e - s) }'
