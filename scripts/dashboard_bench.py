"""How long /dashboard's queries take over millions of loadgen events.

    cargo build --release -p bilten-analytics
    python3 scripts/dashboard_bench.py --events 10000000 --rounds 20

Starts the release server on a fresh data directory (or `--data DIR
--keep` to load once and measure again later), sends `--events` loadgen
events spread over the last 30 days, waits for the engine's merges to
settle, signs in to /dashboard as the admin and loads the page `--rounds`
times for all organizers and for one. Reports, per panel query, the
engine's own duration from `system.query_log` (min / median / max), and the
whole page as the client waited for it.

Then the Stats API (`POST /api/v2/query`, issue 23): each query of
`STATS_QUERIES` for one organizer over the last 30 days, `--rounds` times
(at least 100, for a p99); the client's wait and the engine's time,
p50 / p99 / max, and the visits and sales the range holds.
"""

import argparse
import http.cookiejar
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import release_server  # noqa: E402

TOKEN = "bench-admin-token"

# Each panel's query, told apart by what it reads.
PANELS = [
    ("realtime (5-minute buckets)", "realtime_dashboard"),
    ("events per hour", "events_hourly_mv"),
    ("page views per hour (projection)", "count() AS page_views FROM bilten_analytics.page_views"),
    ("daily metrics (revenue per currency)", "FROM bilten_analytics.metrics_daily WHERE"),
    ("distinct users, visitors, buyers (sketches)", "measure IN ('users'"),
    ("event performance (sums, revenue per currency)", "FROM bilten_analytics.event_performance WHERE"),
    ("funnel (sketches)", "measure AS step"),
    ("organizer list", "SELECT DISTINCT organizer_id"),
]


# The Stats API's queries: what an app asks, in Plausible's shape.
STATS_QUERIES = [
    ("aggregate: visitors, visits, pageviews, bounce, duration",
     {"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"]}),
    ("visits per day", {"metrics": ["visits", "pageviews"], "dimensions": ["time:day"]}),
    ("top sources", {"metrics": ["visitors", "visits", "bounce_rate"], "dimensions": ["visit:source"],
                     "pagination": {"limit": 10}}),
    ("entry pages, filtered by channel", {"metrics": ["visits", "bounce_rate"], "dimensions": ["visit:entry_page"],
                                          "filters": [["is_not", "visit:channel", ["direct"]]],
                                          "pagination": {"limit": 10}}),
    ("visitors by browser, per week", {"metrics": ["visitors", "visits"], "dimensions": ["visit:browser", "time:week"]}),
    ("exit pages with visitors (each visit's last row)",
     {"metrics": ["visitors", "visits"], "dimensions": ["visit:exit_page"], "pagination": {"limit": 10}}),
    ("top pages", {"metrics": ["pageviews", "visitors"], "dimensions": ["event:page"], "pagination": {"limit": 10}}),
    ("conversion by channel", {"metrics": ["visits", "group_conversion_rate"], "dimensions": ["visit:channel"],
                               "filters": [["is", "event:goal", ["purchase"]]]}),
    ("tickets and revenue by campaign", {"metrics": ["tickets", "revenue"], "dimensions": ["visit:utm_campaign"]}),
    ("visits and revenue by channel (both tables)",
     {"metrics": ["visits", "tickets", "revenue"], "dimensions": ["visit:channel"]}),
]


def stats_query(base, query):
    req = urllib.request.Request(base + "/api/v2/query", data=json.dumps(query).encode(),
                                 headers={"authorization": f"Bearer {TOKEN}",
                                          "content-type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=60))


def percentiles(values):
    v = sorted(values)
    p99 = v[min(len(v) - 1, int(round(0.99 * (len(v) - 1))))]
    return f"{statistics.median(v):.1f} / {p99:.1f} / {v[-1]:.1f}"


def admin_query(base, sql):
    req = urllib.request.Request(base + "/admin/query", data=sql.encode(),
                                 headers={"authorization": f"Bearer {TOKEN}"})
    return json.load(urllib.request.urlopen(req, timeout=600))["data"]


def spread(values):
    v = sorted(values)
    return f"{v[0]:.1f} / {statistics.median(v):.1f} / {v[-1]:.1f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--data", help="data directory (default: a fresh temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args()
    release_server.require_binary()
    data = args.data or tempfile.mkdtemp(prefix="dashboard-bench-")
    os.makedirs(data, exist_ok=True)
    try:
        with release_server.running(data, TOKEN) as (_, base):
            stored = int(admin_query(base, "SELECT (SELECT count() FROM bilten_analytics.events) + "
                                     "(SELECT count() FROM bilten_analytics.page_views) + "
                                     "(SELECT count() FROM bilten_analytics.ticket_sales) AS n")[0]["n"])
            if stored < args.events:
                t = time.time()
                subprocess.run([release_server.BINARY, "loadgen", "--target", base,
                                "--total", str(args.events - stored), "--batch", "1000",
                                "--concurrency", "4", "--spread", "30days",
                                "--admin-token", TOKEN, "--quiet"],
                               check=True, stdout=subprocess.DEVNULL)
                print(f"loaded {args.events - stored} events in {time.time() - t:.0f} s",
                      file=sys.stderr)
            for _ in range(600):
                if int(admin_query(base, "SELECT count() AS n FROM system.merges")[0]["n"]) == 0:
                    break
                time.sleep(1)
            counts = admin_query(base, "SELECT (SELECT count() FROM bilten_analytics.events) AS events, "
                                 "(SELECT count() FROM bilten_analytics.page_views) AS page_views, "
                                 "(SELECT count() FROM bilten_analytics.ticket_sales) AS sales")[0]
            organizer = admin_query(base, "SELECT organizer_id FROM bilten_analytics.metrics_daily "
                                    "GROUP BY organizer_id ORDER BY organizer_id LIMIT 1")[0]["organizer_id"]

            jar = http.cookiejar.CookieJar()
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
            opener.open(base + "/dashboard/login",
                        data=urllib.parse.urlencode({"token": TOKEN}).encode(), timeout=60)
            started = admin_query(base, "SELECT toString(now64(3)) AS t")[0]["t"]
            pages = {"all organizers": [], f"organizer {organizer}": []}
            for _ in range(args.rounds):
                for name, query in [("all organizers", ""), (f"organizer {organizer}",
                                                             "?organizer=" + organizer)]:
                    t = time.perf_counter()
                    body = opener.open(base + "/dashboard" + query, timeout=60).read()
                    pages[name].append((time.perf_counter() - t) * 1000)
                    assert b'data-kpi="revenue"' in body, body[:300]
            time.sleep(8)  # the engine writes its query log every few seconds
            log = admin_query(base, "SELECT query, query_duration_ms AS ms, read_rows FROM system.query_log "
                              f"WHERE type = 'QueryFinish' AND event_time_microseconds >= '{started}' "
                              "AND query NOT LIKE '%system.query_log%'")
            print(f"events: {counts['events']}, page views: {counts['page_views']}, "
                  f"ticket sales: {counts['sales']}; {args.rounds} page loads each way\n")
            print("| panel query | engine ms, min / median / max | rows read (median) |")
            print("|---|---|---|")
            for name, marker in PANELS:
                hits = [r for r in log if marker in r["query"]]
                if not hits:
                    print(f"| {name} | (not in the query log) | |")
                    continue
                ms = [float(r["ms"]) for r in hits]
                rows = statistics.median(int(r["read_rows"]) for r in hits)
                print(f"| {name} | {spread(ms)} | {rows:,.0f} |")
            for name, ms in pages.items():
                print(f"| whole page, {name} (client's wait) | {spread(ms)} | |")

            visits = admin_query(base, "SELECT sum(sign) AS n FROM bilten_analytics.visits "
                                 f"WHERE organizer_id = '{organizer}' AND date >= today() - 29")[0]["n"]
            all_visits = admin_query(base, "SELECT sum(sign) AS n FROM bilten_analytics.visits")[0]["n"]
            rounds = max(args.rounds, 100)
            print(f"\nStats API, organizer {organizer}, last 30 days: {visits} of {all_visits} visits; "
                  f"{rounds} rounds\n")
            print("| query | client ms, p50 / p99 / max | rows read (median) |")
            print("|---|---|---|")
            for name, q in STATS_QUERIES:
                query = dict(q, site_id=organizer, date_range="30d")
                ms, rows = [], []
                for _ in range(rounds):
                    t = time.perf_counter()
                    answer = stats_query(base, query)
                    ms.append((time.perf_counter() - t) * 1000)
                    rows.append(answer["meta"]["rows_read"])
                    assert answer["results"], (name, answer)
                print(f"| {name} | {percentiles(ms)} | {statistics.median(rows):,.0f} |")
    finally:
        if not args.keep and not args.data:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
