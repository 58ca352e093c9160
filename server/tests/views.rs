//! The schema and views, and the seed document's queries, run verbatim.

mod common;

use bilten_analytics::config::Config;
use bilten_analytics::ingest::{self, BodyFormat, Table};
use bilten_analytics::ops::migrations;
use bilten_analytics::storage;
use bilten_analytics::synth::Generator;
use chrono::{Duration, Utc};
use common::{TestServer, as_u64};
use serde_json::{Value, json};

/// A seeded dataset spread over ten days, with a share in the last hour so
/// the realtime view has something to show.
fn dataset(n: usize) -> Vec<(Table, Value)> {
    let mut g = Generator::new(11);
    let now = Utc::now();
    (0..n)
        .map(|i| {
            let (table, mut v) = g.next_event();
            let age = if i % 5 == 0 {
                Duration::seconds((i % 3000) as i64)
            } else {
                Duration::minutes((i * 37 % (10 * 24 * 60)) as i64)
            };
            v["timestamp"] = json!((now - age).to_rfc3339());
            (table, v)
        })
        .collect()
}

/// A slice of the dataset as one request per table, skipping empty ones.
fn by_table(chunk: &[(Table, Value)]) -> Vec<(Table, Vec<Value>)> {
    Table::ALL
        .into_iter()
        .map(|table| {
            (
                table,
                chunk
                    .iter()
                    .filter(|(t, _)| *t == table)
                    .map(|(_, v)| v.clone())
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, events)| !events.is_empty())
        .collect()
}

/// The seed document's SQL, character for character.
const SEED_QUERIES: &[&str] = &[
    "-- Daily event counts by organizer
SELECT 
    toDate(timestamp) as date,
    organizer_id,
    count() as events,
    uniq(user_id) as unique_users
FROM bilten_analytics.events 
WHERE timestamp >= today() - INTERVAL 30 DAY
GROUP BY date, organizer_id
ORDER BY date DESC;",
    "-- Event funnel analysis
SELECT 
    event_type,
    count() as events,
    uniq(user_id) as unique_users,
    count() / (SELECT count() FROM bilten_analytics.events WHERE event_type = 'page_view') * 100 as conversion_rate
FROM bilten_analytics.events 
WHERE timestamp >= today() - INTERVAL 7 DAY
GROUP BY event_type
ORDER BY events DESC;",
    "-- Revenue analytics
SELECT 
    toDate(timestamp) as date,
    organizer_id,
    sum(price * quantity) as revenue,
    count() as transactions,
    avg(price) as avg_ticket_price
FROM bilten_analytics.ticket_sales 
WHERE timestamp >= today() - INTERVAL 30 DAY
GROUP BY date, organizer_id
ORDER BY date DESC, revenue DESC;",
    "-- Fast dashboard metrics (pre-aggregated)
SELECT * FROM bilten_analytics.organizer_daily_metrics_mv 
WHERE date >= today() - INTERVAL 7 DAY
ORDER BY date DESC;",
    "-- Real-time metrics (5-minute intervals)
SELECT * FROM bilten_analytics.realtime_dashboard_mv 
WHERE interval_start >= now() - INTERVAL 1 HOUR
ORDER BY interval_start DESC;",
    "-- Check query performance
SELECT query, query_duration_ms, read_rows 
FROM system.query_log 
WHERE query_duration_ms > 1000 
ORDER BY query_duration_ms DESC;",
    "-- Check storage usage
SELECT 
    table,
    sum(bytes_on_disk) / 1024 / 1024 / 1024 as size_gb,
    sum(rows) as total_rows
FROM system.parts 
WHERE database = 'bilten_analytics' AND active = 1
GROUP BY table;",
];

fn sum(rows: &[Value], col: &str) -> f64 {
    rows.iter()
        .map(|r| match &r[col] {
            Value::String(s) => s.parse::<f64>().unwrap(),
            v => v.as_f64().unwrap(),
        })
        .sum()
}

#[tokio::test]
async fn a_generated_dataset_end_to_end() {
    // Small batches: many small inserts, many parts.
    let s = TestServer::start(|c| c.batch.max_rows = 40).await;
    let data = dataset(3000);
    let mut sent = [0u64; 3];
    for chunk in data.chunks(25) {
        for (table, events) in by_table(chunk) {
            let (status, body) = s
                .post_json(
                    &format!("/v1/{}", table.route()),
                    &Value::Array(events.clone()),
                )
                .await;
            assert_eq!(status, 202, "{body}");
            assert_eq!(
                body["accepted"].as_u64().unwrap(),
                events.len() as u64,
                "{body}"
            );
            sent[table as usize] += events.len() as u64;
        }
    }
    let flushed = s.flush().await;
    assert_eq!(flushed["rows_dead_lettered"], 0);
    // The 3000 sent, and the visits the server wrote.
    assert!(as_u64(&flushed["rows_stored"]) > 3000, "{flushed}");
    assert_eq!(s.count("events").await, sent[0]);
    assert_eq!(s.count("page_views").await, sent[1]);
    assert_eq!(s.count("ticket_sales").await, sent[2]);
    assert!(sent.iter().all(|n| *n > 100), "{sent:?}");

    for (view, view_sql, raw_sql) in common::views::pairs() {
        let from_view = s.query(&view_sql).await;
        let from_raw = s.query(&raw_sql).await;
        common::views::assert_same(view, &from_view, &from_raw);
    }
    // Each visit the server wrote has the figures of its stored rows, read
    // with `sign` (rows written again cancel) as the Stats API reads them.
    let written = s
        .query(
            "SELECT toString(visit_id) AS visit, organizer_id, toInt64(sum(sign * pageviews)) AS pages, \
             toInt64(sum(sign * events)) AS events, toInt64(sum(sign)) AS n, \
             toUnixTimestamp64Milli(minIf(started, sign > 0)) AS first \
             FROM bilten_analytics.visits GROUP BY visit_id, organizer_id ORDER BY visit",
        )
        .await;
    let raw = s
        .query(
            "SELECT toString(visit_id) AS visit, organizer_id, toInt64(countIf(page)) AS pages, \
             toInt64(countIf(NOT page)) AS events, toInt64(1) AS n, \
             toUnixTimestamp64Milli(min(timestamp)) AS first FROM ( \
               SELECT visit_id, organizer_id, timestamp, true AS page FROM bilten_analytics.page_views \
               UNION ALL SELECT visit_id, organizer_id, timestamp, false FROM bilten_analytics.events) \
             WHERE visit_id != toUUID('00000000-0000-0000-0000-000000000000') \
             GROUP BY visit_id, organizer_id ORDER BY visit",
        )
        .await;
    assert!(raw.len() > 50, "{}", raw.len());
    common::views::assert_same("visits", &written, &raw);
    // The daily rollup the Stats API reads by origin, day and country
    // agrees with the visits it sums.
    let group = "organizer_id, date, channel, source, utm_medium, utm_source, utm_campaign, \
                 utm_content, utm_term, country";
    let daily = s
        .query(&format!(
            "SELECT {group}, toInt64(sum(visits)) AS v, toInt64(sum(pageviews)) AS p, \
             toInt64(sum(events)) AS e, toInt64(sum(bounces)) AS b, toInt64(sum(duration_ms)) AS ms, \
             uniqCombinedMerge(12)(visitors) AS u FROM bilten_analytics.visits_daily GROUP BY {group} \
             HAVING v != 0 ORDER BY {group}"
        ))
        .await;
    let summed = s
        .query(&format!(
            "SELECT {group}, toInt64(sum(sign)) AS v, toInt64(sum(sign * pageviews)) AS p, \
             toInt64(sum(sign * events)) AS e, toInt64(sum(sign * (pageviews <= 1))) AS b, \
             toInt64(sum(sign * dateDiff('millisecond', started, ended))) AS ms, uniqCombined(12)(visitor) AS u \
             FROM bilten_analytics.visits GROUP BY {group} HAVING v != 0 ORDER BY {group}"
        ))
        .await;
    assert!(daily.len() > 5, "{}", daily.len());
    common::views::assert_same("visits_daily", &daily, &summed);
    // So does the rollup by one page or device column at a time; and the
    // server read the visits' devices from their user agents.
    for facet in ["entry_page", "exit_page", "device", "browser", "os"] {
        let rolled = s
            .query(&format!(
                "SELECT organizer_id, date, channel, value, toInt64(sum(visits)) AS v, \
                 toInt64(sum(pageviews)) AS p, toInt64(sum(events)) AS e, toInt64(sum(bounces)) AS b, \
                 toInt64(sum(duration_ms)) AS ms, uniqCombinedMerge(12)(visitors) AS u \
                 FROM bilten_analytics.visit_facets_daily WHERE facet = '{facet}' \
                 GROUP BY organizer_id, date, channel, value HAVING v != 0 \
                 ORDER BY organizer_id, date, channel, value"
            ))
            .await;
        let summed = s
            .query(&format!(
                "SELECT organizer_id, date, channel, toString({facet}) AS value, toInt64(sum(sign)) AS v, \
                 toInt64(sum(sign * pageviews)) AS p, toInt64(sum(sign * events)) AS e, \
                 toInt64(sum(sign * (pageviews <= 1))) AS b, \
                 toInt64(sum(sign * dateDiff('millisecond', started, ended))) AS ms, \
                 uniqCombined(12)(visitor) AS u FROM bilten_analytics.visits \
                 GROUP BY organizer_id, date, channel, value HAVING v != 0 \
                 ORDER BY organizer_id, date, channel, value"
            ))
            .await;
        assert!(rolled.len() > 5, "{facet}: {}", rolled.len());
        common::views::assert_same(facet, &rolled, &summed);
    }
    // Pages and event names: the rollup, summed from the visits' lines,
    // equals the stored rows counted under their visit's day, channel and
    // visitor.
    let rolled = s
        .query(
            "SELECT organizer_id, date, kind, channel, value, toInt64(sum(pageviews)) AS p, \
             toInt64(sum(events)) AS e, uniqCombinedMerge(12)(visits) AS vs, \
             uniqCombinedMerge(12)(visitors) AS us FROM bilten_analytics.pages_daily \
             GROUP BY ALL HAVING e != 0 ORDER BY ALL",
        )
        .await;
    let summed = s
        .query(
            "SELECT w.organizer_id AS organizer_id, w.date AS date, r.kind AS kind, \
             w.channel AS channel, r.value AS value, toInt64(sum(r.pv)) AS p, toInt64(count()) AS e, \
             uniqCombined(12)(r.visit_id) AS vs, uniqCombined(12)(w.visitor) AS us \
             FROM (SELECT visit_id, x.1 AS kind, x.2 AS value, x.3 AS pv FROM bilten_analytics.page_views \
                   ARRAY JOIN [('page', path(url), 1), ('name', 'pageview', 1)] AS x \
                   UNION ALL SELECT visit_id, 'name', event_type, 0 FROM bilten_analytics.events) AS r \
             INNER JOIN (SELECT organizer_id, date, visit_id, channel, visitor \
                         FROM bilten_analytics.visits FINAL WHERE sign > 0) AS w ON w.visit_id = r.visit_id \
             GROUP BY ALL ORDER BY ALL",
        )
        .await;
    assert!(rolled.len() > 5, "pages: {}", rolled.len());
    common::views::assert_same("pages_daily", &rolled, &summed);

    let browsers = s
        .query(
            "SELECT uniqExact(browser) AS n, countIf(device = '') AS unread \
             FROM bilten_analytics.visits WHERE sign > 0",
        )
        .await;
    assert!(as_u64(&browsers[0]["n"]) >= 2, "{browsers:?}");
    // Every visitor here sent a user agent woothee knows.
    assert_eq!(as_u64(&browsers[0]["unread"]), 0, "{browsers:?}");

    // Sales in several currencies, so the views' revenue per currency
    // above is a real check, not a single-currency sum.
    let currencies = s
        .query("SELECT uniqExact(currency) AS n FROM bilten_analytics.ticket_sales")
        .await;
    assert!(as_u64(&currencies[0]["n"]) >= 2, "{currencies:?}");

    // The seed's queries, verbatim, with the figures a user would check.
    let results: Vec<Vec<Value>> = {
        let mut out = Vec::new();
        for q in SEED_QUERIES {
            out.push(s.query(q).await);
        }
        out
    };
    assert_eq!(
        sum(&results[0], "events") as u64,
        sent[0],
        "daily counts cover every event"
    );
    let in_week = as_u64(&s.query("SELECT count() AS n FROM bilten_analytics.events WHERE timestamp >= today() - INTERVAL 7 DAY").await[0]["n"]);
    assert_eq!(sum(&results[1], "events") as u64, in_week);
    // The seed's conversion rate divides by every page view, not only this week's.
    let page_view_row = results[1]
        .iter()
        .find(|r| r["event_type"] == "page_view")
        .unwrap();
    let all_page_views = as_u64(
        &s.query("SELECT count() AS n FROM bilten_analytics.events WHERE event_type = 'page_view'")
            .await[0]["n"],
    );
    let want = as_u64(&page_view_row["events"]) as f64 / all_page_views as f64 * 100.0;
    assert!(
        (page_view_row["conversion_rate"].as_f64().unwrap() - want).abs() < 1e-9,
        "{page_view_row}"
    );
    let revenue = s
        .query("SELECT sum(price * quantity) AS r FROM bilten_analytics.ticket_sales")
        .await;
    assert!((sum(&results[2], "revenue") - sum(&revenue, "r")).abs() < 0.005);
    assert_eq!(sum(&results[2], "transactions") as u64, sent[2]);
    assert!(
        !results[3].is_empty() && results[3].len() <= 8 * 4,
        "a week of days for four organizers"
    );
    assert!(
        !results[4].is_empty(),
        "events in the last hour show in the realtime view"
    );
    let storage_rows: u64 = results[6]
        .iter()
        .filter(|r| r["table"] == "events")
        .map(|r| as_u64(&r["total_rows"]))
        .sum();
    assert_eq!(storage_rows, sent[0]);

    // The query log is the engine's own timing of every statement we ran.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let logged = s
        .query("SELECT count() AS n, max(query_duration_ms) AS slowest FROM system.query_log WHERE query LIKE '%organizer_daily_metrics_mv%' AND type = 'QueryFinish'")
        .await;
    assert!(as_u64(&logged[0]["n"]) >= 2, "{logged:?}");
    s.stop().await.unwrap();
}

/// Merges stopped: every view must already agree with the raw tables when
/// each insert is still its own part.
#[tokio::test]
async fn views_are_final_before_any_merge() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.storage.embedded.data_dir = dir.path().to_path_buf();
    let storage = storage::open(&cfg.storage).await.unwrap();
    migrations::apply(&*storage).await.unwrap();
    storage.execute("SYSTEM STOP MERGES").await.unwrap();
    let data = dataset(1200);
    let now = Utc::now();
    let mut inserts = 0;
    for chunk in data.chunks(30) {
        for (table, events) in by_table(chunk) {
            let body = serde_json::to_vec(&events).unwrap();
            let out = ingest::process(table, &body, BodyFormat::Json, 10_000, now, None).unwrap();
            assert!(out.rejections.is_empty(), "{:?}", out.rejections);
            storage
                .insert(
                    table.name(),
                    out.rows.into(),
                    &format!("views-test-{inserts}"),
                )
                .await
                .unwrap();
            inserts += 1;
        }
    }
    let parts = storage::query_text(&*storage, "SELECT count() FROM system.parts WHERE database = 'bilten_analytics' AND table = 'metrics_daily' AND active").await.unwrap();
    let parts: u64 = parts.trim().parse().unwrap();
    assert!(
        parts >= 40,
        "expected one part per insert, got {parts} for {inserts} inserts"
    );
    for (view, view_sql, raw_sql) in common::views::pairs() {
        let a = storage.query(&view_sql, "JSONEachRow").await.unwrap();
        let b = storage.query(&raw_sql, "JSONEachRow").await.unwrap();
        let lines = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        common::views::assert_same(view, &lines(&a), &lines(&b));
    }
    storage.close().await;
}

/// Visits: page views and events a visitor sends within 30 minutes of each
/// other are one visit, whose origin is its first page's referrer and
/// campaign; `visits` holds each visit's figures once written. Referrers
/// and URLs that are no URLs, or 10 KB long, are stored all the same.
#[tokio::test]
async fn visits_and_their_origins_are_kept_as_events_arrive() {
    let s = TestServer::start(|c| {
        c.read_keys = vec![
            "read-key-of-org-v@org-v".to_string().into(),
            "read-key-of-org-w@org-w".to_string().into(),
        ];
    })
    .await;
    let t0 = Utc::now() - Duration::hours(3);
    let at = |minutes: i64| (t0 + Duration::minutes(minutes)).timestamp_millis();
    let view = |tab: &str, minutes: i64, url: &str, referrer: &str| {
        json!({"organizer_id": "org-v", "session_id": tab, "timestamp": at(minutes),
               "url": url, "referrer": referrer, "duration_ms": 1000})
    };
    let long = format!("https://bilten.example/e/9?q={}", "x".repeat(10_000));
    let views = json!([
        view(
            "tab-1",
            0,
            "https://bilten.example/e/1?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale",
            "https://mail.google.com/"
        ),
        view(
            "tab-1",
            10,
            "https://bilten.example/e/1/tickets",
            "https://bilten.example/e/1"
        ),
        view(
            "tab-1",
            25,
            "https://bilten.example/checkout",
            "https://bilten.example/e/1/tickets"
        ),
        // 31 minutes of silence: a second visit, direct.
        view("tab-1", 56, "https://bilten.example/", ""),
        view(
            "tab-2",
            5,
            "https://bilten.example/e/2",
            "https://www.google.com/search?q=concert"
        ),
        view("tab-3", 7, "not a url", "%%%"),
        view(
            "tab-4",
            8,
            &long,
            &format!("https://www.facebook.com/?{}", "%ZZ".repeat(3000))
        ),
    ]);
    let (status, body) = s.post_json("/v1/page-views", &views).await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (202, json!(7)),
        "{body}"
    );
    let (status, body) = s
        .post_json(
            "/v1/events",
            &json!([{"organizer_id": "org-v", "session_id": "tab-1", "event_type": "add_to_cart",
                     "timestamp": at(12), "user_id": "buyer-1"}]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    s.flush().await;
    let visits = s
        .query(
            "SELECT toString(visit_id) AS visit, session_id AS tab, pageviews, events, \
             entry_page AS entry, exit_page AS exit, channel, source, utm_campaign AS campaign, \
             user_id AS user, toUnixTimestamp64Milli(started) AS started_ms \
             FROM bilten_analytics.visits FINAL WHERE organizer_id = 'org-v' \
             ORDER BY started_ms, tab",
        )
        .await;
    // Tab, page views, events, entry, exit, channel, source, campaign, user.
    let brief: Vec<Value> = visits
        .iter()
        .map(|v| {
            json!([
                v["tab"],
                as_u64(&v["pageviews"]),
                as_u64(&v["events"]),
                v["entry"],
                v["exit"],
                v["channel"],
                v["source"],
                v["campaign"],
                v["user"]
            ])
        })
        .collect();
    assert_eq!(
        brief,
        [
            json!([
                "tab-1",
                3,
                1,
                "/e/1",
                "/checkout",
                "email",
                "newsletter",
                "spring_sale",
                "buyer-1"
            ]),
            json!(["tab-2", 1, 0, "/e/2", "/e/2", "search", "Google", "", ""]),
            json!(["tab-3", 1, 0, "", "", "direct", "", "", ""]),
            json!(["tab-4", 1, 0, "/e/9", "/e/9", "social", "Facebook", "", ""]),
            json!(["tab-1", 1, 0, "/", "/", "direct", "", "", ""]),
        ]
    );
    // The visit's id holds its start; its rows carry it and its origin.
    let first = visits[0]["visit"].as_str().unwrap();
    let rows = s
        .query(&format!(
            "SELECT count() AS n, uniqExact(channel, source, utm_campaign) AS origins, \
             toUnixTimestamp64Milli(min(timestamp)) AS first \
             FROM (SELECT timestamp, channel, source, utm_campaign FROM bilten_analytics.page_views \
                   WHERE visit_id = '{first}' UNION ALL SELECT timestamp, channel, source, utm_campaign \
                   FROM bilten_analytics.events WHERE visit_id = '{first}')"
        ))
        .await;
    assert_eq!(as_u64(&rows[0]["n"]), 4, "{rows:?}");
    assert_eq!(as_u64(&rows[0]["origins"]), 1, "{rows:?}");
    assert_eq!(as_u64(&visits[0]["started_ms"]), at(0) as u64);

    // The Stats API (Plausible's v2 shape) answers the same from `visits`.
    let stats = |key: &'static str, q: Value| {
        let req = s
            .client
            .post(format!("{}/api/v2/query", s.base))
            .bearer_auth(key)
            .json(&q);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let day = t0.date_naive().to_string();
    let today = Utc::now().date_naive().to_string();
    let (status, body) = stats(
        "read-key-of-org-v",
        json!({"site_id": "org-v", "date_range": [day, today],
               "metrics": ["visits", "visitors", "pageviews", "bounce_rate", "events"],
               "dimensions": ["visit:channel"], "order_by": [["visits", "desc"]]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let rows: Vec<(String, Vec<i64>)> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dimensions"][0].as_str().unwrap().to_string(),
                r["metrics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_i64().unwrap())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("direct".to_string(), vec![2, 2, 2, 100, 2]),
            ("email".to_string(), vec![1, 1, 3, 0, 4]),
            ("search".to_string(), vec![1, 1, 1, 100, 1]),
            ("social".to_string(), vec![1, 1, 1, 100, 1]),
        ],
        "{body}"
    );
    assert!(body["meta"]["rows_read"].as_u64().unwrap() > 0, "{body}");
    // A campaign, filtered; and the visit's length in seconds.
    let (status, body) = stats(
        "read-key-of-org-v",
        json!({"site_id": "org-v", "date_range": [day, today], "metrics": ["visits", "visit_duration"],
               "dimensions": ["visit:utm_campaign", "visit:entry_page"],
               "filters": [["is", "visit:utm_campaign", ["spring_sale"]]]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"],
        json!([{"dimensions": ["spring_sale", "/e/1"], "metrics": [1, 25 * 60]}])
    );
    // Pages and event names, from `pages_daily`: the visit of tab-1 saw
    // /e/1 and /e/1/tickets, two views in one visit; the add_to_cart came
    // from its user once signed in, counted as the visit's visitor (its tab).
    let ask = |q: Value| {
        let mut q = q;
        q["site_id"] = json!("org-v");
        q["date_range"] = json!([day, today]);
        stats("read-key-of-org-v", q)
    };
    let (status, body) = ask(json!({"metrics": ["visitors", "visits", "pageviews"],
                                    "filters": [["contains", "event:page", ["/e/1"]]]}))
    .await;
    assert_eq!(
        (status, body["results"].clone()),
        (200, json!([{"dimensions": [], "metrics": [1, 1, 2]}])),
        "{body}"
    );
    // Four visitors in all (four tabs), five visits, one of which added to
    // the cart.
    let (status, body) = ask(
        json!({"metrics": ["visitors", "visits", "events", "conversion_rate"],
                                    "dimensions": ["event:name"]}),
    )
    .await;
    assert_eq!(
        (status, body["results"].clone()),
        (
            200,
            json!([{"dimensions": ["pageview"], "metrics": [4, 5, 7, 100]},
                   {"dimensions": ["add_to_cart"], "metrics": [1, 1, 1, 20]}])
        ),
        "{body}"
    );
    // By channel: of all five visits (conversion_rate), and of the one from
    // the email (group_conversion_rate), one added to the cart; `event:goal`
    // names the event as `event:name` does.
    for (metric, rate) in [("conversion_rate", 20), ("group_conversion_rate", 100)] {
        let (status, body) = ask(json!({"metrics": [metric], "dimensions": ["visit:channel"],
                                        "filters": [["is", "event:goal", ["add_to_cart"]]]}))
        .await;
        assert_eq!(
            (status, body["results"].clone()),
            (200, json!([{"dimensions": ["email"], "metrics": [rate]}])),
            "{metric}: {body}"
        );
    }
    let (status, body) = ask(
        json!({"metrics": ["pageviews"], "dimensions": ["event:page"],
                                    "filters": [["is", "visit:channel", ["email"]]],
                                    "order_by": [["event:page", "asc"]]}),
    )
    .await;
    assert_eq!(
        (status, body["results"].clone()),
        (
            200,
            json!([{"dimensions": ["/checkout"], "metrics": [1]},
                   {"dimensions": ["/e/1"], "metrics": [1]},
                   {"dimensions": ["/e/1/tickets"], "metrics": [1]}])
        ),
        "{body}"
    );
    let (status, body) =
        ask(json!({"metrics": ["bounce_rate"], "dimensions": ["event:page"]})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("bounce_rate does not apply to event:page"),
        "{body}"
    );
    // With no channel asked or filtered, pages and device columns are read
    // from their rollups' projections by value (0029).
    for (q, projection) in [
        (
            json!({"metrics": ["pageviews", "visitors"], "dimensions": ["event:page"]}),
            "pages_by_value",
        ),
        (
            json!({"metrics": ["visitors", "visits"], "dimensions": ["visit:browser", "time:week"]}),
            "facets_by_value",
        ),
    ] {
        let mut q = q;
        q["site_id"] = json!("org-v");
        q["date_range"] = json!([day, today]);
        let plan = bilten_analytics::stats::plan(&q, Some("org-v"), Utc::now().date_naive())
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        s.assert_reads_projection_with(&plan.sql, &plan.params, projection)
            .await;
    }
    // Another organizer's key reads nothing of org-v, through any field.
    let (status, body) = stats(
        "read-key-of-org-w",
        json!({"site_id": "org-v", "date_range": "7d", "metrics": ["visits"]}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = stats(
        "read-key-of-org-w",
        json!({"site_id": "org-w", "date_range": "7d", "metrics": ["visits"],
               "filters": [["is", "visit:source", ["x' OR organizer_id = 'org-v"]]]}),
    )
    .await;
    assert_eq!(
        (status, body["results"].clone()),
        (200, json!([{"dimensions": [], "metrics": [0]}])),
        "{body}"
    );
    let (status, body) = stats(
        "nobody",
        json!({"site_id": "org-v", "date_range": "7d", "metrics": ["visits"]}),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = stats(
        "read-key-of-org-v",
        json!({"site_id": "org-v", "date_range": "7d", "metrics": ["visits", "nope"]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("\"nope\""),
        "{body}"
    );
    s.stop().await.unwrap();
}

/// Attribution, in the order a buyer goes: an anonymous visit from a
/// campaign, then `identify` in that visit, then a sale sent by the backend
/// with only the user's id. The sale is credited to the campaign, first and
/// last; a buyer with no visit to direct. The Stats API breaks tickets and
/// revenue down by campaign, per currency, and says when currencies mix.
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 \
                      (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
const WINDOWS_CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                              (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

#[tokio::test]
async fn a_backend_sale_is_credited_to_the_campaign_of_the_anonymous_visit() {
    let s = TestServer::start(|c| c.read_keys = vec!["read-key-of-org-a@org-a".to_string().into()])
        .await;
    let t0 = Utc::now() - Duration::hours(2);
    let at = |minutes: i64| (t0 + Duration::minutes(minutes)).timestamp_millis();
    let (status, body) = s
        .post_json(
            "/v1/page-views",
            &json!([
                {"organizer_id": "org-a", "session_id": "anon-tab", "timestamp": at(0),
                 "url": "https://bilten.example/e/1?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale",
                 "referrer": "https://mail.google.com/", "user_agent": IPHONE},
                // An earlier visit of another campaign, from another tab.
                {"organizer_id": "org-a", "session_id": "tab-0", "user_id": "buyer-1", "timestamp": at(-60),
                 "url": "https://bilten.example/?utm_source=facebook&utm_medium=cpc&utm_campaign=winter",
                 "referrer": "https://m.facebook.com/", "user_agent": WINDOWS_CHROME},
            ]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = s
        .post_json(
            "/v1/events",
            &json!([{"organizer_id": "org-a", "session_id": "anon-tab", "user_id": "buyer-1",
                     "event_type": "identify", "timestamp": at(3)}]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let sale = |user: &str, price: &str, currency: &str| {
        json!({"organizer_id": "org-a", "event_id": "concert-1", "user_id": user, "quantity": 2,
               "price": price, "currency": currency, "timestamp": at(10)})
    };
    let (status, body) = s
        .post_json(
            "/v1/ticket-sales",
            &json!([
                sale("buyer-1", "80.00", "EUR"),
                sale("walk-in", "30.00", "USD")
            ]),
        )
        .await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (202, json!(2)),
        "{body}"
    );
    s.flush().await;
    let sales = s
        .query(
            "SELECT user_id, first_utm_campaign AS first, last_utm_campaign AS last, \
             last_channel AS channel, last_source AS source FROM bilten_analytics.ticket_sales \
             WHERE organizer_id = 'org-a' ORDER BY user_id",
        )
        .await;
    assert_eq!(
        sales,
        [
            json!({"user_id": "buyer-1", "first": "winter", "last": "spring_sale", "channel": "email", "source": "newsletter"}),
            json!({"user_id": "walk-in", "first": "", "last": "", "channel": "direct", "source": ""}),
        ]
    );
    let stats = |q: Value| {
        let req = s
            .client
            .post(format!("{}/api/v2/query", s.base))
            .bearer_auth("read-key-of-org-a")
            .json(&q);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = stats(json!({
        "site_id": "org-a", "date_range": "7d",
        "metrics": ["visits", "tickets", "revenue", "average_order_value"],
        "dimensions": ["visit:utm_campaign"], "order_by": [["tickets", "desc"], ["visits", "desc"]]
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"],
        json!([
            {"dimensions": ["spring_sale"], "metrics": [1, 2, {"EUR": 160}, {"EUR": 160}]},
            {"dimensions": [""], "metrics": [0, 2, {"USD": 60}, {"USD": 60}]},
            {"dimensions": ["winter"], "metrics": [1, 0, {}, {}]},
        ]),
        "{body}"
    );
    let warning = body["meta"]["warnings"][0].as_str().unwrap_or("");
    assert!(warning.contains("EUR, USD"), "{body}");
    // Each visit's device, browser and system, from its user agent, and
    // its entry page, from the rollup by one of them at a time.
    for (dimension, filters, want) in [
        (
            "visit:device",
            json!([]),
            json!([{"dimensions": ["Desktop"], "metrics": [1, 1]},
                   {"dimensions": ["Mobile"], "metrics": [1, 1]}]),
        ),
        (
            "visit:browser",
            json!([["is", "visit:browser", ["Safari", "Chrome"]]]),
            json!([{"dimensions": ["Chrome"], "metrics": [1, 1]},
                   {"dimensions": ["Safari"], "metrics": [1, 1]}]),
        ),
        (
            "visit:os",
            json!([["is_not", "visit:os", ["Windows"]]]),
            json!([{"dimensions": ["iOS"], "metrics": [1, 1]}]),
        ),
        (
            "visit:entry_page",
            json!([]),
            json!([{"dimensions": ["/"], "metrics": [1, 1]},
                   {"dimensions": ["/e/1"], "metrics": [1, 1]}]),
        ),
    ] {
        let (status, body) = stats(json!({
            "site_id": "org-a", "date_range": "7d", "metrics": ["visits", "visitors"],
            "dimensions": [dimension], "filters": filters, "order_by": [["visits", "desc"]]
        }))
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["results"], want, "{dimension}: {body}");
    }
    // What no rollup knows reads `visits`, a row per visit: the device
    // columns with the country, with the hour, and visitors by exit page.
    for (q, want) in [
        (
            json!({"dimensions": ["visit:os"], "filters": [["is_not", "visit:country", ["ZZ"]]]}),
            json!([{"dimensions": ["Windows"], "metrics": [1, 1]},
                   {"dimensions": ["iOS"], "metrics": [1, 1]}]),
        ),
        (
            json!({"dimensions": ["visit:exit_page"], "filters": [["is", "visit:device", ["Mobile"]]]}),
            json!([{"dimensions": ["/e/1"], "metrics": [1, 1]}]),
        ),
    ] {
        let mut q = q;
        q["site_id"] = json!("org-a");
        q["date_range"] = json!("7d");
        q["metrics"] = json!(["visits", "visitors"]);
        let (status, body) = stats(q.clone()).await;
        assert_eq!(status, 200, "{q}: {body}");
        assert_eq!(body["results"], want, "{q}: {body}");
    }
    let (status, body) = stats(json!({
        "site_id": "org-a", "date_range": "7d", "metrics": ["visits"],
        "dimensions": ["visit:device", "time:hour"]
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 2, "{body}");
    // Every day of the range is named, those without visits too.
    let (status, body) = stats(json!({
        "site_id": "org-a", "date_range": "7d", "metrics": ["visits"],
        "dimensions": ["time:day"], "include": {"time_labels": true}
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    let labels = body["meta"]["time_labels"].as_array().unwrap();
    assert_eq!(labels.len(), 7, "{body}");
    let days = body["results"].as_array().unwrap();
    assert!(!days.is_empty(), "{body}");
    assert!(
        days.iter().all(|r| labels.contains(&r["dimensions"][0])),
        "{body}"
    );
    // By currency, no warning; a dimension the sales do not have is refused.
    let (status, body) = stats(json!({
        "site_id": "org-a", "date_range": "7d", "metrics": ["revenue", "orders"],
        "dimensions": ["currency"], "filters": [["is", "visit:channel", ["email"]]]
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"],
        json!([{"dimensions": ["EUR"], "metrics": [{"EUR": 160}, 1]}])
    );
    assert_eq!(body["meta"]["warnings"], json!([]));
    let (status, body) = stats(json!({
        "site_id": "org-a", "date_range": "7d", "metrics": ["revenue"], "dimensions": ["visit:country"]
    }))
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("visit:country"),
        "{body}"
    );
    // Hostile queries: a 400 naming the field, and nothing injected.
    for (bad, field) in [
        (
            json!({"filters": [["is", "visit:source", ["x".repeat(10_000)]]]}),
            "filters",
        ),
        (
            json!({"filters": [["sql", "visit:source", ["1"]]]}),
            "filters",
        ),
        (
            json!({"filters": [["is", "visit:source') OR 1=1 --", ["x"]]]}),
            "filters",
        ),
        (
            json!({"date_range": ["2016-01-01", "2026-01-01"]}),
            "date_range",
        ),
        (
            json!({"dimensions": (0..100).map(|i| format!("visit:d{i}")).collect::<Vec<_>>()}),
            "dimensions",
        ),
        (json!({"metrics": ["visits); DROP TABLE x; --"]}), "metrics"),
    ] {
        let mut q = json!({"site_id": "org-a", "date_range": "7d", "metrics": ["visits"]});
        for (k, v) in bad.as_object().unwrap() {
            q[k] = v.clone();
        }
        let (status, body) = stats(q).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"].as_str().unwrap().starts_with(field),
            "{field}: {body}"
        );
    }
    // Answered from the aggregates, never the raw tables: by origin, day
    // and country from `visits_daily`; by one page or device column from
    // `visit_facets_daily`; otherwise from `visits`, a row per visit; sales
    // from `attribution_daily`; pages and event names from `pages_daily`.
    for (q, reads) in [
        (
            json!({"metrics": ["visits", "bounce_rate", "tickets", "revenue"],
                   "dimensions": ["visit:source", "time:day"],
                   "filters": [["contains", "visit:utm_campaign", ["sale"]]]}),
            vec!["attribution_daily", "visits_daily"],
        ),
        (
            json!({"metrics": ["visitors", "visits"], "dimensions": ["visit:exit_page"],
                   "filters": [["is_not", "visit:country", ["DE"]]]}),
            vec!["visits"],
        ),
        (
            json!({"metrics": ["visitors", "visits", "bounce_rate"], "dimensions": ["visit:entry_page"]}),
            vec!["visit_facets_daily"],
        ),
        (
            json!({"metrics": ["visits", "visit_duration"], "dimensions": ["visit:browser", "time:week"],
                   "filters": [["contains", "visit:browser", ["Fire"]], ["is_not", "visit:channel", ["direct"]]]}),
            vec!["visit_facets_daily"],
        ),
        (
            json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page", "time:day"],
                   "filters": [["is_not", "visit:channel", ["direct"]]]}),
            vec!["pages_daily"],
        ),
        (
            json!({"metrics": ["events"], "dimensions": ["event:name"]}),
            vec!["pages_daily"],
        ),
        // A conversion's divisor: the visits, by channel.
        (
            json!({"metrics": ["group_conversion_rate"], "dimensions": ["visit:channel"],
                   "filters": [["is", "event:goal", ["purchase"]]]}),
            vec!["pages_daily", "visits_daily"],
        ),
    ] {
        let mut q = q;
        q["site_id"] = json!("org-a");
        q["date_range"] = json!("7d");
        let plan =
            bilten_analytics::stats::plan(&q, Some("org-a"), Utc::now().date_naive()).unwrap();
        let (status, body) = s
            .admin_query_with(&format!("EXPLAIN {}", plan.sql), &plan.params)
            .await;
        assert_eq!(status, 200, "{body}");
        let mut read: Vec<String> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["explain"].as_str())
            .filter(|l| l.contains("ReadFrom"))
            .map(|l| {
                let name = l.rsplit(['(', '.']).next().unwrap().trim_end_matches(')');
                // A rollup's projection (0029) is that rollup's.
                match name {
                    "pages_by_value" => "pages_daily",
                    "facets_by_value" => "visit_facets_daily",
                    table => table,
                }
                .to_string()
            })
            .collect();
        read.sort();
        assert_eq!(read, reads, "{q}: {}", plan.sql);
    }
    s.stop().await.unwrap();
}

// What an attack review of the Stats API, visits and attribution found,
// held as promises.

/// POST /api/v2/query with `key`: the response.
async fn stats_request(s: &TestServer, key: &str, q: &Value) -> reqwest::Response {
    s.client
        .post(format!("{}/api/v2/query", s.base))
        .bearer_auth(key)
        .json(q)
        .send()
        .await
        .unwrap()
}

/// POST /api/v2/query with `key`: its status and body.
async fn stats_query(s: &TestServer, key: &str, q: Value) -> (u16, Value) {
    let r = stats_request(s, key, &q).await;
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `price` is the price of one ticket (every other aggregate sums
/// `price * quantity`): the Stats API's revenue must agree with them.
#[tokio::test]
async fn stats_revenue_counts_every_ticket_of_a_sale() {
    let s = TestServer::start(|c| c.read_keys = vec!["read-key-of-org-r@org-r".to_string().into()])
        .await;
    let (status, body) = s
        .post_json(
            "/v1/ticket-sales",
            &json!([{"organizer_id": "org-r", "event_id": "concert-1", "user_id": "u", "quantity": 2,
                     "price": "80.00", "currency": "EUR"}]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    s.flush().await;
    let daily = s
        .query(
            "SELECT toString(sumMap(revenue_by_currency)['EUR']) AS eur FROM bilten_analytics.metrics_daily \
             WHERE organizer_id = 'org-r'",
        )
        .await;
    assert_eq!(daily[0]["eur"], "160", "metrics_daily: {daily:?}");
    let (status, body) = stats_query(
        &s,
        "read-key-of-org-r",
        json!({"site_id": "org-r", "date_range": "7d", "metrics": ["tickets", "orders", "revenue", "average_order_value"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"][0]["metrics"],
        json!([2, 1, {"EUR": 160}, {"EUR": 160}]),
        "the Stats API disagrees with metrics_daily (160 EUR): {body}"
    );
    s.stop().await.unwrap();
}

/// A batch whose insert succeeded but whose answer was lost is retried
/// under the same token: `ticket_sales` keeps it once, and so must the
/// aggregates the Stats API reads (`visits`, `attribution_daily`).
#[tokio::test]
async fn a_retried_batch_is_counted_once_in_visits_and_attribution() {
    let s = TestServer::start(|c| {
        c.read_keys = vec!["read-key-of-org-d@org-d".to_string().into()];
        c.batch.retry_initial_backoff = std::time::Duration::from_millis(20);
        c.batch.retry_max_backoff = std::time::Duration::from_millis(100);
    })
    .await;
    // Every first insert's answer is lost: each batch is sent twice.
    fail::cfg("storage::lost_ack", "2*return").unwrap();
    let (status, body) = s
        .post_json(
            "/v1/page-views",
            &json!([{"organizer_id": "org-d", "session_id": "tab", "url": "https://t.example/?utm_campaign=c",
                     "referrer": "https://www.google.com/"}]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = s
        .post_json(
            "/v1/ticket-sales",
            &json!([{"organizer_id": "org-d", "event_id": "e", "user_id": "u", "quantity": 1,
                     "price": "10.00", "currency": "EUR"}]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    s.flush().await;
    fail::remove("storage::lost_ack");
    assert_eq!(s.count("page_views").await, 1);
    assert_eq!(s.count("ticket_sales").await, 1);
    let (status, body) = stats_query(
        &s,
        "read-key-of-org-d",
        json!({"site_id": "org-d", "date_range": "7d", "metrics": ["pageviews", "visits", "orders", "tickets"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["metrics"], json!([1, 1, 1, 1]), "{body}");
    s.stop().await.unwrap();
}

/// A sale credited to a campaign whose visit started before the range: the
/// FULL OUTER JOIN's row from the sales side alone must keep its campaign,
/// not take the empty default of the visits' side.
#[tokio::test]
async fn a_campaign_with_sales_but_no_visit_in_range_keeps_its_name() {
    let s = TestServer::start(|c| c.read_keys = vec!["read-key-of-org-j@org-j".to_string().into()])
        .await;
    let now = Utc::now();
    let (status, body) = s
        .post_json(
            "/v1/page-views",
            &json!([
                // Three days ago, from a campaign, signed in.
                {"organizer_id": "org-j", "session_id": "old-tab", "user_id": "buyer",
                 "timestamp": (now - Duration::days(3)).timestamp_millis(),
                 "url": "https://t.example/?utm_source=news&utm_medium=email&utm_campaign=autumn"},
                // Today, a direct visit of someone else.
                {"organizer_id": "org-j", "session_id": "other-tab",
                 "timestamp": (now - Duration::minutes(5)).timestamp_millis(), "url": "https://t.example/"},
            ]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    s.flush().await;
    let (status, body) = s
        .post_json(
            "/v1/ticket-sales",
            &json!([{"organizer_id": "org-j", "event_id": "e", "user_id": "buyer", "quantity": 1,
                     "price": "10.00", "currency": "EUR", "timestamp": (now - Duration::minutes(1)).timestamp_millis()}]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    s.flush().await;
    let today = (now - Duration::minutes(1)).date_naive().to_string();
    let (status, body) = stats_query(
        &s,
        "read-key-of-org-j",
        json!({"site_id": "org-j", "date_range": [today, today], "metrics": ["visits", "orders"],
               "dimensions": ["visit:utm_campaign"], "order_by": [["visits", "desc"]]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"],
        json!([
            {"dimensions": [""], "metrics": [1, 0]},
            {"dimensions": ["autumn"], "metrics": [0, 1]},
        ]),
        "{body}"
    );
    s.stop().await.unwrap();
}

/// The dashboard's sources and campaigns panels plan their queries with
/// `stats::plan_for` and `expect` it to succeed: a date the page's filter
/// takes but the planner does not (a year past 9999) must be a refusal, not
/// a panic that drops the connection.
#[tokio::test]
async fn a_dashboard_date_past_year_9999_is_refused_not_a_panic() {
    let s = TestServer::start(|c| {
        c.read_keys = vec!["read-key-of-org-p@org-p".to_string().into()];
    })
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .post(format!("{}/dashboard/login", s.base))
        .form(&[("token", "read-key-of-org-p")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let r = client
        .get(format!(
            "{}/dashboard?from=%2B10000-01-01&to=%2B10000-01-02",
            s.base
        ))
        .header("cookie", &cookie)
        .send()
        .await;
    let status = r.map(|r| r.status().as_u16()).map_err(|e| e.to_string());
    assert!(
        matches!(status, Ok(400..=499)),
        "a date past 9999 on the dashboard: {status:?}"
    );
    s.stop().await.unwrap();
}

/// A flood of made-up users (one organizer's public key is enough) fills
/// `visits.max_open`; the buyers seen longest ago make room, so a real
/// buyer's touch is still kept and their sale credited. Here
/// `max_open = 3`.
#[tokio::test]
async fn made_up_users_do_not_switch_off_attribution_for_everyone() {
    let s = TestServer::start(|c| {
        c.visits.max_open = 3;
    })
    .await;
    // Another organizer's traffic: made-up users, each from a campaign.
    let flood: Vec<Value> = (0..3)
        .map(|i| {
            json!({"organizer_id": "org-flood", "session_id": format!("f{i}"), "user_id": format!("fake-{i}"),
                   "url": "https://flood.example/?utm_source=x&utm_campaign=flood"})
        })
        .collect();
    let (status, body) = s.post_json("/v1/page-views", &json!(flood)).await;
    assert_eq!(status, 202, "{body}");
    // Sweeping forgets the visits after 30 minutes: only the touches stay.
    // A real buyer of org-a comes from a campaign, and buys.
    let (status, body) = s
        .post_json(
            "/v1/page-views",
            &json!([{"organizer_id": "org-a", "session_id": "tab", "user_id": "buyer",
                     "url": "https://bilten.example/?utm_source=news&utm_medium=email&utm_campaign=spring"}]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let sale = last_touch_of_a_sale(&s).await;
    assert_eq!(sale, [json!({"l": "spring", "c": "email"})]);
    s.stop().await.unwrap();
}

/// A sale by `buyer` of org-a, sent now: the last touch it was credited to.
async fn last_touch_of_a_sale(s: &TestServer) -> Vec<Value> {
    let (status, body) = s
        .post_json(
            "/v1/ticket-sales",
            &json!([{"organizer_id": "org-a", "event_id": "e", "user_id": "buyer", "quantity": 1,
                     "price": "10.00", "currency": "EUR"}]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    s.flush().await;
    s.query("SELECT last_utm_campaign AS l, last_channel AS c FROM bilten_analytics.ticket_sales")
        .await
}

/// `Visits::warm` reads touches back a day at a time, each read within
/// `storage.query_limits.max_result_bytes`: many long campaign values on
/// one day cost at most that day's touches, never every touch. Here the
/// limit is 64 KB.
#[tokio::test]
async fn many_long_touches_do_not_make_a_restart_forget_all_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.storage.query_limits.max_result_bytes = 64 << 10;
    let s = TestServer::start_with(cfg.clone()).await;
    // Yesterday: more touches than one read may return.
    let long = "z".repeat(256);
    let yesterday = (Utc::now() - Duration::days(1)).timestamp_millis();
    let mut views: Vec<Value> = (0..300)
        .map(|i| {
            json!({"organizer_id": "org-x", "session_id": format!("s{i}"), "user_id": format!("u{i}"),
                   "timestamp": yesterday,
                   "url": format!("https://x.example/?utm_source={long}&utm_medium={long}&utm_campaign={long}&utm_content={long}&utm_term={long}")})
        })
        .collect();
    views.push(json!({"organizer_id": "org-a", "session_id": "tab", "user_id": "buyer",
                      "url": "https://bilten.example/?utm_source=ig&utm_medium=social&utm_campaign=encore"}));
    let (status, body) = s.post_json("/v1/page-views", &json!(views)).await;
    assert_eq!(status, 202, "{body}");
    s.flush().await;
    s.stop().await.unwrap();

    let s = TestServer::start_with(cfg).await;
    let sale = last_touch_of_a_sale(&s).await;
    assert_eq!(sale, [json!({"l": "encore", "c": "social"})]);
    s.stop().await.unwrap();
}

/// A view is counted when it starts; its visible time comes after, as
/// engagements (the tracker sends one each time the page is hidden or
/// left). They give the view its time and the visit its length, and count
/// as nothing else: no second view, no visit of their own.
#[tokio::test]
async fn engagements_give_views_their_time_and_count_nothing_twice() {
    let s = TestServer::start(|c| c.read_keys = vec!["read-key-of-org-g@org-g".to_string().into()])
        .await;
    let t0 = chrono::Utc::now().timestamp_millis() - 60_000;
    let at = |ms: i64| {
        uuid::Timestamp::from_unix(
            uuid::NoContext,
            (ms / 1000) as u64,
            (ms % 1000) as u32 * 1_000_000,
        )
    };
    let view = uuid::Uuid::new_v7(at(t0));
    let (status, body) = s
        .post_json(
            "/v1/page-views",
            &json!({"id": view, "organizer_id": "org-g", "session_id": "tab-1", "timestamp": t0,
                    "url": "https://g.example/?utm_campaign=autumn"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let engagement = |ms: u64, after: i64| {
        json!({"organizer_id": "org-g", "session_id": "tab-1", "view_id": view,
               "duration_ms": ms, "timestamp": t0 + after})
    };
    let (status, body) = s
        .post_json(
            "/v1/engagements",
            &json!([engagement(4_000, 4_000), engagement(1_500, 5_500)]),
        )
        .await;
    assert_eq!((status, &body["accepted"]), (202, &json!(2)), "{body}");
    // A bad one is refused naming its field; its valid neighbour is kept.
    let mut last = engagement(500, 6_000);
    last["id"] = json!(uuid::Uuid::now_v7());
    let (status, body) = s
        .post_json(
            "/v1/engagements",
            &json!([{"organizer_id": "org-g", "view_id": "not-a-uuid", "duration_ms": 5},
                    last]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    assert_eq!(body["errors"][0]["field"], "view_id", "{body}");
    // Sent again (a client retrying after a lost answer): a resend,
    // dropped, and the view's time counts it once.
    let (status, body) = s.post_json("/v1/engagements", &json!([last])).await;
    assert_eq!(
        (status, &body["accepted"], &body["duplicates"]),
        (202, &json!(0), &json!(1)),
        "{body}"
    );
    let (status, body) = s
        .post_json(
            "/v1/engagements",
            &json!({"organizer_id": "org-g", "view_id": view, "duration_ms": 86_400_001}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "duration_ms", "{body}");
    // One whose view the server never saw (a bot's, dropped): stored with
    // no visit, and no visit made of it.
    let (status, body) = s
        .post_json(
            "/v1/collect/engagements",
            &json!({"organizer_id": "org-g", "session_id": "bot-tab", "duration_ms": 9_000,
                    "view_id": uuid::Uuid::now_v7()}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    s.flush().await;

    let time = s
        .query(&format!(
            "SELECT toUInt64(duration_ms) AS ms FROM bilten_analytics.page_view_time \
             WHERE view_id = toUUID('{view}')"
        ))
        .await;
    assert_eq!(as_u64(&time[0]["ms"]), 6_000, "{time:?}");
    let stray = s
        .query(
            "SELECT toString(visit_id) AS visit FROM bilten_analytics.page_engagements \
             WHERE duration_ms = 9000",
        )
        .await;
    assert_eq!(
        stray,
        [json!({"visit": "00000000-0000-0000-0000-000000000000"})]
    );
    let realtime = s
        .query(
            "SELECT toUInt32(sum(events)) AS views FROM bilten_analytics.realtime_dashboard \
             WHERE organizer_id = 'org-g' AND event_type = 'page_view'",
        )
        .await;
    assert_eq!(realtime[0]["views"], 1, "{realtime:?}");
    let (status, body) = stats_query(
        &s,
        "read-key-of-org-g",
        json!({"site_id": "org-g", "date_range": "7d",
               "metrics": ["visits", "pageviews", "visit_duration"],
               "dimensions": ["visit:utm_campaign"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"],
        json!([{"dimensions": ["autumn"], "metrics": [1, 1, 6]}]),
        "one visit of one view, 6 s long (to the end of its last engagement): {body}"
    );
    let engaged = s
        .query(
            "SELECT toUInt64(sum(sign * engaged_ms)) AS ms FROM bilten_analytics.visits \
             WHERE organizer_id = 'org-g'",
        )
        .await;
    assert_eq!(as_u64(&engaged[0]["ms"]), 6_000, "{engaged:?}");
    s.stop().await.unwrap();
}

/// The example queries of Plausible's Stats API v2 reference, in their
/// shapes (their site's dimensions swapped for ours where we have them):
/// each is answered with what was sent, or refused with a 400 that names
/// what is not answered here.
#[tokio::test]
async fn plausibles_documented_queries_are_answered_or_refused_by_name() {
    let s = TestServer::start(|c| c.read_keys = vec!["read-key-of-org-p@org-p".to_string().into()])
        .await;
    let t0 = Utc::now() - Duration::minutes(4);
    let at = |minutes: i64| (t0 + Duration::minutes(minutes)).timestamp_millis();
    let view = |tab: &str, minutes: i64, url: &str, referrer: &str, agent: &str| {
        json!({"organizer_id": "org-p", "session_id": tab, "timestamp": at(minutes),
               "url": url, "referrer": referrer, "user_agent": agent})
    };
    let views = json!([
        view(
            "tab-a",
            0,
            "https://x.example/docs/intro?utm_source=newsletter&utm_medium=email",
            "",
            WINDOWS_CHROME
        ),
        view(
            "tab-a",
            2,
            "https://x.example/pricing",
            "https://x.example/docs/intro",
            WINDOWS_CHROME
        ),
        view(
            "tab-b",
            1,
            "https://x.example/Blog/post-1",
            "https://www.google.com/",
            IPHONE
        ),
    ]);
    let (status, body) = s.post_json("/v1/page-views", &views).await;
    assert_eq!((status, &body["accepted"]), (202, &json!(3)), "{body}");
    let (status, body) = s
        .post_json(
            "/v1/events",
            &json!([{"organizer_id": "org-p", "session_id": "tab-a", "event_type": "Signup",
                     "timestamp": at(3)}]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    s.flush().await;
    let range = json!([
        (t0 - Duration::days(1)).date_naive().to_string(),
        Utc::now().date_naive().to_string()
    ]);
    let ask = |q: Value| {
        let mut q = q;
        q["site_id"] = json!("org-p");
        if q.get("date_range").is_none() {
            q["date_range"] = range.clone();
        }
        stats_query(&s, "read-key-of-org-p", q)
    };
    // "Simple aggregate query": page views and the sign-up are events.
    let (status, body) = ask(json!({"metrics": ["visitors", "events"], "date_range": "7d"})).await;
    assert_eq!(
        (status, &body["results"]),
        (200, &json!([{"dimensions": [], "metrics": [2, 4]}])),
        "{body}"
    );
    // "UTM medium, source analysis", and its "Pagination" with total_rows.
    let utm = json!({"metrics": ["visitors", "events", "pageviews"],
                     "dimensions": ["visit:utm_medium", "visit:utm_source"]});
    let (status, body) = ask(utm.clone()).await;
    assert_eq!(
        (status, &body["results"]),
        (
            200,
            &json!([{"dimensions": ["", ""], "metrics": [1, 1, 1]},
                    {"dimensions": ["email", "newsletter"], "metrics": [1, 3, 2]}])
        ),
        "{body}"
    );
    let mut paged = utm;
    paged["include"] = json!({"total_rows": true});
    paged["pagination"] = json!({"limit": 1, "offset": 1});
    let (status, body) = ask(paged).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(
        body["results"][0]["dimensions"],
        json!(["email", "newsletter"])
    );
    assert_eq!(body["meta"]["total_rows"], 2, "{body}");
    // "Case insensitive filtering" on the page.
    let (status, body) = ask(json!({"metrics": ["visitors"],
        "filters": [["contains", "event:page", ["blog"], {"case_sensitive": false}]]}))
    .await;
    assert_eq!(
        (status, &body["results"]),
        (200, &json!([{"dimensions": [], "metrics": [1]}])),
        "{body}"
    );
    let (status, body) = ask(json!({"metrics": ["visitors"],
        "filters": [["contains", "event:page", ["blog"]]]}))
    .await;
    assert_eq!(
        (status, &body["results"]),
        (200, &json!([{"dimensions": [], "metrics": [0]}])),
        "{body}"
    );
    // "Timeseries query" filtered by operating system.
    let (status, body) = ask(
        json!({"metrics": ["visitors", "events"], "dimensions": ["time:day"],
        "filters": [["is", "visit:os", ["iOS", "Mac"]]]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let rows = body["results"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{body}");
    assert_eq!(rows[0]["metrics"], json!([1, 1]), "{body}");
    // "Timeseries query hourly, with labels": every hour of the day.
    let (status, body) = ask(json!({"metrics": ["visitors"], "date_range": "day",
        "dimensions": ["time:hour"], "include": {"time_labels": true}}))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["meta"]["time_labels"].as_array().unwrap().len(),
        24,
        "{body}"
    );
    // A goal's conversion rate: one of the two visitors signed up.
    let (status, body) = ask(json!({"metrics": ["visitors", "conversion_rate"],
        "filters": [["is", "event:goal", ["Signup"]]]}))
    .await;
    assert_eq!(
        (status, &body["results"]),
        (200, &json!([{"dimensions": [], "metrics": [1, 50]}])),
        "{body}"
    );
    // "Including imported data": there is none here to include.
    let (status, body) = ask(json!({"metrics": ["visitors"], "dimensions": ["visit:source"],
                                    "include": {"imports": true}, "order_by": [["visit:source", "asc"]]}))
    .await;
    assert_eq!(
        (status, &body["results"]),
        (
            200,
            &json!([{"dimensions": ["Google"], "metrics": [1]}, {"dimensions": ["newsletter"], "metrics": [1]}])
        ),
        "{body}"
    );
    // Asked and not answered here: a 400 naming the part.
    for (q, named) in [
        (
            json!({"metrics": ["total_revenue"], "dimensions": ["event:goal"]}),
            "total_revenue",
        ),
        (
            json!({"metrics": ["visitors"], "dimensions": ["visit:country_name", "visit:city_name"]}),
            "visit:country_name",
        ),
        (
            json!({"metrics": ["visitors"], "filters": [["is", "event:goal", ["Signup"]],
                                                     ["has_done", ["is", "event:page", ["/pricing"]]]]}),
            "has_done",
        ),
        (
            json!({"metrics": ["visitors"], "filters": [["is", "segment", [2]]]}),
            "segment",
        ),
        (
            json!({"metrics": ["visitors"], "filters": [["contains", "event:page", ["/docs"]],
                                                     ["is", "visit:utm_campaign", ["Referral"]]]}),
            "visit:utm_campaign",
        ),
    ] {
        let (status, body) = ask(q.clone()).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(named),
            "{q}: {body}"
        );
    }
    s.stop().await.unwrap();
}

/// The Stats API takes the dashboard's keys: guessing them there costs
/// what it costs at sign-in. Past ten wrong keys from one address, no key
/// from it is judged for a while, a right one included (a 429 with
/// `Retry-After`), so a right guess cannot be told from a wrong one.
#[tokio::test]
async fn guessing_stats_api_keys_is_refused_past_the_addresss_budget() {
    let s = TestServer::start(|c| c.read_keys = vec!["read-key-of-org-k@org-k".to_string().into()])
        .await;
    let q = json!({"site_id": "org-k", "date_range": "7d", "metrics": ["visits"]});
    let (status, body) = stats_query(&s, "read-key-of-org-k", q.clone()).await;
    assert_eq!(status, 200, "{body}");
    for i in 0..10 {
        let (status, body) = stats_query(&s, &format!("guess-{i}"), q.clone()).await;
        assert_eq!(status, 401, "guess {i}: {body}");
    }
    for key in ["guess-10", "read-key-of-org-k"] {
        let r = stats_request(&s, key, &q).await;
        assert_eq!(r.status().as_u16(), 429, "{key}");
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=12).contains(&wait), "{wait}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("too many wrong keys"),
            "{body}"
        );
    }
    s.stop().await.unwrap();
}

/// A visit written before its first page view (an event came first) takes
/// that page's channel later: the Stats API shows its pages and events
/// under that channel alone, and its conversion counts it once.
#[tokio::test]
async fn a_visit_whose_channel_comes_later_counts_under_it_alone() {
    let s = TestServer::start(|c| {
        c.read_keys = vec!["read-key-of-org-x@org-x".to_string().into()];
    })
    .await;
    let t0 = Utc::now() - Duration::minutes(5);
    let (status, body) = s
        .post_json(
            "/v1/events",
            &json!([{"organizer_id": "org-x", "session_id": "tab-x", "event_type": "signup",
                     "timestamp": t0.timestamp_millis()}]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    // Written with no channel yet.
    s.flush().await;
    let (status, body) = s
        .post_json(
            "/v1/page-views",
            &json!([{"organizer_id": "org-x", "session_id": "tab-x",
                     "timestamp": (t0 + Duration::seconds(30)).timestamp_millis(),
                     "url": "https://bilten.example/e/1",
                     "referrer": "https://www.google.com/search?q=concert"}]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    s.flush().await;
    let range = json!([
        (Utc::now() - Duration::days(1)).date_naive().to_string(),
        Utc::now().date_naive().to_string()
    ]);
    let (status, body) = stats_query(
        &s,
        "read-key-of-org-x",
        json!({"site_id": "org-x", "date_range": range,
               "metrics": ["visits", "events", "conversion_rate"],
               "dimensions": ["event:name", "visit:channel"],
               "order_by": [["event:name", "asc"]]}),
    )
    .await;
    assert_eq!(
        (status, body["results"].clone()),
        (
            200,
            json!([{"dimensions": ["pageview", "search"], "metrics": [1, 1, 100]},
                   {"dimensions": ["signup", "search"], "metrics": [1, 1, 100]}])
        ),
        "{body}"
    );
    s.stop().await.unwrap();
}

/// Visitors by exit page count each visitor under the page their visit
/// ended on, never one it left from: while visits go on (read from each
/// one's latest row) and once they are closed (from the rollup, which
/// counts a visit's closing row alone), with the same answer.
#[tokio::test]
async fn visitors_by_exit_page_count_each_visit_under_its_last_page() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.read_keys = vec!["read-key-of-org-e@org-e".to_string().into()];
    let s = TestServer::start_with(cfg.clone()).await;
    let t0 = Utc::now() - Duration::minutes(10);
    let view = |tab: &str, path: &str, minute: i64| {
        json!({"organizer_id": "org-e", "session_id": tab,
               "timestamp": (t0 + Duration::minutes(minute)).timestamp_millis(),
               "url": format!("https://bilten.example{path}")})
    };
    // x leaves /a for /b, each page written apart; y ends on /a.
    for batch in [
        json!([view("x", "/a", 0), view("y", "/a", 0)]),
        json!([view("x", "/b", 1)]),
    ] {
        let (status, body) = s.post_json("/v1/page-views", &batch).await;
        assert_eq!(status, 202, "{body}");
        s.flush().await;
    }
    let q = json!({"site_id": "org-e", "date_range": "7d", "metrics": ["visitors", "visits"],
                   "dimensions": ["visit:exit_page"], "order_by": [["visit:exit_page", "asc"]]});
    let want = json!([{"dimensions": ["/a"], "metrics": [1, 1]},
                      {"dimensions": ["/b"], "metrics": [1, 1]}]);
    let (status, body) = stats_query(&s, "read-key-of-org-e", q.clone()).await;
    assert_eq!((status, &body["results"]), (200, &want), "{body}");
    // A stop closes every visit: the rollup answers alone, the same.
    s.stop().await.unwrap();
    let s = TestServer::start_with(cfg).await;
    let open = s
        .query("SELECT count() AS n FROM bilten_analytics.visits FINAL WHERE closed = 0")
        .await;
    assert_eq!(open, [json!({"n": 0})]);
    let rolled = s
        .query(
            "SELECT value, uniqCombinedMerge(12)(visitors) AS visitors \
             FROM bilten_analytics.visit_facets_daily WHERE facet = 'exit_closed' \
             GROUP BY value ORDER BY value",
        )
        .await;
    assert_eq!(
        rolled,
        [
            json!({"value": "/a", "visitors": 1}),
            json!({"value": "/b", "visitors": 1})
        ]
    );
    let (status, body) = stats_query(&s, "read-key-of-org-e", q).await;
    assert_eq!((status, &body["results"]), (200, &want), "{body}");
    s.stop().await.unwrap();
}

/// Revenue converted with the exchange rates an admin loaded: one amount in
/// the currency asked, or null, with the days and currencies that have no
/// rate named, never a guess.
#[tokio::test]
async fn revenue_is_converted_with_loaded_rates_and_a_missing_rate_is_named() {
    let s = TestServer::start(|c| {
        c.read_keys = vec!["read-key-of-org-r@org-r".to_string().into()];
    })
    .await;
    let day = |d: i64| (Utc::now() - Duration::days(d)).date_naive().to_string();
    let at = |d: i64| (Utc::now() - Duration::days(d)).timestamp_millis();
    let sale = |d: i64, price: &str, currency: &str| {
        json!({"organizer_id": "org-r", "event_id": "concert-1", "user_id": "u", "quantity": 2,
               "price": price, "currency": currency, "timestamp": at(d)})
    };
    let (status, body) = s
        .post_json(
            "/v1/ticket-sales",
            &json!([
                sale(2, "50.00", "EUR"),
                sale(1, "10.00", "USD"),
                sale(1, "20.00", "GBP"),
                // Free tickets need no rate.
                sale(1, "0.00", "JPY")
            ]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    s.flush().await;
    let put = |base: &str, csv: String| {
        s.client
            .put(format!("{}/admin/exchange-rates?base={base}", s.base))
            .bearer_auth(common::ADMIN)
            .body(csv)
            .send()
    };
    // A bad line refuses the whole load, naming the line and the field.
    let bad = put(
        "EUR",
        format!(
            "date,currency,rate\n{},USD,0.9\n{},GBP,-1\n",
            day(1),
            day(1)
        ),
    )
    .await
    .unwrap();
    let (status, body) = common::status_and_body(bad).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string()
            .contains("line 3: rate: a positive decimal"),
        "{body}"
    );
    // Only USD's rate: GBP's sale cannot be converted.
    let ok = put("EUR", format!("date,currency,rate\n{},usd,0.9\n", day(1)))
        .await
        .unwrap();
    let (status, body) = common::status_and_body(ok).await;
    assert_eq!((status, body["loaded"].clone()), (200, json!(1)), "{body}");
    let ask = |q: Value| {
        let mut q = q;
        q["site_id"] = json!("org-r");
        q["date_range"] = json!([day(7), day(0)]);
        q["include"] = json!({"converted_to": "EUR"});
        stats_query(&s, "read-key-of-org-r", q)
    };
    let (status, body) = ask(
        json!({"metrics": ["revenue", "orders"], "dimensions": ["currency"],
                                    "order_by": [["currency", "asc"]]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // 100 EUR as it is, 20 USD at 0.9; GBP has no rate: null, and named.
    assert_eq!(
        body["results"],
        json!([{"dimensions": ["EUR"], "metrics": [{"EUR": 100}, 1]},
               {"dimensions": ["GBP"], "metrics": [null, 1]},
               {"dimensions": ["JPY"], "metrics": [{"EUR": 0}, 1]},
               {"dimensions": ["USD"], "metrics": [{"EUR": 18}, 1]}]),
        "{body}"
    );
    assert_eq!(body["meta"]["converted_to"], "EUR", "{body}");
    assert_eq!(
        body["meta"]["missing_rates"],
        json!([{"date": day(1), "currency": "GBP"}]),
        "{body}"
    );
    assert!(
        body["meta"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("GBP on"),
        "{body}"
    );
    // The total needs every rate: null until GBP's is loaded.
    let (_, body) = ask(json!({"metrics": ["revenue", "average_order_value"]})).await;
    assert_eq!(body["results"][0]["metrics"], json!([null, null]), "{body}");
    let ok = put("EUR", format!("{},GBP,1.15\n", day(1))).await.unwrap();
    assert_eq!(ok.status(), 200);
    let (_, body) = ask(json!({"metrics": ["revenue", "average_order_value"]})).await;
    assert_eq!(
        body["results"][0]["metrics"],
        json!([{"EUR": 164}, {"EUR": 41}]),
        "100 + 18 + 46, over four orders (one of free tickets): {body}"
    );
    assert!(body["meta"].get("missing_rates").is_none(), "{body}");
    // Joined with the visits, a group with no sale has no revenue ({}),
    // never the null of a missing rate.
    let (status, body) = s
        .post_json(
            "/v1/page-views",
            &json!([{"organizer_id": "org-r", "session_id": "tab-s", "url": "https://bilten.example/",
                     "referrer": "https://www.google.com/search?q=x"}]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    s.flush().await;
    let (_, body) =
        ask(json!({"metrics": ["visits", "revenue"], "dimensions": ["visit:channel"]})).await;
    let rows = body["results"].as_array().unwrap();
    assert!(
        rows.contains(&json!({"dimensions": ["search"], "metrics": [1, {}]})),
        "{body}"
    );
    assert!(rows.iter().all(|r| !r["metrics"][1].is_null()), "{body}");
    // The rates as loaded, and a refused currency.
    let (status, listed) = s.admin_get("/admin/exchange-rates?base=EUR").await;
    assert_eq!(status, 200, "{listed}");
    let rates = |listed: &Value| -> Vec<(String, String, String)> {
        listed["rates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert!(r["loaded_at"].as_str().is_some_and(|t| t.len() > 10), "{r}");
                ["date", "currency", "rate"]
                    .map(|k| r[k].as_str().unwrap().to_string())
                    .into()
            })
            .collect()
    };
    assert_eq!(
        rates(&listed),
        [
            (day(1), "GBP".to_string(), "1.15".to_string()),
            (day(1), "USD".into(), "0.9".into())
        ],
        "{listed}"
    );
    // A day's rate loaded again replaces it.
    let again = put("EUR", format!("{},USD,0.95\n", day(1))).await.unwrap();
    assert_eq!(again.status(), 200);
    let (_, listed) = s.admin_get("/admin/exchange-rates?base=EUR").await;
    assert_eq!(rates(&listed)[1].2, "0.95", "{listed}");
    let (_, body) = ask(json!({"metrics": ["revenue"]})).await;
    assert_eq!(
        body["results"][0]["metrics"],
        json!([{"EUR": 165}]),
        "100 + 19 + 46: {body}"
    );
    let (status, body) = ask(json!({"metrics": ["visits"]})).await;
    assert_eq!(status, 400, "{body}");
    let mut q = json!({"site_id": "org-r", "metrics": ["revenue"], "date_range": "7d",
                       "include": {"converted_to": "euros"}});
    let (status, body) = stats_query(&s, "read-key-of-org-r", q.take()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string()
            .contains("converted_to: a three-letter currency code"),
        "{body}"
    );
    s.stop().await.unwrap();
}

/// With visits switched off, the Stats API says its visit figures count
/// nothing instead of answering zeros as if there were no traffic.
#[tokio::test]
async fn with_visits_off_the_stats_api_says_so() {
    let s = TestServer::start(|c| c.visits.enabled = false).await;
    let (status, body) = stats_query(
        &s,
        common::ADMIN,
        json!({"site_id": "org-x", "metrics": ["visits"], "date_range": "7d"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["meta"]["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("visits are switched off")),
        "{body}"
    );
    s.stop().await.unwrap();
}
