//! The embedded engine's inserts: rows streamed on connections of their own,
//! in pieces, deduplicated on retry in the table and its views; a bad row or
//! a missing table is a clear, classified error that stores nothing and is
//! in the query log; inserts run beside a long read.

use std::sync::Arc;

use bilten_analytics::config::Config;
use bilten_analytics::ingest::{self, BodyFormat, Table};
use bilten_analytics::ops::migrations;
use bilten_analytics::storage::{self, Storage, StorageError, query_text};
use bilten_analytics::synth::Generator;
use bytes::Bytes;
use serde_json::Value;

async fn open() -> (tempfile::TempDir, Arc<dyn Storage>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.storage.embedded.data_dir = dir.path().to_path_buf();
    let storage = storage::open(&cfg.storage).await.unwrap();
    migrations::apply(&*storage).await.unwrap();
    (dir, storage)
}

/// `n` rows of `events` as the server would insert them, from the traffic model.
fn event_rows(n: usize, seed: u64) -> Bytes {
    let mut generator = Generator::new(seed);
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        let (table, v) = generator.next_event();
        if table == Table::Events {
            events.push(v);
        }
    }
    let body = serde_json::to_vec(&Value::Array(events)).unwrap();
    let out = ingest::process(
        Table::Events,
        &body,
        BodyFormat::Json,
        n,
        chrono::Utc::now(),
        None,
    )
    .unwrap();
    Bytes::from(out.rows)
}

async fn one(storage: &dyn Storage, sql: &str) -> String {
    query_text(storage, sql).await.unwrap().trim().to_string()
}

#[tokio::test]
async fn a_large_insert_is_stored_whole_and_its_retry_nowhere() {
    let (_dir, storage) = open().await;
    // Several megabytes: the rows reach the engine in more than one piece.
    let rows = event_rows(20_000, 1);
    assert!(rows.len() > 3 << 20, "{} bytes", rows.len());
    storage
        .insert("events", rows.clone(), "tok-a")
        .await
        .unwrap();
    storage
        .insert("events", rows.clone(), "tok-a")
        .await
        .unwrap();
    assert_eq!(
        one(
            &*storage,
            "SELECT count(), uniqExact(id) FROM bilten_analytics.events"
        )
        .await,
        "20000\t20000"
    );
    // The retry is a no-op in the views too.
    assert_eq!(
        one(
            &*storage,
            "SELECT sum(events) FROM bilten_analytics.events_hourly"
        )
        .await,
        "20000"
    );
    storage.close().await;
}

#[tokio::test]
async fn a_bad_row_fails_the_insert_with_the_engines_reason_and_stores_nothing() {
    let (_dir, storage) = open().await;
    let good = event_rows(100, 2);
    let mut bad = good.to_vec();
    bad.extend_from_slice(b"{\"id\": \"not a uuid\", \"timestamp\": 1}\n");
    bad.extend_from_slice(&event_rows(100, 3));
    let err = storage
        .insert("events", Bytes::from(bad), "tok-b")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Rejected(_)) && err.is_data_error(),
        "{err:?}"
    );
    assert!(err.to_string().contains("Code: "), "{err}");
    assert_eq!(
        one(&*storage, "SELECT count() FROM bilten_analytics.events").await,
        "0"
    );
    // The engine is still fine: the good rows go in after.
    storage.insert("events", good, "tok-c").await.unwrap();
    assert_eq!(
        one(&*storage, "SELECT count() FROM bilten_analytics.events").await,
        "100"
    );
    storage.close().await;
}

#[tokio::test]
async fn an_insert_into_a_missing_table_is_refused_and_logged() {
    let (_dir, storage) = open().await;
    let err = storage
        .insert("no_such_table", event_rows(10, 4), "tok-d")
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("UNKNOWN_TABLE"), "{err}");
    storage
        .insert("events", event_rows(10, 4), "tok-d")
        .await
        .unwrap();
    // The query log is written every two seconds.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let logged = one(
        &*storage,
        "SELECT type, exception_code FROM system.query_log \
         WHERE query LIKE 'INSERT INTO bilten_analytics.no_such_table%'",
    )
    .await;
    assert_eq!(logged, "ExceptionWhileProcessing\t60");
    let ok = one(
        &*storage,
        "SELECT count(), max(query_duration_ms) < 5000, sum(written_rows) >= 10 \
         FROM system.query_log \
         WHERE type = 'QueryFinish' AND query LIKE 'INSERT INTO bilten_analytics.events%'",
    )
    .await;
    // Timed by our clock: the engine's own figure for a stream counts from
    // before the stream began.
    assert_eq!(ok, "1\t1\t1");
    storage.close().await;
}

#[tokio::test]
async fn inserts_run_beside_a_long_read_and_beside_each_other() {
    let (_dir, storage) = open().await;
    let slow = {
        let storage = storage.clone();
        tokio::spawn(async move {
            query_text(&*storage, "SELECT sleepEachRow(0.5) FROM numbers(4)").await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let t = std::time::Instant::now();
    let (a, b) = tokio::join!(
        storage.insert("events", event_rows(1000, 5), "tok-e"),
        storage.insert("events", event_rows(1000, 6), "tok-f"),
    );
    a.unwrap();
    b.unwrap();
    let inserts = t.elapsed();
    assert!(!slow.is_finished(), "the read ended first ({inserts:?})");
    slow.await.unwrap().unwrap();
    assert_eq!(
        one(&*storage, "SELECT count() FROM bilten_analytics.events").await,
        "2000"
    );
    storage.close().await;
}

/// Reads with parameters, at once on the shared read-only connection and
/// beside reads the engine formats (a SHOW's text is bound as a parameter
/// of formatQuery): each gets its own values. Shared, a call's parameters
/// were once unset by another's ("Substitution `v` is not set").
#[tokio::test]
async fn concurrent_reads_each_keep_their_own_parameters() {
    let (_dir, storage) = open().await;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8 {
        let storage = storage.clone();
        tasks.spawn(async move {
            for i in 0..40 {
                let v = format!("t{task}-{i}");
                if i % 4 == 0 {
                    storage
                        .query_readonly("SHOW TABLES FROM bilten_analytics", "TabSeparated")
                        .await
                        .unwrap();
                }
                let out = storage
                    .query_readonly_with(
                        "SELECT {v:String} AS v, {d:Date} AS d",
                        &[("v".into(), v.clone()), ("d".into(), "2026-12-04".into())],
                        "TabSeparated",
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{v}: {e}"));
                assert_eq!(
                    String::from_utf8_lossy(&out).trim(),
                    format!("{v}\t2026-12-04")
                );
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    storage.close().await;
}

#[tokio::test]
async fn the_error_codes_we_classify_by_are_the_engines() {
    let (_dir, storage) = open().await;
    for (code, name) in [
        storage::TRANSIENT_CODES,
        storage::DATA_CODES,
        storage::LIMIT_CODES,
    ]
    .concat()
    {
        let engine = one(&*storage, &format!("SELECT errorCodeToName({code})")).await;
        assert_eq!(engine, name, "code {code}");
    }
    storage.close().await;
}

/// The writers' profile freezes every setting that points the engine at a
/// file, a path, a URL, a schema, a disk or credentials, by the engine's own
/// list: a setting a new engine version adds with such a name fails this
/// until it is frozen too (`clickhouse_http::walls::FROZEN_SETTINGS`) or named here
/// as harmless.
#[tokio::test]
async fn every_setting_that_names_a_path_is_frozen_for_the_interfaces_writers() {
    use bilten_analytics::clickhouse_http::walls::{FROZEN_SETTINGS, FROZEN_TABLE_SETTINGS};
    // Their values name no file: inference hints, read methods, a codec,
    // profile events.
    const HARMLESS: &[&str] = &[
        "column_names_for_schema_inference",
        "schema_inference_hints",
        "local_filesystem_read_method",
        "remote_filesystem_read_method",
        "temporary_files_codec",
        "trace_profile_events_list",
    ];
    const PARTS: &[&str] = &[
        "file",
        "path",
        "schema",
        "template",
        "url",
        "dir",
        "disk",
        "endpoint",
        "credential",
    ];
    let (_dir, storage) = open().await;
    let text = query_text(
        &*storage,
        "SELECT name, type FROM system.settings WHERE type IN ('String', 'URI')",
    )
    .await
    .unwrap();
    let mut missing = Vec::new();
    for line in text.lines() {
        let name = line.split('\t').next().unwrap();
        let lower = name.to_ascii_lowercase();
        if PARTS.iter().any(|p| lower.contains(p))
            && !FROZEN_SETTINGS.contains(&name)
            && !HARMLESS.contains(&name)
        {
            missing.push(name.to_string());
        }
    }
    assert!(missing.is_empty(), "not frozen for writers: {missing:?}");
    // And every frozen name is the engine's (an unknown one would stop the
    // engine from starting).
    let known = query_text(&*storage, "SELECT name FROM system.settings")
        .await
        .unwrap();
    let known: Vec<&str> = known.lines().collect();
    for name in FROZEN_SETTINGS {
        assert!(known.contains(name), "{name} is no setting of this engine");
    }
    let table = query_text(&*storage, "SELECT name FROM system.merge_tree_settings")
        .await
        .unwrap();
    let table: Vec<&str> = table.lines().collect();
    for name in FROZEN_TABLE_SETTINGS {
        assert!(
            table.contains(name),
            "{name} is no table setting of this engine"
        );
    }
    storage.close().await;
}
