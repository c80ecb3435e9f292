#!/usr/bin/env python3
"""`procflow collector --once` at 100k sockets as a user times it, A/B (issue 19, BENCHMARKS.md
"`--once` at 100k: walks shared by fd, sweep and dump beside them").

    nice -n -10 unshare -n python3 scripts/once-ab.py PROCFLOW_BENCH ROUNDS NAME=PROCFLOW...

In the fresh network namespace `unshare -n` gives it (as root): loopback up, then 50,000
loopback connections (100,000 sockets) held as `procflow-bench poll` holds them (`procflow-bench
worker-hold`: 5 x 9,000 + 5,000 connections, under the 20,000-fd limit per process). Then ROUNDS
rounds, each running every command once, in an order rotated per round so a machine's load
hits each alike: `NAME collector --once --output stdout > /dev/null` for each binary given,
and `ss -tinp > /dev/null`; with NOPROCS=1 also `--no-processes` and `ss -tin`. Prints each
round's wall times and load, then per command the best and median wall time, the ratios to
`ss -tinp` in the same rounds, and the median CPU (user + system) the command took. The
holders end when it does."""
import os
import resource
import statistics
import subprocess
import sys
import time

bench, rounds = sys.argv[1], int(sys.argv[2])
bins = [a.split("=", 1) for a in sys.argv[3:]]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
workers = []
remaining, i = 50_000, 0
try:
    while remaining > 0:
        n = min(remaining, 9_000)
        w = subprocess.Popen([bench, "worker-hold", str(n), f"127.0.1.{i + 1}"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        workers.append(w)
        line = w.stdout.readline().decode()
        assert line.startswith("ready"), line
        remaining -= n
        i += 1
    once = "'{}' collector --once --output stdout{} > /dev/null"
    cmds = [(name, once.format(b, "")) for name, b in bins]
    if os.environ.get("NOPROCS"):
        cmds += [(name + "-np", once.format(b, " --no-processes")) for name, b in bins]
        cmds.append(("ss-tin", "ss -tin > /dev/null"))
    cmds.append(("ss-tinp", "ss -tinp > /dev/null"))
    times = {n: [] for n, _ in cmds}
    cpu = {n: [] for n, _ in cmds}
    loads = []
    for r in range(rounds):
        for name, c in cmds[r % len(cmds):] + cmds[:r % len(cmds)]:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run(["sh", "-c", c], check=True, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        loads.append(float(open("/proc/loadavg").read().split()[0]))
        print(f"round {r} load {loads[-1]:.2f} "
              + " ".join(f"{n}={times[n][-1] * 1e3:.1f}" for n, _ in cmds), flush=True)
    ssp = times["ss-tinp"]
    print(time.strftime("%H:%M:%S UTC", time.gmtime()), f"load {min(loads):.2f}-{max(loads):.2f}")
    for n, _ in cmds:
        t = times[n]
        line = f"{n:12s} min {min(t) * 1e3:8.1f} med {statistics.median(t) * 1e3:8.1f} ms"
        if not n.startswith("ss") and not n.endswith("-np"):
            line += (f"  ratio min/min {min(t) / min(ssp):.3f}"
                     f" med/med {statistics.median(t) / statistics.median(ssp):.3f}")
        print(line + f"  cpu med {statistics.median(cpu[n]) * 1e3:7.1f} ms")
finally:
    for w in workers:
        w.stdin.close()
        w.wait()
