//! Thin HTTP handlers. Each decodes, calls a plain function, encodes.

pub mod admin;
pub mod auth;
pub mod clickhouse_http;
pub mod dashboard;
pub mod health;
pub mod ingest;
pub mod segment;
pub mod stats;
pub mod tenants;

use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::{BoxError, Router};
use tower::ServiceBuilder;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::trace::TraceLayer;

use crate::batch::Batcher;
use crate::config::Config;
use crate::error::ApiError;
use crate::intake::Intake;
use crate::storage::Storage;
use crate::wal::Wal;
use crate::{ops, plugins};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub storage: Arc<dyn Storage>,
    pub batcher: Arc<Batcher>,
    /// `None` when `wal.enabled = false`.
    pub wal: Option<Arc<Wal>>,
    /// Takes requests' events the rest of the way (no HTTP in it).
    pub intake: Arc<Intake>,
    /// The retention policy in force (the file's, or the last `PUT`).
    pub retention: Arc<tokio::sync::RwLock<ops::retention::RetentionConfig>>,
    /// The Wasm plugin chain.
    pub plugins: Arc<plugins::Plugins>,
    /// Admin requests, written in batches.
    pub audit: Arc<ops::audit::AuditLog>,

    /// Failed dashboard sign-ins, limited per address and in all.
    pub signin: Arc<crate::dashboard::signin::SignInLimits>,
    /// Keys kept in the store (`/admin/keys`), checked beside the
    /// configured ones.
    pub tenants: Arc<crate::tenants::Tenants>,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        storage: Arc<dyn Storage>,
        batcher: Arc<Batcher>,
        wal: Option<Arc<Wal>>,
        plugins: Arc<plugins::Plugins>,
        countries: Option<Arc<crate::geo::Countries>>,
        tenants: Arc<crate::tenants::Tenants>,
    ) -> AppState {
        let intake = Arc::new(
            Intake::new(
                &config.ingest,
                plugins.clone(),
                wal.clone(),
                batcher.clone(),
                countries,
                Arc::new(crate::visits::Visits::new(&config.visits).tagged(
                    crate::visits::recover::tag_of(&config.wal_dir()),
                    crate::visits::recover::run_of(std::time::SystemTime::now()),
                )),
            )
            .with_tenants(tenants.clone()),
        );
        let retention = Arc::new(tokio::sync::RwLock::new(config.retention.clone()));
        let audit = ops::audit::AuditLog::start(storage.clone());
        AppState {
            audit,

            signin: Arc::default(),
            config,
            storage,
            batcher,
            wal,
            intake,
            retention,
            plugins,
            tenants,
        }
    }
}

/// Builds the whole HTTP API from its dependencies.
pub fn router(state: AppState) -> Router {
    let mut ingest = Router::new()
        .route("/v1/{kind}", post(ingest::ingest))
        .route("/v1/collect/{kind}", post(ingest::collect));
    for call in crate::ingest::segment::Call::ALL {
        ingest = ingest.route(
            &format!("/v1/{}", call.route()),
            post(move |request: ingest::Request| segment::receive(call, request)),
        );
    }
    let ingest = ingest
        .route_layer(from_fn_with_state(state.clone(), auth::require_ingest_key))
        // Past `max_in_flight` requests, answer 503 at once rather than queue.
        .route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    ApiError::Overloaded("too many ingest requests in flight; retry later".into())
                }))
                .load_shed()
                .concurrency_limit(state.config.ingest.max_in_flight),
        )
        // Outside the key check: a preflight carries no key.
        .layer(cors(&state.config, state.tenants.clone()));
    let admin = Router::new()
        .route("/flush", post(admin::flush))
        .route("/query", post(admin::query))
        .route("/health", get(admin::health))
        .route(
            "/retention",
            get(admin::retention).put(admin::set_retention),
        )
        .route("/retention/apply", post(admin::apply_retention))
        .route("/backups", get(admin::backups).post(admin::create_backup))
        .route("/backups/{id}/restore", post(admin::restore_backup))
        .route("/backups/{id}/verify", post(admin::verify_backup))
        .route("/monitor", get(admin::monitor))
        .route("/migrations", get(admin::migrations))
        .route("/migrations/apply", post(admin::apply_migrations))
        .route("/report", get(admin::report))
        .route("/plugins", get(admin::plugins))
        .route("/plugins/reload", post(admin::reload_plugins))
        .route("/traffic/filtered", get(admin::filtered_traffic))
        .route(
            "/exchange-rates",
            get(admin::exchange_rates).put(admin::load_exchange_rates),
        )
        .route("/keys", get(tenants::list).post(tenants::create))
        .route("/keys/{id}", get(tenants::show).delete(tenants::revoke))
        .route("/keys/{id}/rotate", post(tenants::rotate))
        .route(
            "/organizers",
            get(tenants::organizers).post(tenants::create_organizer),
        )
        .route(
            "/organizers/{id}",
            axum::routing::patch(tenants::patch_organizer),
        )
        // Token, then a capped body, then the handler; every request audited.
        .route_layer(from_fn_with_state(state.clone(), auth::admin_gate));
    let max_body = state.config.ingest.max_body_bytes;
    Router::new()
        .merge(ingest)
        .nest("/admin", admin)
        .route("/dashboard", get(dashboard::show))
        .route("/dashboard/realtime", get(dashboard::realtime))
        .route("/dashboard/login", post(dashboard::login))
        .route("/dashboard/logout", post(dashboard::logout))
        .route("/api/v2/query", post(stats::query))
        .route(
            "/v1/tracker.js",
            get(ingest::tracker_js).layer(tower_http::compression::CompressionLayer::new()),
        )
        .route("/health", get(health::live))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .with_state(state)
        // Outermost first: trace every request; inflate gzip bodies; the body
        // limit applies to the inflated bytes, so a small gzip bomb is a 413.
        .layer(DefaultBodyLimit::max(max_body))
        .layer(
            RequestDecompressionLayer::new()
                .gzip(true)
                .pass_through_unaccepted(false),
        )
        // Errors are logged where they arise (`ApiError`), once and at their
        // level: a 503 per shed request would flood the log under overload.
        .layer(TraceLayer::new_for_http().on_failure(()))
}

/// CORS for the ingest routes. A preflight carries no key, so it is
/// answered for the origins of any public key (any origin at all when the
/// server takes requests without keys); the request itself is then held to
/// its own key's origins. No cookies are asked for.
fn cors(config: &Config, tenants: Arc<crate::tenants::Tenants>) -> tower_http::cors::CorsLayer {
    use axum::http::{Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let browser = config.browser.clone();
    let configured = config.ingest_keys.is_empty();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            let open = configured && tenants.keeps_open();
            open || origin
                .to_str()
                .is_ok_and(|o| browser.origin_allowed(o) || tenants.ring().origin_allowed(o))
        }))
        .allow_methods([Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::AUTHORIZATION,
            header::HeaderName::from_static("x-api-key"),
        ])
        .max_age(std::time::Duration::from_secs(86_400))
}
