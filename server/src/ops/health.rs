//! `/admin/health`'s deep check: each part's figures and the rules that
//! make it ok, degraded or down (a disk under its free share, the log 80 %
//! full, rows dead-lettered or inserts failing, a table set aside, pending
//! migrations), and the overall status, the worst of them. No HTTP: the
//! route answers 503 when it is down.

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::{Value, json};

use super::migrations;
use crate::batch::Batcher;
use crate::storage::Storage;
use crate::wal::Wal;

/// What the check looks at.
pub struct Parts<'a> {
    pub storage: &'a dyn Storage,
    pub batcher: &'a Batcher,
    /// `None` when the write-ahead log is off.
    pub wal: Option<&'a Wal>,
    /// The plugin chain's own report (`Plugins::health`).
    pub plugins: Value,
    pub min_free_disk_percent: f64,
}

/// The report: `status` (`ok`, `degraded`, `down`) and each part's.
pub struct Report(pub Value);

impl Report {
    /// Storage or the schema cannot be reached: not ready for traffic.
    pub fn down(&self) -> bool {
        self.0["status"] == "down"
    }
}

/// `system.disks` rows (name, free, total; tab-separated) judged against the
/// share of free space an operator wants kept.
fn disks(text: &str, min_free_percent: f64) -> Value {
    let mut volumes = Vec::new();
    let mut low = Vec::new();
    for line in text.lines() {
        let mut f = line.split('\t');
        let (Some(name), Some(Ok(free)), Some(Ok(total))) = (
            f.next(),
            f.next().map(str::parse::<u64>),
            f.next().map(str::parse::<u64>),
        ) else {
            continue;
        };
        let disk = if name == "default" { "hot" } else { name };
        if (free as f64) * 100.0 < total as f64 * min_free_percent {
            low.push(disk);
        }
        volumes.push(json!({ "disk": disk, "free_bytes": free, "total_bytes": total }));
    }
    let mut out =
        json!({ "status": if low.is_empty() { "ok" } else { "degraded" }, "volumes": volumes });
    if !low.is_empty() {
        out["reason"] = json!(format!(
            "under {min_free_percent} % free on: {}",
            low.join(", ")
        ));
    }
    out
}

/// Checks every part; the overall status is the worst of them.
pub async fn check(parts: Parts<'_>) -> Report {
    let started = Instant::now();
    let storage = match parts.storage.ping().await {
        Ok(()) => {
            json!({ "status": "ok", "backend": parts.storage.kind(), "latency_ms": started.elapsed().as_secs_f64() * 1000.0 })
        }
        Err(e) => {
            json!({ "status": "down", "backend": parts.storage.kind(), "error": e.to_string() })
        }
    };
    let schema = match migrations::status(parts.storage).await {
        Ok(s) => json!({
            "status": if s.pending == 0 && s.changed == 0 { "ok" } else { "degraded" },
            "pending": s.pending, "changed": s.changed,
        }),
        Err(e) => json!({ "status": "down", "error": e.to_string() }),
    };
    let (depth, oldest) = parts.batcher.depth();
    let stats = &parts.batcher.stats;
    let dead = stats.rows_dead_lettered.load(Ordering::Relaxed);
    let failing = stats.inserts_failing.load(Ordering::Relaxed);
    let mut buffers = json!({
        "status": if dead == 0 && failing == 0 { "ok" } else { "degraded" },
        "rows_buffered": depth,
        "oldest_buffered_row_age_ms": oldest.map(|d| d.as_millis() as u64),
        "rows_stored": stats.rows_stored.load(Ordering::Relaxed),
        "rows_dead_lettered": dead,
        "insert_retries": stats.insert_retries.load(Ordering::Relaxed),
        "inserts_failing": failing,
    });
    if failing > 0 {
        buffers["last_insert_error"] = json!(stats.last_error.lock().unwrap().clone());
    }
    let log = match parts.wal {
        Some(wal) => json!({
            "status": if wal.live_bytes() * 10 >= wal.max_bytes() * 8 { "degraded" } else { "ok" },
            "enabled": true,
            "live_bytes": wal.live_bytes(),
            "max_bytes": wal.max_bytes(),
        }),
        None => json!({ "status": "ok", "enabled": false }),
    };
    let disks = match crate::storage::query_text(
        parts.storage,
        "SELECT name, free_space, total_space FROM system.disks",
    )
    .await
    {
        Ok(text) => disks(&text, parts.min_free_disk_percent),
        Err(e) => json!({ "status": "degraded", "error": e.to_string() }),
    };
    let plugins = parts.plugins;
    // Tables the engine could not load, set aside so that it started.
    let set_aside = parts.storage.set_aside_tables();
    let tables = json!({
        "status": if set_aside.is_empty() { "ok" } else { "degraded" },
        "set_aside": set_aside,
    });
    let all = [&storage, &schema, &buffers, &log, &disks, &plugins, &tables];
    let overall = if all.iter().any(|p| p["status"] == "down") {
        "down"
    } else if all.iter().any(|p| p["status"] == "degraded") {
        "degraded"
    } else {
        "ok"
    };
    Report(json!({
        "status": overall, "storage": storage, "migrations": schema, "buffers": buffers,
        "wal": log, "disks": disks, "plugins": plugins, "tables": tables,
    }))
}

#[cfg(test)]
mod tests {
    use super::disks;

    const DISKS: &str = "default\t50\t1000\ncold\t500\t1000\n";

    #[test]
    fn a_disk_under_the_free_share_is_degraded_and_named() {
        let h = disks(DISKS, 10.0);
        assert_eq!(h["status"], "degraded");
        assert_eq!(h["reason"], "under 10 % free on: hot");
        assert_eq!(h["volumes"][0]["free_bytes"], 50);
        assert_eq!(h["volumes"][1]["disk"], "cold");
    }

    #[test]
    fn enough_free_space_or_a_zero_share_is_ok() {
        assert_eq!(disks(DISKS, 5.0)["status"], "ok");
        assert_eq!(disks(DISKS, 0.0)["status"], "ok");
        assert!(disks(DISKS, 0.0).get("reason").is_none());
    }
}
