#!/usr/bin/env python3
"""ClickHouse's HTTP interface on the embedded engine, measured: the release
server's CPU per statement (a reader's `SELECT 1`; a writer's one-row
insert, which is judged on the engine's spelling and runs walled in by its
role and profile), and per row for inserts from clickhouse-connect
(unmodified: Native, LZ4) into the project's `settings` table. (Writers may
no longer run `INSERT … SELECT`, so the engine-alone reference of earlier
runs is gone: BENCHMARKS.md keeps its last figures.)

    cargo build --release -p bilten-analytics
    python3 scripts/interface_bench.py --rounds 3

Installs clickhouse-connect into target/bench-venv on first use."""

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from release_server import ROOT, require_binary, running  # noqa: E402

VENV = os.path.join(ROOT, "target", "bench-venv")
USERS = "reader:bench-r,writer:bench-w:rw"


def ensure_client():
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(os.path.join(VENV, ".installed")):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "--quiet",
                        "clickhouse-connect==1.12.0"], check=True)
        open(os.path.join(VENV, ".installed"), "w").close()
    if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
        os.execv(python, [python] + sys.argv)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def statements(port, n):
    """n `SELECT 1` on one keep-alive connection: wall times in ms."""
    import base64
    auth = "Basic " + base64.b64encode(b"reader:bench-r").decode()
    conn = http.client.HTTPConnection("127.0.0.1", port)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("POST", "/", body=b"SELECT 1", headers={"Authorization": auth})
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b"1\n"
        times.append((time.perf_counter() - t) * 1000)
    return times


def one_row_inserts(port, n):
    """n one-row inserts as the writer, on one keep-alive connection."""
    import base64
    auth = "Basic " + base64.b64encode(b"writer:bench-w").decode()
    conn = http.client.HTTPConnection("127.0.0.1", port)
    path = "/?query=INSERT%20INTO%20settings%20(key%2C%20value)%20FORMAT%20JSONEachRow"
    for i in range(n):
        body = ('{"key":"one-%d","value":"x"}\n' % i).encode()
        conn.request("POST", path, body=body, headers={"Authorization": auth})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status


def fmt(values, unit):
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f} {unit}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--statements", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=500_000)
    args = ap.parse_args()
    require_binary()
    ensure_client()
    import clickhouse_connect

    port = free_port()
    env = {"BILTEN_CLICKHOUSE_HTTP_LISTEN": f"127.0.0.1:{port}",
           "BILTEN_CLICKHOUSE_HTTP_USERS": USERS}
    stmt_cpu, stmt_p50, stmt_p99, write_cpu, via_cpu = [], [], [], [], []
    with tempfile.TemporaryDirectory() as data, running(data, "bench", env) as (server, _):
        w = clickhouse_connect.get_client(host="127.0.0.1", port=port, username="writer",
                                          password="bench-w", database="bilten_analytics")
        for r in range(args.rounds):
            statements(port, 50)  # warm
            c0 = cpu_seconds(server.pid)
            times = sorted(statements(port, args.statements))
            stmt_cpu.append((cpu_seconds(server.pid) - c0) / args.statements * 1e6)
            stmt_p50.append(times[len(times) // 2])
            stmt_p99.append(times[int(len(times) * 0.99)])

            c0 = cpu_seconds(server.pid)
            one_row_inserts(port, args.statements // 2)
            write_cpu.append((cpu_seconds(server.pid) - c0) / (args.statements // 2) * 1e6)

            rows = [[f"bench-{r}-{i}", f"org-{i % 50}"] for i in range(args.rows)]
            c0 = cpu_seconds(server.pid)
            for i in range(0, args.rows, 100_000):
                w.insert("settings", rows[i:i + 100_000], column_names=["key", "value"])
            via = (cpu_seconds(server.pid) - c0) / args.rows * 1e6
            counted = w.query(f"SELECT count() FROM settings WHERE key LIKE 'bench-{r}-%'")
            assert counted.result_rows[0][0] == args.rows
            via_cpu.append(via)
            print(f"round {r + 1}: statement {stmt_cpu[-1]:.0f} µs CPU, p50 {stmt_p50[-1]:.2f} ms; "
                  f"one-row insert {write_cpu[-1]:.0f} µs CPU; insert {via:.2f} µs/row")
    print(f"\n{args.rounds} rounds, min / median / max")
    print(f"SELECT 1 (connection, USE, classify, EXPLAIN, run): server CPU {fmt(stmt_cpu, 'µs')}, "
          f"wall p50 {fmt(stmt_p50, 'ms')}, p99 {fmt(stmt_p99, 'ms')}")
    print(f"one-row insert as the writer (walls, formatQuery, judge, stream): "
          f"server CPU {fmt(write_cpu, 'µs')}")
    print(f"clickhouse-connect insert into settings, Native + LZ4: server CPU {fmt(via_cpu, 'µs/row')}")


if __name__ == "__main__":
    main()
