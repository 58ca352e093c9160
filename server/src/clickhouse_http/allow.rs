//! What an interface user who may write may run: exactly the statements a
//! `clickhouse` backend sends, and nothing else. An allow-list, judged on
//! the statement as the engine's parser spells it (`formatQuery`), so case,
//! spacing, comments and quoting cannot disguise one; and what runs is that
//! spelling (or, for an insert, its rows streamed as data), so nothing the
//! spelling leaves out (inline rows, a second `FORMAT`) ever runs.
//!
//! The shapes, each named in a refusal (`Shape`):
//! - **insert**: `INSERT INTO t [(columns)] [SETTINGS …] FORMAT f` into a
//!   table of the home database, of a server's records in the guest
//!   system database ([`GUEST_TABLES`]), or of the tenants' records
//!   (`model::CONTROL_TABLES`, sealed: a row without a server's seal is
//!   ignored); `f` a data format
//!   ([`DATA_FORMATS`]: never `Values`, whose rows are expressions, nor a
//!   format that reads a schema or template file); the settings, names and
//!   values, from [`INSERT_SETTINGS`];
//! - **fixed**: one of the statements the backend sends word for word (its
//!   migrations and its records' DDL, rendered for these databases);
//! - **retention**: `ALTER TABLE` of an aged table (`model::AGED_TABLES`)
//!   with one of retention's commands: the tiered storage policy, a TTL of
//!   the rules `ops::retention` writes, `REMOVE TTL`, `MATERIALIZE TTL`,
//!   `MOVE PART … TO VOLUME 'cold' | 'archive'`;
//! - **delete**: `DELETE FROM t WHERE` a conjunction of `column = {p:String}`
//!   and `column IN {p:Array(String)}`, values bound as parameters;
//! - **backup** (backup users): `session::backup_statement`'s shapes.

use std::collections::HashSet;
use std::sync::OnceLock;

use super::session::{Access, backup_statement};
use crate::config::retention::DATETIME_MAX;
use crate::model::{AGED_TABLES, CONTROL_DATABASE, CONTROL_TABLES, plain_identifier};

/// Formats an insert's rows may come in: data only. `Values` is not one
/// (its rows are SQL expressions), nor are formats that read a schema or a
/// template from a file (CapnProto, Protobuf, Template, Avro's registry).
pub const DATA_FORMATS: &[&str] = &[
    "JSONEachRow",
    "JSONCompactEachRow",
    "JSONCompactEachRowWithNames",
    "JSONCompactEachRowWithNamesAndTypes",
    "JSONStringsEachRow",
    "RowBinary",
    "RowBinaryWithNames",
    "RowBinaryWithNamesAndTypes",
    "Native",
    "TabSeparated",
    "TabSeparatedWithNames",
    "TabSeparatedWithNamesAndTypes",
    "TSV",
    "TSVWithNames",
    "TSVWithNamesAndTypes",
    "CSV",
    "CSVWithNames",
    "CSVWithNamesAndTypes",
    "Parquet",
    "Arrow",
    "ArrowStream",
    "LineAsString",
];

/// Settings an insert may carry, with the values each may take.
pub const INSERT_SETTINGS: &[(&str, Value)] = &[
    ("insert_deduplication_token", Value::Token),
    (
        "deduplicate_blocks_in_dependent_materialized_views",
        Value::Flag,
    ),
    ("async_insert", Value::Flag),
    ("wait_for_async_insert", Value::Flag),
    ("input_format_skip_unknown_fields", Value::Flag),
    ("input_format_null_as_default", Value::Flag),
    ("input_format_defaults_for_omitted_fields", Value::Flag),
    ("date_time_input_format", Value::DateTimeInput),
    ("max_insert_block_size", Value::Number),
    ("min_insert_block_size_rows", Value::Number),
    ("min_insert_block_size_bytes", Value::Number),
    ("insert_distributed_sync", Value::Flag),
    ("distributed_foreground_insert", Value::Flag),
];

/// A server's records, in the guest system database: the tables a
/// `clickhouse` backend keeps there (`ops::records` creates them).
pub use crate::model::RECORD_TABLES as GUEST_TABLES;

/// What a setting's value may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// `0` or `1`.
    Flag,
    /// Digits.
    Number,
    /// A quoted token of letters, digits, `_` and `-` (a deduplication token).
    Token,
    /// `'basic'`, `'best_effort'` or `'best_effort_us'`.
    DateTimeInput,
}

impl Value {
    fn accepts(self, v: &str) -> bool {
        let quoted = || v.strip_prefix('\'').and_then(|s| s.strip_suffix('\''));
        match self {
            Value::Flag => matches!(v, "0" | "1"),
            Value::Number => {
                !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit())
            }
            Value::Token => quoted().is_some_and(|t| {
                !t.is_empty()
                    && t.len() <= 128
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }),
            Value::DateTimeInput => {
                matches!(quoted(), Some("basic" | "best_effort" | "best_effort_us"))
            }
        }
    }
}

/// The value a setting sent in the URL may take, for a writer; `None`: not
/// an insert setting.
pub fn insert_setting(name: &str) -> Option<Value> {
    INSERT_SETTINGS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
}

/// Whether `value` (as sent in a URL, unquoted) is one `name` may take.
pub fn insert_setting_value(name: &str, value: &str) -> bool {
    match insert_setting(name) {
        Some(Value::Token | Value::DateTimeInput) => {
            insert_setting(name).is_some_and(|v| v.accepts(&format!("'{value}'")))
        }
        Some(v) => v.accepts(value),
        None => false,
    }
}

/// The databases and the fixed statements writers are judged against.
#[derive(Debug)]
pub struct Policy {
    /// The database writers change.
    pub home: String,
    /// Where a `clickhouse` backend keeps its records (never this server's
    /// own system database).
    pub guest: String,
    /// Every statement the backend sends word for word, as it sends them.
    pub fixed: Vec<String>,
    /// `fixed` as the engine spells them, made once by the backend that
    /// judges (it needs the engine's parser).
    formatted: OnceLock<HashSet<String>>,
}

impl Policy {
    pub fn new(home: String, guest: String, fixed: Vec<String>) -> Policy {
        Policy {
            home,
            guest,
            fixed,
            formatted: OnceLock::new(),
        }
    }

    /// The fixed statements as the engine spells them, made with `format`
    /// the first time.
    pub fn formatted<E>(
        &self,
        format: impl Fn(&str) -> Result<String, E>,
    ) -> Result<&HashSet<String>, E> {
        if let Some(set) = self.formatted.get() {
            return Ok(set);
        }
        let mut set = HashSet::new();
        for sql in &self.fixed {
            set.insert(format(sql)?);
        }
        Ok(self.formatted.get_or_init(|| set))
    }
}

/// Which rule refused a statement, for the 403's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Insert,
    Fixed,
    Retention,
    Delete,
    Backup,
}

/// What may run, once judged.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Rows in `format` streamed into `statement` (the engine's spelling,
    /// without its `FORMAT` clause).
    Insert { statement: String, format: String },
    /// This text: the engine's own spelling of the statement.
    Run(String),
    /// A restore `AS` a database, allowed only while that database does
    /// not exist.
    RestoreAs { sql: String, database: String },
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Insert => "insert",
            Shape::Fixed => "fixed",
            Shape::Retention => "retention",
            Shape::Delete => "delete",
            Shape::Backup => "backup",
        }
    }
}

/// Why not, and under which rule.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{why} (rule: {}; see the README's list of what writers may run)", .shape.name())]
pub struct Refusal {
    pub shape: Shape,
    pub why: String,
}

impl Refusal {
    fn new(shape: Shape, why: impl Into<String>) -> Refusal {
        Refusal {
            shape,
            why: why.into(),
        }
    }
}

/// Judges one write statement. `formatted` is the engine's spelling of
/// it; `current` the session's database (unqualified names are in it);
/// `fixed` the policy's fixed statements, formatted.
pub fn judge(
    formatted: &str,
    policy: &Policy,
    fixed: &HashSet<String>,
    current: &str,
    access: Access,
) -> Result<Verdict, Refusal> {
    let f = formatted.trim_end();
    if fixed.contains(formatted) || fixed.contains(f) {
        return Ok(Verdict::Run(f.to_string()));
    }
    let home = policy.home.as_str();
    if let Some(rest) = f.strip_prefix("INSERT INTO ") {
        let (statement, format) = insert(rest, policy, current)?;
        return Ok(Verdict::Insert { statement, format });
    }
    if let Some(rest) = f.strip_prefix("ALTER TABLE ") {
        retention(rest, home, current)?;
        return Ok(Verdict::Run(f.to_string()));
    }
    if let Some(rest) = f.strip_prefix("DELETE FROM ") {
        delete(rest, home, current)?;
        return Ok(Verdict::Run(f.to_string()));
    }
    if access == Access::Backup
        && ["BACKUP ", "RESTORE ", "RENAME DATABASE ", "DROP DATABASE "]
            .iter()
            .any(|p| f.starts_with(p))
    {
        let restore = backup_statement(f, home, &[policy.guest.as_str()])
            .map_err(|e| Refusal::new(Shape::Backup, e.to_string()))?;
        return match restore {
            None => Ok(Verdict::Run(f.to_string())),
            Some(database) => Ok(Verdict::RestoreAs {
                sql: f.to_string(),
                database,
            }),
        };
    }
    let mut shown: String = f.chars().take(100).collect();
    if shown.len() < f.len() {
        shown.push('…');
    }
    let hint = if f.contains(crate::model::SYSTEM_DATABASE) {
        format!(
            "; {} is this server's own: a clickhouse backend using this interface keeps its \
             records in {} (storage.clickhouse.system_database)",
            crate::model::SYSTEM_DATABASE,
            policy.guest
        )
    } else {
        String::new()
    };
    Err(Refusal::new(
        Shape::Fixed,
        format!(
            "a writer may run only what a clickhouse backend sends: inserts of rows into {home}, \
             its migrations, retention's ALTERs, deletes by parameter{}; not `{shown}`{hint}",
            if access == Access::Backup {
                ", and backups of it on the backups disk"
            } else {
                ""
            }
        ),
    ))
}

/// A plain name, possibly qualified (`db.t`): the database (`current` when
/// unqualified) and the table, and what follows the name.
fn qualified<'a>(text: &'a str, current: &'a str) -> Option<(&'a str, &'a str, &'a str)> {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(text.len());
    let (name, rest) = text.split_at(end);
    let (db, table) = match name.split_once('.') {
        Some((db, table)) => (db, table),
        None => (current, name),
    };
    (plain_identifier(db) && plain_identifier(table)).then_some((db, table, rest))
}

/// `INSERT INTO` then `rest`: the statement without its `FORMAT` clause,
/// and the format.
fn insert(rest: &str, policy: &Policy, current: &str) -> Result<(String, String), Refusal> {
    let (db, table, mut tail) = qualified(rest, current).ok_or_else(|| {
        Refusal::new(
            Shape::Insert,
            "inserts name a plain table: `INSERT INTO db.table`",
        )
    })?;
    if db == policy.home {
    } else if db == policy.guest {
        if !GUEST_TABLES.contains(&table) {
            return Err(Refusal::new(
                Shape::Insert,
                format!(
                    "in {}, only a server's records may be inserted: {GUEST_TABLES:?}",
                    policy.guest
                ),
            ));
        }
    } else if db == CONTROL_DATABASE {
        let Some((_, set)) = CONTROL_TABLES.iter().find(|(t, _)| *t == table) else {
            return Err(Refusal::new(
                Shape::Insert,
                format!("in {CONTROL_DATABASE}, only {CONTROL_TABLES:?} take rows"),
            ));
        };
        if !tail.starts_with(&format!(" ({set})")) {
            return Err(Refusal::new(
                Shape::Insert,
                format!("rows of {CONTROL_DATABASE}.{table} set exactly ({set})"),
            ));
        }
    } else {
        return Err(Refusal::new(
            Shape::Insert,
            format!(
                "inserts go into {} (or a server's records in {}, or tenants' in \
                 {CONTROL_DATABASE}), not {db}",
                policy.home, policy.guest
            ),
        ));
    }
    // Columns: plain names, as the engine spells them.
    let mut columns = String::new();
    if let Some(cols) = tail.strip_prefix(" (") {
        let close = cols
            .find(')')
            .ok_or_else(|| Refusal::new(Shape::Insert, "unbalanced column list"))?;
        if !cols[..close].split(", ").all(plain_identifier) {
            return Err(Refusal::new(Shape::Insert, "columns are plain names"));
        }
        columns = format!(" ({})", &cols[..close]);
        tail = &cols[close + 1..];
    }
    let tail = tail.trim_start_matches([' ', '\n']);
    let (settings, format_clause) = match tail.strip_prefix("SETTINGS ") {
        Some(s) => {
            let at = s.find("\nFORMAT ").ok_or_else(|| {
                Refusal::new(Shape::Insert, "an insert ends with FORMAT and its rows")
            })?;
            (Some(&s[..at]), &s[at + 1..])
        }
        None => (None, tail),
    };
    let format = format_clause
        .strip_prefix("FORMAT ")
        .ok_or_else(|| Refusal::new(Shape::Insert, "an insert takes its rows in a data format (`FORMAT JSONEachRow`, …), apart from the statement; not VALUES, SELECT or FROM INFILE"))?;
    if !DATA_FORMATS.contains(&format) {
        return Err(Refusal::new(
            Shape::Insert,
            format!("FORMAT {format} is not taken: rows come as data, in one of {DATA_FORMATS:?}"),
        ));
    }
    if let Some(settings) = settings {
        for pair in settings.split(", ") {
            let (name, value) = pair
                .split_once(" = ")
                .ok_or_else(|| Refusal::new(Shape::Insert, "a setting is `name = value`"))?;
            match insert_setting(name) {
                Some(v) if v.accepts(value) => {}
                Some(_) => {
                    return Err(Refusal::new(
                        Shape::Insert,
                        format!("the value of {name} is not one it may take"),
                    ));
                }
                None => {
                    return Err(Refusal::new(
                        Shape::Insert,
                        format!(
                            "an insert's SETTINGS may name only {:?}, not {name}",
                            INSERT_SETTINGS.iter().map(|(n, _)| *n).collect::<Vec<_>>()
                        ),
                    ));
                }
            }
        }
    }
    let statement = match settings {
        Some(s) => format!("INSERT INTO {db}.{table}{columns} SETTINGS {s}"),
        None => format!("INSERT INTO {db}.{table}{columns}"),
    };
    Ok((statement, format.to_string()))
}

/// `ALTER TABLE` then `rest`: one of retention's commands on an aged table
/// of the home database.
fn retention(rest: &str, home: &str, current: &str) -> Result<(), Refusal> {
    let (db, table, tail) = qualified(rest, current)
        .ok_or_else(|| Refusal::new(Shape::Retention, "a plain table name"))?;
    if db != home {
        return Err(Refusal::new(
            Shape::Retention,
            format!("retention changes tables of {home}, not of {db}"),
        ));
    }
    let Some((_, column)) = AGED_TABLES.iter().find(|(t, _)| *t == table) else {
        return Err(Refusal::new(
            Shape::Retention,
            format!(
                "retention changes the aged tables only ({:?})",
                AGED_TABLES.iter().map(|(t, _)| *t).collect::<Vec<_>>()
            ),
        ));
    };
    let mut lines = tail.split('\n');
    let (Some(""), Some(command), settings, None) =
        (lines.next(), lines.next(), lines.next(), lines.next())
    else {
        return Err(Refusal::new(Shape::Retention, "one command at a time"));
    };
    let command = command
        .trim_start()
        .strip_prefix('(')
        .and_then(|c| c.strip_suffix(')'))
        .ok_or_else(|| Refusal::new(Shape::Retention, "one command at a time"))?;
    let settings_ok = |allowed: &[&str]| match settings {
        None => true,
        Some(s) => allowed.contains(&s),
    };
    let ok = if command == "MODIFY SETTING storage_policy = 'tiered'" || command == "REMOVE TTL" {
        settings.is_none()
    } else if command == "MATERIALIZE TTL" {
        settings_ok(&[
            "SETTINGS mutations_sync = 0",
            "SETTINGS mutations_sync = 1",
            "SETTINGS mutations_sync = 2",
        ])
    } else if let Some(ttl) = command.strip_prefix("MODIFY TTL ") {
        ttl_rules(ttl, column) && settings_ok(&["SETTINGS materialize_ttl_after_modify = 0"])
    } else if let Some(part) = command.strip_prefix("MOVE PART '") {
        let (name, volume) = part.split_once("' TO VOLUME ").unwrap_or(("", ""));
        !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && matches!(volume, "'cold'" | "'archive'")
            && settings.is_none()
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::new(
            Shape::Retention,
            "retention's commands only: the tiered policy, its TTL rules, REMOVE TTL, \
             MATERIALIZE TTL, MOVE PART to the cold or archive volume",
        ))
    }
}

/// Whether a TTL is made only of `ops::retention`'s rules for `column`: an
/// age in seconds, then a move to a colder volume, a recompression, or
/// (no word: the engine's default) deletion.
fn ttl_rules(ttl: &str, column: &str) -> bool {
    let head = format!("toDateTime(least(toUInt64(toUnixTimestamp({column})) + ");
    let after_age = format!(", {DATETIME_MAX}))");
    let mut rest = ttl;
    loop {
        let Some(r) = rest.strip_prefix(head.as_str()) else {
            return false;
        };
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return false;
        }
        let Some(r) = r[digits..].strip_prefix(after_age.as_str()) else {
            return false;
        };
        let r = [
            " TO VOLUME 'cold'",
            " TO VOLUME 'archive'",
            " RECOMPRESS CODEC(ZSTD(12))",
        ]
        .iter()
        .find_map(|s| r.strip_prefix(s))
        .unwrap_or(r);
        match r.strip_prefix(", ") {
            Some(next) => rest = next,
            None => return r.is_empty(),
        }
    }
}

/// `DELETE FROM` then `rest`: rows of a home table chosen by parameters.
fn delete(rest: &str, home: &str, current: &str) -> Result<(), Refusal> {
    let (db, _, tail) = qualified(rest, current)
        .ok_or_else(|| Refusal::new(Shape::Delete, "a plain table name"))?;
    if db != home {
        return Err(Refusal::new(
            Shape::Delete,
            format!("deletes are in {home}, not {db}"),
        ));
    }
    let conditions = tail
        .strip_prefix(" WHERE ")
        .ok_or_else(|| Refusal::new(Shape::Delete, "a delete needs WHERE conditions"))?;
    let one = |c: &str| -> bool {
        let Some(c) = c.strip_prefix('(').and_then(|c| c.strip_suffix(')')) else {
            return false;
        };
        let (column, value) = match c.split_once(" IN (") {
            Some((col, v)) => (col, v.strip_suffix(')').unwrap_or("")),
            None => match c.split_once(" = ") {
                Some(pair) => pair,
                None => return false,
            },
        };
        let param = |ty: &str| {
            value
                .strip_prefix('{')
                .and_then(|v| v.strip_suffix(&format!(":{ty}}}")))
                .is_some_and(plain_identifier)
        };
        plain_identifier(column) && (param("String") || param("Array(String)"))
    };
    let all = if conditions.starts_with('(') && conditions.contains(") AND (") {
        conditions.split(" AND ").all(one)
    } else {
        one(conditions) || one(&format!("({conditions})"))
    };
    if all {
        Ok(())
    } else {
        Err(Refusal::new(
            Shape::Delete,
            "a delete chooses rows by `column = {p:String}` or `column IN {p:Array(String)}`, \
             joined by AND, with the values bound as parameters",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new("bilten_analytics".into(), "bilten_remote".into(), vec![])
    }

    fn fixed() -> HashSet<String> {
        ["CREATE DATABASE IF NOT EXISTS bilten_analytics".to_string()]
            .into_iter()
            .collect()
    }

    fn judged(f: &str) -> Result<Verdict, Refusal> {
        judge(
            f,
            &policy(),
            &fixed(),
            "bilten_analytics",
            Access::ReadWrite,
        )
    }

    #[test]
    fn inserts_of_rows_as_data_into_the_home_database() {
        assert_eq!(
            judged("INSERT INTO bilten_analytics.events (id, name)\nSETTINGS insert_deduplication_token = 'e-1_2', deduplicate_blocks_in_dependent_materialized_views = 1\nFORMAT JSONEachRow\n"),
            Ok(Verdict::Insert {
                statement: "INSERT INTO bilten_analytics.events (id, name) SETTINGS insert_deduplication_token = 'e-1_2', deduplicate_blocks_in_dependent_materialized_views = 1".into(),
                format: "JSONEachRow".into()
            })
        );
        assert_eq!(
            judged("INSERT INTO events FORMAT Native\n"),
            Ok(Verdict::Insert {
                statement: "INSERT INTO bilten_analytics.events".into(),
                format: "Native".into()
            })
        );
        assert!(judged("INSERT INTO bilten_remote.audit_log (at) FORMAT JSONEachRow").is_ok());
    }

    #[test]
    fn inserts_that_evaluate_read_or_land_elsewhere_are_refused() {
        for refused in [
            // The rows of VALUES are expressions; `file(…)` among them.
            "INSERT INTO t FORMAT Values",
            "INSERT INTO t FROM INFILE '/etc/passwd' FORMAT LineAsString",
            "INSERT INTO t SELECT 1",
            "INSERT INTO FUNCTION file('/x', 'CSV') FORMAT CSV",
            "INSERT INTO t\nSETTINGS input_format_record_errors_file_path = '/x'\nFORMAT CSV",
            "INSERT INTO t\nSETTINGS insert_deduplication_token = 'a\\'b'\nFORMAT CSV",
            "INSERT INTO t FORMAT Template",
            "INSERT INTO t FORMAT CapnProto",
            "INSERT INTO bilten_system.audit_log FORMAT JSONEachRow",
            "INSERT INTO bilten_remote.other FORMAT JSONEachRow",
            "INSERT INTO default.t FORMAT JSONEachRow",
            "INSERT INTO `a b` FORMAT JSONEachRow",
            "INSERT INTO t (`a b`) FORMAT JSONEachRow",
        ] {
            let r = judged(refused);
            assert!(
                matches!(&r, Err(e) if e.shape == Shape::Insert && e.to_string().contains("rule: insert")),
                "{refused}: {r:?}"
            );
        }
    }

    #[test]
    fn retention_commands_and_their_neighbours() {
        let ttl = "toDateTime(least(toUInt64(toUnixTimestamp(toDateTime(timestamp))) + 2592000, 4294967295)) TO VOLUME 'cold', toDateTime(least(toUInt64(toUnixTimestamp(toDateTime(timestamp))) + 63072000, 4294967295)) RECOMPRESS CODEC(ZSTD(12)), toDateTime(least(toUInt64(toUnixTimestamp(toDateTime(timestamp))) + 63072000, 4294967295))";
        for ok in [
            format!("ALTER TABLE bilten_analytics.events\n    (MODIFY TTL {ttl})\nSETTINGS materialize_ttl_after_modify = 0"),
            "ALTER TABLE bilten_analytics.events\n    (MODIFY SETTING storage_policy = 'tiered')".into(),
            "ALTER TABLE bilten_analytics.events\n    (REMOVE TTL)".into(),
            "ALTER TABLE bilten_analytics.events\n    (MATERIALIZE TTL)\nSETTINGS mutations_sync = 2".into(),
            "ALTER TABLE bilten_analytics.events\n    (MOVE PART 'all_1_1_0' TO VOLUME 'cold')".into(),
        ] {
            assert!(matches!(judged(&ok), Ok(Verdict::Run(_))), "{ok}");
        }
        for refused in [
            // Another expression in a TTL could call anything.
            "ALTER TABLE bilten_analytics.events\n    (MODIFY TTL toDateTime(file('/etc/passwd')))".to_string(),
            format!("ALTER TABLE bilten_analytics.events\n    (MODIFY TTL {ttl} TO DISK 'backups')"),
            "ALTER TABLE bilten_analytics.events\n    (MODIFY SETTING disk = disk(type = web, endpoint = 'http://x/'))".into(),
            "ALTER TABLE bilten_analytics.events\n    (FREEZE)".into(),
            "ALTER TABLE bilten_analytics.events\n    (MOVE PART 'all_1_1_0' TO DISK 'backups')".into(),
            "ALTER TABLE bilten_analytics.events\n    (REMOVE TTL),\n    (FREEZE)".into(),
            "ALTER TABLE bilten_analytics.events\n    (ADD COLUMN x String DEFAULT file('/etc/passwd'))".into(),
            "ALTER TABLE bilten_analytics.audit_log\n    (REMOVE TTL)".into(),
            "ALTER TABLE bilten_system.backups\n    (REMOVE TTL)".into(),
            "ALTER TABLE bilten_analytics.events\n    (MATERIALIZE TTL)\nSETTINGS mutations_sync = 2, max_threads = 1".into(),
        ] {
            assert!(judged(&refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn deletes_by_parameter_only() {
        assert!(matches!(
            judged(
                "DELETE FROM bilten_analytics.events WHERE (user_id IN ({ids:Array(String)})) AND (organizer_id = {o:String})"
            ),
            Ok(Verdict::Run(_))
        ));
        assert!(judged("DELETE FROM events WHERE user_id = {u:String}").is_ok());
        for refused in [
            "DELETE FROM bilten_analytics.events WHERE user_id = 'x'",
            "DELETE FROM bilten_analytics.events WHERE 1",
            "DELETE FROM bilten_analytics.events WHERE user_id = file('/etc/passwd')",
            "DELETE FROM bilten_system.audit_log WHERE actor = {a:String}",
            "DELETE FROM bilten_analytics.events WHERE (user_id = {u:String}) OR (1 = 1)",
        ] {
            assert!(judged(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn fixed_statements_run_as_written_and_nothing_else_does() {
        assert_eq!(
            judged("CREATE DATABASE IF NOT EXISTS bilten_analytics\n"),
            Ok(Verdict::Run(
                "CREATE DATABASE IF NOT EXISTS bilten_analytics".into()
            ))
        );
        for refused in [
            "CREATE TABLE bilten_analytics.x (a String) ENGINE = MergeTree ORDER BY a",
            "CREATE DATABASE IF NOT EXISTS other",
            "DROP TABLE bilten_analytics.events",
            "TRUNCATE TABLE bilten_analytics.events",
            "SET ROLE bilten_engine",
            "SYSTEM SHUTDOWN",
            "KILL QUERY WHERE 1",
            "BACKUP DATABASE bilten_analytics TO Disk('backups', 'a')",
        ] {
            let r = judged(refused);
            assert!(
                matches!(&r, Err(e) if e.shape == Shape::Fixed && e.to_string().contains("rule: fixed")),
                "{refused}: {r:?}"
            );
        }
    }

    #[test]
    fn url_settings_for_inserts_take_their_values_only() {
        assert!(insert_setting_value("insert_deduplication_token", "abc-1"));
        assert!(!insert_setting_value("insert_deduplication_token", "a'b"));
        assert!(insert_setting_value("async_insert", "0"));
        assert!(!insert_setting_value("async_insert", "2"));
        assert!(insert_setting_value(
            "date_time_input_format",
            "best_effort"
        ));
        assert!(!insert_setting_value(
            "input_format_record_errors_file_path",
            "/x"
        ));
    }
}
