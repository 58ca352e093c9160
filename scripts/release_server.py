"""The release server on a data directory, for the benchmark scripts: started
on a free port, ready once `/health` answers, stopped with SIGTERM."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "bilten-analytics")


def require_binary():
    if not os.path.exists(BINARY):
        sys.exit("build it first: cargo build --release -p bilten-analytics")


@contextlib.contextmanager
def running(data, token, extra_env=None, binary=None):
    """Yields (process, base URL); the server's log is `data`/server.log.
    `extra_env`: more BILTEN_* settings for this run."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, BILTEN_ADMIN_TOKEN=token, BILTEN_DATA_DIR=data,
               BILTEN_LISTEN=f"127.0.0.1:{port}", RUST_LOG="warn", **(extra_env or {}))
    server = subprocess.Popen([binary or BINARY, "serve"], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(data, "server.log"), "w"))
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except Exception:
                if server.poll() is not None:
                    sys.exit(f"the server exited; see {data}/server.log")
                time.sleep(0.1)
        yield server, base
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
