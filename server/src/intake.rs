//! Taking a request's events the rest of the way, with no HTTP types: decode
//! and validate, drop resends, run the plugin chain, append to the
//! write-ahead log, buffer, and (`wait`) wait for storage. The ingest route
//! translates HTTP into a call here and the answer back; benches and tests
//! can call it directly.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::batch::Batcher;
use crate::config::IngestConfig;
use crate::ingest::{self, BodyFormat, DecodeError, Rejection, ResendKey};
use crate::model::Table;
use crate::plugins::{ChainOutput, Plugins};
use crate::telemetry;
use crate::wal::{Record, Recovered, Wal};

/// What became of a request's events.
#[derive(Debug, Serialize)]
pub struct Receipt {
    pub accepted: usize,
    pub rejected: usize,
    /// Events whose id was seen within the deduplication window: dropped.
    pub duplicates: usize,
    /// Dropped by a plugin's verdict (a bot, say): counted, not stored.
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped: usize,
    /// Held in `plugin_quarantine`: a fail-closed plugin could not judge them.
    #[serde(skip_serializing_if = "is_zero")]
    pub quarantined: usize,
    /// With `wait`: the accepted rows are in storage, not only in the log.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stored: bool,
    /// One entry per rejected event: its index in the request and why.
    pub errors: Vec<Rejection>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Why nothing of a request was taken.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The body is not events: malformed, empty, too many.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Full right now (the log is at its cap): send it again later.
    #[error("{0}")]
    Overloaded(String),
    /// The log could not take it.
    #[error("{0}")]
    Unavailable(String),
}

pub struct Intake {
    max_events: usize,
    wait_timeout: Duration,
    /// Events accepted within `ingest.dedup_window`, to drop resends.
    recent: moka::sync::Cache<ResendKey, ()>,
    plugins: Arc<Plugins>,
    wal: Option<Arc<Wal>>,
    batcher: Arc<Batcher>,
}

impl Intake {
    pub fn new(
        cfg: &IngestConfig,
        plugins: Arc<Plugins>,
        wal: Option<Arc<Wal>>,
        batcher: Arc<Batcher>,
    ) -> Intake {
        // LRU, not moka's default TinyLFU: TinyLFU refuses new keys once the
        // cache is full, and under sustained load every resend would pass.
        let recent = moka::sync::Cache::builder()
            .max_capacity(cfg.dedup_capacity)
            .time_to_live(cfg.dedup_window)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        Intake {
            max_events: cfg.max_events_per_request,
            wait_timeout: cfg.wait_timeout,
            recent,
            plugins,
            wal,
            batcher,
        }
    }

    /// A client whose 202 was lost in a crash will resend: what the log
    /// already holds counts as seen, so the resend is dropped.
    pub fn remember(&self, recovered: &Recovered) {
        // Rows of the tables clients write; a quarantined or rejected event
        // is not "accepted" as sent.
        for (table, rows) in recovered
            .logged
            .iter()
            .filter(|(t, _)| Table::INGEST.contains(t))
        {
            ingest::resend_keys(*table, rows).for_each(|k| self.recent.insert(k, ()));
        }
    }

    /// Takes a request's events: `scope` is the organizers its key may write
    /// for (`None`: any); with `wait`, answers once storage has the rows or
    /// `ingest.wait_timeout` has passed.
    pub async fn accept(
        &self,
        table: Table,
        body: &[u8],
        format: BodyFormat,
        scope: Option<&[String]>,
        wait: bool,
    ) -> Result<Receipt, IntakeError> {
        let now = chrono::Utc::now();
        let mut parsed = ingest::parse(table, body, format, self.max_events, now, scope)?;
        // An id seen within the window (in this request or an earlier one) is
        // a resend: drop it. Claimed atomically, so two racing resends keep one.
        let duplicates = parsed.retain(|row| {
            self.recent
                .entry(ResendKey::of(table, row))
                .or_insert(())
                .is_fresh()
        });
        let forget = |keys: &[ResendKey]| keys.iter().for_each(|k| self.recent.invalidate(k));
        // What this request claimed: released if it is refused, so that the
        // retry is not taken for a resend (quarantined events included).
        let claimed: Vec<ResendKey> = parsed
            .rows
            .iter()
            .map(|(_, row)| ResendKey::of(table, row))
            .collect();
        let chain = if !parsed.rows.is_empty() && self.plugins.applies_to(table) {
            let chain = self.plugins.run(table, parsed, now).await;
            // A rejected event may come back corrected under the same id.
            let rejected: Vec<ResendKey> = claimed
                .iter()
                .filter(|k| chain.rejected_ids.contains(&k.id))
                .cloned()
                .collect();
            forget(&rejected);
            chain
        } else {
            ChainOutput {
                parsed,
                ..ChainOutput::default()
            }
        };
        let (dropped, quarantined) = (chain.dropped, chain.quarantined);
        let mut outcome = chain.parsed.encode();
        let rows = Bytes::from(std::mem::take(&mut outcome.rows));
        // What goes to the log and the buffers: the rows, and the plugins'
        // rejected and quarantined events.
        let batches: Vec<(Table, Bytes, usize)> = [
            (table, rows, outcome.accepted),
            (
                Table::RejectedEvents,
                Bytes::from(chain.rejected_rows),
                chain.rejected_ids.len(),
            ),
            (
                Table::PluginQuarantine,
                Bytes::from(chain.quarantine_rows),
                chain.quarantined,
            ),
        ]
        .into_iter()
        .filter(|(_, _, n)| *n > 0)
        .collect();
        let lsns = match self.log(&batches).await {
            Ok(lsns) => lsns,
            Err(e) => {
                forget(&claimed);
                return Err(e);
            }
        };
        let (mut waiter, stored) = match wait && outcome.accepted > 0 {
            true => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        for ((t, rows, n), lsn) in batches.iter().zip(lsns) {
            let waiter = if *t == table { waiter.take() } else { None };
            self.batcher.push(*t, rows, *n, lsn, waiter);
        }
        let mut confirmed = false;
        if let Some(rx) = stored {
            self.batcher.seal_for_waiter(table);
            // Past the timeout the answer is the usual one: the rows are
            // durable in the log and will be stored; only the confirmation
            // is not waited for.
            confirmed = matches!(
                tokio::time::timeout(self.wait_timeout, rx).await,
                Ok(Ok(()))
            );
        }
        let receipt = Receipt {
            accepted: outcome.accepted,
            rejected: outcome.rejections.len(),
            duplicates,
            dropped,
            quarantined,
            stored: confirmed,
            errors: outcome.rejections,
        };
        record(table, &receipt);
        Ok(receipt)
    }

    /// Appends the batches to the log (when it is on) and returns each one's
    /// record; refuses them all when the log is full or failing.
    async fn log(
        &self,
        batches: &[(Table, Bytes, usize)],
    ) -> Result<Vec<Option<u64>>, IntakeError> {
        let Some(wal) = self.wal.as_ref().filter(|_| !batches.is_empty()) else {
            return Ok(vec![None; batches.len()]);
        };
        let bytes: u64 = batches.iter().map(|(_, r, _)| r.len() as u64).sum();
        if wal.is_full(bytes) {
            return Err(IntakeError::Overloaded(format!(
                "the write-ahead log is full ({} of {} bytes): storage is behind, retry later",
                wal.live_bytes(),
                wal.max_bytes()
            )));
        }
        let appends = batches.iter().map(|(t, rows, n)| {
            wal.append(Record::Rows {
                table: *t,
                count: *n as u32,
                rows: rows.clone(),
            })
        });
        match futures::future::try_join_all(appends).await {
            Ok(lsns) => Ok(lsns.into_iter().map(Some).collect()),
            Err(e) => Err(IntakeError::Unavailable(format!("write-ahead log: {e}"))),
        }
    }
}

/// Counts per request, from the receipt: never per event.
fn record(table: Table, r: &Receipt) {
    let events = |outcome: &'static str, n: usize| {
        metrics::counter!(telemetry::INGEST_EVENTS, "table" => table.name(), "outcome" => outcome)
            .increment(n as u64)
    };
    events("accepted", r.accepted);
    events("rejected", r.rejected);
    events("duplicate", r.duplicates);
    events("dropped", r.dropped);
    events("quarantined", r.quarantined);
    let mut by_field: Vec<(&'static str, u64)> = Vec::new();
    for e in &r.errors {
        let field = telemetry::field_label(e.field.as_deref());
        match by_field.iter_mut().find(|(f, _)| *f == field) {
            Some((_, n)) => *n += 1,
            None => by_field.push((field, 1)),
        }
    }
    for (field, n) in by_field {
        metrics::counter!(telemetry::INGEST_REJECTIONS, "table" => table.name(), "field" => field)
            .increment(n);
    }
}
