#!/usr/bin/env python3
"""Cost per event of the same trivial plugin (drop `test_event`, keep the
rest: what `plugin new` makes) in Rust, JavaScript and Python, at batch 1
and batch 1000, through `bilten-analytics plugin test` (the server's sandbox:
a fresh instance, `init` and `process` per batch).

    python3 scripts/plugin_languages_bench.py RUST.wasm JS.wasm PY.wasm [--reps 5]

Each rep is one `plugin test` run: its median of 30 calls after the first.
Prints min/median/max over reps, and each language's ratio to Rust measured
in the same rep (the machine is noisy; ratios travel better than times).
"""

import json
import re
import statistics
import subprocess
import sys
import tempfile

BIN = "target/release/bilten-analytics"
args = sys.argv[1:]
reps = 5
if "--reps" in args:
    i = args.index("--reps")
    reps = int(args[i + 1])
    del args[i : i + 2]
wasm = dict(zip(["rust", "js", "python"], args))


def events(n):
    f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(
        [{"event_type": "test_event" if i % 3 == 0 else "purchase", "organizer_id": "org-1",
          "user_id": f"u{i}", "properties": {"event_id": "evt-1", "n": i}} for i in range(n)],
        f,
    )
    f.close()
    return f.name


def per_event(path, events_file):
    out = subprocess.run(
        [BIN, "plugin", "test", path, "--events", events_file, "--rounds", "30"],
        capture_output=True, text=True, check=True,
    ).stdout
    m = re.search(r"median of \d+ more ([0-9.]+) µs per event", out)
    return float(m.group(1))


for n in (1, 1000):
    file = events(n)
    times = {lang: [] for lang in wasm}
    ratios = {lang: [] for lang in wasm}
    for _ in range(reps):
        rep = {lang: per_event(path, file) for lang, path in wasm.items()}
        for lang, t in rep.items():
            times[lang].append(t)
            ratios[lang].append(t / rep["rust"])
    for lang in wasm:
        t, r = times[lang], ratios[lang]
        print(f"batch {n:>4}  {lang:<7} µs/event min {min(t):8.2f}  median {statistics.median(t):8.2f}  "
              f"max {max(t):8.2f}   × Rust: {min(r):6.1f} / {statistics.median(r):6.1f} / {max(r):6.1f}")
