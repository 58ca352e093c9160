//! ClickHouse's HTTP interface on the embedded engine (`[clickhouse_http]`,
//! its own listener), for clients that speak it unmodified:
//! clickhouse-connect, `@clickhouse/client`, the Rust crate, Grafana, and
//! another ingest server's `clickhouse` backend.
//!
//! This module decodes the request the way ClickHouse documents it (routes,
//! credentials, parameters, compression) and encodes the answer with its
//! headers and its error text and statuses; what a user may run is decided
//! in `clickhouse_http::session`. Errors here are ClickHouse's, not the API's JSON:
//! clients parse `Code: N. DB::Exception: …` and `X-ClickHouse-Exception-Code`.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::clickhouse_http::allow::Policy;
use crate::clickhouse_http::codec;
use crate::clickhouse_http::session::{Access, SessionAnswer, SessionRequest, split_insert};
use crate::config::ClickHouseHttpConfig;
use crate::storage::{Storage, StorageError, exception_code};

/// What the interface's handlers share.
pub struct ClickHouseHttp {
    storage: Arc<dyn Storage>,
    /// Name, password SHA-256, access.
    users: Vec<(String, [u8; 32], Access)>,
    /// Statements in the engine at once (`concurrency`), each holding its
    /// turn from its body's first byte to its end in the engine.
    permits: Arc<Semaphore>,
    max_body: usize,
    home: String,
    /// What writers may run: the `clickhouse` backend's statements for the
    /// home and guest system databases.
    policy: Arc<Policy>,
}

impl ClickHouseHttp {
    pub fn new(cfg: &ClickHouseHttpConfig, storage: Arc<dyn Storage>) -> Arc<Self> {
        let users = cfg
            .users
            .iter()
            .filter_map(|u| {
                let access = match (u.readonly, u.backup) {
                    (true, _) => Access::ReadOnly,
                    (false, false) => Access::ReadWrite,
                    (false, true) => Access::Backup,
                };
                Some((u.name.clone(), u.password_digest()?, access))
            })
            .collect();
        Arc::new(ClickHouseHttp {
            storage,
            users,
            permits: Arc::new(Semaphore::new(cfg.concurrency)),
            max_body: cfg.max_body_bytes,
            home: cfg.database.clone(),
            policy: Arc::new(Policy::new(
                cfg.database.clone(),
                cfg.system_database.clone(),
                crate::ops::fixed_statements(&cfg.database, &cfg.system_database),
            )),
        })
    }

    /// The user's access if the password is theirs. Every user's digest is
    /// compared, so the time taken does not tell which names exist.
    fn authenticate(&self, name: &str, password: &str) -> Option<Access> {
        let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let mut found = None;
        for (user, digest, access) in &self.users {
            let ok = digest.ct_eq(&given).unwrap_u8() == 1 && user == name;
            if ok {
                found = Some(*access);
            }
        }
        found
    }
}

pub fn router(state: Arc<ClickHouseHttp>) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/", get(handle).post(handle))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                None,
                "Code: 1000. DB::Exception: There is no handle for this path: use / or /ping. \
                 (UNKNOWN_EXCEPTION)",
            )
        })
        .with_state(state)
}

async fn ping() -> &'static str {
    "Ok.\n"
}

/// Parameters of the interface itself; anything else not `param_*` is an
/// engine setting.
const TRANSPORT: &[&str] = &[
    "query",
    "user",
    "password",
    "database",
    "default_format",
    "query_id",
    "compress",
    "decompress",
    "session_id",
    "session_timeout",
    "session_check",
    "buffer_size",
    "wait_end_of_query",
    "quota_key",
    "client_protocol_version",
    "role",
    "enable_http_compression",
    "send_progress_in_http_headers",
    "http_headers_progress_interval_ms",
    "http_zlib_compression_level",
    "cancel_http_readonly_queries_on_client_close",
];

/// An answer in ClickHouse's words: `Code: N. DB::Exception: …. (NAME)`,
/// which clients parse, with the code the status comes from.
#[derive(Debug)]
struct Exception(String);

impl Exception {
    fn new(code: u32, name: &str, message: impl std::fmt::Display) -> Exception {
        Exception(format!("Code: {code}. DB::Exception: {message}. ({name})"))
    }

    fn into_response(self, query_id: &str) -> Response {
        let code = exception_code(&self.0).unwrap_or(1000);
        let mut r = error(status_of(code), Some(code), &self.0);
        r.headers_mut()
            .insert("X-ClickHouse-Query-Id", header_value(query_id));
        r
    }
}

/// Storage errors in ClickHouse's words: they carry the engine's text and
/// code; ours (the engine closed, a task failed) become code 1000.
impl From<StorageError> for Exception {
    fn from(e: StorageError) -> Exception {
        match e {
            StorageError::Rejected(x) | StorageError::Transient(x)
                if x.message.starts_with("Code: ") =>
            {
                Exception(x.message)
            }
            StorageError::NotReadOnly(text) | StorageError::LimitExceeded(text)
                if text.starts_with("Code: ") =>
            {
                Exception(text)
            }
            e => Exception::new(1000, "UNKNOWN_EXCEPTION", e),
        }
    }
}

/// One request: who sends it, its body decoded, its statement, run; the
/// answer encoded as asked.
async fn handle(
    State(state): State<Arc<ClickHouseHttp>>,
    method: Method,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut pairs: Vec<(String, String)> =
        form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let query_id = last_param(&pairs, "query_id")
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    match run(&state, method, &mut pairs, &headers, body).await {
        Ok(Some(answer)) => respond(answer, &pairs, &headers, &query_id),
        Ok(None) => "Ok.\n".into_response(),
        Err(e) => e.into_response(&query_id),
    }
}

/// The request's statement run for its user; `None`: an empty `GET`
/// (ClickHouse's liveness answer).
async fn run(
    state: &ClickHouseHttp,
    method: Method,
    pairs: &mut Vec<(String, String)>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Option<SessionAnswer>, Exception> {
    // Credentials: Basic auth, the X-ClickHouse-* headers, or parameters.
    let (user, password) = credentials(headers, pairs);
    let Some(access) = state.authenticate(&user, &password) else {
        return Err(Exception::new(
            516,
            "AUTHENTICATION_FAILED",
            format_args!(
                "{user}: Authentication failed: password is incorrect, or there is no user \
                 with such name"
            ),
        ));
    };
    // A statement's turn is taken before its body is read: at most
    // `concurrency` bodies (each at most `max_body_bytes` decoded) are held
    // at once, whoever sends them.
    let permit = state
        .permits
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    let body = read_body(state, pairs, headers, body).await?;
    let Some((sql, data)) = statement(last_param(pairs, "query"), body)? else {
        return match method {
            Method::GET => Ok(None),
            _ => Err(Exception::new(62, "SYNTAX_ERROR", "Empty query")),
        };
    };
    let request = session_request(state, method, pairs, access, sql, data);
    let statement: String = request.sql.chars().take(300).collect();
    // The statement keeps its turn until the engine is done with it, even
    // if its client hangs up: the engine does not stop with the request, so
    // a turn given back early would let any number run at once.
    let storage = state.storage.clone();
    let ran = tokio::spawn(async move {
        let _turn = permit;
        storage.session(request).await
    })
    .await
    .unwrap_or_else(|e| {
        Err(StorageError::transient(format!(
            "the statement's task failed: {e}"
        )))
    });
    ran.map(Some).map_err(|e| {
        let refused = matches!(e.code(), Some(164 | 497));
        let e = Exception::from(e);
        if refused {
            // Who tried what: the operator's view of refused statements.
            tracing::info!(%user, %statement, error = %e.0, "ClickHouse interface refused a statement");
        }
        e
    })
}

/// The body, bounded, its content encoding and ClickHouse's block
/// compression undone; a multipart form's fields go to `pairs` (as the
/// Rust crate sends a query with parameters).
async fn read_body(
    state: &ClickHouseHttp,
    pairs: &mut Vec<(String, String)>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<u8>, Exception> {
    let too_large = |_| {
        Exception::new(
            1001,
            "STD_EXCEPTION",
            format_args!(
                "the request body is larger than {} bytes or could not be read",
                state.max_body
            ),
        )
    };
    let body = axum::body::to_bytes(body, state.max_body)
        .await
        .map_err(too_large)?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut body = codec::decode_content(encoding, body, state.max_body)
        .map_err(|e| Exception::new(1001, "STD_EXCEPTION", e))?;
    if last_param(pairs, "decompress") == Some("1") {
        body = codec::decompress_blocks(&body, state.max_body)
            .map_err(|e| Exception::new(271, "CANNOT_DECOMPRESS", e))?;
    }
    if let Some(boundary) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|ct| ct.starts_with("multipart/form-data"))
        .and_then(|ct| multer::parse_boundary(ct).ok())
    {
        let fields = form_fields(std::mem::take(&mut body), boundary).await?;
        pairs.extend(fields);
    }
    Ok(body)
}

/// The statement and its rows: the `query` parameter, with the body as its
/// rows (or its continuation); or the body alone, which may hold an INSERT
/// and then its rows. `None`: no statement.
fn statement(
    query: Option<&str>,
    body: Vec<u8>,
) -> Result<Option<(String, Option<Bytes>)>, Exception> {
    let (sql, data) = match query {
        Some(q) => (q.to_string(), (!body.is_empty()).then(|| Bytes::from(body))),
        None => match split_insert(&body) {
            Some((statement, rows)) => {
                let (statement, from) = (statement.to_string(), body.len() - rows.len());
                (statement, Some(Bytes::from(body).slice(from..)))
            }
            None => {
                let text = String::from_utf8(body).map_err(|_| {
                    Exception::new(
                        62,
                        "SYNTAX_ERROR",
                        "the statement is not UTF-8 text; send binary rows after \
                         `INSERT … FORMAT x` and a line break, or after a `query` parameter",
                    )
                })?;
                (text, None)
            }
        },
    };
    Ok((!sql.trim().is_empty()).then_some((sql, data)))
}

/// The request's parameters sorted into bound values (`param_*`), the
/// interface's own (`TRANSPORT`) and engine settings, for the session.
fn session_request(
    state: &ClickHouseHttp,
    method: Method,
    pairs: &[(String, String)],
    access: Access,
    sql: String,
    data: Option<Bytes>,
) -> SessionRequest {
    let mut settings = Vec::new();
    let mut params = Vec::new();
    // `readonly=1` (or 2) only tightens: the statement must read, as a
    // `clickhouse` backend's /admin/query asks. Nobody may loosen it.
    let mut reads_only = method == Method::GET;
    for (k, v) in pairs {
        if let Some(name) = k.strip_prefix("param_") {
            params.push((name.to_string(), v.clone()));
        } else if k == "readonly" && v != "0" {
            reads_only = true;
        } else if k == "readonly" && access.writes() {
            // A read-write user is not in read-only mode to begin with.
        } else if !TRANSPORT.contains(&k.as_str()) {
            settings.push((k.clone(), v.clone()));
        }
    }
    SessionRequest {
        sql,
        data,
        default_format: last_param(pairs, "default_format")
            .unwrap_or("TabSeparated")
            .to_string(),
        database: last_param(pairs, "database")
            .filter(|d| !d.is_empty())
            .map(str::to_string),
        home: state.home.clone(),
        policy: state.policy.clone(),
        settings,
        params,
        access,
        reads_only,
    }
}

/// The answer with ClickHouse's headers, compressed as asked: its blocks
/// (`compress=1`), or an HTTP content encoding when
/// `enable_http_compression=1`.
fn respond(
    answer: SessionAnswer,
    pairs: &[(String, String)],
    headers: &HeaderMap,
    query_id: &str,
) -> Response {
    let param = |name: &str| last_param(pairs, name);
    let mut response_headers = HeaderMap::new();
    response_headers.insert(header::CONTENT_TYPE, content_type(&answer.format));
    response_headers.insert("X-ClickHouse-Query-Id", header_value(query_id));
    response_headers.insert("X-ClickHouse-Format", header_value(&answer.format));
    response_headers.insert("X-ClickHouse-Timezone", HeaderValue::from_static("UTC"));
    response_headers.insert(
        "X-ClickHouse-Server-Display-Name",
        HeaderValue::from_static("bilten-analytics"),
    );
    response_headers.insert("X-ClickHouse-Summary", header_value(&summary(&answer)));
    let body = if param("compress") == Some("1") {
        codec::compress_blocks(&answer.body)
    } else if param("enable_http_compression") == Some("1")
        && let Some(enc) = headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .and_then(codec::pick_encoding)
    {
        response_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(enc));
        codec::encode_content(enc, &answer.body)
    } else {
        answer.body
    };
    (StatusCode::OK, response_headers, body).into_response()
}

/// A multipart form's fields, as parameters. File fields would be external
/// tables, which this interface does not offer.
async fn form_fields(body: Vec<u8>, boundary: String) -> Result<Vec<(String, String)>, Exception> {
    let malformed = |e: multer::Error| {
        Exception::new(
            1001,
            "STD_EXCEPTION",
            format_args!("the multipart form is malformed: {e}"),
        )
    };
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(body)) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut fields = Vec::new();
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        if field.file_name().is_some() {
            return Err(Exception::new(
                1001,
                "STD_EXCEPTION",
                "external tables (file fields) are not supported",
            ));
        }
        let name = field.name().unwrap_or("").to_string();
        let value = field.text().await.map_err(malformed)?;
        fields.push((name, value));
    }
    Ok(fields)
}

/// A parameter's last value.
fn last_param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn credentials(headers: &HeaderMap, pairs: &[(String, String)]) -> (String, String) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(basic) = super::auth::basic_auth(headers) {
        return basic;
    }
    if let Some(user) = header("x-clickhouse-user") {
        return (
            user.to_string(),
            header("x-clickhouse-key").unwrap_or("").to_string(),
        );
    }
    (
        last_param(pairs, "user").unwrap_or("default").to_string(),
        last_param(pairs, "password").unwrap_or("").to_string(),
    )
}

/// ClickHouse's choice of status for an exception code (its HTTP handler's).
fn status_of(code: u32) -> StatusCode {
    match code {
        194 => StatusCode::UNAUTHORIZED, // REQUIRED_PASSWORD
        192 | 193 | 516 | 497 | 164 => StatusCode::FORBIDDEN,
        // Parse errors, bad AST, syntax, incorrect data, type mismatch,
        // bad arguments, readonly settings, unknown query parameter.
        6 | 25 | 26 | 27 | 38 | 41 | 53 | 62 | 72 | 117 | 36 | 43 | 44 | 456 | 457 | 271 | 168
        | 169 | 167 => StatusCode::BAD_REQUEST,
        // Unknown table, function, identifier, type, storage, database,
        // setting, format, aggregate function.
        60 | 46 | 47 | 50 | 56 | 81 | 115 | 73 | 63 => StatusCode::NOT_FOUND,
        1001 => StatusCode::PAYLOAD_TOO_LARGE,
        48 => StatusCode::NOT_IMPLEMENTED,
        159 | 209 | 210 => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error(status: StatusCode, code: Option<u32>, text: &str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    if let Some(code) = code {
        headers.insert(
            "X-ClickHouse-Exception-Code",
            header_value(&code.to_string()),
        );
    }
    (status, headers, format!("{}\n", text.trim_end())).into_response()
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn content_type(format: &str) -> HeaderValue {
    let f = format.to_ascii_lowercase();
    HeaderValue::from_static(if f.starts_with("json") {
        "application/json; charset=UTF-8"
    } else if f.starts_with("tabseparated") || f.starts_with("tsv") {
        "text/tab-separated-values; charset=UTF-8"
    } else if f.starts_with("csv") {
        "text/csv; charset=UTF-8; header=absent"
    } else if f.starts_with("rowbinary") || f == "native" || f == "parquet" || f == "arrow" {
        "application/octet-stream"
    } else {
        "text/plain; charset=UTF-8"
    })
}

/// `X-ClickHouse-Summary`: numbers as strings, as ClickHouse writes them.
fn summary(a: &SessionAnswer) -> String {
    serde_json::json!({
        "read_rows": a.read_rows.to_string(),
        "read_bytes": a.read_bytes.to_string(),
        "written_rows": a.written_rows.to_string(),
        "written_bytes": "0",
        "total_rows_to_read": a.read_rows.to_string(),
        "result_rows": "0",
        "result_bytes": a.body.len().to_string(),
        "elapsed_ns": a.elapsed_ns.to_string(),
    })
    .to_string()
}
