#!/usr/bin/env bash
# bench/run.sh: tollgate's load benchmark, on loopback, bounded in time.
#
# Starts a static nginx upstream, nginx as a plain reverse proxy, tollgate on
# the memory store and tollgate on Redis; runs the same wrk load against each;
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
# redis-server's TLS port; 0 leaves it out), OUT (results file), KEEP (1:
# keep the work directory).
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
if ((${#missing[@]})); then
  log "installing ${missing[*]} from Debian packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

log "building tollgate and bench-tool (release)"
cargo build --release --quiet --bin tollgate --example bench-tool
TG=$ROOT/target/release/tollgate
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

# --- processes -------------------------------------------------------------
nginx_conf() { # dir port body-of-http-block
  mkdir -p "$1/tmp"
  cat >"$1/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $1/nginx.pid;
events { worker_connections 4096; }
http {
  client_body_temp_path $1/tmp/body;
  proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fastcgi;
  uwsgi_temp_path $1/tmp/uwsgi;
  scgi_temp_path $1/tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
$3
}
EOF
}

UP_PORT=$(free_port)
UP_URL=http://127.0.0.1:$UP_PORT
nginx_conf "$WORK/upstream" "$UP_PORT" "
  access_log off;
  server {
    listen 127.0.0.1:$UP_PORT;
    location / {
      default_type application/json;
      return 200 '{\"id\":\"CP-1\",\"status\":\"Available\",\"connectors\":2}\n';
    }
  }"
"${LOAD[@]}" "$NGINX" -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log" &
UP_PID=$!
PIDS+=("$UP_PID")
wait_for "upstream nginx" curl -fsS "$UP_URL/"

PX_PORT=$(free_port)
PX_URL=http://127.0.0.1:$PX_PORT
# A plain reverse proxy doing what tollgate does to headers (X-Forwarded-*),
# with an access log line per request as tollgate writes one.
nginx_conf "$WORK/proxy" "$PX_PORT" "
  access_log $WORK/proxy/access.log;
  upstream api { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$PX_PORT;
    location / {
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }"
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

tollgate_conf() { # file store-section [auth extra]
  cat >"$1" <<EOF
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[upstream]
url = "$UP_URL"
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
url = \"redis://127.0.0.1:$REDIS_PORT/0\""
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
run_wrk() {
  local label=$1 round=$2 url=$3 pid=$4 admin=$5 keys=$6 rotate=$7
  local k="$label#$round"
  local args=(-t"$WRK_THREADS" -c"$CONNS" --timeout 5s)
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
  SUTCPU[$k]=$(calc "($t1 - $t0) / $CLK_TCK / $n * 10000" 3)
  REDISCPU[$k]=$(calc "($r1 - $r0) / $CLK_TCK / $n * 10000" 3)
  RSSKB[$k]=$(status_kb "$pid" VmHWM)
  # Core 0 as a whole, and the share of it the load side used (wrk + upstream).
  local b0_0 t0_0 b0_1 t0_1 b1_0 t1_0 b1_1 t1_1 wu ws
  read -r b0_0 t0_0 b0_1 t0_1 <<<"$c0"
  read -r b1_0 t1_0 b1_1 t1_1 <<<"$c1"
  read -r wu ws <<<"$(awk 'END { print }' "$out.time")"
  CORES[$k]="$(calc "100 * ($b1_0 - $b0_0) / ($t1_0 - $t0_0)" 0) / $(calc "100 * ($b1_1 - $b0_1) / ($t1_1 - $t0_1)" 0)"
  LOADSIDE[$k]=$(calc "100 * (($u1 - $u0) / $CLK_TCK + $wu + $ws) / $secs" 0)
  if [ "$label" = direct ]; then LOADSIDE[$k]=$(calc "100 * ($wu + $ws) / $secs" 0); fi
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

ROWS=(direct nginx hap1 hapN mem1 memN red1 redN)
declare -A NAME=(
  [direct]="upstream (direct)"
  [nginx]="nginx-proxy"
  [hap1]="haproxy (map + stick table), 1 key"
  [hapN]="haproxy (map + stick table), $ROTATE_KEYS keys"
  [mem1]="tollgate-memory, 1 key"
  [memN]="tollgate-memory, $ROTATE_KEYS keys"
  [red1]="tollgate-redis, 1 key"
  [redN]="tollgate-redis, $ROTATE_KEYS keys"
)
declare -A URL=([direct]=$UP_URL [nginx]=$PX_URL [hap1]=$HA_URL [hapN]=$HA_URL [mem1]=$MEM_PUBLIC [memN]=$MEM_PUBLIC [red1]=$RED_PUBLIC [redN]=$RED_PUBLIC)
declare -A PID=([direct]=$UP_PID [nginx]=$PX_PID [hap1]=$HA_PID [hapN]=$HA_PID [mem1]=$MEM_PID [memN]=$MEM_PID [red1]=$RED_PID [redN]=$RED_PID)
declare -A ADMIN=([direct]=- [nginx]=- [hap1]=- [hapN]=- [mem1]=$MEM_ADMIN [memN]=$MEM_ADMIN [red1]=$RED_ADMIN [redN]=$RED_ADMIN)
declare -A KEYS=(
  [direct]=$WORK/keys-plain.txt [nginx]=$WORK/keys-plain.txt
  [hap1]=$WORK/keys-memory-1.txt [hapN]=$WORK/keys-memory-many.txt
  [mem1]=$WORK/keys-memory-1.txt [memN]=$WORK/keys-memory-many.txt
  [red1]=$WORK/keys-redis-1.txt [redN]=$WORK/keys-redis-many.txt
)
declare -A ROTATE=([direct]=0 [nginx]=0 [hap1]=0 [hapN]=1 [mem1]=0 [memN]=1 [red1]=0 [redN]=1)
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

# First sight of every key: its one bcrypt verification, before any measuring.
for r in memN redN $([ "$REDIS_TLS" = 1 ] && echo tlsN); do
  "$TOOL" touch --url "${URL[$r]}$PATH_UNDER_TEST" --keys "${KEYS[$r]}" --concurrency 8
done

# Rounds: every target once per round, so that a burst of outside load on the
# shared machine hits one round of each, not all rounds of one. Each row then
# reports its median round (by req/s).
for round in $(seq "$ROUNDS"); do
  for r in "${ROWS[@]}"; do
    run_wrk "$r" "$round" "${URL[$r]}" "${PID[$r]}" "${ADMIN[$r]}" "${KEYS[$r]}" "${ROTATE[$r]}"
  done
done
declare -A PICK ALLRPS
for r in "${ROWS[@]}"; do
  sorted=$(for round in $(seq "$ROUNDS"); do echo "${RPS[$r#$round]} $round"; done | sort -n)
  PICK[$r]="$r#$(awk -v m=$(((ROUNDS + 1) / 2)) 'NR == m { print $2 }' <<<"$sorted")"
  ALLRPS[$r]=$(for round in $(seq "$ROUNDS"); do printf '%s ' "${RPS[$r#$round]}"; done)
  total_bcrypt=0
  for round in $(seq "$ROUNDS"); do total_bcrypt=$((total_bcrypt + ${BCRYPT[$r#$round]})); done
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
  echo "Made by \`bench/run.sh\` at commit \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- src Cargo.toml || echo ' (with uncommitted changes)')."
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
  echo "\"proxy\" is the process under test: the upstream nginx for the direct row, the nginx proxy, or tollgate."
  echo "\"load side\" is wrk's CPU plus the upstream nginx's, over the run: near 100 % with pinning, the load core limits the row."
  echo "\"core busy\" counts every process on the core, ours and the machine's other work."
  echo
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
