//! Per-table buffers in a concurrent map, sealed into batches when a table
//! reaches `max_rows` or its oldest row `max_age`, and inserted with retries.
//!
//! Batches adapt to load: while a table's insert runs, its rows gather, and
//! the next insert (at least `min_interval` later) takes all of them, up to
//! `max_insert_rows` / `max_insert_bytes`. Under load inserts grow instead
//! of multiplying: the engine's cost is mostly per insert (a part in the
//! table and one in each view), not per row.
//!
//! With the write-ahead log on, a batch's rows are already durable; sealing
//! logs which records form the batch, and its identity (the seal's LSN) is
//! the insert's deduplication token. Errors of the environment (unreachable,
//! disk full, access denied, a missing table, anything unrecognised) are
//! retried forever with capped, jittered backoff and shown in
//! `/admin/health` (the log holds the data, and backpressure stops intake
//! when it is full). Only rows the engine cannot parse or convert (an
//! allow-list of its codes) are isolated by halving the batch and written to
//! `dead_letter` with the reason. Only once every row is stored or
//! dead-lettered is the batch confirmed (`Done`) and its log released.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::time::Instant;

use crate::config::BatchConfig;
use crate::model::Table;
use crate::storage::{Storage, StorageError};
use crate::telemetry;
use crate::wal::{Lsn, Record, Recovered, Wal};

pub struct Batcher {
    cfg: BatchConfig,
    storage: Arc<dyn Storage>,
    wal: Option<Arc<Wal>>,
    /// Start of every deduplication token: the log's epoch, or a fresh id
    /// per process when there is no log.
    token_prefix: String,
    buffers: DashMap<Table, Buffer>,
    /// Sequence numbers of sealed batches not yet stored or dead-lettered.
    in_flight: Mutex<BTreeSet<u64>>,
    /// Woken whenever a batch leaves `in_flight`.
    settled: Notify,
    next_seq: AtomicU64,
    /// Bounds concurrent inserts.
    workers: Arc<Semaphore>,
    /// Per table: when a waiter may next seal, and whether a delayed seal is
    /// already on its way (see [`Batcher::seal_for_waiter`]).
    waiter_seals: DashMap<Table, (Instant, bool)>,
    pub stats: Stats,
}

/// Waiting requests (`?wait=true`) seal a table's buffer at most this often:
/// each seal is a part in every view, so one per request would not do.
const WAITER_SEAL_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Default)]
struct Buffer {
    rows: Vec<u8>,
    count: usize,
    oldest: Option<Instant>,
    /// The log records these rows came from.
    lsns: Vec<Lsn>,
    /// Requests waiting for these rows to be stored (`?wait=true`).
    waiters: Vec<oneshot::Sender<()>>,
    /// This table's batches sealed and not yet stored.
    inserting: usize,
    /// When this table was last sealed.
    last_seal: Option<Instant>,
}

impl Buffer {
    /// Whether the rows should go now: past a cap or `max_age` always; at
    /// `max_rows` only once the table's previous insert is done and
    /// `min_interval` has passed since it was sealed.
    fn due(&self, cfg: &BatchConfig, now: Instant) -> bool {
        if self.count == 0 {
            return false;
        }
        let capped = self.count >= cfg.max_insert_rows || self.rows.len() >= cfg.max_insert_bytes;
        let aged = self
            .oldest
            .is_some_and(|t| now.duration_since(t) >= cfg.max_age);
        let paced = self.inserting == 0
            && self
                .last_seal
                .is_none_or(|t| now.duration_since(t) >= cfg.min_interval);
        capped || aged || (self.count >= cfg.max_rows && paced)
    }
}

struct Sealed {
    seq: u64,
    table: Table,
    rows: Bytes,
    count: usize,
    lsns: Vec<Lsn>,
    /// Already sealed in the log (a batch found on replay).
    seal: Option<Lsn>,
    waiters: Vec<oneshot::Sender<()>>,
}

/// Counters for health and metrics.
#[derive(Default, Serialize)]
pub struct Stats {
    pub rows_buffered: AtomicU64,
    pub rows_stored: AtomicU64,
    /// Rows storage refused as invalid, kept in `dead_letter` with the reason.
    pub rows_dead_lettered: AtomicU64,
    pub batches_stored: AtomicU64,
    pub insert_retries: AtomicU64,
    /// Inserts failing right now and being retried.
    pub inserts_failing: AtomicU64,
    /// The latest error of an insert being retried, for health.
    #[serde(skip)]
    pub last_error: Mutex<Option<String>>,
}

impl Batcher {
    pub fn new(cfg: BatchConfig, storage: Arc<dyn Storage>, wal: Option<Arc<Wal>>) -> Arc<Batcher> {
        let workers = Arc::new(Semaphore::new(cfg.flush_workers));
        let token_prefix = match &wal {
            Some(w) => w.epoch.clone(),
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        Arc::new(Batcher {
            cfg,
            storage,
            wal,
            token_prefix,
            buffers: DashMap::new(),
            in_flight: Mutex::new(BTreeSet::new()),
            settled: Notify::new(),
            next_seq: AtomicU64::new(1),
            workers,
            waiter_seals: DashMap::new(),
            stats: Stats::default(),
        })
    }

    /// Finishes what the log held at start: sealed batches are inserted again
    /// under their old tokens, unsealed rows go back into the buffers.
    pub fn recover(self: &Arc<Self>, recovered: Recovered) {
        for b in recovered.sealed {
            let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
            self.in_flight.lock().unwrap().insert(seq);
            self.buffers.entry(b.table).or_default().inserting += 1;
            self.stats
                .rows_buffered
                .fetch_add(b.count as u64, Ordering::Relaxed);
            self.dispatch(Sealed {
                seq,
                table: b.table,
                rows: b.rows,
                count: b.count,
                lsns: b.lsns,
                seal: Some(b.seal),
                waiters: Vec::new(),
            });
        }
        for (lsn, table, count, rows) in recovered.unsealed {
            self.push(table, &rows, count as usize, Some(lsn), None);
        }
    }

    /// Seals buffers that are due (reached `max_age`, or held back by
    /// `min_interval`), until the returned task is aborted.
    pub fn start_timer(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let period = (self.cfg.max_age.min(self.cfg.min_interval) / 5).clamp(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_millis(250),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let tables: Vec<Table> = this.buffers.iter().map(|b| *b.key()).collect();
                for table in tables {
                    this.seal_if_due(table);
                }
            }
        })
    }

    /// Seals a table's buffer if [`Buffer::due`].
    fn seal_if_due(self: &Arc<Self>, table: Table) {
        let sealed = self.buffers.get_mut(&table).and_then(|mut buf| {
            buf.due(&self.cfg, Instant::now())
                .then(|| self.take(table, &mut buf))
        });
        if let Some(batch) = sealed {
            self.dispatch(batch);
        }
    }

    /// Adds validated rows (JSONEachRow lines, from log record `lsn`) to a
    /// table's buffer. `waiters` hear when they are stored.
    pub fn push(
        self: &Arc<Self>,
        table: Table,
        rows: &[u8],
        count: usize,
        lsn: Option<Lsn>,
        waiters: impl IntoIterator<Item = oneshot::Sender<()>>,
    ) {
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
            buf.lsns.extend(lsn);
            buf.waiters.extend(waiters);
            let now = Instant::now();
            buf.oldest.get_or_insert(now);
            buf.due(&self.cfg, now).then(|| self.take(table, &mut buf))
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
        buf.oldest = None;
        buf.inserting += 1;
        buf.last_seal = Some(Instant::now());
        Sealed {
            seq,
            table,
            rows: Bytes::from(std::mem::take(&mut buf.rows)),
            count: std::mem::take(&mut buf.count),
            lsns: std::mem::take(&mut buf.lsns),
            seal: None,
            waiters: std::mem::take(&mut buf.waiters),
        }
    }

    /// Sends a table's buffered rows on their way now.
    pub fn seal(self: &Arc<Self>, table: Table) {
        let sealed = self
            .buffers
            .get_mut(&table)
            .and_then(|mut buf| (buf.count > 0).then(|| self.take(table, &mut buf)));
        if let Some(batch) = sealed {
            self.dispatch(batch);
        }
    }

    /// Seals a table for a waiting request: now, if no waiter sealed it in
    /// the last [`WAITER_SEAL_EVERY`]; else once that much time has passed,
    /// for every request waiting by then.
    pub fn seal_for_waiter(self: &Arc<Self>, table: Table) {
        let now = Instant::now();
        let delay = {
            let mut entry = self.waiter_seals.entry(table).or_insert((now, false));
            let (next, pending) = &mut *entry;
            if *pending {
                return;
            }
            if now >= *next {
                *next = now + WAITER_SEAL_EVERY;
                None
            } else {
                *pending = true;
                Some(*next)
            }
        };
        match delay {
            None => self.seal(table),
            Some(at) => {
                let this = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    if let Some(mut e) = this.waiter_seals.get_mut(&table) {
                        *e = (Instant::now() + WAITER_SEAL_EVERY, false);
                    }
                    this.seal(table);
                });
            }
        }
    }

    fn dispatch(self: &Arc<Self>, batch: Sealed) {
        let this = self.clone();
        tokio::spawn(async move {
            let _permit = this.workers.clone().acquire_owned().await;
            let started = std::time::Instant::now();
            let seal = this.seal_in_log(&batch).await;
            let token = format!("{}-{seal}", this.token_prefix);
            this.store(&batch, &token).await;
            if let Some(wal) = &this.wal
                && let Err(e) = wal.append(Record::Done { seal }).await
            {
                // The batch is stored; a replay would resend it under the
                // same token and storage would drop the copy.
                tracing::warn!(error = %e, seal, "could not log a confirmed batch");
            }
            this.stats
                .rows_buffered
                .fetch_sub(batch.count as u64, Ordering::Relaxed);
            let table = batch.table.name();
            metrics::histogram!(telemetry::FLUSH_DURATION, "table" => table)
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!(telemetry::FLUSH_ROWS, "table" => table).record(batch.count as f64);
            for waiter in batch.waiters {
                let _ = waiter.send(());
            }
            if let Some(mut buf) = this.buffers.get_mut(&batch.table) {
                buf.inserting -= 1;
            }
            this.in_flight.lock().unwrap().remove(&batch.seq);
            this.settled.notify_waiters();
            // What gathered while this insert ran may be due now.
            this.seal_if_due(batch.table);
        });
    }

    /// The batch's identity: its `Seal` record's LSN, logged (and fsynced)
    /// before the first insert attempt so a replay re-forms the same batch.
    async fn seal_in_log(&self, batch: &Sealed) -> u64 {
        if let Some(seal) = batch.seal {
            return seal;
        }
        let Some(wal) = &self.wal else {
            return batch.seq;
        };
        let mut backoff = Backoff::new(&self.cfg);
        loop {
            match wal
                .append(Record::Seal {
                    table: batch.table,
                    lsns: batch.lsns.clone(),
                })
                .await
            {
                Ok(lsn) => return lsn,
                Err(e) => {
                    tracing::error!(error = %e, "could not seal a batch in the write-ahead log; retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    /// Holds every insert until the returned permit is dropped (after the
    /// inserts already running finish). Ingest goes on into the log.
    pub async fn pause(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.workers
            .clone()
            .acquire_many_owned(self.cfg.flush_workers as u32)
            .await
            .expect("never closed")
    }

    /// Writes every buffered row now and returns once all of it, and every
    /// batch sealed before, is stored or dead-lettered.
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

    /// Inserts one batch. Environment errors are retried until storage
    /// takes it; a batch refused for its data is halved (each half with its
    /// own derived token) until the bad rows are alone, and those go to
    /// `dead_letter`. Returns only when every row is in one or the other.
    async fn store(&self, batch: &Sealed, token: &str) {
        let table = batch.table.name();
        let mut work = vec![(batch.rows.clone(), batch.count, token.to_string())];
        while let Some((rows, count, token)) = work.pop() {
            match self.insert_until_stored(table, &rows, &token).await {
                Ok(()) => {
                    metrics::counter!(telemetry::ROWS_STORED, "table" => table)
                        .increment(count as u64);
                    self.stats
                        .rows_stored
                        .fetch_add(count as u64, Ordering::Relaxed);
                    self.stats.batches_stored.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) if count > 1 => {
                    let ((left, nl), (right, nr)) = split_rows(&rows, count);
                    work.push((right, nr, format!("{token}b")));
                    work.push((left, nl, format!("{token}a")));
                }
                Err(reason) => {
                    tracing::error!(table, %reason, "storage refused a row; it goes to dead_letter");
                    let line = serde_json::json!({
                        "source_table": table,
                        "reason": reason.to_string(),
                        "row": String::from_utf8_lossy(&rows).trim_end(),
                    });
                    let mut dead = serde_json::to_vec(&line).expect("serializes");
                    dead.push(b'\n');
                    self.dead_letter(Bytes::from(dead), &format!("{token}d"))
                        .await;
                    self.stats
                        .rows_dead_lettered
                        .fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(telemetry::ROWS_DEAD_LETTERED, "table" => table).increment(1);
                }
            }
        }
    }

    /// Writes a dead letter, retrying whatever the error: until it is
    /// stored, the batch is not confirmed and its rows stay in the log.
    async fn dead_letter(&self, row: Bytes, token: &str) {
        let mut backoff = Backoff::new(&self.cfg);
        loop {
            match self.insert_until_stored("dead_letter", &row, token).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = %e, "dead_letter refused a row; retrying (the batch stays in the log)");
                    self.retry_after("dead_letter", &e, &mut backoff).await;
                }
            }
        }
    }

    /// Counts a failed insert, shows it in health as failing while it waits
    /// out the backoff, then lets the caller try again.
    async fn retry_after(&self, table: &str, e: &StorageError, backoff: &mut Backoff) {
        self.stats.inserts_failing.fetch_add(1, Ordering::Relaxed);
        *self.stats.last_error.lock().unwrap() = Some(e.to_string());
        self.stats.insert_retries.fetch_add(1, Ordering::Relaxed);
        if backoff.attempt == 1 || backoff.attempt.is_power_of_two() {
            tracing::warn!(table, attempt = backoff.attempt, error = %e, "insert failed; retrying");
        }
        backoff.wait().await;
        self.stats.inserts_failing.fetch_sub(1, Ordering::Relaxed);
    }

    /// One insert, retried with capped, jittered exponential backoff for as
    /// long as the error is not the data's fault. Returns the data error.
    async fn insert_until_stored(
        &self,
        table: &str,
        rows: &Bytes,
        token: &str,
    ) -> Result<(), StorageError> {
        let mut backoff = Backoff::new(&self.cfg);
        loop {
            let result = match fail::eval("storage::insert", |arg| arg) {
                Some(arg) => Err(match arg.as_deref() {
                    // `return(disk_full)`: the engine's own text for it.
                    Some("disk_full") => StorageError::from_exception(
                        "Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)".into(),
                    ),
                    Some("unknown_table") => StorageError::from_exception(format!(
                        "Code: 60. DB::Exception: Table {}.{table} does not exist. (UNKNOWN_TABLE)",
                        crate::model::DATABASE
                    )),
                    _ => StorageError::transient("injected storage outage"),
                }),
                None => self.storage.insert(table, rows.clone(), token).await,
            };
            let result = match (result, fail::eval("storage::lost_ack", |_| ())) {
                (Ok(()), Some(())) => Err(StorageError::transient(
                    "injected: timed out after the insert succeeded",
                )),
                (result, _) => result,
            };
            if result.is_ok() {
                fail::eval("batch::crash_before_checkpoint", |_| std::process::abort());
            }
            if let Err(e) = &result {
                let kind = if e.is_data_error() {
                    "rejected"
                } else {
                    "transient"
                };
                metrics::counter!(telemetry::STORAGE_ERRORS, "kind" => kind).increment(1);
            }
            match result {
                Err(e) if !e.is_data_error() => self.retry_after(table, &e, &mut backoff).await,
                other => return other,
            }
        }
    }
}

/// Capped exponential backoff with jitter: many batches failing together
/// (storage down) do not retry in lockstep when it comes back.
struct Backoff {
    next: std::time::Duration,
    max: std::time::Duration,
    attempt: u64,
}

impl Backoff {
    fn new(cfg: &BatchConfig) -> Backoff {
        Backoff {
            next: cfg.retry_initial_backoff,
            max: cfg.retry_max_backoff,
            attempt: 1,
        }
    }

    /// Sleeps between half and all of the current step, then doubles it.
    async fn wait(&mut self) {
        use rand::Rng;
        let share = rand::rng().random_range(0.5..=1.0);
        tokio::time::sleep(self.next.mul_f64(share)).await;
        self.next = (self.next * 2).min(self.max);
        self.attempt += 1;
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
    use async_trait::async_trait;
    use std::time::Duration;

    /// Records inserts and their tokens; fails transiently `fail_first`
    /// times, and refuses any batch holding a line with "bad". A unit-test
    /// double for the batcher's own logic; end-to-end tests use the engine.
    #[derive(Default)]
    struct Recorder {
        inserts: Mutex<Vec<(String, usize, String)>>,
        fail_first: AtomicU64,
        /// This error, this many times, for dead_letter inserts only.
        dead_letter_fails: AtomicU64,
        /// Refuse every insert with this engine error this many times.
        env_error: Mutex<Option<(String, u64)>>,
        /// How long each insert takes.
        delay: Duration,
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
        async fn query_readonly_with(
            &self,
            _: &str,
            _: &[(String, String)],
            _: &str,
        ) -> Result<Bytes, StorageError> {
            Ok(Bytes::new())
        }
        async fn insert(&self, table: &str, rows: Bytes, token: &str) -> Result<(), StorageError> {
            tokio::time::sleep(self.delay).await;
            if self.fail_first.load(Ordering::SeqCst) > 0 {
                self.fail_first.fetch_sub(1, Ordering::SeqCst);
                return Err(StorageError::transient("down"));
            }
            if let Some((e, n)) = self.env_error.lock().unwrap().as_mut()
                && *n > 0
            {
                *n -= 1;
                return Err(StorageError::from_exception(e.clone()));
            }
            if table == "dead_letter" && self.dead_letter_fails.load(Ordering::SeqCst) > 0 {
                self.dead_letter_fails.fetch_sub(1, Ordering::SeqCst);
                return Err(StorageError::from_exception(
                    "Code: 497. DB::Exception: Not enough privileges. (ACCESS_DENIED)".into(),
                ));
            }
            let text = String::from_utf8(rows.to_vec()).unwrap();
            if table != "dead_letter" && text.contains("bad") {
                return Err(StorageError::rejected("Code: 27. cannot parse"));
            }
            self.inserts.lock().unwrap().push((
                table.to_string(),
                text.lines().count(),
                token.to_string(),
            ));
            Ok(())
        }
        async fn close(&self) {}
    }

    impl Recorder {
        fn tables(&self) -> Vec<(String, usize)> {
            self.inserts
                .lock()
                .unwrap()
                .iter()
                .map(|(t, n, _)| (t.clone(), *n))
                .collect()
        }
    }

    fn cfg(max_rows: usize) -> BatchConfig {
        BatchConfig {
            max_rows,
            max_age: Duration::from_secs(5),
            min_interval: Duration::ZERO,
            max_insert_rows: 100_000,
            max_insert_bytes: 64 << 20,
            retry_initial_backoff: Duration::from_millis(100),
            retry_max_backoff: Duration::from_secs(1),
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
        let b = Batcher::new(cfg(1000), storage.clone(), None);
        b.push(Table::Events, &lines(600), 600, None, None);
        b.push(Table::TicketSales, &lines(10), 10, None, None);
        b.push(Table::Events, &lines(400), 400, None, None);
        while b.depth().0 > 10 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(storage.tables(), vec![("events".to_string(), 1000)]);
        assert_eq!(b.depth().0, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn under_load_the_next_insert_takes_what_gathered_meanwhile() {
        let storage = Arc::new(Recorder {
            delay: Duration::from_millis(300),
            ..Default::default()
        });
        let b = Batcher::new(
            BatchConfig {
                min_interval: Duration::from_millis(500),
                ..cfg(1000)
            },
            storage.clone(),
            None,
        );
        let timer = b.start_timer();
        // 1000 rows every 50 ms for a second: 20 000 rows.
        for _ in 0..20 {
            b.push(Table::Events, &lines(1000), 1000, None, None);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        b.flush_all().await;
        let sizes: Vec<usize> = storage.tables().iter().map(|(_, n)| *n).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 20_000);
        // Sealed at 0 ms (1000 rows), then every 500 ms with what gathered:
        // not twenty inserts of 1000.
        assert_eq!(sizes[0], 1000);
        assert!(sizes.len() <= 4, "inserts: {sizes:?}");
        assert!(sizes[1] >= 9000, "inserts: {sizes:?}");
        timer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_buffer_past_the_insert_cap_is_sealed_even_while_an_insert_runs() {
        let storage = Arc::new(Recorder {
            delay: Duration::from_secs(2),
            ..Default::default()
        });
        let b = Batcher::new(
            BatchConfig {
                min_interval: Duration::from_secs(10),
                max_insert_rows: 3000,
                ..cfg(1000)
            },
            storage.clone(),
            None,
        );
        for _ in 0..7 {
            b.push(Table::Events, &lines(1000), 1000, None, None);
        }
        b.flush_all().await;
        let mut sizes: Vec<usize> = storage.tables().iter().map(|(_, n)| *n).collect();
        sizes.sort();
        // The first at max_rows; then two at the cap, while inserts ran.
        assert_eq!(sizes, vec![1000, 3000, 3000]);
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_when_the_oldest_row_is_max_age_old() {
        let storage = Arc::new(Recorder::default());
        let b = Batcher::new(cfg(1000), storage.clone(), None);
        let timer = b.start_timer();
        b.push(Table::PageViews, &lines(3), 3, None, None);
        tokio::time::sleep(Duration::from_millis(4500)).await;
        assert!(storage.tables().is_empty(), "flushed before max_age");
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(storage.tables(), vec![("page_views".to_string(), 3)]);
        timer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_retrying_while_storage_is_down_and_keeps_the_token() {
        let storage = Arc::new(Recorder {
            fail_first: AtomicU64::new(40),
            ..Default::default()
        });
        let b = Batcher::new(cfg(1000), storage.clone(), None);
        b.push(Table::Events, &lines(5), 5, None, None);
        b.flush_all().await;
        assert_eq!(storage.tables(), vec![("events".to_string(), 5)]);
        assert_eq!(b.stats.insert_retries.load(Ordering::Relaxed), 40);
        assert_eq!(b.stats.rows_stored.load(Ordering::Relaxed), 5);
        assert_eq!(b.depth().0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_row_goes_to_dead_letter_and_its_neighbours_are_stored() {
        let storage = Arc::new(Recorder::default());
        let b = Batcher::new(cfg(1000), storage.clone(), None);
        let mut rows = lines(9);
        rows.extend_from_slice(b"{\"bad\":1}\n");
        b.push(Table::Events, &rows, 10, None, None);
        b.flush_all().await;
        let inserts = storage.inserts.lock().unwrap().clone();
        let stored: usize = inserts
            .iter()
            .filter(|(t, _, _)| t == "events")
            .map(|(_, n, _)| n)
            .sum();
        assert_eq!(stored, 9);
        let dead: Vec<_> = inserts
            .iter()
            .filter(|(t, _, _)| t == "dead_letter")
            .collect();
        assert_eq!(dead.len(), 1);
        assert_eq!(b.stats.rows_dead_lettered.load(Ordering::Relaxed), 1);
        // Every piece went out under its own token, derived from the batch's.
        let mut tokens: Vec<&String> = inserts.iter().map(|(_, _, t)| t).collect();
        tokens.sort();
        tokens.dedup();
        assert_eq!(tokens.len(), inserts.len());
    }

    /// Disk full, access denied, an unknown table, an unknown code: the
    /// environment's fault. The batch waits and is stored whole; nothing is
    /// dead-lettered.
    #[tokio::test(start_paused = true)]
    async fn environment_errors_are_retried_never_dead_lettered() {
        for error in [
            "Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)",
            "Code: 497. DB::Exception: Not enough privileges. (ACCESS_DENIED)",
            "Code: 516. DB::Exception: Authentication failed (AUTHENTICATION_FAILED)",
            "Code: 60. DB::Exception: Table bilten_analytics.events does not exist. (UNKNOWN_TABLE)",
            "Code: 4242. DB::Exception: something this server has never seen",
        ] {
            let storage = Arc::new(Recorder::default());
            *storage.env_error.lock().unwrap() = Some((error.to_string(), 6));
            let b = Batcher::new(cfg(1000), storage.clone(), None);
            b.push(Table::Events, &lines(7), 7, None, None);
            b.seal(Table::Events);
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(
                b.stats.inserts_failing.load(Ordering::Relaxed),
                1,
                "{error}"
            );
            assert_eq!(
                b.stats.last_error.lock().unwrap().as_deref(),
                Some(
                    StorageError::from_exception(error.into())
                        .to_string()
                        .as_str()
                )
            );
            b.flush_all().await;
            assert_eq!(storage.tables(), vec![("events".to_string(), 7)], "{error}");
            assert_eq!(b.stats.rows_dead_lettered.load(Ordering::Relaxed), 0);
            assert_eq!(b.stats.insert_retries.load(Ordering::Relaxed), 6);
            assert_eq!(b.stats.inserts_failing.load(Ordering::Relaxed), 0);
        }
    }

    /// A dead letter that cannot be written holds the batch: it is not
    /// confirmed (its waiter does not hear) until the dead letter is stored.
    #[tokio::test(start_paused = true)]
    async fn a_batch_is_not_done_until_its_dead_letter_is_stored() {
        let storage = Arc::new(Recorder {
            dead_letter_fails: AtomicU64::new(5),
            ..Default::default()
        });
        let b = Batcher::new(cfg(1000), storage.clone(), None);
        let (tx, mut rx) = oneshot::channel();
        b.push(Table::Events, b"{\"bad\":1}\n", 1, None, Some(tx));
        b.seal(Table::Events);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            rx.try_recv().is_err(),
            "confirmed while its dead letter failed"
        );
        assert!(storage.tables().is_empty());
        rx.await.unwrap();
        assert_eq!(storage.tables(), vec![("dead_letter".to_string(), 1)]);
        assert_eq!(b.stats.rows_dead_lettered.load(Ordering::Relaxed), 1);
    }

    /// A hundred waiting requests make a few inserts, not a hundred.
    #[tokio::test(start_paused = true)]
    async fn waiting_requests_share_seals() {
        let storage = Arc::new(Recorder::default());
        let b = Batcher::new(cfg(100_000), storage.clone(), None);
        let mut waiters = Vec::new();
        for _ in 0..100 {
            let (tx, rx) = oneshot::channel();
            b.push(Table::Events, &lines(1), 1, None, Some(tx));
            b.seal_for_waiter(Table::Events);
            waiters.push(rx);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for rx in waiters {
            rx.await.unwrap();
        }
        let inserts = storage.tables();
        assert_eq!(inserts.iter().map(|(_, n)| n).sum::<usize>(), 100);
        // 500 ms of requests: a seal now and one per 250 ms after.
        assert!(inserts.len() <= 4, "{} inserts", inserts.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_hears_when_its_rows_are_stored() {
        let storage = Arc::new(Recorder::default());
        let b = Batcher::new(cfg(1000), storage.clone(), None);
        let (tx, rx) = oneshot::channel();
        b.push(Table::Events, &lines(2), 2, None, Some(tx));
        b.seal(Table::Events);
        rx.await.unwrap();
        assert_eq!(storage.tables(), vec![("events".to_string(), 2)]);
    }
}
