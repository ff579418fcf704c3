#!/usr/bin/env python3
"""Where a machine's CPU goes while a command runs, split by phase and by process group.

Runs COMMAND (for example the peer benchmark) and samples /proc every --interval seconds.
Each interval is given to the phase whose consumer process is alive in it (soilmon, the
Python peer, the COPY limit's psql, ...: see PHASES), and its CPU time is split into groups:
the consumer itself, PostgreSQL (live backends plus what the postmaster reaped), Mosquitto,
and everything else. Prints one line per phase and writes the figures as JSON with --json.

The question it answers: on this 2-core machine, how many of the 2 × wall-clock seconds did
the database, the broker and the consumer each spend while a consumer drained the backlog, and
how many were idle. A consumer bound by CPU leaves nothing idle; then its own CPU and the
database work it causes are what a faster drain has to cut.

    deploy/bench/cpu-split.py [--interval S] [--json FILE] -- COMMAND [ARGS...]
"""
import argparse
import json
import os
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")

# A phase is named after its consumer; the first rule whose test matches a live process wins.
# soilmon is the release build the peer benchmark runs (test binaries of other work are not).
PHASES = [
    ("soilmon", lambda comm, cmd: comm == "soilmon" and "target/release/soilmon" in cmd),
    ("peer_python", lambda comm, cmd: "peer_python.py" in cmd and "harness" not in cmd),
    ("limit_copy", lambda comm, cmd: comm == "psql" and "copy" in cmd.lower()),
    ("peer_nodered", lambda comm, cmd: comm in ("node", "node-red") and "node-red" in cmd),
]


def processes():
    """{(pid, start): (comm, cmdline, own cpu s, reaped children's cpu s, parent pid)} of every process
    (own: the process's threads, user + system)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        own = (int(fields[11]) + int(fields[12])) / TICK
        reaped = (int(fields[13]) + int(fields[14])) / TICK
        # Keyed by pid and start time: a pid can be reused, and a kernel worker's name changes.
        out[(int(d), int(fields[19]))] = (comm, cmd, own, reaped, int(fields[1]))
    return out


def busy_idle():
    """(busy, idle) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / TICK, idle / TICK


def group(comm, cmd, phase):
    if comm in ("postgres", "postmaster"):
        return "postgres"
    if comm == "mosquitto":
        return "mosquitto"
    if phase and any(name == phase and test(comm, cmd) for name, test in PHASES):
        return "consumer"
    return "other"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interval", type=float, default=0.5, help="sampling period, s (0.5)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    a = ap.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("give the command to run after --")
    child = subprocess.Popen(cmd)
    phases = {}
    prev, prev_m = processes(), busy_idle()
    deadline = time.monotonic() + 4 * 3600  # bounded, whatever the command does
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(a.interval)
        now, now_m = processes(), busy_idle()
        phase = next((n for n, t in PHASES if any(t(c, m) for c, m, *_ in now.values())), None)
        if phase is not None:
            p = phases.setdefault(
                phase, {"wall_s": 0.0, "busy_s": 0.0, "idle_s": 0.0, "groups": {}}
            )
            p["wall_s"] += a.interval
            p["busy_s"] += now_m[0] - prev_m[0]
            p["idle_s"] += now_m[1] - prev_m[1]
            add = lambda g, s: p["groups"].__setitem__(g, p["groups"].get(g, 0.0) + s)
            for key, (comm, line, own, reaped, _) in now.items():
                before = prev.get(key)
                if before is None:
                    before = (comm, line, 0.0, 0.0, 0)
                g = group(comm, line, phase)
                add(g, own - before[2])
                # Backends that exited are reaped by the postmaster: its children's time
                # counts, less what was counted while they were alive (below). Other
                # processes' reaped children are left out: their parents may not be the
                # ones who reap them, and they would be counted twice.
                if g == "postgres":
                    add(g, reaped - before[3])
            alive = {pid for pid, _ in now}
            for key, (comm, line, own, reaped, ppid) in prev.items():
                if key not in now and ppid in alive and group(comm, line, phase) == "postgres":
                    add("postgres", -(own + reaped))
        prev, prev_m = now, now_m
    if child.poll() is None:
        child.kill()
    rc = child.wait()
    print(f"{'phase':<14}{'wall s':>8}{'busy s':>8}{'idle s':>8}"
          f"{'consumer':>10}{'postgres':>10}{'mosquitto':>10}{'other':>8}")
    for name, p in phases.items():
        g = p["groups"]
        print(f"{name:<14}{p['wall_s']:>8.1f}{p['busy_s']:>8.1f}{p['idle_s']:>8.1f}"
              + "".join(f"{g.get(k, 0.0):>{w}.1f}" for k, w in
                        (("consumer", 10), ("postgres", 10), ("mosquitto", 10), ("other", 8))))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"interval_s": a.interval, "cpus": os.cpu_count(), "command": cmd,
                       "phases": phases}, f, indent=1)
    sys.exit(rc)


if __name__ == "__main__":
    main()
