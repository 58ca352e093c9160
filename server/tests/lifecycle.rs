//! Starting and stopping the server process when the engine will not
//! cooperate: a table that cannot load (a disk whose endpoint is gone) does
//! not keep the server from starting and replaying its log, and SIGTERM
//! during a statement that would run for ten minutes ends the process
//! within `shutdown_timeout`, the log intact.

mod common;

use std::time::{Duration, Instant};

use common::process::{TOKEN, serve};
use serde_json::{Value, json};

fn events(n: usize, tag: &str) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                json!({
                    "event_id": format!("{tag}-{i}"),
                    "id": uuid::Uuid::new_v4().to_string(),
                    "event_type": "page_view",
                    "organizer_id": "org-1",
                    "user_id": format!("u{i}"),
                })
            })
            .collect(),
    )
}

async fn post(base: &str, body: &Value) -> u16 {
    reqwest::Client::new()
        .post(format!("{base}/v1/events"))
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn health(base: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}/admin/health"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A table on a `web` disk whose endpoint is gone (as a table made before
/// the interface's walls could be): the engine cannot load it and would not
/// start. The server sets it aside, starts, replays the events its log
/// held, and `/admin/health` names the table and how to drop it; after
/// that, the next start is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_cannot_load_is_set_aside_and_the_log_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let held = [
        ("BILTEN_BATCH__MAX_AGE", "1h"),
        ("BILTEN_BATCH__MAX_ROWS", "100000"),
    ];
    let mut server = serve(dir.path(), &held);
    assert_eq!(post(&server.base, &events(25, "before")).await, 202);
    // Acknowledged, in the log, not yet stored: the crash keeps them there.
    server.kill9();

    // The table's definition, as the engine keeps it, on a disk at a port
    // nobody listens on.
    let port = common::free_port();
    let metadata = dir.path().join("engine/metadata/bilten_analytics");
    std::fs::write(
        metadata.join("remote_web.sql"),
        format!(
            "ATTACH TABLE _ UUID '{}'\n(\n    `a` String\n)\nENGINE = MergeTree\nORDER BY a\n\
             SETTINGS disk = disk(type = web, endpoint = 'http://127.0.0.1:{port}/'), index_granularity = 8192\n",
            uuid::Uuid::new_v4()
        ),
    )
    .unwrap();

    let server = serve(dir.path(), &[]);
    server.flush().await;
    let stored = server
        .query("SELECT count() AS n FROM bilten_analytics.events")
        .await;
    assert_eq!(
        common::as_u64(&stored["data"][0]["n"]),
        25,
        "the log was replayed: {stored}"
    );
    let h = health(&server.base).await;
    assert_eq!(h["status"], "degraded", "{h}");
    let aside = &h["tables"]["set_aside"][0];
    assert_eq!(aside["table"], "bilten_analytics.remote_web", "{h}");
    assert!(
        aside["error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{h}"
    );
    let how = aside["how_to_drop"].as_str().unwrap();
    let definition = aside["definition"].as_str().unwrap().to_string();
    assert!(how.contains("delete") && how.contains(&definition), "{how}");
    assert!(std::path::Path::new(&definition).exists());
    assert!(server.logged("a table that cannot load was set aside"));
    // New events go in as ever.
    assert_eq!(post(&server.base, &events(5, "after")).await, 202);
    server.flush().await;
    drop(server);

    // Doing what health says: the table is dropped for good, and the next
    // start is clean.
    std::fs::remove_file(&definition).unwrap();
    let server = serve(dir.path(), &[]);
    let h = health(&server.base).await;
    assert_eq!(h["tables"]["status"], "ok", "{h}");
    let stored = server
        .query("SELECT count() AS n FROM bilten_analytics.events")
        .await;
    assert_eq!(common::as_u64(&stored["data"][0]["n"]), 30, "{stored}");
}

/// SIGTERM while a reader's statement would run for ten minutes (the limits
/// raised to let it): past `shutdown_timeout` the statement is cancelled
/// and the process exits, with every acknowledged event in the log, stored
/// at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_ten_minute_statement_exits_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let env = [
        ("BILTEN_BATCH__MAX_AGE", "1h"),
        ("BILTEN_BATCH__MAX_ROWS", "100000"),
        ("BILTEN_SHUTDOWN_TIMEOUT", "3s"),
        ("BILTEN_STORAGE__QUERY_LIMITS__TIMEOUT", "20m"),
        ("BILTEN_CLICKHOUSE_HTTP_LISTEN", listen.as_str()),
        ("BILTEN_CLICKHOUSE_HTTP_USERS", "reader:reader-secret"),
    ];
    let mut server = serve(dir.path(), &env);
    assert_eq!(post(&server.base, &events(40, "held")).await, 202);
    // Ten minutes and more of counting.
    let long = tokio::spawn({
        let url = format!("http://{listen}/");
        async move {
            reqwest::Client::new()
                .post(url)
                .basic_auth("reader", Some("reader-secret"))
                .body("SELECT count() FROM numbers(100000000000000) WHERE sleepEachRow(0) = 0")
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    // Running, as the engine sees it.
    let mut running = false;
    for _ in 0..100 {
        let p = server
            .query("SELECT count() AS n FROM system.processes WHERE query LIKE '%numbers(100000000000000)%' AND query NOT LIKE '%system.processes%'")
            .await;
        if common::as_u64(&p["data"][0]["n"]) > 0 {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(running, "the long statement never started");
    let asked = Instant::now();
    let status = server.terminate();
    let took = asked.elapsed();
    // 3 s of drain, then the cancel and the close: far from ten minutes.
    assert!(took < Duration::from_secs(20), "exit took {took:?}");
    assert!(
        took >= Duration::from_secs(3),
        "the drain was cut short: {took:?}"
    );
    assert!(status.success() || status.code() == Some(1), "{status:?}");
    assert!(
        server.logged("shutdown_timeout passed"),
        "the deadline was not what ended it"
    );
    // The long request ended one way or another.
    let answered = tokio::time::timeout(Duration::from_secs(10), long)
        .await
        .expect("the long request still hangs");
    assert!(!matches!(answered, Ok(Ok(200))), "{answered:?}");
    drop(server);

    let server = serve(dir.path(), &[]);
    server.flush().await;
    let stored = server
        .query("SELECT count() AS n FROM bilten_analytics.events")
        .await;
    assert_eq!(common::as_u64(&stored["data"][0]["n"]), 40, "{stored}");
}
