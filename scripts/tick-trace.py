#!/usr/bin/env python3
"""Summarises a collector's tick trace, per collector run in the file.

    PF_BENCH_COLLECTOR_LOG=/tmp/ticks.log RUST_LOG=procflow::tick=trace,info \
        procflow-bench lifetime
    python3 scripts/tick-trace.py /tmp/ticks.log

For each run (from its "collector running" line): TCP dumps and the gaps between them
(p50/p90/p99 ms), their CPU, the owners' passes after dumps (time, tables read, the longest),
the reads at rises (tables, wall time from the rise), and how often a dump was held back by
its CPU share (--churn-cpu). The figures of BENCHMARKS.md's "what held the dumps back" came
from this.
"""
import datetime
import re
import sys


def at_us(line):
    m = re.match(r"(\S+)Z", line)
    if not m:
        return None
    return datetime.datetime.fromisoformat(m.group(1)).timestamp() * 1e6


def field(line, name):
    m = re.search(r"\b" + name + r"=(\d+)", line)
    return int(m.group(1)) if m else 0


def summarise(lines):
    dumps, dump_cpu, after, rise_reads, rise_wall = [], 0, [], 0, 0.0
    held, rise_at, rises = 0, None, 0
    for line in lines:
        t = at_us(line)
        if t is None:
            continue
        if "table dumped" in line and "table=Tcp" in line:
            dumps.append(t / 1000)
            dump_cpu += field(line, "cpu_us")
        elif "owners read after the dump" in line:
            after.append((field(line, "us"), field(line, "read")))
        elif "sockets opened" in line:
            rise_at = t
        elif "owners read at the rise" in line:
            rises += 1
            rise_reads += field(line, "read")
            if rise_at is not None:
                rise_wall += t - rise_at
                rise_at = None
        elif "dump held back" in line:
            held += 1
    if len(dumps) < 2:
        print("  fewer than two TCP dumps")
        return
    gaps = sorted(b - a for a, b in zip(dumps, dumps[1:]))
    pick = lambda q: gaps[min(len(gaps) - 1, int(q * len(gaps)))]
    print(f"  TCP dumps {len(dumps)} over {(dumps[-1] - dumps[0]) / 1000:.1f} s; "
          f"gap p50/p90/p99 {pick(0.5):.1f} / {pick(0.9):.1f} / {pick(0.99):.1f} ms; "
          f"their CPU {dump_cpu / 1000:.0f} ms; held back {held} times")
    longest = max(after, default=(0, 0))
    print(f"  owners' passes after dumps {len(after)}: {sum(a for a, _ in after) / 1000:.0f} ms, "
          f"{sum(r for _, r in after)} tables; longest {longest[0] / 1000:.1f} ms "
          f"({longest[1]} tables)")
    print(f"  reads at rises {rises}: {rise_reads} tables, {rise_wall / 1000:.0f} ms of wall")


def main():
    runs, current = [], None
    with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
        for line in f:
            if "collector running" in line:
                current = []
                runs.append(current)
            if current is not None:
                current.append(line)
    for i, lines in enumerate(runs, 1):
        print(f"run {i}")
        summarise(lines)


if __name__ == "__main__":
    main()
