#!/usr/bin/env bash
# `make bench`: bare Envoy vs the do-nothing wasm floor (examples/noop) vs each policy vs Envoy's
# native equivalent, under wrk on loopback (BENCHMARKS.md). Arguments select benchmark groups:
# policy names, `chain` (the six-policy chain and the bundle), `memory` (Envoy's RSS per
# policy, 2 workers; `memory=<group>,...` for some), and two run only when named:
# `chain-members` (the bundle with the chain's first 1..6 members: each member's cost) and
# `host-calls` (what one host call of each kind costs, examples/host-call-cost). BENCH_SECONDS and BENCH_RUNS tune the runs; BENCH_MODE=shared lays them
# out as issue 14's table (Envoy --concurrency 2, wrk -t2 -c32, nothing pinned) instead of the
# default `pinned` (Envoy 1 worker on core 0, wrk -t1 on core 1); BENCH_TOKENS sets how many
# distinct tokens the unique-token JWT groups sign.
source "$(dirname "$0")/common.sh"
cd "$ROOT"
bash scripts/install-toolchain.sh wrk
bash scripts/build.sh
# The harness retries Envoy's admin endpoint by catching the client's panic (Envoy's main thread,
# which serves it, is busy compiling wasm modules at start): the runner must unwind, not abort
# as the workspace's release profile (made for the wasm artifacts) does.
ENVOY_BIN="${ENVOY_BIN:-$TOOLS/bin/envoy}" PALISADE_DIST="$ROOT/dist" \
  cargo run --quiet --release --config 'profile.release.panic="unwind"' \
  -p palisade-tests --bin palisade-bench -- "$@"
