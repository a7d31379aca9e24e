#!/usr/bin/env bash
# RSS of tollgate builds with many keys verified and cached, alternated: the
# RSS phase of bench/run.sh (CLIENTS clients × 100 keys minted once into a
# fresh redis-server, bcrypt cost 4; then, per build and round, a fresh
# tollgate on Redis whose every key is requested once) without the rest of
# the benchmark, for an A/B of a change's memory. No pinning or nice.
#
# Usage: bench/rss-ab.sh BIN_A BIN_B ...   (CLIENTS=1000: 100,000 keys;
# minting takes about a minute, each pass over the keys about two)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/release/examples/bench-tool ] || cargo build --release --quiet --example bench-tool
TOOL=$PWD/target/release/examples/bench-tool
W=$(mktemp -d /tmp/rss-ab.XXXX)
export TOLLGATE_ADMIN_TOKEN=rss-token
RP=$("$TOOL" free-port)
redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no --dir "$W" --daemonize no >/dev/null &
RPID=$!
UP=$("$TOOL" free-port)
mkdir -p "$W/up"
cat >"$W/up/nginx.conf" <<NG
worker_processes 1; master_process off; daemon off; pid $W/up/nginx.pid;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $W/up; proxy_temp_path $W/up; fastcgi_temp_path $W/up; uwsgi_temp_path $W/up; scgi_temp_path $W/up;
  server { listen 127.0.0.1:$UP; location / { return 200 '{"ok":1}'; } } }
NG
nginx -p "$W/up" -c "$W/up/nginx.conf" -e "$W/up/err.log" &
NPID=$!
until curl -fsS "http://127.0.0.1:$UP/" >/dev/null 2>&1; do sleep 0.1; done
until redis-cli -p "$RP" ping 2>/dev/null | grep -q PONG; do sleep 0.1; done
cat >"$W/t.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:$UP"
[store]
backend = "redis"
url = "redis://127.0.0.1:$RP/1"
timeout_ms = 10000
[limits]
per_minute = 100000000
monthly = 1000000000
[auth]
scopes = ["read:charge_points", "write:charge_points"]
bcrypt_cost = 4
[[routes]]
path = "/api/v1/charge_points"
methods = ["GET"]
scope = "read:charge_points"
TOML
start() { "$1" serve --config "$W/t.toml" 2>"$W/log" & TG=$!; until grep -q 'listening public=' "$W/log"; do sleep 0.1; done
  PUB=http://$(grep -o 'public=[0-9.:]*' "$W/log" | head -1 | cut -d= -f2); ADM=http://$(grep -o 'admin=[0-9.:]*' "$W/log" | head -1 | cut -d= -f2); }
start "$1"
"$TOOL" mint --admin "$ADM" --prefix rss --clients "${CLIENTS:-1000}" --keys-per-client 100 --concurrency 4 --out "$W/keys.txt" >/dev/null
kill $TG; wait $TG 2>/dev/null || true
for r in 1 2; do for b in "$@"; do
  start "$b"
  idle=$(awk '/VmRSS/ {print $2}' /proc/$TG/status)
  "$TOOL" touch --url "$PUB/api/v1/charge_points" --keys "$W/keys.txt" --concurrency 4 >/dev/null
  after=$(awk '/VmRSS/ {print $2}' /proc/$TG/status)
  echo "round=$r bin=$(basename $b) idle_kb=$idle after_kb=$after"
  kill $TG; wait $TG 2>/dev/null || true
done; done
kill $RPID $NPID; wait 2>/dev/null || true
rm -rf "$W"
