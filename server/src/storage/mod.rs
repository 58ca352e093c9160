//! Storage behind one small trait, with two backends that run the same `sql/`
//! migrations: the embedded engine (chDB, in-process) and a ClickHouse server
//! (the official `clickhouse` crate, over HTTP).

mod clickhouse;
mod embedded;
mod ffi;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use self::clickhouse::ClickHouseStorage;
pub use embedded::EmbeddedStorage;

use crate::DATABASE;
use crate::config::{Backend, StorageConfig};

/// What a storage call can fail with. The split decides what the batcher does:
/// transient errors are retried, data errors are not.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The engine or server could not be reached or is busy: retry later.
    #[error("storage unavailable: {0}")]
    Transient(String),
    /// The statement or its rows were refused as invalid: retrying won't help.
    #[error("{0}")]
    Rejected(String),
    /// `query_readonly` refused a statement that would change something.
    #[error("only read-only statements are allowed here: {0}")]
    NotReadOnly(String),
}

impl StorageError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Transient(_))
    }

    /// Classifies a ClickHouse exception text ("Code: 252. DB::Exception: …")
    /// by its code. Only codes that mean "try again later" are transient.
    pub fn from_exception(text: String) -> Self {
        match exception_code(&text) {
            Some(code) if TRANSIENT_CODES.contains(&code) => StorageError::Transient(text),
            _ => StorageError::Rejected(text),
        }
    }
}

/// The code of a ClickHouse exception text ("Code: 252. DB::Exception: …").
pub fn exception_code(text: &str) -> Option<u32> {
    text.split("Code: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
}

/// ClickHouse error codes worth retrying: timeouts, network, memory pressure,
/// too many parts, read-only replicas, shutting down, Keeper trouble.
const TRANSIENT_CODES: &[u32] = &[
    159, // TIMEOUT_EXCEEDED
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    241, // MEMORY_LIMIT_EXCEEDED
    242, // TABLE_IS_READ_ONLY
    252, // TOO_MANY_PARTS
    285, // TOO_FEW_LIVE_REPLICAS
    319, // UNKNOWN_STATUS_OF_INSERT
    394, // QUERY_WAS_CANCELLED
    425, // SYSTEM_ERROR
    999, // KEEPER_EXCEPTION
];

/// One insert: a table and its rows as JSONEachRow lines.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// "embedded" or "clickhouse", for logs and health.
    fn kind(&self) -> &'static str;
    /// Cheap reachability check.
    async fn ping(&self) -> Result<(), StorageError>;
    /// Runs a statement and discards its output (DDL, `INSERT … SELECT`).
    async fn execute(&self, sql: &str) -> Result<(), StorageError>;
    /// Runs a query and returns its output in the named ClickHouse format.
    async fn query(&self, sql: &str, format: &str) -> Result<Bytes, StorageError>;
    /// Like `query`, but refuses anything that would change data or schema.
    async fn query_readonly(&self, sql: &str, format: &str) -> Result<Bytes, StorageError>;
    /// Inserts JSONEachRow rows into `database.table` in one statement.
    /// `token` identifies the batch: the same token again is a retry, and
    /// storage keeps the rows (and what views derive from them) once.
    async fn insert(&self, table: &str, rows: Bytes, token: &str) -> Result<(), StorageError>;
    /// Releases the engine or connection pool. Called once on shutdown.
    async fn close(&self);
}

/// Opens the configured backend.
pub async fn open(cfg: &StorageConfig) -> anyhow::Result<Arc<dyn Storage>> {
    Ok(match cfg.backend {
        Backend::Embedded => Arc::new(EmbeddedStorage::open(cfg.embedded.clone()).await?),
        Backend::Clickhouse => Arc::new(ClickHouseStorage::new(&cfg.clickhouse)),
    })
}

/// A time as ClickHouse reads a `DateTime64(3)` in text formats (UTC).
pub fn datetime64_text(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// The `INSERT` statement both backends send, with the settings that make a
/// retried batch a no-op in the table and in every dependent view.
pub fn insert_statement(table: &str, token: &str) -> String {
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "deduplication tokens are generated, never user input: {token:?}"
    );
    format!(
        "INSERT INTO {DATABASE}.{table} SETTINGS insert_deduplication_token = '{token}', \
         deduplicate_blocks_in_dependent_materialized_views = 1 FORMAT JSONEachRow"
    )
}

/// Output of a query as text, for callers that parse TabSeparated results.
pub async fn query_text(storage: &dyn Storage, sql: &str) -> Result<String, StorageError> {
    let out = storage.query(sql, "TabSeparated").await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_exceptions_by_code() {
        let e = StorageError::from_exception(
            "Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)".into(),
        );
        assert!(e.is_transient());
        let e = StorageError::from_exception(
            "Code: 27. DB::Exception: Cannot parse input (CANNOT_PARSE_INPUT_ASSERTION_FAILED)"
                .into(),
        );
        assert!(!e.is_transient());
        let e = StorageError::from_exception("no code at all".into());
        assert!(matches!(e, StorageError::Rejected(_)));
    }
}
