//! One statement from ClickHouse's HTTP interface, run by the embedded
//! engine on a connection of its own (`EmbeddedStorage::session`): the
//! request, and the rules for reads and for a request's own settings.
//!
//! Reads run in the engine's read-only mode with the readers' role
//! (`clickhouse_http::walls`); before that, `EXPLAIN AST` must name no `file()`
//! function, which no grant covers. Writes are `clickhouse_http::allow`'s.

use std::sync::Arc;

use bytes::Bytes;

use super::allow::{Policy, insert_setting_value};

/// What the user behind a statement may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads, in the engine's read-only mode, with the query limits.
    ReadOnly,
    /// Reads, plus inserts and DDL inside this project's database.
    ReadWrite,
    /// A read-write user that may also back up and restore the database on
    /// the `backups` disk, and keep the backup catalog ([`backup_statement`]).
    Backup,
}

impl Access {
    pub fn writes(self) -> bool {
        self != Access::ReadOnly
    }
}

/// The engine's disk for backups (the embedded engine's backups directory).
pub const BACKUPS_DISK: &str = "backups";

/// A restore into the live database keeps the old one aside as
/// `<db>_before_restore_<digits>`.
pub const ASIDE_INFIX: &str = "_before_restore_";

/// A verification restores into a scratch `bilten_verify_<hex>`.
pub const SCRATCH_PREFIX: &str = "bilten_verify_";

/// A restore into the live database that fails leaves what it restored as
/// `<db>_failed_restore_<digits>` (for an operator to look at and drop),
/// and renames the old one back: nothing drops the live database.
pub const FAILED_INFIX: &str = "_failed_restore_";

/// Whether `name` may name a backup: it starts with a letter or a digit,
/// holds letters, digits, `_`, `-` and `.`, never `..` (so never a path or
/// the backups directory itself), has no suffix that makes it an archive
/// (`.zip`, `.tar`, …: letters alone after the last dot), and is at most 128
/// bytes. The same rule for a new name and for every id or base read back
/// from the catalog.
pub fn backup_name(name: &str) -> bool {
    let archive = name
        .rsplit_once('.')
        .is_some_and(|(_, ext)| !ext.is_empty() && ext.bytes().all(|b| b.is_ascii_alphabetic()));
    name.len() <= 128
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && !name.contains("..")
        && !archive
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// Databases no restore may create or fill.
const RESERVED_DATABASES: &[&str] = &[
    "system",
    "information_schema",
    "INFORMATION_SCHEMA",
    "default",
    crate::model::SYSTEM_DATABASE,
    crate::model::CONTROL_DATABASE,
];

/// A statement outside a backup user's shapes (`backup_statement`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("a backup user may back up and restore {home} on the {BACKUPS_DISK} disk only")]
pub struct NotABackup {
    pub home: String,
}

/// What a backup user may run beyond a read-write user's statements, judged
/// on the statement as the engine formats it (`formatQuery`: one spelling
/// per statement, so case, spacing, comments and quoting cannot disguise
/// one). Exactly these shapes, and nothing else, with `home` the database:
/// - `BACKUP DATABASE home TO Disk('backups', 'name')`, optionally with
///   `SETTINGS base_backup = Disk('backups', 'name')`;
/// - `RESTORE DATABASE home [AS new] FROM Disk('backups', 'name')`;
/// - `RENAME DATABASE` of `home` to `home_before_restore_<digits>` and
///   back, or (a failed restore's leftovers) to `home_failed_restore_<digits>`;
/// - `DROP DATABASE IF EXISTS` of a verification's scratch `bilten_verify_…`
///   (never of `home`).
///
/// Backup names follow [`backup_name`], so none leaves the disk.
/// `reserved`: databases no restore may create besides the engine's own
/// (the guest system database). `Ok(Some(db))`: allowed if the database
/// `db` does not exist yet (a restore `AS` it).
pub fn backup_statement(
    formatted: &str,
    home: &str,
    reserved: &[&str],
) -> Result<Option<String>, NotABackup> {
    let refuse = || {
        Err(NotABackup {
            home: home.to_string(),
        })
    };
    let target = |s: &str| -> Option<usize> {
        let name = s.strip_prefix(&format!("Disk('{BACKUPS_DISK}', '"))?;
        let len = name.find("')")?;
        // `Disk('` + disk + `', '` + name + `')`
        backup_name(&name[..len]).then_some(BACKUPS_DISK.len() + len + 12)
    };
    let renamed = |db: &str, infix: &str| {
        db.strip_prefix(home)
            .and_then(|rest| rest.strip_prefix(infix))
            .is_some_and(|t| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()))
    };
    let aside = |db: &str| renamed(db, ASIDE_INFIX);
    let words: Vec<&str> = formatted.trim().split(' ').collect();
    match words.as_slice() {
        ["BACKUP", "DATABASE", db, "TO", ..] if *db == home => {
            let rest = formatted.trim()[format!("BACKUP DATABASE {home} TO ").len()..].to_string();
            let Some(end) = target(&rest) else {
                return refuse();
            };
            let tail = &rest[end..];
            if tail.is_empty() {
                return Ok(None);
            }
            match tail.strip_prefix(" SETTINGS base_backup = ") {
                Some(base) if target(base) == Some(base.len()) => Ok(None),
                _ => refuse(),
            }
        }
        ["RESTORE", "DATABASE", db, rest @ ..] if *db == home => {
            let (new, from) = match rest {
                ["AS", new, "FROM", ..] => (Some(*new), format!(" AS {new} FROM ")),
                ["FROM", ..] => (None, " FROM ".to_string()),
                _ => return refuse(),
            };
            let at = format!("RESTORE DATABASE {home}{from}").len();
            let rest = &formatted.trim()[at..];
            if target(rest) != Some(rest.len()) {
                return refuse();
            }
            match new {
                None => Ok(None),
                Some(new)
                    if crate::model::plain_identifier(new)
                        && !RESERVED_DATABASES.contains(&new)
                        && !reserved.contains(&new) =>
                {
                    Ok(Some(new.to_string()))
                }
                Some(_) => refuse(),
            }
        }
        ["RENAME", "DATABASE", from, "TO", to]
            if (*from == home && (aside(to) || renamed(to, FAILED_INFIX)))
                || (aside(from) && *to == home) =>
        {
            Ok(None)
        }
        ["DROP", "DATABASE", "IF", "EXISTS", db]
        | ["DROP", "DATABASE", "IF", "EXISTS", db, "SYNC"]
            if db
                .strip_prefix(SCRATCH_PREFIX)
                .is_some_and(|t| !t.is_empty() && crate::model::plain_identifier(t)) =>
        {
            Ok(None)
        }
        _ => refuse(),
    }
}

#[derive(Debug, Clone)]
pub struct SessionRequest {
    /// The statement; when `data` is `None` it may carry its rows inline.
    pub sql: String,
    /// The request body, when the statement came in the `query` parameter:
    /// the rows of an `INSERT … FORMAT x`, or the rest of the statement.
    pub data: Option<Bytes>,
    /// The output format when the statement names none.
    pub default_format: String,
    pub database: Option<String>,
    /// The database read-write users may change, and the default one.
    pub home: String,
    /// What writers may run (`clickhouse_http::allow`).
    pub policy: Arc<Policy>,
    /// Engine settings from the URL, names checked against the engine's.
    pub settings: Vec<(String, String)>,
    /// Query parameters (`param_x`), bound to `{x:Type}`.
    pub params: Vec<(String, String)>,
    pub access: Access,
    /// Only a read may run, whoever sends it: a GET request (as in
    /// ClickHouse), or one that asked for `readonly=1`.
    pub reads_only: bool,
}

#[derive(Debug, Default)]
pub struct SessionAnswer {
    pub body: Vec<u8>,
    /// The output format in effect: the statement's own or the default.
    pub format: String,
    pub read_rows: u64,
    pub read_bytes: u64,
    pub written_rows: u64,
    pub elapsed_ns: u64,
}

/// Settings a read-only user may still send: they shape the output or the
/// HTTP exchange, never what a query may read, write or spend.
pub fn harmless_setting(name: &str) -> bool {
    const PREFIXES: &[&str] = &["output_format_", "date_time_output_", "describe_"];
    const NAMES: &[&str] = &[
        "extremes",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "wait_end_of_query",
        "cancel_http_readonly_queries_on_client_close",
        "enable_http_compression",
        "http_zlib_compression_level",
        "output_format_json_quote_64bit_integers",
        "session_timezone",
    ];
    NAMES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Whether a user of `access` may send `name = value` as a setting of the
/// request: output and HTTP settings, the limits (which only tighten:
/// `limits` are the reader's connection arguments), and for writers an
/// insert's settings (`clickhouse_http::allow::INSERT_SETTINGS`) with their values.
/// Anything else reaches what a request must not (files, schemas, URLs,
/// the gates), so it is refused by name: an allow-list.
pub fn url_setting(
    limits: &[String],
    access: Access,
    name: &str,
    value: &str,
) -> Result<(), SettingRefused> {
    let limit = limits.iter().any(|a| {
        a.strip_prefix("--")
            .and_then(|a| a.split_once('='))
            .is_some_and(|(n, _)| n == name)
    });
    let frozen = super::walls::FROZEN_SETTINGS.contains(&name);
    if !frozen && (harmless_setting(name) || limit) {
        return Ok(());
    }
    if !frozen && access.writes() && insert_setting_value(name, value) {
        return Ok(());
    }
    Err(match access {
        Access::ReadOnly => SettingRefused::ReadOnly(name.to_string()),
        _ => SettingRefused::NotListed(name.to_string()),
    })
}

/// A setting a request may not send (`url_setting`), in ClickHouse's words.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingRefused {
    #[error("Cannot modify '{0}' setting in readonly mode")]
    ReadOnly(String),
    #[error(
        "Cannot modify '{0}' setting: a request may set output and HTTP settings, tighten the \
         limits, and for an insert its deduplication and input settings"
    )]
    NotListed(String),
}

/// Why a read must not run, judged on its text as the engine spells it
/// (`formatQuery`): the second view beside `EXPLAIN AST`, which shows a
/// `SHOW`'s `WHERE` and `LIMIT` as nothing at all although the engine
/// evaluates them (`SHOW DATABASES LIMIT toUInt8(file('/etc/passwd'))` read
/// the file into its error). A call of `file` anywhere outside a string
/// literal is refused, and a `SHOW` may carry no expression at all (no call,
/// no subquery: a `LIKE` pattern or a number).
pub fn hidden_calls(formatted: &str) -> Option<String> {
    let calls = called_functions(formatted);
    if calls.iter().any(|c| c.eq_ignore_ascii_case("file")) {
        return Some("the function file() is not available here".into());
    }
    let show = formatted
        .trim_start()
        .get(..5)
        .is_some_and(|w| w.eq_ignore_ascii_case("SHOW "));
    if show && outside_literals(formatted).contains('(') {
        return Some(
            "SHOW takes no expressions here (no functions or subqueries in WHERE or LIMIT); \
             select from system.tables or system.databases instead"
                .into(),
        );
    }
    None
}

/// `text` with string literals and quoted names blanked out.
fn outside_literals(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                out.push(' ');
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            chars.next();
                        }
                        '\'' => break,
                        _ => {}
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The names called as functions in `text` (a name, then `(`), string
/// literals skipped, quoted names unquoted.
fn called_functions(text: &str) -> Vec<String> {
    let text = outside_literals(text);
    let b = text.as_bytes();
    let mut calls = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let (name, end) = match b[i] {
            q @ (b'`' | b'"') => match text[i + 1..].find(q as char) {
                Some(len) => (text[i + 1..i + 1 + len].to_string(), i + len + 2),
                None => break,
            },
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let len = b[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                (text[i..i + len].to_string(), i + len)
            }
            _ => {
                i += 1;
                continue;
            }
        };
        let after = text[end..].trim_start();
        if after.starts_with('(') {
            calls.push(name);
        }
        i = end;
    }
    calls
}

/// Whether the statement's first word is INSERT.
pub fn starts_with_insert(sql: &str) -> bool {
    sql.trim_start()
        .get(..6)
        .is_some_and(|w| w.eq_ignore_ascii_case("INSERT"))
}

/// Table functions that only compute, from numbers: everything else reaches
/// files, the network, other tables' internals or processes. None that takes
/// a structure string: the engine parses one as column definitions, whose
/// `ALIAS` and `DEFAULT` expressions it evaluates and `EXPLAIN AST` shows
/// only as a string (`values('a String ALIAS file(…)', …)` read any file).
const PURE_TABLE_FUNCTIONS: &[&str] = &[
    "numbers",
    "numbers_mt",
    "zeros",
    "zeros_mt",
    "generate_series",
    "generateSeries",
    "primes",
];

/// Table engines a read-write user may create: all keep their data in the
/// engine's own directories.
fn allowed_engine(name: &str) -> bool {
    name.ends_with("MergeTree")
        || matches!(
            name,
            "Memory" | "Null" | "Set" | "Join" | "Log" | "TinyLog" | "StripeLog" | "Buffer"
        )
}

/// Why the statement whose `EXPLAIN AST` this is must not run, if it must not.
///
/// `table_functions` is the engine's own list (`system.table_functions`).
pub fn reaches_host(ast: &str, table_functions: &[String]) -> Option<String> {
    // Indent of a `Storage definition` whose engine (its first child) is next.
    let mut engine_at = None;
    for line in ast.lines() {
        let indent = line.len() - line.trim_start().len();
        let node = line.trim_start();
        let is_engine = engine_at.take().is_some_and(|i| indent == i + 1);
        if node.starts_with("Storage definition") {
            engine_at = Some(indent);
            continue;
        }
        if node.contains("Dictionary") {
            return Some("dictionaries are not available here".into());
        }
        let Some(rest) = node.strip_prefix("Function ") else {
            continue;
        };
        let name = rest.split([' ', '(']).next().unwrap_or("");
        if is_engine {
            if !allowed_engine(name) {
                return Some(format!("the table engine {name} is not available here"));
            }
            continue;
        }
        // The `file` function reads a file as a string, read-only mode or not.
        if name.eq_ignore_ascii_case("file") {
            return Some("the function file() is not available here".into());
        }
        if table_functions.iter().any(|t| t.eq_ignore_ascii_case(name))
            && !PURE_TABLE_FUNCTIONS.contains(&name)
        {
            return Some(format!("the table function {name}() is not available here"));
        }
    }
    None
}

/// `INSERT … FORMAT x` with nothing after the format's name: the statement
/// without its `FORMAT` clause, and the format. The body then holds rows
/// only, streamed to the engine and never parsed as SQL.
pub fn trailing_format(sql: &str) -> Option<(&str, &str)> {
    let t = sql.trim_end().trim_end_matches(';').trim_end();
    let name_at = t.rfind(|c: char| c.is_whitespace())? + 1;
    let name = &t[name_at..];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let before = t[..name_at].trim_end();
    let kw_at = before.rfind(|c: char| c.is_whitespace())? + 1;
    before[kw_at..]
        .eq_ignore_ascii_case("FORMAT")
        .then(|| (before[..kw_at].trim_end(), name))
}

/// A body holding `INSERT … FORMAT x`, a line break, then rows (how
/// clickhouse-connect sends Native rows): the statement and the rows.
/// Only a statement that starts with INSERT and ends its line with the
/// format's name is split off; anything else is left whole.
pub fn split_insert(body: &[u8]) -> Option<(&str, &[u8])> {
    const MAX_STATEMENT: usize = 64 << 10;
    let head = body.trim_ascii_start();
    if !head.get(..6)?.eq_ignore_ascii_case(b"INSERT") {
        return None;
    }
    let mut from = 0;
    while let Some(nl) = body[from..body.len().min(MAX_STATEMENT)]
        .iter()
        .position(|&b| b == b'\n')
    {
        let at = from + nl;
        let statement = std::str::from_utf8(&body[..at]).ok()?;
        if trailing_format(statement).is_some() {
            return Some((statement, &body[at + 1..]));
        }
        from = at + 1;
    }
    None
}

/// The format a statement's own `FORMAT` clause names, if any: the last
/// `FORMAT name` outside quotes, comments and parentheses. Only for the
/// `X-ClickHouse-Format` header; the engine decides what it writes.
pub fn named_format(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    let (mut i, mut depth, mut found) = (0, 0i32, None);
    let mut last_word: Option<&str> = None;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                last_word = None;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'(' => {
                depth += 1;
                i += 1;
                last_word = None;
            }
            b')' => {
                depth -= 1;
                i += 1;
                last_word = None;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let word = &sql[start..i];
                if depth == 0 && last_word.is_some_and(|w| w.eq_ignore_ascii_case("FORMAT")) {
                    found = Some(word.to_string());
                }
                last_word = Some(word);
            }
            c => {
                i += 1;
                if !c.is_ascii_whitespace() {
                    last_word = None;
                }
            }
        }
    }
    found
}

/// The only database names the interface accepts (`model::plain_identifier`,
/// at most 128 bytes), so `USE` never needs quoting.
pub fn database_name(name: &str) -> bool {
    name.len() <= 128 && crate::model::plain_identifier(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rows_after_a_trailing_format_are_data() {
        assert_eq!(
            trailing_format("INSERT INTO t (a, b) FORMAT RowBinary"),
            Some(("INSERT INTO t (a, b)", "RowBinary"))
        );
        assert_eq!(
            trailing_format("insert into t format\nJSONEachRow ;\n"),
            Some(("insert into t", "JSONEachRow"))
        );
        assert_eq!(trailing_format("INSERT INTO t VALUES"), None);
        assert_eq!(trailing_format("SELECT 1 FORMAT"), None);
        assert_eq!(trailing_format("FORMAT"), None);
    }

    #[test]
    fn a_body_with_an_insert_and_binary_rows_is_split_after_the_format() {
        let body = b"INSERT INTO t (a, b)\nFORMAT Native\n\x00\xff\n\x01";
        assert_eq!(
            split_insert(body),
            Some((
                "INSERT INTO t (a, b)\nFORMAT Native",
                &b"\x00\xff\n\x01"[..]
            ))
        );
        // Rows on the statement's own line: the engine reads them inline.
        assert_eq!(
            split_insert(b"INSERT INTO t FORMAT JSONEachRow {\"a\":1}\n"),
            None
        );
        assert_eq!(split_insert(b"SELECT 1 FORMAT Native\nxx"), None);
    }

    #[test]
    fn a_requests_settings_are_an_allow_list() {
        let limits = [
            "--readonly=1".to_string(),
            "--max_execution_time=30".to_string(),
        ];
        let ok =
            |access, name: &str, value: &str| url_setting(&limits, access, name, value).is_ok();
        for access in [Access::ReadOnly, Access::ReadWrite, Access::Backup] {
            assert!(ok(access, "output_format_json_quote_64bit_integers", "0"));
            assert!(ok(access, "max_execution_time", "5"));
            for gate in [
                "format_template_resultset",
                "output_format_schema",
                "input_format_record_errors_file_path",
                "format_avro_schema_registry_url",
                "format_schema",
                "allow_ddl",
                "allow_introspection_functions",
                "max_threads",
            ] {
                assert!(!ok(access, gate, "/x"), "{gate}");
            }
        }
        assert!(ok(Access::ReadWrite, "insert_deduplication_token", "abc"));
        assert!(ok(Access::Backup, "async_insert", "0"));
        assert!(!ok(Access::ReadWrite, "async_insert", "yes"));
        assert!(!ok(Access::ReadOnly, "insert_deduplication_token", "abc"));
        assert!(starts_with_insert("  insert into t"));
        assert!(!starts_with_insert("SELECT 1"));
    }

    #[test]
    fn a_backup_user_runs_exactly_the_backup_shapes() {
        let home = "bilten_analytics";
        for ok in [
            "BACKUP DATABASE bilten_analytics TO Disk('backups', '20261130T010203.456Z-full')",
            "BACKUP DATABASE bilten_analytics TO Disk('backups', 'b') SETTINGS base_backup = Disk('backups', 'a')",
            "RESTORE DATABASE bilten_analytics FROM Disk('backups', 'a')",
            "RENAME DATABASE bilten_analytics TO bilten_analytics_before_restore_20261130010203",
            "RENAME DATABASE bilten_analytics_before_restore_1 TO bilten_analytics",
            "RENAME DATABASE bilten_analytics TO bilten_analytics_failed_restore_20261204",
            "DROP DATABASE IF EXISTS bilten_verify_0af3 SYNC",
        ] {
            assert_eq!(backup_statement(ok, home, &[]), Ok(None), "{ok}");
        }
        assert_eq!(
            backup_statement(
                "RESTORE DATABASE bilten_analytics AS restored FROM Disk('backups', 'a')",
                home,
                &[]
            ),
            Ok(Some("restored".into()))
        );
        for refused in [
            "BACKUP DATABASE bilten_analytics TO Disk('backups', '../a')",
            "BACKUP DATABASE bilten_analytics TO Disk('backups', 'a/b')",
            "BACKUP DATABASE bilten_analytics TO Disk('backups', '')",
            "BACKUP DATABASE bilten_analytics TO Disk('backupsx', 'a')",
            "BACKUP DATABASE bilten_analytics TO Disk('backups', 'a') SETTINGS async = true",
            "BACKUP DATABASE bilten_analytics TO Disk('backups', 'b') SETTINGS base_backup = File('/x')",
            "BACKUP DATABASE other TO Disk('backups', 'a')",
            "BACKUP DATABASE bilten_analytics, DATABASE system TO Disk('backups', 'a')",
            "RESTORE DATABASE bilten_analytics AS system FROM Disk('backups', 'a')",
            "RESTORE DATABASE bilten_analytics AS `a b` FROM Disk('backups', 'a')",
            "RESTORE DATABASE bilten_analytics FROM Disk('backups', 'a') SETTINGS allow_non_empty_tables = 1",
            "RENAME DATABASE bilten_analytics TO elsewhere",
            "RENAME DATABASE x_before_restore_1 TO y",
            "RENAME DATABASE bilten_analytics TO x_before_restore_",
            "DROP DATABASE IF EXISTS bilten_verify_",
            "DROP DATABASE IF EXISTS default",
            // With the renames above, that would strip the live database's
            // views (`ops::backups::quiet_set_aside` runs at the store's start).
            "DROP VIEW IF EXISTS bilten_analytics_before_restore_1.visits_daily_from_visits",
            "DROP DATABASE bilten_analytics",
            // The live database is never dropped (a restore renames).
            "DROP DATABASE IF EXISTS bilten_analytics",
            "DROP DATABASE IF EXISTS bilten_analytics SYNC",
            "RENAME DATABASE bilten_analytics_failed_restore_1 TO bilten_analytics",
            "DROP DATABASE IF EXISTS bilten_analytics_failed_restore_1",
            "RENAME DATABASE other_before_restore_1 TO bilten_analytics",
            "RESTORE DATABASE bilten_analytics AS bilten_remote FROM Disk('backups', 'a')",
            "BACKUP DATABASE bilten_analytics TO Disk('backups', '.')",
            "BACKUP DATABASE bilten_analytics TO Disk('backups', 'z.zip')",
            "BACKUP DATABASE bilten_analytics TO Disk('backups', '.hidden')",
            "CREATE DATABASE IF NOT EXISTS other",
            "CREATE DATABASE IF NOT EXISTS bilten_system",
            "RESTORE DATABASE bilten_analytics AS bilten_system FROM Disk('backups', 'a')",
        ] {
            assert!(
                backup_statement(refused, home, &["bilten_remote"]).is_err(),
                "{refused}"
            );
        }
    }

    #[test]
    fn a_file_call_or_a_shows_expression_is_seen_in_the_engines_spelling() {
        for refused in [
            "SHOW DATABASES LIMIT toUInt8(file('/etc/passwd'))",
            "SHOW TABLES FROM system WHERE toUInt8(file('/etc/passwd'))",
            "SHOW TABLES WHERE name IN (SELECT 'x')",
            "SELECT `file`('/etc/passwd')",
            "SELECT \"FILE\" ('/etc/passwd')",
        ] {
            assert!(hidden_calls(refused).is_some(), "{refused}");
        }
        for ok in [
            "SHOW DATABASES",
            "SHOW TABLES FROM bilten_analytics LIKE '%(file(%' LIMIT 10",
            "SELECT 'file(x)', count() FROM t",
            "SELECT profile, files FROM t",
        ] {
            assert_eq!(hidden_calls(ok), None, "{ok}");
        }
    }

    #[test]
    fn the_named_format_is_the_last_one_outside_quotes_and_subqueries() {
        assert_eq!(
            named_format("SELECT 'FORMAT CSV' FORMAT JSONEachRow").as_deref(),
            Some("JSONEachRow")
        );
        assert_eq!(
            named_format("SELECT * FROM (SELECT 1 FORMAT CSV) -- FORMAT TSV\n").as_deref(),
            None
        );
        assert_eq!(
            named_format("SELECT 1 format Native SETTINGS max_threads = 1").as_deref(),
            Some("Native")
        );
        assert_eq!(named_format("SELECT `format` FROM t"), None);
    }

    #[test]
    fn host_reaching_functions_and_engines_are_found_in_the_ast() {
        let tfs: Vec<String> = ["file", "url", "numbers", "executable", "s3"]
            .map(String::from)
            .to_vec();
        let insert_select = "InsertQuery   (children 4)\n Identifier db1\n Identifier t\n SelectWithUnionQuery (children 1)\n  ExpressionList (children 1)\n   SelectQuery (children 3)\n    TablesInSelectQuery (children 1)\n     TablesInSelectQueryElement (children 1)\n      TableExpression (children 1)\n       Function file (children 1)\n";
        assert!(reaches_host(insert_select, &tfs).is_some());
        let engine = "CreateQuery db1 f (children 4)\n Identifier db1\n Storage definition (children 1)\n  Function File (children 1)\n   ExpressionList (children 2)\n";
        assert!(reaches_host(engine, &tfs).unwrap().contains("File"));
        let merge_tree = "CreateQuery db1 m (children 4)\n Storage definition (children 2)\n  Function MergeTree\n  Function toDate (children 1)\n Columns definition\n  Function file (children 1)\n";
        // The engine is fine; a `file()` default in a column is not.
        assert!(reaches_host(merge_tree, &tfs).unwrap().contains("file()"));
        let pure = "SelectWithUnionQuery (children 1)\n  TableExpression (children 1)\n   Function numbers (children 1)\n   Function sum (alias s)\n";
        assert_eq!(reaches_host(pure, &tfs), None);
        assert!(reaches_host(" Function url (alias u)\n", &tfs).is_some());
    }
}
