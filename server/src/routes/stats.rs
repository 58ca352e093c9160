//! `POST /api/v2/query`: the Stats API (`stats`), for an organizer's read
//! key (its organizer only) or the admin token (any), as
//! `Authorization: Bearer`.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::AppState;
use crate::dashboard::{self, Viewer};
use crate::error::ApiError;
use crate::stats::{self, StatsError};

impl From<StatsError> for ApiError {
    fn from(e: StatsError) -> Self {
        match e {
            StatsError::Invalid(m) => ApiError::BadQuery(m),
            StatsError::Forbidden(m) => ApiError::Forbidden(m),
            StatsError::Storage(e) => e.into(),
        }
    }
}

pub async fn query(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    answer(&app, &headers, &body).await.into_response()
}

async fn answer(app: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Json<Value>, ApiError> {
    let viewer = super::auth::bearer(headers)
        .and_then(|key| dashboard::authenticate(&app.config, key))
        .ok_or(ApiError::Unauthorized)?;
    let query: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadQuery(format!("the body is not a JSON query: {e}")))?;
    let organizer = match &viewer {
        Viewer::Admin => None,
        Viewer::Organizer(org) => Some(org.as_str()),
    };
    let plan = stats::plan(&query, organizer, chrono::Utc::now().date_naive())?;
    Ok(Json(stats::run(&*app.storage, &plan).await?))
}
