#!/usr/bin/env python3
"""Summarises a latency timeline written by `soilmon-bench --latency-timeline FILE`
(CSV `sent_s,latency_ms`, one alert a line): the alerts per second of the phase with their
p50, p99 and max, and where the slowest 1 % fell.

Usage: deploy/bench/latency-timeline.py FILE [FILE ...]
"""
import csv
import sys


def pct(sorted_values, q):
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def summarise(path):
    with open(path, newline="") as f:
        rows = [(float(r["sent_s"]), float(r["latency_ms"])) for r in csv.DictReader(f)]
    if not rows:
        print(f"{path}: no alerts")
        return
    all_ms = sorted(ms for _, ms in rows)
    p99 = pct(all_ms, 0.99)
    print(f"{path}: {len(rows)} alerts, p50 {pct(all_ms, 0.5):.1f} ms, p99 {p99:.1f} ms, "
          f"max {all_ms[-1]:.1f} ms")
    by_second = {}
    for sent_s, ms in rows:
        by_second.setdefault(int(sent_s), []).append(ms)
    print("second  alerts  p50_ms  p99_ms  max_ms  over_p99")
    for s in sorted(by_second):
        v = sorted(by_second[s])
        over = sum(1 for ms in v if ms > p99)
        print(f"{s:6d}  {len(v):6d}  {pct(v, 0.5):6.1f}  {pct(v, 0.99):6.1f}  {v[-1]:6.1f}  {over:8d}")


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) > 1 else 2)
    for path in sys.argv[1:]:
        summarise(path)


if __name__ == "__main__":
    main()
