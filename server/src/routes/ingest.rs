//! `POST /v1/events`, `/v1/page-views`, `/v1/ticket-sales`.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::AppState;
use crate::error::ApiError;
use crate::ingest::{self, BodyFormat, Rejection, ResendKey, Table};
use crate::plugins::ChainOutput;
use crate::routes::auth::IngestScope;
use crate::telemetry;
use crate::wal::Record;

#[derive(Debug, Serialize)]
pub struct IngestResponse {
    pub accepted: usize,
    pub rejected: usize,
    /// Events whose id was seen within the deduplication window: dropped.
    pub duplicates: usize,
    /// Dropped by a plugin's verdict (a bot, say): counted, not stored.
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped: usize,
    /// Held in `plugin_quarantine`: a fail-closed plugin could not judge them.
    #[serde(skip_serializing_if = "is_zero")]
    pub quarantined: usize,
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

fn is_zero(n: &usize) -> bool {
    *n == 0
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
    events("dropped", r.dropped);
    events("quarantined", r.quarantined);
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
    let now = chrono::Utc::now();
    let mut parsed = ingest::parse(
        table,
        &body,
        format,
        app.config.ingest.max_events_per_request,
        now,
        scope,
    )?;
    // An id seen within the window (in this request or an earlier one) is a
    // resend: drop it. Claimed atomically, so two racing resends keep one.
    let duplicates = parsed.retain(|row| {
        app.recent_ids
            .entry(ResendKey::of(table, row))
            .or_insert(())
            .is_fresh()
    });
    let forget = |keys: &[ResendKey]| keys.iter().for_each(|k| app.recent_ids.invalidate(k));
    // What this request claimed: released if it ends in a 503, so that the
    // retry is not taken for a resend (quarantined events included).
    let claimed: Vec<ResendKey> = parsed
        .rows
        .iter()
        .map(|(_, row)| ResendKey::of(table, row))
        .collect();
    let chain = if !parsed.rows.is_empty() && app.plugins.applies_to(table) {
        let chain = app.plugins.run(table, parsed, now).await;
        // A rejected event may come back corrected under the same id.
        let rejected: Vec<ResendKey> = claimed
            .iter()
            .filter(|k| chain.rejected_ids.contains(&k.id))
            .cloned()
            .collect();
        forget(&rejected);
        chain
    } else {
        ChainOutput {
            parsed,
            ..ChainOutput::default()
        }
    };
    let (dropped, quarantined) = (chain.dropped, chain.quarantined);
    let mut outcome = chain.parsed.encode();
    let rows = Bytes::from(std::mem::take(&mut outcome.rows));
    // What goes to the log and the buffers: the rows, and the plugins'
    // rejected and quarantined events.
    let batches: Vec<(Table, Bytes, usize)> = [
        (table, rows, outcome.accepted),
        (
            Table::RejectedEvents,
            Bytes::from(chain.rejected_rows),
            chain.rejected_ids.len(),
        ),
        (
            Table::PluginQuarantine,
            Bytes::from(chain.quarantine_rows),
            chain.quarantined,
        ),
    ]
    .into_iter()
    .filter(|(_, _, n)| *n > 0)
    .collect();
    let mut lsns = vec![None; batches.len()];
    if let (Some(wal), false) = (&app.wal, batches.is_empty()) {
        let bytes: u64 = batches.iter().map(|(_, r, _)| r.len() as u64).sum();
        if wal.is_full(bytes) {
            forget(&claimed);
            return Err(ApiError::Overloaded(format!(
                "the write-ahead log is full ({} of {} bytes): storage is behind, retry later",
                wal.live_bytes(),
                wal.max_bytes()
            )));
        }
        let appends = batches.iter().map(|(t, rows, n)| {
            wal.append(Record::Rows {
                table: *t,
                count: *n as u32,
                rows: rows.clone(),
            })
        });
        match futures::future::try_join_all(appends).await {
            Ok(l) => lsns = l.into_iter().map(Some).collect(),
            Err(e) => {
                forget(&claimed);
                return Err(ApiError::Unavailable(format!("write-ahead log: {e}")));
            }
        }
    }
    let (mut waiter, stored) = match params.wait && outcome.accepted > 0 {
        true => {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    for ((t, rows, n), lsn) in batches.iter().zip(lsns) {
        let waiter = if *t == table { waiter.take() } else { None };
        app.batcher.push(*t, rows, *n, lsn, waiter);
    }
    let mut confirmed = false;
    if let Some(rx) = stored {
        app.batcher.seal_for_waiter(table);
        // Past the timeout the answer is the usual 202: the rows are durable
        // in the log and will be stored; only the confirmation is not waited for.
        confirmed = matches!(
            tokio::time::timeout(app.config.ingest.wait_timeout, rx).await,
            Ok(Ok(()))
        );
    }
    let status = match (outcome.accepted, confirmed) {
        (0, _) if quarantined > 0 => StatusCode::ACCEPTED,
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
            dropped,
            quarantined,
            stored: confirmed,
            errors: outcome.rejections,
        }),
    ))
}
