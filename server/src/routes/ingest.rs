//! `POST /v1/events`, `/v1/page-views`, `/v1/ticket-sales`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Serialize;

use crate::AppState;
use crate::error::ApiError;
use crate::ingest::{self, BodyFormat, Rejection, Table};

#[derive(Debug, Serialize)]
pub struct IngestResponse {
    pub accepted: usize,
    pub rejected: usize,
    /// One entry per rejected event: its index in the request and why.
    pub errors: Vec<Rejection>,
}

pub async fn events(
    state: State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    ingest(Table::Events, state, headers, body).await
}

pub async fn page_views(
    state: State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    ingest(Table::PageViews, state, headers, body).await
}

pub async fn ticket_sales(
    state: State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    ingest(Table::TicketSales, state, headers, body).await
}

#[tracing::instrument(skip_all, fields(table = table.name()))]
async fn ingest(
    table: Table,
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = BodyFormat::from_content_type(content_type)
        .ok_or_else(|| ApiError::UnsupportedMediaType(content_type.to_string()))?;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge(app.config.ingest.max_body_bytes)
        }
        _ => ApiError::BadBody(e.body_text()),
    })?;
    let outcome = ingest::process(
        table,
        &body,
        format,
        app.config.ingest.max_events_per_request,
        chrono::Utc::now(),
    )?;
    app.batcher.push(table, &outcome.rows, outcome.accepted);
    let status = if outcome.accepted > 0 {
        StatusCode::ACCEPTED
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((
        status,
        Json(IngestResponse {
            accepted: outcome.accepted,
            rejected: outcome.rejections.len(),
            errors: outcome.rejections,
        }),
    ))
}
