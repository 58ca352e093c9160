//! The engine's side of ClickHouse's HTTP interface (`crate::clickhouse_http`
//! maps the whole of it): a session's own connection walled in before
//! anything of the user's is parsed on it, reads run read-only, and writes
//! judged by `clickhouse_http::allow` on the engine's spelling and run as
//! that spelling. Kept beside the engine because it drives its connections.

use super::*;
use crate::clickhouse_http::allow::{self, Verdict};
use crate::clickhouse_http::session::{
    Access, named_format, starts_with_insert, trailing_format, url_setting,
};

/// The most text a session's statement may have (its rows streamed apart).
const MAX_STATEMENT_TEXT: usize = 1 << 20;

impl Inner {
    /// A connection for one session, walled in before anything of the
    /// user's is parsed on it (`clickhouse_http::walls`): a read-only one with the
    /// readers' role, or one like the writer's with the query limits too,
    /// the user's kind's role and the writers' profile, whose constraints
    /// then hold for the connection. The user's settings are its own;
    /// `database` current (this project's when none is named and it exists).
    fn open_session(
        &self,
        role: Option<&str>,
        settings: &[(String, String)],
        database: Option<&str>,
        home: &str,
    ) -> Result<SessionConn<'_>, StorageError> {
        let open = self.conn.read().unwrap();
        if open.is_none() {
            return Err(StorageError::transient("the embedded engine is closed"));
        }
        let mut args = match role {
            None => self.reader_args.clone(),
            Some(_) => {
                let mut a = self.writer_args.clone();
                a.extend(self.limit_args.iter().cloned());
                a.extend(
                    walls::WRITER_START
                        .iter()
                        .map(|(n, v)| format!("--{n}={v}")),
                );
                a
            }
        };
        // Ours win: a setting we pass is not the user's to repeat, except
        // to tighten a limit (clients such as Grafana's send their own
        // `max_execution_time`).
        for (name, value) in settings {
            let prefix = format!("--{name}=");
            match args.iter_mut().find(|a| a.starts_with(&prefix)) {
                Some(ours) => {
                    if tightens(name, value, &ours[prefix.len()..]) {
                        *ours = format!("{prefix}{value}");
                    }
                }
                None => args.push(format!("{prefix}{value}")),
            }
        }
        let Some(conn) = connect(self.api, &args) else {
            return Err(if settings.is_empty() {
                StorageError::transient("the embedded engine refused a session connection")
            } else {
                refusal(36, "BAD_ARGUMENTS", "the engine refused a setting's value")
            });
        };
        let session = SessionConn {
            api: self.api,
            conn,
            _open: open,
        };
        let walled = match role {
            None => vec![format!("SET ROLE {}", walls::READER)],
            Some(role) => vec![
                format!("SET ROLE {role}"),
                format!("SET profile = '{}'", walls::PROFILE),
            ],
        };
        for sql in walled {
            self.query_on(session.raw(), sql.as_bytes(), "TSV", &[], None)
                .map_err(|e| {
                    tracing::error!(error = %e, sql, "a session could not be walled in");
                    StorageError::transient(format!("the session could not be walled in: {e}"))
                })?;
        }
        let name = database.unwrap_or(home);
        if !crate::clickhouse_http::session::database_name(name) {
            return Err(refusal(
                81,
                "UNKNOWN_DATABASE",
                &format!("Database {name:?} does not exist"),
            ));
        }
        let use_db = format!("USE {name}");
        match self.query_on(session.raw(), use_db.as_bytes(), "TSV", &[], None) {
            Ok(_) => Ok(session),
            // Before the first migration this project's database is not
            // there; a client that named none starts in `default`.
            Err(e) if database.is_none() && e.code() == Some(81) => Ok(session),
            Err(e) => Err(e),
        }
    }

    /// One statement of ClickHouse's HTTP interface, on a connection of its
    /// own. Reads run in read-only mode with the readers' role; anything
    /// else must be one of `clickhouse_http::allow`'s shapes, judged on the
    /// engine's spelling of it, and runs as that spelling (an insert's rows
    /// streamed as data) with the user's kind's role.
    pub(super) fn session(&self, req: SessionRequest) -> Result<SessionAnswer, StorageError> {
        for (name, value) in &req.settings {
            if let Err(why) = url_setting(&self.reader_args, req.access, name, value) {
                return Err(refusal(164, "READONLY", &why.to_string()));
            }
            if !self.settings.contains(name) {
                return Err(refusal(
                    115,
                    "UNKNOWN_SETTING",
                    &format!("Unknown setting '{name}'"),
                ));
            }
        }
        let role = match req.access {
            Access::ReadOnly => None,
            Access::ReadWrite => Some(walls::WRITER),
            Access::Backup => Some(walls::BACKUP),
        };
        let open =
            |role| self.open_session(role, &req.settings, req.database.as_deref(), &req.home);
        let mut conn = open(if req.reads_only { None } else { role })?;
        // Rows after `INSERT … FORMAT x` come apart from the statement and
        // are streamed to the engine as data, never parsed as SQL; any other
        // body continues the statement's text.
        let streamed = match (&req.data, trailing_format(&req.sql)) {
            (Some(_), Some((_, format))) if starts_with_insert(&req.sql) => Some(format),
            _ => None,
        };
        // A statement's text, rows streamed apart, is small (the engine
        // parses at most `max_query_size`, 256 KiB by default): a larger one
        // is refused before it is copied and parsed.
        let text_len = req.sql.len()
            + if streamed.is_none() {
                req.data.as_ref().map_or(0, |d| d.len() + 1)
            } else {
                0
            };
        if text_len > MAX_STATEMENT_TEXT {
            return Err(refusal(
                62,
                "SYNTAX_ERROR",
                &format!(
                    "Max query size exceeded: the statement is {text_len} bytes, more than \
                     {MAX_STATEMENT_TEXT}; send an insert's rows after `FORMAT x` and a line \
                     break, or in the body after a `query` parameter"
                ),
            ));
        }
        let text: Vec<u8> = match (&req.data, streamed) {
            (Some(data), None) => [req.sql.as_bytes(), b"\n", data].concat(),
            _ => req.sql.as_bytes().to_vec(),
        };
        // Nothing is run, not even EXPLAIN, before the parser has found
        // exactly one statement: the engine runs `a; b` as two.
        let analysis = self.classify_on(conn.raw(), &text, &req.home)?;
        match analysis.statement_count {
            1 => {}
            // Its message comes from `formatQuery` with the text bound as a
            // parameter, on the read-only connection.
            0 => return Err(self.syntax_error(&String::from_utf8_lossy(&text))),
            _ => {
                return Err(refusal(
                    62,
                    "SYNTAX_ERROR",
                    "Multi-statements are not allowed",
                ));
            }
        }
        let log_text =
            String::from_utf8_lossy(&req.sql.as_bytes()[..req.sql.len().min(QUERY_LOG_TEXT)])
                .into_owned();
        let mut out = if analysis.query_class == QUERY_CLASS_READ_ONLY && streamed.is_none() {
            if role.is_some() && !req.reads_only {
                // Reads run in read-only mode whoever sends them.
                drop(conn);
                conn = open(None)?;
            }
            // Read-only mode and the readers' grants stop table functions
            // that reach files or the network; not the `file` function.
            let explain = [b"EXPLAIN AST ".as_slice(), &text].concat();
            let ast = self.query_on(conn.raw(), &explain, "TSVRaw", &req.params, None)?;
            let ast = String::from_utf8_lossy(&ast.data);
            // A SELECT's tree shows every expression; other reads' may not
            // (a SHOW's WHERE and LIMIT): their spelling is searched too.
            let spelled = match ast.starts_with("SelectWithUnionQuery") {
                true => None,
                false => Some(self.format_query(conn.raw(), &text, None)?),
            };
            if let Some(why) = reaches_host(&ast, &self.table_functions)
                .or_else(|| spelled.as_deref().and_then(hidden_calls))
            {
                return Err(refusal(
                    497,
                    "ACCESS_DENIED",
                    &format!("Not enough privileges: {why}"),
                ));
            }
            self.query_on(
                conn.raw(),
                &text,
                &req.default_format,
                &req.params,
                Some(log_text),
            )?
        } else {
            self.write(&conn, &req, &text, streamed, log_text)?
        };
        self.bounded(&mut out)?;
        Ok(SessionAnswer {
            format: named_format(&req.sql).unwrap_or(req.default_format),
            read_rows: out.read_rows,
            read_bytes: out.read_bytes,
            written_rows: out.written_rows,
            elapsed_ns: (out.elapsed * 1e9) as u64,
            body: out.data,
        })
    }

    /// The engine's result limit counts blocks it reads, not the answer: a
    /// statement without a table (`SELECT randomString(…)`) or a format
    /// that grows its data (JSON's escapes) passes it. The answer itself is
    /// held to the same limit.
    pub(super) fn bounded(&self, out: &mut Output) -> Result<(), StorageError> {
        if out.data.len() as u64 > self.max_answer {
            let len = out.data.len();
            out.data = Vec::new();
            return Err(refusal(
                396,
                "TOO_MANY_ROWS_OR_BYTES",
                &format!(
                    "Limit for result exceeded, max bytes: {} (the answer is {len} bytes)",
                    self.max_answer
                ),
            ));
        }
        Ok(())
    }

    /// A statement that is no read: judged by `clickhouse_http::allow` on the
    /// engine's spelling, then run as that spelling, or its rows streamed.
    fn write(
        &self,
        conn: &SessionConn<'_>,
        req: &SessionRequest,
        text: &[u8],
        streamed: Option<&str>,
        log_text: String,
    ) -> Result<Output, StorageError> {
        if req.access == Access::ReadOnly {
            return Err(refusal(
                164,
                "READONLY",
                "Cannot execute query in readonly mode: this user may only read",
            ));
        }
        if req.reads_only {
            return Err(refusal(
                164,
                "READONLY",
                "Cannot execute query in readonly mode: a GET request or readonly=1 only \
                 reads; use POST",
            ));
        }
        let run = |sql: &[u8], params: &[(String, String)]| {
            self.query_on(
                conn.raw(),
                sql,
                &req.default_format,
                params,
                Some(log_text.clone()),
            )
        };
        // A test's stand-in for a parser bypass: the statement runs as sent,
        // and only the engine's walls (`clickhouse_http::walls`) stand in its way.
        if fail::eval("interface::parser_bypass", |_| ()).is_some() {
            return run(text, &req.params);
        }
        let formatted = self.format_query(conn.raw(), text, None)?;
        let fixed = req
            .policy
            .formatted(|sql| self.format_query(conn.raw(), sql.as_bytes(), None))?;
        let current = req.database.as_deref().unwrap_or(&req.home);
        let verdict = allow::judge(&formatted, &req.policy, fixed, current, req.access)
            .map_err(|r| refusal(497, "ACCESS_DENIED", &format!("Not enough privileges: {r}")))?;
        match verdict {
            Verdict::Insert { statement, format } => match (&req.data, streamed) {
                (Some(rows), Some(_)) => self.stream(conn.raw(), statement, &format, rows),
                // Rows inline, in the data format the engine's parser found:
                // the engine reads them as that format.
                _ => run(text, &[]),
            },
            Verdict::Run(sql) => run(sql.as_bytes(), &req.params),
            Verdict::RestoreAs { sql, database } => {
                // Only into a new database, so no other data mixes in.
                let out = self.query_on(
                    conn.raw(),
                    b"SELECT count() FROM system.databases WHERE name = {d:String}",
                    "TSVRaw",
                    &[("d".to_string(), database.clone())],
                    None,
                )?;
                if String::from_utf8_lossy(&out.data).trim() != "0" {
                    return Err(refusal(
                        497,
                        "ACCESS_DENIED",
                        &format!(
                            "Not enough privileges: database {database} exists; restore into a \
                             new one (rule: backup)"
                        ),
                    ));
                }
                run(sql.as_bytes(), &[])
            }
        }
    }
}

/// An error in the engine's own words and code, for the interface's clients.
/// Whether a user's `theirs` for the limit `name` is tighter than `ours`
/// as the engine reads it. The engine keeps time in whole microseconds and
/// byte counts in whole bytes, and reads 0 as no limit at all: so a time
/// under a millisecond (`1e-7` became 0) or a count under one byte would
/// lift the limit it claims to tighten. Those keep ours.
fn tightens(name: &str, theirs: &str, ours: &str) -> bool {
    match name {
        "max_execution_time" => match (theirs.parse::<f64>(), ours.parse::<f64>()) {
            (Ok(t), Ok(o)) => t.is_finite() && t >= 0.001 && t < o,
            _ => false,
        },
        _ => match (theirs.parse::<u64>(), ours.parse::<u64>()) {
            (Ok(t), Ok(o)) => t >= 1 && t < o,
            _ => false,
        },
    }
}

fn refusal(code: u32, name: &str, message: &str) -> StorageError {
    StorageError::rejected(format!("Code: {code}. DB::Exception: {message}. ({name})"))
}

#[cfg(test)]
mod tests {
    use super::tightens;

    /// A value the engine would read as 0 (no limit) never replaces ours.
    #[test]
    fn a_limit_only_tightens_as_the_engine_reads_it() {
        for (name, theirs, ours, want) in [
            ("max_execution_time", "1", "30", true),
            ("max_execution_time", "0.5", "30", true),
            ("max_execution_time", "0.001", "30", true),
            ("max_execution_time", "0.0000001", "30", false),
            ("max_execution_time", "1e-300", "30", false),
            ("max_execution_time", "0", "30", false),
            ("max_execution_time", "-1", "30", false),
            ("max_execution_time", "NaN", "30", false),
            ("max_execution_time", "60", "30", false),
            ("max_memory_usage", "1000", "1000000", true),
            ("max_memory_usage", "0.5", "1000000", false),
            ("max_memory_usage", "0", "1000000", false),
            ("max_result_bytes", "1e3", "1000000", false),
            ("max_result_bytes", "2000000", "1000000", false),
        ] {
            assert_eq!(
                tightens(name, theirs, ours),
                want,
                "{name}={theirs} vs {ours}"
            );
        }
    }
}
