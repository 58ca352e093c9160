//! `POST /v1/events`, `/v1/page-views`, `/v1/ticket-sales`.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::AppState;
use crate::error::ApiError;
use crate::ingest::{self, BodyFormat, Rejection, Table};
use crate::routes::auth::IngestScope;
use crate::telemetry;
use crate::wal::Record;

#[derive(Debug, Serialize)]
pub struct IngestResponse {
    pub accepted: usize,
    pub rejected: usize,
    /// Events whose id was seen within the deduplication window: dropped.
    pub duplicates: usize,
    /// With `?wait=true`: the accepted rows are in storage, not only in the log.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stored: bool,
    /// One entry per rejected event: its index in the request and why.
    pub errors: Vec<Rejection>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    /// Answer only once storage has confirmed the rows.
    #[serde(default)]
    wait: bool,
}

type Reply = Result<(StatusCode, Json<IngestResponse>), ApiError>;

/// `POST /v1/{kind}`: `events`, `page-views` or `ticket-sales`.
#[tracing::instrument(skip_all, fields(kind = %kind))]
pub async fn ingest(
    Path(kind): Path<String>,
    state: State<AppState>,
    query: Query<Params>,
    scope: Option<axum::Extension<IngestScope>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let table = Table::from_route(&kind).ok_or(ApiError::NotFound)?;
    let scope = scope.and_then(|s| s.0.0);
    let reply = accept(table, state, query, scope.as_deref(), headers, body).await;
    let status = match &reply {
        Ok((status, Json(r))) => {
            record_outcome(table, r);
            *status
        }
        Err(e) => e.status(),
    };
    metrics::counter!(telemetry::INGEST_REQUESTS, "table" => table.name(), "status" => status.as_str().to_string()).increment(1);
    reply
}

/// Counts per request, from the response: never per event.
fn record_outcome(table: Table, r: &IngestResponse) {
    let events = |outcome: &'static str, n: usize| {
        metrics::counter!(telemetry::INGEST_EVENTS, "table" => table.name(), "outcome" => outcome)
            .increment(n as u64)
    };
    events("accepted", r.accepted);
    events("rejected", r.rejected);
    events("duplicate", r.duplicates);
    let mut by_field: Vec<(&'static str, u64)> = Vec::new();
    for e in &r.errors {
        let field = telemetry::field_label(e.field.as_deref());
        match by_field.iter_mut().find(|(f, _)| *f == field) {
            Some((_, n)) => *n += 1,
            None => by_field.push((field, 1)),
        }
    }
    for (field, n) in by_field {
        metrics::counter!(telemetry::INGEST_REJECTIONS, "table" => table.name(), "field" => field)
            .increment(n);
    }
}

async fn accept(
    table: Table,
    State(app): State<AppState>,
    Query(params): Query<Params>,
    scope: Option<&[String]>,
    headers: HeaderMap,
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
    let mut outcome = ingest::process(
        table,
        &body,
        format,
        app.config.ingest.max_events_per_request,
        chrono::Utc::now(),
        scope,
    )?;
    // An id seen within the window (in this request or an earlier one) is a
    // resend: drop it. Claimed atomically, so two racing resends keep one.
    let duplicates = outcome.retain(|id| app.recent_ids.entry(*id).or_insert(()).is_fresh());
    let forget = |ids: &[uuid::Uuid]| ids.iter().for_each(|id| app.recent_ids.invalidate(id));

    let rows = Bytes::from(std::mem::take(&mut outcome.rows));
    let mut lsn = None;
    if let (Some(wal), true) = (&app.wal, outcome.accepted > 0) {
        if wal.is_full(rows.len() as u64) {
            forget(&outcome.ids);
            return Err(ApiError::Overloaded(format!(
                "the write-ahead log is full ({} of {} bytes): storage is behind, retry later",
                wal.live_bytes(),
                wal.max_bytes()
            )));
        }
        let record = Record::Rows {
            table,
            count: outcome.accepted as u32,
            rows: rows.clone(),
        };
        match wal.append(record).await {
            Ok(l) => lsn = Some(l),
            Err(e) => {
                forget(&outcome.ids);
                return Err(ApiError::Unavailable(format!("write-ahead log: {e}")));
            }
        }
    }
    let (waiter, stored) = match params.wait && outcome.accepted > 0 {
        true => {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    app.batcher
        .push(table, &rows, outcome.accepted, lsn, waiter);
    let mut confirmed = false;
    if let Some(rx) = stored {
        app.batcher.seal(table);
        confirmed = rx.await.is_ok();
    }
    let status = match (outcome.accepted, confirmed) {
        (0, _) if outcome.rejections.is_empty() => StatusCode::OK,
        (0, _) => StatusCode::BAD_REQUEST,
        (_, true) => StatusCode::OK,
        _ => StatusCode::ACCEPTED,
    };
    Ok((
        status,
        Json(IngestResponse {
            accepted: outcome.accepted,
            rejected: outcome.rejections.len(),
            duplicates,
            stored: confirmed,
            errors: outcome.rejections,
        }),
    ))
}
