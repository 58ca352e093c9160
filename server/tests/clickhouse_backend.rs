//! The ClickHouse-server backend's requests, checked against the
//! `clickhouse` crate's own test mock (no server runs here).

use bilten_analytics::storage::{ClickHouseStorage, Storage, StorageError};
use bytes::Bytes;
use clickhouse::Client;
use clickhouse::test::{Mock, handlers, status};

use std::time::{Duration, Instant};

use bilten_analytics::config::{ClickHouseConfig, QueryLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn storage(mock: &Mock) -> ClickHouseStorage {
    ClickHouseStorage::from_client(
        Client::default()
            .with_mock(mock)
            .with_compression(clickhouse::Compression::None),
        Duration::from_secs(5),
    )
}

/// A plain TCP listener standing in for a server: it records the first
/// request's head and body, then answers `answer` (or nothing: a stalled server).
async fn fake_server(answer: Option<&'static str>) -> (String, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // Read until the request goes quiet.
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), sock.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        match answer {
            Some(body) => {
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
            None => tokio::time::sleep(Duration::from_secs(30)).await,
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    (url, handle)
}

fn server_storage(url: &str, timeout: Duration) -> ClickHouseStorage {
    let cfg = ClickHouseConfig {
        url: url.to_string(),
        timeout,
        ..Default::default()
    };
    ClickHouseStorage::new(&cfg, QueryLimits::default())
}

/// The query-string parameters of a recorded request's first line.
fn params(request: &str) -> Vec<(String, String)> {
    let target = request.lines().next().unwrap().split(' ').nth(1).unwrap();
    url::Url::parse(&format!("http://server{target}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn a_question_mark_in_the_sql_is_sent_verbatim() {
    let (url, seen) = fake_server(Some("")).await;
    let sql = "SELECT 'why?' AS q";
    server_storage(&url, Duration::from_secs(5))
        .execute(sql)
        .await
        .unwrap();
    let request = seen.await.unwrap();
    assert!(request.contains(sql), "{request}");
}

#[tokio::test]
async fn admin_sql_goes_with_readonly_1_and_the_limits() {
    let (url, seen) = fake_server(Some("{}")).await;
    server_storage(&url, Duration::from_secs(5))
        .query_readonly("SELECT 1", "JSON")
        .await
        .unwrap();
    let params = params(&seen.await.unwrap());
    for (name, value) in [
        ("readonly", "1"),
        ("max_execution_time", "30"),
        ("max_memory_usage", "2147483648"),
        ("max_result_bytes", "104857600"),
    ] {
        assert!(
            params.iter().any(|(k, v)| k == name && v == value),
            "{name}={value} missing: {params:?}"
        );
    }
}

#[tokio::test]
async fn a_stalled_server_fails_the_insert_within_the_timeout_as_transient() {
    let (url, _seen) = fake_server(None).await;
    let started = Instant::now();
    let err = server_storage(&url, Duration::from_millis(500))
        .insert("events", Bytes::from_static(b"{}\n"), "tok-3")
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(!err.is_data_error());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_insert_sends_the_rows_as_jsoneachrow() {
    let mock = Mock::new();
    let recording = mock.add(handlers::record_ddl());
    let rows = Bytes::from_static(b"{\"event_type\":\"x\",\"organizer_id\":\"o\"}\n{\"event_type\":\"y\",\"organizer_id\":\"o\"}\n");
    storage(&mock)
        .insert("events", rows.clone(), "tok-1")
        .await
        .unwrap();
    assert_eq!(recording.query().await.as_bytes(), &rows[..]);
}

#[tokio::test]
async fn ddl_goes_as_the_request_body() {
    let mock = Mock::new();
    let recording = mock.add(handlers::record_ddl());
    let sql =
        "CREATE TABLE IF NOT EXISTS bilten_analytics.t (x UInt8) ENGINE = MergeTree ORDER BY x";
    storage(&mock).execute(sql).await.unwrap();
    assert_eq!(recording.query().await, sql);
}

#[tokio::test]
async fn server_errors_are_transient_and_exceptions_are_classified_by_code() {
    let mock = Mock::new();
    mock.add(handlers::failure(status::SERVICE_UNAVAILABLE));
    let err = storage(&mock)
        .insert("events", Bytes::from_static(b"{}\n"), "tok-2")
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");

    mock.add(handlers::exception(27));
    let err = storage(&mock).ping().await.unwrap_err();
    assert!(matches!(err, StorageError::Rejected(_)), "{err:?}");
    assert!(err.to_string().contains("27"), "{err}");
}
