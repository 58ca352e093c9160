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
    assert_eq!(as_u64(&flushed["rows_stored"]), 3000);
    assert_eq!(s.count("events").await, sent[0]);
    assert_eq!(s.count("page_views").await, sent[1]);
    assert_eq!(s.count("ticket_sales").await, sent[2]);
    assert!(sent.iter().all(|n| *n > 100), "{sent:?}");

    for (view, view_sql, raw_sql) in common::views::pairs() {
        let from_view = s.query(&view_sql).await;
        let from_raw = s.query(&raw_sql).await;
        common::views::assert_same(view, &from_view, &from_raw);
    }

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
