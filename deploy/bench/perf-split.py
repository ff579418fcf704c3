#!/usr/bin/env python3
"""Splits the samples of a `perf script -F comm,ip,sym` dump (recorded with
`--call-graph dwarf`, so that inlined frames are named) around one frame.

  perf script -i perf.data -F comm,ip,sym > perf.script
  deploy/bench/perf-split.py perf.script below FRAME [DEPTH]
      the share of all samples with FRAME on their stack, and which frames (DEPTH of them,
      default 1; inlined frames outside soilmon skipped) come right below it
  deploy/bench/perf-split.py perf.script callers FRAME REGEX
      for the samples with FRAME on their stack, the nearest frame above it that matches
      REGEX, with its share of all samples (which code made the system calls, say)

FRAME is matched as a substring of the symbol; shares are of all samples in the dump.
"""
import collections
import re
import sys


def stacks(path):
    """Each sample's frames, outermost first."""
    out, cur = [], []
    for line in open(path):
        line = line.rstrip("\n")
        if not line.strip():
            if cur:
                out.append(cur[::-1])
                cur = []
            continue
        if line[0] not in " \t":
            continue  # the sample's header line (comm)
        parts = line.strip().split(" ", 1)
        cur.append(re.sub(r"\+0x[0-9a-f]+$", "", parts[1] if len(parts) > 1 else "?"))
    if cur:
        out.append(cur[::-1])
    return out


def main(argv):
    if len(argv) < 4 or argv[2] not in ("below", "callers") or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) > 1 and argv[1] in ("-h", "--help") else 2
    path, mode, frame = argv[1], argv[2], argv[3]
    all_stacks = stacks(path)
    total, under, counts = len(all_stacks), 0, collections.Counter()
    for s in all_stacks:
        hits = [i for i, f in enumerate(s) if frame in f]
        if not hits:
            continue
        under += 1
        if mode == "below":
            depth = int(argv[4]) if len(argv) > 4 else 1
            rest = [f for f in s[hits[-1] + 1:] if "(inlined)" not in f or "soilmon" in f]
            counts[" > ".join(f[:90] for f in rest[:depth]) or "(self)"] += 1
        else:
            pattern = re.compile(argv[4])
            above = [f for f in s[: hits[0]] if pattern.search(f)]
            counts[above[-1][:120] if above else "?"] += 1
    print(f"total {total} samples, {under} under {frame} ({100 * under / max(total, 1):.1f}%)")
    for key, n in counts.most_common(40):
        print(f"{100 * n / total:6.2f}% {key}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except BrokenPipeError:
        sys.exit(0)
