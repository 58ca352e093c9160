//! Backups: full and incremental, restore into a new database and into the
//! live one, verification, keeping the last N. On the embedded engine, and
//! (`BILTEN_TEST_BACKEND=clickhouse`) through a store's ClickHouse interface
//! as its backup user, on its `backups` disk.

mod common;

use common::{ADMIN, TestServer, as_u64};
use serde_json::{Value, json};

async fn admin(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let r = s
        .client
        .post(format!("{}/admin{path}", s.base))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    common::status_and_body(r).await
}

async fn ingest(s: &TestServer, n: usize, tag: &str) {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"event_type":"purchase","organizer_id":"o","user_id":format!("{tag}{i}")}))
        .collect();
    assert_eq!(
        s.post_json("/v1/events", &Value::Array(events)).await.0,
        202
    );
    s.flush().await;
}

async fn count(s: &TestServer, db: &str) -> u64 {
    as_u64(
        &s.query(&format!("SELECT count() AS n FROM {db}.events"))
            .await[0]["n"],
    )
}

#[tokio::test]
async fn full_and_incremental_backups_restore_exactly_what_was_backed_up() {
    let s = TestServer::start(|c| c.backups.keep = 2).await;
    ingest(&s, 50, "a").await;
    let (status, full) = admin(&s, "/backups", json!({})).await;
    assert_eq!(status, 200, "{full}");
    let full_id = full["backup"]["id"].as_str().unwrap().to_string();
    assert_eq!(full["backup"]["kind"], "full");
    assert_eq!(full["backup"]["tables"]["events"]["rows"], 50);

    ingest(&s, 20, "b").await;
    let (status, inc) = admin(&s, "/backups", json!({"incremental": true})).await;
    assert_eq!(status, 200, "{inc}");
    let inc_id = inc["backup"]["id"].as_str().unwrap().to_string();
    assert_eq!(inc["backup"]["base"], full_id.as_str());
    assert_eq!(inc["backup"]["tables"]["events"]["rows"], 70);

    let (status, verified) = admin(&s, &format!("/backups/{inc_id}/verify"), json!({})).await;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["ok"], true, "{verified}");

    // Into a new database: exactly the rows of the full backup, same checksum.
    let (status, body) = admin(
        &s,
        &format!("/backups/{full_id}/restore"),
        json!({"database": "restored"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count(&s, "restored").await, 50);
    let sum = s
        .query("SELECT toString(sum(cityHash64(*))) AS c FROM restored.events")
        .await;
    assert_eq!(sum[0]["c"], full["backup"]["tables"]["events"]["checksum"]);
    let (status, body) = admin(
        &s,
        &format!("/backups/{full_id}/restore"),
        json!({"database": "restored"}),
    )
    .await;
    assert_eq!(
        status, 400,
        "an existing database is never overwritten: {body}"
    );

    // Into the live database: it goes back to the incremental backup's 70
    // rows; the 10 rows since are kept aside in the renamed database.
    ingest(&s, 10, "c").await;
    let (status, body) = admin(&s, &format!("/backups/{inc_id}/restore"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count(&s, "bilten_analytics").await, 70);
    let aside = body["previous_database"].as_str().unwrap();
    assert_eq!(count(&s, aside).await, 80);
    // Ingest goes on into the restored database, views included.
    ingest(&s, 1, "d").await;
    assert_eq!(count(&s, "bilten_analytics").await, 71);
    let v = s
        .query("SELECT sum(events) AS n FROM bilten_analytics.organizer_daily_metrics_mv")
        .await;
    assert_eq!(as_u64(&v[0]["n"]), 71);

    let (status, body) = admin(&s, "/backups/nope/verify", json!({})).await;
    assert_eq!(status, 404, "{body}");

    // Keep 2: a new full backup retires what no kept backup needs.
    let (_, second) = admin(&s, "/backups", json!({})).await;
    assert_eq!(
        second["pruned"],
        json!([]),
        "the incremental one still needs the first full one"
    );
    let (_, third) = admin(&s, "/backups", json!({})).await;
    assert_eq!(third["pruned"].as_array().unwrap().len(), 2, "{third}");
    if common::backend_under_test() == "embedded" {
        let backups_dir = s.data_dir.join("backups");
        assert!(!backups_dir.join(&full_id).exists() && !backups_dir.join(&inc_id).exists());
    } else {
        // On a ClickHouse server the files stay on its backups disk, for an
        // operator: SQL cannot delete them. Here that disk is the store's.
        let disk = s.data_dir.join("store").join("backups");
        assert!(disk.join(&full_id).exists() && disk.join(&inc_id).exists());
    }
    let listed = s
        .client
        .get(format!("{}/admin/backups", s.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let live: Vec<&Value> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["status"] == "created")
        .collect();
    assert_eq!(live.len(), 2);
    s.stop().await.unwrap();
}

/// A restore into the live database sets the old one aside, whose views
/// keep the names they were made with: after a restart they would read the
/// live tables and write into the live aggregates, counting every row
/// twice. The server drops them; a row counts once.
#[tokio::test]
async fn after_a_restore_and_a_restart_a_row_counts_once_in_the_views() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config(dir.path());
    let s = TestServer::start_with(cfg.clone()).await;
    ingest(&s, 5, "a").await;
    let (status, full) = admin(&s, "/backups", json!({})).await;
    assert_eq!(status, 200, "{full}");
    let id = full["backup"]["id"].as_str().unwrap().to_string();
    let (status, body) = admin(&s, &format!("/backups/{id}/restore"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let aside = body["previous_database"].as_str().unwrap().to_string();
    s.stop().await.unwrap();
    let s = TestServer::start_with(cfg).await;
    ingest(&s, 1, "b").await;
    let v = s
        .query("SELECT sum(events) AS n FROM bilten_analytics.organizer_daily_metrics_mv")
        .await;
    assert_eq!(as_u64(&v[0]["n"]), 6, "one row more, counted once");
    let views = s
        .query(&format!(
            "SELECT count() AS n FROM system.tables WHERE database = '{aside}' AND engine = 'MaterializedView'"
        ))
        .await;
    assert_eq!(as_u64(&views[0]["n"]), 0, "{views:?}");
    // What was set aside keeps its rows.
    assert_eq!(count(&s, &aside).await, 5);
    s.stop().await.unwrap();
}
