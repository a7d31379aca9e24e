"""A throwaway redis-server fed with `redis-cli --pipe`, for the scripts in
bench/ that measure admit.lua on Redis alone (admit-cost.py,
admit-compare.py): RESP encoding, a free port, the server started and
seeded with clients, its CPU, a client's `used`."""
import datetime, os, socket, struct, subprocess, time


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def billing_args(history_days):
    """ARGV[17..23] as tollgate sends them for a client on the UTC calendar
    month, now: the cycle (day 1, UTC), the month's and today's [start, end)
    in Unix ms, `history_days`; and today's date, the day key's suffix."""
    now = datetime.datetime.now(datetime.timezone.utc)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = (month + datetime.timedelta(days=32)).replace(day=1)
    ms = lambda d: str(int(d.timestamp() * 1000))
    return day.date().isoformat(), ["1", "UTC", ms(month), ms(next_month), ms(day),
                                    ms(day + datetime.timedelta(days=1)), str(history_days)]


def wrapped(lib, admit, driver):
    """A batch script as tollgate builds it (src/store/redis/batch.rs):
    `lib`, then `admit` as `admit_one(KEYS, ARGV)`, then `driver`."""
    return f"{lib}\nlocal function admit_one(KEYS, ARGV)\n{admit}\nend\n{driver}"


def batch_call(sha, admissions):
    """One EVALSHA of admit_batch.lua (src/store/admit_batch.lua's header)
    over `admissions`, a list of (KEYS, ARGV) of one shape: the count, the
    shape, the positions whose arguments differ between admissions, the
    first admission's ARGV, then each further admission's differing ones."""
    (k0, a0), rest = admissions[0], admissions[1:]
    vary = [j for j in range(len(a0)) if any(a[j] != a0[j] for _, a in rest)]
    keys = [k for ks, _ in admissions for k in ks]
    argv = [str(len(admissions)), str(len(k0)), str(len(a0)), str(len(vary))]
    argv += [str(j + 1) for j in vary] + a0
    for _, a in rest:
        argv += [a[j] for j in vary]
    return resp("EVALSHA", sha, len(keys), *keys, *argv)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], check=True,
                          capture_output=True, text=True).stdout.strip()


def cpu(pid):
    """redis-server's CPU seconds (user + system) so far."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def start(port, workdir, clients, wrapper=()):
    """redis-server on `port` (persistence off; `wrapper`, e.g. valgrind,
    in front), answering PING, with `clients` clients c0.. of one key k1
    each (scope read). Returns the process."""
    srv = subprocess.Popen([*wrapper, "redis-server", "--port", str(port), "--bind",
                            "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if cli(port, "PING") == "PONG":
                break
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.05)
    seed = bytearray()
    for i in range(clients):
        seed += resp("HSET", f"tg:{{c:c{i}}}:client", "status", "active", "created_at", "0")
        seed += resp("HSET", f"tg:{{c:c{i}}}:key:k1", "client_id", f"c{i}", "gen", "1",
                     "scopes", "read")
    subprocess.run(f"redis-cli -p {port} --pipe", shell=True, input=seed,
                   capture_output=True, check=True)
    return srv


def hget(port, key, field):
    """HGET over a socket: the value's bytes as stored (binary safe), or None."""
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(resp("HGET", key, field))
        buf = b""
        while b"\r\n" not in buf:
            buf += c.recv(65536)
        head, rest = buf.split(b"\r\n", 1)
        if head == b"$-1":
            return None
        n = int(head[1:])
        while len(rest) < n + 2:
            rest += c.recv(65536)
        return rest[:n]


def used(port, client):
    """The client's `used`: admit.lua's counters (`ctr`, its header: the
    sixth little-endian double), else the text field of older scripts."""
    key = f"tg:{{c:{client}}}:client"
    ctr = hget(port, key, "ctr")
    if ctr is not None and len(ctr) == 48:
        return int(struct.unpack("<6d", ctr)[5])
    text = hget(port, key, "used")
    return text and int(text)
