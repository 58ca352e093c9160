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
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let client = super::ingest::client_of(&extensions, &headers, &app.config.browser);
    // Wrong keys count against the address as failed sign-ins do: past its
    // budget, no key from it is judged for a while (the keys here are the
    // dashboard's, so guessing here must cost what it costs there).
    if let Some(wait) = app.signin.key_refused(client) {
        return ApiError::TooManyWrongKeys(wait.as_secs().max(1)).into_response();
    }
    answer(&app, &headers, &body, client).await.into_response()
}

async fn answer(
    app: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    client: Option<std::net::IpAddr>,
) -> Result<Json<Value>, ApiError> {
    let signed_in = match super::auth::bearer(headers) {
        Some(key) => dashboard::authenticate_with(&app.config, &app.tenants, key),
        None => Err(None),
    };
    let viewer = match signed_in {
        Ok(signed_in) => signed_in.viewer,
        Err(why) => {
            app.signin.key_failed(client);
            return Err(why.map_or(ApiError::Unauthorized, ApiError::KeyRefused));
        }
    };
    let query: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadQuery(format!("the body is not a JSON query: {e}")))?;
    let organizer = match &viewer {
        Viewer::Admin => None,
        Viewer::Organizer(org) => Some(org.as_str()),
    };
    let plan = stats::plan(&query, organizer, chrono::Utc::now().date_naive())?
        .open_within(app.config.visits.open_window());
    let mut answer = stats::run(&*app.storage, &plan).await?;
    // Visits (and the pages and names counted with them) are kept by the
    // server as rows arrive: switched off, their figures read nothing.
    if !app.config.visits.enabled
        && let Some(warnings) = answer["meta"]["warnings"].as_array_mut()
    {
        warnings.push(
            "visits are switched off on this server (visits.enabled = false): visit, page and \
             event-name figures count nothing stored since"
                .into(),
        );
    }
    Ok(Json(answer))
}
