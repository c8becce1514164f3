#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, builds the artifacts,
# checks formatting and lints, then runs the unit tests and the real-Envoy integration tests.
source "$(dirname "$0")/common.sh"
cd "$ROOT"

bash scripts/install-toolchain.sh
bash scripts/build.sh

log "lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy --workspace --exclude palisade-tests --target "$WASM_TARGET" --quiet -- -D warnings

log "unit and integration tests"
# The integration tests start Envoy with dist/*.wasm; PALISADE_DIST pins them to this build.
PALISADE_DIST="$ROOT/dist" ENVOY_BIN="${ENVOY_BIN:-$TOOLS/bin/envoy}" cargo test --workspace --quiet
