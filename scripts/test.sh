#!/usr/bin/env bash
# Runs weir's whole test suite on a Debian machine (as root): installs what is missing,
# starts the servers (scripts/services.sh), builds, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# Build outside the checkout so a fresh clone on the same machine reuses the compiled deps.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}
scripts/deps.sh
scripts/services.sh
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
