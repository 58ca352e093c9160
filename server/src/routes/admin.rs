//! `/admin` routes. The admin token layer is applied where they are mounted.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use crate::error::ApiError;
use crate::ops::{backups, health, migrations, monitor, retention};

/// Writes every buffered row now; answers once it is stored.
pub async fn flush(State(app): State<AppState>) -> Json<Value> {
    // Visits first: their rows join the buffers being flushed.
    let visits = app.intake.write_visits(crate::visits::Closing::Idle).await;
    app.batcher.flush_all().await;
    let stats = &app.batcher.stats;
    Json(json!({
        "flushed": true,
        "visits_written": visits.as_ref().ok(),
        "visits_error": visits.err().map(|e| e.to_string()),
        "rows_stored": stats.rows_stored.load(Ordering::Relaxed),
        "rows_dead_lettered": stats.rows_dead_lettered.load(Ordering::Relaxed),
    }))
}

/// Runs one read-only statement; answers in ClickHouse's JSON format. Its
/// parameters (`{name:Type}`) take `param_<name>` from the URL, as
/// ClickHouse's HTTP interface does.
pub async fn query(
    State(app): State<AppState>,
    RawQuery(url): RawQuery,
    sql: String,
) -> Result<Response, ApiError> {
    if sql.trim().is_empty() {
        return Err(ApiError::BadQuery(
            "send the SQL statement as the request body".into(),
        ));
    }
    let params: Vec<(String, String)> =
        form_urlencoded::parse(url.as_deref().unwrap_or("").as_bytes())
            .filter_map(|(k, v)| Some((k.strip_prefix("param_")?.to_string(), v.into_owned())))
            .collect();
    let out: Bytes = app
        .storage
        .query_readonly_with(&sql, &params, "JSON")
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

/// A deep check (`ops::health`): storage, schema, buffers, the log,
/// disks, plugins, tables. 503 when it is down.
pub async fn health(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    let report = health::check(health::Parts {
        storage: &*app.storage,
        batcher: &app.batcher,
        wal: app.wal.as_deref(),
        plugins: app.plugins.health(),
        min_free_disk_percent: app.config.health.min_free_disk_percent,
    })
    .await;
    let code = match report.down() {
        true => StatusCode::SERVICE_UNAVAILABLE,
        false => StatusCode::OK,
    };
    (code, Json(report.0))
}

/// The retention policy and where each table's data is now, per tier.
pub async fn retention(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let policy = app.retention.read().await.clone();
    Ok(Json(retention::report(&*app.storage, &policy).await?))
}

/// Replaces the policy (`ALTER … MODIFY TTL`); it is kept across restarts.
pub async fn set_retention(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let policy: retention::RetentionConfig = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadQuery(format!("retention policy: {e}")))?;
    policy.validate()?;
    let mut current = app.retention.write().await;
    retention::apply_policy(&*app.storage, &policy).await?;
    retention::store(&*app.storage, &policy).await?;
    *current = policy.clone();
    drop(current);
    Ok(Json(retention::report(&*app.storage, &policy).await?))
}

/// Moves and deletes existing parts by the policy now (`MATERIALIZE TTL`).
pub async fn apply_retention(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let policy = app.retention.read().await.clone();
    retention::materialize(&*app.storage, &policy).await?;
    Ok(Json(retention::report(&*app.storage, &policy).await?))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupRequest {
    incremental: bool,
}

/// Backups, newest first.
pub async fn backups(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "backups": backups::list(&*app.storage, &backups::Location::of(&app.config)?).await? }),
    ))
}

/// A JSON body that may be left out: empty means all defaults.
fn optional_json<T: Default + serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadQuery(format!("{what}: {e}")))
}

/// Takes a backup of everything stored so far (buffers are flushed first).
pub async fn create_backup(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: BackupRequest = optional_json(&body, "backup request")?;
    app.batcher.flush_all().await;
    let paused = app.batcher.pause().await;
    let location = backups::Location::of(&app.config)?;
    let created = backups::create(&*app.storage, &location, req.incremental).await;
    drop(paused);
    let created = created?;
    let pruned = backups::prune(&*app.storage, &location, app.config.backups.keep).await?;
    Ok(Json(json!({ "backup": created, "pruned": pruned })))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestoreRequest {
    database: Option<String>,
}

/// Restores into the live database (kept aside, renamed) or a new one.
pub async fn restore_backup(
    State(app): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: RestoreRequest = optional_json(&body, "restore request")?;
    let database = req
        .database
        .unwrap_or_else(|| crate::model::DATABASE.to_string());
    let paused = app.batcher.pause().await;
    let result = backups::restore(
        &*app.storage,
        &backups::Location::of(&app.config)?,
        &id,
        &database,
    )
    .await;
    drop(paused);
    Ok(Json(result?))
}

/// Restores into a scratch database and compares counts and checksums.
pub async fn verify_backup(
    State(app): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        backups::verify(&*app.storage, &backups::Location::of(&app.config)?, &id).await?,
    ))
}

#[derive(Debug, serde::Deserialize)]
pub struct MonitorParams {
    /// Queries slower than this are "slow".
    #[serde(default = "default_slow_ms")]
    slow_ms: u64,
    /// `html` for the report as a page.
    #[serde(default)]
    format: Option<String>,
}

fn default_slow_ms() -> u64 {
    1000
}

#[derive(serde::Deserialize)]
pub struct FilteredParams {
    organizer: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// Events the plugins filtered out (bots, …), per day, organizer, table,
/// plugin and reason, over a range of days (the dashboard's filter: the
/// last 30 by default, at most 366).
pub async fn filtered_traffic(
    State(app): State<AppState>,
    axum::extract::Query(p): axum::extract::Query<FilteredParams>,
) -> Result<Json<Value>, ApiError> {
    let filter = crate::dashboard::Filter::new(
        &crate::dashboard::Viewer::Admin,
        p.organizer.as_deref(),
        p.from.as_deref(),
        p.to.as_deref(),
        chrono::Utc::now().date_naive(),
    )
    .map_err(|e| ApiError::BadQuery(e.to_string()))?;
    let found = crate::dashboard::filtered_traffic(&*app.storage, &filter).await?;
    Ok(Json(json!({
        "from": filter.from,
        "to": filter.to,
        "organizer": filter.organizer,
        "events": found.events,
        "truncated": found.truncated,
        "rows": found.rows,
    })))
}

/// Slow queries, errors, storage and growth, parts, merges, ingestion rate,
/// memory and CPU, replication.
pub async fn monitor(
    State(app): State<AppState>,
    axum::extract::Query(p): axum::extract::Query<MonitorParams>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(monitor::monitor(&*app.storage, p.slow_ms).await?))
}

/// The report, as JSON or (`?format=html`) a self-contained page with charts.
pub async fn report(
    State(app): State<AppState>,
    axum::extract::Query(p): axum::extract::Query<MonitorParams>,
) -> Result<Response, ApiError> {
    let policy = app.retention.read().await.clone();
    let report = monitor::report(&*app.storage, &policy, p.slow_ms).await?;
    Ok(match p.format.as_deref() {
        Some("html") => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            monitor::report_html(&report),
        )
            .into_response(),
        _ => Json(report).into_response(),
    })
}

/// Applied and pending migrations, and files changed since they were applied.
pub async fn migrations(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        serde_json::to_value(migrations::status(&*app.storage).await?).expect("serializes"),
    ))
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct ApplyParams {
    #[serde(default)]
    dry_run: bool,
}

/// Applies pending migrations; with `?dry_run=true`, shows their SQL instead.
pub async fn apply_migrations(
    State(app): State<AppState>,
    axum::extract::Query(p): axum::extract::Query<ApplyParams>,
) -> Result<Json<Value>, ApiError> {
    let status = migrations::status(&*app.storage).await?;
    if p.dry_run {
        let pending: Vec<Value> = status
            .migrations
            .iter()
            .filter(|m| m.status == "pending")
            .filter_map(|m| {
                migrations::MIGRATIONS
                    .iter()
                    .find(|x| x.version == m.version)
            })
            .map(|m| json!({ "version": m.version, "name": m.name, "statements": m.statements() }))
            .collect();
        return Ok(Json(
            json!({ "dry_run": true, "pending": pending, "changed": status.changed }),
        ));
    }
    // No insert runs while the migrations do: a view a migration creates
    // after summing what is stored (0024 to 0026) would miss the rows
    // stored in between. Ingest goes on into the log meanwhile.
    let paused = app.batcher.pause().await;
    let applied = migrations::apply(&*app.storage).await;
    drop(paused);
    match applied {
        Ok(applied) => {
            // New tables get the retention policy in force.
            let policy = app.retention.read().await.clone();
            retention::apply_policy(&*app.storage, &policy).await?;
            Ok(Json(json!({ "applied": applied })))
        }
        Err(migrations::MigrationError::Storage(e)) => Err(e.into()),
        Err(e) => Err(ApiError::BadQuery(e.to_string())),
    }
}

/// `GET /admin/plugins`: each plugin's version, checksum, state, calls,
/// verdicts, faults by kind and time per event.
pub async fn plugins(State(app): State<AppState>) -> Json<Value> {
    Json(app.plugins.status())
}

/// `POST /admin/plugins/reload`: loads what changed, validates it on sample
/// events, swaps the chain at once. 200 when every plugin loaded; 422 when
/// one failed (its old version keeps running), with the reason.
pub async fn reload_plugins(
    State(app): State<AppState>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let entries = app.plugins.reload().await?;
    let failed = entries.iter().any(|e| e.action == "failed");
    let code = if failed {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((code, Json(json!({ "ok": !failed, "plugins": entries }))))
}

#[derive(serde::Deserialize)]
pub struct RatesParams {
    base: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// Loads exchange rates into `?base=`: a CSV body of date, currency and
/// rate (what one unit was worth in the base that day). Every line is
/// checked before any is stored; a bad one is a 400 that names it.
pub async fn load_exchange_rates(
    State(app): State<AppState>,
    axum::extract::Query(p): axum::extract::Query<RatesParams>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(base) = p.base.as_deref() else {
        return Err(ApiError::BadQuery(
            "base: name the currency the rates are in, as ?base=EUR".into(),
        ));
    };
    let (base, rates) =
        crate::ops::rates::parse(base, &body).map_err(|e| ApiError::BadBody(e.0))?;
    crate::ops::rates::load(&*app.storage, &base, &rates).await?;
    let days = rates.iter().map(|r| r.date);
    Ok(Json(json!({
        "base": base,
        "loaded": rates.len(),
        "from": days.clone().min(),
        "to": days.max(),
    })))
}

/// The exchange rates in force (of `?base=`, when given), from `?from=` to
/// `?to=` (the last 366 days by default).
pub async fn exchange_rates(
    State(app): State<AppState>,
    axum::extract::Query(p): axum::extract::Query<RatesParams>,
) -> Result<Json<Value>, ApiError> {
    let base = match p.base.as_deref() {
        None => None,
        Some(b) => Some(crate::ops::rates::currency(b).ok_or_else(|| {
            ApiError::BadQuery(format!("base: a three-letter currency code, got {b:?}"))
        })?),
    };
    let today = chrono::Utc::now().date_naive();
    let day = |v: Option<&str>, field: &str, default| match v {
        None => Ok(default),
        Some(s) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
            ApiError::BadQuery(format!("{field}: expected a date as YYYY-MM-DD, got {s:?}"))
        }),
    };
    let from = day(
        p.from.as_deref(),
        "from",
        today - chrono::Duration::days(365),
    )?;
    let to = day(p.to.as_deref(), "to", today)?;
    let (rates, truncated) =
        crate::ops::rates::list(&*app.storage, base.as_deref(), (from, to)).await?;
    Ok(Json(json!({
        "from": from,
        "to": to,
        "base": base,
        "rates": rates,
        "truncated": truncated,
    })))
}
