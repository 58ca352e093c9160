#!/usr/bin/env python3
"""What a materialized view costs the engine per inserted row: page views
inserted into a migrated store through chDB's C API, in blocks of 10 000,
three rounds with the views as migrated, then three after dropping the
views named. Prints process CPU per row.

    bilten-analytics migrate   # with BILTEN_STORAGE__EMBEDDED__DATA_DIR=/tmp/store
    python3 scripts/view_cost.py /tmp/store with drop:event_performance_from_page_views without

The engine library is the one the build fetched (~/.cache/bilten-analytics).
"""
import ctypes, glob, os, resource, sys, time

lib = ctypes.CDLL(sorted(glob.glob(os.path.expanduser("~/.cache/bilten-analytics/chdb-*/libchdb.so")))[-1])
lib.chdb_connect.restype = ctypes.POINTER(ctypes.c_void_p)
lib.chdb_query_n.restype = ctypes.c_void_p
lib.chdb_query_n.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
for f in ["chdb_result_buffer", "chdb_result_error"]:
    getattr(lib, f).restype = ctypes.c_char_p; getattr(lib, f).argtypes = [ctypes.c_void_p]
lib.chdb_result_length.restype = ctypes.c_size_t; lib.chdb_result_length.argtypes = [ctypes.c_void_p]
lib.chdb_destroy_query_result.argtypes = [ctypes.c_void_p]
lib.chdb_close_conn.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
d = sys.argv[1]
args = [b"clickhouse", f"--path={d}/engine".encode(), f"--config-file={d}/engine-config.xml".encode()]
argv = (ctypes.c_char_p * len(args))(*args)
conn = lib.chdb_connect(len(args), argv)
assert conn
def q(sql):
    b = sql.encode(); fmt = b"TSV"
    r = lib.chdb_query_n(conn[0], b, len(b), fmt, len(fmt))
    err = lib.chdb_result_error(r)
    out = None
    if err: print("ERROR:", err.decode()[:500])
    else:
        n = lib.chdb_result_length(r)
        out = ctypes.string_at(lib.chdb_result_buffer(r), n).decode() if n else ""
    lib.chdb_destroy_query_result(r)
    return out
N = 1_000_000
ins = ("INSERT INTO bilten_analytics.page_views (id, timestamp, organizer_id, user_id, session_id, url, referrer, visit_id, channel) "
       "SELECT generateUUIDv4(), now64(3) - number/100, concat('org-', toString(number % 50)), if(number % 3 = 0, concat('u', toString(number % 5000)), ''), "
       "concat('tab-', toString(number % 20000)), concat('https://x.example/e/', toString(number % 300), '?utm_source=a'), '', generateUUIDv4(), 'direct' "
       f"FROM numbers({N}) SETTINGS max_block_size=10000, min_insert_block_size_rows=10000, min_insert_block_size_bytes=0")
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
for label in sys.argv[2:]:
    if label.startswith("drop:"):
        q(f"DROP VIEW IF EXISTS bilten_analytics.{label[5:]}"); continue
    for i in range(3):
        c = cpu(); t = time.time(); q(ins); 
        print(f"{label} round {i}: {(cpu()-c)/N*1e6:.2f} us CPU/row, {(time.time()-t):.2f} s")
lib.chdb_close_conn(conn)
