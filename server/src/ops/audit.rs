//! The audit log of admin requests, written in batches.
//!
//! One insert per request would let a flood of token-less requests queue
//! thousands of engine calls ahead of the inserts that carry events. So rows
//! go into a bounded queue, a task writes what has gathered once a second in
//! one insert, and refused requests are recorded individually only up to
//! [`REFUSED_PER_SECOND`]; beyond that they are counted, and the count is
//! written as one row of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::storage::Storage;

/// Refused requests recorded one by one per second; the rest are counted.
pub const REFUSED_PER_SECOND: u64 = 20;
/// Rows waiting to be written; past this, rows are counted as lost.
const QUEUE: usize = 10_000;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// One admin request, as `audit_log` (in the records, `ops::records`)
/// stores it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    /// When the request came in (rows are written up to a second later).
    pub at: String,
    /// A fingerprint of the token (never the token), or why there is none.
    pub actor: String,
    pub remote: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub duration_ms: u64,
    /// The start of the body: the SQL of a query, the policy of a PUT.
    pub detail: String,
}

pub struct AuditLog {
    tx: mpsc::Sender<AuditRow>,
    /// Refused requests seen in the current second, and not recorded.
    refused_this_second: AtomicU64,
    refused_unrecorded: Arc<AtomicU64>,
    /// Rows that found the queue full.
    lost: Arc<AtomicU64>,
}

impl AuditLog {
    /// Starts the writer task; it runs as long as the runtime.
    pub fn start(storage: Arc<dyn Storage>) -> Arc<AuditLog> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let log = Arc::new(AuditLog {
            tx,
            refused_this_second: AtomicU64::new(0),
            refused_unrecorded: Arc::new(AtomicU64::new(0)),
            lost: Arc::new(AtomicU64::new(0)),
        });
        tokio::spawn(write_loop(Arc::downgrade(&log), storage, rx));
        log
    }

    /// Records a request that was let in.
    pub fn record(&self, row: AuditRow) {
        if self.tx.try_send(row).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a refused request, within the per-second allowance.
    pub fn record_refused(&self, row: AuditRow) {
        if self.refused_this_second.fetch_add(1, Ordering::Relaxed) < REFUSED_PER_SECOND {
            self.record(row);
        } else {
            self.refused_unrecorded.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn write_loop(
    log: std::sync::Weak<AuditLog>,
    storage: Arc<dyn Storage>,
    mut rx: mpsc::Receiver<AuditRow>,
) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tick.tick().await;
        let Some(log) = log.upgrade() else { return };
        log.refused_this_second.store(0, Ordering::Relaxed);
        let mut rows = Vec::new();
        while let Ok(row) = rx.try_recv() {
            rows.push(row);
        }
        let unrecorded = log.refused_unrecorded.swap(0, Ordering::Relaxed);
        let lost = log.lost.swap(0, Ordering::Relaxed);
        drop(log);
        if unrecorded + lost > 0 {
            rows.push(AuditRow {
                at: crate::storage::datetime64_text(&chrono::Utc::now()),
                actor: "refused requests over the recording limit".into(),
                remote: String::new(),
                method: String::new(),
                path: String::new(),
                status: 0,
                duration_ms: 0,
                detail: format!(
                    "{unrecorded} refused requests not recorded one by one (more than \
                     {REFUSED_PER_SECOND} a second); {lost} rows lost to a full queue"
                ),
            });
        }
        if rows.is_empty() {
            continue;
        }
        let mut sql = format!(
            "INSERT INTO {}.audit_log (at, actor, remote, method, path, status, duration_ms, detail) FORMAT JSONEachRow\n",
            storage.system_database()
        )
        .into_bytes();
        for row in &rows {
            serde_json::to_writer(&mut sql, row).expect("serializes");
            sql.push(b'\n');
        }
        let sql = String::from_utf8(sql).expect("JSON is UTF-8");
        if let Err(e) = storage.execute(&sql).await {
            tracing::warn!(error = %e, rows = rows.len(), "could not write the audit log");
        }
    }
}
