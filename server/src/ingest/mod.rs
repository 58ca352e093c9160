//! Decoding and validation of ingest requests. No HTTP types here: the route
//! hands over the body and its content type, and gets back the rows to
//! buffer and the rejections to report.

mod decode;
mod validate;

use serde::Serialize;

pub use decode::{BodyFormat, DecodeError};

/// The three kinds of rows clients send, each with its route and table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Events,
    PageViews,
    TicketSales,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Events, Table::PageViews, Table::TicketSales];

    /// The last part of its ingest route, `/v1/<route>`.
    pub fn route(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::PageViews => "page-views",
            Table::TicketSales => "ticket-sales",
        }
    }

    pub fn from_route(route: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.route() == route)
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::PageViews => "page_views",
            Table::TicketSales => "ticket_sales",
        }
    }
}

/// Why one event of a request was refused: its index in the request, the
/// field at fault (when one is), and what is wrong with it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rejection {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub reason: String,
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

impl Outcome {
    /// Keeps only the rows whose id `keep` accepts; returns how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(&uuid::Uuid) -> bool) -> usize {
        let mut rows = Vec::with_capacity(self.rows.len());
        let (mut ids, mut ends) = (Vec::new(), Vec::new());
        let mut start = 0;
        for (id, end) in self.ids.iter().zip(&self.ends) {
            if keep(id) {
                rows.extend_from_slice(&self.rows[start..*end]);
                ids.push(*id);
                ends.push(rows.len());
            }
            start = *end;
        }
        let dropped = self.ids.len() - ids.len();
        (self.rows, self.ids, self.ends, self.accepted) =
            (rows, ids, ends, self.accepted - dropped);
        dropped
    }
}

/// An event's organizer must be one the key may write for.
fn in_scope(value: &serde_json::Value, scope: Option<&[String]>) -> Result<(), String> {
    let (Some(scope), Some(org)) = (scope, value.get("organizer_id").and_then(|o| o.as_str()))
    else {
        return Ok(());
    };
    if scope.iter().any(|s| s == org) {
        Ok(())
    } else {
        Err(format!(
            "organizer_id: this API key may not write events for organizer {org:?}"
        ))
    }
}

/// The event ids in JSONEachRow rows this module wrote (each line starts
/// with its `id`).
pub fn row_ids(rows: &[u8]) -> impl Iterator<Item = uuid::Uuid> + '_ {
    rows.split(|b| *b == b'\n')
        .filter_map(|line| line.strip_prefix(b"{\"id\":\"")?.get(..36))
        .filter_map(|id| uuid::Uuid::try_parse_ascii(id).ok())
}

/// Decodes a body and validates each event on its own. With a `scope` (the
/// organizers an ingest key may write for), events of other organizers are
/// rejected.
pub fn process(
    table: Table,
    body: &[u8],
    format: BodyFormat,
    max_events: usize,
    now: chrono::DateTime<chrono::Utc>,
    scope: Option<&[String]>,
) -> Result<Outcome, DecodeError> {
    let items = decode::decode(body, format)?;
    if items.is_empty() {
        return Err(DecodeError::Empty);
    }
    if items.len() > max_events {
        return Err(DecodeError::TooManyEvents {
            got: items.len(),
            max: max_events,
        });
    }
    let mut out = Outcome {
        rows: Vec::with_capacity(body.len()),
        ..Outcome::default()
    };
    for (index, item) in items.into_iter().enumerate() {
        let result = item
            .map_err(|reason| Rejection {
                index,
                field: None,
                reason,
            })
            .and_then(|value| {
                in_scope(&value, scope)
                    .map(|()| value)
                    .map_err(|reason| Rejection {
                        index,
                        field: Some("organizer_id".into()),
                        reason,
                    })
            })
            .and_then(|value| {
                validate::validate(table, value, now, &mut out.rows).map_err(|(field, reason)| {
                    Rejection {
                        index,
                        field,
                        reason,
                    }
                })
            });
        match result {
            Ok(id) => {
                out.accepted += 1;
                out.ids.push(id);
                out.ends.push(out.rows.len());
            }
            Err(rejection) => out.rejections.push(rejection),
        }
    }
    Ok(out)
}
