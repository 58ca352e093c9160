//! What the data is: the tables, as the rest of the server names them, and
//! the one declaration of each client table's fields ([`Table::fields`]):
//! validation takes its rules from it, metric labels and the plugin batch
//! layout are checked against it, and a test holds it to `sql/`.
//! A leaf: it imports no other module of this crate, so configuration,
//! ingest, storage and operations can all depend on it.

use serde::Serialize;

/// The ClickHouse database every table and view lives in.
pub const DATABASE: &str = "bilten_analytics";

/// This server's own records (the audit log, the backup catalog, the
/// migration records, the query log), apart from the data: a restore of
/// the data does not roll them back, and no user of ClickHouse's HTTP
/// interface may write them.
pub const SYSTEM_DATABASE: &str = "bilten_system";

/// Where a `clickhouse` backend keeps its records when its ClickHouse is
/// another server's HTTP interface, which keeps `bilten_system` to itself.
pub const GUEST_SYSTEM_DATABASE: &str = "bilten_remote";

/// The tables of a system database (`ops::records` declares them).
pub const RECORD_TABLES: &[&str] = &[
    "schema_migrations",
    "migration_lock",
    "audit_log",
    "backups",
];

/// A database name we accept from configuration or a request: letters,
/// digits and `_` only, so it never needs quoting in a statement.
pub fn plain_identifier(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The tables rows are buffered for: the three kinds clients send, each with
/// its route, and the two the plugin chain writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Events,
    PageViews,
    TicketSales,
    RejectedEvents,
    PluginQuarantine,
}

impl Table {
    pub const ALL: [Table; 5] = [
        Table::Events,
        Table::PageViews,
        Table::TicketSales,
        Table::RejectedEvents,
        Table::PluginQuarantine,
    ];
    /// The tables clients write to.
    pub const INGEST: [Table; 3] = [Table::Events, Table::PageViews, Table::TicketSales];

    /// The last part of its ingest route, `/v1/<route>`.
    pub fn route(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::PageViews => "page-views",
            Table::TicketSales => "ticket-sales",
            Table::RejectedEvents => "rejected-events",
            Table::PluginQuarantine => "plugin-quarantine",
        }
    }

    pub fn from_route(route: &str) -> Option<Table> {
        Table::INGEST.into_iter().find(|t| t.route() == route)
    }

    /// The fields clients send for this table, in column order (none for
    /// the tables the server writes itself).
    pub fn fields(self) -> &'static [Field] {
        match self {
            Table::Events => EVENTS,
            Table::PageViews => PAGE_VIEWS,
            Table::TicketSales => TICKET_SALES,
            Table::RejectedEvents | Table::PluginQuarantine => &[],
        }
    }

    /// One of its fields, by name.
    pub fn field(self, name: &str) -> Option<&'static Field> {
        self.fields().iter().find(|f| f.name == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::PageViews => "page_views",
            Table::TicketSales => "ticket_sales",
            Table::RejectedEvents => "rejected_events",
            Table::PluginQuarantine => "plugin_quarantine",
        }
    }
}

/// The tables under retention, and the time each one's rows are aged by.
pub const AGED_TABLES: &[(&str, &str)] = &[
    ("events", "toDateTime(timestamp)"),
    ("page_views", "toDateTime(timestamp)"),
    ("ticket_sales", "toDateTime(timestamp)"),
    ("metrics_daily", "toDateTime(date)"),
    ("events_hourly", "hour"),
    ("event_performance", "toDateTime(date)"),
    ("user_funnel", "toDateTime(date)"),
    ("realtime_dashboard", "interval_start"),
    ("dashboard_sketches", "toDateTime(date)"),
];

/// What a field holds, and so how a client's value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A UUID; a time-ordered one is made when it is absent.
    Id,
    /// RFC 3339 text or epoch milliseconds, years 2000 to 2099; now when absent.
    Time,
    /// Text of at most this many characters.
    Text(usize),
    /// Letters, digits and `_ - . :`, at most this many.
    Name(usize),
    /// A JSON object, at most this many bytes as JSON; stored as its text.
    Object(usize),
    /// A whole number from the first to the second.
    Count(u64, u64),
    /// Money: a decimal with at most two places, below 10^16.
    Money,
    /// A three-letter ISO 4217 code, stored in capitals.
    Currency,
}

/// One field of a client table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    /// Absent, null or empty is refused.
    pub required: bool,
    /// Its column's type in `sql/`.
    pub column: &'static str,
}

/// Columns the server fills itself, in every client table.
pub const SERVER_COLUMNS: &[(&str, &str)] = &[
    ("received_at", "DateTime64(3, 'UTC')"),
    ("plugins_skipped", "Array(LowCardinality(String))"),
];

const ID_LEN: usize = 256;
const TEXT_LEN: usize = 1024;
const URL_LEN: usize = 8192;
const IP_LEN: usize = 64;

const fn field(name: &'static str, kind: Kind, required: bool, column: &'static str) -> Field {
    Field {
        name,
        kind,
        required,
        column,
    }
}

const ID: Field = field("id", Kind::Id, false, "UUID");
const TIMESTAMP: Field = field("timestamp", Kind::Time, false, "DateTime64(3, 'UTC')");
const ORGANIZER: Field = field("organizer_id", Kind::Text(ID_LEN), true, "String");
const USER: Field = field("user_id", Kind::Text(ID_LEN), false, "String");
const SESSION: Field = field("session_id", Kind::Text(ID_LEN), false, "String");
const EVENT_ID: Field = field("event_id", Kind::Text(ID_LEN), false, "String");
const USER_AGENT: Field = field("user_agent", Kind::Text(TEXT_LEN), false, "String");
const IP: Field = field("ip", Kind::Text(IP_LEN), false, "String");

const EVENTS: &[Field] = &[
    ID,
    TIMESTAMP,
    field("event_type", Kind::Name(64), true, "LowCardinality(String)"),
    field("event_name", Kind::Text(TEXT_LEN), false, "String"),
    ORGANIZER,
    USER,
    SESSION,
    EVENT_ID,
    field("properties", Kind::Object(64 * 1024), false, "String"),
    USER_AGENT,
    IP,
];

const PAGE_VIEWS: &[Field] = &[
    ID,
    TIMESTAMP,
    ORGANIZER,
    USER,
    SESSION,
    EVENT_ID,
    field("url", Kind::Text(URL_LEN), true, "String"),
    field("referrer", Kind::Text(URL_LEN), false, "String"),
    // One day: a longer time on one page is a broken tracker.
    field("duration_ms", Kind::Count(0, 86_400_000), false, "UInt32"),
    USER_AGENT,
    IP,
];

const TICKET_SALES: &[Field] = &[
    ID,
    TIMESTAMP,
    field("event_id", Kind::Text(ID_LEN), true, "String"),
    ORGANIZER,
    USER,
    field("order_id", Kind::Text(ID_LEN), false, "String"),
    field("quantity", Kind::Count(1, 10_000), true, "UInt32"),
    field("price", Kind::Money, true, "Decimal(18, 2)"),
    field("currency", Kind::Currency, true, "LowCardinality(String)"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_table_has_its_id_time_and_organizer() {
        for table in Table::INGEST {
            for name in ["id", "timestamp", "organizer_id"] {
                assert!(table.field(name).is_some(), "{} lacks {name}", table.name());
            }
            let mut names: Vec<&str> = table.fields().iter().map(|f| f.name).collect();
            names.sort();
            names.dedup();
            assert_eq!(
                names.len(),
                table.fields().len(),
                "a field twice in {}",
                table.name()
            );
        }
    }
}
