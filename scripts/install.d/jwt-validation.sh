# jwt-validation's and token-introspection's integration tests run a real OpenID Provider (npm
# `oidc-provider`) and a key server (npm `jose`) on Node.js, pinned in tests/oidc/package-lock.json.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  ensure_apt nodejs npm
fi
if [ ! -d "$ROOT/tests/oidc/node_modules/oidc-provider" ] || [ ! -d "$ROOT/tests/oidc/node_modules/jose" ] \
   || [ "$ROOT/tests/oidc/package-lock.json" -nt "$ROOT/tests/oidc/node_modules/.package-lock.json" ]; then
  log "installing the test OpenID Provider (npm ci in tests/oidc)"
  npm ci --prefix "$ROOT/tests/oidc" --no-audit --no-fund
fi
