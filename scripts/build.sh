#!/usr/bin/env bash
# Builds every policy for wasm32-wasip1 in release, optimizes with wasm-opt when it is
# installed, and leaves dist/<policy>.wasm plus dist/SHA256SUMS. `POLICIES="a b"` builds only
# those policies (the other artifacts in dist/ are left as they are).
source "$(dirname "$0")/common.sh"

if ! rustup target list --installed 2>/dev/null | grep -qx "$WASM_TARGET"; then
  rustup target add "$WASM_TARGET"
fi

if [ -n "${POLICIES:-}" ]; then read -r -a names <<< "$POLICIES"; else mapfile -t names < <(policies); fi
# The bundle (filters/palisade) links every policy with its `bundled` feature (no entry point of
# its own). Cargo unifies features within one build, so the bundle is built on its own: built
# with the others, their artifacts would lose their entry points.
packages=(); bundle=()
for name in "${names[@]}"; do
  if [ "$name" = palisade ]; then bundle=(-p palisade); else packages+=(-p "$name"); fi
done
log "building ${names[*]}"
for group in packages bundle; do
  declare -n selected="$group"
  if [ ${#selected[@]} -gt 0 ]; then
    cargo build --quiet --release --target "$WASM_TARGET" "${selected[@]}" --manifest-path "$ROOT/Cargo.toml"
  fi
  unset -n selected
done

mkdir -p "$ROOT/dist"
# rustc turns these wasm features on by default; wasm-opt must be told (SPIKES.md section 4).
# SIMD: the body scanners compile their bulk byte classification with `simd128` (V8 in Envoy
# runs it); artifacts without SIMD code are unaffected.
features=(--enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int
          --enable-mutable-globals --enable-reference-types --enable-multivalue --enable-simd)
# Envoy's V8 compiles every function with TurboFan when a filter loads (proxy-wasm-cpp-host turns
# Liftoff off); TurboFan's working memory grows with a function's size and, once freed, stays in
# Envoy's heap. By default wasm-opt inlines every single-caller function whatever its size,
# building 17-160 KB functions that cost 7-34 MiB of Envoy RSS per module; inlining only small
# ones keeps the artifacts within 1 % of their size (BENCHMARKS.md, "Memory").
inlining=(--one-caller-inline-max-function-size=100)
# -Os rather than -Oz: -Oz adds merge-similar-functions (shared bodies behind thunks), which
# shrinks a module by about 2 % but makes V8 emit more code with more TurboFan memory: 3-4 MiB of
# Envoy RSS per module (ip-filter 96 -> 92 MiB, the floor 87 -> 86). -Oz's other extra passes
# save 0.3 % of size and no RSS.
level=-Os
for name in "${names[@]}"; do
  built="${CARGO_TARGET_DIR:-$ROOT/target}/$WASM_TARGET/release/${name//-/_}.wasm"
  out="$ROOT/dist/$name.wasm"
  if command -v wasm-opt >/dev/null 2>&1; then
    wasm-opt "$level" "${inlining[@]}" "${features[@]}" "$built" -o "$out.tmp"
  else
    cp "$built" "$out.tmp"
  fi
  mv "$out.tmp" "$out"  # atomic: tests running meanwhile never see half a module
done
(cd "$ROOT/dist" && sha256sum -- *.wasm > SHA256SUMS)
printf '%-28s %10s %10s\n' artifact bytes gzip-9
for name in "${names[@]}"; do
  out="$ROOT/dist/$name.wasm"
  printf '%-28s %10d %10d\n' "dist/$name.wasm" "$(stat -c %s "$out")" "$(gzip -9c "$out" | wc -c)"
done
