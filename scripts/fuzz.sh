#!/usr/bin/env bash
# Runs every fuzz target (fuzz/src/lib.rs says what each checks) for a bounded time.
#   make fuzz                          # FUZZ_SECONDS=30 per target
#   FUZZ_SECONDS=600 make fuzz         # longer
#   FUZZ_TARGETS="xml_scanner requests" make fuzz
# Seeds come from fuzz/corpus/<target>/ (read only); what the fuzzer learns goes to
# fuzz/libfuzzer/corpus/<target>/ (not committed). A crash is saved under
# fuzz/libfuzzer/artifacts/<target>/: copy it to fuzz/regressions/<target>/ so `cargo test`
# replays it forever, then fix the code.
source "$(dirname "$0")/common.sh"
cd "$ROOT"

SECONDS_PER_TARGET="${FUZZ_SECONDS:-30}"
JOBS="${FUZZ_JOBS:-1}"
TARGETS="${FUZZ_TARGETS:-$(sed -n 's/^name = "\([a-z0-9_]*\)"$/\1/p' fuzz/libfuzzer/Cargo.toml | grep -v palisade)}"

if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly Rust toolchain (cargo fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo +nightly install cargo-fuzz --locked
fi

summary=()
failed=0
for target in $TARGETS; do
  work="fuzz/libfuzzer/corpus/$target"
  mkdir -p "$work" "fuzz/corpus/$target"
  log "fuzzing $target for ${SECONDS_PER_TARGET}s"
  out="$(mktemp)"
  if cargo +nightly fuzz run --fuzz-dir fuzz/libfuzzer "$target" "$work" "fuzz/corpus/$target" -- \
      -max_total_time="$SECONDS_PER_TARGET" -jobs="$JOBS" -workers="$JOBS" -print_final_stats=1 \
      -timeout=10 -rss_limit_mb=2048 >"$out" 2>&1; then
    status=ok
  else
    status=CRASH
    failed=1
    tail -40 "$out" >&2
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | awk '{s+=$1} END {print s+0}')"
  cov="$(grep -o 'cov: [0-9]*' "$out" | tail -1 | cut -d' ' -f2)"
  summary+=("$(printf '%-14s %-6s %12s executions  coverage %s' "$target" "$status" "$runs" "${cov:-?}")")
  rm -f "$out"
done
log "fuzz summary (${SECONDS_PER_TARGET}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
