//! Segment's HTTP Tracking API: `POST /v1/batch`, `/v1/track`, `/v1/page`,
//! `/v1/identify`, `/v1/screen`, `/v1/group`, `/v1/alias`. The write key
//! (Basic auth's username) is an ingest key; see [`crate::ingest::segment`]
//! for how messages become events and `Intake::accept_segment` for how
//! they are taken.
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
use crate::ingest::segment::Call;
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
    let sender = Sender {
        scope: r.scope.as_ref().and_then(|s| s.organizers.as_deref()),
        stamp: stamp.as_ref(),
    };
    let receipt = r
        .app
        .intake
        .accept_segment(call, &body, sender, r.wait)
        .await?;
    let status = match receipt.taken() {
        // Every message refused for a suspended organizer.
        0 if receipt.suspended > 0 && receipt.suspended == receipt.errors.len() => {
            StatusCode::FORBIDDEN
        }
        0 => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    Ok((status, receipt))
}
