//! `/dashboard`: sign in with a form, a session cookie, the page.
//!
//! - `GET /dashboard`: the figures for a signed-in viewer, else the form;
//! - `POST /dashboard/login`: the form's token or read key; a session
//!   cookie (HttpOnly, SameSite=Strict, Secure under TLS, 12 hours) and a
//!   redirect. No token ever goes in a URL;
//! - `POST /dashboard/logout`;
//! - `GET /dashboard/realtime`: the realtime panel alone, for its refresh.

use axum::Form;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::AppState;
use crate::dashboard::{self, Filter, FilterError, Viewer, page};
use crate::tenants::sessions;

const COOKIE: &str = "bilten_session";

/// The session id from the `Cookie` header. A few lines rather than a
/// cookie crate: one cookie, read, never parsed for attributes.
fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .map(str::to_string)
}

/// The session's viewer, while what signed it in still holds: a read key
/// kept in the store not revoked nor rotated out, a configured token or
/// read key still configured (a session outlives a restart, not a change
/// of secrets).
fn viewer(app: &AppState, headers: &HeaderMap) -> Option<Viewer> {
    let session = app.tenants.session(&session_id(headers)?)?;
    let holds = match session.credential.strip_prefix(STORE_KEY) {
        Some(key) => key
            .split_once(' ')
            .is_some_and(|(id, prefix)| dashboard::key_holds(&app.tenants, id, prefix)),
        None => dashboard::credential_holds(
            &app.config,
            &app.tenants,
            session.organizer.as_deref(),
            &session.credential,
        ),
    };
    let viewer = match session.organizer {
        None => Viewer::Admin,
        Some(organizer) => Viewer::Organizer(organizer),
    };
    holds.then_some(viewer)
}

/// How a session opened with a read key kept in the store names it.
const STORE_KEY: &str = "store-key:";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_is_taken_from_this_servers_own_pages_only() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            same_origin(&h)
        };
        assert!(with(&[]));
        assert!(with(&[("sec-fetch-site", "same-origin")]));
        assert!(!with(&[("sec-fetch-site", "cross-site")]));
        assert!(!with(&[("sec-fetch-site", "same-site")]));
        assert!(with(&[
            ("origin", "http://a.example:8080"),
            ("host", "a.example:8080")
        ]));
        assert!(!with(&[
            ("origin", "http://evil.example"),
            ("host", "a.example:8080")
        ]));
        assert!(!with(&[("origin", "null"), ("host", "a.example:8080")]));
        assert!(!with(&[
            ("origin", "http://a.example:8080.evil"),
            ("host", "a.example:8080")
        ]));
    }
}

/// Every dashboard answer: never cached, never framed, scripts only our own.
fn page(status: StatusCode, html: String) -> Response {
    let mut response = (status, Html(html)).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

#[derive(Debug, Deserialize)]
pub struct FilterParams {
    organizer: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// The filter, or the status and page that refuse it.
fn filter(viewer: &Viewer, p: &FilterParams) -> Result<Filter, (StatusCode, String)> {
    let today = chrono::Utc::now().date_naive();
    Filter::new(
        viewer,
        p.organizer.as_deref(),
        p.from.as_deref(),
        p.to.as_deref(),
        today,
    )
    .map_err(|e| {
        let status = match e {
            FilterError::Forbidden(_) => StatusCode::FORBIDDEN,
            FilterError::Invalid(_) => StatusCode::BAD_REQUEST,
        };
        (status, page::problem(viewer, &e.to_string()))
    })
}

fn unavailable(viewer: &Viewer, e: crate::storage::StorageError) -> Response {
    tracing::warn!(error = %e, "dashboard query failed");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        page::problem(viewer, &format!("The figures cannot be read now: {e}")),
    )
}

/// A signed-in viewer and their filter, from the session cookie and the
/// query string. Without a session the answer is the sign-in form, with
/// `NO_SESSION` as its status (200 for the page, 401 for the realtime
/// panel's refresh); a filter the viewer may not have, its refusal.
pub struct SignedIn<const NO_SESSION: u16> {
    viewer: Viewer,
    filter: Filter,
}

impl<const NO_SESSION: u16> FromRequestParts<AppState> for SignedIn<NO_SESSION> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        let Query(params) = Query::<FilterParams>::from_request_parts(parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let Some(viewer) = viewer(app, &parts.headers) else {
            let status = StatusCode::from_u16(NO_SESSION).expect("a status code");
            return Err(page(status, page::login(None)));
        };
        let filter = filter(&viewer, &params).map_err(|(status, html)| page(status, html))?;
        Ok(SignedIn { viewer, filter })
    }
}

pub async fn show(
    State(app): State<AppState>,
    SignedIn { viewer, filter }: SignedIn<200>,
) -> Response {
    let window = app.config.visits.open_window();
    let registered = app
        .tenants
        .directory()
        .list()
        .iter()
        .map(|o| o.id.clone())
        .collect();
    match dashboard::figures(&*app.storage, &viewer, &filter, window, registered).await {
        Ok(figures) => page(StatusCode::OK, page::dashboard(&viewer, &filter, &figures)),
        Err(e) => unavailable(&viewer, e),
    }
}

pub async fn realtime(
    State(app): State<AppState>,
    SignedIn { viewer, filter }: SignedIn<401>,
) -> Response {
    match dashboard::realtime(&*app.storage, &filter).await {
        Ok((now, points)) => page(StatusCode::OK, page::realtime_panel(now, &points)),
        Err(e) => unavailable(&viewer, e),
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

/// Whether a browser's request to sign in or out comes from a page of this
/// server (a form on another site must not sign a visitor in or out):
/// `Sec-Fetch-Site` says so, or `Origin` names this server's host. A
/// request with neither is no browser's, and is let through.
fn same_origin(headers: &HeaderMap) -> bool {
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header(header::HeaderName::from_static("sec-fetch-site")) {
        return matches!(site, "same-origin" | "none");
    }
    match header(header::ORIGIN) {
        None => true,
        Some(origin) => {
            let authority = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            authority.is_some() && authority == header(header::HOST)
        }
    }
}

fn cross_site() -> Response {
    page(
        StatusCode::FORBIDDEN,
        page::login(Some(
            "Sign in from this server's own page: the request came from another site.",
        )),
    )
}

/// Sign-ins go to the audit log like admin requests: a leaked token used
/// here shows there too (its fingerprint, never the token). Failures are
/// limited per client address and in all (`dashboard::signin`).
pub async fn login(
    State(app): State<AppState>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let client = super::ingest::client_of(&extensions, &headers, &app.config.browser);
    let row = |actor: String, status: StatusCode| crate::ops::audit::AuditRow {
        at: crate::storage::datetime64_text(&chrono::Utc::now()),
        actor,
        remote: client.map(|ip| ip.to_string()).unwrap_or_default(),
        method: "POST".into(),
        path: "/dashboard/login".into(),
        status: status.as_u16(),
        duration_ms: 0,
        detail: String::new(),
    };
    let attempt = match app.signin.attempt(client) {
        Ok(attempt) => attempt,
        Err(wait) => {
            app.audit.record_refused(row(
                "sign-in over the failure limit".into(),
                StatusCode::TOO_MANY_REQUESTS,
            ));
            let mut response = page(
                StatusCode::TOO_MANY_REQUESTS,
                page::login(Some(
                    "Too many failed sign-ins: wait a little before trying again.",
                )),
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
            return response;
        }
    };
    let signed_in = match dashboard::authenticate_with(&app.config, &app.tenants, &form.token) {
        Ok(signed_in) => signed_in,
        Err(why) => {
            // The attempt keeps its units: a failure.
            app.audit
                .record_refused(row("invalid token".into(), StatusCode::UNAUTHORIZED));
            // A guess costs a second: slows a dictionary to a crawl, unnoticed by
            // someone who mistyped.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let why =
                why.unwrap_or_else(|| "That is neither the admin token nor a read key.".into());
            return page(StatusCode::UNAUTHORIZED, page::login(Some(&why)));
        }
    };
    let viewer = signed_in.viewer;
    let actor = match &viewer {
        Viewer::Admin => super::auth::fingerprint(form.token.trim()),
        Viewer::Organizer(org) => format!("read key of {org}"),
    };
    attempt.succeeded();
    app.audit.record(row(actor, StatusCode::SEE_OTHER));
    // Capped per credential: a flood of sign-ins with one key ends that
    // key's own oldest sessions, nobody else's.
    let credential = match &signed_in.key {
        Some((id, prefix)) => format!("{STORE_KEY}{id} {prefix}"),
        None => app.tenants.credential(form.token.trim()),
    };
    let organizer = match viewer {
        Viewer::Admin => None,
        Viewer::Organizer(organizer) => Some(organizer),
    };
    let id = match app.tenants.open_session(organizer, credential).await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "a dashboard session could not be opened");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                page::login(Some(&format!("Signing in failed: {e}. Try again shortly."))),
            );
        }
    };
    let secure = if app.config.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={id}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        sessions::SESSION_TTL.as_secs()
    );
    let mut response = Redirect::to("/dashboard").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a cookie of hex and ASCII"),
    );
    response
}

pub async fn logout(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let closed = match session_id(&headers) {
        Some(id) => app.tenants.close_session(&id).await,
        None => Ok(()),
    };
    let mut response = match closed {
        Ok(()) => Redirect::to("/dashboard").into_response(),
        // The cookie still goes, but the session may live on elsewhere:
        // say so rather than pretend.
        Err(e) => {
            tracing::warn!(error = %e, "a dashboard session could not be closed in the store");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                page::login(Some(
                    "Signing out could not be recorded: the session may still be open on \
                     another server. Try again shortly.",
                )),
            )
        }
    };
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0"
        ))
        .expect("ASCII"),
    );
    response
}
