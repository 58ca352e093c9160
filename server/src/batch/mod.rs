//! Per-table buffers in a concurrent map, sealed into batches when a table
//! reaches `max_rows` or its oldest row `max_age`, and inserted with retries.
//!
//! A sealed batch is the unit a durable log will acknowledge: it has a
//! sequence number and its rows as JSONEachRow bytes, and it leaves the
//! in-flight set only once storage has confirmed it (or it was given up,
//! logged and counted).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::config::BatchConfig;
use crate::ingest::Table;
use crate::storage::Storage;

pub struct Batcher {
    cfg: BatchConfig,
    storage: Arc<dyn Storage>,
    buffers: DashMap<Table, Buffer>,
    /// Sequence numbers of sealed batches not yet stored or given up.
    in_flight: Mutex<BTreeSet<u64>>,
    /// Woken whenever a batch leaves `in_flight`.
    settled: Notify,
    next_seq: AtomicU64,
    /// Bounds concurrent inserts.
    workers: Arc<Semaphore>,
    pub stats: Stats,
}

#[derive(Default)]
struct Buffer {
    rows: Vec<u8>,
    count: usize,
    oldest: Option<Instant>,
}

struct Sealed {
    seq: u64,
    table: Table,
    rows: Bytes,
    count: usize,
}

/// Counters for health and metrics.
#[derive(Default, Serialize)]
pub struct Stats {
    pub rows_buffered: AtomicU64,
    pub rows_stored: AtomicU64,
    /// Rows given up after retries or refused by storage: logged, never silent.
    pub rows_failed: AtomicU64,
    pub batches_stored: AtomicU64,
    pub insert_retries: AtomicU64,
}

impl Batcher {
    pub fn new(cfg: BatchConfig, storage: Arc<dyn Storage>) -> Arc<Batcher> {
        let workers = Arc::new(Semaphore::new(cfg.flush_workers));
        Arc::new(Batcher {
            cfg,
            storage,
            buffers: DashMap::new(),
            in_flight: Mutex::new(BTreeSet::new()),
            settled: Notify::new(),
            next_seq: AtomicU64::new(1),
            workers,
            stats: Stats::default(),
        })
    }

    /// Seals buffers that reached `max_age`, until the returned task is aborted.
    pub fn start_timer(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let period = (self.cfg.max_age / 5).clamp(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_millis(250),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let now = Instant::now();
                let due: Vec<Table> = this
                    .buffers
                    .iter()
                    .filter(|b| {
                        b.oldest
                            .is_some_and(|t| now.duration_since(t) >= this.cfg.max_age)
                    })
                    .map(|b| *b.key())
                    .collect();
                for table in due {
                    this.seal(table);
                }
            }
        })
    }

    /// Adds validated rows (JSONEachRow lines) to a table's buffer.
    pub fn push(self: &Arc<Self>, table: Table, rows: &[u8], count: usize) {
        if count == 0 {
            return;
        }
        self.stats
            .rows_buffered
            .fetch_add(count as u64, Ordering::Relaxed);
        let sealed = {
            let mut buf = self.buffers.entry(table).or_default();
            buf.rows.extend_from_slice(rows);
            buf.count += count;
            buf.oldest.get_or_insert_with(Instant::now);
            (buf.count >= self.cfg.max_rows).then(|| self.take(table, &mut buf))
        };
        if let Some(batch) = sealed {
            self.dispatch(batch);
        }
    }

    /// Empties a buffer into a sealed batch. Called with the buffer locked, so
    /// the batch joins `in_flight` before anyone can see the buffer empty.
    fn take(&self, table: Table, buf: &mut Buffer) -> Sealed {
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        self.in_flight.lock().unwrap().insert(seq);
        let rows = Bytes::from(std::mem::take(&mut buf.rows));
        let count = std::mem::take(&mut buf.count);
        buf.oldest = None;
        Sealed {
            seq,
            table,
            rows,
            count,
        }
    }

    fn seal(self: &Arc<Self>, table: Table) {
        let sealed = self
            .buffers
            .get_mut(&table)
            .and_then(|mut buf| (buf.count > 0).then(|| self.take(table, &mut buf)));
        if let Some(batch) = sealed {
            self.dispatch(batch);
        }
    }

    fn dispatch(self: &Arc<Self>, batch: Sealed) {
        let this = self.clone();
        tokio::spawn(async move {
            let _permit = this.workers.clone().acquire_owned().await;
            this.store(&batch).await;
            this.stats
                .rows_buffered
                .fetch_sub(batch.count as u64, Ordering::Relaxed);
            this.in_flight.lock().unwrap().remove(&batch.seq);
            this.settled.notify_waiters();
        });
    }

    /// Writes every buffered row now and returns once all of it, and every
    /// batch sealed before, is stored or given up.
    pub async fn flush_all(self: &Arc<Self>) {
        for table in Table::ALL {
            self.seal(table);
        }
        let target = self.next_seq.load(Ordering::SeqCst) - 1;
        loop {
            let notified = self.settled.notified();
            let oldest = self.in_flight.lock().unwrap().first().copied();
            match oldest {
                Some(seq) if seq <= target => notified.await,
                _ => return,
            }
        }
    }

    /// Rows buffered or in flight, and the age of the oldest buffered row.
    pub fn depth(&self) -> (u64, Option<std::time::Duration>) {
        let oldest = self
            .buffers
            .iter()
            .filter_map(|b| b.oldest)
            .min()
            .map(|t| t.elapsed());
        (self.stats.rows_buffered.load(Ordering::Relaxed), oldest)
    }

    /// Inserts one batch, retrying transient errors with capped exponential
    /// backoff. When storage refuses the rows as invalid, the batch is split
    /// in halves until the bad rows are isolated, so one bad row cannot take
    /// its neighbours down with it.
    async fn store(&self, batch: &Sealed) {
        let table = batch.table.name();
        let mut work = vec![(batch.rows.clone(), batch.count)];
        while let Some((rows, count)) = work.pop() {
            let mut backoff = self.cfg.retry_initial_backoff;
            let mut attempt = 1;
            loop {
                match self.storage.insert(table, rows.clone()).await {
                    Ok(()) => {
                        self.stats
                            .rows_stored
                            .fetch_add(count as u64, Ordering::Relaxed);
                        self.stats.batches_stored.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(e) if e.is_transient() && attempt < self.cfg.max_attempts => {
                        tracing::warn!(table, rows = count, attempt, error = %e, "insert failed; retrying");
                        self.stats.insert_retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(self.cfg.retry_max_backoff);
                        attempt += 1;
                    }
                    Err(e) if !e.is_transient() && count > 1 => {
                        let (left, right) = split_rows(&rows, count);
                        work.push(right);
                        work.push(left);
                        break;
                    }
                    Err(e) => {
                        tracing::error!(table, rows = count, attempts = attempt, error = %e, "rows could not be stored");
                        self.stats
                            .rows_failed
                            .fetch_add(count as u64, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
}

/// Splits JSONEachRow bytes into two halves on a line boundary.
fn split_rows(rows: &Bytes, count: usize) -> ((Bytes, usize), (Bytes, usize)) {
    let half = count / 2;
    let cut = rows
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(half - 1)
        .map(|(i, _)| i + 1)
        .unwrap_or(rows.len());
    ((rows.slice(..cut), half), (rows.slice(cut..), count - half))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageError;
    use async_trait::async_trait;
    use std::time::Duration;

    /// Records inserts; fails transiently `fail_first` times, and refuses any
    /// batch holding a line with "bad". A unit-test double for the batcher's
    /// own logic; end-to-end tests use the real engine.
    #[derive(Default)]
    struct Recorder {
        inserts: Mutex<Vec<(String, usize)>>,
        fail_first: AtomicU64,
    }

    #[async_trait]
    impl Storage for Recorder {
        fn kind(&self) -> &'static str {
            "recorder"
        }
        async fn ping(&self) -> Result<(), StorageError> {
            Ok(())
        }
        async fn execute(&self, _: &str) -> Result<(), StorageError> {
            Ok(())
        }
        async fn query(&self, _: &str, _: &str) -> Result<Bytes, StorageError> {
            Ok(Bytes::new())
        }
        async fn query_readonly(&self, _: &str, _: &str) -> Result<Bytes, StorageError> {
            Ok(Bytes::new())
        }
        async fn insert(&self, table: &str, rows: Bytes) -> Result<(), StorageError> {
            if self.fail_first.load(Ordering::SeqCst) > 0 {
                self.fail_first.fetch_sub(1, Ordering::SeqCst);
                return Err(StorageError::Transient("down".into()));
            }
            let text = String::from_utf8(rows.to_vec()).unwrap();
            if text.contains("bad") {
                return Err(StorageError::Rejected("Code: 27. cannot parse".into()));
            }
            self.inserts
                .lock()
                .unwrap()
                .push((table.to_string(), text.lines().count()));
            Ok(())
        }
        async fn close(&self) {}
    }

    fn cfg(max_rows: usize) -> BatchConfig {
        BatchConfig {
            max_rows,
            max_age: Duration::from_secs(5),
            retry_initial_backoff: Duration::from_millis(100),
            retry_max_backoff: Duration::from_secs(1),
            max_attempts: 5,
            flush_workers: 2,
        }
    }

    fn lines(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| format!("{{\"n\":{i}}}\n"))
            .collect::<String>()
            .into_bytes()
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_at_max_rows_one_insert_per_table() {
        let storage = Arc::new(Recorder::default());
        let b = Batcher::new(cfg(1000), storage.clone());
        b.push(Table::Events, &lines(600), 600);
        b.push(Table::TicketSales, &lines(10), 10);
        b.push(Table::Events, &lines(400), 400);
        tokio::time::sleep(Duration::from_millis(1)).await;
        while b.depth().0 > 10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            *storage.inserts.lock().unwrap(),
            vec![("events".to_string(), 1000)]
        );
        assert_eq!(b.depth().0, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_when_the_oldest_row_is_max_age_old() {
        let storage = Arc::new(Recorder::default());
        let b = Batcher::new(cfg(1000), storage.clone());
        let timer = b.start_timer();
        b.push(Table::PageViews, &lines(3), 3);
        tokio::time::sleep(Duration::from_millis(4500)).await;
        assert!(
            storage.inserts.lock().unwrap().is_empty(),
            "flushed before max_age"
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(
            *storage.inserts.lock().unwrap(),
            vec![("page_views".to_string(), 3)]
        );
        timer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_then_stores() {
        let storage = Arc::new(Recorder {
            fail_first: AtomicU64::new(3),
            ..Default::default()
        });
        let b = Batcher::new(cfg(1000), storage.clone());
        b.push(Table::Events, &lines(5), 5);
        b.flush_all().await;
        assert_eq!(
            *storage.inserts.lock().unwrap(),
            vec![("events".to_string(), 5)]
        );
        assert_eq!(b.stats.insert_retries.load(Ordering::Relaxed), 3);
        assert_eq!(b.stats.rows_stored.load(Ordering::Relaxed), 5);
        assert_eq!(b.stats.rows_failed.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_and_counts_the_rows() {
        let storage = Arc::new(Recorder {
            fail_first: AtomicU64::new(100),
            ..Default::default()
        });
        let b = Batcher::new(cfg(1000), storage.clone());
        b.push(Table::Events, &lines(7), 7);
        b.flush_all().await;
        assert_eq!(b.stats.rows_failed.load(Ordering::Relaxed), 7);
        assert_eq!(b.stats.insert_retries.load(Ordering::Relaxed), 4);
        assert_eq!(b.depth().0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_row_does_not_sink_its_batch() {
        let storage = Arc::new(Recorder::default());
        let b = Batcher::new(cfg(1000), storage.clone());
        let mut rows = lines(9);
        rows.extend_from_slice(b"{\"bad\":1}\n");
        b.push(Table::Events, &rows, 10);
        b.flush_all().await;
        let stored: usize = storage.inserts.lock().unwrap().iter().map(|(_, n)| n).sum();
        assert_eq!(stored, 9);
        assert_eq!(b.stats.rows_failed.load(Ordering::Relaxed), 1);
    }
}
