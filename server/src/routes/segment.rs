//! Segment's HTTP Tracking API: `POST /v1/batch`, `/v1/track`, `/v1/page`,
//! `/v1/identify`, `/v1/screen`, `/v1/group`, `/v1/alias`. The write key
//! (Basic auth's username) is an ingest key; see [`crate::ingest::segment`]
//! for how messages become events.
//!
//! Answers as Segment's libraries expect: 200 when the batch was taken
//! (each rejected message listed), 400 when none of it could be (not
//! retried), 503 with `Retry-After` when full (retried, and the resend is
//! deduplicated by `messageId`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ingest::{Request, body_bytes};
use crate::error::ApiError;
use crate::ingest::BodyFormat;
use crate::ingest::segment::{self, Call};
use crate::intake::{Receipt, Sender};

pub async fn receive(call: Call, request: Request) -> Response {
    match handle(call, request).await {
        Ok((status, receipt)) => {
            let mut body = serde_json::to_value(&receipt).expect("a receipt serializes");
            body["success"] = json!(status == StatusCode::OK);
            (status, Json(body)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn handle(call: Call, r: Request) -> Result<(StatusCode, Receipt), ApiError> {
    let stamp = r.stamp(false);
    let body = body_bytes(&r.app, r.body)?;
    let organizers = r.scope.as_ref().and_then(|s| s.organizers.as_deref());
    let organizer = match organizers {
        Some([one]) => Some(one.as_str()),
        _ => None,
    };
    let max_events = r.app.config.ingest.max_events_per_request;
    let translated = segment::translate(call, &body, max_events, organizer, chrono::Utc::now())?;
    let sender = Sender {
        scope: organizers,
        stamp: stamp.as_ref(),
    };
    let mut total = Receipt::default();
    for (table, items) in translated.tables() {
        if items.is_empty() {
            continue;
        }
        let events: Vec<_> = items.iter().map(|(_, event)| event).collect();
        let json = serde_json::to_vec(&events).expect("JSON values serialize");
        let mut part = r
            .app
            .intake
            .accept(table, &json, BodyFormat::Json, sender, r.wait)
            .await?;
        // Indexes in the request, not in this table's share of it.
        for e in &mut part.errors {
            e.index = items[e.index].0;
        }
        total.add(part);
    }
    total.errors.extend(translated.rejections);
    total.errors.sort_by_key(|e| e.index);
    total.rejected = total.errors.len();
    let taken = total.accepted + total.duplicates + total.dropped + total.quarantined;
    let status = match taken {
        0 => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    Ok((status, total))
}
