//! What the data is: the tables, as the rest of the server names them, each
//! client table's fields from the one declaration (`bilten_schema`,
//! [`Table::fields`]), and the databases.
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

/// Tenants' records shared by every server of a store: keys and
/// organizers, as sealed,
/// append-only rows (`tenants::store` declares the tables). Users of the
/// ClickHouse HTTP interface may read them and add rows, never change or
/// delete one (`clickhouse_http::walls`); a row without this deployment's
/// seal is ignored.
pub const CONTROL_DATABASE: &str = "bilten_control";

/// The tables of [`CONTROL_DATABASE`], each with the columns a row sets
/// (the rest are the engine's: when it was written). An insert through
/// the interface names exactly these, so nobody dates a row.
pub const CONTROL_TABLES: &[(&str, &str)] = &[
    ("keys", "id, version, body, seal"),
    ("organizers", "id, version, body, seal"),
    ("sessions", "id, version, body, seal"),
    ("key_use", "id, used_ms"),
];

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
/// its route, the four the plugin chain writes, and pages' engagements
/// (the time a view was visible, sent when it is hidden or left), and the
/// visits the server writes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Events,
    PageViews,
    TicketSales,
    RejectedEvents,
    PluginQuarantine,
    FilteredTraffic,
    PageEngagements,
    Visits,
    FilteredEvents,
}

impl Table {
    pub const ALL: [Table; 9] = [
        Table::Events,
        Table::PageViews,
        Table::TicketSales,
        Table::RejectedEvents,
        Table::PluginQuarantine,
        Table::FilteredTraffic,
        Table::PageEngagements,
        Table::Visits,
        Table::FilteredEvents,
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
            Table::FilteredTraffic => "filtered-traffic",
            Table::PageEngagements => "engagements",
            Table::Visits => "visits",
            Table::FilteredEvents => "filtered-events",
        }
    }

    pub fn from_route(route: &str) -> Option<Table> {
        Table::INGEST.into_iter().find(|t| t.route() == route)
    }

    /// Its declaration (`bilten_schema`), for the tables clients write.
    pub fn client(self) -> Option<&'static ClientTable> {
        match self {
            Table::Events => Some(&bilten_schema::EVENTS),
            Table::PageViews => Some(&bilten_schema::PAGE_VIEWS),
            Table::TicketSales => Some(&bilten_schema::TICKET_SALES),
            Table::RejectedEvents
            | Table::PluginQuarantine
            | Table::FilteredTraffic
            | Table::PageEngagements
            | Table::Visits
            | Table::FilteredEvents => None,
        }
    }

    /// The fields clients send for this table, in column order (none for
    /// the tables the server writes itself).
    pub fn fields(self) -> &'static [Field] {
        self.client().map_or(&[], |t| t.fields)
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
            Table::FilteredTraffic => "filtered_traffic",
            Table::PageEngagements => "page_engagements",
            Table::Visits => "visits",
            Table::FilteredEvents => "filtered_events",
        }
    }
}

/// The tables under retention, and the time each one's rows are aged by.
pub const AGED_TABLES: &[(&str, &str)] = &[
    ("events", "toDateTime(timestamp)"),
    ("page_views", "toDateTime(timestamp)"),
    ("ticket_sales", "toDateTime(timestamp)"),
    ("page_engagements", "toDateTime(timestamp)"),
    ("metrics_daily", "toDateTime(date)"),
    ("events_hourly", "hour"),
    ("event_performance", "toDateTime(date)"),
    ("user_funnel", "toDateTime(date)"),
    ("realtime_dashboard", "interval_start"),
    ("dashboard_sketches", "toDateTime(date)"),
    ("visits", "toDateTime(date)"),
    ("visits_daily", "toDateTime(date)"),
    ("visit_facets_daily", "toDateTime(date)"),
    ("pages_daily", "toDateTime(date)"),
    // No longer written (0024); what it held still ages.
    ("sessions", "toDateTime(date)"),
    ("attribution_daily", "toDateTime(date)"),
];

pub use bilten_schema::{ClientTable, Field, Kind, SERVER_COLUMNS};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_tables_are_the_declarations_in_its_order() {
        for (table, declared) in Table::INGEST.iter().zip(bilten_schema::CLIENT_TABLES) {
            assert_eq!(table.name(), declared.name);
            assert_eq!(table.route(), declared.route);
            assert_eq!(Table::from_route(declared.route), Some(*table));
        }
        assert_eq!(Table::INGEST.len(), bilten_schema::CLIENT_TABLES.len());
    }
}
