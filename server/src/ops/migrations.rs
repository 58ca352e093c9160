//! Versioned, forward-only schema migrations from `sql/`, compiled into the
//! binary. Each applied file is recorded with its SHA-256 in
//! `bilten_analytics.schema_migrations`; a file that changed after it was
//! applied stops the run instead of drifting silently. Statements use
//! `IF NOT EXISTS`, so a migration interrupted halfway can run again.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::DATABASE;
use crate::storage::{Storage, StorageError, query_text};

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

/// The tables migrations keep their own records in: created before any
/// migration runs (and rendered for a cluster like the migrations).
pub fn bookkeeping() -> [String; 3] {
    [
        format!("CREATE DATABASE IF NOT EXISTS {DATABASE}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {DATABASE}.schema_migrations \
             (version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) \
             ENGINE = ReplacingMergeTree ORDER BY version"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {DATABASE}.migration_lock (holder String, claimed_at DateTime64(6, 'UTC') DEFAULT now64(6)) \
             ENGINE = MergeTree ORDER BY claimed_at TTL toDateTime(claimed_at) + INTERVAL 1 DAY"
        ),
    ]
}

async fn ensure_bookkeeping(storage: &dyn Storage) -> Result<(), StorageError> {
    let [database, schema_migrations, _] = bookkeeping();
    storage.execute(&database).await?;
    storage.execute(&schema_migrations).await
}

/// Applied and pending migrations, and files changed since they were applied.
///
/// Read-only (readiness probes call it): without a `schema_migrations`
/// table yet, everything is pending.
pub async fn status(storage: &dyn Storage) -> Result<Status, StorageError> {
    let exists = query_text(
        storage,
        &format!("SELECT count() FROM system.tables WHERE database = '{DATABASE}' AND name = 'schema_migrations'"),
    )
    .await?;
    let text = if exists.trim() == "0" {
        String::new()
    } else {
        query_text(
            storage,
            &format!("SELECT version, argMax(checksum, applied_at) FROM {DATABASE}.schema_migrations GROUP BY version"),
        )
        .await?
    };
    let applied: std::collections::HashMap<u32, String> = text
        .lines()
        .filter_map(|l| {
            let (v, c) = l.split_once('\t')?;
            Some((v.parse().ok()?, c.to_string()))
        })
        .collect();
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
    let [_, _, migration_lock] = bookkeeping();
    storage.execute(&migration_lock).await?;
    let me = uuid::Uuid::new_v4().simple().to_string();
    storage
        .execute(&format!(
            "INSERT INTO {DATABASE}.migration_lock (holder) VALUES ('{me}')"
        ))
        .await?;
    loop {
        let winner = query_text(
            storage,
            &format!(
                "SELECT argMin(holder, (claimed_at, holder)) FROM {DATABASE}.migration_lock \
                 WHERE claimed_at > now64(6) - INTERVAL {CLAIM_SECONDS} SECOND AND NOT startsWith(holder, 'done:')"
            ),
        )
        .await?;
        if winner.trim() == me {
            let result = apply_unlocked(storage).await;
            // Release: later claims no longer wait for this one.
            storage
                .execute(&format!("ALTER TABLE {DATABASE}.migration_lock UPDATE holder = 'done:{me}' WHERE holder = '{me}' SETTINGS mutations_sync = 2"))
                .await?;
            return result;
        }
        if status(storage).await?.pending == 0 {
            tracing::info!("another instance applied the migrations");
            storage
                .execute(&format!("ALTER TABLE {DATABASE}.migration_lock UPDATE holder = 'done:{me}' WHERE holder = '{me}' SETTINGS mutations_sync = 2"))
                .await?;
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
        storage
            .execute(&format!(
                "INSERT INTO {DATABASE}.schema_migrations (version, name, checksum) VALUES ({}, '{}', '{}')",
                migration.version, migration.name, state.checksum
            ))
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
