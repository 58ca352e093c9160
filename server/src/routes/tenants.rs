//! `/admin/keys`: keys made, listed, shown, rotated and revoked, kept in
//! the store (`tenants`); `/admin/organizers`: organizers made, renamed,
//! suspended and resumed. A secret appears once, in the answer that made
//! it; the audit log records each change as before and after, never a
//! secret.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{AuditNote, bearer, fingerprint};
use crate::error::ApiError;
use crate::tenants::keys::NewKey;
use crate::tenants::organizers;
use crate::tenants::{self, now_ms};

fn actor(headers: &HeaderMap) -> String {
    bearer(headers).map(fingerprint).unwrap_or_default()
}

/// Key `id` as this server holds it now, for the audit log's "before".
fn shown(app: &AppState, id: &str) -> Option<Value> {
    app.tenants
        .ring()
        .get(id)
        .map(|k| tenants::view(k, None, now_ms()))
}

/// A key's view with its new secret, for the one answer that shows it.
fn with_secret(view: &Value, secret: String) -> Value {
    let mut body = view.clone();
    body["secret"] = json!(secret);
    body["note"] = json!("the secret is shown this once: keep it now");
    body
}

/// The answer, with what the audit log keeps of the change.
fn answer(status: StatusCode, body: Value, before: Option<Value>, after: &Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(AuditNote(
        json!({"before": before, "after": after}).to_string(),
    ));
    response
}

/// `POST /admin/keys` `{"kind", "organizers", "origins"}`: a new key and
/// its secret, shown this once.
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let new: NewKey = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadQuery(format!(
            "the body is not a key request ({{\"kind\": \"ingest\"|\"public\"|\"read\", \
             \"organizers\": [...], \"origins\": [...]}}): {e}"
        ))
    })?;
    let (key, secret) = app.tenants.create(new, &actor(&headers)).await?;
    let view = tenants::view(&key, None, now_ms());
    Ok(answer(
        StatusCode::CREATED,
        with_secret(&view, secret),
        None,
        &view,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListFilter {
    organizer: Option<String>,
    kind: Option<String>,
    state: Option<String>,
}

/// `GET /admin/keys[?organizer=&kind=&state=]`: every key, oldest first.
pub async fn list(
    State(app): State<AppState>,
    Query(filter): Query<ListFilter>,
) -> Result<Json<Value>, ApiError> {
    let uses = app.tenants.last_uses().await;
    let now = now_ms();
    let keys: Vec<Value> = app
        .tenants
        .ring()
        .keys()
        .iter()
        .filter(|k| {
            filter
                .organizer
                .as_ref()
                .is_none_or(|o| k.organizers.contains(o))
                && filter.kind.as_deref().is_none_or(|x| x == k.kind.name())
                && filter.state.as_deref().is_none_or(|s| s == k.state())
        })
        .map(|k| tenants::view(k, uses.get(&k.id).copied(), now))
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

/// `GET /admin/keys/{id}`.
pub async fn show(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let uses = app.tenants.last_uses().await;
    let key = app
        .tenants
        .ring()
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::NoSuch(format!("no key {id}")))?;
    Ok(Json(tenants::view(&key, uses.get(&id).copied(), now_ms())))
}

/// `DELETE /admin/keys/{id}`: revoked, on every server within a poll.
pub async fn revoke(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let before = shown(&app, &id);
    let key = app.tenants.revoke(&id, &actor(&headers)).await?;
    let view = tenants::view(&key, None, now_ms());
    Ok(answer(StatusCode::OK, view.clone(), before, &view))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotation {
    /// How long the old secret keeps working: `24h`, `30m`, `0s`.
    grace: Option<String>,
}

/// `POST /admin/keys/{id}/rotate` `[{"grace": "24h"}]`: a new secret,
/// shown this once; the old one works for the grace period.
pub async fn rotate(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let rotation: Rotation = match body.iter().all(u8::is_ascii_whitespace) {
        true => Rotation::default(),
        false => serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadQuery(format!(
                "the body is not a rotation ({{\"grace\": \"24h\"}}, or none): {e}"
            ))
        })?,
    };
    let grace = rotation
        .grace
        .map(|g| {
            humantime::parse_duration(&g)
                .map_err(|e| ApiError::BadQuery(format!("grace: {g:?}: {e} (say 24h, 30m, 0s)")))
        })
        .transpose()?;
    let before = shown(&app, &id);
    let (key, secret) = app.tenants.rotate(&id, grace, &actor(&headers)).await?;
    let view = tenants::view(&key, None, now_ms());
    Ok(answer(
        StatusCode::OK,
        with_secret(&view, secret),
        before,
        &view,
    ))
}

/// `POST /admin/organizers` `{"id", "name"}`.
pub async fn create_organizer(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let new: organizers::NewOrganizer = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadQuery(format!(
            "the body is not an organizer ({{\"id\": \"org-123\", \"name\": \"…\"}}): {e}"
        ))
    })?;
    let made = app.tenants.create_organizer(new, &actor(&headers)).await?;
    let view = organizers::view(&made);
    Ok(answer(StatusCode::CREATED, view.clone(), None, &view))
}

/// `GET /admin/organizers`: every organizer made through the API, by id.
pub async fn organizers(State(app): State<AppState>) -> Json<Value> {
    let all: Vec<Value> = app
        .tenants
        .directory()
        .list()
        .iter()
        .map(|o| organizers::view(o))
        .collect();
    Json(json!({ "organizers": all }))
}

/// `PATCH /admin/organizers/{id}` `{"name", "suspended"}`: either or both.
pub async fn patch_organizer(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let patch: organizers::Patch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadQuery(format!(
            "the body is not a change to an organizer ({{\"name\": \"…\", \"suspended\": true}}): {e}"
        ))
    })?;
    let before = app
        .tenants
        .directory()
        .get(&id)
        .map(|o| organizers::view(o));
    let after = app
        .tenants
        .patch_organizer(&id, &patch, &actor(&headers))
        .await?;
    let view = organizers::view(&after);
    Ok(answer(StatusCode::OK, view.clone(), before, &view))
}
