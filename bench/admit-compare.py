#!/usr/bin/env python3
"""Two (or more) versions of admit.lua side by side on one redis-server:
Redis's own cost per admission, in alternating rounds. Not part of CI;
quoted in docs/billing.md ("Cost") and bench/results/.

    git show a8ae216:src/store/admit.lua > /tmp/before.lua
    python3 bench/admit-compare.py /tmp/before.lua src/store/admit.lua

A fresh redis-server (persistence off) on a free port; CLIENTS clients
(default 16) with one key each; per row, CALLS admissions (default 150000)
spread over the clients in turn, each with its own session and an
increasing sequence number, all admitted, sent with `redis-cli --pipe`
(deep pipelining: syscalls spread thin, so this isolates the script). Every
script gets the same KEYS and ARGV, billing arguments included (the UTC
month and today's history key: a script from before billing ignores them).
The clock is Redis TIME, so windows fill as a production client's would.
Each row prints `INFO commandstats` µs and redis-server CPU µs per
admission; ROUNDS (default 5) rounds alternate the scripts.

CALLGRIND=1 runs redis-server under valgrind's callgrind instead and prints
the instructions redis-server executed per admission (deterministic where
time is not: the figure to compare on a noisy machine; use CALLS=4000).

BATCH=16 sends the admissions 16 to a call, as tollgate's cross-key batch
does: each script is wrapped in src/store/admit_batch.lua (the batch
driver), or, given as DRIVER+ADMIT (`/tmp/driver.lua+src/store/admit.lua`),
in that driver; the figures stay per admission. Every script runs after
src/store/admit_lib.lua (LIB=path for another, LIB=/dev/null for none).
"""
import glob, os, subprocess, sys, tempfile, time

from redis_pipe import batch_call, billing_args, cli, cpu, free_port, resp, start, wrapped
from redis_pipe import used as used_of

CLIENTS = int(os.environ.get("CLIENTS", "16"))
CALLS = int(os.environ.get("CALLS", "150000"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
CALLGRIND = os.environ.get("CALLGRIND") == "1"
BATCH = int(os.environ.get("BATCH", "0"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Put before every script: admit.lua runs after admit_lib.lua. A script from
# before that split (one file) defines again what it uses, so it runs
# unchanged after it; LIB=/dev/null leaves the library out.
LIB = os.environ.get("LIB", os.path.join(ROOT, "src/store/admit_lib.lua"))


SEQ = [0]
DAY, BILLING = billing_args(400)


def admission(i):
    cid = f"c{i}"
    SEQ[0] += 1
    sess = f"{7:016x}{i:016x}"
    keys = [f"tg:{{c:{cid}}}:client", f"tg:{{c:{cid}}}:key:k1", f"tg:{{c:{cid}}}:win",
            f"tg:{{c:{cid}}}:h:{DAY}"]
    argv = ["admit", cid, "k1", "1", "", "1000000000", "1000000000000", "", "1",
            f"s:{sess}", str(SEQ[0]), f"r:{sess}", "", "", "", ""] + BILLING
    return keys, argv


def used_by_all(port):
    """The clients' monthly `used`, summed."""
    return sum(used_of(port, f"c{i}") or 0 for i in range(CLIENTS))


def row(port, pid, name, sha, outdir):
    cli(port, "CONFIG", "RESETSTAT")
    buf = bytearray()
    if BATCH:
        for first in range(0, CALLS, BATCH):
            buf += batch_call(sha, [admission(n % CLIENTS)
                                    for n in range(first, min(first + BATCH, CALLS))])
    else:
        for n in range(CALLS):
            keys, argv = admission(n % CLIENTS)
            buf += resp("EVALSHA", sha, len(keys), *keys, *argv)
    path = tempfile.mktemp(suffix=".resp")
    open(path, "wb").write(buf)
    counted = used_by_all(port)
    if CALLGRIND:
        subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True)
    before, t = cpu(pid), time.time()
    out = subprocess.run(f"redis-cli -p {port} --pipe < {path}", shell=True,
                         capture_output=True, text=True).stdout
    wall, used = time.time() - t, cpu(pid) - before
    os.unlink(path)
    extra = ""
    if CALLGRIND:
        for f in glob.glob(f"{outdir}/cg.out*"):
            os.unlink(f)
        subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True)
        total = 0
        for f in glob.glob(f"{outdir}/cg.out*"):
            for line in open(f):
                if line.startswith(("summary:", "totals:")):
                    total = max(total, int(line.split()[1]))
        extra = f" {total / CALLS:.0f} |"
    stats = cli(port, "INFO", "commandstats")
    line = next(l for l in stats.splitlines() if l.startswith("cmdstat_evalsha"))
    usec = float(line.split("usec=")[1].split(",")[0])
    errors = out.split("errors: ")[1].split(",")[0] if "errors: " in out else "?"
    # An admission that failed inside a batch call is a reply, not an error:
    # count the admissions that were not counted too.
    missed = CALLS - (used_by_all(port) - counted)
    errors = f"{errors} ({missed} not counted)"
    print(f"| {name} | {usec / CALLS:.2f} | {used * 1e6 / CALLS:.2f} | {CALLS / wall:.0f} | "
          f"{errors} |{extra}", flush=True)


def source(arg):
    """The script to load for `arg`: LIB then the file, or with BATCH, the
    batch script (LIB, the file as `admit_one`, the driver)."""
    lib = open(LIB).read()
    if not BATCH:
        return lib + open(arg).read()
    driver, _, admit = arg.rpartition("+")
    driver = driver or os.path.join(ROOT, "src/store/admit_batch.lua")
    return wrapped(lib, open(admit).read(), open(driver).read())


def main():
    scripts = sys.argv[1:]
    if not scripts:
        sys.exit(__doc__)
    port, d = free_port(), tempfile.mkdtemp()
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.out"] if CALLGRIND else []
    srv = start(port, d, CLIENTS, wrapper)
    try:
        shas = [(os.path.basename(s), cli(port, "SCRIPT", "LOAD", source(s))) for s in scripts]
        print(f"redis {cli(port, 'INFO', 'server').split('redis_version:')[1].split()[0]}, "
              f"{CLIENTS} clients, {CALLS} admissions per row, "
              f"load {open('/proc/loadavg').read().split()[:3]}")
        print("| script | commandstats µs per admission | redis CPU µs per admission "
              "| admissions/s | errors |" + (" instructions per admission |" if CALLGRIND else ""))
        print("|---|---|---|---|---|" + ("---|" if CALLGRIND else ""))
        for _ in range(ROUNDS):
            for name, sha in shas:
                row(port, srv.pid, name, sha, d)
    finally:
        srv.terminate()
        srv.wait()


main()
