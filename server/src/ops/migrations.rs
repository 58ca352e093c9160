//! Versioned, forward-only schema migrations from `sql/`, compiled into the
//! binary. Each applied file is recorded with its SHA-256 in the records'
//! `schema_migrations` (`ops::records`, in the system database); a file
//! that changed after it was applied stops the run instead of drifting
//! silently. Statements use `IF NOT EXISTS` and backfills add sketches
//! (which count a user once however often), so a migration interrupted
//! halfway, or run again by a server whose records are elsewhere, is
//! harmless.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::DATABASE;
use crate::storage::{Storage, StorageError, query_text, query_text_with};

/// One file of `sql/`: `NNNN_name.sql`.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migrations {
    ($($version:literal $file:literal),* $(,)?) => {
        &[$(Migration {
            version: $version,
            name: $file,
            sql: include_str!(concat!("../../../sql/", $file)),
        }),*]
    };
}

/// Every file in `sql/`, in order. A unit test checks this list against the directory.
pub const MIGRATIONS: &[Migration] = migrations![
    1 "0001_events.sql",
    2 "0002_page_views.sql",
    3 "0003_ticket_sales.sql",
    4 "0004_metrics_daily.sql",
    5 "0005_events_hourly.sql",
    6 "0006_event_performance.sql",
    7 "0007_user_funnel.sql",
    8 "0008_realtime_dashboard.sql",
    9 "0009_deduplication.sql",
    10 "0010_dead_letter.sql",
    11 "0011_settings.sql",
    12 "0012_audit_log.sql",
    13 "0013_plugins.sql",
    14 "0014_codecs.sql",
    15 "0015_dashboard_sketches.sql",
    16 "0016_page_views_hourly.sql",
    17 "0017_records_moved.sql",
    18 "0018_revenue_per_currency.sql",
    19 "0019_filtered_traffic.sql",
    20 "0020_countries.sql",
    21 "0021_visits.sql",
    22 "0022_attribution.sql",
    23 "0023_engagement.sql",
    24 "0024_visits_written.sql",
    25 "0025_visit_facets.sql",
    26 "0026_pages_daily.sql",
    27 "0027_pages_from_visits.sql",
    28 "0028_filtered_events.sql",
    29 "0029_rollups_by_value.sql",
    30 "0030_exchange_rates.sql",
    31 "0031_closed_visits.sql",
];

impl Migration {
    pub fn checksum(&self) -> String {
        let digest = Sha256::digest(self.sql.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The file's statements. A statement ends with `;` at the end of a line;
    /// `--` comment lines are dropped (they may hold semicolons).
    pub fn statements(&self) -> Vec<String> {
        split_statements(self.sql)
    }
}

pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        if line.trim_start().starts_with("--") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.trim_end().ends_with(';') {
            let stmt = current.trim().trim_end_matches(';').trim().to_string();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            current.clear();
        }
    }
    let rest = current.trim();
    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MigrationState {
    pub version: u32,
    pub name: String,
    pub checksum: String,
    /// "applied", "pending" or "changed" (applied, but the file differs now).
    pub status: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub migrations: Vec<MigrationState>,
    pub pending: usize,
    pub changed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("migration {0} was changed after it was applied; add a new migration instead")]
    Changed(String),
    #[error("migration {name} failed: {source}")]
    Failed { name: String, source: StorageError },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The data's database, created before any migration runs (and rendered
/// for a cluster like the migrations); the records are `ops::records`'.
pub fn bookkeeping() -> [String; 1] {
    [format!("CREATE DATABASE IF NOT EXISTS {DATABASE}")]
}

/// Every statement migrations send word for word: the database, then each
/// file's statements.
pub fn fixed() -> Vec<String> {
    bookkeeping()
        .into_iter()
        .chain(MIGRATIONS.iter().flat_map(|m| m.statements()))
        .collect()
}

async fn ensure_bookkeeping(storage: &dyn Storage) -> Result<(), StorageError> {
    let [database] = bookkeeping();
    storage.execute(&database).await?;
    super::records::ensure(storage).await
}

/// One row into a table of the records, as data (JSONEachRow).
async fn insert_record(
    storage: &dyn Storage,
    table: &str,
    row: serde_json::Value,
) -> Result<(), StorageError> {
    let system = storage.system_database();
    let columns: Vec<&String> = row
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    let columns = columns
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    storage
        .execute(&format!(
            "INSERT INTO {system}.{table} ({columns}) FORMAT JSONEachRow\n{row}\n"
        ))
        .await
}

/// Applied and pending migrations, and files changed since they were applied.
///
/// Read-only (readiness probes call it): without a `schema_migrations`
/// table yet, everything is pending.
pub async fn status(storage: &dyn Storage) -> Result<Status, StorageError> {
    // This server's records, and, when they are kept apart from
    // `bilten_system` (a `clickhouse` backend on another server's HTTP
    // interface), that server's own: a migration it applied to this
    // database is applied. `bilten_analytics` names this server's data's
    // database (a `clickhouse` backend sends its own name instead).
    let system = storage.system_database();
    let mut sources = Vec::new();
    for db in [system, crate::model::SYSTEM_DATABASE] {
        if sources.contains(&db) {
            continue;
        }
        let exists = query_text_with(
            storage,
            "SELECT count() FROM system.tables WHERE database = {db:String} \
             AND name = 'schema_migrations'",
            &[("db", db)],
        )
        .await?;
        if exists.trim() != "0" {
            sources.push(db);
        }
    }
    let text = if sources.is_empty() {
        String::new()
    } else {
        let union = sources
            .iter()
            .map(|db| {
                format!(
                    "SELECT version, checksum, applied_at FROM {db}.schema_migrations \
                     WHERE database = '{DATABASE}'"
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        query_text(
            storage,
            &format!(
                "SELECT version, argMax(checksum, applied_at) FROM ({union}) GROUP BY version"
            ),
        )
        .await?
    };
    let mut applied: std::collections::HashMap<u32, String> = text
        .lines()
        .filter_map(|l| {
            let (v, c) = l.split_once('\t')?;
            Some((v.parse().ok()?, c.to_string()))
        })
        .collect();
    // Records say nothing of a database that lacks what they say was made
    // in it (renamed away by a restore that did not finish, made anew empty,
    // a table made again alone): then everything is pending, and the run
    // makes what is missing (the migrations are idempotent) rather than the
    // server failing to start on a missing table.
    if !applied.is_empty() {
        let present = query_text(
            storage,
            &format!("SELECT name FROM system.tables WHERE database = '{DATABASE}'"),
        )
        .await?;
        let present: std::collections::HashSet<&str> = present.lines().collect();
        let made = made_by(
            MIGRATIONS
                .iter()
                .filter(|m| applied.contains_key(&m.version)),
        );
        if let Some(missing) = made.iter().find(|t| !present.contains(t.as_str())) {
            tracing::warn!(
                table = missing,
                "a table the applied migrations made is missing: every migration runs again"
            );
            applied.clear();
        }
    }
    let migrations: Vec<MigrationState> = MIGRATIONS
        .iter()
        .map(|m| {
            let checksum = m.checksum();
            let status = match applied.get(&m.version) {
                None => "pending",
                Some(c) if *c == checksum => "applied",
                Some(_) => "changed",
            };
            MigrationState {
                version: m.version,
                name: m.name.to_string(),
                checksum,
                status,
            }
        })
        .collect();
    let pending = migrations.iter().filter(|m| m.status == "pending").count();
    let changed = migrations.iter().filter(|m| m.status == "changed").count();
    Ok(Status {
        migrations,
        pending,
        changed,
    })
}

/// The tables and views these migrations leave in the data's database:
/// what they create, less what a later one drops.
pub fn made_by<'a>(
    migrations: impl Iterator<Item = &'a Migration>,
) -> std::collections::BTreeSet<String> {
    let mut made = std::collections::BTreeSet::new();
    for statement in migrations.flat_map(|m| m.statements()) {
        let words: Vec<&str> = statement.split_whitespace().take(7).collect();
        let (create, name) = match words.as_slice() {
            ["CREATE", "TABLE", "IF", "NOT", "EXISTS", name, ..]
            | ["CREATE", "VIEW", "IF", "NOT", "EXISTS", name, ..]
            | [
                "CREATE",
                "MATERIALIZED",
                "VIEW",
                "IF",
                "NOT",
                "EXISTS",
                name,
            ] => (true, *name),
            ["DROP", "TABLE" | "VIEW", "IF", "EXISTS", name, ..] => (false, *name),
            _ => continue,
        };
        let name = name.trim_end_matches('(');
        let Some(table) = name.strip_prefix(&format!("{DATABASE}.")) else {
            continue;
        };
        if create {
            made.insert(table.to_string());
        } else {
            made.remove(table);
        }
    }
    made
}

/// How long a claim to run the migrations holds before another instance may
/// take over (the claimant died mid-way).
const CLAIM_SECONDS: u32 = 300;

/// Applies every pending migration in order; returns the names applied.
///
/// When several servers start at once against one ClickHouse, each inserts a
/// claim and the earliest claim of the last five minutes wins; the others
/// wait until nothing is pending, then apply nothing. (ClickHouse has no
/// locks; this needs only the order in which one server saw the claims.)
pub async fn apply(storage: &dyn Storage) -> Result<Vec<String>, MigrationError> {
    ensure_bookkeeping(storage).await?;
    let first = status(storage).await?;
    if first.pending == 0 && first.changed == 0 {
        return Ok(Vec::new());
    }
    let me = uuid::Uuid::new_v4().simple().to_string();
    insert_record(
        storage,
        "migration_lock",
        serde_json::json!({ "holder": me }),
    )
    .await?;
    // Released by a row of its own (the records are insert-only): a claim
    // with a `done:` row no longer holds.
    let release = || {
        insert_record(
            storage,
            "migration_lock",
            serde_json::json!({ "holder": format!("done:{me}") }),
        )
    };
    let system = storage.system_database();
    loop {
        let winner = query_text(
            storage,
            &format!(
                "SELECT argMin(holder, (claimed_at, holder)) FROM {system}.migration_lock \
                 WHERE claimed_at > now64(6) - INTERVAL {CLAIM_SECONDS} SECOND AND NOT startsWith(holder, 'done:') \
                 AND concat('done:', holder) NOT IN (SELECT holder FROM {system}.migration_lock)"
            ),
        )
        .await?;
        if winner.trim() == me {
            let result = apply_unlocked(storage).await;
            // Release: later claims no longer wait for this one.
            release().await?;
            return result;
        }
        if status(storage).await?.pending == 0 {
            tracing::info!("another instance applied the migrations");
            release().await?;
            return Ok(Vec::new());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn apply_unlocked(storage: &dyn Storage) -> Result<Vec<String>, MigrationError> {
    let status = status(storage).await?;
    if let Some(changed) = status.migrations.iter().find(|m| m.status == "changed") {
        return Err(MigrationError::Changed(changed.name.clone()));
    }
    let mut applied = Vec::new();
    for state in status.migrations.iter().filter(|m| m.status == "pending") {
        let migration = MIGRATIONS
            .iter()
            .find(|m| m.version == state.version)
            .expect("listed");
        for stmt in migration.statements() {
            storage
                .execute(&stmt)
                .await
                .map_err(|source| MigrationError::Failed {
                    name: migration.name.to_string(),
                    source,
                })?;
        }
        insert_record(
            storage,
            "schema_migrations",
            serde_json::json!({
                "version": migration.version,
                "name": migration.name,
                "checksum": state.checksum,
                // Renamed with every statement by a `clickhouse` backend
                // configured with another database.
                "database": DATABASE,
            }),
        )
        .await?;
        tracing::info!(migration = migration.name, "applied migration");
        applied.push(migration.name.to_string());
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table the server names (in `model`) is one the migrations
    /// create, so a renamed table cannot drift from its code.
    #[test]
    fn every_table_the_model_names_is_created_by_a_migration() {
        let created: Vec<String> = MIGRATIONS
            .iter()
            .flat_map(|m| m.statements())
            .filter_map(|st| {
                let rest = st.split("CREATE TABLE IF NOT EXISTS ").nth(1)?;
                let name = rest.split_whitespace().next()?;
                Some(name.trim_start_matches(&format!("{DATABASE}.")).to_string())
            })
            .collect();
        let named = crate::model::Table::ALL
            .iter()
            .map(|t| t.name())
            .chain(crate::model::AGED_TABLES.iter().map(|(t, _)| *t));
        for table in named {
            assert!(
                created.iter().any(|c| c == table),
                "{table} is named in model but no migration creates it: {created:?}"
            );
        }
    }

    #[test]
    fn what_the_migrations_make_is_read_from_their_statements() {
        let all = made_by(MIGRATIONS.iter());
        for table in [
            "events",
            "page_views",
            "ticket_sales",
            "dashboard_sketches",
            "organizer_daily_metrics_mv",
        ] {
            assert!(all.contains(table), "{table}: {all:?}");
        }
        // 0017 drops what 0012 made.
        assert!(!all.contains("audit_log"), "{all:?}");
        assert!(made_by(MIGRATIONS[..12].iter()).contains("audit_log"));
    }

    #[test]
    fn the_list_matches_the_sql_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, listed);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
        }
    }

    #[test]
    fn splits_statements_and_drops_comment_lines() {
        let stmts = split_statements(
            "-- a; comment\nCREATE TABLE a (x UInt8);\n\nCREATE VIEW v AS\nSELECT 1;\n",
        );
        assert_eq!(
            stmts,
            vec!["CREATE TABLE a (x UInt8)", "CREATE VIEW v AS\nSELECT 1"]
        );
        assert_eq!(MIGRATIONS[3].statements().len(), 5);
    }
}
