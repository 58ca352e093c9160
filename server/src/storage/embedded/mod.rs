//! The embedded backend: the real ClickHouse engine in this process (chDB).
//!
//! Engine calls block, so every call runs on tokio's blocking pool, and a
//! semaphore bounds how many run at once. There is one engine per process.
//!
//! chDB does not create `system.query_log` (clickhouse-local never starts the
//! system log threads), yet operators read it for slow queries. So this
//! backend keeps a query log of its own: every statement it runs is timed by
//! the engine and recorded in `bilten_system.query_log`, with the server's
//! column names, and `system.query_log` is a view of it.
//!
//! Read-only SQL (`/admin/query`) runs on a second connection to the same
//! engine, opened with `readonly=1` and the query limits as its settings:
//! the engine itself refuses writes, DDL, settings changes, and the table
//! functions that reach files, the network or processes. Before that, the
//! engine's parser must find exactly one read statement, or nothing runs.
//!
//! A chDB connection runs one statement at a time (it holds a lock for the
//! whole call), and an insert stream occupies its connection. So inserts
//! have connections of their own, `INSERTERS` of them, and stream their rows
//! (`chdb_stream_insert_n`): measured on 100 000 `events` rows, that costs
//! 2.8 µs of CPU per row against 5.9 µs for the same rows inlined after the
//! statement, which the engine's query parser scans first.

mod interface;

use std::collections::HashSet;
use std::ffi::{CStr, CString, c_char};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::ffi::{self, Api, Connection, QUERY_CLASS_READ_ONLY, QueryAnalysis};
use super::startup;
use super::{Storage, StorageError};
use crate::clickhouse_http::session::{
    BACKUPS_DISK, SessionAnswer, SessionRequest, hidden_calls, reaches_host,
};
use crate::clickhouse_http::walls::{self, Walls};
use crate::config::{EmbeddedConfig, QueryLimits};
use crate::files::private_dir;
use crate::model::{DATABASE, SYSTEM_DATABASE};

/// How often buffered query-log entries are written, and the most we buffer.
const QUERY_LOG_FLUSH: Duration = Duration::from_secs(2);
const QUERY_LOG_CAP: usize = 10_000;
/// Query text longer than this is cut in the log.
const QUERY_LOG_TEXT: usize = 4096;
/// Inserts that run at once, each on its own connection: the batcher's
/// default flush workers.
const INSERTERS: usize = 2;
/// Rows reach an insert stream in pieces of this size: the engine copies
/// each piece into its queue, so a 64 MiB batch is never held twice.
const APPEND_CHUNK: usize = 1 << 20;

pub struct EmbeddedStorage {
    inner: Arc<Inner>,
    /// Bounds concurrent engine calls so a burst cannot take every blocking thread.
    permits: Arc<Semaphore>,
    /// Read-only queries' own bound, apart from `permits`: they cannot
    /// starve inserts.
    reader_permits: Arc<Semaphore>,
    reader_concurrency: u32,
    /// One per inserter connection.
    insert_permits: Arc<Semaphore>,
    flusher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Inner {
    api: &'static Api,
    /// `None` once closed. Queries hold the read lock, so closing waits for them.
    conn: RwLock<Option<ConnPtr>>,
    /// The `readonly=1` connection, with the query limits as its settings.
    reader: RwLock<Option<ConnPtr>>,
    /// Query parameters are the connection's while a call with them runs:
    /// one with parameters runs alone on the shared read-only connection
    /// (write), calls without them together (read). Seen: a dashboard
    /// query's `{from:Date}` unset by another call's parameters.
    reader_params: RwLock<()>,
    /// Connections for inserts; a caller holding an insert permit finds one free.
    inserters: Vec<Mutex<Option<ConnPtr>>>,
    log: Mutex<Vec<QueryLogEntry>>,
    /// How the writer and the read-only connection were opened: sessions
    /// (ClickHouse's HTTP interface) open theirs the same way.
    writer_args: Vec<String>,
    reader_args: Vec<String>,
    /// The query limits as connection arguments: every session runs under them.
    limit_args: Vec<String>,
    /// `max_result_bytes`, held against the answer itself too.
    max_answer: u64,
    /// Where `startup` records tables it set aside.
    data_dir: std::path::PathBuf,
    /// The engine's setting names: only these reach a session's arguments.
    settings: HashSet<String>,
    /// The engine's table functions (`system.table_functions`).
    table_functions: Vec<String>,
}

/// A turn on the read-only connection (`Inner::params_gate`), held while
/// a call runs.
enum ParamsGate<'a> {
    Alone {
        _turn: std::sync::RwLockWriteGuard<'a, ()>,
    },
    Together {
        _turn: std::sync::RwLockReadGuard<'a, ()>,
    },
}

/// Which connection a call runs on.
#[derive(Clone, Copy)]
enum On {
    Writer,
    Reader,
}

/// The engine's connection handle. chDB serves concurrent queries on one
/// connection (checked with four threads), so sharing it across threads is sound.
struct ConnPtr(*mut Connection);
unsafe impl Send for ConnPtr {}
unsafe impl Sync for ConnPtr {}

#[derive(Serialize)]
struct QueryLogEntry {
    #[serde(rename = "type")]
    kind: &'static str,
    event_date: String,
    event_time: String,
    event_time_microseconds: String,
    query_start_time: String,
    query_duration_ms: u64,
    read_rows: u64,
    read_bytes: u64,
    written_rows: u64,
    result_bytes: u64,
    query: String,
    query_kind: String,
    exception: String,
    exception_code: i32,
}

impl EmbeddedStorage {
    pub async fn open(
        cfg: EmbeddedConfig,
        limits: QueryLimits,
        walls: Walls,
    ) -> anyhow::Result<Self> {
        let reader_concurrency = limits.concurrency as u32;
        let inner =
            tokio::task::spawn_blocking(move || Inner::open(&cfg, &limits, &walls)).await??;
        let inner = Arc::new(inner);
        let storage = EmbeddedStorage {
            inner: inner.clone(),
            permits: Arc::new(Semaphore::new(4)),
            reader_permits: Arc::new(Semaphore::new(reader_concurrency as usize)),
            reader_concurrency,
            insert_permits: Arc::new(Semaphore::new(INSERTERS)),
            flusher: Mutex::new(None),
        };
        for sql in [
            &format!("CREATE DATABASE IF NOT EXISTS {SYSTEM_DATABASE}"),
            include_str!("query_log.sql"),
            // `system` is an in-memory database here: the view is made anew each start.
            "CREATE VIEW IF NOT EXISTS system.query_log AS SELECT * FROM bilten_system.query_log",
        ] {
            storage.execute(sql).await?;
        }
        let flusher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(QUERY_LOG_FLUSH);
            loop {
                tick.tick().await;
                let inner = inner.clone();
                let _ = tokio::task::spawn_blocking(move || inner.flush_query_log()).await;
            }
        });
        *storage.flusher.lock().unwrap() = Some(flusher);
        Ok(storage)
    }

    async fn run(
        &self,
        sql: Vec<u8>,
        format: &'static str,
        log_text: Option<String>,
    ) -> Result<Vec<u8>, StorageError> {
        self.call(&self.permits, move |inner| {
            inner.run(On::Writer, &sql, format, log_text)
        })
        .await
    }

    /// Runs on the read-only connection, under its own concurrency bound.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        self.call(&self.reader_permits, f).await
    }

    /// An engine call on tokio's blocking pool, holding one of `permits`.
    async fn call<T: Send + 'static>(
        &self,
        permits: &Semaphore,
        f: impl FnOnce(&Inner) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let _permit = permits
            .acquire()
            .await
            .map_err(|_| StorageError::transient("engine closed"))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StorageError::transient(format!("engine task failed: {e}")))?
    }
}

impl Inner {
    fn open(cfg: &EmbeddedConfig, limits: &QueryLimits, walls: &Walls) -> anyhow::Result<Inner> {
        let api = ffi::load(&cfg.library_path())?;
        let engine_dir = cfg.data_dir.join("engine");
        private_dir(&cfg.data_dir)?;
        private_dir(&engine_dir)?;
        // The roles and the writers' profile (`clickhouse_http::walls`).
        let users_file = cfg.data_dir.join("engine-users.xml");
        crate::files::write_private(&users_file, walls.users_xml().as_bytes())?;
        let config_file = cfg.data_dir.join("engine-config.xml");
        crate::files::write_private(&config_file, engine_config(cfg, &users_file).as_bytes())?;
        let args = [
            "clickhouse".to_string(),
            format!("--path={}", engine_dir.display()),
            format!("--config-file={}", config_file.display()),
            // We batch ourselves; the engine's own async-insert buffer (on by
            // default in chDB) would acknowledge rows before they are in parts.
            "--async_insert=0".to_string(),
            // An insert into `events` feeds five materialized views; writing
            // their parts in parallel cuts the insert's time by about a fifth.
            "--parallel_view_processing=1".to_string(),
        ];
        // The server handles SIGINT/SIGTERM itself (graceful drain); chDB's
        // handlers would otherwise take them.
        unsafe { (api.set_signal_handlers_enabled)(0) };
        let conn = start_engine(api, &args, &cfg.data_dir, &engine_dir)?;
        // Settings given when connecting hold for that connection only.
        let limit_args: Vec<String> = limits
            .settings()
            .iter()
            .map(|(name, value)| format!("--{name}={value}"))
            .collect();
        let mut reader_args = vec![
            "clickhouse".to_string(),
            format!("--path={}", engine_dir.display()),
            "--readonly=1".to_string(),
        ];
        reader_args.extend(limit_args.iter().cloned());
        let Some(reader) = connect(api, &reader_args) else {
            unsafe { (api.close_conn)(conn) };
            anyhow::bail!("the embedded engine refused its read-only connection");
        };
        let mut inserters = Vec::with_capacity(INSERTERS);
        for _ in 0..INSERTERS {
            let Some(c) = connect(api, &args) else {
                for c in inserters.into_iter().chain([reader, conn]) {
                    unsafe { (api.close_conn)(c) };
                }
                anyhow::bail!("the embedded engine refused an insert connection");
            };
            inserters.push(c);
        }
        let mut inner = Inner {
            api,
            conn: RwLock::new(Some(ConnPtr(conn))),
            reader: RwLock::new(Some(ConnPtr(reader))),
            reader_params: RwLock::new(()),
            inserters: inserters
                .into_iter()
                .map(|c| Mutex::new(Some(ConnPtr(c))))
                .collect(),
            log: Mutex::new(Vec::new()),
            writer_args: args.to_vec(),
            reader_args,
            limit_args,
            max_answer: limits.max_result_bytes,
            data_dir: cfg.data_dir.clone(),
            settings: HashSet::new(),
            table_functions: Vec::new(),
        };
        let names = |sql: &str| -> anyhow::Result<Vec<String>> {
            let out = inner.run(On::Writer, sql.as_bytes(), "TSVRaw", None)?;
            Ok(String::from_utf8_lossy(&out)
                .lines()
                .map(str::to_string)
                .collect())
        };
        let settings = names("SELECT name FROM system.settings")?;
        let table_functions = names("SELECT name FROM system.table_functions")?;
        inner.settings = settings.into_iter().collect();
        inner.table_functions = table_functions;
        // `/admin/query` reads with the readers' grants too: no file, URL
        // or remote source, whatever the parser let through.
        inner.run(
            On::Reader,
            format!("SET ROLE {}", walls::READER).as_bytes(),
            "TSV",
            None,
        )?;
        Ok(inner)
    }

    fn connection(&self, on: On) -> &RwLock<Option<ConnPtr>> {
        match on {
            On::Writer => &self.conn,
            On::Reader => &self.reader,
        }
    }

    fn run(
        &self,
        on: On,
        sql: &[u8],
        format: &str,
        log_text: Option<String>,
    ) -> Result<Vec<u8>, StorageError> {
        self.run_with(on, sql, format, &[], log_text)
    }

    /// `run`, binding `params` (names and escaped values).
    fn run_with(
        &self,
        on: On,
        sql: &[u8],
        format: &str,
        params: &[(String, String)],
        log_text: Option<String>,
    ) -> Result<Vec<u8>, StorageError> {
        let guard = self.connection(on).read().unwrap();
        let conn = guard
            .as_ref()
            .ok_or_else(|| StorageError::transient("the embedded engine is closed"))?;
        let _alone = match on {
            On::Reader => Some(self.params_gate(!params.is_empty())),
            On::Writer => None,
        };
        // SAFETY: the connection stays open while `guard` is held.
        self.query_on(unsafe { *conn.0 }, sql, format, params, log_text)
            .map(|o| o.data)
    }

    /// The read-only connection's turn for a call with parameters (alone)
    /// or without (with the others).
    fn params_gate(&self, with_params: bool) -> ParamsGate<'_> {
        match with_params {
            true => ParamsGate::Alone {
                _turn: self.reader_params.write().unwrap(),
            },
            false => ParamsGate::Together {
                _turn: self.reader_params.read().unwrap(),
            },
        }
    }

    /// Streams `rows` into `statement` on a free inserter connection; the
    /// caller holds an insert permit.
    fn insert(&self, statement: String, rows: &[u8]) -> Result<(), StorageError> {
        let guard = self
            .inserters
            .iter()
            .find_map(|c| c.try_lock().ok())
            .expect("an insert permit leaves an inserter free");
        let conn = guard
            .as_ref()
            .ok_or_else(|| StorageError::transient("the embedded engine is closed"))?;
        // SAFETY: the connection stays open while `guard` is held.
        let conn = unsafe { *conn.0 };
        self.stream(conn, statement, super::INSERT_FORMAT, rows)
            .map(|_| ())
    }

    /// Streams `rows` in `format` into `statement` (an INSERT without its
    /// FORMAT clause): the rows are never scanned by the query parser.
    fn stream(
        &self,
        conn: Connection,
        statement: String,
        format: &str,
        rows: &[u8],
    ) -> Result<Output, StorageError> {
        let api = self.api;
        let start = Utc::now();
        let stream = unsafe {
            (api.stream_insert_n)(
                conn,
                statement.as_ptr() as *const c_char,
                statement.len(),
                format.as_ptr() as *const c_char,
                format.len(),
            )
        };
        if stream.is_null() {
            return Err(StorageError::transient(
                "the embedded engine returned no insert stream",
            ));
        }
        let stream_error = || {
            let e = unsafe { (api.stream_insert_error)(stream) };
            (!e.is_null()).then(|| {
                unsafe { CStr::from_ptr(e) }
                    .to_string_lossy()
                    .trim()
                    .to_string()
            })
        };
        let outcome = if let Some(e) = stream_error() {
            // The statement itself failed (no such table, bad settings).
            self.record(log_entry_failed(start, statement, &e));
            Err(StorageError::from_exception(e))
        } else {
            let appended = rows.chunks(APPEND_CHUNK).all(|piece| {
                let rc = unsafe { (api.stream_append)(stream, piece.as_ptr().cast(), piece.len()) };
                rc == 0
            });
            let append_error = (!appended).then(stream_error);
            // `done` joins the engine's worker and carries its error, if any,
            // so a failed append is logged and classified from it too.
            let result = unsafe { (api.stream_done)(stream) };
            // Its elapsed time is not the insert's (it counts from before the
            // stream began), so the log times the insert by our own clock.
            match (
                self.finish(result, start, Some(statement), Clock::Ours),
                append_error,
            ) {
                (Err(e), _) => Err(e),
                (Ok(mut out), None) => {
                    out.elapsed = (Utc::now() - start).as_seconds_f64();
                    Ok(out)
                }
                (Ok(_), Some(e)) => {
                    Err(StorageError::from_exception(e.unwrap_or_else(|| {
                        "the engine took only part of the rows".into()
                    })))
                }
            }
        };
        unsafe { (api.destroy_insert_stream)(stream) };
        outcome
    }

    fn record(&self, entry: QueryLogEntry) {
        let mut log = self.log.lock().unwrap();
        if log.len() < QUERY_LOG_CAP {
            log.push(entry);
        }
    }

    /// Reads a result (or its error), logs the statement, frees the result.
    fn finish(
        &self,
        result: ffi::ResultPtr,
        start: DateTime<Utc>,
        log_text: Option<String>,
        clock: Clock,
    ) -> Result<Output, StorageError> {
        let api = self.api;
        if result.is_null() {
            return Err(StorageError::transient(
                "the embedded engine returned no result",
            ));
        }
        let err = unsafe { (api.result_error)(result) };
        let outcome = if err.is_null() {
            let len = unsafe { (api.result_length)(result) };
            let buf = unsafe { (api.result_buffer)(result) };
            let data = if len == 0 || buf.is_null() {
                Vec::new()
            } else {
                unsafe { std::slice::from_raw_parts(buf as *const u8, len) }.to_vec()
            };
            Ok(unsafe { Output::of(api, result, data) })
        } else {
            let text = unsafe { CStr::from_ptr(err) }
                .to_string_lossy()
                .trim()
                .to_string();
            Err(StorageError::from_exception(text))
        };
        if let Some(text) = log_text {
            let logged = outcome.as_ref().map(|o| o.data.len());
            self.record(unsafe { log_entry(Some((api, result)), clock, start, text, logged) });
        }
        unsafe { (api.destroy_result)(result) };
        outcome
    }

    fn classify(&self, sql: &str) -> Result<QueryAnalysis, StorageError> {
        let guard = self.reader.read().unwrap();
        let conn = guard
            .as_ref()
            .ok_or_else(|| StorageError::transient("the embedded engine is closed"))?;
        // SAFETY: the connection stays open while `guard` is held.
        self.classify_on(unsafe { *conn.0 }, sql.as_bytes(), DATABASE)
    }

    /// The engine parser's verdict on `sql`, judged against `db` (unqualified
    /// names resolve against the connection's own).
    fn classify_on(
        &self,
        conn: Connection,
        sql: &[u8],
        db: &str,
    ) -> Result<QueryAnalysis, StorageError> {
        let mut analysis = QueryAnalysis {
            struct_size: std::mem::size_of::<QueryAnalysis>() as u32,
            ..Default::default()
        };
        let rc = unsafe {
            (self.api.classify_query_n)(
                conn,
                sql.as_ptr() as *const c_char,
                sql.len(),
                db.as_ptr() as *const c_char,
                db.len(),
                &mut analysis,
            )
        };
        if rc != 0 {
            return Err(StorageError::transient(
                "the embedded engine could not classify the statement",
            ));
        }
        Ok(analysis)
    }

    /// Runs `sql` on `conn`, binding `params` when there are any.
    fn query_on(
        &self,
        conn: Connection,
        sql: &[u8],
        format: &str,
        params: &[(String, String)],
        log_text: Option<String>,
    ) -> Result<Output, StorageError> {
        let start = Utc::now();
        let result = if params.is_empty() {
            unsafe {
                (self.api.query_n)(
                    conn,
                    sql.as_ptr() as *const c_char,
                    sql.len(),
                    format.as_ptr() as *const c_char,
                    format.len(),
                )
            }
        } else {
            let names: Vec<*const c_char> = params
                .iter()
                .map(|(n, _)| n.as_ptr() as *const c_char)
                .collect();
            let name_lens: Vec<usize> = params.iter().map(|(n, _)| n.len()).collect();
            let values: Vec<*const c_char> = params
                .iter()
                .map(|(_, v)| v.as_ptr() as *const c_char)
                .collect();
            let value_lens: Vec<usize> = params.iter().map(|(_, v)| v.len()).collect();
            unsafe {
                (self.api.query_with_params_n)(
                    conn,
                    sql.as_ptr() as *const c_char,
                    sql.len(),
                    format.as_ptr() as *const c_char,
                    format.len(),
                    names.as_ptr(),
                    name_lens.as_ptr(),
                    values.as_ptr(),
                    value_lens.as_ptr(),
                    params.len(),
                )
            }
        };
        self.finish(result, start, log_text, Clock::Engine)
    }

    /// The statement as the engine's parser spells it (`formatQuery`, the
    /// text bound as a parameter, so nothing in it runs); with `log_text`,
    /// logged under it.
    fn format_query(
        &self,
        conn: Connection,
        sql: &[u8],
        log_text: Option<String>,
    ) -> Result<String, StorageError> {
        let value = tsv_escape(&String::from_utf8_lossy(sql));
        let out = self.query_on(
            conn,
            b"SELECT formatQuery({q:String})",
            "TSVRaw",
            &[("q".to_string(), value)],
            log_text,
        )?;
        Ok(String::from_utf8_lossy(&out.data).trim_end().to_string())
    }

    /// `format_query` on the read-only connection.
    fn format_query_on_reader(&self, sql: &str) -> Result<String, StorageError> {
        let guard = self.reader.read().unwrap();
        let conn = guard
            .as_ref()
            .ok_or_else(|| StorageError::transient("the embedded engine is closed"))?;
        let _alone = self.params_gate(true);
        // SAFETY: the connection stays open while `guard` is held.
        self.format_query(unsafe { *conn.0 }, sql.as_bytes(), None)
    }

    /// The parser's message for text that did not parse, with positions in
    /// the caller's own text (`format_query`, so nothing in it can run).
    fn syntax_error(&self, sql: &str) -> StorageError {
        let guard = self.reader.read().unwrap();
        let Some(conn) = guard.as_ref() else {
            return StorageError::transient("the embedded engine is closed");
        };
        // Logged under the caller's text, so the query log counts the error.
        let alone = self.params_gate(true);
        // SAFETY: the connection stays open while `guard` is held.
        let outcome = self.format_query(unsafe { *conn.0 }, sql.as_bytes(), Some(sql.to_string()));
        drop(alone);
        drop(guard);
        match outcome {
            Err(StorageError::Rejected(e)) | Err(StorageError::Transient(e)) => {
                // "…: In scope SELECT formatQuery('…')" repeats the text.
                let m = e
                    .message
                    .split(": In scope SELECT formatQuery(")
                    .next()
                    .unwrap_or(&e.message);
                StorageError::rejected(m.trim_end())
            }
            Err(e) => e,
            Ok(_) => StorageError::NotReadOnly("the statement could not be classified".into()),
        }
    }

    fn flush_query_log(&self) {
        let entries = std::mem::take(&mut *self.log.lock().unwrap());
        if entries.is_empty() {
            return;
        }
        let mut sql = b"INSERT INTO bilten_system.query_log FORMAT JSONEachRow\n".to_vec();
        for e in &entries {
            serde_json::to_writer(&mut sql, e).expect("log entry serializes");
            sql.push(b'\n');
        }
        if let Err(e) = self.run(On::Writer, &sql, "TabSeparated", None) {
            tracing::warn!(error = %e, entries = entries.len(), "could not write the query log");
        }
    }

    fn close(&self) {
        self.flush_query_log();
        // The writer last: closing the last connection stops the engine.
        for inserter in &self.inserters {
            if let Some(c) = inserter.lock().unwrap().take() {
                unsafe { (self.api.close_conn)(c.0) };
            }
        }
        if let Some(reader) = self.reader.write().unwrap().take() {
            unsafe { (self.api.close_conn)(reader.0) };
        }
        if let Some(conn) = self.conn.write().unwrap().take() {
            // Only the connection is closed, not the engine (`chdb_shutdown`
            // would refuse every later connect in this process, and a test
            // that restarts the server in-process needs one).
            unsafe { (self.api.close_conn)(conn.0) };
        }
    }
}

/// A connection of one session's own, closed when dropped.
struct SessionConn<'a> {
    api: &'static Api,
    conn: *mut Connection,
    /// Holds off `close` (which takes the write lock) while the session runs.
    _open: std::sync::RwLockReadGuard<'a, Option<ConnPtr>>,
}

impl SessionConn<'_> {
    fn raw(&self) -> Connection {
        // SAFETY: `conn` came from `chdb_connect` and is closed only on drop.
        unsafe { *self.conn }
    }
}

impl Drop for SessionConn<'_> {
    fn drop(&mut self) {
        unsafe { (self.api.close_conn)(self.conn) };
    }
}

/// The engine's first connection. A table that cannot load stops the
/// engine from starting; such a table is set aside (`storage::startup`) and
/// the start tried again, unless it is one of this server's own.
fn start_engine(
    api: &Api,
    args: &[String],
    data_dir: &std::path::Path,
    engine_dir: &std::path::Path,
) -> anyhow::Result<*mut Connection> {
    const MOST_SET_ASIDE: usize = 16;
    let mut set_aside = 0;
    loop {
        let (conn, stderr) =
            startup::capturing_stderr(&data_dir.join("engine-start.stderr"), || connect(api, args));
        if let Some(conn) = conn {
            return Ok(conn);
        }
        let failed = startup::failed_tables(&stderr);
        if failed.is_empty() || set_aside >= MOST_SET_ASIDE {
            anyhow::bail!(
                "the embedded ClickHouse engine did not start at {} (is another engine open in \
                 this process, or another process using that directory?){}",
                engine_dir.display(),
                match stderr.trim() {
                    "" => String::new(),
                    e => format!(": {e}"),
                }
            );
        }
        for (table, error) in failed {
            if ours(&table) {
                anyhow::bail!(
                    "the engine cannot load {table}, one of this server's own tables: {error}"
                );
            }
            let entry = startup::set_aside(engine_dir, &table, &error)
                .map_err(|e| anyhow::anyhow!("the engine cannot load {table} ({error}): {e}"))?;
            tracing::error!(
                table,
                error,
                how_to_drop = entry.how_to_drop,
                "a table that cannot load was set aside"
            );
            startup::record(data_dir, entry);
            set_aside += 1;
        }
    }
}

/// Whether `database.table` is one of this server's own, never set aside.
fn ours(table: &str) -> bool {
    let (db, name) = table.split_once('.').unwrap_or(("", table));
    db == SYSTEM_DATABASE
        || (db == DATABASE
            && (crate::model::Table::ALL.iter().any(|t| t.name() == name)
                || crate::model::AGED_TABLES.iter().any(|(t, _)| *t == name)))
}

/// `chdb_connect` with these arguments; `None` when the engine refuses.
fn connect(api: &Api, args: &[String]) -> Option<*mut Connection> {
    let cargs: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_str()).expect("arguments have no NUL"))
        .collect();
    let mut argv: Vec<*mut c_char> = cargs.iter().map(|a| a.as_ptr() as *mut c_char).collect();
    let conn = unsafe { (api.connect)(argv.len() as i32, argv.as_mut_ptr()) };
    (!conn.is_null()).then_some(conn)
}

/// Whose clock a logged statement's duration comes from.
#[derive(Clone, Copy)]
enum Clock {
    Engine,
    Ours,
}

/// A statement's output with the engine's counts.
struct Output {
    data: Vec<u8>,
    read_rows: u64,
    read_bytes: u64,
    written_rows: u64,
    elapsed: f64,
}

impl Output {
    /// # Safety
    /// `result` is a live result of `api`.
    unsafe fn of(api: &Api, result: ffi::ResultPtr, data: Vec<u8>) -> Output {
        unsafe {
            Output {
                data,
                read_rows: (api.result_rows_read)(result),
                read_bytes: (api.result_bytes_read)(result),
                written_rows: (api.result_rows_written)(result),
                elapsed: (api.result_elapsed)(result),
            }
        }
    }
}

/// The log entry of a statement that failed before the engine gave a result.
fn log_entry_failed(start: DateTime<Utc>, query: String, error: &str) -> QueryLogEntry {
    let error = StorageError::from_exception(error.to_string());
    unsafe { log_entry(None, Clock::Ours, start, query, Err(&error)) }
}

/// `result`: the engine's result with its timings and counts, when there is one.
unsafe fn log_entry(
    result: Option<(&Api, ffi::ResultPtr)>,
    clock: Clock,
    start: DateTime<Utc>,
    mut query: String,
    outcome: Result<usize, &StorageError>,
) -> QueryLogEntry {
    let end = Utc::now();
    let (elapsed, read_rows, read_bytes, written_rows) = match result {
        Some((api, r)) => unsafe {
            (
                (api.result_elapsed)(r),
                (api.result_rows_read)(r),
                (api.result_bytes_read)(r),
                (api.result_rows_written)(r),
            )
        },
        None => (0.0, 0, 0, 0),
    };
    let elapsed = match clock {
        Clock::Engine => elapsed,
        Clock::Ours => (end - start).as_seconds_f64(),
    };
    if query.len() > QUERY_LOG_TEXT {
        let mut cut = QUERY_LOG_TEXT;
        while !query.is_char_boundary(cut) {
            cut -= 1;
        }
        query.truncate(cut);
    }
    let (kind, exception, code) = match outcome {
        Ok(_) => ("QueryFinish", String::new(), 0),
        Err(e) => {
            let code = e.code().map_or(0, |c| c as i32);
            ("ExceptionWhileProcessing", e.to_string(), code)
        }
    };
    QueryLogEntry {
        kind,
        event_date: end.format("%Y-%m-%d").to_string(),
        event_time: end.format("%Y-%m-%d %H:%M:%S").to_string(),
        event_time_microseconds: end.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        query_start_time: start.format("%Y-%m-%d %H:%M:%S").to_string(),
        query_duration_ms: (elapsed * 1000.0).round().max(0.0) as u64,
        read_rows,
        read_bytes,
        written_rows,
        result_bytes: outcome.map(|len| len as u64).unwrap_or(0),
        query_kind: query
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase(),
        query,
        exception,
        exception_code: code,
    }
}

/// A query parameter's value: parameters are read as escaped text (TSV
/// field syntax).
fn tsv_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// The engine's configuration: quiet logs, the `tiered` storage policy
/// (hot = the default volume and disk, then cold and archive directories;
/// the first volume must keep the name `default` so existing tables can
/// switch to it), and where backups may be written: the backups directory,
/// by path for our own `BACKUP … TO File(…)` and as the disk `backups`
/// for the interface's backup users (as `deploy/clickhouse/storage.xml`
/// on a server).
///
/// ClickHouse also moves parts to the next volume when a volume's disk is
/// under `move_factor` (10 %) free. When the volumes are directories of one
/// filesystem that frees nothing and only scatters fresh rows into the cold
/// tier, so then the policy moves by TTL alone.
fn engine_config(cfg: &EmbeddedConfig, users: &std::path::Path) -> String {
    let users = std::path::absolute(users).unwrap_or_else(|_| users.to_path_buf());
    let users = users.display();
    let dir = |p: std::path::PathBuf| {
        let p = std::path::absolute(&p).unwrap_or(p);
        let _ = private_dir(&p);
        format!("{}/", p.display().to_string().trim_end_matches('/'))
    };
    let (cold, archive, backups) = (
        dir(cfg.cold_dir()),
        dir(cfg.archive_dir()),
        dir(cfg.backups_dir()),
    );
    let device = |p: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).map(|m| m.dev()).ok()
    };
    let hot = device(&dir(cfg.data_dir.clone()));
    let one_filesystem = hot.is_some() && device(&cold) == hot && device(&archive) == hot;
    let move_factor = if one_filesystem {
        "\n        <move_factor>0</move_factor>"
    } else {
        ""
    };
    format!(
        r#"<clickhouse>
  <logger><level>warning</level><console>0</console></logger>
  <user_directories><users_xml><path>{users}</path></users_xml></user_directories>
  <storage_configuration>
    <disks>
      <cold><path>{cold}</path></cold>
      <archive><path>{archive}</path></archive>
      <{BACKUPS_DISK}><path>{backups}</path></{BACKUPS_DISK}>
    </disks>
    <policies>
      <tiered>
        <volumes>
          <default><disk>default</disk></default>
          <cold><disk>cold</disk></cold>
          <archive><disk>archive</disk></archive>
        </volumes>{move_factor}
      </tiered>
    </policies>
  </storage_configuration>
  <backups>
    <allowed_path>{backups}</allowed_path>
    <allowed_disk>{BACKUPS_DISK}</allowed_disk>
  </backups>
</clickhouse>
"#
    )
}

#[async_trait]
impl Storage for EmbeddedStorage {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.run(b"SELECT 1".to_vec(), "TabSeparated", None)
            .await
            .map(|_| ())
    }

    async fn execute(&self, sql: &str) -> Result<(), StorageError> {
        self.run(
            sql.as_bytes().to_vec(),
            "TabSeparated",
            Some(sql.to_string()),
        )
        .await
        .map(|_| ())
    }

    async fn query(&self, sql: &str, format: &str) -> Result<Bytes, StorageError> {
        let format = static_format(format)?;
        self.run(sql.as_bytes().to_vec(), format, Some(sql.to_string()))
            .await
            .map(Bytes::from)
    }

    async fn query_readonly_with(
        &self,
        sql: &str,
        params: &[(String, String)],
        format: &str,
    ) -> Result<Bytes, StorageError> {
        let format = static_format(format)?;
        let text = sql.to_string();
        // The engine reads a parameter's value in its escaped text form.
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(name, value)| (name.clone(), tsv_escape(value)))
            .collect();
        self.read(move |inner| {
            // Nothing runs unless the engine's parser finds exactly one
            // statement, and a read one.
            let analysis = inner.classify(&text)?;
            match (analysis.statement_count, analysis.query_class) {
                (0, _) => return Err(inner.syntax_error(&text)),
                (1, QUERY_CLASS_READ_ONLY) => {}
                (1, _) => {
                    return Err(StorageError::NotReadOnly(
                        "the statement would change data, schema or settings, or write outside \
                         the database"
                            .into(),
                    ));
                }
                _ => {
                    return Err(StorageError::NotReadOnly(
                        "send one statement at a time".into(),
                    ));
                }
            }
            // Read-only mode stops table functions, not the `file` function.
            let ast = inner.run_with(
                On::Reader,
                format!("EXPLAIN AST {text}").as_bytes(),
                "TSVRaw",
                &params,
                None,
            )?;
            let ast = String::from_utf8_lossy(&ast);
            let spelled = match ast.starts_with("SelectWithUnionQuery") {
                true => None,
                false => Some(inner.format_query_on_reader(&text)?),
            };
            if let Some(why) = reaches_host(&ast, &inner.table_functions)
                .or_else(|| spelled.as_deref().and_then(hidden_calls))
            {
                return Err(StorageError::NotReadOnly(why));
            }
            // The engine enforces readonly and the limits on this connection;
            // the answer is held to the result limit too.
            let out = inner
                .run_with(
                    On::Reader,
                    text.as_bytes(),
                    format,
                    &params,
                    Some(text.clone()),
                )
                .map_err(StorageError::for_readonly_query)?;
            let mut out = Output {
                data: out,
                read_rows: 0,
                read_bytes: 0,
                written_rows: 0,
                elapsed: 0.0,
            };
            inner
                .bounded(&mut out)
                .map_err(StorageError::for_readonly_query)?;
            Ok(out.data)
        })
        .await
        .map(Bytes::from)
    }

    async fn insert(&self, table: &str, rows: Bytes, token: &str) -> Result<(), StorageError> {
        let statement = super::insert_statement(table, token);
        let _inserter = self
            .insert_permits
            .acquire()
            .await
            .map_err(|_| StorageError::transient("engine closed"))?;
        self.call(&self.permits, move |inner| inner.insert(statement, &rows))
            .await
    }

    fn set_aside_tables(&self) -> Vec<startup::SetAside> {
        startup::report(&self.inner.data_dir)
    }

    async fn session(&self, req: SessionRequest) -> Result<SessionAnswer, StorageError> {
        // Bounded by the interface's own concurrency, not by `permits`:
        // sessions have connections of their own and cannot take the
        // inserters' turns.
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.session(req))
            .await
            .map_err(|e| StorageError::transient(format!("engine task failed: {e}")))?
    }

    async fn cancel_running(&self) {
        // On a connection of its own: every other one may be busy. KILL
        // with ASYNC: it marks the statements cancelled and returns.
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let open = inner.conn.read().unwrap();
            if open.is_none() {
                return;
            }
            let Some(conn) = connect(inner.api, &inner.writer_args) else {
                return;
            };
            let session = SessionConn {
                api: inner.api,
                conn,
                _open: open,
            };
            match inner.query_on(
                session.raw(),
                b"KILL QUERY WHERE query_id != queryID() ASYNC",
                "TSV",
                &[],
                None,
            ) {
                Ok(out) => tracing::warn!(
                    statements = String::from_utf8_lossy(&out.data).lines().count(),
                    "running statements cancelled"
                ),
                Err(e) => tracing::error!(error = %e, "could not cancel running statements"),
            }
        })
        .await;
    }

    async fn close(&self) {
        if let Some(flusher) = self.flusher.lock().unwrap().take() {
            flusher.abort();
        }
        // Wait for in-flight calls: closing takes every permit.
        let _all = self.permits.acquire_many(4).await;
        let _readers = self
            .reader_permits
            .acquire_many(self.reader_concurrency)
            .await;
        let _inserters = self.insert_permits.acquire_many(INSERTERS as u32).await;
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || inner.close()).await;
        self.permits.close();
        self.reader_permits.close();
        self.insert_permits.close();
    }
}

/// The formats callers may ask for; the engine wants a pointer that lives for
/// the call, and a static string needs no allocation.
fn static_format(format: &str) -> Result<&'static str, StorageError> {
    const FORMATS: &[&str] = &[
        "JSON",
        "JSONEachRow",
        "JSONCompact",
        "TabSeparated",
        "TabSeparatedWithNames",
        "CSV",
        "CSVWithNames",
        "Pretty",
    ];
    FORMATS
        .iter()
        .find(|f| f.eq_ignore_ascii_case(format))
        .copied()
        .ok_or_else(|| StorageError::rejected(format!("unsupported output format {format}")))
}

impl Drop for EmbeddedStorage {
    fn drop(&mut self) {
        // A process that exits with the connection open crashes in chDB's
        // teardown; close here if `close` was never awaited.
        if Arc::strong_count(&self.inner) == 1 {
            self.inner.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_on_one_filesystem_move_by_ttl_alone() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = EmbeddedConfig {
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        let xml = engine_config(&cfg, &dir.path().join("users.xml"));
        assert!(xml.contains("<move_factor>0</move_factor>"), "{xml}");
        assert!(
            xml.contains(&format!("<path>{}/</path>", cfg.cold_dir().display())),
            "{xml}"
        );
    }

    #[test]
    fn a_cold_volume_on_another_filesystem_keeps_moving_when_space_runs_low() {
        // /dev/shm is a tmpfs on Linux: another filesystem than the temp dir's.
        let (Ok(shm), Ok(dir)) = (tempfile::tempdir_in("/dev/shm"), tempfile::tempdir()) else {
            panic!("this test needs /dev/shm");
        };
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &std::path::Path| std::fs::metadata(p).unwrap().dev();
        assert_ne!(
            dev(shm.path()),
            dev(dir.path()),
            "/dev/shm is not a separate filesystem here"
        );
        let cfg = EmbeddedConfig {
            data_dir: dir.path().join("data"),
            cold_dir: Some(shm.path().join("cold")),
            ..Default::default()
        };
        let xml = engine_config(&cfg, &dir.path().join("users.xml"));
        assert!(!xml.contains("move_factor"), "{xml}");
        assert!(
            xml.contains(&format!("<path>{}/cold/</path>", shm.path().display())),
            "{xml}"
        );
    }
}
