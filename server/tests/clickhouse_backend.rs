//! The ClickHouse-server backend's requests, checked against the
//! `clickhouse` crate's own test mock (no server runs here).

use bilten_analytics::storage::{ClickHouseStorage, Storage, StorageError};
use bytes::Bytes;
use clickhouse::Client;
use clickhouse::test::{Mock, handlers, status};

fn storage(mock: &Mock) -> ClickHouseStorage {
    ClickHouseStorage::from_client(
        Client::default()
            .with_mock(mock)
            .with_compression(clickhouse::Compression::None),
    )
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
