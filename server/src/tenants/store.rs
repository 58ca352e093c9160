//! The control database's tables, declared once, and their rows: a key's
//! records (sealed, never changed) and its last uses (a hint, unsealed).

use std::collections::HashMap;

use crate::model::{CONTROL_DATABASE, CONTROL_TABLES};
use crate::storage::{Storage, StorageError, json_rows_with};

/// The table of key records.
pub const KEYS: &str = "keys";
/// The table of organizer records.
pub const ORGANIZERS: &str = "organizers";
/// The table of dashboard sessions' records.
pub const SESSIONS: &str = "sessions";
/// The table of keys' last uses.
pub const USES: &str = "key_use";

/// The tables, by name, with their columns and engine.
pub const TABLES: &[(&str, &str)] = &[
    // Every change is a row of its own, never merged away (a plain
    // MergeTree): a row someone else wrote for the same key cannot replace
    // a server's. `written` is the engine's clock, which polls follow; no
    // insert through the interface may set it (`model::CONTROL_TABLES`).
    (
        KEYS,
        "(id String, version UInt64, body String, seal String, \
         written DateTime64(6, 'UTC') DEFAULT now64(6)) \
         ENGINE = MergeTree ORDER BY (id, version)",
    ),
    (
        ORGANIZERS,
        "(id String, version UInt64, body String, seal String, \
         written DateTime64(6, 'UTC') DEFAULT now64(6)) \
         ENGINE = MergeTree ORDER BY (id, version)",
    ),
    // A session lasts 12 hours: its records go after two days.
    (
        SESSIONS,
        "(id String, version UInt64, body String, seal String, \
         written DateTime64(6, 'UTC') DEFAULT now64(6)) \
         ENGINE = MergeTree ORDER BY (id, version) TTL toDateTime(written) + INTERVAL 2 DAY",
    ),
    (
        USES,
        "(id String, used_ms Int64) ENGINE = ReplacingMergeTree(used_ms) ORDER BY id",
    ),
];

/// The columns a row of `table` sets (`model::CONTROL_TABLES`).
fn columns(table: &str) -> &'static str {
    CONTROL_TABLES
        .iter()
        .find(|(t, _)| *t == table)
        .map(|(_, set)| *set)
        .expect("a control table")
}

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

/// A row of a table of records (`keys`, `organizers`), as read.
#[derive(Debug, serde::Deserialize)]
pub struct Row {
    pub id: String,
    pub body: String,
    pub seal: String,
    /// An alias of its own: one named as the column would shadow it in
    /// `WHERE`, comparing text with time.
    #[serde(rename = "written_text")]
    pub written: String,
}

/// The most rows one read takes: a flood of rows (all of them forged: a
/// deployment makes keys by the thousand, not the million) cannot make a
/// poll unbounded. Past it the read says so and the poll warns.
pub const READ_LIMIT: usize = 200_000;

/// The rows written from `overlap` seconds before `since` (all of them
/// without one) up to now, oldest first, at most [`READ_LIMIT`] of them.
pub async fn read_rows(
    storage: &dyn Storage,
    table: &str,
    since: Option<&str>,
    overlap: &str,
) -> Result<Vec<Row>, StorageError> {
    let mut sql = format!(
        "SELECT id, body, seal, toString(written) AS written_text FROM {CONTROL_DATABASE}.{table} \
         WHERE written <= now64(6) + toIntervalSecond(5)"
    );
    let mut params = Vec::new();
    if let Some(since) = since {
        sql.push_str(
            " AND written >= toDateTime64({since:String}, 6, 'UTC') - toIntervalSecond({overlap:UInt32})",
        );
        params.push(("since".to_string(), since.to_string()));
        params.push(("overlap".to_string(), overlap.to_string()));
    }
    sql.push_str(&format!(" ORDER BY written LIMIT {READ_LIMIT}"));
    json_rows_with(storage, &sql, &params)
        .await?
        .into_iter()
        .map(|row| serde_json::from_value(row).map_err(|e| StorageError::rejected(e.to_string())))
        .collect()
}

/// Stores one sealed record in `table`.
pub async fn write_row(
    storage: &dyn Storage,
    table: &str,
    id: &str,
    version: u64,
    body: &str,
    seal: &str,
) -> Result<(), StorageError> {
    let row = serde_json::json!({"id": id, "version": version, "body": body, "seal": seal});
    storage
        .execute(&format!(
            "INSERT INTO {CONTROL_DATABASE}.{table} ({}) FORMAT JSONEachRow\n{row}\n",
            columns(table)
        ))
        .await
}

/// Stores keys' last uses (ms since the epoch).
pub async fn write_use(storage: &dyn Storage, used: &[(String, i64)]) -> Result<(), StorageError> {
    let mut sql = format!(
        "INSERT INTO {CONTROL_DATABASE}.{USES} ({}) FORMAT JSONEachRow\n",
        columns(USES)
    );
    for (id, at) in used {
        let row = serde_json::json!({"id": id, "used_ms": at});
        sql.push_str(&row.to_string());
        sql.push('\n');
    }
    storage.execute(&sql).await
}

/// An `Array(String)` parameter's text: quoted, `\\` and `'` escaped.
fn array_param(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|i| format!("'{}'", i.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    format!("[{}]", quoted.join(","))
}

/// Keys' last uses as any server wrote them (ms since the epoch), for the
/// ids asked about. The rows are not sealed (a hint, not a decision): a
/// use dated in the future is ignored.
pub async fn read_use(
    storage: &dyn Storage,
    ids: &[String],
) -> Result<HashMap<String, i64>, StorageError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = json_rows_with(
        storage,
        &format!(
            "SELECT id, toString(max(used_ms)) AS ms FROM {CONTROL_DATABASE}.{USES} \
             WHERE id IN {{ids:Array(String)}} \
               AND used_ms <= toUnixTimestamp64Milli(now64(3)) + 60000 \
             GROUP BY id"
        ),
        &[("ids".to_string(), array_param(ids))],
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
        let declared: Vec<&str> = CONTROL_TABLES.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, declared);
        // What a row sets is a column of its table.
        for ((_, def), (_, set)) in TABLES.iter().zip(CONTROL_TABLES) {
            for column in set.split(", ") {
                assert!(def.contains(&format!("{column} ")), "{column}");
            }
        }
        assert!(ddl().iter().skip(1).all(|s| s.contains(CONTROL_DATABASE)));
    }
}
