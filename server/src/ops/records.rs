//! This server's records, in its system database (`Storage::system_database`:
//! `bilten_system`, apart from the data): the migration records and their
//! lock, the audit log and the backup catalog. Each table is declared here
//! once. A restore of the data does not roll them back, and on the embedded
//! engine no user of ClickHouse's HTTP interface may write them.
//!
//! Before these tables moved here, the audit log and the migration records
//! were in the data's database; their rows are copied over once
//! ([`ensure`]), and migration 0017 drops the old tables.

use crate::model::DATABASE;
use crate::storage::{Storage, StorageError, query_text};

/// The records' tables, by name, with their columns and engine.
pub const TABLES: &[(&str, &str)] = &[
    // `database`: the data's database the migration was applied to (servers
    // that keep records in one system database may serve different ones).
    (
        "schema_migrations",
        "(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3), \
         database String) ENGINE = ReplacingMergeTree ORDER BY (database, version)",
    ),
    (
        "migration_lock",
        "(holder String, claimed_at DateTime64(6, 'UTC') DEFAULT now64(6)) \
         ENGINE = MergeTree ORDER BY claimed_at TTL toDateTime(claimed_at) + INTERVAL 1 DAY",
    ),
    (
        "audit_log",
        "(at DateTime64(3, 'UTC') DEFAULT now64(3), actor String, remote String, \
         method LowCardinality(String), path String, status UInt16, duration_ms UInt32, \
         detail String CODEC(ZSTD(3))) \
         ENGINE = MergeTree PARTITION BY toYYYYMM(at) ORDER BY at",
    ),
    // Every state of a backup is a row of its own, never merged away: a
    // row someone else wrote for the same id cannot replace this server's.
    (
        "backups",
        "(id String, kind String, base String, created_at DateTime64(3, 'UTC'), status String, \
         tables String, signature String DEFAULT '', updated_at DateTime64(3, 'UTC') DEFAULT now64(3)) \
         ENGINE = MergeTree ORDER BY (id, updated_at)",
    ),
];

/// Rows that lived in the data's database before, copied once: the table,
/// the columns written, and what is read for them.
const MOVED: &[(&str, &str, &str)] = &[
    (
        "schema_migrations",
        "version, name, checksum, applied_at, database",
        "version, name, checksum, applied_at, 'bilten_analytics'",
    ),
    (
        "audit_log",
        "at, actor, remote, method, path, status, duration_ms, detail",
        "at, actor, remote, method, path, status, duration_ms, detail",
    ),
];

/// The statements that create the records' database and tables in `system`.
pub fn ddl(system: &str) -> Vec<String> {
    let mut out = vec![format!("CREATE DATABASE IF NOT EXISTS {system}")];
    out.extend(
        TABLES
            .iter()
            .map(|(name, def)| format!("CREATE TABLE IF NOT EXISTS {system}.{name} {def}")),
    );
    out
}

/// The copy of an old table's rows into the records (`MOVED`).
fn copy(system: &str, table: &str, columns: &str, read: &str) -> String {
    format!("INSERT INTO {system}.{table} ({columns}) SELECT {read} FROM {DATABASE}.{table}")
}

/// Every statement of the records a `clickhouse` backend sends word for
/// word (with `system` its system database): what ClickHouse's HTTP
/// interface lets its writers run as they are (`clickhouse_http::allow`).
pub fn fixed(system: &str) -> Vec<String> {
    let mut out = ddl(system);
    out.extend(MOVED.iter().map(|(t, c, r)| copy(system, t, c, r)));
    out
}

/// Creates the records where they are missing, and copies the rows of the
/// old tables in the data's database the first time.
pub async fn ensure(storage: &dyn Storage) -> Result<(), StorageError> {
    let system = storage.system_database().to_string();
    for sql in ddl(&system) {
        storage.execute(&sql).await?;
    }
    // Only from the old layout itself: its migration records, which no
    // user of ClickHouse's HTTP interface can create (no statement it may
    // send makes them; 0017 drops them). A table the interface's writers
    // could make again (0012's audit log) is no reason to copy anything.
    let exists = |table: &str| {
        format!(
            "SELECT count() FROM system.tables WHERE database = '{DATABASE}' AND name = '{table}'"
        )
    };
    if query_text(storage, &exists("schema_migrations"))
        .await?
        .trim()
        == "0"
    {
        return Ok(());
    }
    for (table, columns, read) in MOVED {
        if query_text(storage, &exists(table)).await?.trim() == "0" {
            continue;
        }
        let moved = query_text(storage, &format!("SELECT count() FROM {system}.{table}")).await?;
        if moved.trim() == "0" {
            storage
                .execute(&copy(&system, table, columns, read))
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_table_is_created_in_the_system_database_only() {
        let ddl = ddl("bilten_system");
        assert_eq!(ddl.len(), TABLES.len() + 1);
        for sql in &ddl[1..] {
            assert!(
                sql.starts_with("CREATE TABLE IF NOT EXISTS bilten_system."),
                "{sql}"
            );
        }
        for (table, _, _) in MOVED {
            assert!(TABLES.iter().any(|(t, _)| t == table), "{table}");
        }
        // The tables a writer may insert into in a guest system database
        // are exactly these.
        let names: Vec<&str> = TABLES.iter().map(|(t, _)| *t).collect();
        assert_eq!(names, crate::model::RECORD_TABLES);
    }
}
