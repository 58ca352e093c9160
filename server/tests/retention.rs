//! Retention tiers on the embedded engine: backdated events land in, and
//! move between, the hot, cold and archive directories, and expire.

mod common;

use chrono::{Duration, Utc};
use common::TestServer;
use serde_json::{Value, json};

fn ago(days: i64) -> String {
    (Utc::now() - Duration::days(days)).to_rfc3339()
}

fn rows(report: &Value, table: &str, tier: &str) -> u64 {
    report["tables"][table]["tiers"][tier]["rows"]
        .as_u64()
        .unwrap_or(0)
}

fn files_under(dir: &std::path::Path) -> usize {
    walk(dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .count()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            if e.path().is_dir() {
                walk(&e.path())
            } else {
                vec![e.path()]
            }
        })
        .collect()
}

#[tokio::test]
async fn backdated_rows_move_between_tier_directories_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config(dir.path());
    let s = TestServer::start_with(cfg.clone()).await;
    let events: Vec<Value> = [0, 40, 100, 800]
        .iter()
        .map(|d| json!({"event_type":"page_view","organizer_id":"o","user_id":format!("u{d}"),"timestamp":ago(*d)}))
        .collect();
    assert_eq!(
        s.post_json("/v1/events", &Value::Array(events)).await.0,
        202
    );
    let sales: Vec<Value> = [0, 400, 3000]
        .iter()
        .map(|d| json!({"event_id":"e","organizer_id":"o","quantity":1,"price":10,"currency":"EUR","timestamp":ago(*d)}))
        .collect();
    assert_eq!(
        s.post_json("/v1/ticket-sales", &Value::Array(sales))
            .await
            .0,
        202
    );
    s.flush().await;

    let (status, report) = s
        .admin(reqwest::Method::POST, "/admin/retention/apply", None)
        .await;
    assert_eq!(status, 200, "{report}");
    // events: 0 days hot, 40 cold, 100 archive, 800 deleted (after 2 years).
    assert_eq!(
        (
            rows(&report, "events", "hot"),
            rows(&report, "events", "cold"),
            rows(&report, "events", "archive")
        ),
        (1, 1, 1),
        "{report}"
    );
    assert_eq!(s.count("events").await, 3);
    // ticket_sales keeps 7 years: 400 days is archived, not deleted; 3000 days is.
    assert_eq!(
        (
            rows(&report, "ticket_sales", "hot"),
            rows(&report, "ticket_sales", "archive")
        ),
        (1, 1),
        "{report}"
    );
    assert_eq!(s.count("ticket_sales").await, 2);
    assert!(
        report["tables"]["events"]["tiers"]["archive"]["oldest"]
            .as_str()
            .unwrap()
            .starts_with(&ago(100)[..10])
    );
    // The parts really are in the configured directories.
    assert!(
        files_under(&dir.path().join("cold")) > 0,
        "nothing in the cold directory"
    );
    assert!(
        files_under(&dir.path().join("archive")) > 0,
        "nothing in the archive directory"
    );

    // A shorter policy through the API: 50 days, then gone.
    let mut policy = report.clone();
    let tables = policy["tables"].as_object().unwrap().clone();
    policy = json!({
        "default": {"cold_after": "10days", "archive_after": "20days", "delete_after": "50days"},
        "tables": {"ticket_sales": tables["ticket_sales"]["policy"].clone()},
    });
    let (status, body) = s
        .admin(reqwest::Method::PUT, "/admin/retention", Some(&policy))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, report) = s
        .admin(reqwest::Method::POST, "/admin/retention/apply", None)
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        s.count("events").await,
        2,
        "the 100-day-old event expired: {report}"
    );
    assert_eq!(
        (
            rows(&report, "events", "hot"),
            rows(&report, "events", "archive")
        ),
        (1, 1),
        "40 days is past archive_after now: {report}"
    );

    let (status, body) = s
        .admin(
            reqwest::Method::PUT,
            "/admin/retention",
            Some(&json!({"default": {"cold_after": "90days", "archive_after": "30days"}})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("cold_after < archive_after"),
        "{body}"
    );
    s.stop().await.unwrap();

    // The policy set through the API outlives a restart.
    let s = TestServer::start_with(cfg).await;
    let (_, report) = s
        .admin(reqwest::Method::GET, "/admin/retention", None)
        .await;
    assert_eq!(report["default"]["delete_after"], "50days", "{report}");
    s.stop().await.unwrap();
}
