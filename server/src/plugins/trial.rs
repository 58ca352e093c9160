//! A plugin tried outside a server, in the same sandbox and limits: what
//! `bilten-analytics plugin check` and `plugin test` report.
//!
//! - [`inspect`]: the file's size, the contract it implements, its exports
//!   and imports (refused past the WASI the sandbox allows), and its name
//!   and version.
//! - [`run`]: events through it, each verdict as the chain would apply it
//!   (a modification revalidated, with its changes), and the time per event.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::chain::{self, Decision};
use super::host::{Compiled, Fault, Host, Limits};
use crate::ingest::Row;
use crate::model::Table;

/// What a plugin may import: the contract's types, and WASI 0.2, which the
/// sandbox links with nothing granted (no directories, no environment, no
/// network). Sockets are allowed to be imported (Python's runtime always
/// does) and cannot connect. Anything else, `wasi:http` included, is refused.
const ALLOWED_IMPORTS: &[&str] = &[
    "bilten:plugin/types@",
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
];

/// Whether the sandbox gives a plugin this import.
pub fn import_allowed(name: &str) -> bool {
    ALLOWED_IMPORTS.iter().any(|p| name.starts_with(p))
}

/// What `check` found.
#[derive(Debug)]
pub struct Inspection {
    pub bytes: usize,
    pub exports: Vec<String>,
    /// Each import, and whether the sandbox allows it.
    pub imports: Vec<(String, bool)>,
    /// `bilten:plugin/validator@…`'s version.
    pub contract: Option<String>,
}

impl Inspection {
    pub fn refused_imports(&self) -> Vec<&str> {
        self.imports
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// Reads a compiled component's interface, before it is linked or run.
pub fn inspect(
    host: &Host,
    component: &wasmtime::component::Component,
    bytes: usize,
) -> Inspection {
    let (exports, imports) = host.interface(component);
    let contract = exports
        .iter()
        .find_map(|e| e.strip_prefix(super::host::EXPORT)?.strip_prefix('@'))
        .map(str::to_string);
    Inspection {
        bytes,
        imports: imports
            .into_iter()
            .map(|i| {
                let ok = import_allowed(&i);
                (i, ok)
            })
            .collect(),
        exports,
        contract,
    }
}

/// What became of one event.
#[derive(Debug)]
pub enum Outcome {
    Keep,
    /// The changed fields: name, before, after (as stored).
    Modify(Vec<(String, Value, Value)>),
    Drop,
    Reject {
        code: String,
        field: Option<String>,
        message: String,
    },
}

/// A batch through the plugin.
#[derive(Debug)]
pub struct Trial {
    /// The plugin's name and version.
    pub name: String,
    pub version: String,
    /// One per event, in order; or the fault that sank the batch.
    pub outcomes: Result<Vec<Outcome>, Fault>,
    /// What it wrote to stdout and stderr.
    pub output: String,
    /// The first call (instantiate, `init`, `process`) and the median of the
    /// calls after it, whole batch.
    pub first: Duration,
    pub median: Duration,
    pub rounds: usize,
}

/// Runs `rows` through the plugin as one batch, `rounds` times (at least
/// once), under `limits`; the verdicts are those of the first call.
pub fn run(
    host: &Host,
    plugin: &Compiled,
    config_json: &str,
    rows: &[(Table, Row)],
    limits: Limits,
    rounds: usize,
) -> Trial {
    let batch = chain::batch_of(rows.iter().map(|(_, r)| r));
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut times = Vec::with_capacity(rounds.max(1));
    let mut first = None;
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        let (result, output) = host.call(plugin, config_json, &batch, limits, now_ms, true);
        times.push(started.elapsed());
        if first.is_none() {
            first = Some((result, output));
        }
    }
    let (result, output) = first.expect("called at least once");
    let output = String::from_utf8_lossy(&output.text).into_owned();
    let (name, version, outcomes) = match result {
        Err(fault) => (String::new(), String::new(), Err(fault)),
        Ok((info, verdicts)) => {
            let (name, version) = info.map(|i| (i.name, i.version)).unwrap_or_default();
            let outcomes = rows
                .iter()
                .zip(verdicts)
                .map(|((table, row), verdict)| {
                    let ids = [(row.id(), row.organizer_id())];
                    let decision = chain::decide(*table, &ids, vec![verdict], usize::MAX)?
                        .pop()
                        .expect("one verdict, one decision");
                    Ok(match decision {
                        Decision::Keep => Outcome::Keep,
                        Decision::Drop => Outcome::Drop,
                        Decision::Reject(r) => Outcome::Reject {
                            code: r.code,
                            field: r.field,
                            message: r.message,
                        },
                        Decision::Modify(after) => Outcome::Modify(changes(row, &after)),
                    })
                })
                .collect::<Result<Vec<_>, Fault>>();
            (name, version, outcomes)
        }
    };
    let first = times[0];
    let mut later = times[1..].to_vec();
    later.sort();
    let median = later.get(later.len() / 2).copied().unwrap_or(first);
    Trial {
        name,
        version,
        outcomes,
        output,
        first,
        median,
        rounds: times.len(),
    }
}

/// The fields that differ between two rows, as stored.
fn changes(before: &Row, after: &Row) -> Vec<(String, Value, Value)> {
    let as_map = |row: &Row| -> serde_json::Map<String, Value> {
        let mut line = Vec::new();
        row.write(&mut line);
        serde_json::from_slice(&line).expect("a stored row is a JSON object")
    };
    let (a, mut b) = (as_map(before), as_map(after));
    let mut out: Vec<(String, Value, Value)> = a
        .into_iter()
        .filter_map(|(k, old)| {
            let new = b.remove(&k).unwrap_or(Value::Null);
            (new != old).then_some((k, old, new))
        })
        .collect();
    out.extend(b.into_iter().map(|(k, new)| (k, Value::Null, new)));
    out
}

/// Why `plugin test --events` cannot use a file's events.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("not a JSON array of events: {0}")]
    NotAnArray(#[from] serde_json::Error),
    #[error("event {index}: table {name:?}: events, page_views or ticket_sales")]
    UnknownTable { index: usize, name: String },
    #[error("event {index}: table must be a string, got {got}")]
    TableNotText { index: usize, got: Value },
    #[error("event {index} is not valid before any plugin: {}", .invalid.reason)]
    Invalid {
        index: usize,
        invalid: crate::ingest::Invalid,
    },
}

/// Events from a JSON array; an item's `"table"` (`events`, `page_views`,
/// `ticket_sales`; `events` when absent) says where it goes. Each is
/// validated as a client's would be.
pub fn events_from_json(text: &str) -> Result<Vec<(Table, Row)>, EventsError> {
    let items: Vec<Value> = serde_json::from_str(text)?;
    let now = chrono::Utc::now();
    items
        .into_iter()
        .enumerate()
        .map(|(i, mut item)| {
            let table = match item.as_object_mut().and_then(|o| o.remove("table")) {
                None => Table::Events,
                Some(Value::String(t)) => Table::INGEST
                    .into_iter()
                    .find(|x| x.name() == t)
                    .ok_or(EventsError::UnknownTable { index: i, name: t })?,
                Some(got) => return Err(EventsError::TableNotText { index: i, got }),
            };
            let row = crate::ingest::revalidate(table, item, now)
                .map_err(|invalid| EventsError::Invalid { index: i, invalid })?;
            Ok((table, row))
        })
        .collect()
}

/// The report `plugin test` prints.
pub fn report(trial: &Trial, rows: &[(Table, Row)]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let per_event = |d: Duration| d.as_secs_f64() * 1e6 / rows.len().max(1) as f64;
    if !trial.name.is_empty() {
        let _ = writeln!(out, "plugin {} {}", trial.name, trial.version);
    }
    match &trial.outcomes {
        Err(fault) => {
            let _ = writeln!(out, "FAULT: {fault}");
        }
        Ok(outcomes) => {
            for (i, ((table, row), outcome)) in rows.iter().zip(outcomes).enumerate() {
                let what = match row {
                    Row::Event(r) => r.event_type.clone(),
                    Row::PageView(r) => r.url.clone(),
                    Row::TicketSale(r) => format!("{} × {} {}", r.quantity, r.price, r.currency),
                };
                let verdict = match outcome {
                    Outcome::Keep => "keep".to_string(),
                    Outcome::Drop => "drop".to_string(),
                    Outcome::Reject {
                        code,
                        field,
                        message,
                    } => match field {
                        Some(f) => format!("reject {code} ({f}): {message}"),
                        None => format!("reject {code}: {message}"),
                    },
                    Outcome::Modify(changes) => {
                        let mut text = String::from("modify");
                        for (field, before, after) in changes {
                            let _ = write!(text, "\n      {field}: {before} → {after}");
                        }
                        text
                    }
                };
                let _ = writeln!(out, "  {i:>3} {:<13} {what}: {verdict}", table.name());
            }
        }
    }
    if !trial.output.trim().is_empty() {
        let _ = writeln!(out, "output:\n{}", trial.output.trim_end());
    }
    let _ = writeln!(
        out,
        "time: first call {:.2} µs per event; median of {} more {:.2} µs per event ({} events a batch, \
         instantiation and init included)",
        per_event(trial.first),
        trial.rounds - 1,
        per_event(trial.median),
        rows.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_beyond_wasi_are_refused() {
        for ok in [
            "bilten:plugin/types@1.0.0",
            "wasi:cli/stdout@0.2.6",
            "wasi:random/random@0.2.12",
            "wasi:sockets/tcp@0.2.9",
        ] {
            assert!(import_allowed(ok), "{ok}");
        }
        for refused in [
            "wasi:http/outgoing-handler@0.2.0",
            "wasi:http/types@0.2.0",
            "acme:db/query",
            "bilten:plugin/admin@1.0.0",
        ] {
            assert!(!import_allowed(refused), "{refused}");
        }
    }
}
