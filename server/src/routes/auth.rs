//! Key checks for ingest and admin routes, in constant time.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::config::SecretDigest;
use crate::error::ApiError;
use crate::ops::audit::AuditRow;
use crate::tenants::keys::{Found, KeyKind};

pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn matches(given: &str, expected: &str) -> bool {
    crate::config::same_secret(given, expected)
}

/// Who an ingest request is from, once its key is checked.
#[derive(Debug, Clone)]
pub struct IngestScope {
    /// The organizers it may write for; `None`: any.
    pub organizers: Option<Vec<String>>,
    /// A public key, from a web page: it writes page views and events only.
    pub public: bool,
}

/// Basic auth's user and password (Segment's libraries send their write
/// key as the user; ClickHouse's clients their credentials).
pub(super) fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let encoded = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8_lossy(&decoded);
    let (user, password) = text.split_once(':').unwrap_or((&text, ""));
    Some((user.to_string(), password.to_string()))
}

/// `?key=`: where a page's beacon, which sets no headers, puts its public key.
/// Every `key=` in the URL, in order: a secret one is refused wherever it
/// stands, not only first.
fn url_keys(uri: &axum::http::Uri) -> Vec<String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "key")
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// Ingest routes take:
/// - an ingest key (`BILTEN_INGEST_KEYS`, or one made at `/admin/keys`) in
///   `Authorization: Bearer`, `X-API-Key` or Basic auth's username
///   (Segment's write key). A configured entry `KEY@org-123` limits that
///   key to organizer org-123 (repeat the key for more organizers); a bare
///   `KEY` may write for any organizer; a key made through the API names
///   its organizers;
/// - a public key (`[[browser.public_keys]]`, or made through the API) in
///   those places or `?key=`, from a page of one of its origins (the
///   `Origin` header);
/// - anything, when no ingest key is configured nor was ever made (a
///   public key still limits what its requests may do).
///
/// A configured key wins over a made one (they cannot be alike: made
/// secrets are random). A revoked or rotated-out key is refused with a
/// 401 that says so. An ingest key in a URL is refused: URLs end up in
/// logs and histories.
pub async fn require_ingest_key(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let keys = &app.config.ingest_keys;
    let public = &app.config.browser.public_keys;
    let ring = app.tenants.ring();
    let headers = request.headers();
    let in_header = bearer(headers)
        .map(str::to_string)
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .or_else(|| basic_auth(headers).map(|(user, _)| user));
    let url_keys = url_keys(request.uri());
    let in_url = url_keys.first().cloned();
    // Closed once an ingest key exists, configured or made (and until the
    // store's keys are read, since some may be, or once a row there cannot
    // be verified).
    let open = keys.is_empty() && app.tenants.keeps_open();
    if in_header.is_none() && in_url.is_none() && open {
        return Ok(next.run(request).await);
    }
    let secret_in_url = || {
        ApiError::Forbidden(
            "an ingest key is secret: send it in the Authorization header, never in a URL \
             (and replace this one, which may now be in logs)"
                .into(),
        )
    };
    // Compare against every entry so the time taken does not reveal which
    // matched; what was sent is hashed once, the keys were at load.
    let given = SecretDigest::of(in_header.as_deref().unwrap_or(""));
    let sent_in_url: Vec<SecretDigest> = url_keys.iter().map(|k| SecretDigest::of(k)).collect();
    let mut matched = false;
    let mut unrestricted = false;
    let mut organizers = Vec::new();
    for entry in keys {
        if entry.digest.matches(&given) {
            matched = true;
            match &entry.organizer {
                Some(o) => organizers.push(o.clone()),
                None => unrestricted = true,
            }
        }
        if sent_in_url.iter().any(|u| entry.digest.matches(u)) {
            return Err(secret_in_url());
        }
    }
    let now = crate::tenants::now_ms();
    let made = |secret: &str| {
        (!ring.is_empty())
            .then(|| ring.lookup(&app.tenants.digest(secret), now))
            .flatten()
    };
    if url_keys
        .iter()
        .any(|k| made(k).is_some_and(|f| f.key().kind == KeyKind::Ingest))
    {
        return Err(secret_in_url());
    }
    let candidate = in_header.as_deref().or(in_url.as_deref()).unwrap_or("");
    let scope = if matched {
        IngestScope {
            organizers: (!unrestricted).then_some(organizers),
            public: false,
        }
    } else if let Some(found) = made(candidate) {
        if let Some(stale) = app.tenants.stale(now) {
            return Err(stale_keys(stale));
        }
        let key = match found {
            Found::Valid(key) => key,
            refused => return Err(ApiError::KeyRefused(refused.why())),
        };
        let scope = match key.kind {
            KeyKind::Ingest => IngestScope {
                organizers: Some(key.organizers.clone()),
                public: false,
            },
            KeyKind::Public => {
                check_origin(headers, |o| key.allows(o))?;
                IngestScope {
                    organizers: Some(key.organizers.clone()),
                    public: true,
                }
            }
            KeyKind::Read => {
                return Err(ApiError::KeyRefused(
                    "a read key reads figures (the dashboard, the Stats API); events are sent \
                     with an ingest or a public key"
                        .into(),
                ));
            }
        };
        key.mark_used(now);
        scope
    } else {
        let mut found = None;
        for k in public {
            if matches(candidate, &k.key) {
                found = Some(k);
            }
        }
        let Some(key) = found else {
            // Open (no ingest keys): a key it does not know is no reason to
            // refuse; Segment's libraries always send one.
            return match open {
                true => Ok(next.run(request).await),
                false if !app.tenants.loaded() && keys.is_empty() => Err(ApiError::NotReady(
                    "the keys kept in the store are not read yet".into(),
                )),
                false => Err(ApiError::Unauthorized),
            };
        };
        check_origin(headers, |o| key.allows(o))?;
        IngestScope {
            organizers: Some(vec![key.organizer.clone()]),
            public: true,
        }
    };
    request.extensions_mut().insert(scope);
    Ok(next.run(request).await)
}

/// Keys kept in the store are not taken when they were not read for
/// `tenants.max_stale`: one may have been revoked meanwhile.
pub(super) fn stale_keys(stale: std::time::Duration) -> ApiError {
    ApiError::NotReady(format!(
        "the keys kept in the store were last read {} s ago (over tenants.max_stale): keys \
         made through /admin/keys are not taken until they are read again",
        stale.as_secs()
    ))
}

/// A public key's request comes from a page of one of its origins.
fn check_origin(headers: &HeaderMap, allows: impl Fn(&str) -> bool) -> Result<(), ApiError> {
    match headers.get("origin").and_then(|o| o.to_str().ok()) {
        Some(origin) if allows(origin) => Ok(()),
        Some(origin) => Err(ApiError::Forbidden(format!(
            "this public key is not for pages of {origin}: add the origin to its list"
        ))),
        None => Err(ApiError::Forbidden(
            "a public key works from web pages only (the request has no Origin); \
             a backend sends an ingest key"
                .into(),
        )),
    }
}

/// Admin bodies are SQL, a retention policy or a small JSON request.
pub const ADMIN_BODY_MAX: usize = 1 << 20;
/// How much of a body the audit row keeps.
const AUDIT_DETAIL_CHARS: usize = 4096;

/// Every `/admin` request passes here, in this order:
/// 1. the token is checked before a byte of the body is read, and a refused
///    request is recorded (rate-limited: see [`crate::ops::audit`]);
/// 2. the body is read, up to [`ADMIN_BODY_MAX`] after decompression; an
///    oversized, unreadable or aborted body is a 4xx and nothing runs. An
///    unreadable body never reaches a handler as an empty one, which some
///    take to mean "all defaults" (a restore over the live database, say);
/// 3. the handler runs, and the request is recorded with its status: who
///    (a fingerprint of the token, never the token), from where, what (the
///    start of the body: the SQL of a query, the policy of a PUT), and when.
pub async fn admin_gate(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let at = crate::storage::datetime64_text(&chrono::Utc::now());
    // Present when served by `serve`; a router used on its own has none.
    let remote = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    // The full path: under `nest("/admin")` the URI is stripped of it.
    let path = match request.extensions().get::<axum::extract::OriginalUri>() {
        Some(original) => original.path().to_string(),
        None => request.uri().path().to_string(),
    };
    let method = request.method().to_string();
    let row = |actor: String, status: u16, detail: String| AuditRow {
        at: at.clone(),
        actor,
        remote: remote.clone(),
        method: method.clone(),
        path: path.clone(),
        status,
        duration_ms: started.elapsed().as_millis() as u64,
        detail,
    };
    let given = bearer(request.headers());
    let actor = match (app.config.admin_token.as_deref(), given) {
        (Some(token), Some(given)) if matches(given, token) => fingerprint(given),
        (token, given) => {
            let error = match token {
                None => ApiError::AdminDisabled,
                Some(_) => ApiError::AdminUnauthorized,
            };
            let actor = if given.is_some() {
                "invalid token"
            } else {
                "no token"
            };
            let response = error.into_response();
            app.audit
                .record_refused(row(actor.into(), response.status().as_u16(), String::new()));
            return response;
        }
    };
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, ADMIN_BODY_MAX).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            let error = if too_large {
                ApiError::PayloadTooLarge(ADMIN_BODY_MAX)
            } else {
                ApiError::BadBody(e.to_string())
            };
            let detail = error.to_string();
            let response = error.into_response();
            app.audit
                .record(row(actor, response.status().as_u16(), detail));
            return response;
        }
    };
    let detail: String = String::from_utf8_lossy(&bytes)
        .chars()
        .take(AUDIT_DETAIL_CHARS)
        .collect();
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    // A handler that says what changed is recorded by that, not the body.
    let detail = match response.extensions().get::<AuditNote>() {
        Some(note) => note.0.chars().take(AUDIT_DETAIL_CHARS).collect(),
        None => detail,
    };
    app.audit
        .record(row(actor, response.status().as_u16(), detail));
    response
}

/// What an admin change recorded in the audit log in place of its body
/// (before and after, never a secret), set on the response by its handler.
#[derive(Debug, Clone)]
pub struct AuditNote(pub String);

/// Who made an admin request, without the secret: the first 4 bytes of the
/// token's SHA-256.
pub(super) fn fingerprint(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("token:{hex}")
}
