#!/usr/bin/env bash
# CPU per request of two (or more) tollgate builds, alternated: tollgate on
# the memory store behind `wrk -t1 -c32 -d8s` (after a 2 s warm-up), a static
# nginx upstream, every access line written to a file (stderr). CPU is the
# process's utime + stime from /proc/<pid>/stat over the 8 s run. Short and
# targeted: use it for an A/B of one change, not as the benchmark (bench/run.sh).
# Usage: bench/ab-cpu.sh ROUNDS BIN_A BIN_B ...   (one line per run)
# Needs nginx, wrk, curl, python3. Work files in ${WORK:-/tmp/tollgate-ab-cpu}.
set -euo pipefail
ROUNDS=$1; shift
W=${WORK:-/tmp/tollgate-ab-cpu}; rm -rf "$W"; mkdir -p "$W/up/tmp" "$W/up/logs"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port)
cat > "$W/up/nginx.conf" <<NG
worker_processes 1; daemon off; pid $W/up/nginx.pid; error_log $W/up/error.log;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $W/up/tmp; proxy_temp_path $W/up/tmp;
  fastcgi_temp_path $W/up/tmp; uwsgi_temp_path $W/up/tmp; scgi_temp_path $W/up/tmp;
  keepalive_requests 10000000;
  server { listen 127.0.0.1:$UP; location / { default_type application/json;
    return 200 '{"id":"CP-1","status":"Available","connectors":2}\n'; } } }
NG
nginx -p "$W/up" -c "$W/up/nginx.conf" & NGX=$!
PID=; trap 'kill $NGX $PID 2>/dev/null || true' EXIT
until curl -fsS "http://127.0.0.1:$UP/" >/dev/null 2>&1; do sleep 0.1; done
cat > "$W/t.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:$UP"
[store]
backend = "memory"
[limits]
per_minute = 100000000
monthly = 1000000000
[auth]
scopes = ["read:charge_points"]
bcrypt_cost = 4
[[routes]]
path = "/api/v1/charge_points"
methods = ["GET"]
scope = "read:charge_points"
TOML
TCK=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' /proc/$1/stat; }
for r in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do
    log=$W/access-$r-$(basename "$bin").log
    TOLLGATE_ADMIN_TOKEN=tok "$bin" serve --config "$W/t.toml" 2>"$log" & PID=$!
    until grep -q 'listening public=' "$log"; do sleep 0.05; done
    PUB=$(grep -o 'public=[0-9.:]*' "$log" | head -1 | cut -d= -f2)
    ADM=$(grep -o 'admin=[0-9.:]*' "$log" | head -1 | cut -d= -f2)
    curl -fsS -X POST -H 'Authorization: Bearer tok' -H 'Content-Type: application/json' \
      -d '{"id":"acme"}' "http://$ADM/admin/v1/clients" >/dev/null
    KEY=$(curl -fsS -X POST -H 'Authorization: Bearer tok' -H 'Content-Type: application/json' \
      -d '{"name":"k","scopes":["read:charge_points"]}' "http://$ADM/admin/v1/clients/acme/keys" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
    URL="http://$PUB/api/v1/charge_points/CP-1"
    wrk -t1 -c32 -d2s -H "X-API-Key: $KEY" "$URL" >/dev/null
    c0=$(cpu $PID)
    out=$(wrk -t1 -c32 -d8s -H "X-API-Key: $KEY" "$URL")
    c1=$(cpu $PID)
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    kill -TERM $PID; wait $PID || true
    lines=$(grep -c 'tollgate::access' "$log" || true)
    us=$(python3 -c "print(f'{($c1-$c0)/$TCK/$n*1e6:.2f}')")
    echo "round=$r bin=$(basename "$bin") requests=$n non2xx=${non2xx:-0} cpu_ticks=$((c1-c0)) us_per_req=$us access_lines=$lines load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
  done
done
