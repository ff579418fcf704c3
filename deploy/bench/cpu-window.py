#!/usr/bin/env python3
"""CPU seconds used per command name over a window, from /proc/<pid>/stat.

Usage: deploy/bench/cpu-window.py SECONDS

Reads utime + stime of every process at the start and the end of the window and prints the
eight command names that used the most, with the share of one core. Processes that exit
during the window are not counted. Used to see how busy each part of the machine is during
a bench phase, e.g. start `soilmon bench --skip-limits --skip-latency --skip-lab`, wait for
"bench: soilmon drain", then run this for a window shorter than the drain.
"""
import os
import sys
import time


def snapshot():
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[pid] = (comm, int(fields[11]) + int(fields[12]))
    return out


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) == 2 else 2)
    window = float(sys.argv[1])
    tick = os.sysconf("SC_CLK_TCK")
    before, started = snapshot(), time.time()
    time.sleep(window)
    after, took = snapshot(), time.time() - started
    used = {}
    for pid, (comm, ticks) in after.items():
        old = before.get(pid)
        start = old[1] if old and old[0] == comm else 0
        used[comm] = used.get(comm, 0) + (ticks - start) / tick
    for comm, secs in sorted(used.items(), key=lambda kv: -kv[1])[:8]:
        print(f"{comm:24s} {secs:7.2f} s  ({secs / took:.2f} cores)")
    print(f"window {took:.1f} s")


if __name__ == "__main__":
    main()
