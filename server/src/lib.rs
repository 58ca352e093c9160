//! Bilten Analytics: an ingestion server for event analytics on ClickHouse.
//!
//! # The path of an event
//! ```text
//! POST /v1/events | /v1/page-views | /v1/ticket-sales        routes::ingest
//!   ──► layers, outermost first: trace → inflate (gzip) →     router()
//!       body limit (on the inflated bytes) → CORS → load shed
//!       (past `max_in_flight`) → ingest key                    routes::auth
//!   ──► decode JSON / array / NDJSON, validate each event      ingest
//!   ──► drop ids seen in the last 10 min (resends)             intake::Intake
//!   ──► gathered with requests queued meanwhile (micro-batch)  intake::gather
//!   ──► Wasm plugin chain, once per micro-batch, bounded pool: plugins
//!       keep / modify / drop / reject; faults per failure_policy
//!   ──► append to the write-ahead log, group-commit fsync      wal
//!   ──► 202 with its own accepted / rejected (index, field, reason)
//!   ──► per-table buffer in a DashMap (1000 rows or 5 s; under  batch
//!       load, what gathered during the last insert, ≤ 1/s)
//!   ──► seal in the log; insert with its dedup token; retry    batch::Batcher::store
//!   ──► storage: embedded chDB or ClickHouse server            storage
//!   ──► `Done` in the log; segments freed                      wal
//!   ──► tables ──► materialized views ──► dashboard views      sql/
//! ```
//!
//! # Modules
//! - [`model`]: the tables and the databases; each client table's fields
//!   come from the one declaration, the `bilten-schema` crate, from which
//!   `cargo xtask codegen` also writes the typed rows (`ingest::rows`), the
//!   plugin layout (`plugins::layout`), the WIT, the SDKs' event views and
//!   the JavaScript client's types (`CONTRIBUTING.md`); imports nothing
//!   else of this crate.
//! - [`files`]: owner-only files and directories (the log, the engine's data).
//! - [`config`]: one `Config`, TOML + environment, validated at start;
//!   imports only `model`.
//! - [`ingest`]: body decoding and per-event validation; no HTTP types.
//! - [`intake`]: `Intake::accept`, a request's events from body to buffer:
//!   resends, then micro-batches with other requests through the plugin
//!   chain and the log, `?wait`; `accept_segment`, Segment's calls the
//!   same way; no HTTP types.
//! - Host steps, run on each request's rows before the plugins (columns
//!   declared in `bilten_schema::HOST_COLUMNS`): [`geo`], the country of
//!   an address; [`visits`], the server's sessions and each visit's origin,
//!   read by [`sources`] (channel, source, campaign) from its first page;
//!   once the log has taken the rows, `visits::tally` counts them into
//!   their visit, written to `visits` (one row per visit, its pages and
//!   event names with it) every few seconds.
//! - [`plugins`]: the sandboxed Wasm plugin chain (wasmtime): loading,
//!   limits, verdicts, failure policies, the breaker, hot reload, and the
//!   compiled plugins kept between starts.
//! - [`wal`]: the write-ahead log: durability, replay, batch identity.
//! - [`batch`]: per-table buffers, sealing, the flush workers, dead letters.
//! - [`storage`]: the `Storage` trait; `embedded` (chDB through its C API,
//!   with `embedded::interface`, the engine's side of ClickHouse's HTTP
//!   interface) and `clickhouse` (the official crate over HTTP);
//!   `startup`, a table that cannot load set aside; `cluster`, `sql/`
//!   rendered for a cluster.
//! - [`clickhouse_http`]: ClickHouse's own HTTP interface, mapped in one
//!   place: the request and reads' rules (`session`), the shapes a writer
//!   may run (`allow`), the roles and settings the engine enforces
//!   (`walls`), compression (`codec`); its settings, engine side and
//!   handler where the layers put them, named in its map.
//! - [`ops`]: schema migrations, retention tiers, backups, health's rules
//!   (`health`), monitoring and the report, the audit log's batched
//!   writer, exchange rates (`rates`), and `records`, the system
//!   database's tables they keep; none of it knows HTTP.
//! - [`tenants`]: keys and organizers made through `/admin/keys` and
//!   `/admin/organizers`, kept in `bilten_control` as sealed, append-only
//!   records every server of a store reads again each second (`store`),
//!   folded into what requests are checked against in memory: the keyring
//!   (`keys`), the directory of organizers, suspended ones refused at
//!   intake (`organizers`), and the dashboard's sessions (`sessions`); no
//!   HTTP types.
//! - [`dashboard`]: `/dashboard`'s viewers (admin token, organizers' read
//!   keys), filters, figures read from the views, sessions and HTML; no
//!   HTTP types. [`charts`]: SVG charts drawn on the server, shared with the
//!   admin report; imports nothing.
//! - [`stats`]: the Stats API's queries (Plausible's v2 shape) checked
//!   against allow-lists and run on the `visits` table the server writes
//!   and the rollups beside it (`attribution_daily`, `pages_daily`); no
//!   HTTP types.
//! - [`routes`]: `AppState`, `router()` and the thin axum handlers (ingest,
//!   admin, keys, dashboard, health, auth and audit); [`error`]: the one
//!   `IntoResponse`.
//! - [`telemetry`]: Prometheus metric names and the recorder.
//! - [`synth`]: synthetic traffic from a seed, for `loadgen`, tests and
//!   benches.
//!
//! Dependencies point one way: the root wires modules together and names
//! none of them back; `model` imports nothing; `config` only `model`; no
//! two modules import each other (`tests/architecture.rs` checks this).
//!
//! The binary's commands live apart from the library, in `src/cli/`
//! (`loadgen` and the admin commands over HTTP, the plugin authors'
//! tools); only they use clap, reqwest and toml.
//!
//! Shutdown: the signal stops both listeners; `shutdown_timeout` after it,
//! the engine's running statements are cancelled, and whatever is not
//! stored stays in the write-ahead log for the next start.
//!
//! `/admin` routes pass one gate (`routes::auth::admin_gate`): the token is
//! checked before the body is read, the body is capped, and every request,
//! refused ones included, is audited. `/admin/query` runs on the engine's
//! read-only connection (`storage`). [`serve`] is what `main` and the
//! end-to-end tests both call; it serves plain HTTP, or HTTPS when a
//! certificate is configured.

pub mod batch;
pub mod charts;
pub mod clickhouse_http;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod files;
pub mod geo;
pub mod ingest;
pub mod intake;
pub mod model;
pub mod ops;
pub mod plugins;
pub mod routes;
pub mod sources;
pub mod stats;
pub mod storage;
pub mod synth;
pub mod telemetry;
pub mod tenants;
pub mod visits;
pub mod wal;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::batch::Batcher;
use crate::config::Config;
use crate::storage::Storage;
use crate::wal::{Wal, WalConfig};

pub use model::DATABASE;
pub use routes::{AppState, router};

/// Opens storage, migrates, serves until `shutdown` resolves, then drains
/// the buffers and closes storage.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // A config built in code (tests, embedders) is held to the rules a
    // loaded one is (`Config::load` checks them too).
    config.validate()?;
    // A country database named in the config that cannot be read stops the
    // start before anything opens.
    let countries = geo::Countries::from_settings(&config.geo, &config.storage.embedded.data_dir)?
        .map(Arc::new);
    // The interface's port next to the API's, before anything is opened: a
    // port in use stops the start with nothing to close.
    let clickhouse_listener = match config.clickhouse_http.listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("clickhouse_http.listen: cannot listen on {addr}: {e}")
        })?),
        None => None,
    };
    // Plugins first: a plugin that does not load stops the start before
    // storage is opened.
    let plugins = tokio::task::spawn_blocking({
        let (host, chain, source) = (
            config.plugin_host.clone(),
            config.plugins.clone(),
            config.source.clone(),
        );
        move || plugins::Plugins::start(host, &chain, source)
    })
    .await??;
    let walls = clickhouse_http::walls::Walls {
        home: config.clickhouse_http.database.clone(),
        guest: config.clickhouse_http.system_database.clone(),
        system: model::SYSTEM_DATABASE.into(),
        limits: storage::limit_settings(&config.storage.query_limits),
    };
    let storage = storage::open_with(&config.storage, walls).await?;
    let listeners = (listener, clickhouse_listener);
    let result = run(
        config,
        listeners,
        shutdown,
        storage.clone(),
        (plugins, countries),
    )
    .await;
    // Statements still running were cancelled at the deadline; one the
    // engine does not let go of must not hold the process forever.
    if tokio::time::timeout(CLOSE_GRACE, storage.close())
        .await
        .is_err()
    {
        return Err(EngineStuck.into());
    }
    result
}

/// `shutdown_timeout` after the shutdown signal: then the engine's running
/// statements are cancelled (`Storage::cancel_running`) and whatever still
/// waits on them stops waiting. Nothing acknowledged is lost: it is in the
/// write-ahead log, replayed at the next start.
struct Deadline {
    past: tokio::sync::watch::Receiver<bool>,
    /// When the signal came.
    signalled: Arc<std::sync::OnceLock<tokio::time::Instant>>,
    timeout: std::time::Duration,
}

impl Deadline {
    fn start(
        signal: impl Future<Output = ()> + Send + 'static,
        timeout: std::time::Duration,
        storage: Arc<dyn Storage>,
    ) -> Deadline {
        let (tx, past) = tokio::sync::watch::channel(false);
        let signalled = Arc::new(std::sync::OnceLock::new());
        let mark = signalled.clone();
        tokio::spawn(async move {
            signal.await;
            let _ = mark.set(tokio::time::Instant::now());
            tokio::time::sleep(timeout).await;
            tracing::warn!(
                ?timeout,
                "shutdown_timeout passed: cancelling the engine's running statements; the \
                 write-ahead log keeps what is not stored"
            );
            storage.cancel_running().await;
            let _ = tx.send(true);
        });
        Deadline {
            past,
            signalled,
            timeout,
        }
    }

    /// Resolves once the deadline has passed.
    async fn passed(&self) {
        let mut past = self.past.clone();
        let _ = past.wait_for(|p| *p).await;
    }

    /// Time left before the deadline (at least a moment, to try).
    fn remaining(&self) -> std::time::Duration {
        let left = match self.signalled.get() {
            Some(at) => (*at + self.timeout).saturating_duration_since(tokio::time::Instant::now()),
            None => self.timeout,
        };
        left.max(std::time::Duration::from_millis(100))
    }
}

/// How long closing the engine may take once the shutdown deadline has
/// cancelled what ran.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The engine did not close in time after the shutdown deadline: the
/// process should end without the engine's own teardown (`main` does so);
/// the write-ahead log holds whatever was not stored.
#[derive(Debug, thiserror::Error)]
#[error("the engine did not close within {CLOSE_GRACE:?} of the shutdown deadline")]
pub struct EngineStuck;

/// Writes the visits that changed, every `every`.
fn start_visits_writer(
    intake: Arc<intake::Intake>,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = every.max(std::time::Duration::from_millis(100));
        // The first write a period after the start, not at once: when the
        // task first runs may be after rows came.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = intake.write_visits(visits::Closing::Idle).await {
                tracing::warn!(error = %e, "visits could not be written; retried at the next tick");
            }
        }
    })
}

/// The file a clean stop leaves in the log's directory once every visit
/// going on was written (`visits::recover`).
const VISITS_WRITTEN: &str = "visits.written";

async fn run(
    config: Config,
    (listener, clickhouse_listener): (TcpListener, Option<TcpListener>),
    shutdown: impl Future<Output = ()> + Send + 'static,
    storage: Arc<dyn Storage>,
    (plugins, countries): (Arc<plugins::Plugins>, Option<Arc<geo::Countries>>),
) -> anyhow::Result<()> {
    // Rows stored before this are of earlier runs (`visits::recover`).
    let started = chrono::Utc::now();
    // Before anything is inserted: a database a restore set aside must not
    // feed the live one (`ops::backups::quiet_set_aside`).
    match ops::backups::quiet_set_aside(&*storage).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            views = n,
            "views of databases set aside by a restore dropped"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "the views of databases set aside by a restore could not be dropped")
        }
    }
    if config.migrate_on_start {
        let applied = ops::migrations::apply(&*storage).await?;
        if !applied.is_empty() {
            tracing::info!(count = applied.len(), "migrations applied");
        }
    }
    // A policy set through the API outlives restarts and wins over the file.
    let retention = match ops::retention::load_stored(&*storage).await {
        Ok(Some(stored)) => stored,
        Ok(None) => config.retention.clone(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the stored retention policy; using the configured one");
            config.retention.clone()
        }
    };
    if ops::migrations::status(&*storage).await?.pending == 0 {
        ops::retention::apply_policy(&*storage, &retention).await?;
    } else {
        tracing::warn!(
            "the schema is not fully migrated; run `migrate` (the retention policy applies then)"
        );
    }
    let (wal, recovered) = if config.wal.enabled {
        let wal_cfg = WalConfig {
            dir: config.wal_dir(),
            segment_bytes: config.wal.segment_bytes,
            max_bytes: config.wal.max_bytes,
        };
        let (wal, recovered) = Wal::open(&wal_cfg)
            .map_err(|e| anyhow::anyhow!("write-ahead log at {}: {e}", wal_cfg.dir.display()))?;
        (Some(Arc::new(wal)), Some(recovered))
    } else {
        tracing::warn!("the write-ahead log is off: a crash loses buffered rows");
        (None, None)
    };
    let batcher = Batcher::new(config.batch.clone(), storage.clone(), wal.clone());
    let shutdown_timeout = config.shutdown_timeout;
    telemetry::handle();
    // Keys kept in the store, read before traffic. On the embedded engine
    // their tables exist before ClickHouse's interface opens, so no user
    // of it makes them first; a remote store that cannot be reached now is
    // read again at every poll.
    let tenants =
        Arc::new(tenants::Tenants::new(&config, storage.clone()).map_err(anyhow::Error::msg)?);
    if let Err(e) = tenants.start().await {
        if matches!(config.storage.backend, config::Backend::Embedded) {
            return Err(anyhow::anyhow!("the keys kept in the store: {e}"));
        }
        tracing::warn!(error = %e, "the keys kept in the store could not be read; retrying");
    }
    if config.tenants.signing_key.is_none()
        && matches!(config.storage.backend, config::Backend::Clickhouse)
    {
        tracing::warn!(
            "tenants.signing_key is unset: keys made on this server verify only on it; set \
             the same key on every server of this store"
        );
    }
    let keys_poll = tenants.clone().spawn_polling(config.tenants.poll_every);
    let state = AppState::new(
        Arc::new(config),
        storage,
        batcher.clone(),
        wal.clone(),
        plugins,
        countries,
        tenants,
    );
    *state.retention.write().await = retention;
    // Before traffic: a sale is credited to the visits of the last 30 days.
    state.intake.visits().warm(&*state.storage).await;
    if let Some(recovered) = recovered {
        // A client whose 202 was lost in the crash will resend: remember
        // what the log already holds so the resend is dropped as a duplicate.
        state.intake.remember(&recovered);
        batcher.recover(recovered);
    }
    // Left by a clean stop, once every visit was written: nothing to sum again.
    let clean_stop = state.config.wal_dir().join(VISITS_WRITTEN);
    let was_clean = std::fs::remove_file(&clean_stop).is_ok();
    // Until a crash's recovery succeeds, this run's stop leaves no mark: the
    // next start recovers in its place (after a run with visits off too).
    let visits_recovered = Arc::new(std::sync::atomic::AtomicBool::new(was_clean));
    if state.config.visits.enabled && !was_clean {
        let done = visits_recovered.clone();
        // Once what the log replays is stored: visits a crash left behind
        // are written again from their rows, and those it left open closed.
        let (intake, batcher, storage) =
            (state.intake.clone(), batcher.clone(), state.storage.clone());
        // Recent enough to have been open at the crash.
        let slack = state.config.visits.open_window();
        tokio::spawn(async move {
            batcher.flush_all().await;
            match intake.recover_visits(&*storage, started, slack).await {
                Ok(rows) => {
                    done.store(true, std::sync::atomic::Ordering::Release);
                    if rows > 0 {
                        tracing::info!(rows, "visits a crash left behind written again");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "visits a crash left behind could not be written again; their rows are stored")
                }
            }
        });
    }
    // One signal stops both listeners; `shutdown_timeout` after it, what
    // still runs is cancelled (`deadline`).
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let deadline = Deadline::start(shutdown.clone(), shutdown_timeout, state.storage.clone());
    let clickhouse_http = match clickhouse_listener {
        Some(listener) => {
            tracing::info!(
                clickhouse_addr = %listener.local_addr()?,
                "ClickHouse HTTP interface listening"
            );
            let app =
                routes::clickhouse_http::router(routes::clickhouse_http::ClickHouseHttp::new(
                    &state.config.clickhouse_http,
                    state.storage.clone(),
                ));
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }))
        }
        None => None,
    };
    let timer = batcher.start_timer();
    let intake = state.intake.clone();
    let visits_writer = start_visits_writer(intake.clone(), state.config.visits.write_every);
    tracing::info!(addr = %listener.local_addr()?, backend = state.storage.kind(), "listening");
    let tls = state.config.tls.clone();
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served: std::io::Result<()> = match tls {
        None => {
            let serving = axum::serve(listener, app).with_graceful_shutdown(shutdown);
            tokio::select! {
                served = serving => served,
                _ = deadline.passed() => Ok(()),
            }
        }
        Some(tls) => {
            let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "TLS certificate {} / key {}: {e}",
                        tls.cert.display(),
                        tls.key.display()
                    )
                })?;
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                stopper.graceful_shutdown(None);
            });
            let serving = axum_server::from_tcp_rustls(listener.into_std()?, rustls)?
                .handle(handle)
                .serve(app);
            tokio::select! {
                served = serving => served,
                _ = deadline.passed() => Ok(()),
            }
        }
    };
    timer.abort();
    keys_poll.abort();
    if let Some(mut task) = clickhouse_http {
        // Its statements hold the engine open; they end before storage
        // closes, or are cancelled at the deadline.
        tokio::select! {
            _ = &mut task => {}
            _ = deadline.passed() => task.abort(),
        }
    }
    visits_writer.abort();
    // Visits going on are written as they stand, closed: a visitor who
    // comes back after the restart starts a new one.
    let visits_written = match intake.write_visits(visits::Closing::All).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "visits going on could not be written; their rows are stored, and the next start writes them");
            false
        }
    };
    // Drain what we can within the deadline; the log keeps the rest.
    match tokio::time::timeout(deadline.remaining(), batcher.flush_all()).await {
        Ok(()) => tracing::info!("buffers drained"),
        Err(_) => tracing::warn!(
            rows = batcher.depth().0,
            "shutdown deadline passed; unflushed rows stay in the write-ahead log for the next start"
        ),
    }
    if let Some(wal) = wal {
        wal.close();
        if visits_written && visits_recovered.load(std::sync::atomic::Ordering::Acquire) {
            // In the log at least: the next start stores them.
            let _ = std::fs::write(&clean_stop, b"");
        }
    }
    served.map_err(Into::into)
}
