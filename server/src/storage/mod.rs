//! Storage behind one small trait, with two backends that run the same `sql/`
//! migrations: the embedded engine (chDB, in-process) and a ClickHouse server
//! (the official `clickhouse` crate, over HTTP).

mod clickhouse;
pub mod cluster;
mod embedded;
mod ffi;
pub mod startup;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use self::clickhouse::ClickHouseStorage;
pub use embedded::EmbeddedStorage;

use crate::config::{Backend, StorageConfig};
use crate::model::DATABASE;

/// What a storage call can fail with.
///
/// Two questions are asked of it, by different callers:
/// - the batcher asks [`StorageError::is_data_error`]: only rows the engine
///   could not parse or convert may go to `dead_letter`; anything else (disk
///   full, access denied, an unknown table, a timeout, a lost connection, an
///   error we have never seen) is the environment's fault and is retried;
/// - the API asks [`StorageError::is_transient`]: 503 and "retry later", or
///   a 4xx with the engine's message.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The engine or server could not be reached or is busy: retry later.
    #[error("storage unavailable: {0}")]
    Transient(EngineError),
    /// The engine answered with an error (its text, with its code).
    #[error("{0}")]
    Rejected(EngineError),
    /// `query_readonly` refused a statement that would change something.
    #[error("only read-only statements are allowed here: {0}")]
    NotReadOnly(String),
    /// A read-only query went past one of `storage.query_limits`.
    #[error("the query exceeded a limit: {0}")]
    LimitExceeded(String),
}

/// An error's text and, when the engine gave one, its code as a number:
/// read once, where the text arrives (`Code: 252. DB::Exception: …`), and
/// asked by number after that. Our own errors have none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineError {
    pub code: Option<u32>,
    pub message: String,
}

impl From<String> for EngineError {
    fn from(message: String) -> Self {
        EngineError {
            code: exception_code(&message),
            message,
        }
    }
}

impl From<&str> for EngineError {
    fn from(message: &str) -> Self {
        EngineError::from(message.to_string())
    }
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl StorageError {
    /// An error of ours (the engine closed, a task failed): retry later.
    pub fn transient(message: impl Into<String>) -> Self {
        StorageError::Transient(EngineError::from(message.into()))
    }

    /// A refusal, in the engine's words or ours.
    pub fn rejected(message: impl Into<String>) -> Self {
        StorageError::Rejected(EngineError::from(message.into()))
    }

    /// The engine's code, when it gave one.
    pub fn code(&self) -> Option<u32> {
        match self {
            StorageError::Transient(e) | StorageError::Rejected(e) => e.code,
            StorageError::NotReadOnly(text) | StorageError::LimitExceeded(text) => {
                exception_code(text)
            }
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Transient(_))
    }

    /// Whether the rows themselves are at fault, by an allow-list of the
    /// engine's parse and conversion errors. Only then is retrying useless.
    pub fn is_data_error(&self) -> bool {
        match self {
            StorageError::Rejected(e) => e.code.is_some_and(|c| listed(DATA_CODES, c)),
            _ => false,
        }
    }

    /// Classifies a ClickHouse exception text ("Code: 252. DB::Exception: …")
    /// by its code. Only codes that mean "try again later" are transient.
    pub fn from_exception(text: String) -> Self {
        let e = EngineError::from(text);
        match e.code {
            Some(code) if listed(TRANSIENT_CODES, code) => StorageError::Transient(e),
            _ => StorageError::Rejected(e),
        }
    }

    /// For a read-only query: a limit it ran into, or a refusal, is the
    /// caller's to fix, not an outage.
    pub fn for_readonly_query(self) -> Self {
        let e = match &self {
            StorageError::Transient(e) | StorageError::Rejected(e) => e,
            _ => return self,
        };
        match e.code {
            Some(c) if listed(LIMIT_CODES, c) => StorageError::LimitExceeded(e.message.clone()),
            Some(READONLY) => StorageError::NotReadOnly(e.message.clone()),
            _ => self,
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

fn listed(codes: &[(u32, &str)], code: u32) -> bool {
    codes.iter().any(|(c, _)| *c == code)
}

/// ClickHouse error codes worth retrying: timeouts, network, memory pressure,
/// too many parts, read-only replicas, shutting down, Keeper trouble. With
/// their names, which a test checks against the engine's own.
pub const TRANSIENT_CODES: &[(u32, &str)] = &[
    (159, "TIMEOUT_EXCEEDED"),
    (202, "TOO_MANY_SIMULTANEOUS_QUERIES"),
    (209, "SOCKET_TIMEOUT"),
    (210, "NETWORK_ERROR"),
    (241, "MEMORY_LIMIT_EXCEEDED"),
    (242, "TABLE_IS_READ_ONLY"),
    (243, "NOT_ENOUGH_SPACE"),
    (252, "TOO_MANY_PARTS"),
    (285, "TOO_FEW_LIVE_REPLICAS"),
    (319, "UNKNOWN_STATUS_OF_INSERT"),
    (394, "QUERY_WAS_CANCELLED"),
    (425, "SYSTEM_ERROR"),
    (999, "KEEPER_EXCEPTION"),
];

/// The codes by which the engine says "these rows are wrong": a value that
/// does not parse or does not fit its column. Nothing else is a data error.
pub const DATA_CODES: &[(u32, &str)] = &[
    (6, "CANNOT_PARSE_TEXT"),
    (25, "CANNOT_PARSE_ESCAPE_SEQUENCE"),
    (26, "CANNOT_PARSE_QUOTED_STRING"),
    (27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED"),
    (32, "ATTEMPT_TO_READ_AFTER_EOF"),
    (33, "CANNOT_READ_ALL_DATA"),
    (38, "CANNOT_PARSE_DATE"),
    (41, "CANNOT_PARSE_DATETIME"),
    (53, "TYPE_MISMATCH"),
    (69, "ARGUMENT_OUT_OF_BOUND"),
    (70, "CANNOT_CONVERT_TYPE"),
    (72, "CANNOT_PARSE_NUMBER"),
    (117, "INCORRECT_DATA"),
    (131, "TOO_LARGE_STRING_SIZE"),
    (321, "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"),
    (349, "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN"),
    (376, "CANNOT_PARSE_UUID"),
    (407, "DECIMAL_OVERFLOW"),
    (441, "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING"),
    (467, "CANNOT_PARSE_BOOL"),
    (632, "UNEXPECTED_DATA_AFTER_PARSED_VALUE"),
    (675, "CANNOT_PARSE_IPV4"),
    (676, "CANNOT_PARSE_IPV6"),
    (691, "UNKNOWN_ELEMENT_OF_ENUM"),
];

/// A read-only query ran into a bound: time, memory, result size.
pub const LIMIT_CODES: &[(u32, &str)] = &[
    (159, "TIMEOUT_EXCEEDED"),
    (158, "TOO_MANY_ROWS"),
    (241, "MEMORY_LIMIT_EXCEEDED"),
    (307, "TOO_MANY_BYTES"),
    (396, "TOO_MANY_ROWS_OR_BYTES"),
];
/// READONLY: the engine refused a write, a setting or a table function.
const READONLY: u32 = 164;

/// One insert: a table and its rows as JSONEachRow lines.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// "embedded" or "clickhouse", for logs and health.
    fn kind(&self) -> &'static str;
    /// Where this server keeps its records (audit log, backup catalog,
    /// migration records): apart from the data.
    fn system_database(&self) -> &str {
        crate::model::SYSTEM_DATABASE
    }
    /// Cheap reachability check.
    async fn ping(&self) -> Result<(), StorageError>;
    /// Runs a statement and discards its output (DDL, `INSERT … SELECT`).
    async fn execute(&self, sql: &str) -> Result<(), StorageError>;
    /// What `execute` sends for `sql`: itself, or its cluster rendering.
    fn render(&self, sql: &str) -> Result<Vec<String>, StorageError> {
        Ok(vec![sql.to_string()])
    }
    /// Runs a query and returns its output in the named ClickHouse format.
    async fn query(&self, sql: &str, format: &str) -> Result<Bytes, StorageError>;
    /// Like `query`, but refuses anything that would change data or schema.
    async fn query_readonly(&self, sql: &str, format: &str) -> Result<Bytes, StorageError> {
        self.query_readonly_with(sql, &[], format).await
    }
    /// `query_readonly` with values bound to the statement's parameters
    /// (`{name:Type}`), never spliced into its text: `(name, value)`, the
    /// value as text (`2026-12-01` for a Date).
    async fn query_readonly_with(
        &self,
        sql: &str,
        params: &[(String, String)],
        format: &str,
    ) -> Result<Bytes, StorageError>;
    /// Inserts JSONEachRow rows into `database.table` in one statement.
    /// `token` identifies the batch: the same token again is a retry, and
    /// storage keeps the rows (and what views derive from them) once.
    async fn insert(&self, table: &str, rows: Bytes, token: &str) -> Result<(), StorageError>;
    /// One statement of ClickHouse's HTTP interface (`clickhouse_http::session`):
    /// only the embedded engine serves one; a server has its own.
    async fn session(
        &self,
        req: crate::clickhouse_http::session::SessionRequest,
    ) -> Result<crate::clickhouse_http::session::SessionAnswer, StorageError> {
        let _ = req;
        Err(StorageError::rejected(
            "only the embedded engine serves ClickHouse's HTTP interface",
        ))
    }
    /// Tables the engine could not load and set aside to start
    /// (`storage::startup`), for `/admin/health`.
    fn set_aside_tables(&self) -> Vec<startup::SetAside> {
        Vec::new()
    }
    /// Cancels every statement the engine is running (the shutdown
    /// deadline): each fails as cancelled, and its caller stops waiting.
    async fn cancel_running(&self) {}
    /// Releases the engine or connection pool. Called once on shutdown.
    async fn close(&self);
}

/// Opens the configured backend, with the interface's walls drawn around
/// this project's database.
pub async fn open(cfg: &StorageConfig) -> anyhow::Result<Arc<dyn Storage>> {
    let walls = crate::clickhouse_http::walls::Walls {
        home: DATABASE.into(),
        guest: crate::model::GUEST_SYSTEM_DATABASE.into(),
        system: crate::model::SYSTEM_DATABASE.into(),
        limits: limit_settings(&cfg.query_limits),
    };
    open_with(cfg, walls).await
}

/// The query limits as `(setting, value)` pairs.
pub fn limit_settings(limits: &crate::config::QueryLimits) -> Vec<(String, String)> {
    limits
        .settings()
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect()
}

/// Opens the configured backend; the embedded engine with these walls
/// around its HTTP interface (`walls`).
pub async fn open_with(
    cfg: &StorageConfig,
    walls: crate::clickhouse_http::walls::Walls,
) -> anyhow::Result<Arc<dyn Storage>> {
    Ok(match cfg.backend {
        Backend::Embedded => Arc::new(
            EmbeddedStorage::open(cfg.embedded.clone(), cfg.query_limits.clone(), walls).await?,
        ),
        Backend::Clickhouse => Arc::new(ClickHouseStorage::new(
            &cfg.clickhouse,
            cfg.query_limits.clone(),
        )),
    })
}

/// A time as ClickHouse reads a `DateTime64(3)` in text formats (UTC).
pub fn datetime64_text(t: &chrono::DateTime<chrono::Utc>) -> String {
    use chrono::{Datelike, Timelike};
    // Written field by field: a strftime pattern is parsed on every call,
    // and this runs for every event.
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_millis().min(999)
    )
}

/// The format rows reach both backends in: what the log stores and replays.
pub const INSERT_FORMAT: &str = "JSONEachRow";

/// The `INSERT` statement both backends send, with the settings that make a
/// retried batch a no-op in the table and in every dependent view; without
/// its `FORMAT` clause, which the embedded engine's streaming insert takes
/// apart from the statement.
pub fn insert_statement(table: &str, token: &str) -> String {
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "deduplication tokens are generated, never user input: {token:?}"
    );
    format!(
        "INSERT INTO {DATABASE}.{table} SETTINGS insert_deduplication_token = '{token}', \
         deduplicate_blocks_in_dependent_materialized_views = 1"
    )
}

/// `sql` with the project's database name (`sql/` and the server say
/// `bilten_analytics`) as `db`, as a whole word, in quotes too (`WHERE
/// database = 'bilten_analytics'`): how a `clickhouse` backend configured
/// with another database sends every statement.
pub fn in_database(sql: &str, db: &str) -> String {
    if db == DATABASE {
        return sql.to_string();
    }
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find(DATABASE) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + DATABASE.len()..].chars().next();
        out.push_str(&rest[..at]);
        if before.is_some_and(is_word) || after.is_some_and(is_word) {
            out.push_str(DATABASE);
        } else {
            out.push_str(db);
        }
        rest = &rest[at + DATABASE.len()..];
    }
    out.push_str(rest);
    out
}

/// Output of a query as text, for callers that parse TabSeparated results.
pub async fn query_text(storage: &dyn Storage, sql: &str) -> Result<String, StorageError> {
    let out = storage.query(sql, "TabSeparated").await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A read-only query's TabSeparated output as text, its parameters bound
/// (`{name:Type}` in `sql`): how a value from outside (a name from a
/// request, the config or the engine itself) reaches a statement.
pub async fn query_text_with(
    storage: &dyn Storage,
    sql: &str,
    params: &[(&str, &str)],
) -> Result<String, StorageError> {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let out = storage
        .query_readonly_with(sql, &params, "TabSeparated")
        .await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A read-only query's rows as JSON objects, its parameters bound.
pub async fn json_rows_with(
    storage: &dyn Storage,
    sql: &str,
    params: &[(String, String)],
) -> Result<Vec<serde_json::Value>, StorageError> {
    let out = storage
        .query_readonly_with(sql, params, "JSONEachRow")
        .await?;
    each_row(&out)
}

/// A query's rows as JSON objects (JSONEachRow), read-only or not.
pub async fn json_rows(
    storage: &dyn Storage,
    sql: &str,
    readonly: bool,
) -> Result<Vec<serde_json::Value>, StorageError> {
    let out = match readonly {
        true => storage.query_readonly(sql, "JSONEachRow").await?,
        false => storage.query(sql, "JSONEachRow").await?,
    };
    each_row(&out)
}

/// JSONEachRow output, one object per line.
fn each_row(out: &[u8]) -> Result<Vec<serde_json::Value>, StorageError> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| StorageError::rejected(e.to_string())))
        .collect()
}

/// A number from JSON output, where 64-bit integers and decimals come
/// quoted; 0 when there is none.
pub fn json_number(v: &serde_json::Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_as_a_whole_word_only() {
        assert_eq!(
            in_database(
                "SELECT * FROM bilten_analytics.events WHERE database = 'bilten_analytics' \
                 AND t = 'bilten_analytics_old' AND u = 'xbilten_analytics'",
                "staging"
            ),
            "SELECT * FROM staging.events WHERE database = 'staging' \
             AND t = 'bilten_analytics_old' AND u = 'xbilten_analytics'"
        );
    }

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
        assert_eq!(e.code(), None);
    }

    /// The code is read once, as a number, where the text arrives; our own
    /// messages have none, even when they quote an engine's text.
    #[test]
    fn an_error_carries_the_engines_code_as_a_number() {
        let e = StorageError::from_exception(
            "Code: 241. DB::Exception: Memory limit exceeded. (MEMORY_LIMIT_EXCEEDED)".into(),
        );
        assert_eq!(e.code(), Some(241));
        let StorageError::Transient(inner) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(inner.code, Some(241));
        assert!(inner.message.starts_with("Code: 241."));
        assert_eq!(StorageError::transient("the engine is closed").code(), None);
        let limit = StorageError::from_exception(
            "Code: 159. DB::Exception: Timeout exceeded. (TIMEOUT_EXCEEDED)".into(),
        )
        .for_readonly_query();
        assert!(matches!(limit, StorageError::LimitExceeded(_)), "{limit:?}");
        assert_eq!(limit.code(), Some(159));
    }

    #[test]
    fn only_parse_and_conversion_errors_are_data_errors() {
        let data = |t: &str| StorageError::from_exception(t.into()).is_data_error();
        assert!(data(
            "Code: 27. DB::Exception: Cannot parse input: expected '\"' (CANNOT_PARSE_INPUT_ASSERTION_FAILED)"
        ));
        assert!(data(
            "Code: 117. DB::Exception: Unknown field found while parsing JSONEachRow format: x (INCORRECT_DATA)"
        ));
        // The environment's faults are retried, never dead-lettered.
        for env in [
            "Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)",
            "Code: 516. DB::Exception: default: Authentication failed (AUTHENTICATION_FAILED)",
            "Code: 497. DB::Exception: Not enough privileges. (ACCESS_DENIED)",
            "Code: 60. DB::Exception: Table bilten_analytics.events does not exist. (UNKNOWN_TABLE)",
            "Code: 81. DB::Exception: Database bilten_analytics does not exist. (UNKNOWN_DATABASE)",
            "Code: 159. DB::Exception: Timeout exceeded (TIMEOUT_EXCEEDED)",
            "Code: 1002. DB::Exception: something new",
            "connection refused",
        ] {
            assert!(!data(env), "{env}");
        }
        assert!(!StorageError::transient("Code: 27. x").is_data_error());
    }

    #[test]
    fn a_readonly_query_that_hits_a_limit_or_a_refusal_is_the_callers_error() {
        let e = StorageError::from_exception(
            "Code: 159. DB::Exception: Timeout exceeded: elapsed 5000 ms (TIMEOUT_EXCEEDED)".into(),
        );
        assert!(matches!(
            e.for_readonly_query(),
            StorageError::LimitExceeded(_)
        ));
        let e = StorageError::from_exception(
            "Code: 164. DB::Exception: default: Cannot execute query in readonly mode. (READONLY)"
                .into(),
        );
        assert!(matches!(
            e.for_readonly_query(),
            StorageError::NotReadOnly(_)
        ));
    }
}
