//! Liveness (`/health`) and readiness (`/ready`) are different questions.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;
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
