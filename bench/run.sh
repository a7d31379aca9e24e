#!/usr/bin/env bash
# bench/run.sh: tollgate's load benchmark, on loopback, bounded in time.
#
# Starts a static nginx upstream, nginx as a plain reverse proxy, HAProxy as
# a second peer, two floors built on hyper and tokio (bench-tool hyper-proxy
# and gate-floor), tollgate on the memory store and tollgate on Redis; runs
# the same wrk load against each;
# adds gRPC rows (h2load: direct, nginx grpc_pass, tollgate over HTTP/2) and
# TLS rows (s_time full handshakes, wrk over https: nginx vs tollgate);
# runs a fixed-rate latency pass; measures CPU, RSS, Redis commands per
# request and bcrypt verifications; prints one table and writes it to
# bench/results/<date>.md. Not run by CI. See bench/README.md.
#
# Knobs (environment): DURATION (s per measured run, 10), WARMUP (s, 2),
# CONNS (connections, 32), ROUNDS (3), ROTATE_KEYS (1000), RSS_KEYS (100000;
# 0 skips the cached-keys RSS phase), PIN (1: pin to cores, see README; 0: let
# the scheduler place everything), NICE (-10: priority of the bench's
# processes; 0 leaves it), PROFILE (1: add perf profiles and system-call
# counts under load), STREAMING (1: run tests/streaming.rs and report its
# peak RSS), REDIS_TLS (1: add a tollgate-redis-tls row, tollgate on the same
# redis-server's TLS port; 0 leaves it out), GRPC (1: the gRPC rows, h2load
# unary calls direct, through nginx grpc_pass and through tollgate with
# upstream.protocol = "http2"; 0 leaves them out), GRPC_N (calls per measured
# h2load run, DURATION × 15000), GRPC_STREAMS (streams per h2load connection,
# 4), TLS (1: the TLS rows, nginx and tollgate on one self-signed certificate:
# full handshakes with `openssl s_time -new`, wrk with a new connection per
# request, wrk with keep-alive; 0 leaves them out), STIME_PROCS (parallel
# s_time processes, 8), REDIS_BATCH_KEYS (store.batch_keys of the
# tollgate-redis rows, 64; 1 sends one script call per admission), OUT
# (results file), KEEP (1: keep the work directory), TG_BIN (a tollgate
# binary to measure instead of building this tree's).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-32}
ROTATE_KEYS=${ROTATE_KEYS:-1000}
ROUNDS=${ROUNDS:-3}
RSS_KEYS=${RSS_KEYS:-100000}
PIN=${PIN:-1}
NICE=${NICE:--10}
PROFILE=${PROFILE:-0}
STREAMING=${STREAMING:-1}
REDIS_TLS=${REDIS_TLS:-1}
REDIS_BATCH_KEYS=${REDIS_BATCH_KEYS:-64}
GRPC=${GRPC:-1}
GRPC_N=${GRPC_N:-$((DURATION * 15000))}
GRPC_WARMUP_N=$((WARMUP * 15000))
STIME_PROCS=${STIME_PROCS:-8}
GRPC_STREAMS=${GRPC_STREAMS:-4}
TLS=${TLS:-1}
OUT=${OUT:-bench/results/$(date -u +%F).md}
TOKEN=bench-admin-token
export TOLLGATE_ADMIN_TOKEN=$TOKEN
PATH_UNDER_TEST=/api/v1/charge_points

log() { printf '[bench %s] %s\n' "$(date -u +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }

# --- what the bench needs --------------------------------------------------
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -x "$NGINX" ] || missing+=(nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[ -x "$HAPROXY" ] || missing+=(haproxy)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v taskset >/dev/null || missing+=(util-linux)
if [ "$PROFILE" = 1 ]; then command -v perf >/dev/null || missing+=(linux-perf); fi
if [ "$GRPC" = 1 ]; then command -v h2load >/dev/null || missing+=(nghttp2-client); fi
if [ "$TLS" = 1 ] || [ "$REDIS_TLS" = 1 ]; then command -v openssl >/dev/null || missing+=(openssl); fi
if ((${#missing[@]})); then
  log "installing ${missing[*]} from Debian packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

# The tree the binary is built from, as it is now (edits made while the
# bench runs are not in the binary).
BUILT_FROM="built from \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- src Cargo.toml || echo ' (with uncommitted changes)')"
if [ -n "${TG_BIN:-}" ]; then
  # An earlier build, for a before/after pair in one sitting.
  BUILT_FROM="the binary $TG_BIN (TG_BIN)"
  log "tollgate is $TG_BIN"
  [ -x target/release/examples/bench-tool ] ||
    cargo build --release --quiet --example bench-tool
  TG=$(realpath "$TG_BIN")
else
  log "building tollgate and bench-tool (release)"
  cargo build --release --quiet --bin tollgate --example bench-tool
  TG=$ROOT/target/release/tollgate
fi
TOOL=$ROOT/target/release/examples/bench-tool

WORK=$(mktemp -d /tmp/tollgate-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- pinning ---------------------------------------------------------------
# PIN=1: core 0 runs the load side (wrk or bench-tool, and the static
# upstream); core 1 runs the proxy under test and, for tollgate-redis, its
# redis-server. Each proxy gets the same one core; tollgate runs one tokio
# worker (TOKIO_WORKER_THREADS=1), nginx one worker process.
# NICE (default -10) raises the priority of every process the bench starts,
# so that other work on the shared machine takes less of the cores from the
# measured processes; 0 leaves priorities alone.
PRIO=()
[ "$NICE" != 0 ] && PRIO=(nice -n "$NICE")
if [ "$PIN" = 1 ]; then
  LOAD=("${PRIO[@]}" taskset -c 0)
  SUT=("${PRIO[@]}" taskset -c 1)
  WRK_THREADS=1
  export TOKIO_WORKER_THREADS=1
  PINNING="core 0: load generator + static upstream nginx; core 1: proxy under test (+ redis-server); tollgate TOKIO_WORKER_THREADS=1, nginx worker_processes 1"
else
  LOAD=("${PRIO[@]}")
  SUT=("${PRIO[@]}")
  WRK_THREADS=2
  unset TOKIO_WORKER_THREADS
  PINNING="none: every process may run on both cores; tollgate default tokio workers (2), nginx worker_processes 1"
fi

free_port() { "$TOOL" free-port; }
wait_for() { # what, command...: polls for up to 20 s
  local what=$1; shift
  for _ in $(seq 200); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "$what did not come up"
}
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
CLK_TCK=$(getconf CLK_TCK)
# Busy jiffies per core, "busy0 total0 busy1 total1".
core_jiffies() {
  awk '/^cpu[01] / { t = 0; for (i = 2; i <= 9; i++) t += $i; b = t - $5 - $6; printf "%d %d ", b, t }' /proc/stat
}
# Busy % of core 0 and of core 1 between two core_jiffies readings: "a / b".
cores_busy() {
  local b0_0 t0_0 b0_1 t0_1 b1_0 t1_0 b1_1 t1_1
  read -r b0_0 t0_0 b0_1 t0_1 <<<"$1"
  read -r b1_0 t1_0 b1_1 t1_1 <<<"$2"
  echo "$(calc "100 * ($b1_0 - $b0_0) / ($t1_0 - $t0_0)" 0) / $(calc "100 * ($b1_1 - $b0_1) / ($t1_1 - $t0_1)" 0)"
}
# CPU seconds per 10k operations between two cpu_ticks readings: ticks0 ticks1 n.
per10k() { calc "($2 - $1) / $CLK_TCK / $3 * 10000" 3; }
# The load client's user + system seconds, from a file bash's `time` wrote ('%U %S').
client_cpu() { awk 'END { print $1 + $2 }' "$1"; }

# --- processes -------------------------------------------------------------
# nginx_conf, static_upstream, nginx_proxy and PROXY_LOCATION.
# shellcheck source=bench/nginx.sh
. bench/nginx.sh

UP_PORT=$(free_port)
UP_URL=http://127.0.0.1:$UP_PORT
nginx_conf "$WORK/upstream" "$UP_PORT" "$(static_upstream "$UP_PORT")"
"${LOAD[@]}" "$NGINX" -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log" &
UP_PID=$!
PIDS+=("$UP_PID")
wait_for "upstream nginx" curl -fsS "$UP_URL/"

PX_PORT=$(free_port)
PX_URL=http://127.0.0.1:$PX_PORT
nginx_conf "$WORK/proxy" "$PX_PORT" "$(nginx_proxy "$PX_PORT" "$UP_PORT" "$WORK/proxy/access.log")"
"${SUT[@]}" "$NGINX" -p "$WORK/proxy" -c "$WORK/proxy/nginx.conf" -e "$WORK/proxy/error.log" &
PX_PID=$!
PIDS+=("$PX_PID")
wait_for "nginx proxy" curl -fsS "$PX_URL/"

REDIS_PORT=$(free_port)
# REDIS_TLS=1: the same redis-server also listens with TLS (a test CA and a
# certificate for 127.0.0.1 made here), so both rows share one Redis process
# and its CPU accounting.
REDIS_TLS_ARGS=()
if [ "$REDIS_TLS" = 1 ]; then
  command -v openssl >/dev/null || die "REDIS_TLS=1 needs openssl"
  REDIS_TLS_PORT=$(free_port)
  mkdir -p "$WORK/tls"
  (
    cd "$WORK/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
      -out ca.pem -days 2 -subj "/CN=tollgate bench CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
      -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile server.ext -out server.pem 2>/dev/null
  )
  REDIS_TLS_ARGS=(--tls-port "$REDIS_TLS_PORT" --tls-cert-file "$WORK/tls/server.pem"
    --tls-key-file "$WORK/tls/server.key" --tls-ca-cert-file "$WORK/tls/ca.pem" --tls-auth-clients no)
fi
"${SUT[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
  --daemonize no --logfile "$WORK/redis-server.log" "${REDIS_TLS_ARGS[@]}" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
wait_for "redis-server" sh -c "redis-cli -p $REDIS_PORT ping | grep -q PONG"

# Also from the environment of the call: SERVER_EXTRA (lines after
# [server]'s listen, e.g. a [server.tls] table), UPSTREAM_URL (default the
# static nginx), UPSTREAM_EXTRA (lines in [upstream]), ROUTES_EXTRA (routes
# after the bench's one).
tollgate_conf() { # file store-section [auth extra]
  cat >"$1" <<EOF
[server]
listen = "127.0.0.1:0"
${SERVER_EXTRA:-}
[admin]
listen = "127.0.0.1:0"
[upstream]
url = "${UPSTREAM_URL:-$UP_URL}"
${UPSTREAM_EXTRA:-}
$2
[limits]
per_minute = 100000000
monthly = 1000000000
[auth]
scopes = ["read:charge_points", "write:charge_points"]
# Only so that minting the bench's many keys is quick: each key is verified
# once per process, then cached, whatever the cost.
bcrypt_cost = 4
${3:-}
[[routes]]
path = "$PATH_UNDER_TEST"
methods = ["GET"]
scope = "read:charge_points"
${ROUTES_EXTRA:-}
EOF
}

# Starts tollgate; sets TG_PID, TG_PUBLIC, TG_ADMIN. Args: name config [pin...]
start_tollgate() {
  local name=$1 conf=$2; shift 2
  "$@" "$TG" serve --config "$conf" 2>"$WORK/$name.log" &
  TG_PID=$!
  PIDS+=("$TG_PID")
  wait_for "tollgate $name" grep -q 'listening public=' "$WORK/$name.log"
  TG_PUBLIC=http://$(grep -o 'public=[0-9.:]*' "$WORK/$name.log" | awk -F= 'NR == 1 { print $2 }')
  TG_ADMIN=http://$(grep -o 'admin=[0-9.:]*' "$WORK/$name.log" | awk -F= 'NR == 1 { print $2 }')
}
metric() { # admin-url metric-line-prefix → value (0 when absent)
  curl -fsS "$1/metrics" | awk -v m="$2" 'index($0, m) == 1 { v = $NF } END { print v + 0 }'
}

tollgate_conf "$WORK/memory.toml" '[store]
backend = "memory"'
start_tollgate memory "$WORK/memory.toml" "${SUT[@]}"
MEM_PID=$TG_PID MEM_PUBLIC=$TG_PUBLIC MEM_ADMIN=$TG_ADMIN
MEM_IDLE_KB=$(status_kb "$MEM_PID" VmRSS)

tollgate_conf "$WORK/redis.toml" "[store]
backend = \"redis\"
url = \"redis://127.0.0.1:$REDIS_PORT/0\"
batch_keys = $REDIS_BATCH_KEYS"
start_tollgate redis "$WORK/redis.toml" "${SUT[@]}"
RED_PID=$TG_PID RED_PUBLIC=$TG_PUBLIC RED_ADMIN=$TG_ADMIN
RED_IDLE_KB=$(status_kb "$RED_PID" VmRSS)
REDIS_IDLE_KB=$(status_kb "$REDIS_PID" VmRSS)

if [ "$REDIS_TLS" = 1 ]; then
  # Database 2: its clients and keys apart from the plain row's.
  tollgate_conf "$WORK/redis-tls.toml" "[store]
backend = \"redis\"
url = \"rediss://127.0.0.1:$REDIS_TLS_PORT/2\"
ca = \"$WORK/tls/ca.pem\""
  start_tollgate redis-tls "$WORK/redis-tls.toml" "${SUT[@]}"
  TLS_PID=$TG_PID TLS_PUBLIC=$TG_PUBLIC TLS_ADMIN=$TG_ADMIN
  "$TOOL" mint --admin "$TLS_ADMIN" --prefix one --out "$WORK/keys-redis-tls-1.txt"
  "$TOOL" mint --admin "$TLS_ADMIN" --prefix many --clients "$ROTATE_KEYS" --out "$WORK/keys-redis-tls-many.txt"
fi

log "minting keys: 1 client with 1 key, and $ROTATE_KEYS clients with 1 key each, on both stores"
for s in memory redis; do
  admin=$MEM_ADMIN
  [ $s = redis ] && admin=$RED_ADMIN
  "$TOOL" mint --admin "$admin" --prefix one --out "$WORK/keys-$s-1.txt"
  "$TOOL" mint --admin "$admin" --prefix many --clients "$ROTATE_KEYS" --out "$WORK/keys-$s-many.txt"
done
# The direct and nginx rows send the same request bytes (the header is ignored there).
cp "$WORK/keys-memory-1.txt" "$WORK/keys-plain.txt"

# A second peer: HAProxy doing in memory, in one process, what an API gateway
# built from it does: the key looked up in a map file (key → client), an
# unknown key refused 401, the client's request rate tracked in a stick table
# (http_req_rate over 60 s) and refused 429 above a limit never reached here,
# X-Forwarded-* added, a keep-alive pool to the upstream. It writes no access
# log (HAProxy logs only to syslog); nginx-proxy and tollgate do.
awk '{ printf "%s one\n", $1 }' "$WORK/keys-memory-1.txt" >"$WORK/haproxy-keys.map"
awk '{ printf "%s c%d\n", $1, NR }' "$WORK/keys-memory-many.txt" >>"$WORK/haproxy-keys.map"
HA_PORT=$(free_port)
HA_URL=http://127.0.0.1:$HA_PORT
cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend api
  bind 127.0.0.1:$HA_PORT
  http-request set-var(txn.client) req.hdr(X-API-Key),map($WORK/haproxy-keys.map)
  http-request deny deny_status 401 unless { var(txn.client) -m found }
  http-request track-sc0 var(txn.client) table limits
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100000000 }
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend upstream
backend limits
  stick-table type string len 64 size 100k expire 2m store http_req_rate(60s)
backend upstream
  http-reuse always
  server up 127.0.0.1:$UP_PORT
EOF
"${SUT[@]}" "$HAPROXY" -db -f "$WORK/haproxy.cfg" 2>"$WORK/haproxy.log" &
HA_PID=$!
PIDS+=("$HA_PID")
wait_for "haproxy" curl -fsS -H "X-API-Key: $(sed -n 1p "$WORK/keys-memory-1.txt")" "$HA_URL$PATH_UNDER_TEST"

# Two floors, not peers (bench-tool, bench/gate_floor.rs), on the stack
# tollgate is built on (hyper 1.x, tokio, one current-thread runtime; glibc's
# allocator): hyper-proxy forwards and does nothing else; gate-floor adds the
# least per-request work of tollgate's contract (the key hashed and looked
# up, a window count, the X-Forwarded-*, X-Tollgate-* and X-RateLimit-*
# headers, an upstream and a header-read timer, an access line written in
# batches). Each client connection has an upstream connection of its own
# (no pool). What tollgate costs above gate-floor is its own overhead; what
# gate-floor costs above nginx-proxy is the stack's and the contract's.
HY_PORT=$(free_port)
HY_URL=http://127.0.0.1:$HY_PORT
"${SUT[@]}" "$TOOL" hyper-proxy --port "$HY_PORT" --upstream "127.0.0.1:$UP_PORT" 2>"$WORK/hyper-proxy.log" &
HY_PID=$!
PIDS+=("$HY_PID")
GF_PORT=$(free_port)
GF_URL=http://127.0.0.1:$GF_PORT
"${SUT[@]}" "$TOOL" gate-floor --port "$GF_PORT" --upstream "127.0.0.1:$UP_PORT" 2>"$WORK/gate-floor.log" &
GF_PID=$!
PIDS+=("$GF_PID")
wait_for "hyper-proxy" curl -fsS "$HY_URL$PATH_UNDER_TEST"
wait_for "gate-floor" curl -fsS -H "X-API-Key: $(sed -n 1p "$WORK/keys-memory-1.txt")" "$GF_URL$PATH_UNDER_TEST"

# --- gRPC targets ----------------------------------------------------------------
# GRPC=1: an h2c gRPC upstream (bench-tool grpc-upstream: every call answered
# with one 9-byte message and grpc-status 0 in trailers), nginx as an HTTP/2
# gRPC proxy in front of it (the peer), and two tollgates of their own with
# upstream.protocol = "http2" (memory, and Redis database 3), so that the
# HTTP/1 rows' processes are not touched.
GRPC_PATH=/bench.Bench/Unary
if [ "$GRPC" = 1 ]; then
  printf '\0\0\0\0\0' >"$WORK/grpc-empty.bin" # one empty message, not compressed
  GU_PORT=$(free_port)
  GU_URL=http://127.0.0.1:$GU_PORT
  "${LOAD[@]}" "$TOOL" grpc-upstream --port "$GU_PORT" &
  GU_PID=$!
  PIDS+=("$GU_PID")
  wait_for "gRPC upstream" curl -fsS --http2-prior-knowledge "$GU_URL/calls"
  GX_PORT=$(free_port)
  GX_URL=http://127.0.0.1:$GX_PORT
  # nginx's gRPC proxy on a plain-text HTTP/2 listener (h2c), a keep-alive
  # pool to the upstream as nginx-proxy has (without `keepalive`, grpc_pass
  # opens a connection per call), X-Forwarded-* and an access log as tollgate.
  nginx_conf "$WORK/grpc-proxy" "$GX_PORT" "
  access_log $WORK/grpc-proxy/access.log;
  upstream grpcup { server 127.0.0.1:$GU_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$GX_PORT http2;
    location / {
      grpc_pass grpc://grpcup;
      grpc_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      grpc_set_header X-Forwarded-Proto \$scheme;
      grpc_set_header X-Forwarded-Host \$host;
    }
  }"
  "${SUT[@]}" "$NGINX" -p "$WORK/grpc-proxy" -c "$WORK/grpc-proxy/nginx.conf" -e "$WORK/grpc-proxy/error.log" &
  GX_PID=$!
  PIDS+=("$GX_PID")
  wait_for "nginx gRPC proxy" "$TOOL" grpc-check --url "$GX_URL$GRPC_PATH" --calls 1
  grpc_route="[[routes]]
path = \"/bench.Bench\"
methods = [\"POST\"]
scope = \"read:charge_points\""
  UPSTREAM_URL=$GU_URL UPSTREAM_EXTRA='protocol = "http2"' ROUTES_EXTRA=$grpc_route \
    tollgate_conf "$WORK/grpc-memory.toml" '[store]
backend = "memory"'
  start_tollgate grpc-memory "$WORK/grpc-memory.toml" "${SUT[@]}"
  GMEM_PID=$TG_PID GMEM_PUBLIC=$TG_PUBLIC GMEM_ADMIN=$TG_ADMIN
  UPSTREAM_URL=$GU_URL UPSTREAM_EXTRA='protocol = "http2"' ROUTES_EXTRA=$grpc_route \
    tollgate_conf "$WORK/grpc-redis.toml" "[store]
backend = \"redis\"
url = \"redis://127.0.0.1:$REDIS_PORT/3\""
  start_tollgate grpc-redis "$WORK/grpc-redis.toml" "${SUT[@]}"
  GRED_PID=$TG_PID GRED_PUBLIC=$TG_PUBLIC GRED_ADMIN=$TG_ADMIN
  "$TOOL" mint --admin "$GMEM_ADMIN" --prefix one --out "$WORK/keys-grpc-memory.txt"
  "$TOOL" mint --admin "$GRED_ADMIN" --prefix one --out "$WORK/keys-grpc-redis.txt"
fi

# --- TLS targets -----------------------------------------------------------------
# TLS=1: one self-signed certificate (P-256, for 127.0.0.1), served by nginx
# (the nginx-proxy config with an `ssl` listener) and by a tollgate on the
# memory store with [server.tls]. nginx logs $ssl_session_reused ("r" or
# "."), so the report can show how many handshakes resumed a session.
if [ "$TLS" = 1 ]; then
  mkdir -p "$WORK/edge"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/edge/tls.key" \
    -out "$WORK/edge/tls.crt" -days 2 -subj /CN=127.0.0.1 \
    -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
  chmod 600 "$WORK/edge/tls.key" # tollgate refuses a key file other users can read
  NT_PORT=$(free_port)
  NT_URL=https://127.0.0.1:$NT_PORT
  nginx_conf "$WORK/tls-proxy" "$NT_PORT" "
  log_format tls '\$remote_addr - [\$time_local] \"\$request\" \$status \$body_bytes_sent \$ssl_protocol \$ssl_cipher \$ssl_session_reused';
  access_log $WORK/tls-proxy/access.log tls;
  upstream api { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NT_PORT ssl;
    ssl_certificate $WORK/edge/tls.crt;
    ssl_certificate_key $WORK/edge/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
$PROXY_LOCATION
  }"
  "${SUT[@]}" "$NGINX" -p "$WORK/tls-proxy" -c "$WORK/tls-proxy/nginx.conf" -e "$WORK/tls-proxy/error.log" &
  NT_PID=$!
  PIDS+=("$NT_PID")
  wait_for "nginx TLS proxy" curl -fsS --cacert "$WORK/edge/tls.crt" "$NT_URL/"
  SERVER_EXTRA="[server.tls]
cert = \"$WORK/edge/tls.crt\"
key = \"$WORK/edge/tls.key\"" tollgate_conf "$WORK/tls-memory.toml" '[store]
backend = "memory"'
  start_tollgate tls-memory "$WORK/tls-memory.toml" "${SUT[@]}"
  TT_PID=$TG_PID TT_PUBLIC=https://${TG_PUBLIC#http://} TT_ADMIN=$TG_ADMIN
  "$TOOL" mint --admin "$TT_ADMIN" --prefix one --out "$WORK/keys-tls-memory.txt"
  wait_for "tollgate TLS listener" curl -fsS --cacert "$WORK/edge/tls.crt" \
    -H "X-API-Key: $(sed -n 1p "$WORK/keys-tls-memory.txt")" "$TT_PUBLIC$PATH_UNDER_TEST"
  # What each server negotiates with an OpenSSL client (wrk uses OpenSSL too).
  negotiated() {
    openssl s_client -connect "${1#https://}" </dev/null 2>/dev/null |
      awk '/^New, / { sub(/^New, /, ""); p = $0 } /^Server Temp Key/ { sub(/^Server Temp Key: /, ""); k = $0 }
           END { printf "%s, key exchange %s", p, k }'
  }
  NT_NEGOTIATED=$(negotiated "$NT_URL")
  TT_NEGOTIATED=$(negotiated "$TT_PUBLIC")
  # Whether each server resumes a session an OpenSSL client offers
  # (s_client -sess_out, then -sess_in): "Reused" or "New".
  resumes() {
    local f=$WORK/edge/session.pem
    openssl s_client -connect "${1#https://}" -sess_out "$f" < <(sleep 0.5) >/dev/null 2>&1
    openssl s_client -connect "${1#https://}" -sess_in "$f" < <(sleep 0.5) 2>/dev/null |
      awk '/^(New|Reused), / { sub(/,.*/, ""); print; exit }'
    rm -f "$f"
  }
  NT_RESUMES=$(resumes "$NT_URL")
  TT_RESUMES=$(resumes "$TT_PUBLIC")
  # s_time -new offers no session: check it on nginx-tls, with a request
  # (-www) so that nginx logs each connection's $ssl_session_reused.
  l0=$(wc -l <"$WORK/tls-proxy/access.log")
  openssl s_time -connect "${NT_URL#https://}" -new -www / -time 1 >/dev/null 2>&1
  STIME_LOGGED=$(awk -v l="$l0" 'NR > l' "$WORK/tls-proxy/access.log" | wc -l)
  STIME_REUSED=$(awk -v l="$l0" 'NR > l && $NF == "r"' "$WORK/tls-proxy/access.log" | wc -l)
  log "s_time -new on nginx-tls: $STIME_REUSED of $STIME_LOGGED connections resumed a session"
fi
HS_LOGGED=0 HS_REUSED=0

LOAD_BEFORE=$(uptime)
log "load before: $LOAD_BEFORE"

# --- the wrk runs ------------------------------------------------------------
declare -A BATCH EVALPERREQ EXCESS RPS P50 P99 REQS NON2XX SUTCPU REDISCPU RSSKB CORES LOADSIDE SCRIPTS INNER EVALUSEC BCRYPT BCRYPT_ALL
wrk_ms() { # wrk's "1.23ms" / "456.00us" / "1.02s" → ms
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
    else { sub(/s$/, "", v); printf "%.3f", v * 1000 } }'
}
redis_calls() { # → "all_calls script_calls script_usec"
  rcli INFO commandstats | tr -d '\r' | awk -F'[:,=]' '
    /^cmdstat_/ { all += $3; if ($1 ~ /^cmdstat_eval/) { sc += $3; su += $5 } }
    END { printf "%d %d %d", all, sc, su }'
}
# Exact top-level Redis commands (round trips) for N requests of one key: MONITOR
# while bench-tool sends them one at a time to an otherwise idle tollgate.
# MONITOR tags the commands a script runs "[0 lua]"; every other line is a
# command a client sent.
round_trips() { # label url keysfile n → "top-level script-calls"
  local label=$1 url=$2 keys=$3 n=$4 f=$WORK/monitor-$1.txt
  awk -v n="$n" 'NR == 1 { for (i = 0; i < n; i++) print }' "$keys" >"$WORK/rt-keys.txt"
  timeout 60 redis-cli -p "$REDIS_PORT" monitor >"$f" &
  local m=$!
  wait_for "redis monitor" grep -q '^OK' "$f"
  "$TOOL" touch --url "$url$PATH_UNDER_TEST" --keys "$WORK/rt-keys.txt" --concurrency 1
  # The last reply reached tollgate before its response reached us; give the
  # monitor stream a moment to be written out.
  sleep 0.5
  kill "$m" 2>/dev/null || true
  wait "$m" 2>/dev/null || true
  awk '/^[0-9]/ { if ($0 ~ /\[[0-9]+ lua\]/) next; top++; if (tolower($4) ~ /"eval/) sc++ }
       END { printf "%d %d", top, sc }' "$f"
}

# One measured wrk run; results go to the arrays under "label#round".
# Args: label round url proxy-pid admin-url(or -) keysfile rotate(0/1)
# [close: 1 sends "Connection: close", a new connection (and TLS handshake)
# per request]
run_wrk() {
  local label=$1 round=$2 url=$3 pid=$4 admin=$5 keys=$6 rotate=$7 close=${8:-0}
  local k="$label#$round"
  local args=(-t"$WRK_THREADS" -c"$CONNS" --timeout 5s)
  [ "$close" = 1 ] && args+=(-H "Connection: close")
  local extra=()
  if [ "$rotate" = 1 ]; then
    args+=(-s "$ROOT/bench/rotate.lua")
    extra=(-- "$keys")
  else
    args+=(-H "X-API-Key: $(sed -n 1p "$keys")")
  fi
  "${LOAD[@]}" wrk "${args[@]}" -d"${WARMUP}s" "$url$PATH_UNDER_TEST" "${extra[@]}" >/dev/null
  local t0 r0 u0 c0 b0=0 rc0
  t0=$(cpu_ticks "$pid")
  r0=$(cpu_ticks "$REDIS_PID")
  u0=$(cpu_ticks "$UP_PID")
  c0=$(core_jiffies)
  [ "$admin" != - ] && b0=$(metric "$admin" tollgate_bcrypt_verifications_total)
  rc0=$(redis_calls)
  local out=$WORK/wrk-$label-$round.txt
  # bash's `time` gives wrk's own CPU (user + sys of the child).
  local TIMEFORMAT='%U %S'
  { time "${LOAD[@]}" wrk "${args[@]}" -d"${DURATION}s" --latency "$url$PATH_UNDER_TEST" \
      "${extra[@]}" >"$out"; } 2>"$out.time"
  local t1 r1 u1 c1 b1=0 rc1
  t1=$(cpu_ticks "$pid")
  r1=$(cpu_ticks "$REDIS_PID")
  u1=$(cpu_ticks "$UP_PID")
  c1=$(core_jiffies)
  [ "$admin" != - ] && b1=$(metric "$admin" tollgate_bcrypt_verifications_total)
  rc1=$(redis_calls)
  local n secs
  n=$(awk '/requests in/ { print $1 }' "$out")
  secs=$(awk '/requests in/ { sub(/s,?$/, "", $4); print $4 }' "$out")
  REQS[$k]=$n
  RPS[$k]=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$out")
  P50[$k]=$(wrk_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
  P99[$k]=$(wrk_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
  NON2XX[$k]=$(awk '/Non-2xx/ { n = $NF } END { print n + 0 }' "$out")
  if grep -q 'Socket errors' "$out"; then
    NON2XX[$k]="${NON2XX[$k]} ($(grep 'Socket errors' "$out" | sed 's/^ *//'))"
  fi
  SUTCPU[$k]=$(per10k "$t0" "$t1" "$n")
  REDISCPU[$k]=$(per10k "$r0" "$r1" "$n")
  RSSKB[$k]=$(status_kb "$pid" VmHWM)
  # Core 0 as a whole, and the share of it the load side used (wrk + upstream).
  local wc
  wc=$(client_cpu "$out.time")
  CORES[$k]=$(cores_busy "$c0" "$c1")
  LOADSIDE[$k]=$(calc "100 * (($u1 - $u0) / $CLK_TCK + $wc) / $secs" 0)
  if [ "$label" = direct ]; then LOADSIDE[$k]=$(calc "100 * $wc / $secs" 0); fi
  local a0 s0 us0 a1 s1 us1
  read -r a0 s0 us0 <<<"$rc0"
  read -r a1 s1 us1 <<<"$rc1"
  SCRIPTS[$k]=$(calc "($s1 - $s0) / $n" 3)
  EXCESS[$k]=-
  if [ $((s1 - s0)) -gt 0 ]; then EXCESS[$k]=$((s1 - s0 - n)); fi
  INNER[$k]=$(calc "($a1 - $a0 - $s1 + $s0) / $n" 2)
  EVALUSEC[$k]=- BATCH[$k]=- EVALPERREQ[$k]=-
  if [ $((s1 - s0)) -gt 0 ]; then
    EVALUSEC[$k]=$(calc "($us1 - $us0) / ($s1 - $s0)" 2)
    BATCH[$k]=$(calc "$n / ($s1 - $s0)" 1)
    EVALPERREQ[$k]=$(calc "($us1 - $us0) / $n" 2)
  fi
  BCRYPT[$k]=$((${b1%.*} - ${b0%.*}))
  log "$label round $round: ${RPS[$k]} req/s, p50 ${P50[$k]} ms, p99 ${P99[$k]} ms, non-2xx ${NON2XX[$k]}, proxy ${SUTCPU[$k]} CPU s/10k, load side ${LOADSIDE[$k]}% of a core, cores ${CORES[$k]}% busy"
}

# One measured h2load run of unary gRPC calls (GRPC_N calls, CONNS
# connections, GRPC_STREAMS streams each, one empty message per call);
# results under "label#round". Args: label round url proxy-pid keysfile
declare -A GLAT G2XX GREACHED
grpc_calls() { curl -fsS --http2-prior-knowledge "$GU_URL/calls"; }
h2load_ms() { # h2load's "363us" / "13.15ms" / "1.02s" → ms
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else { sub(/s$/, "", v); printf "%.3f", v * 1000 } }'
}
run_h2load() {
  local label=$1 round=$2 url=$3 pid=$4 keys=$5
  local k="$label#$round"
  local args=(-t"$WRK_THREADS" -c"$CONNS" -m"$GRPC_STREAMS" -d "$WORK/grpc-empty.bin"
    -H "content-type: application/grpc" -H "te: trailers" -H "x-api-key: $(sed -n 1p "$keys")")
  [ "$GRPC_WARMUP_N" -gt 0 ] && "${LOAD[@]}" h2load "${args[@]}" -n"$GRPC_WARMUP_N" "$url$GRPC_PATH" >/dev/null
  local t0 r0 u0 c0 n0
  t0=$(cpu_ticks "$pid")
  r0=$(cpu_ticks "$REDIS_PID")
  u0=$(cpu_ticks "$GU_PID")
  c0=$(core_jiffies)
  n0=$(grpc_calls)
  local out=$WORK/h2load-$label-$round.txt
  local TIMEFORMAT='%U %S'
  { time "${LOAD[@]}" h2load "${args[@]}" -n"$GRPC_N" "$url$GRPC_PATH" >"$out"; } 2>"$out.time"
  local t1 r1 u1 c1 n1
  t1=$(cpu_ticks "$pid")
  r1=$(cpu_ticks "$REDIS_PID")
  u1=$(cpu_ticks "$GU_PID")
  c1=$(core_jiffies)
  n1=$(grpc_calls)
  local secs
  secs=$(calc "$(h2load_ms "$(awk '/^finished in/ { sub(/,$/, "", $3); print $3 }' "$out")") / 1000" 3)
  REQS[$k]=$GRPC_N
  RPS[$k]=$(awk '/^finished in/ { printf "%.0f", $4 }' "$out")
  # "time for request:  min max mean sd +/-sd": h2load gives no percentiles.
  GLAT[$k]=$(awk '/^time for request:/ { print $4, $5, $6, $7 }' "$out" | {
    read -r mn mx mean sd
    echo "$(h2load_ms "$mn") / $(h2load_ms "$mean") / $(h2load_ms "$sd") / $(h2load_ms "$mx")"
  })
  G2XX[$k]=$(awk '/^status codes:/ { print $3 }' "$out")
  GREACHED[$k]=$((n1 - n0))
  NON2XX[$k]=$((GRPC_N - G2XX[$k]))
  SUTCPU[$k]=$(per10k "$t0" "$t1" "$GRPC_N")
  REDISCPU[$k]=$(per10k "$r0" "$r1" "$GRPC_N")
  RSSKB[$k]=$(status_kb "$pid" VmHWM)
  local hc
  hc=$(client_cpu "$out.time")
  CORES[$k]=$(cores_busy "$c0" "$c1")
  LOADSIDE[$k]=$(calc "100 * (($u1 - $u0) / $CLK_TCK + $hc) / $secs" 0)
  if [ "$label" = gdirect ]; then LOADSIDE[$k]=$(calc "100 * $hc / $secs" 0); fi
  log "$label round $round: ${RPS[$k]} calls/s, request time min/mean/sd/max ${GLAT[$k]} ms, 2xx ${G2XX[$k]} of $GRPC_N, reached the upstream ${GREACHED[$k]}, proxy ${SUTCPU[$k]} CPU s/10k, load side ${LOADSIDE[$k]}% of a core, cores ${CORES[$k]}% busy"
}

# One measured run of full TLS handshakes: STIME_PROCS `openssl s_time -new`
# processes (each a new session, never resumed: one TCP connection and a full
# handshake after another, no request) for DURATION seconds; results under
# "label#round". Args: label round url proxy-pid
run_stime() {
  local label=$1 round=$2 url=$3 pid=$4
  local k="$label#$round" hostport=${3#https://} i
  local out=$WORK/stime-$label-$round
  # In subshells: a bare `wait` here would wait for the bench's servers too.
  (
    for i in $(seq "$STIME_PROCS"); do
      "${LOAD[@]}" openssl s_time -connect "$hostport" -new -time "$WARMUP" >/dev/null 2>&1 &
    done
    wait
  )
  local t0 c0 w0 t1 c1 w1
  t0=$(cpu_ticks "$pid")
  c0=$(core_jiffies)
  w0=$(date +%s.%N)
  local TIMEFORMAT='%U %S'
  { time (
    for i in $(seq "$STIME_PROCS"); do
      "${LOAD[@]}" openssl s_time -connect "$hostport" -new -time "$DURATION" >"$out.$i" 2>&1 &
    done
    wait
  ); } 2>"$out.time"
  w1=$(date +%s.%N)
  t1=$(cpu_ticks "$pid")
  c1=$(core_jiffies)
  local n secs
  n=$(cat "$out".[0-9]* | awk '/connections in .* real seconds/ { n += $1 } END { print n + 0 }')
  secs=$(calc "$w1 - $w0" 3)
  REQS[$k]=$n
  RPS[$k]=$(calc "$n / $secs" 0)
  P50[$k]=- P99[$k]=-
  NON2XX[$k]=$(cat "$out".[0-9]* | grep -ci 'error' || true)
  SUTCPU[$k]=$(per10k "$t0" "$t1" "$n")
  REDISCPU[$k]=0
  RSSKB[$k]=$(status_kb "$pid" VmHWM)
  CORES[$k]=$(cores_busy "$c0" "$c1")
  LOADSIDE[$k]=$(calc "100 * $(client_cpu "$out.time") / $secs" 0)
  log "$label round $round: ${RPS[$k]} full handshakes/s ($n in $secs s), proxy ${SUTCPU[$k]} CPU s/10k, load side ${LOADSIDE[$k]}% of a core, cores ${CORES[$k]}% busy"
}

ROWS=(direct nginx hap1 hapN hyper gate1 mem1 memN red1 redN)
declare -A NAME=(
  [direct]="upstream (direct)"
  [nginx]="nginx-proxy"
  [hap1]="haproxy (map + stick table), 1 key"
  [hapN]="haproxy (map + stick table), $ROTATE_KEYS keys"
  [hyper]="floor: hyper-proxy (forwarding only)"
  [gate1]="floor: gate-floor (forwarding + the contract's least work), 1 key"
  [mem1]="tollgate-memory, 1 key"
  [memN]="tollgate-memory, $ROTATE_KEYS keys"
  [red1]="tollgate-redis, 1 key"
  [redN]="tollgate-redis, $ROTATE_KEYS keys"
)
declare -A URL=([direct]=$UP_URL [nginx]=$PX_URL [hap1]=$HA_URL [hapN]=$HA_URL [hyper]=$HY_URL [gate1]=$GF_URL [mem1]=$MEM_PUBLIC [memN]=$MEM_PUBLIC [red1]=$RED_PUBLIC [redN]=$RED_PUBLIC)
declare -A PID=([direct]=$UP_PID [nginx]=$PX_PID [hap1]=$HA_PID [hapN]=$HA_PID [hyper]=$HY_PID [gate1]=$GF_PID [mem1]=$MEM_PID [memN]=$MEM_PID [red1]=$RED_PID [redN]=$RED_PID)
declare -A ADMIN=([direct]=- [nginx]=- [hap1]=- [hapN]=- [hyper]=- [gate1]=- [mem1]=$MEM_ADMIN [memN]=$MEM_ADMIN [red1]=$RED_ADMIN [redN]=$RED_ADMIN)
declare -A KEYS=(
  [direct]=$WORK/keys-plain.txt [nginx]=$WORK/keys-plain.txt
  [hap1]=$WORK/keys-memory-1.txt [hapN]=$WORK/keys-memory-many.txt
  [hyper]=$WORK/keys-plain.txt [gate1]=$WORK/keys-memory-1.txt
  [mem1]=$WORK/keys-memory-1.txt [memN]=$WORK/keys-memory-many.txt
  [red1]=$WORK/keys-redis-1.txt [redN]=$WORK/keys-redis-many.txt
)
declare -A ROTATE=([direct]=0 [nginx]=0 [hap1]=0 [hapN]=1 [hyper]=0 [gate1]=0 [mem1]=0 [memN]=1 [red1]=0 [redN]=1)
if [ "$REDIS_TLS" = 1 ]; then
  # 1 key: group commit shares a script call among concurrent requests;
  # many keys: about one call (one TLS record each way) per request.
  ROWS+=(tls1 tlsN)
  NAME[tls1]="tollgate-redis-tls, 1 key"
  NAME[tlsN]="tollgate-redis-tls, $ROTATE_KEYS keys"
  URL[tls1]=$TLS_PUBLIC PID[tls1]=$TLS_PID ADMIN[tls1]=$TLS_ADMIN
  URL[tlsN]=$TLS_PUBLIC PID[tlsN]=$TLS_PID ADMIN[tlsN]=$TLS_ADMIN
  KEYS[tls1]=$WORK/keys-redis-tls-1.txt ROTATE[tls1]=0
  KEYS[tlsN]=$WORK/keys-redis-tls-many.txt ROTATE[tlsN]=1
fi

TLS_ROWS=()
declare -A CLOSE
if [ "$TLS" = 1 ]; then
  # full: openssl s_time -new, a full handshake per connection, no request;
  # hs: wrk with "Connection: close", a new connection per request, but wrk
  # keeps its last session and offers it (SSL_clear), so the server may
  # resume it (nginx's log counts how often it did);
  # ka: keep-alive, the handshake cost spread over the whole run.
  TLS_ROWS=(ntls_full ttls_full ntls_hs ttls_hs ntls_ka ttls_ka)
  NAME[ntls_full]="nginx-tls, full handshakes (s_time -new)"
  NAME[ttls_full]="tollgate-memory-tls, full handshakes (s_time -new)"
  NAME[ntls_hs]="nginx-tls, new connection per request (resumption allowed)"
  NAME[ttls_hs]="tollgate-memory-tls, new connection per request (resumption allowed)"
  NAME[ntls_ka]="nginx-tls, keep-alive"
  NAME[ttls_ka]="tollgate-memory-tls, keep-alive"
  for m in full hs ka; do
    URL[ntls_$m]=$NT_URL PID[ntls_$m]=$NT_PID ADMIN[ntls_$m]=- KEYS[ntls_$m]=$WORK/keys-plain.txt ROTATE[ntls_$m]=0
    URL[ttls_$m]=$TT_PUBLIC PID[ttls_$m]=$TT_PID ADMIN[ttls_$m]=$TT_ADMIN KEYS[ttls_$m]=$WORK/keys-tls-memory.txt ROTATE[ttls_$m]=0
  done
  CLOSE=([ntls_hs]=1 [ttls_hs]=1 [ntls_ka]=0 [ttls_ka]=0)
fi
GRPC_ROWS=()
declare -A GCHECK
if [ "$GRPC" = 1 ]; then
  GRPC_ROWS=(gdirect gnginx gmem gred)
  NAME[gdirect]="gRPC upstream (direct)"
  NAME[gnginx]="nginx-grpc (grpc_pass)"
  NAME[gmem]="tollgate-memory, protocol http2"
  NAME[gred]="tollgate-redis, protocol http2"
  URL[gdirect]=$GU_URL URL[gnginx]=$GX_URL URL[gmem]=$GMEM_PUBLIC URL[gred]=$GRED_PUBLIC
  PID[gdirect]=$GU_PID PID[gnginx]=$GX_PID PID[gmem]=$GMEM_PID PID[gred]=$GRED_PID
  KEYS[gdirect]=$WORK/keys-grpc-memory.txt KEYS[gnginx]=$WORK/keys-grpc-memory.txt
  KEYS[gmem]=$WORK/keys-grpc-memory.txt KEYS[gred]=$WORK/keys-grpc-redis.txt
  # h2load counts HTTP statuses only, and a gRPC refusal is a 200 too: check
  # whole calls once per target (message and grpc-status 0 in trailers).
  for r in "${GRPC_ROWS[@]}"; do
    if out=$("$TOOL" grpc-check --url "${URL[$r]}$GRPC_PATH" --key "$(sed -n 1p "${KEYS[$r]}")" --calls 100 2>&1); then
      GCHECK[$r]="100 of 100"
    else
      GCHECK[$r]="**failed**: $out"
    fi
    log "grpc-check ${NAME[$r]}: $out"
  done
fi

# First sight of every key: its one bcrypt verification, before any measuring.
for r in memN redN $([ "$REDIS_TLS" = 1 ] && echo tlsN); do
  "$TOOL" touch --url "${URL[$r]}$PATH_UNDER_TEST" --keys "${KEYS[$r]}" --concurrency 8
done

# Rounds: every target once per round, so that a burst of outside load on the
# shared machine hits one round of each, not all rounds of one. Each row then
# reports its median round (by req/s).
for round in $(seq "$ROUNDS"); do
  for r in "${ROWS[@]}" "${TLS_ROWS[@]}"; do
    if [ "${r%_full}" != "$r" ]; then
      run_stime "$r" "$round" "${URL[$r]}" "${PID[$r]}"
      continue
    fi
    [ "$r" = ntls_hs ] && l0=$(wc -l <"$WORK/tls-proxy/access.log")
    run_wrk "$r" "$round" "${URL[$r]}" "${PID[$r]}" "${ADMIN[$r]}" "${KEYS[$r]}" "${ROTATE[$r]}" "${CLOSE[$r]:-0}"
    if [ "$r" = ntls_hs ]; then
      HS_LOGGED=$((HS_LOGGED + $(awk -v l="$l0" 'NR > l' "$WORK/tls-proxy/access.log" | wc -l)))
      HS_REUSED=$((HS_REUSED + $(awk -v l="$l0" 'NR > l && $NF == "r"' "$WORK/tls-proxy/access.log" | wc -l)))
    fi
  done
  for r in "${GRPC_ROWS[@]}"; do
    run_h2load "$r" "$round" "${URL[$r]}" "${PID[$r]}" "${KEYS[$r]}"
  done
done
declare -A PICK ALLRPS
for r in "${ROWS[@]}" "${TLS_ROWS[@]}" "${GRPC_ROWS[@]}"; do
  sorted=$(for round in $(seq "$ROUNDS"); do echo "${RPS[$r#$round]} $round"; done | sort -n)
  PICK[$r]="$r#$(awk -v m=$(((ROUNDS + 1) / 2)) 'NR == m { print $2 }' <<<"$sorted")"
  ALLRPS[$r]=$(for round in $(seq "$ROUNDS"); do printf '%s ' "${RPS[$r#$round]}"; done)
  total_bcrypt=0
  for round in $(seq "$ROUNDS"); do total_bcrypt=$((total_bcrypt + ${BCRYPT[$r#$round]:-0})); done
  BCRYPT_ALL[$r]=$total_bcrypt
done

RT_N=1000
read -r RT_TOP RT_SCRIPT <<<"$(round_trips red1 "$RED_PUBLIC" "$WORK/keys-redis-1.txt" "$RT_N")"
log "MONITOR: $RT_TOP top-level Redis commands ($RT_SCRIPT scripts) for $RT_N requests"

# --- the fixed-rate latency pass ----------------------------------------------
RATE=$(calc "${RPS[${PICK[red1]}]} / 2" 0)
RATE=$((RATE / 100 * 100))
[ "$RATE" -ge 100 ] || RATE=100
declare -A FR
log "fixed-rate pass at $RATE req/s (half of tollgate-redis' peak), $ROUNDS rounds"
FR_ROWS=(direct nginx mem1 red1)
for round in $(seq "$ROUNDS"); do
  for r in "${FR_ROWS[@]}"; do
    FR[$r#$round]=$("${LOAD[@]}" "$TOOL" rate --url "${URL[$r]}$PATH_UNDER_TEST" --rate "$RATE" \
      --duration "$DURATION" --warmup "$WARMUP" --connections "$CONNS" --keys "${KEYS[$r]}")
    log "${NAME[$r]} round $round: ${FR[$r#$round]}"
  done
done
frv() { tr ' ' '\n' <<<"${FR[$1]}" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
# Each row reports its median round by p99.
declare -A FRPICK
for r in "${FR_ROWS[@]}"; do
  FRPICK[$r]="$r#$(for round in $(seq "$ROUNDS"); do echo "$(frv "$r#$round" p99_ms) $round"; done |
    sort -n | awk -v m=$(((ROUNDS + 1) / 2)) 'NR == m { print $2 }')"
done
fr() { frv "${FRPICK[$1]}" "$2"; }

LOAD_AFTER=$(uptime)
log "load after: $LOAD_AFTER"

# --- RSS with many keys verified and cached ------------------------------------
RSS_LINES=()
if [ "$RSS_KEYS" -gt 0 ]; then
  per_client=100
  clients=$(((RSS_KEYS + per_client - 1) / per_client))
  total=$((clients * per_client))
  log "RSS phase: minting $total keys into Redis db 1 (bcrypt cost 4)"
  # A long store timeout: this phase measures memory, and a loaded machine
  # must not turn a slow Redis reply into a failed verification.
  tollgate_conf "$WORK/rss.toml" "[store]
backend = \"redis\"
url = \"redis://127.0.0.1:$REDIS_PORT/1\"
timeout_ms = 10000"
  start_tollgate rss-minter "$WORK/rss.toml" "${PRIO[@]}"
  minter=$TG_PID
  t_start=$(date +%s)
  "${PRIO[@]}" "$TOOL" mint --admin "$TG_ADMIN" --prefix rss --clients "$clients" \
    --keys-per-client "$per_client" --concurrency 4 --out "$WORK/keys-rss.txt"
  kill "$minter"
  wait "$minter" 2>/dev/null || true
  # A fresh process, so that RSS holds the cache and not the minting.
  start_tollgate rss "$WORK/rss.toml" "${PRIO[@]}"
  rss_idle=$(status_kb "$TG_PID" VmRSS)
  log "RSS phase: verifying each of the $total keys once"
  "${PRIO[@]}" "$TOOL" touch --url "$TG_PUBLIC$PATH_UNDER_TEST" --keys "$WORK/keys-rss.txt" --concurrency 4
  rss_after=$(status_kb "$TG_PID" VmRSS)
  hwm_after=$(status_kb "$TG_PID" VmHWM)
  b_first=$(metric "$TG_ADMIN" tollgate_bcrypt_verifications_total)
  "${PRIO[@]}" "$TOOL" touch --url "$TG_PUBLIC$PATH_UNDER_TEST" --keys "$WORK/keys-rss.txt" --concurrency 4
  b_second=$(metric "$TG_ADMIN" tollgate_bcrypt_verifications_total)
  rss_second=$(status_kb "$TG_PID" VmRSS)
  uncached=$((${b_second%.*} - ${b_first%.*}))
  cached=$((total - uncached))
  per_entry=$(calc "($rss_after - $rss_idle) * 1024 / $cached" 0)
  RSS_LINES+=(
    "| keys verified (bcrypt, first pass) | ${b_first%.*} |"
    "| bcrypt verifications in a second pass over the same keys | $uncached (so $cached entries were cached) |"
    "| RSS idle (fresh process, Redis store) | $(calc "$rss_idle / 1024" 1) MB |"
    "| RSS after verifying $total keys | $(calc "$rss_after / 1024" 1) MB (peak $(calc "$hwm_after / 1024" 1) MB) |"
    "| RSS after the second pass | $(calc "$rss_second / 1024" 1) MB |"
    "| RSS growth per cached entry | $per_entry bytes |"
    "| time for the phase | $(($(date +%s) - t_start)) s |"
  )
  kill "$TG_PID"
fi

# --- streaming -----------------------------------------------------------------
STREAM_LINE="not run (STREAMING=0)"
if [ "$STREAMING" = 1 ]; then
  log "streaming: cargo test --test streaming -- --nocapture"
  STREAM_LINE=$(cargo test --quiet --test streaming -- --nocapture 2>&1 | grep 'peak RSS' || echo "failed: see cargo test --test streaming")
fi

# --- profiles ------------------------------------------------------------------
PROFILE_TEXT=""
if [ "$PROFILE" = 1 ]; then
  perf_top() { # perf.data → where the samples went: by binary, then the top symbols
    echo '```'
    perf report -i "$1" --no-children --sort dso --stdio 2>/dev/null |
      awk '!/^#/ && !/^$/ && n++ < 6 { sub(/ +$/, ""); print }'
    echo
    perf report -i "$1" --no-children --sort dso,symbol --stdio 2>/dev/null |
      awk '!/^#/ && !/^$/ && n++ < 30 { sub(/( +-)+ *$/, ""); gsub(/   +/, "  "); print }'
    echo '```'
  }
  SYSCALLS=read,write,writev,readv,recvfrom,sendto,epoll_wait,epoll_ctl,futex
  SC_EVENTS=raw_syscalls:sys_enter,context-switches
  for sc in ${SYSCALLS//,/ }; do SC_EVENTS+=",syscalls:sys_enter_$sc"; done
  declare -A SCSTAT
  profile() { # label url pid keysfile [redis pid]
    local label=$1 url=$2 pid=$3 keys=$4
    # One wrk run: perf record for DURATION seconds, then (tracepoints cost
    # time of their own, so not at the same time) perf stat for 3 seconds.
    "${LOAD[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"$((DURATION + 6))s" -H "X-API-Key: $(sed -n 1p "$keys")" \
      "$url$PATH_UNDER_TEST" >"$WORK/wrk-profile-$label.txt" &
    local w=$!
    sleep 1
    perf record -q -e cpu-clock -F 999 -p "$pid" -o "$WORK/perf-$label.data" -- sleep "$DURATION" 2>/dev/null &
    local p1=$! p2=
    if [ -n "${5:-}" ]; then
      perf record -q -e cpu-clock -F 999 -p "$5" -o "$WORK/perf-$label-redis.data" -- sleep "$DURATION" 2>/dev/null &
      p2=$!
    fi
    wait "$p1" ${p2:+"$p2"}
    sleep 0.5
    perf stat -x, -e "$SC_EVENTS" -p "$pid" -o "$WORK/perf-stat-$label.txt" -- sleep 3 2>/dev/null
    wait "$w"
    # Requests in the perf stat window, from wrk's average rate over its whole run.
    local reqs
    reqs=$(awk '/^Requests\/sec/ { print $2 * 3 }' "$WORK/wrk-profile-$label.txt")
    SCSTAT[$label]=$(awk -F, -v n="$reqs" '$3 ~ /sys_enter|context-switches/ {
        e = $3; sub(/.*sys_enter_?/, "", e); if (e == "") e = "all syscalls"
        printf "%s %.2f · ", e, $1 / n }' "$WORK/perf-stat-$label.txt")
    [ "$label" = nginx-proxy ] && return 0
    PROFILE_TEXT+=$'\n'"### $label under wrk: tollgate (perf record -e cpu-clock -F 999, flat, % of samples)"$'\n\n'
    PROFILE_TEXT+=$(perf_top "$WORK/perf-$label.data")$'\n'
    if [ -n "${5:-}" ]; then
      PROFILE_TEXT+=$'\n'"### $label under wrk: redis-server (its binary is named redis-check-rdb in Debian)"$'\n\n'
      PROFILE_TEXT+=$(perf_top "$WORK/perf-$label-redis.data")$'\n'
    fi
  }
  log "profiling nginx-proxy, tollgate-memory and tollgate-redis under load"
  profile nginx-proxy "$PX_URL" "$PX_PID" "$WORK/keys-plain.txt"
  profile tollgate-memory "$MEM_PUBLIC" "$MEM_PID" "$WORK/keys-memory-1.txt"
  profile tollgate-redis "$RED_PUBLIC" "$RED_PID" "$WORK/keys-redis-1.txt" "$REDIS_PID"
  PROFILE_TEXT=$'
'"### System calls and context switches per request (perf stat, tracepoints)"$'

'"| process | per request |"$'
'"|---|---|"$'
'"$(for l in nginx-proxy tollgate-memory tollgate-redis; do echo "| $l | ${SCSTAT[$l]} |"; done)"$'
'"$PROFILE_TEXT"
fi

# --- the report ----------------------------------------------------------------
ratio() { if [ "$2" = 0 ] || [ -z "$2" ] || [ "$1" = - ]; then echo -; else calc "$1 / $2" 2; fi; }
ok() { if awk "BEGIN { exit !($1) }"; then echo "met"; else echo "**not met**"; fi; }
v() { local -n arr=$1; echo "${arr[${PICK[$2]}]}"; } # array row → the row's median round's value
N_RPS=$(v RPS nginx) N_P99=$(v P99 nginx)
# Requests one fully busy core would serve, from the CPU the proxy (and its
# Redis) spent: the throughput figure least disturbed by outside load.
percpu() { calc "10000 / ($(v SUTCPU "$1") + $(v REDISCPU "$1"))" 0; }
{
  echo "# tollgate benchmark, $(date -u '+%F %H:%M') UTC"
  echo
  echo "Made by \`bench/run.sh\` at commit \`$(git rev-parse --short HEAD)\`; tollgate: $BUILT_FROM."
  echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(free -g | awk '/Mem:/ { print $2 }') GiB, Linux $(uname -r)."
  echo "Tools: $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }'), $("$NGINX" -v 2>&1 | cut -d' ' -f3), $(redis-server --version | cut -d' ' -f1-3)."
  echo
  echo "- Pinning: $PINNING. Priority: every process the bench starts runs at nice $NICE."
  echo "- Load: wrk, $CONNS keep-alive connections, $WRK_THREADS thread(s), ${WARMUP} s warm-up then ${DURATION} s measured, \`GET $PATH_UNDER_TEST\` with \`X-API-Key\`; the upstream answers a 51-byte JSON body. $ROUNDS rounds, each target once per round; each row shows its median round by req/s."
  echo "- tollgate: release build, default config except limits (never reached) and \`bcrypt_cost = 4\`; access log (info) to a file. nginx-proxy: keep-alive upstream pool, X-Forwarded-* set, access log to a file."
  echo "- Machine load (\`uptime\`) before: \`${LOAD_BEFORE#*load average: }\`, after: \`${LOAD_AFTER#*load average: }\` (the machine is shared with other work, which runs on both cores)."
  echo
  echo "## Throughput (wrk, closed loop)"
  echo
  echo "| target | req/s | × nginx-proxy | p50 ms | p99 ms | p99 × nginx-proxy | proxy CPU s / 10k req | redis CPU s / 10k req | req per CPU-second (proxy + redis) | × nginx-proxy | proxy peak RSS MB | non-2xx | req/s of each round | load side, % of a core | core 0 / 1 busy % |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for r in "${ROWS[@]}"; do
    echo "| ${NAME[$r]} | $(v RPS "$r") | $(ratio "$(v RPS "$r")" "$N_RPS") | $(v P50 "$r") | $(v P99 "$r") | $(ratio "$(v P99 "$r")" "$N_P99") | $(v SUTCPU "$r") | $(v REDISCPU "$r") | $(percpu "$r") | $(ratio "$(percpu "$r")" "$(percpu nginx)") | $(calc "$(v RSSKB "$r") / 1024" 1) | $(v NON2XX "$r") | ${ALLRPS[$r]}| $(v LOADSIDE "$r") | $(v CORES "$r") |"
  done
  echo
  echo "\"proxy\" is the process under test: the upstream nginx for the direct row, the nginx proxy, HAProxy, bench-tool (the floor rows), or tollgate."
  echo "The floor rows are not peers: bench-tool's hyper-proxy forwards on hyper 1.x and tokio and does nothing else; its gate-floor adds the least per-request work of tollgate's contract (the key hashed and looked up, a window count, the X-Forwarded-*, X-Tollgate-* and X-RateLimit-* headers, an upstream and a header-read timer, an access line written in batches; bench/gate_floor.rs). Both give each client connection an upstream connection of its own (no pool) and use glibc's allocator."
  echo "\"load side\" is wrk's CPU plus the upstream nginx's, over the run: near 100 % with pinning, the load core limits the row."
  echo "\"core busy\" counts every process on the core, ours and the machine's other work."
  echo
  if [ "$TLS" = 1 ]; then
    echo "## TLS on the public listener (openssl s_time, wrk over https)"
    echo
    echo "nginx-tls is nginx-proxy's config with an \`ssl\` listener; tollgate-memory-tls is tollgate-memory's config with \`[server.tls]\` (its own process); both serve one self-signed P-256 certificate for 127.0.0.1 made with \`openssl req -x509\` at start, and proxy in plain HTTP/1.1 to the static upstream."
    echo "Negotiated with an OpenSSL client (\`openssl s_client\`; wrk uses OpenSSL too): nginx-tls $NT_NEGOTIATED; tollgate $TT_NEGOTIATED."
    echo "- \"full handshakes\": $STIME_PROCS \`openssl s_time -connect … -new -time $DURATION\` processes at once (on the load core), each making one TCP connection and one full handshake after another (\`-new\`: a new session every time, none offered for resumption), no request; the figure is connections summed over the processes per wall-clock second. Checked once on nginx-tls with a request per connection (\`-www /\`, so that nginx logs \`\$ssl_session_reused\`): $STIME_REUSED of $STIME_LOGGED connections resumed a session. No latency figures (s_time gives none)."
    echo "- \"new connection per request\": wrk with \`-H \"Connection: close\"\`, a new TCP connection and handshake for each request (with \`X-API-Key\`, proxied). wrk keeps its last session (\`SSL_clear\`) and offers it on the next connection; both servers resume an offered session by default (nginx: session tickets; tollgate: rustls's defaults, a 256-entry session cache with TLS 1.3 tickets naming its entries) — checked once with \`openssl s_client -sess_out\` then \`-sess_in\`: nginx-tls ${NT_RESUMES:-?}, tollgate ${TT_RESUMES:-?}. nginx-tls logged $HS_REUSED of its $HS_LOGGED requests in these runs (warm-ups included) on a resumed session; tollgate's share is not counted. So these rows are a reconnecting client's case, not a full-handshake rate."
    echo "- \"keep-alive\": $CONNS connections held open, the handshakes' cost spread over the run."
    echo
    echo "| target | req/s | × nginx-tls, same mode | p50 ms | p99 ms | proxy CPU s / 10k req | req per CPU-second | × nginx-tls | proxy peak RSS MB | non-2xx | req/s of each round | load side, % of a core | core 0 / 1 busy % |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for r in "${TLS_ROWS[@]}"; do
      peer=ntls_${r#*_}
      echo "| ${NAME[$r]} | $(v RPS "$r") | $(ratio "$(v RPS "$r")" "$(v RPS "$peer")") | $(v P50 "$r") | $(v P99 "$r") | $(v SUTCPU "$r") | $(percpu "$r") | $(ratio "$(percpu "$r")" "$(percpu "$peer")") | $(calc "$(v RSSKB "$r") / 1024" 1) | $(v NON2XX "$r") | ${ALLRPS[$r]}| $(v LOADSIDE "$r") | $(v CORES "$r") |"
    done
    echo
    echo "With a handshake per connection the client's side of each handshake (an OpenSSL client on the load core: key exchange and signature check) may be what sets the pace: see the load side and core 0 columns. Where the two servers' rates are about equal, the load core set them, and the per-CPU-second columns are the comparison."
    echo
  fi
  if [ "$GRPC" = 1 ]; then
    echo "## gRPC unary calls (h2load, HTTP/2 without TLS)"
    echo
    echo "\`h2load -n $GRPC_N -c $CONNS -m $GRPC_STREAMS -t $WRK_THREADS\` ($CONNS connections, $GRPC_STREAMS concurrent streams on each: $((CONNS * GRPC_STREAMS)) calls in flight), after an unmeasured run of $GRPC_WARMUP_N calls; each call \`POST $GRPC_PATH\` with \`content-type: application/grpc\`, \`te: trailers\`, \`x-api-key\` and one empty message (5 bytes). The upstream (\`bench-tool grpc-upstream\`, h2c, on the load core) answers each with a 9-byte message and \`grpc-status: 0\` in trailers. nginx-grpc: \`grpc_pass\` on an \`http2\` (h2c) listener, a keep-alive pool of 64 upstream connections, X-Forwarded-* set, access log to a file. The tollgates are processes of their own (memory; Redis database 3 on the same redis-server) with \`upstream.protocol = \"http2\"\` (one multiplexed h2c connection to the upstream) and a route \`/bench.Bench\` needing \`read:charge_points\`. $ROUNDS rounds, interleaved with the wrk rows; each row shows its median round by calls/s."
    echo
    echo "| target | calls/s | × nginx-grpc | request time min / mean / sd / max ms | proxy CPU s / 10k calls | redis CPU s / 10k calls | calls per CPU-second (proxy + redis) | × nginx-grpc | proxy peak RSS MB | HTTP 2xx of $GRPC_N | calls the upstream answered | whole calls checked (grpc-check: message + grpc-status 0) | calls/s of each round | load side, % of a core | core 0 / 1 busy % |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for r in "${GRPC_ROWS[@]}"; do
      echo "| ${NAME[$r]} | $(v RPS "$r") | $(ratio "$(v RPS "$r")" "$(v RPS gnginx)") | $(v GLAT "$r") | $(v SUTCPU "$r") | $(v REDISCPU "$r") | $(percpu "$r") | $(ratio "$(percpu "$r")" "$(percpu gnginx)") | $(calc "$(v RSSKB "$r") / 1024" 1) | $(v G2XX "$r") | $(v GREACHED "$r") | ${GCHECK[$r]} | ${ALLRPS[$r]}| $(v LOADSIDE "$r") | $(v CORES "$r") |"
    done
    echo
    echo "h2load reports the time of each request as min / max / mean / sd only (no percentiles), from its own send to the end of the response, with $((CONNS * GRPC_STREAMS)) calls in flight: closed loop, so mostly queueing. It counts HTTP statuses, and a gRPC refusal is an HTTP 200 too: so \"calls the upstream answered\" is the upstream's own count over the run (every call that reached it got \`grpc-status: 0\`), and before measuring, \`bench-tool grpc-check\` sent 100 calls through each target and checked each whole answer (200, \`application/grpc\`, the upstream's message, \`grpc-status: 0\` in trailers)."
    echo
  fi
  echo "## Latency at a fixed rate ($RATE req/s, half of tollgate-redis' peak)"
  echo
  echo "\`bench-tool rate\`: open loop, $CONNS connections, latency counted from each request's intended send time (no coordinated omission). $ROUNDS rounds; each row shows its median round by p99."
  echo
  echo "| target | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | p99 added over direct, ms | non-2xx / errors | p99 of each round |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for r in "${FR_ROWS[@]}"; do
    each=$(for round in $(seq "$ROUNDS"); do printf '%s ' "$(frv "$r#$round" p99_ms)"; done)
    echo "| ${NAME[$r]} | $(fr "$r" achieved_rps) | $(fr "$r" p50_ms) | $(fr "$r" p99_ms) | $(fr "$r" p999_ms) | $(fr "$r" max_ms) | $(calc "$(fr "$r" p99_ms) - $(fr direct p99_ms)" 3) | $(fr "$r" non2xx) / $(fr "$r" errors) | $each|"
  done
  echo
  echo "## Redis and bcrypt per request (measured wrk runs)"
  echo
  echo "| target | scripts (EVALSHA+EVAL) per request | requests per script (group commit batch) | commands run inside scripts per request | script usec_per_call | script µs per request | bcrypt verifications, all measured rounds |"
  echo "|---|---|---|---|---|---|---|"
  for r in mem1 memN red1 redN; do
    echo "| ${NAME[$r]} | $(v SCRIPTS "$r") | $(v BATCH "$r") | $(v INNER "$r") | $(v EVALUSEC "$r") | $(v EVALPERREQ "$r") | ${BCRYPT_ALL[$r]} |"
  done
  echo
  echo "From \`INFO commandstats\` before and after each measured run (Redis 7 counts a script's inner commands there too, hence the separate column)."
  echo "Concurrent requests of one key share one script call (group commit, docs/rate-limiting.md), so under load there are fewer scripts than requests; with $ROTATE_KEYS keys over $CONNS connections, few requests of one key are ever in flight together."
  echo "wrk counts only completed requests: the requests in flight when it stops (at most $CONNS) were admitted but not counted."
  echo "Exact round trips, from \`MONITOR\` while $RT_N requests of one cached key were sent one at a time to the otherwise idle tollgate-redis:"
  echo "$RT_TOP commands sent by clients ($RT_SCRIPT of them scripts), i.e. $(calc "$RT_TOP / $RT_N" 3) round trips per request."
  echo
  echo "## Memory"
  echo
  echo "| what | value |"
  echo "|---|---|"
  echo "| tollgate-memory RSS idle (just started) | $(calc "$MEM_IDLE_KB / 1024" 1) MB |"
  echo "| tollgate-redis RSS idle (just started) | $(calc "$RED_IDLE_KB / 1024" 1) MB |"
  echo "| redis-server RSS idle | $(calc "$REDIS_IDLE_KB / 1024" 1) MB |"
  for l in "${RSS_LINES[@]}"; do echo "$l"; done
  echo "| streaming 100 MB each way (tests/streaming.rs, debug build) | $STREAM_LINE |"
  echo
  echo "## Targets"
  echo
  echo "| target | measured | |"
  echo "|---|---|---|"
  m=$(ratio "$(v RPS mem1)" "$N_RPS"); echo "| tollgate-memory ≥ 1.0× nginx-proxy req/s | ${m}× | $(ok "$m >= 1.0") |"
  m=$(ratio "$(percpu mem1)" "$(percpu nginx)"); echo "| the same, per CPU-second | ${m}× | $(ok "$m >= 1.0") |"
  m=$(ratio "$(v P99 mem1)" "$N_P99"); echo "| tollgate-memory p99 ≤ 1.2× nginx-proxy's | ${m}× | $(ok "$m <= 1.2") |"
  m=$(ratio "$(v RPS memN)" "$N_RPS"); echo "| tollgate-memory, $ROTATE_KEYS keys ≥ 1.0× nginx-proxy req/s | ${m}× | $(ok "$m >= 1.0") |"
  m=$(ratio "$(percpu memN)" "$(percpu nginx)"); echo "| the same, per CPU-second | ${m}× | $(ok "$m >= 1.0") |"
  m=$(ratio "$(v RPS mem1)" "$(v RPS hap1)"); echo "| tollgate-memory ≥ 1.0× haproxy req/s, 1 key | ${m}× | $(ok "$m >= 1.0") |"
  m=$(ratio "$(v RPS memN)" "$(v RPS hapN)"); echo "| tollgate-memory ≥ 1.0× haproxy req/s, $ROTATE_KEYS keys | ${m}× | $(ok "$m >= 1.0") |"
  m=$(ratio "$(percpu memN)" "$(percpu hapN)"); echo "| the same, per CPU-second | ${m}× | $(ok "$m >= 1.0") |"
  m=$(ratio "$(v RPS gate1)" "$N_RPS"); echo "| floor: gate-floor vs nginx-proxy, req/s (the contract's least work on hyper and tokio, written as directly as we could) | ${m}× | measured |"
  m=$(ratio "$(percpu gate1)" "$(percpu nginx)"); echo "| the same, per CPU-second | ${m}× | measured |"
  m=$(ratio "$(v RPS mem1)" "$(v RPS gate1)"); echo "| tollgate-memory vs gate-floor, req/s, 1 key (tollgate's own overhead) | ${m}× | measured |"
  m=$(ratio "$(percpu mem1)" "$(percpu gate1)"); echo "| the same, per CPU-second | ${m}× | measured |"
  m=$(ratio "$(v RPS red1)" "$N_RPS"); echo "| tollgate-redis ≥ 0.8× nginx-proxy req/s | ${m}× | $(ok "$m >= 0.8") |"
  m=$(ratio "$(v RPS redN)" "$N_RPS"); echo "| tollgate-redis, $ROTATE_KEYS clients × 1 key ≥ 0.6× nginx-proxy req/s | ${m}× | $(ok "$m >= 0.6") |"
  m=$(ratio "$(percpu redN)" "$(percpu nginx)"); echo "| the same, per CPU-second (tollgate + redis-server) | ${m}× | $(ok "$m >= 0.6") |"
  m=$(v EVALPERREQ redN); echo "| Redis CPU per admission at $ROTATE_KEYS keys ≤ 6 µs (script µs per request) | $m µs | $(ok "$m <= 6") |"
  m=$(ratio "$(percpu red1)" "$(percpu nginx)"); echo "| the same, per CPU-second (tollgate + redis-server) | ${m}× | $(ok "$m >= 0.8") |"
  m=$(calc "$(fr red1 p99_ms) - $(fr direct p99_ms)" 3); echo "| tollgate-redis p99 added over direct ≤ 1 ms at half load | $m ms | $(ok "$m <= 1.0") |"
  if [ "$REDIS_TLS" = 1 ]; then
    for n in 1 N; do
      keys="1 key"; [ $n = N ] && keys="$ROTATE_KEYS keys"
      m=$(ratio "$(v RPS tls$n)" "$(v RPS red$n)"); echo "| tollgate-redis over TLS vs plain redis://, req/s ($keys) | ${m}× | measured |"
      m=$(ratio "$(percpu tls$n)" "$(percpu red$n)"); echo "| the same, per CPU-second (tollgate + redis-server) | ${m}× | measured |"
    done
  fi
  if [ "$GRPC" = 1 ]; then
    m=$(ratio "$(v RPS gmem)" "$(v RPS gnginx)"); echo "| gRPC unary: tollgate-memory (http2) vs nginx grpc_pass, calls/s | ${m}× | measured |"
    m=$(ratio "$(percpu gmem)" "$(percpu gnginx)"); echo "| the same, per CPU-second | ${m}× | measured |"
    m=$(ratio "$(v RPS gred)" "$(v RPS gnginx)"); echo "| gRPC unary: tollgate-redis (http2) vs nginx grpc_pass, calls/s | ${m}× | measured |"
    m=$(ratio "$(percpu gred)" "$(percpu gnginx)"); echo "| the same, per CPU-second (tollgate + redis-server) | ${m}× | measured |"
    bad=0
    for r in "${GRPC_ROWS[@]}"; do
      [ "${GCHECK[$r]}" = "100 of 100" ] || bad=$((bad + 1))
      for round in $(seq "$ROUNDS"); do
        [ "${G2XX[$r#$round]}" = "$GRPC_N" ] && [ "${GREACHED[$r#$round]}" = "$GRPC_N" ] || bad=$((bad + 1))
      done
    done
    echo "| every gRPC call a 200 that reached the upstream (grpc-status 0), every whole call checked ok | $bad runs or checks not so | $(ok "$bad == 0") |"
  fi
  if [ "$TLS" = 1 ]; then
    m=$(ratio "$(v RPS ttls_hs)" "$(v RPS ntls_hs)"); echo "| TLS new connection per request (wrk, resumption allowed): tollgate vs nginx, req/s | ${m}× | measured |"
    m=$(ratio "$(percpu ttls_hs)" "$(percpu ntls_hs)"); echo "| the same, per CPU-second | ${m}× | measured |"
    m=$(ratio "$(v RPS ttls_ka)" "$(v RPS ntls_ka)"); echo "| TLS keep-alive req/s: tollgate vs nginx | ${m}× | measured |"
    m=$(ratio "$(percpu ttls_ka)" "$(percpu ntls_ka)"); echo "| the same, per CPU-second | ${m}× | measured |"
    m=$(ratio "$(v RPS ttls_ka)" "$(v RPS mem1)"); echo "| tollgate-memory over TLS (keep-alive) vs plain, req/s | ${m}× | measured |"
    m=$(ratio "$(v RPS ttls_full)" "$(v RPS ntls_full)"); echo "| TLS full handshakes per second (s_time -new): tollgate vs nginx | ${m}× | measured |"
    m=$(ratio "$(percpu ttls_full)" "$(percpu ntls_full)"); echo "| the same, per CPU-second | ${m}× | measured |"
    echo "| s_time -new does full handshakes only (sessions resumed, nginx-tls log, one check) | $STIME_REUSED of $STIME_LOGGED | $(ok "$STIME_REUSED == 0 && $STIME_LOGGED > 0") |"
  fi
  m=$(calc "$RT_TOP / $RT_N" 3); echo "| ≤ 1.0 Redis round trip per request (MONITOR, $RT_N requests) | $m | $(ok "$m <= 1.0") |"
  for r in red1 redN; do
    m=$(v EXCESS "$r"); echo "| ≤ 1 script per request under load (commandstats, ${NAME[$r]#tollgate-redis, }): scripts − requests ≤ $CONNS in flight at wrk's stop | $(v SCRIPTS "$r") per request ($(v BATCH "$r") requests per script) | $(ok "$m <= $CONNS") |"
  done
  m=$((BCRYPT_ALL[memN] + BCRYPT_ALL[redN] + BCRYPT_ALL[mem1] + BCRYPT_ALL[red1])); echo "| 0 bcrypt verifications per request after first sight | $m in all measured runs | $(ok "$m == 0") |"
  m=$(calc "$MEM_IDLE_KB / 1024" 1); echo "| RSS idle < 30 MB | $m MB | $(ok "$m < 30") |"
  if [ "$RSS_KEYS" -gt 0 ]; then
    m=$(calc "$rss_after / 1024" 1); echo "| RSS < 60 MB with $total keys verified and cached | $m MB | $(ok "$m < 60") |"
  fi
  echo "| redis-server CPU per decision (script µs per request, 1 key / $ROTATE_KEYS keys; usec_per_call in the Redis table) | $(v EVALPERREQ red1) / $(v EVALPERREQ redN) µs | measured |"
  if [ -n "$PROFILE_TEXT" ]; then
    echo
    echo "## Profiles"
    echo "$PROFILE_TEXT"
  fi
} >"$WORK/report.md"
mkdir -p "$(dirname "$OUT")"
cp "$WORK/report.md" "$OUT"
cat "$WORK/report.md"
log "written to $OUT"
