"""Sums `perf report --no-children --sort dso,sym --stdio -g none` (on stdin)
by crate: the first path segment of a Rust symbol (a C symbol counts for its
binary: nginx as a whole; mimalloc's as mimalloc); libc and the vDSO split
into malloc (allocation and free), memcpy (memmove/memcpy/memset), clock
(clock_gettime) and the rest. Prints one line: the shares, largest first,
down to 0.5 %. Used by bench/ab-cpu.sh PERF=1."""

import collections
import re
import sys

LINE = re.compile(r"\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)")


def part(dso: str, sym: str) -> str:
    if dso.startswith(("libc", "[vdso")):
        if any(w in sym for w in ("malloc", "free", "unlink_chunk", "memalign", "realloc")):
            return "libc:malloc"
        if any(w in sym for w in ("memmove", "memcpy", "memset")):
            return "libc:memcpy"
        if "clock_gettime" in sym:
            return "libc:clock"
        return "libc:other"
    if dso.startswith("[kernel"):
        return "kernel"
    if sym.startswith(("mi_", "_mi_")):
        # The binary's allocator (src/main.rs), linked in.
        return "mimalloc"
    if "::" not in sym:
        # C (nginx, HAProxy) or an unnamed address: the binary's own.
        return dso
    # `<hyper::proto::...>`, `hyper::proto::...`, `<&T as core::fmt::Debug>`.
    name = sym.lstrip("<&").split("::")[0].split(" ")[0]
    return name or "?"


def main() -> None:
    shares = collections.Counter()
    for line in sys.stdin:
        m = LINE.match(line)
        if m:
            shares[part(m.group(2), m.group(3))] += float(m.group(1))
    print(", ".join(f"{k} {v:.1f} %" for k, v in shares.most_common() if v >= 0.5))


if __name__ == "__main__":
    main()
