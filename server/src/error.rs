//! The API's error type and its single `IntoResponse`: the one place that
//! chooses HTTP statuses. 5xx bodies say nothing of internals; the detail
//! goes to the log.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::ingest::DecodeError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("unsupported content type {0:?}: send application/json or application/x-ndjson")]
    UnsupportedMediaType(String),
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("could not read the request body: {0}")]
    BadBody(String),
    #[error("a valid API key is required (Authorization: Bearer <key> or X-API-Key)")]
    Unauthorized,
    /// A key that is known but no longer holds (revoked, rotated out), or
    /// of a kind this route does not take: why.
    #[error("{0}")]
    KeyRefused(String),
    /// The request contradicts the state of what it names.
    #[error("{0}")]
    Conflict(String),
    /// Authenticated, but not allowed this: why, and what would be.
    #[error("{0}")]
    Forbidden(String),
    #[error("a valid admin token is required (Authorization: Bearer <token>)")]
    AdminUnauthorized,
    #[error("the admin API is disabled: no admin token is configured (set BILTEN_ADMIN_TOKEN)")]
    AdminDisabled,
    #[error("{0}")]
    BadQuery(String),
    #[error("no such route: events go to /v1/events, /v1/page-views or /v1/ticket-sales")]
    NotFound,
    #[error("{0}")]
    NoSuch(String),
    /// Over capacity right now (full log, too many requests): retry later.
    #[error("{0}")]
    Overloaded(String),
    /// This client sent too many wrong keys: retry after this many seconds.
    #[error("too many wrong keys from this address: retry in {0} s")]
    TooManyWrongKeys(u64),
    #[error("storage is unavailable")]
    Unavailable(String),
    /// Not able to decide yet (keys not read lately): retry; the message
    /// holds no internals.
    #[error("{0}")]
    NotReady(String),
    #[error("internal error")]
    Internal(String),
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Transient(detail) => ApiError::Unavailable(detail.message),
            StorageError::Rejected(e) => ApiError::BadQuery(e.message),
            e @ (StorageError::NotReadOnly(_) | StorageError::LimitExceeded(_)) => {
                ApiError::BadQuery(e.to_string())
            }
        }
    }
}

impl From<crate::plugins::PluginError> for ApiError {
    fn from(e: crate::plugins::PluginError) -> Self {
        ApiError::BadQuery(e.to_string())
    }
}

impl From<crate::config::ConfigError> for ApiError {
    fn from(e: crate::config::ConfigError) -> Self {
        ApiError::BadQuery(e.to_string())
    }
}

impl From<crate::intake::IntakeError> for ApiError {
    fn from(e: crate::intake::IntakeError) -> Self {
        use crate::intake::IntakeError;
        match e {
            IntakeError::Decode(e) => ApiError::Decode(e),
            IntakeError::Overloaded(m) => ApiError::Overloaded(m),
            IntakeError::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

impl From<crate::ops::backups::BackupError> for ApiError {
    fn from(e: crate::ops::backups::BackupError) -> Self {
        use crate::ops::backups::BackupError;
        match e {
            BackupError::NotFound(_) => ApiError::NoSuch(e.to_string()),
            BackupError::Invalid(m) => ApiError::BadQuery(m),
            BackupError::Storage(e) => e.into(),
        }
    }
}

impl From<crate::tenants::KeyError> for ApiError {
    fn from(e: crate::tenants::KeyError) -> Self {
        use crate::tenants::KeyError;
        match e {
            KeyError::Invalid(m) => ApiError::BadQuery(m),
            KeyError::NotFound(_) | KeyError::NoOrganizer(_) => ApiError::NoSuch(e.to_string()),
            KeyError::Conflict(m) => ApiError::Conflict(m),
            KeyError::Revoked(_) => ApiError::Conflict(e.to_string()),
            KeyError::NotLoaded(m) => ApiError::NotReady(m),
            KeyError::Storage(e) => e.into(),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Decode(DecodeError::TooManyEvents { .. }) | ApiError::PayloadTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::Decode(_) | ApiError::BadBody(_) | ApiError::BadQuery(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized | ApiError::AdminUnauthorized | ApiError::KeyRefused(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::AdminDisabled | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::NoSuch(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) | ApiError::Overloaded(_) | ApiError::NotReady(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::TooManyWrongKeys(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Unavailable(detail) | ApiError::Internal(detail) => {
                tracing::error!(%detail, "{self}")
            }
            _ => {}
        }
        let mut response =
            (status, axum::Json(json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        if let ApiError::TooManyWrongKeys(secs) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}
