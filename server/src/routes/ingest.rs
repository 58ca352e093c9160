//! `POST /v1/events`, `/v1/page-views`, `/v1/ticket-sales`.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde::Deserialize;

use super::AppState;
use super::auth::IngestScope;
use crate::error::ApiError;
use crate::ingest::BodyFormat;
use crate::intake::Receipt;
use crate::model::Table;
use crate::telemetry;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    /// Answer only once storage has confirmed the rows.
    #[serde(default)]
    wait: bool,
}

type Reply = Result<(StatusCode, Json<Receipt>), ApiError>;

/// `POST /v1/{kind}`: `events`, `page-views` or `ticket-sales`.
#[tracing::instrument(skip_all, fields(kind = %kind))]
pub async fn ingest(
    Path(kind): Path<String>,
    State(app): State<AppState>,
    Query(params): Query<Params>,
    scope: Option<axum::Extension<IngestScope>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let table = Table::from_route(&kind).ok_or(ApiError::NotFound)?;
    let scope = scope.and_then(|s| s.0.0);
    let reply = accept(&app, table, params.wait, scope.as_deref(), &headers, body).await;
    let status = match &reply {
        Ok((status, _)) => *status,
        Err(e) => e.status(),
    };
    metrics::counter!(telemetry::INGEST_REQUESTS, "table" => table.name(), "status" => status.as_str().to_string()).increment(1);
    reply
}

async fn accept(
    app: &AppState,
    table: Table,
    wait: bool,
    scope: Option<&[String]>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
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
    let receipt = app.intake.accept(table, &body, format, scope, wait).await?;
    let status = match (receipt.accepted, receipt.stored) {
        (0, _) if receipt.quarantined > 0 => StatusCode::ACCEPTED,
        (0, _) if receipt.errors.is_empty() => StatusCode::OK,
        (0, _) => StatusCode::BAD_REQUEST,
        (_, true) => StatusCode::OK,
        _ => StatusCode::ACCEPTED,
    };
    Ok((status, Json(receipt)))
}
