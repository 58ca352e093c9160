//! Backups with ClickHouse's own `BACKUP` / `RESTORE`: full, or incremental
//! on top of the latest full one; restore into the same database (the
//! current one is kept aside, renamed) or a new one; verification by
//! restoring into a scratch database and comparing row counts and checksums
//! per table with those taken when the backup was made.
//!
//! Inserts are paused for the moment of the backup (ingest goes on into the
//! write-ahead log), so the recorded checksums describe exactly what the
//! backup holds. The catalog lives in `bilten_system.backups`, outside the
//! database being backed up.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{DATABASE, plain_identifier};
use crate::storage::session::{ASIDE_INFIX, CATALOG_DATABASE, SCRATCH_PREFIX};
use crate::storage::{Storage, StorageError, json_rows, query_text};

/// Where backups are written.
#[derive(Debug, Clone)]
pub enum Location {
    /// Embedded engine: a directory (also the engine's `backups.allowed_path`).
    Dir(PathBuf),
    /// ClickHouse server: a disk of its configuration.
    Disk(String),
}

impl Location {
    /// Where backups are written, for the configured backend.
    pub fn of(config: &crate::config::Config) -> Location {
        use crate::config::Backend;
        match config.storage.backend {
            Backend::Embedded => {
                let dir = config.storage.embedded.backups_dir();
                Location::Dir(std::path::absolute(&dir).unwrap_or(dir))
            }
            Backend::Clickhouse => Location::Disk(config.backups.disk.clone()),
        }
    }

    fn target(&self, name: &str) -> String {
        match self {
            Location::Dir(dir) => format!("File('{}')", dir.join(name).display()),
            Location::Disk(disk) => format!("Disk('{disk}', '{name}')"),
        }
    }
}

/// Tables whose figures survive merges (plain MergeTree) and the finalized
/// dashboard views: what verification compares.
pub const CHECKED: &[&str] = &[
    "events",
    "page_views",
    "ticket_sales",
    "dead_letter",
    "events_hourly_mv",
    "organizer_daily_metrics_mv",
    "event_performance_mv",
    "user_funnel_mv",
    "realtime_dashboard_mv",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    pub rows: u64,
    pub checksum: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backup {
    pub id: String,
    pub kind: String,
    pub base: String,
    pub created_at: String,
    pub status: String,
    pub tables: BTreeMap<String, Figures>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no backup {0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

async fn ensure_catalog(storage: &dyn Storage) -> Result<(), StorageError> {
    storage
        .execute(&format!("CREATE DATABASE IF NOT EXISTS {CATALOG_DATABASE}"))
        .await?;
    storage
        .execute(&format!(
            "CREATE TABLE IF NOT EXISTS {CATALOG_DATABASE}.backups (id String, kind String, base String, \
             created_at DateTime64(3, 'UTC'), status String, tables String, updated_at DateTime64(3, 'UTC') DEFAULT now64(3)) \
             ENGINE = ReplacingMergeTree(updated_at) ORDER BY id",
        ))
        .await
}

/// Row count and an order-independent checksum of each checked table of `db`.
pub async fn figures(
    storage: &dyn Storage,
    db: &str,
) -> Result<BTreeMap<String, Figures>, StorageError> {
    let mut out = BTreeMap::new();
    for table in CHECKED {
        let text = query_text(
            storage,
            &format!("SELECT count(), toString(sum(cityHash64(*))) FROM {db}.{table}"),
        )
        .await?;
        let (rows, checksum) = text.trim().split_once('\t').unwrap_or(("0", "0"));
        out.insert(
            table.to_string(),
            Figures {
                rows: rows.parse().unwrap_or(0),
                checksum: checksum.to_string(),
            },
        );
    }
    Ok(out)
}

/// All backups, newest first.
pub async fn list(storage: &dyn Storage) -> Result<Vec<Backup>, StorageError> {
    ensure_catalog(storage).await?;
    let rows = json_rows(
        storage,
        &format!(
            "SELECT id, argMax(kind, updated_at) AS kind, argMax(base, updated_at) AS base, \
             toString(argMax(created_at, updated_at)) AS created_at, argMax(status, updated_at) AS status, \
             argMax(tables, updated_at) AS tables FROM {CATALOG_DATABASE}.backups GROUP BY id ORDER BY created_at DESC, id DESC"
        ),
        false,
    )
    .await?;
    let mut backups = Vec::new();
    for row in rows {
        backups.push(Backup {
            id: row["id"].as_str().unwrap_or_default().into(),
            kind: row["kind"].as_str().unwrap_or_default().into(),
            base: row["base"].as_str().unwrap_or_default().into(),
            created_at: row["created_at"].as_str().unwrap_or_default().into(),
            status: row["status"].as_str().unwrap_or_default().into(),
            tables: serde_json::from_str(row["tables"].as_str().unwrap_or("{}"))
                .unwrap_or_default(),
        });
    }
    Ok(backups)
}

pub async fn get(storage: &dyn Storage, id: &str) -> Result<Backup, BackupError> {
    list(storage)
        .await?
        .into_iter()
        .find(|b| b.id == id)
        .ok_or_else(|| BackupError::NotFound(id.to_string()))
}

async fn record(storage: &dyn Storage, b: &Backup) -> Result<(), StorageError> {
    let row = serde_json::json!({
        "id": b.id, "kind": b.kind, "base": b.base, "created_at": b.created_at, "status": b.status,
        "tables": serde_json::to_string(&b.tables).expect("serializes"),
    });
    let mut line = serde_json::to_vec(&row).expect("serializes");
    line.push(b'\n');
    storage
        .execute(&format!("INSERT INTO {CATALOG_DATABASE}.backups (id, kind, base, created_at, status, tables) FORMAT JSONEachRow\n{}", String::from_utf8_lossy(&line)))
        .await
}

/// Takes a backup now: full, or incremental on the latest full one. The
/// caller holds inserts paused (see `Batcher::pause`).
pub async fn create(
    storage: &dyn Storage,
    at: &Location,
    incremental: bool,
) -> Result<Backup, BackupError> {
    ensure_catalog(storage).await?;
    let now = chrono::Utc::now();
    let kind = if incremental { "incremental" } else { "full" };
    let id = format!("{}-{kind}", now.format("%Y%m%dT%H%M%S%.3fZ"));
    let base = if incremental {
        let latest_full = list(storage)
            .await?
            .into_iter()
            .find(|b| b.kind == "full" && b.status == "created");
        match latest_full {
            Some(b) => b.id,
            None => {
                return Err(BackupError::Invalid(
                    "an incremental backup needs a full backup first".into(),
                ));
            }
        }
    } else {
        String::new()
    };
    let tables = figures(storage, DATABASE).await?;
    let mut sql = format!("BACKUP DATABASE {DATABASE} TO {}", at.target(&id));
    if !base.is_empty() {
        sql.push_str(&format!(" SETTINGS base_backup = {}", at.target(&base)));
    }
    storage.execute(&sql).await?;
    let backup = Backup {
        id,
        kind: kind.into(),
        base,
        created_at: crate::storage::datetime64_text(&now),
        status: "created".into(),
        tables,
    };
    record(storage, &backup).await?;
    tracing::info!(id = backup.id, kind, "backup created");
    Ok(backup)
}

/// Restores a backup into `database`. Into the live database, the current
/// one is first renamed aside (`<db>_before_restore_<time>`), never dropped.
pub async fn restore(
    storage: &dyn Storage,
    at: &Location,
    id: &str,
    database: &str,
) -> Result<Value, BackupError> {
    get(storage, id).await?;
    if !plain_identifier(database) {
        return Err(BackupError::Invalid(format!(
            "{database:?} is not a plain database name"
        )));
    }
    let exists = query_text(
        storage,
        &format!("SELECT count() FROM system.databases WHERE name = '{database}'"),
    )
    .await?;
    let mut set_aside = None;
    if exists.trim() != "0" {
        if database != DATABASE {
            return Err(BackupError::Invalid(format!(
                "database {database} exists; restore into a new one"
            )));
        }
        let aside = format!(
            "{DATABASE}{ASIDE_INFIX}{}",
            chrono::Utc::now().format("%Y%m%d%H%M%S")
        );
        storage
            .execute(&format!("RENAME DATABASE {DATABASE} TO {aside}"))
            .await?;
        set_aside = Some(aside);
    }
    let sql = if database == DATABASE {
        format!("RESTORE DATABASE {DATABASE} FROM {}", at.target(id))
    } else {
        format!(
            "RESTORE DATABASE {DATABASE} AS {database} FROM {}",
            at.target(id)
        )
    };
    if let Err(e) = storage.execute(&sql).await {
        if let Some(aside) = &set_aside {
            let _ = storage
                .execute(&format!("DROP DATABASE IF EXISTS {DATABASE}"))
                .await;
            let _ = storage
                .execute(&format!("RENAME DATABASE {aside} TO {DATABASE}"))
                .await;
        }
        return Err(e.into());
    }
    tracing::info!(id, database, "backup restored");
    Ok(serde_json::json!({ "restored": id, "database": database, "previous_database": set_aside }))
}

/// Restores into a scratch database and compares each checked table's rows
/// and checksum with those recorded at backup time.
pub async fn verify(storage: &dyn Storage, at: &Location, id: &str) -> Result<Value, BackupError> {
    let backup = get(storage, id).await?;
    let scratch = format!("{SCRATCH_PREFIX}{}", uuid::Uuid::new_v4().simple());
    storage
        .execute(&format!(
            "RESTORE DATABASE {DATABASE} AS {scratch} FROM {}",
            at.target(id)
        ))
        .await?;
    let found = figures(storage, &scratch).await;
    storage
        .execute(&format!("DROP DATABASE IF EXISTS {scratch} SYNC"))
        .await?;
    let found = found?;
    let tables: Vec<Value> = backup
        .tables
        .iter()
        .map(|(t, want)| {
            let got = found.get(t);
            serde_json::json!({ "table": t, "expected": want, "found": got, "ok": got == Some(want) })
        })
        .collect();
    let ok = tables.iter().all(|t| t["ok"] == true);
    Ok(serde_json::json!({ "id": id, "ok": ok, "tables": tables }))
}

/// Keeps the newest `keep` backups (and the full ones they build on).
pub async fn prune(
    storage: &dyn Storage,
    at: &Location,
    keep: usize,
) -> Result<Vec<String>, StorageError> {
    let all: Vec<Backup> = list(storage)
        .await?
        .into_iter()
        .filter(|b| b.status == "created")
        .collect();
    let kept: Vec<&Backup> = all.iter().take(keep).collect();
    let needed: Vec<&str> = kept.iter().map(|b| b.base.as_str()).collect();
    let mut removed = Vec::new();
    for b in all.iter().skip(keep) {
        if needed.contains(&b.id.as_str()) {
            continue;
        }
        if let Location::Dir(dir) = at {
            let path = dir.join(&b.id);
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not delete an old backup");
                continue;
            }
        }
        // On a server, the files stay on its backups disk for an operator to remove.
        record(
            storage,
            &Backup {
                status: "deleted".into(),
                ..b.clone()
            },
        )
        .await?;
        removed.push(b.id.clone());
    }
    Ok(removed)
}
