//! Bilten Analytics: an ingestion server for event analytics on ClickHouse.
//!
//! # The path of an event
//! ```text
//! POST /v1/events | /v1/page-views | /v1/ticket-sales        routes::ingest
//!   ──► gzip, body limit (tower-http, axum)                    router()
//!   ──► decode JSON / array / NDJSON, validate each event      ingest
//!   ──► 202 with accepted / rejected (index, field, reason)
//!   ──► per-table buffer in a DashMap (1000 rows or 5 s)       batch
//!   ──► one JSONEachRow insert per table, retried w/ backoff   batch::Batcher::store
//!   ──► storage: embedded chDB or ClickHouse server            storage
//!   ──► tables ──► materialized views ──► dashboard views      sql/
//! ```
//!
//! # Modules
//! - [`config`]: one `Config`, TOML + environment, validated at start.
//! - [`ingest`]: body decoding and per-event validation; no HTTP types.
//! - [`batch`]: per-table buffers, sealing, the flush workers.
//! - [`storage`]: the `Storage` trait; `embedded` (chDB through its C API)
//!   and `clickhouse` (the official crate over HTTP).
//! - [`ops`]: schema migrations.
//! - [`routes`]: thin axum handlers; [`error`]: the one `IntoResponse`.
//! - [`loadgen`]: realistic traffic for demos and benchmarks.
//!
//! [`serve`] is what `main` and the end-to-end tests both call.

pub mod batch;
pub mod config;
pub mod error;
pub mod ingest;
pub mod loadgen;
pub mod ops;
pub mod routes;
pub mod storage;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::trace::TraceLayer;

use crate::batch::Batcher;
use crate::config::Config;
use crate::storage::Storage;

/// The ClickHouse database every table and view lives in.
pub const DATABASE: &str = "bilten_analytics";

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub storage: Arc<dyn Storage>,
    pub batcher: Arc<Batcher>,
}

/// Builds the whole HTTP API from its dependencies.
pub fn router(state: AppState) -> Router {
    let ingest = Router::new()
        .route("/v1/events", post(routes::ingest::events))
        .route("/v1/page-views", post(routes::ingest::page_views))
        .route("/v1/ticket-sales", post(routes::ingest::ticket_sales))
        .route_layer(from_fn_with_state(
            state.clone(),
            routes::auth::require_ingest_key,
        ));
    let admin = Router::new()
        .route("/flush", post(routes::admin::flush))
        .route("/query", post(routes::admin::query))
        .route("/health", get(routes::admin::health))
        .route_layer(from_fn_with_state(
            state.clone(),
            routes::auth::require_admin,
        ));
    let max_body = state.config.ingest.max_body_bytes;
    Router::new()
        .merge(ingest)
        .nest("/admin", admin)
        .route("/health", get(routes::health::live))
        .route("/ready", get(routes::health::ready))
        .with_state(state)
        // Outermost first: trace every request; inflate gzip bodies; the body
        // limit applies to the inflated bytes, so a small gzip bomb is a 413.
        .layer(DefaultBodyLimit::max(max_body))
        .layer(
            RequestDecompressionLayer::new()
                .gzip(true)
                .pass_through_unaccepted(false),
        )
        .layer(TraceLayer::new_for_http())
}

/// Opens storage, migrates, serves until `shutdown` resolves, then drains
/// the buffers and closes storage.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let storage = storage::open(&config.storage).await?;
    let result = run(config, listener, shutdown, storage.clone()).await;
    storage.close().await;
    result
}

async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    storage: Arc<dyn Storage>,
) -> anyhow::Result<()> {
    if config.migrate_on_start {
        let applied = ops::migrations::apply(&*storage).await?;
        if !applied.is_empty() {
            tracing::info!(count = applied.len(), "migrations applied");
        }
    }
    let batcher = Batcher::new(config.batch.clone(), storage.clone());
    let timer = batcher.start_timer();
    let state = AppState {
        config: Arc::new(config),
        storage,
        batcher: batcher.clone(),
    };
    tracing::info!(addr = %listener.local_addr()?, backend = state.storage.kind(), "listening");
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    timer.abort();
    // Whatever was accepted is written before storage closes.
    batcher.flush_all().await;
    tracing::info!("buffers drained");
    served.map_err(Into::into)
}
