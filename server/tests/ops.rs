//! Monitoring, the report (rendered in headless Chromium), and the CLI's
//! operations commands against a running server.

mod common;

use std::process::Command;

use common::{ADMIN, TestServer, as_u64};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_bilten-analytics");

async fn get(s: &TestServer, path: &str) -> Value {
    let r = s
        .client
        .get(format!("{}/admin{path}", s.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn with_data(s: &TestServer, n: usize) {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"event_type":"page_view","organizer_id":"o","user_id":format!("u{i}")}))
        .collect();
    assert_eq!(
        s.post_json("/v1/events", &Value::Array(events)).await.0,
        202
    );
    s.flush().await;
}

#[tokio::test]
async fn monitor_shows_slow_queries_errors_storage_parts_and_rates() {
    let s = TestServer::start(|_| {}).await;
    with_data(&s, 40).await;
    s.query("SELECT sleepEachRow(0.02) FROM numbers(15)").await;
    assert_eq!(s.admin_query("SELEC 1").await.0, 400);
    // The engine's query log is written every 2 s.
    tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
    let m = get(&s, "/monitor?slow_ms=200").await;
    let slow = m["slow_queries"].as_array().unwrap();
    assert!(
        slow.iter()
            .any(|q| q["query"].as_str().unwrap().contains("sleepEachRow")),
        "{m}"
    );
    assert!(slow.iter().all(|q| as_u64(&q["query_duration_ms"]) > 200));
    assert!(
        m["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["code"] == 62),
        "syntax errors are counted: {}",
        m["errors"]
    );
    let events = m["storage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "events")
        .unwrap();
    assert_eq!(as_u64(&events["total_rows"]), 40);
    assert_eq!(m["parts"]["delay_inserts_at"], 1000.0);
    assert!(
        !m["parts"]["busiest_partitions"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let today: u64 = m["growth_by_day"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["table"] == "events")
        .map(|g| as_u64(&g["rows"]))
        .sum();
    assert_eq!(today, 40);
    let rate = m["ingestion_rate"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["table"] == "events")
        .unwrap();
    assert!(rate["rows_per_second"].as_f64().unwrap() > 0.0);
    assert!(as_u64(&m["process"]["resident_bytes"]) > 1 << 20);
    assert_eq!(m["replication"], "not replicated");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn the_html_report_renders_its_charts_in_a_browser() {
    let s = TestServer::start(|_| {}).await;
    with_data(&s, 30).await;
    s.query("SELECT sleepEachRow(0.02) FROM numbers(60)").await;
    tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
    let json = get(&s, "/report?slow_ms=500").await;
    assert_eq!(as_u64(&json["ingestion_by_hour"][0]["rows"]), 30);
    assert!(
        json["storage_by_table_and_tier"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["table"] == "events" && r["tier"] == "hot")
    );
    assert_eq!(
        json["slow_queries"].as_array().unwrap().len(),
        1,
        "{}",
        json["slow_queries"]
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.html");
    // Async: the server under test runs on this test's runtime.
    let out = tokio::process::Command::new(BIN)
        .args([
            "report",
            "--target",
            &s.base,
            "--html",
            file.to_str().unwrap(),
        ])
        .env("BILTEN_ADMIN_TOKEN", ADMIN)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&file).unwrap();
    assert_eq!(html.matches("<svg").count(), 3);

    let Some(browser) = common::install::chromium_or_skip() else {
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            &format!("file://{}", file.display()),
        ])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains(r#"data-charts-rendered="3""#),
        "three charts laid out with a size: {}",
        &dom[..dom.len().min(600)]
    );
    let bars: u64 = dom
        .split(r#"data-bars-rendered=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .expect("bar count");
    assert!(bars >= 3, "bars drawn with a height: {bars}");
    s.stop().await.unwrap();
}

/// The CLI with the admin token: its exit code, and what it printed.
async fn cli(args: &[&str]) -> (Option<i32>, String) {
    // Async: the server under test runs on this test's runtime.
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env("BILTEN_ADMIN_TOKEN", ADMIN)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn cli_health_and_backups_against_a_running_server() {
    let s = TestServer::start(|_| {}).await;
    with_data(&s, 12).await;
    let run = cli;
    let (code, out) = run(&["health", "--target", &s.base]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("\"status\": \"ok\""), "{out}");
    let (code, out) = run(&["health", "--target", "http://127.0.0.1:9"]).await;
    assert_eq!(code, Some(2), "unreachable is unhealthy: {out}");
    assert!(out.contains("cannot reach"), "{out}");

    let (code, out) = run(&["backup", "--target", &s.base, "create"]).await;
    assert_eq!(code, Some(0), "{out}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let id = created["backup"]["id"].as_str().unwrap();
    let (code, out) = run(&["backup", "--target", &s.base, "list"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains(id));
    let (code, out) = run(&["backup", "--target", &s.base, "verify", id]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("\"ok\": true"), "{out}");
    let (code, out) = run(&["backup", "--target", &s.base, "verify", "missing"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("HTTP 404"), "{out}");
    s.stop().await.unwrap();
}

/// `rates load` and `rates list`: the CLI loads a CSV file of exchange
/// rates through `/admin`, and a bad line is an error that names it.
#[tokio::test]
async fn the_cli_loads_and_lists_exchange_rates() {
    let s = TestServer::start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("rates.csv");
    let day = chrono::Utc::now().date_naive().to_string();
    std::fs::write(
        &good,
        format!("date,currency,rate\r\n{day},USD,0.9231\r\n{day},GBP,1.15\r\n"),
    )
    .unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, format!("{day},USD,0.9231\n{day},EURO,1\n")).unwrap();
    let run = |args: Vec<String>| async move {
        cli(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
    };
    let args = |rest: &[&str]| {
        ["rates", "--target", &s.base]
            .iter()
            .chain(rest)
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
    };
    let (code, out) = run(args(&["load", bad.to_str().unwrap(), "--base", "EUR"])).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("line 2: currency: a three-letter code"),
        "{out}"
    );
    let (code, out) = run(args(&["load", good.to_str().unwrap(), "--base", "EUR"])).await;
    assert_eq!(code, Some(0), "{out}");
    let loaded: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (loaded["base"].as_str(), loaded["loaded"].as_u64()),
        (Some("EUR"), Some(2))
    );
    let (code, out) = run(args(&["list", "--base", "EUR"])).await;
    assert_eq!(code, Some(0), "{out}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let rates: Vec<(&str, &str)> = listed["rates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["currency"].as_str().unwrap(), r["rate"].as_str().unwrap()))
        .collect();
    assert_eq!(rates, [("GBP", "1.15"), ("USD", "0.9231")]);
    s.stop().await.unwrap();
}
