//! Decoding and validation of ingest requests. No HTTP types here: the route
//! hands over the body and its content type, and gets back the rows to
//! buffer and the rejections to report.

mod decode;
pub mod engagement;
mod rows;
pub mod segment;
mod validate;

use serde::Serialize;

pub use decode::{BodyFormat, DecodeError};
pub use validate::{
    Check, EventRow, Host, Invalid, PageViewRow, Row, Source, Stamp, TicketSaleRow, build,
    currency_code,
};

pub use crate::model::Table;

/// Why one event of a request was refused: its index in the request, the
/// field at fault (when one is), and what is wrong with it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rejection {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub reason: String,
    /// A plugin's rejection code, and the plugin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
}

impl Rejection {
    fn structural(index: usize, field: Option<String>, reason: String) -> Self {
        Rejection {
            index,
            field,
            reason,
            code: None,
            plugin: None,
        }
    }
}

/// A request's events once validated: each row with its index in the
/// request, and the rejections so far. The plugin chain works on this.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub rows: Vec<(usize, Row)>,
    pub rejections: Vec<Rejection>,
}

impl Parsed {
    /// Keeps only the rows `keep` accepts; returns how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(&Row) -> bool) -> usize {
        let before = self.rows.len();
        self.rows.retain(|(_, row)| keep(row));
        before - self.rows.len()
    }

    /// Refuses the rows `why` has a reason for (its field and reason), as
    /// rejections of their own; returns how many.
    pub fn refuse(&mut self, why: impl Fn(&Row) -> Option<(&'static str, String)>) -> usize {
        let before = self.rejections.len();
        let rejections = &mut self.rejections;
        self.rows.retain(|(index, row)| match why(row) {
            Some((field, reason)) => {
                rejections.push(Rejection::structural(*index, Some(field.into()), reason));
                false
            }
            None => true,
        });
        self.rejections.len() - before
    }

    /// The JSONEachRow lines to store, with their ids.
    pub fn encode(self) -> Outcome {
        let mut out = Outcome {
            rows: Vec::with_capacity(self.rows.len() * 256),
            rejections: self.rejections,
            ..Outcome::default()
        };
        for (_, row) in &self.rows {
            row.write(&mut out.rows);
            out.ids.push(row.id());
            out.ends.push(out.rows.len());
        }
        out.accepted = out.ids.len();
        out.rejections.sort_by_key(|r| r.index);
        out
    }
}

/// What a request yields: JSONEachRow lines of the accepted events, and the rejections.
#[derive(Debug, Default)]
pub struct Outcome {
    pub rows: Vec<u8>,
    pub accepted: usize,
    pub rejections: Vec<Rejection>,
    /// Each accepted row's event id, and where its line ends in `rows`.
    pub ids: Vec<uuid::Uuid>,
    pub ends: Vec<usize>,
}

/// What identifies a resend: the same event id, for the same organizer and
/// table. Another organizer's event with that id is not a resend of it.
///
/// The organizer is kept as a 64-bit keyed hash (SipHash under a key drawn
/// at start), not as its text: the key is built for every event, and
/// copying and hashing the text was a visible share of the ingest path's
/// CPU. Two organizers' hashes meet with odds of 2^-64, and only matter if
/// they also send the same event id; without the key nobody can aim for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResendKey {
    pub organizer: u64,
    pub table: Table,
    pub id: uuid::Uuid,
}

impl ResendKey {
    pub fn of(table: Table, row: &Row) -> ResendKey {
        Self::new(table, row.organizer_id(), row.id())
    }

    pub fn new(table: Table, organizer_id: &str, id: uuid::Uuid) -> ResendKey {
        use std::hash::BuildHasher;
        static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
        ResendKey {
            organizer: KEY.get_or_init(Default::default).hash_one(organizer_id),
            table,
            id,
        }
    }
}

/// The resend keys of stored JSONEachRow lines (read back from the log),
/// whatever the order of their fields.
pub fn resend_keys(table: Table, rows: &[u8]) -> impl Iterator<Item = ResendKey> + '_ {
    #[derive(serde::Deserialize)]
    struct Key {
        id: uuid::Uuid,
        organizer_id: String,
    }
    rows.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(move |line| {
            let k: Key = serde_json::from_slice(line).ok()?;
            Some(ResendKey::new(table, &k.organizer_id, k.id))
        })
}

/// Validates one event given as a JSON tree: the plugins' sample events.
pub fn revalidate(
    table: Table,
    value: serde_json::Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Row, Invalid> {
    let raw = serde_json::value::to_raw_value(&value).map_err(|e| Invalid::whole(e.to_string()))?;
    validate::validate(table, &raw, now, None)
}

/// Decodes and validates, then encodes the rows: [`parse`] then [`Parsed::encode`].
pub fn process(
    table: Table,
    body: &[u8],
    format: BodyFormat,
    max_events: usize,
    now: chrono::DateTime<chrono::Utc>,
    scope: Option<&[String]>,
) -> Result<Outcome, DecodeError> {
    Ok(parse(table, body, format, max_events, now, scope)?.encode())
}

/// Decodes a body and validates each event on its own. With a `scope` (the
/// organizers an ingest key may write for), events of other organizers are
/// rejected.
pub fn parse(
    table: Table,
    body: &[u8],
    format: BodyFormat,
    max_events: usize,
    now: chrono::DateTime<chrono::Utc>,
    scope: Option<&[String]>,
) -> Result<Parsed, DecodeError> {
    let items = decode::decode(body, format, max_events)?;
    if items.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut out = Parsed {
        rows: Vec::with_capacity(items.len()),
        rejections: Vec::new(),
    };
    for (index, item) in items.into_iter().enumerate() {
        let result = item
            .map_err(|bad| Rejection::structural(index, None, bad.to_string()))
            .and_then(|raw| {
                validate::validate(table, raw, now, scope)
                    .map_err(|e| Rejection::structural(index, e.field, e.reason))
            });
        match result {
            Ok(row) => out.rows.push((index, row)),
            Err(rejection) => out.rejections.push(rejection),
        }
    }
    Ok(out)
}
