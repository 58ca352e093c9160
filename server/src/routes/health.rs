//! Liveness (`/health`) and readiness (`/ready`) are different questions.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use crate::ops::migrations;

/// The process is up and serving HTTP.
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Storage answers and the schema is fully migrated.
pub async fn ready(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    if let Err(e) = app.storage.ping().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": format!("storage: {e}") })),
        );
    }
    match migrations::status(&*app.storage).await {
        Ok(s) if s.pending == 0 && s.changed == 0 => {
            (StatusCode::OK, Json(json!({ "status": "ready" })))
        }
        Ok(s) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "status": "not ready", "reason": format!("{} migrations pending, {} changed", s.pending, s.changed) }),
            ),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": format!("migrations: {e}") })),
        ),
    }
}

/// `GET /metrics`, in Prometheus' text format.
pub async fn metrics(State(app): State<AppState>) -> impl axum::response::IntoResponse {
    let handle = crate::telemetry::handle();
    crate::telemetry::collect_process();
    let (rows, oldest) = app.batcher.depth();
    metrics::gauge!(crate::telemetry::BUFFER_ROWS).set(rows as f64);
    metrics::gauge!(crate::telemetry::BUFFER_OLDEST_AGE)
        .set(oldest.map(|d| d.as_secs_f64()).unwrap_or(0.0));
    if let Some(wal) = &app.wal {
        metrics::gauge!(crate::telemetry::WAL_BYTES).set(wal.live_bytes() as f64);
        metrics::gauge!(crate::telemetry::WAL_MAX_BYTES).set(wal.max_bytes() as f64);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        handle.render(),
    )
}
