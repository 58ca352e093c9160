#!/usr/bin/env python3
"""Issue 10's figures, reproducible: the release server with its default
configuration (four built-in plugins, the write-ahead log on), driven by the
release loadgen on the same machine, a fresh server and data directory for
every case and round. Prints min / median / max over the rounds.

    cargo build --release -p bilten-analytics
    python3 scripts/loadbench.py --rounds 3            # every case
    python3 scripts/loadbench.py --only single --rounds 1
    python3 scripts/loadbench.py --host-steps --rounds 5   # issue 23's budget

Machines here are noisy: CPU time is the server's own (from its /metrics),
per event stored, and latencies are open-loop (counted from when each
request was due), so a slow server shows as latency, not as a slower load.
"""

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import release_server
from release_server import BINARY
TOKEN = "loadbench"

# name: (what it is, loadgen arguments)
CASES = {
    "bulk": ("1000-event requests, 300 000 events, 4 in flight",
             ["--total", "300000", "--batch", "1000", "--concurrency", "4"]),
    "single": ("single-event requests, 5 000/s open-loop for 20 s",
               ["--rate", "5000", "--duration", "20s", "--batch", "1", "--concurrency", "1024"]),
    "small": ("requests of up to 10 events, 5 000 events/s open-loop for 20 s",
              ["--rate", "5000", "--duration", "20s", "--batch", "10", "--concurrency", "512"]),
    "overload": ("single-event requests, 20 000/s open-loop for 20 s (past what 2 cores take)",
                 ["--rate", "20000", "--duration", "20s", "--batch", "1", "--concurrency", "4096"]),
}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


# Data directories are removed when the whole run ends, not after each case:
# on ext4, creating files soon after deleting many scans the recently freed
# inodes, and the next case's engine paid about a tenth of its CPU for it.
DATA_DIRS = []
atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in DATA_DIRS])


# The host steps (countries, visits, sources, attribution) switched off.
HOST_STEPS_OFF = {"BILTEN_GEO__ENABLED": "false", "BILTEN_VISITS__ENABLED": "false"}


def run_case(args, extra_env=None, binary=None):
    data = tempfile.mkdtemp(prefix="loadbench-")
    DATA_DIRS.append(data)
    with release_server.running(data, TOKEN, extra_env, binary) as (server, base):
        run = subprocess.run([BINARY, "loadgen", "--target", base, "--admin-token", TOKEN,
                              "--quiet", "--seed", "1", *args], capture_output=True, text=True)
        # It exits 1 when requests failed (503s when overloaded): the summary says how many.
        if run.returncode not in (0, 1) or not run.stdout.strip():
            sys.exit(f"loadgen failed ({run.returncode}): {run.stderr[-2000:]}")
        summary = json.loads(run.stdout)
        summary["server_peak_rss_mib"] = rss_kib(server.pid) / 1024
        return summary


def spread(values, fmt="{:.1f}"):
    values = sorted(values)
    return " / ".join(fmt.format(v) for v in (values[0], statistics.median(values), values[-1]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", choices=sorted(CASES), action="append")
    p.add_argument("--host-steps", action="store_true",
                   help="bulk with addresses, host steps on and off taking turns: their CPU per event")
    p.add_argument("--before", metavar="BINARY",
                   help="with --host-steps: also this older build's server, in the same turns")
    a = p.parse_args()
    release_server.require_binary()
    if a.host_steps:
        return host_steps(a.rounds, a.before)
    print(f"| case | server CPU µs per stored event | events/s acknowledged | ack p50 ms | ack p99 ms "
          f"| failed requests | acknowledged, not stored | server peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for name in a.only or list(CASES):
        label, args = CASES[name]
        runs = []
        for r in range(a.rounds):
            s = run_case(args)
            print(f"  {name} round {r + 1}: {json.dumps(s)}", file=sys.stderr)
            runs.append(s)
        # Acknowledged: accepted by the server over the sending time.
        acked = [s["accepted"] / s["seconds"] for s in runs]
        print(f"| {label} | {spread([s.get('server_cpu_us_per_event') or 0 for s in runs])} "
              f"| {spread(acked, '{:.0f}')} "
              f"| {spread([s['latency_ms_p50'] for s in runs])} "
              f"| {spread([s['latency_ms_p99'] for s in runs])} "
              f"| {spread([s['failed_requests'] for s in runs], '{:.0f}')} "
              f"| {spread([s['accepted'] - s.get('server_events_stored', 0) for s in runs], '{:.0f}')} "
              f"| {spread([s['server_peak_rss_mib'] for s in runs], '{:.0f}')} |")


def host_steps(rounds, before=None):
    """The bulk case with an address on every event and page view: the host
    steps on and off, and an older build (`before`), in turns, so drift on
    the machine falls on all of them. The load comes from this build's
    loadgen in every case."""
    args = CASES["bulk"][1] + ["--addresses"]
    builds = [("on", None, None), ("off", HOST_STEPS_OFF, None)]
    if before:
        builds.append(("before", None, before))
    runs = {name: [] for name, _, _ in builds}
    for r in range(rounds):
        for name, env, binary in builds:
            s = run_case(args, env, binary)
            runs[name].append(s.get("server_cpu_us_per_event") or 0)
            print(f"  round {r + 1} {name}: {json.dumps(s)}", file=sys.stderr)
    print("| server | server CPU µs per stored event (min / median / max) | per round |")
    print("|---|---|---|")
    for name, values in runs.items():
        print(f"| {name} | {spread(values)} | {', '.join(f'{v:.1f}' for v in values)} |")
    for other in [n for n in runs if n != "on"]:
        diffs = [a - b for a, b in zip(runs["on"], runs[other])]
        print(f"| on − {other}, round by round | {spread(diffs, '{:+.2f}')} | "
              f"{', '.join(f'{v:+.2f}' for v in diffs)} |")


if __name__ == "__main__":
    main()
