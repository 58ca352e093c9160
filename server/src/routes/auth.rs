//! Key checks for ingest and admin routes, in constant time.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn matches(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// When ingest keys are configured, ingest routes need one.
pub async fn require_ingest_key(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let keys = &app.config.ingest_keys;
    if !keys.is_empty() {
        let headers = request.headers();
        let given =
            bearer(headers).or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
        // Compare against every key so the time taken does not reveal which matched.
        let ok = given.is_some_and(|g| keys.iter().fold(false, |acc, k| acc | matches(g, k)));
        if !ok {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}

/// Admin routes need the admin token; without one configured they are off.
pub async fn require_admin(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(token) = app.config.admin_token.as_deref() else {
        return Err(ApiError::AdminDisabled);
    };
    match bearer(request.headers()) {
        Some(given) if matches(given, token) => Ok(next.run(request).await),
        _ => Err(ApiError::AdminUnauthorized),
    }
}
