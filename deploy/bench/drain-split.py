#!/usr/bin/env python3
"""Where a station drain's time went, from soilmon's own log.

    drain-split.py [LOG]

LOG is a soilmon log written with `RUST_LOG=info,soilmon::telemetry=debug` (one
`batch committed` line per batch); without it, the newest peer-bench log
(`../shared/peer-bench/results/*-logs/soilmon.log`). Prints the drain time (first
timestamped line, the process's start, to the last committed batch: unlike the peer
bench's count poll, not rounded to its poll period) and, over the batches, the sum, median,
90th and 99th percentile of each phase the collector reports: `stage` (samples recorded,
readings judged), `copy` (readings copied), `wait` (for the batch before it to commit) and
`finish` (incidents, alert events, archive, COMMIT; batches finish one after the other, so
the sum of `finish` bounds the drain from below), and `oldest` (the age of the batch's
oldest message at its commit). When the log has publishing rounds of alert events (`alerts:
published`, as in the bench's alert-latency phase: `soilmon-bench --skip-limits
--skip-drain --skip-lab --keep-db --soilmon-env RUST_LOG=info,soilmon::telemetry=debug`
keeps its log), the same for a round's `select`, `publish` and `acked` steps.
"""
import datetime
import glob
import os
import re
import statistics
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def main() -> None:
    if len(sys.argv) > 1:
        log = sys.argv[1]
    else:
        here = os.path.dirname(os.path.abspath(__file__))
        logs = sorted(glob.glob(os.path.join(here, "../../../shared/peer-bench/results/*-logs")))
        if not logs:
            sys.exit("no log given and no peer-bench log found")
        log = os.path.join(logs[-1], "soilmon.log")
    first = last = None
    batches = []
    rounds = []
    for line in open(log, errors="replace"):
        line = ANSI.sub("", line)
        if not re.match(r"\d{4}-\d\d-\d\dT", line):
            continue
        at = datetime.datetime.fromisoformat(line[:26])
        first = first or at
        if "batch committed" in line:
            last = at
            batches.append({k: float(v) for k, v in re.findall(r"(\w+_ms|messages)=([\d.]+)", line)})
        elif "alerts: published" in line:
            rounds.append({k: float(v) for k, v in re.findall(r"(\w+_ms)=([\d.]+)", line)})
    if not batches:
        sys.exit(f"{log}: no 'batch committed' lines (RUST_LOG=info,soilmon::telemetry=debug)")
    print(f"drain_s={(last - first).total_seconds():.2f} batches={len(batches)} "
          f"messages={sum(b.get('messages', 0) for b in batches):.0f}")
    split(batches, ("stage_ms", "copy_ms", "wait_ms", "finish_ms", "oldest_ms"))
    if rounds:
        print(f"publishing rounds={len(rounds)}")
        split(rounds, ("select_ms", "publish_ms", "acked_ms"))


def split(items, phases) -> None:
    """Sum, median, p90 and p99 of each of `phases` over `items`."""
    for phase in phases:
        v = sorted(b.get(phase, 0.0) for b in items)
        print(f"  {phase:10s} sum {sum(v) / 1000:7.2f} s  median {statistics.median(v):6.2f} ms  "
              f"p90 {v[int(len(v) * 0.9)]:6.2f} ms  p99 {v[int(len(v) * 0.99)]:6.2f} ms")


if __name__ == "__main__":
    main()
