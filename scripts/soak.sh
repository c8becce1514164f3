#!/usr/bin/env bash
# `make soak`: the six-policy chain in one Envoy under sustained mixed load (valid and hostile
# requests, HTTP/1.1 keep-alive and HTTP/2) for SOAK_SECONDS (default 120), then a verdict:
# fails if any answer was not the expected one or if Envoy's memory did not plateau. See
# tests/src/bin/soak.rs. SOAK_CLIENTS sets the number of HTTP/1.1 connections (default 6).
source "$(dirname "$0")/common.sh"
cd "$ROOT"

chain=(ip-filter cors jwt-validation client-id-enforcement rate-limiting json-threat-protection)
if [ -z "${PALISADE_DIST:-}" ]; then
  POLICIES="${chain[*]}" bash scripts/build.sh >/dev/null
  export PALISADE_DIST="$ROOT/dist"
fi
export ENVOY_BIN="${ENVOY_BIN:-$TOOLS/bin/envoy}"
log "soak: ${SOAK_SECONDS:-120} s"
cargo run --quiet --release -p palisade-tests --bin palisade-soak
