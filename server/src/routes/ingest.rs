//! `POST /v1/events`, `/v1/page-views`, `/v1/ticket-sales`,
//! `/v1/engagements`; the browser tracker's `POST /v1/collect/{kind}` and
//! `GET /v1/tracker.js`.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde::Deserialize;

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::response::IntoResponse;

use super::AppState;
use super::auth::IngestScope;
use crate::config::browser::BrowserConfig;
use crate::error::ApiError;
use crate::ingest::{BodyFormat, Stamp};
use crate::intake::{Receipt, Sender};
use crate::model::Table;
use crate::telemetry;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    /// Answer only once storage has confirmed the rows.
    #[serde(default)]
    wait: bool,
}

type Reply = Result<(StatusCode, Json<Receipt>), ApiError>;

/// What every ingest handler extracts besides its path.
pub struct Request {
    pub(super) app: AppState,
    pub(super) wait: bool,
    pub(super) scope: Option<IngestScope>,
    pub(super) peer: Option<SocketAddr>,
    pub(super) headers: HeaderMap,
    pub(super) body: Result<Bytes, BytesRejection>,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for Request
where
    AppState: axum::extract::FromRef<S>,
{
    type Rejection = axum::response::Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::FromRequestParts;
        let (mut parts, body) = req.into_parts();
        let Query(params) = Query::<Params>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let scope = parts.extensions.get::<IngestScope>().cloned();
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        // Reading the body needs the extensions (its limit), not the headers.
        let headers = std::mem::take(&mut parts.headers);
        let request = axum::extract::Request::from_parts(parts, body);
        Ok(Request {
            app: axum::extract::FromRef::from_ref(state),
            wait: params.wait,
            scope,
            peer,
            headers,
            body: Bytes::from_request(request, state).await,
        })
    }
}

/// `POST /v1/{kind}`: `events`, `page-views` or `ticket-sales`.
#[tracing::instrument(skip_all, fields(kind = %kind))]
pub async fn ingest(Path(kind): Path<String>, request: Request) -> Reply {
    if kind == Table::PageEngagements.route() {
        return counted(Table::PageEngagements, engagements(request, false).await);
    }
    let table = Table::from_route(&kind).ok_or(ApiError::NotFound)?;
    counted(table, take(request, table, false).await)
}

/// `POST /v1/collect/{kind}`: the tracker's beacons, `events`,
/// `page-views` or `engagements`. A beacon sets no headers: its body is JSON
/// sent as `text/plain`, and its public key is in `?key=`.
#[tracing::instrument(skip_all, fields(kind = %kind))]
pub async fn collect(Path(kind): Path<String>, request: Request) -> Reply {
    let table = match Table::from_route(&kind) {
        Some(t @ (Table::Events | Table::PageViews)) => t,
        _ if kind == Table::PageEngagements.route() => {
            return counted(Table::PageEngagements, engagements(request, true).await);
        }
        _ => return Err(ApiError::NotFound),
    };
    counted(table, take(request, table, true).await)
}

/// `GET /v1/tracker.js`: the browser tracker, built from `clients/js`.
pub async fn tracker_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        TRACKER_JS,
    )
}

/// The tracker as `clients/js`'s build writes it (a test rebuilds it and
/// compares).
pub const TRACKER_JS: &str = include_str!("../../../clients/js/dist/tracker.min.js");

fn counted(table: Table, reply: Reply) -> Reply {
    let status = match &reply {
        Ok((status, _)) => *status,
        Err(e) => e.status(),
    };
    metrics::counter!(telemetry::INGEST_REQUESTS, "table" => table.name(), "status" => status.as_str().to_string()).increment(1);
    reply
}

/// Public keys' limits, and a page's user agent and address for events
/// without their own. `beacon`: from the tracker, whose body may be sent as
/// `text/plain`.
async fn take(request: Request, table: Table, beacon: bool) -> Reply {
    if request.scope.as_ref().is_some_and(|s| s.public) && table == Table::TicketSales {
        return Err(ApiError::Forbidden(
            "a public key writes page views and events; ticket sales come from your backend, \
             with an ingest key"
                .into(),
        ));
    }
    let stamp = request.stamp(beacon);
    let Request {
        app,
        wait,
        scope,
        headers,
        body,
        ..
    } = request;
    let sender = Sender {
        scope: scope.as_ref().and_then(|s| s.organizers.as_deref()),
        stamp: stamp.as_ref(),
    };
    let format = body_format(&headers, beacon)?;
    accept(&app, table, wait, sender, format, body).await
}

/// The body's format, from its content type; a beacon's `text/plain` is JSON.
fn body_format(headers: &HeaderMap, beacon: bool) -> Result<BodyFormat, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match BodyFormat::from_content_type(content_type) {
        Some(f) => Ok(f),
        None if beacon && content_type.starts_with("text/plain") => Ok(BodyFormat::Json),
        None => Err(ApiError::UnsupportedMediaType(content_type.to_string())),
    }
}

/// Engagements: the time page views were visible (`ingest::engagement`).
async fn engagements(request: Request, beacon: bool) -> Reply {
    let stamp = request.stamp(beacon);
    let format = body_format(&request.headers, beacon)?;
    let sender = Sender {
        scope: request.scope.as_ref().and_then(|s| s.organizers.as_deref()),
        stamp: stamp.as_ref(),
    };
    let body = body_bytes(&request.app, request.body)?;
    let receipt = request
        .app
        .intake
        .engagements(&body, format, sender)
        .await?;
    let status = match (receipt.accepted, receipt.errors.is_empty()) {
        (0, false) if receipt.taken() == 0 && receipt.suspended == receipt.errors.len() => {
            StatusCode::FORBIDDEN
        }
        (0, false) => StatusCode::BAD_REQUEST,
        _ => StatusCode::ACCEPTED,
    };
    Ok((status, Json(receipt)))
}

impl Request {
    /// A page's user agent and address, when the request is a page's: it
    /// has an `Origin`, or it is a beacon. A backend's are never its events'.
    pub(super) fn stamp(&self, beacon: bool) -> Option<Stamp> {
        if !beacon && !self.headers.contains_key(header::ORIGIN) {
            return None;
        }
        let user_agent = self
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let ip = client_ip(self.peer, &self.headers, &self.app.config.browser)
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        Some(Stamp::new(user_agent, ip))
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the last address in `X-Forwarded-For` that is not one (the ones before
/// it could be written by anyone).
/// The client's address of a request a handler takes whole: its peer (when
/// served by `serve`; a router used on its own has none), as [`client_ip`]
/// reads it.
pub fn client_of(
    extensions: &axum::http::Extensions,
    headers: &HeaderMap,
    browser: &BrowserConfig,
) -> Option<IpAddr> {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    client_ip(peer, headers, browser)
}

pub fn client_ip(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    browser: &BrowserConfig,
) -> Option<IpAddr> {
    let trusted = |ip: &IpAddr| browser.trusted_proxies.iter().any(|n| n.contains(ip));
    let mut ip = peer?.ip().to_canonical();
    if !trusted(&ip) {
        return Some(ip);
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(hop) => {
                ip = hop.to_canonical();
                if !trusted(&ip) {
                    break;
                }
            }
            // A hop we cannot read: stop at the last address we could.
            Err(_) => break,
        }
    }
    Some(ip)
}

async fn accept(
    app: &AppState,
    table: Table,
    wait: bool,
    sender: Sender<'_>,
    format: BodyFormat,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let body = body_bytes(app, body)?;
    let receipt = app
        .intake
        .accept(table, &body, format, sender, wait)
        .await?;
    let status = match (receipt.accepted, receipt.stored) {
        (0, _) if receipt.quarantined > 0 => StatusCode::ACCEPTED,
        (0, _) if receipt.errors.is_empty() => StatusCode::OK,
        // Every event refused for a suspended organizer: not the request's fault.
        (0, _) if receipt.taken() == 0 && receipt.suspended == receipt.errors.len() => {
            StatusCode::FORBIDDEN
        }
        (0, _) => StatusCode::BAD_REQUEST,
        (_, true) => StatusCode::OK,
        _ => StatusCode::ACCEPTED,
    };
    Ok((status, Json(receipt)))
}

/// The body, or why it could not be read.
pub(super) fn body_bytes(
    app: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge(app.config.ingest.max_body_bytes)
        }
        _ => ApiError::BadBody(e.body_text()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", forwarded.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only() {
        let peer = |ip: &str| Some(SocketAddr::new(ip.parse().unwrap(), 40000));
        let mut browser = BrowserConfig::default();
        let spoofed = headers("198.51.100.7");
        // No trusted proxy: whatever the header says, the peer is the client.
        assert_eq!(
            client_ip(peer("203.0.113.5"), &spoofed, &browser),
            Some("203.0.113.5".parse().unwrap())
        );
        browser.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        // From a trusted proxy: the last address it was not given by a proxy
        // of ours. Earlier entries could be written by the client.
        let chain = headers("1.1.1.1, 198.51.100.7, 10.0.0.2");
        assert_eq!(
            client_ip(peer("10.0.0.1"), &chain, &browser),
            Some("198.51.100.7".parse().unwrap())
        );
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_ip(peer("203.0.113.5"), &chain, &browser),
            Some("203.0.113.5".parse().unwrap())
        );
        // Garbage in the header stops the walk at what could be read.
        assert_eq!(
            client_ip(peer("10.0.0.1"), &headers("nonsense, 10.0.0.3"), &browser),
            Some("10.0.0.3".parse().unwrap())
        );
        // IPv4 seen through an IPv6 socket is the IPv4 address.
        assert_eq!(
            client_ip(peer("::ffff:203.0.113.9"), &HeaderMap::new(), &browser),
            Some("203.0.113.9".parse().unwrap())
        );
    }
}
