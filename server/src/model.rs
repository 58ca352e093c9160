//! What the data is: the tables, as the rest of the server names them.
//! A leaf: it imports no other module of this crate, so configuration,
//! ingest, storage and operations can all depend on it.

use serde::Serialize;

/// The ClickHouse database every table and view lives in.
pub const DATABASE: &str = "bilten_analytics";

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
];
