#!/usr/bin/env bash
# `make demo`: installs what is missing, builds, starts the sample upstream on 127.0.0.1:8081 and
# Envoy with examples/gateway.yaml on 127.0.0.1:8080, prints curl commands, and stops
# everything on Ctrl-C.
source "$(dirname "$0")/common.sh"
cd "$ROOT"
bash scripts/install-toolchain.sh
bash scripts/build.sh
cargo build --quiet --release -p palisade-tests --bin palisade-echo

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

target/release/palisade-echo 8081 & pids+=($!)
"${ENVOY_BIN:-$TOOLS/bin/envoy}" -c examples/gateway.yaml --concurrency 2 --disable-hot-restart \
  -l warn --component-log-level wasm:info & pids+=($!)

for _ in $(seq 1 100); do
  curl -fsS -o /dev/null http://127.0.0.1:9901/ready 2>/dev/null && break
  sleep 0.1
done

cat <<'TXT'

Palisade demo gateway on http://127.0.0.1:8080 (upstream: an echo server on 127.0.0.1:8081).
Policies: ip-filter (admits 127.0.0.1 and ::1 only), then client-id-enforcement (client
"demo-app", secret "demo-secret-2f9c", contract for the "orders" API). Try:

  # allowed: the upstream echoes what it received (no client_secret: hidden from it;
  # x-palisade-identity: who the policies authenticated)
  curl -i -H 'client_id: demo-app' -H 'client_secret: demo-secret-2f9c' http://127.0.0.1:8080/orders/42

  # 401 {"error":"invalid_client",...} with WWW-Authenticate: Client-ID-Enforcement
  curl -i -H 'client_id: demo-app' -H 'client_secret: guess' http://127.0.0.1:8080/orders/42

  # 403 {"error":"ip_denied",...}: the same request from another loopback address
  curl -i --interface 127.0.0.2 -H 'client_id: demo-app' -H 'client_secret: demo-secret-2f9c' http://127.0.0.1:8080/orders/42

  # a forged X-Forwarded-For does not help: Envoy is the edge (use_remote_address: true)
  curl -i --interface 127.0.0.2 -H 'x-forwarded-for: 127.0.0.1' http://127.0.0.1:8080/orders/42

  # the policy's counters
  curl -s http://127.0.0.1:9901/stats/prometheus | grep palisade

Ctrl-C stops everything.
TXT
wait
