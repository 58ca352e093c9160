//! The control database's tables, declared once, and their rows: a key's
//! records (sealed, never changed) and its last uses (a hint, unsealed).

use std::collections::HashMap;

use crate::model::CONTROL_DATABASE;
use crate::storage::{Storage, StorageError, json_rows_with};

use super::keys::Record;

/// The table of key records.
pub const KEYS: &str = "keys";

/// The tables, by name, with their columns and engine.
pub const TABLES: &[(&str, &str)] = &[
    // Every change is a row of its own, never merged away (a plain
    // MergeTree): a row someone else wrote for the same key cannot replace
    // a server's. `written` is the engine's clock, which polls follow.
    (
        KEYS,
        "(id String, version UInt64, body String, seal String, \
         written DateTime64(6, 'UTC') DEFAULT now64(6)) \
         ENGINE = MergeTree ORDER BY (id, version)",
    ),
    (
        "key_use",
        "(id String, used_ms Int64) ENGINE = ReplacingMergeTree(used_ms) ORDER BY id",
    ),
];

/// The statements that create the control database and its tables.
pub fn ddl() -> Vec<String> {
    let mut out = vec![format!("CREATE DATABASE IF NOT EXISTS {CONTROL_DATABASE}")];
    out.extend(
        TABLES.iter().map(|(name, def)| {
            format!("CREATE TABLE IF NOT EXISTS {CONTROL_DATABASE}.{name} {def}")
        }),
    );
    out
}

/// A row of `keys`, as read.
#[derive(Debug, serde::Deserialize)]
pub struct KeyRow {
    pub id: String,
    pub body: String,
    pub seal: String,
    /// An alias of its own: one named as the column would shadow it in
    /// `WHERE`, comparing text with time.
    #[serde(rename = "written_text")]
    pub written: String,
}

/// The rows written since `overlap` seconds before `since` (all of them
/// without one), oldest first.
pub async fn read_keys(
    storage: &dyn Storage,
    since: Option<&str>,
    overlap: &str,
) -> Result<Vec<KeyRow>, StorageError> {
    let mut sql = format!(
        "SELECT id, body, seal, toString(written) AS written_text FROM {CONTROL_DATABASE}.{KEYS}"
    );
    let mut params = Vec::new();
    if let Some(since) = since {
        sql.push_str(
            " WHERE written >= toDateTime64({since:String}, 6, 'UTC') - toIntervalSecond({overlap:UInt32})",
        );
        params.push(("since".to_string(), since.to_string()));
        params.push(("overlap".to_string(), overlap.to_string()));
    }
    sql.push_str(" ORDER BY written");
    json_rows_with(storage, &sql, &params)
        .await?
        .into_iter()
        .map(|row| serde_json::from_value(row).map_err(|e| StorageError::rejected(e.to_string())))
        .collect()
}

/// Stores one sealed record.
pub async fn write_key(
    storage: &dyn Storage,
    record: &Record,
    body: &str,
    seal: &str,
) -> Result<(), StorageError> {
    let row = serde_json::json!({
        "id": record.id,
        "version": record.version,
        "body": body,
        "seal": seal,
    });
    storage
        .execute(&format!(
            "INSERT INTO {CONTROL_DATABASE}.{KEYS} (id, version, body, seal) FORMAT JSONEachRow\n{row}\n"
        ))
        .await
}

/// Stores keys' last uses (ms since the epoch).
pub async fn write_use(storage: &dyn Storage, used: &[(String, i64)]) -> Result<(), StorageError> {
    let mut sql =
        format!("INSERT INTO {CONTROL_DATABASE}.key_use (id, used_ms) FORMAT JSONEachRow\n");
    for (id, at) in used {
        let row = serde_json::json!({"id": id, "used_ms": at});
        sql.push_str(&row.to_string());
        sql.push('\n');
    }
    storage.execute(&sql).await
}

/// Every key's last use, as any server wrote it (ms since the epoch).
pub async fn read_use(storage: &dyn Storage) -> Result<HashMap<String, i64>, StorageError> {
    let rows = json_rows_with(
        storage,
        &format!(
            "SELECT id, toString(max(used_ms)) AS ms \
             FROM {CONTROL_DATABASE}.key_use GROUP BY id"
        ),
        &[],
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let id = r["id"].as_str()?.to_string();
            let ms = r["ms"].as_str()?.parse().ok()?;
            Some((id, ms))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_table_is_declared_here_once() {
        let names: Vec<&str> = TABLES.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, crate::model::CONTROL_TABLES);
        assert!(ddl().iter().skip(1).all(|s| s.contains(CONTROL_DATABASE)));
    }
}
