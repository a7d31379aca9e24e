#!/usr/bin/env python3
"""admit.lua's own cost per admission, body and inner commands, without the
call around it: one EVALSHA runs a version of the script N times in a loop
(as admit_batch.lua runs it), with the arguments tollgate sends (a session,
an increasing sequence number, the billing cycle's period and day, KEYS[4]
the day's history key), every admission admitted. The best of 5 runs, in µs
per admission, wall-clock of the EVALSHA: for A/Bs of admit.lua variants,
which repeat within ~2 % on a quiet machine where admit-cost.py's rows move
±10 %. Not part of CI; quoted in bench/results/.

    python3 bench/admit-loop.py src/store/admit.lua /tmp/variant.lua ...
    N=20000 TIME_ONCE=1 python3 bench/admit-loop.py ...   # TIME read once per
        call and handed in as ARGV[8], as admit_batch.lua does (the default);
        TIME_ONCE=0: each admission reads TIME itself (a lone admit.lua call)

A variant with an early `do return {0} end` at line L measures the script up
to L (how the profile in bench/results/2026-11-28-round5-experiments.md was
made). Each line printed ends with the client's `used` afterwards, which
grows by 5 N + 100 per file when every admission counted.
"""
import os, sys, tempfile, time

from redis_pipe import billing_args, cli, free_port, start, used, wrapped

N = int(os.environ.get("N", "20000"))
TIME_ONCE = os.environ.get("TIME_ONCE", "1") == "1"
# Run once before the loop, as a batch call runs it (admit.lua runs after
# admit_lib.lua); a one-file admit.lua from before the split defines again
# what it uses. LIB=/dev/null leaves it out.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = open(os.environ.get("LIB", os.path.join(ROOT, "src/store/admit_lib.lua"))).read()


def driver(body):
    """The loop around `body`: ARGV[1] admissions, sequence numbers from ARGV[2] + 1."""
    day, cycle = billing_args(90)
    args = ["admit", "c1", "k1", "1", "+read", "1000000000", "1000000000000", "", "1",
            "s:0000000000000007", "0", "r:0000000000000007", "1", "", "", ""] + cycle
    keys = ["tg:{c:c1}:client", "tg:{c:c1}:key:k1", "tg:{c:c1}:win", f"tg:{{c:c1}}:h:{day}"]
    lua = lambda xs: "{" + ", ".join(f"'{x}'" for x in xs) + "}"
    time_once = ("local t = redis.call('TIME')\n"
                 "argv[8] = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
                 if TIME_ONCE else "")
    return wrapped(LIB, body,
                   f"local keys, argv = {lua(keys)}, {lua(args)}\n{time_once}"
                   "local base = tonumber(ARGV[2])\n"
                   "for i = 1, tonumber(ARGV[1]) do\n"
                   "  argv[11] = tostring(base + i)\n"
                   "  admit_one(keys, argv)\n"
                   "end\n"
                   "return 1\n")


def main():
    port = free_port()
    srv = start(port, tempfile.mkdtemp(), 2)
    try:
        print(f"N={N}, TIME_ONCE={int(TIME_ONCE)}, load {open('/proc/loadavg').read().split()[:3]}")
        seq = 0
        for path in sys.argv[1:]:
            sha = cli(port, "SCRIPT", "LOAD", driver(open(path).read()))
            cli(port, "EVALSHA", sha, "0", "100", str(seq))  # warm-up
            seq += 100
            best = float("inf")
            for _ in range(5):
                t = time.perf_counter()
                cli(port, "EVALSHA", sha, "0", str(N), str(seq))
                best = min(best, time.perf_counter() - t)
                seq += N
            print(f"{path}: {best * 1e6 / N:.2f} µs per admission (used {used(port, 'c1')})",
                  flush=True)
    finally:
        srv.terminate()
        srv.wait()


main()
