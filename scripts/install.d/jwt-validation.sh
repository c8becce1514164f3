# jwt-validation's and token-introspection's integration tests run a real OpenID Provider (npm
# `oidc-provider`) and a key server (npm `jose`) on Node.js (>= 20; tested with 20.20), pinned in
# tests/oidc/package-lock.json.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  ensure_apt nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ]; then
  log "warning: Node.js $node_major found; the test OpenID Provider (oidc-provider 9) wants Node.js >= 20"
fi
if [ ! -d "$ROOT/tests/oidc/node_modules/oidc-provider" ] || [ ! -d "$ROOT/tests/oidc/node_modules/jose" ] \
   || [ "$ROOT/tests/oidc/package-lock.json" -nt "$ROOT/tests/oidc/node_modules/.package-lock.json" ]; then
  log "installing the test OpenID Provider (npm ci in tests/oidc)"
  npm ci --prefix "$ROOT/tests/oidc" --no-audit --no-fund
fi
