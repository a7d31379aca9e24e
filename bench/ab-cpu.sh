#!/usr/bin/env bash
# CPU per request of two (or more) tollgate builds, alternated, for an A/B
# of one change (not the benchmark: that is bench/run.sh). Each run starts a
# static nginx upstream (51-byte JSON body) and tollgate, one tokio worker,
# every access line written to a file; with PIN=1 (the default) the load
# side is pinned to core 0 and tollgate (and its redis-server) to core 1, as
# bench/run.sh does. CPU is the process's utime + stime from /proc over the
# measured run (STORE=redis: redis-server's too, as redis_us_per_req).
#
# Usage: bench/ab-cpu.sh ROUNDS BIN_A BIN_B ...   (one line per run)
# A BIN given as the word `nginx` is the peer instead: nginx as the plain
# reverse proxy of bench/run.sh's nginx-proxy row (keep-alive pool, the
# X-Forwarded-* headers, an access line per request), on the same core and
# under the same load (the API key header is sent and ignored): the same
# sitting's ratio. The word `hyper` is `bench-tool hyper-proxy`, a bare
# pass-through on hyper 1.x and tokio (nothing but forwarding): the floor
# of any proxy built on them. The word `gate` is `bench-tool gate-floor`:
# that floor plus the least work tollgate's contract makes a request cost
# (key hash and lookup, a window count, the headers tollgate sets, two
# timers, an access line; bench/gate_floor.rs). Each line gives user_us
# and sys_us, the process's user and kernel CPU per request, besides their
# sum us_per_req.
# Knobs (environment):
#   STORE=memory|redis  the store (redis: a fresh redis-server per run)
#   KEYS=N              clients with one key each, rotated by wrk (1)
#   DURATION=S          measured seconds after a 2 s warm-up (8)
#   CONNS=N             wrk connections (32)
#   GRPC=1              unary gRPC calls instead: h2load -c32 -m4, GRPC_N
#                       calls (100000) after 20000, to bench-tool's h2c
#                       upstream with upstream.protocol = "http2"
#   CALLGRIND=1         run tollgate under valgrind's callgrind and report
#                       the instructions per request of its request thread
#                       (deterministic within ~1 %: for changes smaller than
#                       the wall-clock noise; use CONNS=8 DURATION=10)
#   PIN=0               no pinning
#   RATE=N              latency instead: bench-tool rate, open loop at N req/s
#                       for DURATION s over CONNS connections (as bench/run.sh's
#                       fixed-rate pass); prints its percentiles, no CPU
#   REDIS_CORE=N        pin redis-server to core N (default: tollgate's core)
#   PERF=1              also sample the proxy's user space (perf record -e
#                       cpu-clock:u, 10 kHz) over the measured run and print
#                       the share of each crate (libc split into malloc,
#                       memcpy, clock and the rest): where user time goes,
#                       with the CPU the CPU has (SHA-NI, no valgrind); the
#                       sampling itself adds a little CPU
#   SYSCALLS=1          also count the proxy's system calls over the measured
#                       run (strace -c -f, every thread) and print each one's
#                       calls per request (strace slows the proxy: its CPU
#                       figures are then meaningless, the counts are not)
#   KEEP=DIR            keep each run's profile there for a closer look:
#                       PERF=1: perf-<round>-<bin>.data (`perf report -i`);
#                       CALLGRIND=1: callgrind-<round>-<bin>.out
#                       (`callgrind_annotate --tree=caller`)
# Needs nginx, wrk, curl, redis-server (STORE=redis), h2load (GRPC=1),
# valgrind (CALLGRIND=1), perf (PERF=1), strace (SYSCALLS=1); builds bench-tool
# (its hyper-proxy and gate-floor).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=$1; shift
STORE=${STORE:-memory} KEYS=${KEYS:-1} DURATION=${DURATION:-8} CONNS=${CONNS:-32}
GRPC=${GRPC:-0} GRPC_N=${GRPC_N:-100000} CALLGRIND=${CALLGRIND:-0} PIN=${PIN:-1}
RATE=${RATE:-} PERF=${PERF:-0} SYSCALLS=${SYSCALLS:-0}
if [ -n "$RATE" ] && { [ "$GRPC" = 1 ] || [ "$CALLGRIND" = 1 ]; }; then
  echo "ab-cpu.sh: RATE measures latency over HTTP/1 only: not with GRPC=1 or CALLGRIND=1" >&2
  exit 2
fi
if { [ "$PERF" = 1 ] || [ "$SYSCALLS" = 1 ]; } && { [ -n "$RATE" ] || [ "$GRPC" = 1 ] || [ "$CALLGRIND" = 1 ]; }; then
  echo "ab-cpu.sh: PERF and SYSCALLS watch the HTTP/1 wrk run only: not with RATE, GRPC=1 or CALLGRIND=1" >&2
  exit 2
fi
# Whether a BIN argument is one of the peers' words rather than a build.
is_peer() { case $1 in nginx | hyper | gate) return 0 ;; *) return 1 ;; esac; }
# Moves FILE into $KEEP as NAME; fails (leaving FILE) when KEEP is unset.
keep() { # file name
  [ -n "${KEEP:-}" ] || return 1
  mkdir -p "$KEEP"
  mv "$1" "$KEEP/$2"
}
for bin in "$@"; do
  if is_peer "$bin" && { [ "$GRPC" = 1 ] || [ "$CALLGRIND" = 1 ]; }; then
    echo "ab-cpu.sh: the $bin peer is an HTTP/1 proxy: not with GRPC=1 or CALLGRIND=1" >&2
    exit 2
  fi
done
# (Built every time: the `hyper` peer must be this tree's.)
cargo build --release --quiet --example bench-tool
TOOL=$PWD/target/release/examples/bench-tool
export TOLLGATE_ADMIN_TOKEN=ab-cpu-token # tollgate's and bench-tool mint's
ROTATE=$PWD/bench/rotate.lua
LOAD=() SUT=()
[ "$PIN" = 1 ] && LOAD=(taskset -c 0) SUT=(taskset -c 1)
REDIS_SUT=("${SUT[@]}")
[ -n "${REDIS_CORE:-}" ] && REDIS_SUT=(taskset -c "$REDIS_CORE")
W=$(mktemp -d /tmp/tollgate-ab-cpu.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# utime and stime, in ticks.
cpu_split() { awk '{print $14, $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

# nginx_conf, static_upstream, nginx_proxy: run.sh's configurations.
# shellcheck source=bench/nginx.sh
. bench/nginx.sh
UP=$("$TOOL" free-port)
nginx_conf "$W/up" "$UP" "$(static_upstream "$UP")"
"${LOAD[@]}" nginx -p "$W/up" -c "$W/up/nginx.conf" -e "$W/up/error.log" &
PIDS+=($!)
UPSTREAM="url = \"http://127.0.0.1:$UP\""
if [ "$GRPC" = 1 ]; then
  GU=$("$TOOL" free-port)
  "${LOAD[@]}" "$TOOL" grpc-upstream --port "$GU" &
  PIDS+=($!)
  UPSTREAM="url = \"http://127.0.0.1:$GU\"
protocol = \"http2\""
  until curl -fsS --http2-prior-knowledge "http://127.0.0.1:$GU/calls" >/dev/null 2>&1; do sleep 0.1; done
  printf '\0\0\0\0\0' >"$W/empty.bin" # one empty gRPC message
fi
until curl -fsS "http://127.0.0.1:$UP/" >/dev/null 2>&1; do sleep 0.1; done

# One run of one binary: prints its line.
run() { # round bin
  local r=$1 bin=$2 store redis_pid=
  store='backend = "memory"'
  if [ "$STORE" = redis ] && ! is_peer "$bin"; then
    local rp
    rp=$("$TOOL" free-port)
    "${REDIS_SUT[@]}" redis-server --bind 127.0.0.1 --port "$rp" --save '' --appendonly no \
      --logfile "$W/redis.log" &
    redis_pid=$!
    PIDS+=("$redis_pid")
    until redis-cli -p "$rp" ping 2>/dev/null | grep -q PONG; do sleep 0.1; done
    store="backend = \"redis\"
url = \"redis://127.0.0.1:$rp/0\""
  fi
  cat >"$W/t.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[upstream]
$UPSTREAM
[store]
$store
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
[[routes]]
path = "/bench.Bench"
methods = ["POST"]
scope = "read:charge_points"
TOML
  local log=$W/access-$r-$(basename "$bin").log vg=() cg=$W/callgrind.out pid pub
  if [ "$bin" = nginx ]; then
    local px
    px=$("$TOOL" free-port)
    nginx_conf "$W/px" "$px" "$(nginx_proxy "$px" "$UP" "$log")"
    "${SUT[@]}" nginx -p "$W/px" -c "$W/px/nginx.conf" -e "$W/px/error.log" &
    pid=$!
    PIDS+=("$pid")
    pub=http://127.0.0.1:$px
    until curl -fsS "$pub/" >/dev/null 2>&1; do sleep 0.1; done
    seq "$KEYS" | sed 's/^/tg_unused_/' >"$W/keys.txt"
  elif [ "$bin" = hyper ] || [ "$bin" = gate ]; then
    local hp cmd=hyper-proxy
    [ "$bin" = gate ] && cmd=gate-floor
    hp=$("$TOOL" free-port)
    "${SUT[@]}" "$TOOL" "$cmd" --port "$hp" --upstream "127.0.0.1:$UP" 2>"$log" &
    pid=$!
    PIDS+=("$pid")
    pub=http://127.0.0.1:$hp
    until curl -fsS -H "X-API-Key: tg_ready" "$pub/" >/dev/null 2>&1; do sleep 0.1; done
    seq "$KEYS" | sed 's/^/tg_unused_/' >"$W/keys.txt"
  else
    [ "$CALLGRIND" = 1 ] && vg=(valgrind --tool=callgrind "--callgrind-out-file=$cg")
    TOKIO_WORKER_THREADS=1 "${SUT[@]}" "${vg[@]}" "$bin" serve \
      --config "$W/t.toml" 2>"$log" &
    pid=$!
    PIDS+=("$pid")
    until grep -q 'listening public=' "$log"; do sleep 0.1; done
    local adm
    pub=http://$(grep -o 'public=[0-9.:]*' "$log" | head -1 | cut -d= -f2)
    adm=http://$(grep -o 'admin=[0-9.:]*' "$log" | head -1 | cut -d= -f2)
    "$TOOL" mint --admin "$adm" --prefix ab --clients "$KEYS" --out "$W/keys.txt" >/dev/null
  fi
  local c0 c1 rc0= rc1= u0= s0= u1= s1= n out what
  if [ "$GRPC" = 1 ]; then
    local args=(-t1 -c"$CONNS" -m4 -d "$W/empty.bin" -H "content-type: application/grpc"
      -H "te: trailers" -H "x-api-key: $(head -1 "$W/keys.txt")")
    "${LOAD[@]}" h2load "${args[@]}" -n 20000 "$pub/bench.Bench/Unary" >/dev/null
    [ "$CALLGRIND" = 1 ] && callgrind_control -z "$pid" >/dev/null
    c0=$(cpu "$pid")
    out=$("${LOAD[@]}" h2load "${args[@]}" -n "$GRPC_N" "$pub/bench.Bench/Unary")
    c1=$(cpu "$pid")
    n=$(awk '/^status codes:/ {print $3}' <<<"$out")
    what="calls_2xx=$n $(grep -o '[0-9.]* req/s' <<<"$out" | tr -d ' ')"
  elif [ -n "$RATE" ]; then
    "$TOOL" touch --url "$pub/api/v1/charge_points" --keys "$W/keys.txt" >/dev/null
    out=$("${LOAD[@]}" "$TOOL" rate --url "$pub/api/v1/charge_points" --rate "$RATE" \
      --duration "$DURATION" --connections "$CONNS" --keys "$W/keys.txt")
  else
    "${LOAD[@]}" wrk -t1 -c"$CONNS" -d2s -s "$ROTATE" "$pub/api/v1/charge_points" -- "$W/keys.txt" >/dev/null
    [ "$CALLGRIND" = 1 ] && callgrind_control -z "$pid" >/dev/null
    read -r u0 s0 < <(cpu_split "$pid")
    c0=$((u0 + s0))
    [ -n "$redis_pid" ] && rc0=$(cpu "$redis_pid")
    local sampler=
    if [ "$PERF" = 1 ]; then
      "${LOAD[@]}" perf record -q -F 10000 -e cpu-clock:u -p "$pid" -o "$W/perf.data" \
        -- sleep "$DURATION" 2>/dev/null &
      sampler=$!
    fi
    local tracer=
    if [ "$SYSCALLS" = 1 ]; then
      strace -c -f -q -o "$W/strace.txt" -p "$pid" &
      tracer=$!
      # Attached once the proxy has a tracer (then strace takes its threads).
      until grep -Eq '^TracerPid:[[:space:]]*[1-9]' "/proc/$pid/status"; do sleep 0.05; done
    fi
    out=$("${LOAD[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$ROTATE" "$pub/api/v1/charge_points" -- "$W/keys.txt")
    read -r u1 s1 < <(cpu_split "$pid")
    c1=$((u1 + s1))
    [ -n "$tracer" ] && { kill -INT "$tracer"; wait "$tracer" || true; }
    [ -n "$redis_pid" ] && rc1=$(cpu "$redis_pid")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    what="requests=$n non2xx=$(awk '/Non-2xx/ {n = $NF} END {print n + 0}' <<<"$out") req_per_s=$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  fi
  local extra=
  if [ -n "$RATE" ]; then
    what="rate=$RATE $out"
  else
    extra="us_per_req=$(python3 -c "print(f'{($c1-$c0)/$TCK/$n*1e6:.2f}')")"
    [ -n "$u1" ] && extra="$extra user_us=$(python3 -c "print(f'{($u1-$u0)/$TCK/$n*1e6:.2f}')") sys_us=$(python3 -c "print(f'{($s1-$s0)/$TCK/$n*1e6:.2f}')")"
    [ -n "$redis_pid" ] && [ -n "$rc1" ] &&
      extra="$extra redis_us_per_req=$(python3 -c "print(f'{($rc1-$rc0)/$TCK/$n*1e6:.2f}')")"
  fi
  if [ "$CALLGRIND" = 1 ]; then
    callgrind_control -d "$pid" >/dev/null
    # The request thread is the runtime's (main) thread: bcrypt and the log
    # writer run on threads of their own and are left out.
    local ir
    ir=$(callgrind_annotate --inclusive=yes --threshold=100 "$cg".1 2>/dev/null |
      awk '/tollgate::server::serve_blocking/ && !ir { gsub(",", "", $1); ir = $1 } END { printf "%.0f\n", ir + 0 }')
    extra="instructions_per_req=$((ir / n)) (under valgrind: CPU figures meaningless)"
    keep "$cg".1 "callgrind-$r-$(basename "$bin").out" || true
    rm -f "$cg"*
  fi
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  [ -n "$redis_pid" ] && { kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true; }
  echo "round=$r bin=$(basename "$bin") store=$STORE keys=$KEYS $what $extra load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
  if [ -n "${tracer:-}" ]; then
    echo "  system calls per request: $(awk -v n="$n" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
      printf "%s%s %.2f", sep, $NF, $4 / n; sep = ", " }' "$W/strace.txt")"
  fi
  if [ -n "${sampler:-}" ]; then
    wait "$sampler" || true
    echo "  user space by crate: $(perf report -i "$W/perf.data" --no-children --sort dso,sym \
      --stdio -g none 2>/dev/null | python3 "$PWD/bench/by-crate.py")"
    keep "$W/perf.data" "perf-$r-$(basename "$bin").data" || rm -f "$W/perf.data"
  fi
}

for r in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do
    if is_peer "$bin"; then
      run "$r" "$bin"
    else
      run "$r" "$(realpath "$bin")"
    fi
  done
done
