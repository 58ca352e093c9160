//! Backups with ClickHouse's own `BACKUP` / `RESTORE`: full, or incremental
//! on top of the latest full one; restore into the same database (the
//! current one is kept aside, renamed) or a new one; verification by
//! restoring into a scratch database and comparing row counts and checksums
//! per table with those taken when the backup was made.
//!
//! Inserts are paused for the moment of the backup (ingest goes on into the
//! write-ahead log), so the recorded checksums describe exactly what the
//! backup holds. The catalog is the records' `backups` (`ops::records`, in
//! the system database), outside the database being backed up.
//!
//! The catalog is data, never code or a path: every id and base read from
//! it is checked against the rule for new names ([`backup_name`]) before it
//! becomes part of a statement or a path, and each row carries a signature
//! (HMAC-SHA256 with a key this server holds, [`CatalogKey`]). Only rows
//! this server signed, whose files exist, count toward `backups.keep` and
//! are ever pruned; others are listed as unsigned.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::clickhouse_http::session::{ASIDE_INFIX, FAILED_INFIX, SCRATCH_PREFIX};
use crate::model::{DATABASE, plain_identifier};
use crate::storage::{Storage, StorageError, json_rows, query_text, query_text_with};

/// Where backups are written, and the key that signs their catalog rows.
#[derive(Debug, Clone)]
pub struct Location {
    place: Place,
    key: CatalogKey,
}

#[derive(Debug, Clone)]
enum Place {
    /// Embedded engine: a directory (also the engine's `backups.allowed_path`).
    Dir(PathBuf),
    /// ClickHouse server: a disk of its configuration.
    Disk(String),
}

/// The key catalog rows are signed with: `backups.signing_key` (servers
/// that share a catalog share it), else 32 random bytes kept in
/// `<data_dir>/backup-catalog.key`, made on first use.
#[derive(Clone)]
pub struct CatalogKey([u8; 32]);

impl std::fmt::Debug for CatalogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CatalogKey(…)")
    }
}

impl CatalogKey {
    pub fn of(config: &crate::config::Config) -> Result<CatalogKey, BackupError> {
        use sha2::Digest;
        if let Some(secret) = &config.backups.signing_key {
            return Ok(CatalogKey(Sha256::digest(secret.as_bytes()).into()));
        }
        let path = config.storage.embedded.data_dir.join("backup-catalog.key");
        crate::files::kept_key(&path).map(CatalogKey).map_err(|e| {
            BackupError::Invalid(format!(
                "{e} (this server's backups then count as unsigned)"
            ))
        })
    }

    /// The row's signature: over every field that decides what is done
    /// with the backup, and when the row was written (an old row of this
    /// server's, written again later, is not the latest).
    fn sign(&self, b: &Backup, updated_at: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        let tables = serde_json::to_string(&b.tables).expect("serializes");
        let updated_at = updated_at.to_string();
        for field in [
            &b.id,
            &b.kind,
            &b.base,
            &b.created_at,
            &b.status,
            &tables,
            &updated_at,
        ] {
            mac.update(&(field.len() as u64).to_le_bytes());
            mac.update(field.as_bytes());
        }
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn verifies(&self, b: &Backup, updated_at: &str, signature: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(
            self.sign(b, updated_at)
                .as_bytes()
                .ct_eq(signature.as_bytes()),
        )
    }
}

pub use crate::clickhouse_http::session::backup_name;

impl Location {
    /// Where backups are written, for the configured backend.
    pub fn of(config: &crate::config::Config) -> Result<Location, BackupError> {
        use crate::config::Backend;
        let place = match config.storage.backend {
            Backend::Embedded => {
                let dir = config.storage.embedded.backups_dir();
                Place::Dir(std::path::absolute(&dir).unwrap_or(dir))
            }
            Backend::Clickhouse => Place::Disk(config.backups.disk.clone()),
        };
        Ok(Location {
            place,
            key: CatalogKey::of(config)?,
        })
    }

    /// The backup's place in a statement. Names are checked by the caller
    /// (`backup_name`), so they need no escaping.
    fn target(&self, name: &str) -> Result<String, BackupError> {
        if !backup_name(name) {
            return Err(BackupError::Invalid(format!(
                "{name:?} is not a backup name (letters, digits, '_', '-', '.')"
            )));
        }
        Ok(match &self.place {
            Place::Dir(dir) => format!("File('{}')", dir.join(name).display()),
            Place::Disk(disk) => format!("Disk('{disk}', '{name}')"),
        })
    }

    /// The backup's directory, when backups are files this server sees: a
    /// direct child of the backups directory, or nothing.
    fn directory(&self, name: &str) -> Option<PathBuf> {
        let Place::Dir(dir) = &self.place else {
            return None;
        };
        if !backup_name(name) {
            return None;
        }
        let path = dir.join(name);
        // Resolved, it must still be right under the backups directory (a
        // symlink planted there resolves elsewhere).
        let parent = std::fs::canonicalize(dir).ok()?;
        let resolved = std::fs::canonicalize(&path).ok()?;
        (resolved.parent() == Some(parent.as_path())
            && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()))
        .then_some(resolved)
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
    /// Whether this server signed the catalog row: only such backups count
    /// toward `backups.keep` and are pruned.
    #[serde(default)]
    pub signed: bool,
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
    super::records::ensure(storage).await
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

/// All backups, newest first: each row's latest state (of the rows this
/// server signed, when there are any; else the latest row), rows whose id
/// or base is no backup name left out.
pub async fn list(storage: &dyn Storage, at: &Location) -> Result<Vec<Backup>, StorageError> {
    ensure_catalog(storage).await?;
    let rows = json_rows(
        storage,
        &format!(
            "SELECT id, kind, base, toString(created_at) AS created_at, status, tables, signature, \
             toString(updated_at) AS updated_at FROM {}.backups ORDER BY updated_at, id",
            storage.system_database()
        ),
        false,
    )
    .await?;
    // The latest signed row of each id wins over any unsigned one: a forged
    // row cannot mark a backup deleted or change its base.
    let mut by_id: BTreeMap<String, Backup> = BTreeMap::new();
    for row in rows {
        let text = |k: &str| row[k].as_str().unwrap_or_default().to_string();
        let mut b = Backup {
            id: text("id"),
            kind: text("kind"),
            base: text("base"),
            created_at: text("created_at"),
            status: text("status"),
            tables: serde_json::from_str(row["tables"].as_str().unwrap_or("{}"))
                .unwrap_or_default(),
            signed: false,
        };
        if !backup_name(&b.id) || !(b.base.is_empty() || backup_name(&b.base)) {
            tracing::warn!(
                id = b.id,
                base = b.base,
                "a backup catalog row with a name that is no backup name is ignored"
            );
            continue;
        }
        b.signed = at.key.verifies(
            &b,
            row["updated_at"].as_str().unwrap_or(""),
            row["signature"].as_str().unwrap_or(""),
        );
        match by_id.get(&b.id) {
            Some(kept) if kept.signed && !b.signed => {}
            _ => {
                by_id.insert(b.id.clone(), b);
            }
        }
    }
    let mut backups: Vec<Backup> = by_id.into_values().collect();
    backups.sort_by(|a, b| (&b.created_at, &b.id).cmp(&(&a.created_at, &a.id)));
    Ok(backups)
}

pub async fn get(storage: &dyn Storage, at: &Location, id: &str) -> Result<Backup, BackupError> {
    list(storage, at)
        .await?
        .into_iter()
        .find(|b| b.id == id)
        .ok_or_else(|| BackupError::NotFound(id.to_string()))
}

/// Writes the row, signed. `created_at` as the catalog spells it back
/// (`toString` of a `DateTime64(3)`), so the signature checks on reading.
async fn record(storage: &dyn Storage, at: &Location, b: &Backup) -> Result<(), StorageError> {
    let updated_at = crate::storage::datetime64_text(&chrono::Utc::now());
    let signature = at.key.sign(b, &updated_at);
    let row = serde_json::json!({
        "id": b.id, "kind": b.kind, "base": b.base, "created_at": b.created_at, "status": b.status,
        "tables": serde_json::to_string(&b.tables).expect("serializes"),
        "signature": signature, "updated_at": updated_at,
    });
    storage
        .execute(&format!(
            "INSERT INTO {}.backups (id, kind, base, created_at, status, tables, signature, updated_at) FORMAT JSONEachRow\n{row}\n",
            storage.system_database()
        ))
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
        let latest_full = list(storage, at)
            .await?
            .into_iter()
            .find(|b| b.kind == "full" && b.status == "created" && b.signed);
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
    let mut sql = format!("BACKUP DATABASE {DATABASE} TO {}", at.target(&id)?);
    if !base.is_empty() {
        sql.push_str(&format!(" SETTINGS base_backup = {}", at.target(&base)?));
    }
    storage.execute(&sql).await?;
    let backup = Backup {
        id,
        kind: kind.into(),
        base,
        created_at: crate::storage::datetime64_text(&now),
        status: "created".into(),
        tables,
        signed: true,
    };
    record(storage, at, &backup).await?;
    tracing::info!(id = backup.id, kind, "backup created");
    Ok(backup)
}

/// Stops the materialized views of databases a restore set aside (or a
/// failed one left) from feeding the live database, and says how many
/// went. A view keeps the names it was made with: once the engine starts
/// again it reads the live tables of those names and writes into the live
/// aggregates, so every row would count twice there (and an aggregate the
/// live database lacks fails every insert). Only the views go; their
/// tables keep their rows, and a database renamed back is made whole by
/// the migrations at the next start.
pub async fn quiet_set_aside(storage: &dyn Storage) -> Result<usize, StorageError> {
    let (aside, failed) = (
        format!("{DATABASE}{ASIDE_INFIX}"),
        format!("{DATABASE}{FAILED_INFIX}"),
    );
    let views = query_text_with(
        storage,
        "SELECT database, name FROM system.tables WHERE engine = 'MaterializedView' \
         AND (startsWith(database, {aside:String}) OR startsWith(database, {failed:String}))",
        &[("aside", &aside), ("failed", &failed)],
    )
    .await?;
    let mut dropped = 0;
    for line in views.lines() {
        // Names the engine gave; DDL takes no parameters.
        let Some((db, name)) = line.split_once('\t') else {
            continue;
        };
        if plain_identifier(db) && plain_identifier(name) {
            storage
                .execute(&format!("DROP VIEW IF EXISTS {db}.{name}"))
                .await?;
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// Restores a backup into `database`. Into the live database, the current
/// one is first renamed aside (`<db>_before_restore_<time>`), never dropped
/// (its materialized views are: [`quiet_set_aside`]).
pub async fn restore(
    storage: &dyn Storage,
    at: &Location,
    id: &str,
    database: &str,
) -> Result<Value, BackupError> {
    get(storage, at, id).await?;
    if !plain_identifier(database) {
        return Err(BackupError::Invalid(format!(
            "{database:?} is not a plain database name"
        )));
    }
    let exists = query_text_with(
        storage,
        "SELECT count() FROM system.databases WHERE name = {database:String}",
        &[("database", database)],
    )
    .await?;
    let target = at.target(id)?;
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
        format!("RESTORE DATABASE {DATABASE} FROM {target}")
    } else {
        format!("RESTORE DATABASE {DATABASE} AS {database} FROM {target}")
    };
    if let Err(e) = storage.execute(&sql).await {
        if let Some(aside) = &set_aside {
            // What the failed restore left is renamed away (never dropped:
            // nothing here drops the live database), the old one back.
            let failed = format!(
                "{DATABASE}{FAILED_INFIX}{}",
                chrono::Utc::now().format("%Y%m%d%H%M%S")
            );
            let _ = storage
                .execute(&format!("RENAME DATABASE {DATABASE} TO {failed}"))
                .await;
            let _ = storage
                .execute(&format!("RENAME DATABASE {aside} TO {DATABASE}"))
                .await;
            quiet(storage).await;
        }
        return Err(e.into());
    }
    if set_aside.is_some() {
        quiet(storage).await;
    }
    tracing::info!(id, database, "backup restored");
    Ok(serde_json::json!({ "restored": id, "database": database, "previous_database": set_aside }))
}

/// [`quiet_set_aside`], where a failure only warns: a restore that worked
/// is not undone for it (a backend whose user may not drop those views
/// leaves them, and says so).
async fn quiet(storage: &dyn Storage) {
    if let Err(e) = quiet_set_aside(storage).await {
        tracing::warn!(error = %e, "the views of a database set aside by a restore could not be dropped; they feed the live aggregates after a restart");
    }
}

/// Restores into a scratch database and compares each checked table's rows
/// and checksum with those recorded at backup time.
pub async fn verify(storage: &dyn Storage, at: &Location, id: &str) -> Result<Value, BackupError> {
    let backup = get(storage, at, id).await?;
    let scratch = format!("{SCRATCH_PREFIX}{}", uuid::Uuid::new_v4().simple());
    storage
        .execute(&format!(
            "RESTORE DATABASE {DATABASE} AS {scratch} FROM {}",
            at.target(id)?
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

/// Keeps the newest `keep` backups (and the full ones they build on),
/// counting only those this server signed whose files are there; deletes
/// the files of older ones of its own, only where they are a directory
/// right under the backups directory.
pub async fn prune(
    storage: &dyn Storage,
    at: &Location,
    keep: usize,
) -> Result<Vec<String>, BackupError> {
    let present = |b: &Backup| match &at.place {
        Place::Dir(_) => at.directory(&b.id).is_some(),
        // A server's disk is not ours to look at.
        Place::Disk(_) => true,
    };
    let all: Vec<Backup> = list(storage, at)
        .await?
        .into_iter()
        .filter(|b| b.status == "created" && b.signed)
        .collect();
    let kept: Vec<&Backup> = all.iter().filter(|b| present(b)).take(keep).collect();
    let needed: Vec<&str> = kept.iter().map(|b| b.base.as_str()).collect();
    let mut removed = Vec::new();
    for b in &all {
        if kept.iter().any(|k| k.id == b.id) || needed.contains(&b.id.as_str()) {
            continue;
        }
        if let Place::Dir(dir) = &at.place {
            match at.directory(&b.id) {
                Some(path) => {
                    if let Err(e) = std::fs::remove_dir_all(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "could not delete an old backup");
                        continue;
                    }
                }
                // Gone already, or not a directory of its own under the
                // backups directory (a link, say): nothing is deleted.
                None if dir.join(&b.id).symlink_metadata().is_ok() => {
                    tracing::warn!(
                        id = b.id,
                        "an old backup is not a directory of the backups directory; left alone"
                    );
                    continue;
                }
                None => {}
            }
        }
        // On a server, the files stay on its backups disk for an operator to remove.
        record(
            storage,
            at,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_never_leave_the_backups_directory() {
        for ok in ["20261130T010203.456Z-full", "a", "a.b-c_d"] {
            assert!(backup_name(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../engine",
            "/abs/path",
            "a/b",
            "a'b",
            "a b",
            "x\0",
            &"a".repeat(129),
        ] {
            assert!(!backup_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_row_signed_by_another_key_or_changed_does_not_verify() {
        let key = CatalogKey([7; 32]);
        let b = Backup {
            id: "a".into(),
            kind: "full".into(),
            base: String::new(),
            created_at: "2026-12-04 10:00:00.000".into(),
            status: "created".into(),
            tables: BTreeMap::new(),
            signed: false,
        };
        let at = "2026-12-04 10:00:01.000";
        let sig = key.sign(&b, at);
        assert!(key.verifies(&b, at, &sig));
        assert!(!CatalogKey([8; 32]).verifies(&b, at, &sig));
        let deleted = Backup {
            status: "deleted".into(),
            ..b.clone()
        };
        assert!(!key.verifies(&deleted, at, &sig));
        assert!(
            !key.verifies(&b, "2099-01-01 00:00:00.000", &sig),
            "written again later"
        );
        assert!(!key.verifies(&b, at, ""));
    }

    #[test]
    fn only_a_directory_right_under_the_backups_directory_is_one() {
        let root = tempfile::tempdir().unwrap();
        let backups = root.path().join("backups");
        std::fs::create_dir_all(backups.join("ok")).unwrap();
        std::fs::create_dir_all(root.path().join("engine")).unwrap();
        std::os::unix::fs::symlink(root.path().join("engine"), backups.join("link")).unwrap();
        let at = Location {
            place: Place::Dir(backups.clone()),
            key: CatalogKey([0; 32]),
        };
        assert!(at.directory("ok").is_some());
        assert!(at.directory("link").is_none());
        assert!(at.directory("../engine").is_none());
        assert!(at.directory("missing").is_none());
        assert!(at.target("../engine").is_err());
        assert!(at.target("a'); SELECT 1; --").is_err());
    }
}
