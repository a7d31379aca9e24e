#!/usr/bin/env python3
"""Where Redis spends its time per admission (issue 15): admit.lua's fixed
cost (EVALSHA dispatch, KEYS/ARGV tables, reply) against its body, and the
batched call (src/store/admit_batch.lua wrapping admit.lua) at several batch
sizes. Not part of CI; quoted in bench/results/.

A fresh redis-server (persistence off) on a free port, CLIENTS clients with
one key each, every admission admitted (limits never reached), each with its
own session and an increasing sequence number as tollgate sends them. The
calls are sent with `redis-cli --pipe` (deep pipelining, so syscalls are
spread thin: this isolates the script's own CPU). Reported per admission:
`INFO commandstats` µs (EVALSHA's usec, inner commands included) and
redis-server's CPU (utime+stime from /proc) over the run.

    python3 bench/admit-cost.py            # CLIENTS=1000 CALLS=100000
    VARIANT_LUA=/tmp/x.lua python3 bench/admit-cost.py   # also a variant of admit.lua
    BILLING=0 python3 bench/admit-cost.py   # without ARGV[13..23] and KEYS[4]

By default each admission carries every argument tollgate sends (BILLING=1:
cost, the plans, the billing cycle, its period and day, the day's history
key); BILLING=0 sends the first 12 only (the script's non-billing path,
which tollgate never takes: it always sends the cycle).
"""
import os, subprocess, sys, tempfile, time

from redis_pipe import batch_call, billing_args, cli, cpu, free_port, resp, start, used, wrapped

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS = int(os.environ.get("CLIENTS", "1000"))
CALLS = int(os.environ.get("CALLS", "100000"))
BATCHES = [int(b) for b in os.environ.get("BATCHES", "1 4 16 32").split()]
# admit.lua runs after admit_lib.lua (src/store/redis/scripts.rs); a batch
# call runs the library once, before its admissions.
LIB = open(os.path.join(ROOT, "src/store/admit_lib.lua")).read()
ADMIT = open(os.path.join(ROOT, "src/store/admit.lua")).read()
DRIVER = open(os.environ.get("DRIVER_LUA", os.path.join(ROOT, "src/store/admit_batch.lua"))).read()
# Fixed cost only: the same KEYS/ARGV, no redis.call, a reply of admit.lua's shape.
STRIPPED = "return {0, 1, 2, 3, 4, 5, 6, -1, 1}"


def batch_script(admit):
    return wrapped(LIB, admit, DRIVER)


SEQ = [0]
BILLING = os.environ.get("BILLING", "1") == "1"
# ARGV[13..23] as tollgate sends them (src/store/redis/mod.rs, billing.rs).
DAY, CYCLE = billing_args(90)
BILLING_ARGV = ["1", "", "", ""] + CYCLE


def admission(i):
    """KEYS and ARGV of one admission of client i (with its session)."""
    cid = f"c{i}"
    SEQ[0] += 1
    sess = f"{7:016x}{i:016x}"
    keys = [f"tg:{{c:{cid}}}:client", f"tg:{{c:{cid}}}:key:k1", f"tg:{{c:{cid}}}:win"]
    argv = ["admit", cid, "k1", "1", "+read", "1000000000", "1000000000000", "", "1",
            f"s:{sess}", str(SEQ[0]), f"r:{sess}"]
    if BILLING:
        keys.append(f"tg:{{c:{cid}}}:h:{DAY}")
        argv += BILLING_ARGV
    return keys, argv


def run(port, pid, name, sha, per_call):
    cli(port, "CONFIG", "RESETSTAT")
    buf = bytearray()
    calls = CALLS // per_call
    i = 0
    for _ in range(calls):
        admissions = [admission((i + j) % CLIENTS) for j in range(per_call)]
        i += per_call
        if sha[1]:
            buf += batch_call(sha[0], admissions)
        else:
            (keys, argv), = admissions
            buf += resp("EVALSHA", sha[0], len(keys), *keys, *argv)
    path = tempfile.mktemp(suffix=".resp")
    open(path, "wb").write(buf)
    perf = None
    if os.environ.get("PERF_OUT") and name.endswith("alone"):
        perf = subprocess.Popen(["perf", "record", "-q", "-g", "-p", str(pid), "-o",
                                 os.environ["PERF_OUT"]], stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    before = cpu(pid)
    t = time.time()
    out = subprocess.run(f"redis-cli -p {port} --pipe < {path}", shell=True,
                         capture_output=True, text=True).stdout
    wall = time.time() - t
    used = cpu(pid) - before
    if perf:
        perf.send_signal(2)
        perf.wait()
    os.unlink(path)
    stats = cli(port, "INFO", "commandstats")
    line = next(l for l in stats.splitlines() if l.startswith("cmdstat_evalsha"))
    usec = float(line.split("usec=")[1].split(",")[0])
    if os.environ.get("ALLSTATS"):
        print(stats)
    errors = out.split("errors: ")[1].split(",")[0] if "errors: " in out else "?"
    n = calls * per_call
    print(f"| {name} | {per_call} | {n} | {usec / n:.2f} | {used * 1e6 / n:.2f} | "
          f"{n / wall:.0f} | {errors} |", flush=True)


def main():
    port = free_port()
    srv = start(port, tempfile.mkdtemp(), CLIENTS)
    try:
        print(f"redis {cli(port, 'INFO', 'server').split('redis_version:')[1].split()[0]}, "
              f"{CLIENTS} clients, {CALLS} admissions per row, load {open('/proc/loadavg').read().split()[:3]}")
        print("| script | admissions per call | admissions | commandstats µs per admission "
              "| redis CPU µs per admission | admissions/s | errors |")
        print("|---|---|---|---|---|---|---|")
        scripts = [("admit.lua", ADMIT)]
        if os.environ.get("VARIANT_LUA"):
            scripts.append((os.path.basename(os.environ["VARIANT_LUA"]),
                            open(os.environ["VARIANT_LUA"]).read()))
        for name, src in scripts:
            sha = cli(port, "SCRIPT", "LOAD", LIB + src)
            stripped = cli(port, "SCRIPT", "LOAD", STRIPPED)
            bsha = cli(port, "SCRIPT", "LOAD", batch_script(src))
            sbsha = cli(port, "SCRIPT", "LOAD", batch_script(STRIPPED))
            run(port, srv.pid, f"{name}, alone", (sha, False), 1)
            if name == "admit.lua":
                run(port, srv.pid, "stripped (fixed cost only)", (stripped, False), 1)
            for b in BATCHES:
                run(port, srv.pid, f"admit_batch.lua over {name}", (bsha, True), b)
            if name == "admit.lua":
                for b in [1, 16]:
                    run(port, srv.pid, "admit_batch.lua over stripped", (sbsha, True), b)
        print(f"client c0 used = {used(port, 'c0')}")
    finally:
        srv.terminate()
        srv.wait()


main()
