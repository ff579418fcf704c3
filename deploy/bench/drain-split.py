#!/usr/bin/env python3
"""Where a station drain's time went, from soilmon's own log.

    drain-split.py [LOG]

LOG is a soilmon log written with `RUST_LOG=info,soilmon::telemetry=debug` (one
`batch committed` line per batch); without it, the newest peer-bench log
(`../shared/peer-bench/results/*-logs/soilmon.log`). Prints the drain time (first
timestamped line, the process's start, to the last committed batch: unlike the peer
bench's count poll, not rounded to its poll period) and, over the batches, the sum, median
and 90th percentile of each phase the collector reports: `stage` (samples recorded,
readings judged), `copy` (readings copied), `wait` (for the batch before it to commit) and
`finish` (incidents, alert events, archive, COMMIT; batches finish one after the other, so
the sum of `finish` bounds the drain from below).
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
    for line in open(log, errors="replace"):
        line = ANSI.sub("", line)
        if not re.match(r"\d{4}-\d\d-\d\dT", line):
            continue
        at = datetime.datetime.fromisoformat(line[:26])
        first = first or at
        if "batch committed" in line:
            last = at
            batches.append({k: float(v) for k, v in re.findall(r"(\w+_ms|messages)=([\d.]+)", line)})
    if not batches:
        sys.exit(f"{log}: no 'batch committed' lines (RUST_LOG=info,soilmon::telemetry=debug)")
    print(f"drain_s={(last - first).total_seconds():.2f} batches={len(batches)} "
          f"messages={sum(b.get('messages', 0) for b in batches):.0f}")
    for phase in ("stage_ms", "copy_ms", "wait_ms", "finish_ms"):
        v = sorted(b.get(phase, 0.0) for b in batches)
        print(f"  {phase:10s} sum {sum(v) / 1000:7.2f} s  median {statistics.median(v):6.2f} ms  "
              f"p90 {v[int(len(v) * 0.9)]:6.2f} ms")


if __name__ == "__main__":
    main()
