//! Requests gathered into micro-batches before the plugin chain and the log.
//!
//! Each table has one gatherer. A request's validated rows join its queue;
//! whenever a processing slot is free, the gatherer takes everything queued
//! (up to `ingest.max_events_per_request` events, the most one request may
//! bring alone), runs the chain once, appends to the log once, buffers the
//! rows and answers each request with its own part. A request that finds the
//! queue empty and a slot free goes alone at once: batches form only while
//! the slots are busy, so they add no wait. Under load, a plugin is
//! instantiated and the log fsynced once per micro-batch, not per request.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::IntakeError;
use crate::batch::Batcher;
use crate::ingest::{Parsed, Rejection, Row};
use crate::model::Table;
use crate::plugins::{ChainOutput, Plugins};
use crate::wal::{Record, Wal};

/// One request's rows, waiting to be processed.
pub(super) struct Job {
    /// Its rows, each with its index in the request.
    pub rows: Vec<(usize, Row)>,
    /// How many events the request held (valid or not): indexes are below.
    pub events: usize,
    /// `?wait`: hears when the rows are stored.
    pub waiter: Option<oneshot::Sender<()>>,
    pub reply: oneshot::Sender<Result<Part, IntakeError>>,
}

/// What became of one request's rows in its micro-batch.
#[derive(Debug, Default)]
pub(super) struct Part {
    pub accepted: usize,
    /// The plugins' rejections, indexed in the request.
    pub rejections: Vec<Rejection>,
    /// Ids of the events a plugin rejected (their resend claims are freed).
    pub rejected_ids: Vec<uuid::Uuid>,
    pub dropped: usize,
    pub quarantined: usize,
}

/// What the gatherers share.
pub(super) struct Pipeline {
    pub plugins: Arc<Plugins>,
    pub wal: Option<Arc<Wal>>,
    pub batcher: Arc<Batcher>,
    /// Events in one micro-batch, at most.
    pub max_events: usize,
    /// Counts stored page views and events into their visits.
    pub visits: Arc<crate::visits::Visits>,
}

/// Starts a table's gatherer; it ends when the sender is dropped.
pub(super) fn start(table: Table, pipeline: Arc<Pipeline>) -> mpsc::UnboundedSender<Job> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(gather(table, rx, pipeline));
    tx
}

async fn gather(table: Table, mut rx: mpsc::UnboundedReceiver<Job>, pipeline: Arc<Pipeline>) {
    // Two micro-batches of a table at once: one in the chain while the
    // other waits for its fsync.
    let slots = Arc::new(Semaphore::new(pipeline.plugins.workers().max(2)));
    let mut held: Option<Job> = None;
    loop {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let first = match held.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut events = first.rows.len();
        let mut jobs = vec![first];
        while let Ok(job) = rx.try_recv() {
            if events + job.rows.len() > pipeline.max_events {
                held = Some(job);
                break;
            }
            events += job.rows.len();
            jobs.push(job);
        }
        let pipeline = pipeline.clone();
        tokio::spawn(async move {
            let _permit = permit;
            pipeline.process(table, jobs).await;
        });
    }
}

impl Pipeline {
    async fn process(&self, table: Table, mut jobs: Vec<Job>) {
        let now = chrono::Utc::now();
        // One batch, each row's index offset by its request's base.
        let mut bases = Vec::with_capacity(jobs.len());
        let mut merged = Parsed::default();
        let mut base = 0;
        for job in &mut jobs {
            bases.push(base);
            merged
                .rows
                .extend(job.rows.drain(..).map(|(i, row)| (base + i, row)));
            base += job.events;
        }
        let mut out = if !merged.rows.is_empty() && self.plugins.applies_to(table) {
            self.plugins.run(table, merged, now).await
        } else {
            ChainOutput {
                parsed: merged,
                ..ChainOutput::default()
            }
        };
        let owner = |index: usize| bases.partition_point(|&b| b <= index) - 1;
        let mut parts: Vec<Part> = jobs.iter().map(|_| Part::default()).collect();
        for (index, _) in &out.parsed.rows {
            parts[owner(*index)].accepted += 1;
        }
        for &index in &out.dropped {
            parts[owner(index)].dropped += 1;
        }
        for &index in &out.quarantined {
            parts[owner(index)].quarantined += 1;
        }
        for &(index, id) in &out.rejected {
            parts[owner(index)].rejected_ids.push(id);
        }
        let (rejected, quarantined) = (out.rejected.len(), out.quarantined.len());
        for mut rejection in out.parsed.rejections.iter().cloned() {
            let j = owner(rejection.index);
            rejection.index -= bases[j];
            parts[j].rejections.push(rejection);
        }
        let counted = match table {
            Table::PageViews | Table::Events => self
                .visits
                .count(out.parsed.rows.iter_mut().map(|(_, r)| r)),
            _ => Default::default(),
        };
        let mut outcome = out.parsed.encode();
        let batches: Vec<(Table, Bytes, usize)> = [
            (
                table,
                Bytes::from(std::mem::take(&mut outcome.rows)),
                outcome.accepted,
            ),
            (
                Table::RejectedEvents,
                Bytes::from(out.rejected_rows),
                rejected,
            ),
            (
                Table::PluginQuarantine,
                Bytes::from(out.quarantine_rows),
                quarantined,
            ),
            (
                Table::FilteredTraffic,
                Bytes::from(out.filtered_rows),
                out.filtered,
            ),
            (Table::FilteredEvents, Bytes::from(out.kept_rows), out.kept),
        ]
        .into_iter()
        .filter(|(_, _, n)| *n > 0)
        .collect();
        let lsns = match self.log(&batches).await {
            Ok(lsns) => lsns,
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
                return;
            }
        };
        self.visits.stored(counted, now.timestamp_millis());
        // Only a request with rows in the batch waits for it; the others'
        // waiters are dropped, so they hear at once that nothing was stored.
        let mut waiters = Vec::new();
        for (job, part) in jobs.iter_mut().zip(&parts) {
            if part.accepted > 0 {
                waiters.extend(job.waiter.take());
            }
        }
        for ((t, rows, n), lsn) in batches.iter().zip(lsns) {
            let waiters = match *t == table {
                true => std::mem::take(&mut waiters),
                false => Vec::new(),
            };
            self.batcher.push(*t, rows, *n, lsn, waiters);
        }
        for (job, part) in jobs.into_iter().zip(parts) {
            let _ = job.reply.send(Ok(part));
        }
    }

    /// Logs rows of a table the server writes itself (no chain runs) and
    /// buffers them.
    pub(super) async fn store(
        &self,
        table: Table,
        rows: Bytes,
        n: usize,
    ) -> Result<(), IntakeError> {
        let batch = [(table, rows, n)];
        let lsn = self.log(&batch).await?.pop().flatten();
        self.batcher.push(table, &batch[0].1, n, lsn, Vec::new());
        Ok(())
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
