#!/usr/bin/env bash
# `make bench`: bare Envoy vs each policy vs Envoy's native equivalent, under wrk on loopback.
# Arguments select benchmark groups (policy names); BENCH_SECONDS and BENCH_RUNS tune the runs.
source "$(dirname "$0")/common.sh"
cd "$ROOT"
bash scripts/install-toolchain.sh wrk
bash scripts/build.sh
ENVOY_BIN="${ENVOY_BIN:-$TOOLS/bin/envoy}" PALISADE_DIST="$ROOT/dist" \
  cargo run --quiet --release -p palisade-tests --bin palisade-bench -- "$@"
