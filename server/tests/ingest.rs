//! End to end through HTTP into the embedded engine: what a client sees.

mod common;

use std::io::Write;

use common::{ADMIN, TestServer};
use serde_json::{Value, json};

async fn post_gzip(s: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(body.to_string().as_bytes()).unwrap();
    let r = s
        .client
        .post(format!("{}{path}", s.base))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    common::status_and_body(r).await
}

fn sale(price: Value) -> Value {
    json!({"event_id":"evt-789","organizer_id":"org-123","user_id":"user-456","quantity":2,"price":price,"currency":"USD"})
}

#[tokio::test]
async fn valid_events_are_stored_even_when_others_in_the_request_are_not() {
    let s = TestServer::start(|_| {}).await;
    let (status, body) = s
        .post_json(
            "/v1/ticket-sales",
            &json!([sale(json!(50.00)), sale(json!(-5)), sale(json!("12.5"))]),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejected"], 1);
    assert_eq!(
        body["errors"],
        json!([{"index":1,"field":"price","reason":"price: must be 0 or more, got -5"}])
    );

    let (status, body) = s
        .post_json(
            "/v1/ticket-sales",
            &json!([sale(json!(1.001)), {"event_id": 5}]),
        )
        .await;
    assert_eq!(status, 400, "none accepted is a 400");
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["errors"][0]["field"], "price");
    assert_eq!(body["errors"][1]["index"], 1);
    assert_eq!(body["errors"][1]["field"], "event_id");

    s.flush().await;
    let rows = s.query("SELECT toString(price) AS p, quantity, currency FROM bilten_analytics.ticket_sales ORDER BY price").await;
    assert_eq!(
        rows,
        vec![
            json!({"p":"12.5","quantity":2,"currency":"USD"}),
            json!({"p":"50","quantity":2,"currency":"USD"})
        ]
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn ndjson_and_gzip_bodies() {
    let s = TestServer::start(|_| {}).await;
    let ndjson = "{\"event_type\":\"click\",\"organizer_id\":\"org-1\"}\n{not json\n\n{\"event_type\":\"click\",\"organizer_id\":\"org-2\"}\n";
    let (status, body) = s
        .post(
            "/v1/events",
            "application/x-ndjson",
            ndjson.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["errors"][0]["index"], 1);
    assert!(
        body["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON at line 2, column 2"),
        "{body}"
    );

    let views = json!([{"url":"/e/1","organizer_id":"org-1","duration_ms":1200},{"url":"/e/2","organizer_id":"org-1"}]);
    let (status, body) = post_gzip(&s, "/v1/page-views", &views).await;
    assert_eq!(status, 202);
    assert_eq!(body["accepted"], 2);

    s.flush().await;
    assert_eq!(s.count("events").await, 2);
    assert_eq!(s.count("page_views").await, 2);
    let rows = s
        .query("SELECT sum(duration_ms) AS d FROM bilten_analytics.page_views")
        .await;
    assert_eq!(common::as_u64(&rows[0]["d"]), 1200);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_wrong_type_and_oversized_bodies_are_clear_4xx() {
    let s = TestServer::start(|c| {
        c.ingest.max_body_bytes = 4096;
        c.ingest.max_events_per_request = 3;
    })
    .await;
    let (status, body) = s
        .post(
            "/v1/events",
            "application/json",
            b"[{\"event_type\": \"x\",\n \"organizer_id\" \"o\"}]".to_vec(),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "malformed JSON at line 2, column 17: expected `:`"
    );

    let (status, body) = s.post_json("/v1/clicks", &json!({})).await;
    assert_eq!(status, 404);
    assert!(
        body["error"].as_str().unwrap().contains("/v1/page-views"),
        "{body}"
    );

    let (status, body) = s.post("/v1/events", "text/plain", b"{}".to_vec()).await;
    assert_eq!(status, 415);
    assert!(
        body["error"].as_str().unwrap().contains("application/json"),
        "{body}"
    );

    let big = json!([{"event_type":"x","organizer_id":"o","properties":{"pad":"x".repeat(5000)}}]);
    let (status, body) = s.post_json("/v1/events", &big).await;
    assert_eq!(status, 413);
    assert_eq!(
        body["error"],
        "the request body is larger than the limit of 4096 bytes"
    );

    // A small gzip body that inflates past the limit is refused the same way.
    let (status, _) = post_gzip(&s, "/v1/events", &big).await;
    assert_eq!(status, 413);

    let four = json!([{"event_type":"x","organizer_id":"o"},{"event_type":"x","organizer_id":"o"},{"event_type":"x","organizer_id":"o"},{"event_type":"x","organizer_id":"o"}]);
    let (status, body) = s.post_json("/v1/events", &four).await;
    assert_eq!(status, 413);
    assert_eq!(
        body["error"],
        "too many events in one request: more than the limit of 3"
    );

    let (status, body) = s.post_json("/v1/events", &json!([])).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "the body holds no events");

    // None of that reached storage, and the server still serves.
    let (status, _) = s
        .post_json("/v1/events", &json!({"event_type":"ok","organizer_id":"o"}))
        .await;
    assert_eq!(status, 202);
    s.flush().await;
    assert_eq!(s.count("events").await, 1);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn ingest_keys_and_admin_token_are_enforced() {
    let s = TestServer::start(|c| c.ingest_keys = vec!["key-a".into(), "key-b".into()]).await;
    let event = json!({"event_type":"x","organizer_id":"o"}).to_string();
    let post = |auth: Option<(&'static str, String)>| {
        let mut req = s
            .client
            .post(format!("{}/v1/events", s.base))
            .header("content-type", "application/json")
            .body(event.clone());
        if let Some((name, value)) = auth {
            req = req.header(name, value);
        }
        req.send()
    };
    let r = post(None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("API key"));
    for (header, value, want) in [
        ("authorization", "Bearer wrong", 401),
        ("authorization", "Bearer key-b", 202),
        ("x-api-key", "key-a", 202),
    ] {
        let status = post(Some((header, value.to_string())))
            .await
            .unwrap()
            .status();
        assert_eq!(status, want, "{header}: {value}");
    }

    let r = s.post_raw("/admin/flush", None).await;
    assert_eq!(r.status(), 401);
    let r = s.post_raw("/admin/flush", Some("key-a")).await;
    assert_eq!(r.status(), 401, "an ingest key is not an admin token");
    let r = s.post_raw("/admin/flush", Some(ADMIN)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.count("events").await, 2);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn admin_routes_are_off_without_a_token() {
    let s = TestServer::start(|c| c.admin_token = None).await;
    let r = s.post_raw("/admin/flush", Some("anything")).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("BILTEN_ADMIN_TOKEN"));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn admin_query_runs_only_read_only_statements() {
    let s = TestServer::start(|_| {}).await;
    let (status, body) = s.admin_query("DROP TABLE bilten_analytics.events").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("only read-only statements"),
        "{body}"
    );
    let (status, _) = s
        .admin_query("INSERT INTO bilten_analytics.events (event_type) VALUES ('x')")
        .await;
    assert_eq!(status, 400);
    let (status, _) = s
        .admin_query("SELECT 1; DROP TABLE bilten_analytics.events")
        .await;
    assert_eq!(status, 400);
    let (status, body) = s.admin_query("SELEC 1").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("failed at position 7"),
        "{body}"
    );
    // The table is still there, and a read works.
    assert_eq!(s.count("events").await, 0);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn rows_flush_on_their_own_after_max_age() {
    let s = TestServer::start(|c| c.batch.max_age = std::time::Duration::from_millis(300)).await;
    let (status, _) = s
        .post_json("/v1/events", &json!({"event_type":"x","organizer_id":"o"}))
        .await;
    assert_eq!(status, 202);
    let mut stored = 0;
    for _ in 0..100 {
        stored = s.count("events").await;
        if stored == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(stored, 1, "not flushed without /admin/flush");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_drains_buffers_and_data_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.batch.max_age = std::time::Duration::from_secs(3600);
    let s = TestServer::start_with(cfg.clone()).await;
    let events: Vec<Value> = (0..25)
        .map(|i| json!({"event_type":"x","organizer_id":"o","user_id":format!("u{i}")}))
        .collect();
    let (status, _) = s.post_json("/v1/events", &Value::Array(events)).await;
    assert_eq!(status, 202);
    s.stop().await.unwrap();

    let s = TestServer::start_with(cfg).await;
    assert_eq!(s.count("events").await, 25);
    let r = s.get_raw("/ready").await;
    assert_eq!(r.status(), 200);
    let rows = s
        .query(&format!(
            "SELECT count() AS n FROM {}.schema_migrations",
            common::system_database()
        ))
        .await;
    assert_eq!(
        common::as_u64(&rows[0]["n"]),
        bilten_analytics::ops::migrations::MIGRATIONS.len() as u64,
        "migrations ran once"
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn liveness_readiness_and_deep_health() {
    let s = TestServer::start(|_| {}).await;
    let r = s.get_raw("/health").await;
    assert_eq!(r.status(), 200);
    let r = s.get_raw("/ready").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ready");
    s.post_json("/v1/events", &json!({"event_type":"x","organizer_id":"o"}))
        .await;
    let r = s
        .client
        .get(format!("{}/admin/health", s.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h: Value = r.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["storage"]["backend"], common::backend_under_test());
    assert_eq!(h["migrations"]["pending"], 0);
    assert_eq!(h["buffers"]["rows_buffered"], 1);
    assert!(
        h["buffers"]["oldest_buffered_row_age_ms"]
            .as_u64()
            .is_some()
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn wait_true_answers_once_storage_has_the_rows() {
    let s = TestServer::start(|c| c.batch.max_age = std::time::Duration::from_secs(3600)).await;
    let events: Vec<Value> = (0..7)
        .map(|i| json!({"event_type":"x","organizer_id":"o","user_id":format!("u{i}")}))
        .collect();
    let (status, body) = s
        .post_json("/v1/events?wait=true", &Value::Array(events))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stored"], true);
    // No flush: the rows are already in the table.
    assert_eq!(s.count("events").await, 7);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_resent_event_id_is_dropped_as_a_duplicate() {
    let s = TestServer::start(|_| {}).await;
    let event = json!({"id":"0191e2a4-5b6c-7d8e-9f00-112233445566","event_type":"purchase","organizer_id":"o"});
    let (status, body) = s.post_json("/v1/events", &event).await;
    assert_eq!(
        (status, body["accepted"].clone(), body["duplicates"].clone()),
        (202, json!(1), json!(0))
    );
    let (status, body) = s.post_json("/v1/events", &json!([event, event])).await;
    assert_eq!(status, 200, "only duplicates: nothing new, nothing wrong");
    assert_eq!(
        (body["accepted"].clone(), body["duplicates"].clone()),
        (json!(0), json!(2))
    );
    s.flush().await;
    assert_eq!(s.count("events").await, 1);
    s.stop().await.unwrap();
}

/// The value of the sample of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn prometheus_metrics_count_requests_events_rejections_and_flushes() {
    let s = TestServer::start(|_| {}).await;
    let events = json!([
        {"event_type":"x","organizer_id":"o"},
        {"event_type":"x","organizer_id":"o"},
        {"event_type":"x","organizer_id":"o"},
        {"event_type":"x"}
    ]);
    assert_eq!(s.post_json("/v1/events", &events).await.0, 202);
    assert_eq!(
        s.post("/v1/events", "text/plain", b"{}".to_vec()).await.0,
        415
    );
    s.flush().await;
    let text = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let get = |name, labels: &[&str]| {
        sample(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
    };
    assert_eq!(
        get(
            "bilten_ingest_events_total",
            &["table=\"events\"", "outcome=\"accepted\""]
        ),
        3.0
    );
    assert_eq!(
        get(
            "bilten_ingest_events_total",
            &["table=\"events\"", "outcome=\"rejected\""]
        ),
        1.0
    );
    assert_eq!(
        get(
            "bilten_ingest_rejections_total",
            &["field=\"organizer_id\""]
        ),
        1.0
    );
    assert_eq!(
        get("bilten_ingest_requests_total", &["status=\"202\""]),
        1.0
    );
    assert_eq!(
        get("bilten_ingest_requests_total", &["status=\"415\""]),
        1.0
    );
    assert_eq!(get("bilten_rows_stored_total", &["table=\"events\""]), 3.0);
    assert_eq!(get("bilten_flush_rows_count", &["table=\"events\""]), 1.0);
    assert_eq!(get("bilten_buffer_rows", &[]), 0.0);
    assert!(get("bilten_wal_max_bytes", &[]) > 0.0);
    assert!(
        text.contains("# HELP bilten_ingest_events_total"),
        "described"
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn every_admin_action_is_audited_refused_ones_too() {
    let s = TestServer::start(|_| {}).await;
    s.query("SELECT 42 AS answer").await;
    let r = s.post_raw("/admin/flush", Some("wrong")).await;
    assert_eq!(r.status(), 401);
    // The audit log is written once a second.
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let rows = s
        .query(&format!("SELECT actor, remote, method, path, status, detail FROM {}.audit_log WHERE path != '/admin/query' OR detail LIKE '%answer%' ORDER BY at", common::system_database()))
        .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0]["actor"].as_str().unwrap().starts_with("token:"),
        "a fingerprint, not the token: {}",
        rows[0]
    );
    assert!(!rows[0]["actor"].as_str().unwrap().contains(ADMIN));
    assert_eq!(
        (
            rows[0]["path"].as_str().unwrap(),
            rows[0]["status"].as_u64().unwrap()
        ),
        ("/admin/query", 200)
    );
    assert_eq!(rows[0]["detail"], "SELECT 42 AS answer");
    assert!(
        rows[0]["remote"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(
        (
            rows[1]["actor"].as_str().unwrap(),
            rows[1]["path"].as_str().unwrap(),
            rows[1]["status"].as_u64().unwrap()
        ),
        ("invalid token", "/admin/flush", 401)
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn an_ingest_key_scoped_to_an_organizer_cannot_write_for_another() {
    let s = TestServer::start(|c| {
        c.ingest_keys = vec!["k123@org-123".into(), "k123@org-124".into(), "kall".into()]
    })
    .await;
    let post = |key: &'static str, body: Value| {
        s.client
            .post(format!("{}/v1/events", s.base))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let body = json!([
        {"event_type":"x","organizer_id":"org-123"},
        {"event_type":"x","organizer_id":"org-456"},
        {"event_type":"x","organizer_id":"org-124"}
    ]);
    let r: Value = post("k123", body.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["accepted"], 2, "{r}");
    assert_eq!(r["errors"][0]["index"], 1);
    assert_eq!(r["errors"][0]["field"], "organizer_id");
    assert_eq!(
        r["errors"][0]["reason"],
        "organizer_id: this API key may not write events for organizer \"org-456\""
    );
    let r = post("k123", json!({"event_type":"x","organizer_id":"org-456"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "nothing of another organizer's gets in");
    let r: Value = post("kall", body).await.unwrap().json().await.unwrap();
    assert_eq!(r["accepted"], 3, "an unscoped key writes for anyone");
    s.flush().await;
    let rows = s.query("SELECT organizer_id, count() AS n FROM bilten_analytics.events GROUP BY organizer_id ORDER BY organizer_id").await;
    let counts: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["organizer_id"].as_str().unwrap().to_string(),
                common::as_u64(&r["n"]),
            )
        })
        .collect();
    assert_eq!(
        counts,
        vec![
            ("org-123".into(), 2),
            ("org-124".into(), 2),
            ("org-456".into(), 1)
        ]
    );
    s.stop().await.unwrap();
}
