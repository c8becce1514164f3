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

log "the policies' integration tests again, in bundle form"
# Issue 14: every policy's tests run against both forms. PALISADE_BUNDLE=1 makes the harness run
# each run of consecutive Palisade filters as one dist/palisade.wasm filter (the bundle's members
# are the policies under filters/; examples/custom-policy is not one of them).
bundle_tests=()
for name in $(policies); do
  suite="${name//-/_}"
  if [ "$name" != palisade ] && [ -d "$ROOT/filters/$name" ] && [ -f "$ROOT/tests/it/$suite.rs" ]; then
    bundle_tests+=(--test "$suite")
  fi
done
PALISADE_BUNDLE=1 PALISADE_DIST="$ROOT/dist" ENVOY_BIN="${ENVOY_BIN:-$TOOLS/bin/envoy}" \
  cargo test --quiet -p palisade-tests "${bundle_tests[@]}"
