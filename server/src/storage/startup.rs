//! Starting the embedded engine when a table cannot load.
//!
//! The engine loads every table when it starts, and one table that fails
//! (a disk whose endpoint is gone, say) stops the whole engine: no
//! connection, so no replay of the log and no server. Such a table is set
//! aside the way the engine itself detaches a table for good (its
//! definition `<table>.sql` renamed `<table>.sql.detached`), the start is
//! tried again, and what was set aside is kept in `set-aside-tables.json`
//! beside the engine's data, for `/admin/health` to report with how to drop
//! it.
//!
//! The engine says which table failed only on its standard error, so that
//! is read (and passed on) while it starts.

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A table the engine could not load, set aside so that it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAside {
    /// `database.table`.
    pub table: String,
    /// The engine's error.
    pub error: String,
    /// Its definition, renamed: delete it to drop the table for good, or
    /// rename it back (without `.detached`) and restart to try again.
    pub definition: PathBuf,
    pub at: String,
    /// What to do about it, in a sentence.
    pub how_to_drop: String,
}

const REPORT: &str = "set-aside-tables.json";

/// Runs `start` with the process's standard error captured in the file
/// `into` (removed after): its result, and what was written meanwhile
/// (also copied to the real standard error).
pub fn capturing_stderr<T>(into: &Path, start: impl FnOnce() -> T) -> (T, String) {
    let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(into)
    else {
        return (start(), String::new());
    };
    let _ = std::fs::remove_file(into);
    // SAFETY: plain descriptor juggling; 2 is restored before returning.
    let saved = unsafe { libc::dup(2) };
    if saved < 0 || unsafe { libc::dup2(file.as_raw_fd(), 2) } < 0 {
        if saved >= 0 {
            unsafe { libc::close(saved) };
        }
        return (start(), String::new());
    }
    let out = start();
    unsafe {
        libc::dup2(saved, 2);
        libc::close(saved);
    }
    let mut text = String::new();
    if file.rewind().is_ok() {
        let _ = file.read_to_string(&mut text);
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
    (out, text)
}

/// `database.table` of every table the engine says it could not load
/// (`Load job 'load table db.t' failed`).
pub fn failed_tables(stderr: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in stderr.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("Load job 'load table ") {
            let after = &rest[at + "Load job 'load table ".len()..];
            let Some(end) = after.find('\'') else { break };
            let name = after[..end].to_string();
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, line.trim().to_string()));
            }
            rest = &after[end..];
        }
    }
    out
}

/// Why a table could not be set aside.
#[derive(Debug, thiserror::Error)]
pub enum SetAsideError {
    #[error("{0}: not a database.table name")]
    NotATable(String),
    #[error("{0}: only tables with plain names can be set aside automatically")]
    NotPlain(String),
    #[error("{}: cannot set it aside: {source}", .path.display())]
    Rename {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Sets `database.table` aside under `engine_dir` (renames its definition);
/// the record of it, or why it could not be done.
pub fn set_aside(engine_dir: &Path, table: &str, error: &str) -> Result<SetAside, SetAsideError> {
    let (db, name) = table
        .split_once('.')
        .ok_or_else(|| SetAsideError::NotATable(table.to_string()))?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !plain(db) || !plain(name) {
        return Err(SetAsideError::NotPlain(table.to_string()));
    }
    let definition = engine_dir
        .join("metadata")
        .join(db)
        .join(format!("{name}.sql"));
    let detached = definition.with_extension("sql.detached");
    std::fs::rename(&definition, &detached).map_err(|source| SetAsideError::Rename {
        path: definition.clone(),
        source,
    })?;
    Ok(SetAside {
        table: table.to_string(),
        error: error.to_string(),
        how_to_drop: format!(
            "the table {table} could not load and was detached so the engine could start; to \
             drop it for good, delete {} while the server is stopped; to try it again, rename it \
             to {} and restart",
            detached.display(),
            definition.display()
        ),
        definition: detached,
        at: chrono::Utc::now().to_rfc3339(),
    })
}

/// Appends `entry` to the report in `data_dir`.
pub fn record(data_dir: &Path, entry: SetAside) {
    let mut all = report(data_dir);
    all.retain(|e| e.table != entry.table);
    all.push(entry);
    let path = data_dir.join(REPORT);
    let written = serde_json::to_vec_pretty(&all)
        .map_err(std::io::Error::other)
        .and_then(|bytes| crate::files::write_private(&path, &bytes));
    if let Err(e) = written {
        tracing::error!(path = %path.display(), error = %e, "could not record a set-aside table");
    }
}

/// Tables set aside whose definitions are still set aside (an operator who
/// deleted or restored one is done with it).
pub fn report(data_dir: &Path) -> Vec<SetAside> {
    let Ok(bytes) = std::fs::read(data_dir.join(REPORT)) else {
        return Vec::new();
    };
    let all: Vec<SetAside> = serde_json::from_slice(&bytes).unwrap_or_default();
    all.into_iter().filter(|e| e.definition.exists()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failed_table_is_read_from_the_engine_error() {
        let text = "Logging errors to x\nCode: 722. DB::Exception: Waited job failed: Code: 695. \
                    DB::Exception: Load job 'load table bilten_analytics.w' failed: \
                    Poco::Exception. Code: 1000, e.code() = 111, Connection refused,. \
                    (ASYNC_LOAD_WAIT_FAILED)\n";
        let found = failed_tables(text);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "bilten_analytics.w");
        assert!(found[0].1.contains("Connection refused"));
        assert!(failed_tables("no such thing").is_empty());
    }

    #[test]
    fn a_definition_is_renamed_and_reported_until_it_is_dealt_with() {
        let dir = tempfile::tempdir().unwrap();
        let engine = dir.path().join("engine");
        std::fs::create_dir_all(engine.join("metadata/db1")).unwrap();
        std::fs::write(engine.join("metadata/db1/w.sql"), "ATTACH TABLE _").unwrap();
        let entry = set_aside(&engine, "db1.w", "boom").unwrap();
        assert!(engine.join("metadata/db1/w.sql.detached").exists());
        assert!(!engine.join("metadata/db1/w.sql").exists());
        assert!(
            entry.how_to_drop.contains("delete"),
            "{}",
            entry.how_to_drop
        );
        record(dir.path(), entry.clone());
        assert_eq!(report(dir.path()), vec![entry]);
        std::fs::remove_file(engine.join("metadata/db1/w.sql.detached")).unwrap();
        assert!(report(dir.path()).is_empty());
        assert!(set_aside(&engine, "db1.../x", "e").is_err());
    }
}
