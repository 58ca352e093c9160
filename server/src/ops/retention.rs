//! Retention tiers, as the seed document promises: hot for 30 days, cold
//! until 90, archive (recompressed with a stronger codec) until 2 years, then
//! deletion; `ticket_sales` longer for compliance, realtime data shorter.
//!
//! Implemented with ClickHouse itself: a storage policy `tiered` whose
//! volumes are `hot` (the default disk), `cold` and `archive`, and per-table
//! TTL rules (`TO VOLUME`, `RECOMPRESS`, `DELETE`). In embedded mode the three
//! volumes are three directories. Changing the policy rewrites only table
//! metadata; `apply` moves and deletes existing parts now.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::model::DATABASE;
use crate::storage::{Storage, StorageError, json_rows, query_text};

pub const POLICY: &str = "tiered";

use crate::config::retention::DATETIME_MAX;
pub use crate::config::retention::{RetentionConfig, TierPolicy};
pub use crate::model::AGED_TABLES as TABLES;

/// The TTL clause for a table, or `None` for no rules at all.
pub fn ttl_clause(column: &str, p: &TierPolicy, moves: bool) -> Option<String> {
    // Added in 64 bits and capped at DateTime's end, so a row far in the
    // future never wraps around to an early date.
    let at = |d: Duration| {
        format!(
            "toDateTime(least(toUInt64(toUnixTimestamp({column})) + {}, {DATETIME_MAX}))",
            d.as_secs()
        )
    };
    let mut rules = Vec::new();
    if moves {
        if let Some(d) = p.cold_after {
            rules.push(format!("{} TO VOLUME 'cold'", at(d)));
        }
        if let Some(d) = p.archive_after {
            rules.push(format!("{} TO VOLUME 'archive'", at(d)));
        }
    }
    if let Some(d) = p.archive_after {
        // Archived parts are rewritten with a stronger codec when they merge.
        rules.push(format!("{} RECOMPRESS CODEC(ZSTD(12))", at(d)));
    }
    if let Some(d) = p.delete_after {
        rules.push(format!("{} DELETE", at(d)));
    }
    (!rules.is_empty()).then(|| rules.join(", "))
}

/// Whether storage has the `tiered` policy (the embedded engine always does;
/// a server needs it in its configuration).
async fn has_policy(storage: &dyn Storage) -> Result<bool, StorageError> {
    let n = query_text(
        storage,
        &format!("SELECT count() FROM system.storage_policies WHERE policy_name = '{POLICY}'"),
    )
    .await?;
    Ok(n.trim() != "0")
}

/// Puts every table on the tiered policy and sets its TTL. Metadata only:
/// existing parts move at the next merge, or now with [`materialize`].
pub async fn apply_policy(
    storage: &dyn Storage,
    cfg: &RetentionConfig,
) -> Result<(), StorageError> {
    cfg.validate()
        .map_err(|e| StorageError::rejected(e.to_string()))?;
    let moves = has_policy(storage).await?;
    if !moves {
        tracing::warn!(
            "storage has no '{POLICY}' storage policy: only deletion and recompression apply, no tier moves"
        );
    }
    for (table, column) in TABLES {
        if moves {
            storage
                .execute(&format!(
                    "ALTER TABLE {DATABASE}.{table} MODIFY SETTING storage_policy = '{POLICY}'"
                ))
                .await?;
        }
        let sql = match ttl_clause(column, cfg.for_table(table), moves) {
            Some(ttl) => format!(
                "ALTER TABLE {DATABASE}.{table} MODIFY TTL {ttl} SETTINGS materialize_ttl_after_modify = 0"
            ),
            None => format!("ALTER TABLE {DATABASE}.{table} REMOVE TTL"),
        };
        match storage.execute(&sql).await {
            // REMOVE TTL on a table without one is not an error worth stopping for.
            Err(StorageError::Rejected(e)) if sql.ends_with("REMOVE TTL") && e.code == Some(36) => {
            }
            other => other?,
        }
    }
    Ok(())
}

/// Deletes expired rows and moves existing parts by the rules now.
///
/// `MATERIALIZE TTL` deletes synchronously, but TTL moves run later on the
/// engine's background pool. So parts due for a colder volume are moved
/// here explicitly (`MOVE PART`), judged by their newest row: `apply`
/// answers with the data where the policy says it belongs.
pub async fn materialize(storage: &dyn Storage, cfg: &RetentionConfig) -> Result<(), StorageError> {
    let moves = has_policy(storage).await?;
    for (table, _) in TABLES {
        storage
            .execute(&format!(
                "ALTER TABLE {DATABASE}.{table} MATERIALIZE TTL SETTINGS mutations_sync = 2"
            ))
            .await?;
        if !moves {
            continue;
        }
        // A pass moves every due part; a part a merge replaced meanwhile, or
        // one a background move held, is looked at again in the next pass.
        for pass in 1..=10u64 {
            if !move_due_parts(storage, table, cfg.for_table(table)).await? {
                break;
            }
            settle_moves(storage).await?;
            tokio::time::sleep(Duration::from_millis(50 * pass)).await;
        }
    }
    Ok(())
}

/// Moves the table's parts that are due for a colder tier; returns whether
/// any was due (moved now, or refused because it was already moving or
/// merged away).
async fn move_due_parts(
    storage: &dyn Storage,
    table: &str,
    policy: &TierPolicy,
) -> Result<bool, StorageError> {
    let parts = query_text(
        storage,
        &format!(
            "SELECT name, disk_name, toUnixTimestamp(now()) - toUnixTimestamp(if(max_time > 0, max_time, toDateTime(max_date))) \
             FROM system.parts WHERE database = '{DATABASE}' AND table = '{table}' AND active AND rows > 0"
        ),
    )
    .await?;
    let mut due_any = false;
    for line in parts.lines() {
        let mut f = line.split('\t');
        let (Some(name), Some(disk), Some(age)) = (
            f.next(),
            f.next(),
            f.next().and_then(|a| a.parse::<i64>().ok()),
        ) else {
            continue;
        };
        let due = |after: Option<Duration>| after.is_some_and(|d| age >= d.as_secs() as i64);
        let target = if due(policy.archive_after) {
            "archive"
        } else if due(policy.cold_after) {
            "cold"
        } else {
            continue;
        };
        // Only ever colder: hot → cold → archive.
        if disk == target || (disk == "archive" && target == "cold") {
            continue;
        }
        // The name is the engine's own, but it is written into the
        // statement (ALTER takes no query parameters): only the form the
        // engine gives parts (partition, block numbers, level, in letters,
        // digits and `_`) is.
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            tracing::warn!(%table, part = %name.escape_debug(), "a part with an unexpected name is not moved");
            continue;
        }
        due_any = true;
        let sql = format!("ALTER TABLE {DATABASE}.{table} MOVE PART '{name}' TO VOLUME '{target}'");
        match storage.execute(&sql).await {
            Ok(()) => {}
            // A merge or a background move has the part: the next pass
            // looks again, after the engine's moves settle.
            Err(StorageError::Rejected(e)) if busy_part(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(due_any)
}

/// The part was merged away (NO_SUCH_DATA_PART), is being merged or moved
/// (PART_IS_TEMPORARILY_LOCKED), or is already moving.
fn busy_part(e: &crate::storage::EngineError) -> bool {
    matches!(e.code, Some(232 | 384)) || e.message.contains("already")
}

/// Waits (up to a minute) for background moves of our parts to finish: a
/// move the engine had started when ours was refused is still under way,
/// and the caller reports where the data is next.
async fn settle_moves(storage: &dyn Storage) -> Result<(), StorageError> {
    let sql = format!("SELECT count() FROM system.moves WHERE database = '{DATABASE}'");
    for _ in 0..600 {
        if query_text(storage, &sql).await?.trim() == "0" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("parts were still moving between tiers after a minute");
    Ok(())
}

/// The policy, and where the data is now: per table and tier, rows, bytes,
/// parts, oldest and newest row.
pub async fn report(storage: &dyn Storage, cfg: &RetentionConfig) -> Result<Value, StorageError> {
    let names: Vec<String> = TABLES.iter().map(|(t, _)| format!("'{t}'")).collect();
    let rows = json_rows(
        storage,
        &format!(
                "SELECT table, disk_name AS tier, count() AS parts, sum(rows) AS total_rows, sum(bytes_on_disk) AS bytes, \
                 toString(minIf(if(min_time > 0, min_time, toDateTime(min_date)), rows > 0)) AS oldest, \
                 toString(maxIf(if(max_time > 0, max_time, toDateTime(max_date)), rows > 0)) AS newest \
                 FROM system.parts WHERE database = '{DATABASE}' AND active AND table IN ({}) \
                 GROUP BY table, tier ORDER BY table, tier",
                names.join(",")
            ),
        false,
    )
    .await?;
    let mut tables: BTreeMap<String, Value> = TABLES
        .iter()
        .map(|(t, _)| {
            (
                t.to_string(),
                json!({ "policy": cfg.for_table(t), "tiers": {} }),
            )
        })
        .collect();
    for row in rows {
        let tier = match row["tier"].as_str() {
            Some("default") => "hot",
            Some(other) => other,
            None => continue,
        }
        .to_string();
        if let Some(t) = tables.get_mut(row["table"].as_str().unwrap_or("")) {
            let num = |v: &Value| {
                v.as_str()
                    .and_then(|s| s.parse::<u64>().ok())
                    .or_else(|| v.as_u64())
                    .unwrap_or(0)
            };
            t["tiers"][tier] = json!({
                "rows": num(&row["total_rows"]), "bytes": num(&row["bytes"]), "parts": num(&row["parts"]),
                "oldest": row["oldest"], "newest": row["newest"],
            });
        }
    }
    Ok(json!({ "default": cfg.default, "tables": tables }))
}

/// A policy changed through the API outlives restarts: it is kept in
/// `bilten_analytics.settings` and wins over the configuration file.
pub async fn load_stored(storage: &dyn Storage) -> Result<Option<RetentionConfig>, StorageError> {
    let out = storage
        .query(&format!("SELECT argMax(value, updated_at) AS v FROM {DATABASE}.settings WHERE key = 'retention'"), "JSONEachRow")
        .await?;
    let row: Value =
        serde_json::from_slice(&out).map_err(|e| StorageError::rejected(e.to_string()))?;
    match row["v"].as_str() {
        None | Some("") => Ok(None),
        Some(json) => serde_json::from_str(json)
            .map(Some)
            .map_err(|e| StorageError::rejected(format!("stored retention policy: {e}"))),
    }
}

pub async fn store(storage: &dyn Storage, cfg: &RetentionConfig) -> Result<(), StorageError> {
    let json = serde_json::to_string(cfg).expect("serializes");
    let rows =
        serde_json::to_vec(&json!({ "key": "retention", "value": json })).expect("serializes");
    storage
        .insert(
            "settings",
            [rows, b"\n".to_vec()].concat().into(),
            &format!("retention-{}", uuid::Uuid::new_v4().simple()),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_being_merged_or_moved_is_looked_at_again_not_an_error() {
        assert!(busy_part(
            &"Code: 384. DB::Exception: Cannot move part 'all_1_1_0' because it's participating in background process. (PART_IS_TEMPORARILY_LOCKED)".into()
        ));
        assert!(busy_part(
            &"Code: 232. DB::Exception: No part all_1_1_0 in committed state. (NO_SUCH_DATA_PART)"
                .into()
        ));
        assert!(!busy_part(
            &"Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)".into()
        ));
    }

    #[test]
    fn ttl_clauses() {
        let c = RetentionConfig::default();
        let at = |col: &str, secs: u64| {
            format!("toDateTime(least(toUInt64(toUnixTimestamp({col})) + {secs}, 4294967295))")
        };
        assert_eq!(
            ttl_clause("hour", &c.default, true).unwrap(),
            format!(
                "{} TO VOLUME 'cold', {} TO VOLUME 'archive', {} RECOMPRESS CODEC(ZSTD(12)), {} DELETE",
                at("hour", 2592000),
                at("hour", 7776000),
                at("hour", 7776000),
                at("hour", 63072000)
            )
        );
        assert_eq!(
            ttl_clause("t", c.for_table("realtime_dashboard"), true).unwrap(),
            format!("{} DELETE", at("t", 604800))
        );
        assert!(
            ttl_clause(
                "t",
                &TierPolicy {
                    cold_after: None,
                    archive_after: None,
                    delete_after: None
                },
                true
            )
            .is_none()
        );
    }
}
