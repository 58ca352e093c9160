#!/usr/bin/env python3
"""How the embedded engine takes the same `events` rows fastest: inlined after
the INSERT statement (what the server did until issue 10), or streamed
through chDB's insert-stream functions (what it does now), in JSONEachRow,
RowBinary, Native and TabSeparated. Prints this process's CPU time and the
wall time per row, min / median / max over the rounds.

    cargo build --release -p bilten-analytics
    python3 scripts/insert_formats.py --rows 100000 --rounds 5

The rows come from the release loadgen through a release server, so they are
the rows the server would insert; the table keeps its five materialized
views.
"""

import argparse
import ctypes
import glob
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import release_server
from release_server import BINARY
TOKEN = "insert-formats"
FORMATS = ["JSONEachRow", "RowBinary", "Native", "TabSeparated"]
# Inline data must be text the query parser can step over.
INLINE = {"JSONEachRow", "TabSeparated"}


def library():
    if os.environ.get("BILTEN_CHDB_LIB"):
        return os.environ["BILTEN_CHDB_LIB"]
    cache = os.environ.get("BILTEN_CHDB_CACHE", os.path.expanduser("~/.cache/bilten-analytics"))
    found = sorted(glob.glob(os.path.join(cache, "chdb-*", "libchdb.so")))
    if not found:
        sys.exit("no libchdb.so: build the server first (it fetches the engine)")
    return found[-1]


def fill(data, rows):
    """A release server on `data`, sent `rows` events by the loadgen, stopped."""
    with release_server.running(data, TOKEN) as (_, base):
        # Events are about 70 % of the traffic model.
        subprocess.run([BINARY, "loadgen", "--target", base, "--admin-token", TOKEN, "--quiet",
                        "--total", str(rows * 3 // 2), "--batch", "1000"], check=True,
                       stdout=subprocess.DEVNULL)


class Engine:
    def __init__(self, data):
        lib = ctypes.CDLL(library())
        vp, sz, cp = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
        for name, res, args in [
            ("chdb_connect", vp, [ctypes.c_int, ctypes.POINTER(cp)]),
            ("chdb_close_conn", None, [vp]),
            ("chdb_query_n", vp, [vp, cp, sz, cp, sz]),
            ("chdb_result_buffer", vp, [vp]),
            ("chdb_result_length", sz, [vp]),
            ("chdb_result_error", cp, [vp]),
            ("chdb_destroy_query_result", None, [vp]),
            ("chdb_stream_insert_n", vp, [vp, cp, sz, cp, sz]),
            ("chdb_stream_append", ctypes.c_int, [vp, cp, sz]),
            ("chdb_stream_done", vp, [vp]),
            ("chdb_stream_insert_error", cp, [vp]),
            ("chdb_destroy_insert_stream", None, [vp]),
        ]:
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args
        self.lib = lib
        args = [b"clickhouse", f"--path={data}/engine".encode(),
                f"--config-file={data}/engine-config.xml".encode(),
                b"--async_insert=0", b"--parallel_view_processing=1"]
        argv = (cp * len(args))(*args)
        self.handle = lib.chdb_connect(len(args), argv)
        if not self.handle:
            sys.exit("the engine did not start")
        self.conn = ctypes.cast(self.handle, ctypes.POINTER(vp))[0]

    def query(self, sql, fmt=b"TabSeparated"):
        lib = self.lib
        r = lib.chdb_query_n(self.conn, sql, len(sql), fmt, len(fmt))
        try:
            if lib.chdb_result_error(r):
                raise RuntimeError(lib.chdb_result_error(r).decode()[:500])
            n = lib.chdb_result_length(r)
            return ctypes.string_at(lib.chdb_result_buffer(r), n) if n else b""
        finally:
            lib.chdb_destroy_query_result(r)

    def stream(self, statement, fmt, data):
        lib = self.lib
        s = lib.chdb_stream_insert_n(self.conn, statement, len(statement), fmt, len(fmt))
        try:
            if lib.chdb_stream_insert_error(s):
                raise RuntimeError(lib.chdb_stream_insert_error(s).decode()[:500])
            piece = 1 << 20
            for at in range(0, len(data), piece):
                if lib.chdb_stream_append(s, data[at:at + piece], len(data[at:at + piece])) != 0:
                    break
            r = lib.chdb_stream_done(s)
            err = lib.chdb_result_error(r)
            lib.chdb_destroy_query_result(r)
            if err:
                raise RuntimeError(err.decode()[:500])
        finally:
            lib.chdb_destroy_insert_stream(s)

    def close(self):
        self.lib.chdb_close_conn(self.handle)


def spread(values):
    values = sorted(values)
    return " / ".join(f"{v:.2f}" for v in (values[0], statistics.median(values), values[-1]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    release_server.require_binary()
    data = tempfile.mkdtemp(prefix="insert-formats-")
    try:
        fill(data, a.rows)
        engine = Engine(data)
        cols = engine.query(
            b"SELECT arrayStringConcat(groupArray(name), ',') FROM system.columns "
            b"WHERE database = 'bilten_analytics' AND table = 'events' "
            b"AND default_kind NOT IN ('MATERIALIZED', 'ALIAS')").strip()
        have = int(engine.query(b"SELECT count() FROM bilten_analytics.events"))
        if have < a.rows:
            sys.exit(f"only {have} events were stored")
        rows = {f: engine.query(b"SELECT %s FROM bilten_analytics.events ORDER BY id LIMIT %d FORMAT %s"
                                % (cols, a.rows, f.encode())) for f in FORMATS}
        runs = {}
        for rnd in range(a.rounds):
            for f in FORMATS:
                for how in ["inline", "stream"]:
                    if how == "inline" and f not in INLINE:
                        continue
                    statement = (b"INSERT INTO bilten_analytics.events (%s) SETTINGS "
                                 b"insert_deduplication_token = 'r%d-%s-%s', "
                                 b"deduplicate_blocks_in_dependent_materialized_views = 1"
                                 % (cols, rnd, f.encode(), how.encode()))
                    before = resource.getrusage(resource.RUSAGE_SELF)
                    t = time.perf_counter()
                    if how == "inline":
                        engine.query(statement + b" FORMAT " + f.encode() + b"\n" + rows[f])
                    else:
                        engine.stream(statement, f.encode(), rows[f])
                    wall = time.perf_counter() - t
                    after = resource.getrusage(resource.RUSAGE_SELF)
                    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                    runs.setdefault((f, how), []).append((cpu / a.rows * 1e6, wall / a.rows * 1e6))
        total = int(engine.query(b"SELECT count() FROM bilten_analytics.events"))
        engine.close()
        expected = have + a.rows * sum(len(v) for v in runs.values())
        if total != expected:
            sys.exit(f"{total} rows stored, {expected} expected")
        print(f"{a.rows} events rows per insert, {a.rounds} rounds; µs per row, min / median / max")
        print("| format | how | bytes per row | CPU µs per row | wall µs per row |")
        print("|---|---|---|---|---|")
        for (f, how), v in runs.items():
            print(f"| {f} | {how} | {len(rows[f]) / a.rows:.0f} | {spread([c for c, _ in v])} "
                  f"| {spread([w for _, w in v])} |")
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
