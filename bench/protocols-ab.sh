#!/usr/bin/env bash
# bench/protocols-ab.sh BASE_BIN NEW_BIN: a short A/B of two tollgate release
# binaries, in one sitting: wrk (1 thread, 32 connections, 8 s after a 2 s
# warm-up) through tollgate on the memory store to a static nginx, over
# plain HTTP/1.1 with each binary and over TLS (HTTP/1.1) with NEW_BIN, in
# ABBA order, ROUNDS (4) times. Prints one "label requests/s" line per run.
# Not part of bench/run.sh (see bench/README.md for the full bench); needs
# nginx, wrk, openssl, curl, python3.
set -euo pipefail
BASE_BIN=$(realpath "$1"); NEW_BIN=$(realpath "$2")
W=$(mktemp -d); NGINX=; trap '[ -n "$NGINX" ] && kill $NGINX 2>/dev/null; rm -rf "$W"' EXIT; cd "$W"
export TOLLGATE_ADMIN_TOKEN=ab-token
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
UP=$(free_port)
cat > nginx.conf <<NG
worker_processes 1; daemon off; pid $W/nginx.pid; error_log $W/nginx.err;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:$UP; location / { return 200 "ok\n"; } } }
NG
nginx -c $W/nginx.conf -p $W & NGINX=$!
sleep 0.5
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.crt -days 2 -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
chmod 600 tls.key
run() { # BIN LABEL TLS
  local bin=$1 label=$2 tls=$3 pub adm
  pub=$(free_port); adm=$(free_port)
  { echo "[server]"; echo "listen = \"127.0.0.1:$pub\"";
    [ "$tls" = 1 ] && printf '[server.tls]\ncert = "%s/tls.crt"\nkey = "%s/tls.key"\n' $W $W
    echo "[admin]"; echo "listen = \"127.0.0.1:$adm\""
    echo "[upstream]"; echo "url = \"http://127.0.0.1:$UP\""
    echo "[limits]"; echo "per_minute = 1000000000"; echo "monthly = 1000000000000"
    echo "[auth]"; echo 'scopes = ["read:x"]'; echo "bcrypt_cost = 4"
    echo "[log]"; echo 'level = "warn"'; } > tg.toml
  "$bin" serve --config tg.toml 2>tg.err & local pid=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$adm/healthz >/dev/null && break; sleep 0.1; done
  curl -sf -H "Authorization: Bearer ab-token" -H 'content-type: application/json' -d '{"id":"acme"}' http://127.0.0.1:$adm/admin/v1/clients >/dev/null
  local key; key=$(curl -sf -H "Authorization: Bearer ab-token" -H 'content-type: application/json' -d '{"name":"k","scopes":["read:x"]}' http://127.0.0.1:$adm/admin/v1/clients/acme/keys | python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])')
  local scheme=http; [ "$tls" = 1 ] && scheme=https
  wrk -t1 -c32 -d2s -H "x-api-key: $key" $scheme://127.0.0.1:$pub/api/v1/x >/dev/null
  local rps; rps=$(wrk -t1 -c32 -d8s -H "x-api-key: $key" $scheme://127.0.0.1:$pub/api/v1/x | awk '/Requests\/sec/ {print $2}')
  echo "$label $rps"
  kill $pid; wait $pid 2>/dev/null || true
}
ROUNDS=${ROUNDS:-4}
for round in $(seq $ROUNDS); do
  # ABBA order: a drift in the machine's load hits both alike.
  run "$BASE_BIN" "base-http1" 0
  run "$NEW_BIN" "protocols-http1" 0
  run "$NEW_BIN" "protocols-tls-http1" 1
  run "$NEW_BIN" "protocols-tls-http1" 1
  run "$NEW_BIN" "protocols-http1" 0
  run "$BASE_BIN" "base-http1" 0
done
kill $NGINX; wait $NGINX 2>/dev/null || true; NGINX=
