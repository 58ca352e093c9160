//! Router-level tests through `tower::ServiceExt::oneshot`: the HTTP
//! translation of requests that are answered before storage is involved.
//! Storage is a ClickHouse-server backend pointed at a closed port, which
//! none of these requests reaches (a reached one would fail loudly).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use bilten_analytics::batch::Batcher;
use bilten_analytics::config::Config;
use bilten_analytics::plugins::Plugins;
use bilten_analytics::storage::{ClickHouseStorage, Storage};
use bilten_analytics::{AppState, router};
use serde_json::Value;
use tower::ServiceExt;

fn app(tweak: impl FnOnce(&mut Config)) -> Router {
    let mut cfg = Config {
        plugins: Vec::new(),
        ..Default::default()
    };
    cfg.storage.clickhouse.url = "http://127.0.0.1:9".into();
    tweak(&mut cfg);
    let storage: Arc<dyn Storage> = Arc::new(ClickHouseStorage::new(
        &cfg.storage.clickhouse,
        cfg.storage.query_limits.clone(),
    ));
    let batcher = Batcher::new(cfg.batch.clone(), storage.clone(), None);
    let plugins = Plugins::start(cfg.plugin_host.clone(), &[], None).unwrap();
    let tenants = Arc::new(bilten_analytics::tenants::Tenants::without_store(
        &cfg,
        storage.clone(),
    ));
    router(AppState::new(
        Arc::new(cfg),
        storage,
        batcher,
        None,
        plugins,
        None,
        tenants,
    ))
}

async fn send(app: Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn post(path: &str, content_type: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", content_type)
        .body(Body::from(body.to_string()))
        .unwrap()
}

const EVENT: &str = r#"{"event_type":"page_view","organizer_id":"o"}"#;

#[tokio::test]
async fn requests_are_translated_to_statuses_and_messages() {
    let (status, body) = send(app(|_| {}), post("/v1/events", "text/plain", EVENT)).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body["error"].as_str().unwrap().contains("application/json"));

    let (status, _) = send(app(|_| {}), post("/v1/nope", "application/json", EVENT)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = send(
        app(|_| {}),
        post("/v1/events", "application/json", "[{\"a\":1},\n {\"a\" 2}]"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("line 2, column 7"),
        "{body}"
    );

    let three = format!("[{EVENT},{EVENT},{EVENT}]");
    let (status, body) = send(
        app(|c| c.ingest.max_events_per_request = 2),
        post("/v1/events", "application/json", &three),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    // Valid, with the log off: buffered (storage is not reached before a flush).
    let (status, body) = send(app(|_| {}), post("/v1/events", "application/json", &three)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 3);

    // Every event refused: 400, each with its index and field.
    let (status, body) = send(
        app(|_| {}),
        post(
            "/v1/events",
            "application/json",
            r#"[{"organizer_id":"o"}]"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "event_type", "{body}");
}

#[tokio::test]
async fn keys_and_the_admin_token_are_required_where_configured() {
    let keyed = || app(|c| c.ingest_keys = vec!["k1".into()]);
    let (status, _) = send(keyed(), post("/v1/events", "application/json", EVENT)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut with_key = post("/v1/events", "application/json", EVENT);
    with_key
        .headers_mut()
        .insert("x-api-key", "k1".parse().unwrap());
    assert_eq!(send(keyed(), with_key).await.0, StatusCode::ACCEPTED);

    // No admin token configured: the admin API is off.
    let (status, body) = send(app(|_| {}), post("/admin/query", "text/plain", "SELECT 1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("BILTEN_ADMIN_TOKEN")
    );
}
