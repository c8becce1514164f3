# Shared by the scripts: paths and small helpers. Source it, don't run it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
ENVOY_VERSION="1.40.0"
WASM_TARGET="wasm32-wasip1"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Artifact crates: every crate under filters/ that builds a cdylib (the policies and the
# bundle), then those under examples/ (the custom policy, built and tested like the others so
# the example a team copies always works, and noop, the benchmarks' floor). The directory name
# is the artifact name.
policies() {
  for manifest in "$ROOT"/filters/*/Cargo.toml "$ROOT"/examples/*/Cargo.toml; do
    if [ -f "$manifest" ] && grep -q 'cdylib' "$manifest"; then basename "$(dirname "$manifest")"; fi
  done
}

# Installs Debian packages that are missing (as root, or with sudo when available).
ensure_apt() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

