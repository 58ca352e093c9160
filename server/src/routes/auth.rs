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

/// The organizers a request's ingest key may write for; `None`: any.
#[derive(Debug, Clone)]
pub struct IngestScope(pub Option<Vec<String>>);

/// When ingest keys are configured, ingest routes need one. An entry
/// `KEY@org-123` limits that key to organizer org-123 (repeat the key for
/// more organizers); a bare `KEY` may write for any organizer.
pub async fn require_ingest_key(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let keys = &app.config.ingest_keys;
    if !keys.is_empty() {
        let headers = request.headers();
        let given = bearer(headers)
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .unwrap_or("");
        // Compare against every entry so the time taken does not reveal which matched.
        let mut matched = false;
        let mut unrestricted = false;
        let mut organizers = Vec::new();
        for entry in keys {
            let (key, organizer) = match entry.split_once('@') {
                Some((k, o)) => (k, Some(o)),
                None => (entry.as_str(), None),
            };
            if matches(given, key) {
                matched = true;
                match organizer {
                    Some(o) => organizers.push(o.to_string()),
                    None => unrestricted = true,
                }
            }
        }
        if !matched {
            return Err(ApiError::Unauthorized);
        }
        let scope = if unrestricted { None } else { Some(organizers) };
        request.extensions_mut().insert(IngestScope(scope));
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

/// Writes every admin request to `audit_log`: who (a fingerprint of the
/// token, never the token), from where, what (method, path, and the start of
/// the body: the SQL of a query, the policy of a PUT), when, and the status.
/// Refused attempts are recorded too.
pub async fn audit(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    // Present when served by `serve`; a router used on its own has none.
    let remote = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let actor = match (bearer(request.headers()), app.config.admin_token.as_deref()) {
        (Some(given), Some(token)) if matches(given, token) => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(given.as_bytes());
            format!(
                "token:{}",
                digest
                    .iter()
                    .take(4)
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        }
        (Some(_), _) => "invalid token".to_string(),
        (None, _) => "no token".to_string(),
    };
    // The full path: under `nest("/admin")` the URI is stripped of it.
    let path = match request.extensions().get::<axum::extract::OriginalUri>() {
        Some(original) => original.path().to_string(),
        None => request.uri().path().to_string(),
    };
    let method = request.method().to_string();
    let (parts, body) = request.into_parts();
    // Admin bodies are small (SQL, a policy); past the limit the request is
    // refused by the body limit anyway.
    let bytes = axum::body::to_bytes(body, app.config.ingest.max_body_bytes)
        .await
        .unwrap_or_default();
    let detail: String = String::from_utf8_lossy(&bytes).chars().take(4096).collect();
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    let row = serde_json::json!({
        "actor": actor, "remote": remote, "method": method, "path": path,
        "status": response.status().as_u16(), "duration_ms": started.elapsed().as_millis() as u64, "detail": detail,
    });
    let storage = app.storage.clone();
    tokio::spawn(async move {
        let sql = format!(
            "INSERT INTO {}.audit_log (actor, remote, method, path, status, duration_ms, detail) FORMAT JSONEachRow\n{row}",
            crate::DATABASE
        );
        if let Err(e) = storage.execute(&sql).await {
            tracing::warn!(error = %e, %row, "could not write the audit log");
        }
    });
    response
}
