#!/usr/bin/env bash
# Installs what building weir needs on Debian (as root): a C++ compiler and libclang for
# RocksDB's bindings, OpenSSL and zlib headers for librdkafka (built from source by rdkafka);
# and headless Chromium with chromedriver, which the status-page test drives.
# Safe to run again: installs only what is missing.
set -euo pipefail

need=()
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
command -v clang >/dev/null 2>&1 || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
for pkg in libssl-dev zlib1g-dev chromium chromium-driver "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo is missing; install Rust (rustup) first" >&2
  exit 1
fi
