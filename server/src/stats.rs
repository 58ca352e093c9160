//! The Stats API, compatible with Plausible's Stats API v2
//! (`POST /api/v2/query`): a query in Plausible's JSON shape, for one
//! organizer (its `site_id`), answered from the `visits` table the server
//! writes, one row per visit (`sql/0024_visits_written.sql`), and from
//! `attribution_daily`; never from raw rows.
//!
//! Everything a client sends reaches the engine as a bound parameter or as
//! one of the expressions named here (an allow-list: metrics, dimensions,
//! operators); anything else is refused with the field named. The engine's
//! read-only limits bound every statement; a range is at most
//! [`MAX_DAYS`] days and a query at most [`MAX_DIMENSIONS`] dimensions.
//!
//! Three aggregates answer: `visits` the visit metrics (`visitors`,
//! `visits`, `pageviews`, …), `attribution_daily` (0022) the ticketing
//! ones (`tickets`, `orders`, `revenue`, `average_order_value`), a sale
//! broken down by a `visit:` dimension being credited to its buyer's last
//! visit that was not direct, and `pages_daily` (0026) those of a query
//! that names `event:page`, `event:name` or `event:goal`, alone. A query
//! asking visit and ticketing metrics joins the two on its dimensions.
//! Revenue is a map of currency to amount, never one sum across currencies,
//! unless the query asks it converted (`include.converted_to`) with the
//! exchange rates an admin loaded: then one amount, or null where a rate is
//! missing.
//!
//! Supported: the metrics and dimensions below, filters (`is`, `is_not`,
//! `contains`, `contains_not`, `matches`, `matches_not`, `and`, `or`,
//! `not`, and Plausible's `{"case_sensitive": false}`), `order_by`,
//! `pagination`, `include.total_rows` and `include.time_labels`. Named by
//! Plausible but not answered yet (refused by name): `event:props:…`,
//! `has_done`, `time_on_page`, …
//!
//! `pages_daily` holds page views by page and events by name, per day and
//! channel, summed from the pages and names on each visit's line
//! (`sql/0027_pages_from_visits.sql`): its metrics are visitors, visits,
//! pageviews and events, and,
//! with an event's name (every name is a goal), `conversion_rate` and
//! `group_conversion_rate`, shares of visits.
//!
//! Rollups answer most queries in a few rows a day: `visits_daily` those
//! whose dimensions and filters are the origin, the country and days;
//! `visit_facets_daily` (0025) those about one of the pages or device
//! columns, and days. Visitors by exit page count each visit under its
//! last exit page: from the facet, which counts closed visits (0031), and
//! the visits still open ([`exits_sql`]).

use chrono::{Datelike, Duration, NaiveDate};
use serde_json::{Value, json};

use crate::model::DATABASE;
use crate::storage::{Storage, StorageError};

/// The longest range a query covers, in days.
pub const MAX_DAYS: i64 = 731;
/// Most dimensions in one query.
pub const MAX_DIMENSIONS: usize = 8;
/// Most filters, counted through `and`/`or`/`not`.
const MAX_FILTERS: usize = 64;
/// Most values a filter lists, and the longest value.
const MAX_VALUES: usize = 100;
const MAX_VALUE_LEN: usize = 1000;
/// The most rows a page holds (Plausible's limit).
pub const MAX_LIMIT: u64 = 10_000;

/// A query refused, the field at fault named.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("{0}")]
    Invalid(String),
    /// The key reads another organizer.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, StatsError> {
    Err(StatsError::Invalid(msg.into()))
}

/// Which aggregate answers a metric or a dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    /// `visits`, one row per visit and write (see [`visits_sql`]).
    Visits,
    /// `attribution_daily`, its 'last' model.
    Sales,
    /// `pages_daily` (0026, 0027): page views by page (`event:page`) or events by
    /// name (`event:name`), for the queries that name either.
    Pages,
}

/// A metric: its name, its aggregate, its expression there, and for a
/// visit metric its expression in `visits_daily` (0024), a visit's rows
/// summed per day, organizer, origin and country: what most queries ask,
/// read from a few rows a day instead of one per visit ([`daily_column`]).
/// Its expression in `pages_daily`, last, when it answers `event:page` and
/// `event:name` queries ([`Table::Pages`]).
type Metric = (
    &'static str,
    Table,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);
/// Visit metrics weigh each row of `visits` by its `sign`: a visit written
/// again cancels its earlier row (`sql/0024_visits_written.sql`).
const METRICS: &[Metric] = &[
    // The same estimate from rows or merged daily states: exact up to a
    // few thousand, within about 1.6 % past; a state of 3 KB merges fast
    // (uniq's grow to 0.5 MB: 5 times slower over a month of days). Never
    // more than the visits: the estimate can overshoot, and a page left by
    // more visitors than visits reads as a bug.
    (
        "visitors",
        Table::Visits,
        "toFloat64(least(uniqCombined(12)(visitor), sum(sign)))",
        Some("toFloat64(least(uniqCombinedMerge(12)(visitors), sum(visits)))"),
        // A page's: never more than its views, for the same reason.
        Some("toFloat64(least(uniqCombinedMerge(12)(visitors), sum(events)))"),
    ),
    (
        "visits",
        Table::Visits,
        "toFloat64(sum(sign))",
        Some("toFloat64(sum(visits))"),
        Some("toFloat64(least(uniqCombinedMerge(12)(visits), sum(events)))"),
    ),
    (
        "pageviews",
        Table::Visits,
        "toFloat64(sum(sign * pageviews))",
        Some("toFloat64(sum(pageviews))"),
        Some("toFloat64(sum(pageviews))"),
    ),
    (
        "views_per_visit",
        Table::Visits,
        "round(sum(sign * pageviews) / greatest(sum(sign), 1), 2)",
        Some("round(sum(pageviews) / greatest(sum(visits), 1), 2)"),
        None,
    ),
    (
        "bounce_rate",
        Table::Visits,
        "round(100 * sum(sign * (pageviews <= 1)) / greatest(sum(sign), 1))",
        Some("round(100 * sum(bounces) / greatest(sum(visits), 1))"),
        None,
    ),
    (
        "visit_duration",
        Table::Visits,
        "round(sum(sign * duration_s) / greatest(sum(sign), 1))",
        Some("round(sum(duration_ms) / 1000 / greatest(sum(visits), 1))"),
        None,
    ),
    (
        "events",
        Table::Visits,
        "toFloat64(sum(sign * (pageviews + events)))",
        Some("toFloat64(sum(pageviews) + sum(events))"),
        Some("toFloat64(sum(events))"),
    ),
    // The visits that sent the event, of all the range's visits (the
    // group's other dimensions alike, for the group's rate): the share is
    // taken in `plan_for`. Visits, not visitors: a visit keeps one id from
    // its first page to a sale sent by the backend with only the buyer's
    // user id, where a row's visitor changes when they sign in.
    (
        "conversion_rate",
        Table::Pages,
        "",
        None,
        Some("toFloat64(least(uniqCombinedMerge(12)(visits), sum(events)))"),
    ),
    (
        "group_conversion_rate",
        Table::Pages,
        "",
        None,
        Some("toFloat64(least(uniqCombinedMerge(12)(visits), sum(events)))"),
    ),
    (
        "tickets",
        Table::Sales,
        "toFloat64(sum(tickets))",
        None,
        None,
    ),
    ("orders", Table::Sales, "toFloat64(sum(orders))", None, None),
    (
        "revenue",
        Table::Sales,
        "sumMap(map(currency, revenue))",
        None,
        None,
    ),
    (
        "average_order_value",
        Table::Sales,
        "mapApply((k, v) -> (k, round(toFloat64(v) / sumMap(map(currency, orders))[k], 2)), \
         sumMap(map(currency, revenue)))",
        None,
        None,
    ),
];

/// Metrics whose value is a map of currency to amount (one amount in the
/// currency named by `include.converted_to`).
const PER_CURRENCY: &[&str] = &["revenue", "average_order_value"];

/// Most days and currencies without a rate a response names.
const MAX_MISSING_RATES: usize = 20;

/// Named by Plausible, but not answered yet.
const NOT_YET: &[&str] = &["percentage", "time_on_page", "scroll_depth", "exit_rate"];

/// A dimension: its name and its expression in each aggregate, `visits`,
/// `attribution_daily` and `pages_daily` (`None`: that aggregate does not
/// know it).
const DIMENSIONS: &[Dimension] = &[
    ("visit:source", Some("source"), Some("source"), None),
    (
        "visit:channel",
        Some("channel"),
        Some("channel"),
        Some("channel"),
    ),
    (
        "visit:utm_source",
        Some("utm_source"),
        Some("utm_source"),
        None,
    ),
    (
        "visit:utm_medium",
        Some("utm_medium"),
        Some("utm_medium"),
        None,
    ),
    (
        "visit:utm_campaign",
        Some("utm_campaign"),
        Some("utm_campaign"),
        None,
    ),
    (
        "visit:utm_content",
        Some("utm_content"),
        Some("utm_content"),
        None,
    ),
    ("visit:utm_term", Some("utm_term"), Some("utm_term"), None),
    ("visit:country", Some("country"), None, None),
    ("visit:entry_page", Some("entry_page"), None, None),
    ("visit:exit_page", Some("exit_page"), None, None),
    ("visit:device", Some("device"), None, None),
    ("visit:browser", Some("browser"), None, None),
    ("visit:os", Some("os"), None, None),
    (
        "time:hour",
        Some("toString(toStartOfHour(started))"),
        None,
        None,
    ),
    (
        "time:day",
        Some("toString(toDate(started))"),
        Some("toString(date)"),
        Some("toString(date)"),
    ),
    (
        "time:week",
        Some("toString(toMonday(started))"),
        Some("toString(toMonday(date))"),
        Some("toString(toMonday(date))"),
    ),
    (
        "time:month",
        Some("toString(toStartOfMonth(started))"),
        Some("toString(toStartOfMonth(date))"),
        Some("toString(toStartOfMonth(date))"),
    ),
    ("currency", None, Some("currency"), None),
    ("event:event_id", None, Some("event_id"), None),
    ("event:page", None, None, Some("value")),
    ("event:name", None, None, Some("value")),
    // Plausible's goals are what a site configures; here every event's
    // name is one.
    ("event:goal", None, None, Some("value")),
];

/// `event:name`, or `event:goal`, its name where conversions are asked.
fn names_an_event(d: &Dimension) -> bool {
    matches!(d.0, "event:name" | "event:goal")
}

fn expression(dim: &Dimension, table: Table) -> Option<&'static str> {
    match table {
        Table::Visits => dim.1,
        Table::Sales => dim.2,
        Table::Pages => dim.3,
    }
}

/// A dimension's column in `visits_daily`: the origin's and the days' as
/// in `attribution_daily`, and the country; `None` for the pages, the
/// devices and the hour, which it does not know.
fn daily_column(dim: &Dimension) -> Option<&'static str> {
    match dim.0 {
        "visit:country" => Some("country"),
        "time:hour" => None,
        _ => dim.2,
    }
}

/// The dimensions `visit_facets_daily` (0025) sums visits by, one at a
/// time: its `facet` is their column in `visits`.
const FACETS: &[&str] = &[
    "visit:entry_page",
    "visit:exit_page",
    "visit:device",
    "visit:browser",
    "visit:os",
];

/// Which table the visit metrics are read from: each visit's rows, or a
/// rollup that knows every dimension and filter of the query.
#[derive(Clone, Copy, PartialEq)]
enum Rollup {
    No,
    /// `visits_daily`.
    Daily,
    /// `visit_facets_daily`, the rows of this facet.
    Facet(&'static str),
}

/// Where a dimension is read from, for `table`'s metrics.
fn column(dim: &Dimension, table: Table, rollup: Rollup) -> Option<&'static str> {
    match (table, rollup) {
        (Table::Visits, Rollup::Daily) => daily_column(dim),
        (Table::Visits, Rollup::Facet(f)) if dim.1 == Some(f) => Some("value"),
        (Table::Visits, Rollup::Facet(_)) => {
            daily_column(dim).filter(|_| dim.0.starts_with("time:") || dim.0 == "visit:channel")
        }
        _ => expression(dim, table),
    }
}

/// The rollup that answers a query with these dimensions and filters:
/// the daily one when it knows them all, else the facets' when they are
/// one facet, and at most the channel and days besides.
fn rollup(dims: &[&Dimension], filters: &[Cond], last: bool) -> Rollup {
    let known = |r: Rollup| {
        dims.iter().all(|d| column(d, Table::Visits, r).is_some())
            && filters
                .iter()
                .all(|f| f.all(&|d| column(d, Table::Visits, r).is_some()))
    };
    if known(Rollup::Daily) {
        return Rollup::Daily;
    }
    // `last`: visitors by exit page, which the exit pages' facet counts
    // from closed visits ([`exits_sql`]); with any other page or device
    // dimension, only `visits` counts them right.
    if last {
        let exits = Rollup::Facet("exit_page");
        return match known(exits) {
            true => exits,
            false => Rollup::No,
        };
    }
    FACETS
        .iter()
        .filter_map(|f| DIMENSIONS.iter().find(|d| d.0 == *f).and_then(|d| d.1))
        .map(Rollup::Facet)
        .find(|r| known(*r))
        .unwrap_or(Rollup::No)
}

type Dimension = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

/// The rows of the visits (of the organizer, when `one`) that started in
/// the range: with `last`, only each visit's latest (the engine collapses
/// them as it reads, `FINAL`, at a cost: 4 to 5 times the time). The sums
/// weighted by `sign` need no such thing; `uniq(visitor)` does when rows
/// are grouped or filtered by a dimension that changes between a visit's
/// writes, and the exit page changes with every page ([`needs_last`]).
fn visits_sql(one: bool, last: bool) -> String {
    let organizer = match one {
        true => "organizer_id = {organizer:String} AND ",
        false => "",
    };
    let last = match last {
        true => " FINAL",
        false => "",
    };
    format!(
        "SELECT sign, visitor, started, pageviews, events, \
         toFloat64(dateDiff('millisecond', started, ended)) / 1000 AS duration_s, \
         entry_page, exit_page, channel, source, utm_source, utm_medium, utm_campaign, \
         utm_content, utm_term, country, device, browser, os \
         FROM {DATABASE}.visits{last} \
         WHERE {organizer}date BETWEEN {{from:Date}} AND {{to:Date}}"
    )
}

/// Visitors by exit page: the facet `exit_page` has the visits' sums, but
/// counts a visitor under each exit page a visit's lines had; `exit_closed`
/// counts each closed visit's visitor under its last one
/// (`sql/0031_closed_visits.sql`); and each visit not closed yet adds its
/// visitor under its latest line's exit page (`exit_open`), read here. An
/// open visit's latest line was written within the visits' open window
/// (`{open_ms:UInt64}`, [`crate::config::VisitSettings::open_window`]: the
/// tally closes a visit idle that long), so only the lines of that window
/// are grouped, a few minutes of them (`version`, the time a line was
/// written, read first), whatever day the visits began: a backfill's
/// visits of last month are open for their first half hour too (and, that
/// half hour, the read groups all of their lines). The visitors' estimate
/// reads the last two ([`EXITS_VISITORS`]).
fn exits_sql(one: bool) -> String {
    let organizer = match one {
        true => "organizer_id = {organizer:String} AND ",
        false => "",
    };
    // Aggregates under names of their own: an alias that is a column's
    // name would be read inside the other aggregates.
    format!(
        "(SELECT organizer_id, date, facet, channel, value, visits, pageviews, events, bounces, \
         duration_ms, visitors FROM {DATABASE}.visit_facets_daily \
         UNION ALL \
         SELECT organizer_id, date, 'exit_open', o_channel, o_exit, toInt64(0), toInt64(0), \
         toInt64(0), toInt64(0), toInt64(0), uniqCombinedState(12)(o_visitor) FROM ( \
           SELECT organizer_id, date, visit_id, argMax(channel, version) AS o_channel, \
           argMax(exit_page, version) AS o_exit, any(visitor) AS o_visitor, \
           argMax(closed, version) AS o_closed FROM {DATABASE}.visits \
           PREWHERE version >= toUInt64(toUnixTimestamp64Milli(now64(3))) - {{open_ms:UInt64}} \
           WHERE {organizer}date BETWEEN {{from:Date}} AND {{to:Date}} \
           GROUP BY organizer_id, date, visit_id HAVING o_closed = 0 AND sum(sign) > 0) \
         GROUP BY organizer_id, date, o_channel, o_exit)"
    )
}

/// The facets [`exits_sql`] reads, and the visitors' estimate over them.
const EXITS: &str = "facet IN ('exit_page', 'exit_closed', 'exit_open')";
const EXITS_VISITORS: &str = "uniqCombinedMergeIf(12)(visitors, facet != 'exit_page')";

/// A query, checked, as SQL and its parameters.
#[derive(Debug)]
pub struct Plan {
    pub sql: String,
    pub params: Vec<(String, String)>,
    pub metrics: Vec<String>,
    pub dimensions: Vec<String>,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub total_rows: bool,
    /// Every time bucket of the range, when asked for.
    pub time_labels: Option<Vec<String>>,
    /// `include.converted_to`: the currency revenue is converted into, and
    /// the statement listing the days and currencies it has no rate for.
    pub converted: Option<(String, String)>,
}

/// Checks `query` for `organizer` (`None`: the admin, any site); `today`
/// anchors relative ranges.
pub fn plan(query: &Value, organizer: Option<&str>, today: NaiveDate) -> Result<Plan, StatsError> {
    let Some(q) = query.as_object() else {
        return invalid("the query must be a JSON object");
    };
    const KNOWN: &[&str] = &[
        "site_id",
        "metrics",
        "date_range",
        "dimensions",
        "filters",
        "order_by",
        "include",
        "pagination",
    ];
    if let Some(k) = q.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return invalid(format!(
            "unknown field {k:?}: a query takes {}",
            KNOWN.join(", ")
        ));
    }
    let site = match q.get("site_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return invalid("site_id: the organizer's id is required"),
    };
    if let Some(org) = organizer
        && org != site
    {
        return Err(StatsError::Forbidden(format!(
            "site_id {site:?}: this key reads organizer {org:?} only"
        )));
    }
    plan_for(query, Some(&site), today)
}

/// Checks `query` (its `site_id` aside) for one organizer, or for all
/// (`None`: the admin's dashboard, never the API).
pub fn plan_for(query: &Value, site: Option<&str>, today: NaiveDate) -> Result<Plan, StatsError> {
    let Some(q) = query.as_object() else {
        return invalid("the query must be a JSON object");
    };
    let metrics = strings(q.get("metrics"), "metrics")?;
    if metrics.is_empty() {
        return invalid("metrics: at least one metric is required");
    }
    let mut chosen = Vec::new();
    for (i, m) in metrics.iter().enumerate() {
        if metrics[..i].contains(m) {
            return invalid(format!("metrics: {m:?} is named twice"));
        }
        chosen.push(metric(m)?);
    }
    let kind = pages_kind(q)?;
    let tables: Vec<Table> = match kind {
        Some(_) => {
            if let Some(m) = chosen.iter().find(|m| m.4.is_none()) {
                return invalid(format!(
                    "metrics: {} does not apply to event:page or event:name, which answer {PAGE_METRICS}",
                    m.0
                ));
            }
            vec![Table::Pages]
        }
        None => {
            if let Some(m) = chosen.iter().find(|m| m.1 == Table::Pages) {
                return invalid(format!(
                    "metrics: {} needs event:goal (or event:name) as a dimension or a filter: \
                     it is the share of visits in which that event was sent",
                    m.0
                ));
            }
            [Table::Visits, Table::Sales]
                .into_iter()
                .filter(|t| chosen.iter().any(|m| m.1 == *t))
                .collect()
        }
    };
    let rates: Vec<usize> = (0..chosen.len())
        .filter(|i| chosen[*i].1 == Table::Pages)
        .collect();
    if rates.len() > 1 {
        return invalid("metrics: conversion_rate or group_conversion_rate, not both");
    }
    let conversion = rates.first().copied();
    if let Some(i) = conversion
        && kind == Some("page")
    {
        return invalid(format!(
            "metrics: {} applies to event:goal or event:name, not event:page",
            chosen[i].0
        ));
    }
    let dimensions = match q.get("dimensions") {
        None => Vec::new(),
        v => strings(v, "dimensions")?,
    };
    if dimensions.len() > MAX_DIMENSIONS {
        return invalid(format!(
            "dimensions: at most {MAX_DIMENSIONS}, not {}",
            dimensions.len()
        ));
    }
    let mut dims = Vec::new();
    for (i, d) in dimensions.iter().enumerate() {
        if dimensions[..i].contains(d) {
            return invalid(format!("dimensions: {d:?} is named twice"));
        }
        dims.push(dimension(d, "dimensions", &tables)?);
    }
    let (from, to) = date_range(q.get("date_range"), today)?;
    let mut params = vec![
        ("from".to_string(), from.to_string()),
        ("to".to_string(), to.to_string()),
    ];
    if let Some(site) = site {
        params.push(("organizer".to_string(), site.to_string()));
    }
    let mut count = 0;
    let filters: Vec<Cond> = match q.get("filters") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|f| filter(f, &tables, &mut params, &mut count))
            .collect::<Result<_, _>>()?,
        Some(_) => return invalid("filters: a list of filters"),
    };
    let order = order_by(q.get("order_by"), &metrics, &dimensions)?;
    let (limit, offset) = pagination(q.get("pagination"))?;
    let (total_rows, labels, converted_to) = include(q.get("include"))?;
    if let Some(c) = &converted_to {
        params.push(("base".to_string(), c.clone()));
    }
    let time_labels = match (labels, dims.iter().find(|d| d.0.starts_with("time:"))) {
        (false, _) => None,
        (true, Some(d)) => Some(time_labels(d.0, from, to)),
        (true, None) => return invalid("include: time_labels needs a time dimension"),
    };
    let dim_names: Vec<String> = (0..dims.len()).map(|i| format!("d{i}")).collect();
    let last = needs_last(&chosen, &dims, &filters);
    let rollup = rollup(&dims, &filters, last);
    if last && rollup != Rollup::No {
        let window = crate::config::VisitSettings::default().open_window();
        params.push(("open_ms".to_string(), window.as_millis().to_string()));
    }
    // The sales' rows: last touch, the range, the filters (the ticketing
    // metrics', and the rows a converted revenue lacks a rate for).
    let sales_conds = || {
        scoped(
            site,
            format!("model = 'last' AND {DAYS}"),
            filters.iter().map(|f| f.sql(Table::Sales, Rollup::No)),
        )
    };
    let sub = |table: Table| {
        let rollup = match table {
            Table::Visits => rollup,
            Table::Sales | Table::Pages => Rollup::No,
        };
        let daily = rollup != Rollup::No;
        let select: Vec<String> = dims
            .iter()
            .enumerate()
            .map(|(i, d)| format!("{} AS d{i}", column(d, table, rollup).expect("checked")))
            .chain(
                chosen
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| table == Table::Pages || m.1 == table)
                    .map(|(i, m)| {
                        let expr = match (table, daily, m.0, &converted_to) {
                            (Table::Pages, ..) => m.4.expect("checked"),
                            (_, true, ..) => m.3.expect("every visit metric has its daily form"),
                            (Table::Sales, _, "revenue", Some(_)) => CONVERTED,
                            (Table::Sales, _, "average_order_value", Some(_)) => CONVERTED_AVERAGE,
                            (..) => m.2,
                        };
                        let expr = match (table, daily && last) {
                            (Table::Visits, true) => {
                                expr.replace("uniqCombinedMerge(12)(visitors)", EXITS_VISITORS)
                            }
                            _ => expr.to_string(),
                        };
                        match Some(i) == conversion {
                            true => format!("{expr} AS converted"),
                            false => format!("{expr} AS m{i}"),
                        }
                    }),
            )
            // Converted revenue is NULL for a missing rate: joined with the
            // visits, a group with no sales says so apart (`run`).
            .chain((table == Table::Sales && converted_to.is_some()).then(|| "1 AS s_rows".into()))
            .collect();
        let tested = filters.iter().map(|f| f.sql(table, rollup));
        // Each rollup's own conditions are names of ours, never the client's.
        let (from_sql, conds) = match table {
            Table::Visits if daily => {
                let (from, own) = match rollup {
                    Rollup::Facet(_) if last => {
                        (exits_sql(site.is_some()), format!("{EXITS} AND {DAYS}"))
                    }
                    Rollup::Facet(facet) => (
                        format!("{DATABASE}.visit_facets_daily"),
                        format!("facet = '{facet}' AND {DAYS}"),
                    ),
                    _ => (format!("{DATABASE}.visits_daily"), DAYS.to_string()),
                };
                (from, scoped(site, own, tested))
            }
            Table::Visits => (
                format!("({})", visits_sql(site.is_some(), last)),
                tested.collect(),
            ),
            Table::Pages => (
                format!("{DATABASE}.pages_daily"),
                scoped(
                    site,
                    format!("kind = '{}' AND {DAYS}", kind.expect("a pages query")),
                    tested,
                ),
            ),
            Table::Sales => (
                match converted_to {
                    Some(_) => sales_with_rates(),
                    None => format!("{DATABASE}.attribution_daily"),
                },
                sales_conds(),
            ),
        };
        let where_sql = match conds.is_empty() {
            true => String::new(),
            false => format!(" WHERE {}", conds.join(" AND ")),
        };
        // A group whose visits all moved to another (a visit's exit page
        // changed) sums to none.
        let group = match (dim_names.is_empty(), table) {
            (true, _) => String::new(),
            (false, Table::Visits) if daily => {
                format!(" GROUP BY {} HAVING sum(visits) > 0", dim_names.join(", "))
            }
            (false, Table::Visits) => {
                format!(" GROUP BY {} HAVING sum(sign) > 0", dim_names.join(", "))
            }
            // A visit whose channel was learnt after a write (an event
            // before its first page view) leaves its first channel's rows
            // summing to no event.
            (false, Table::Pages) => {
                format!(" GROUP BY {} HAVING sum(events) != 0", dim_names.join(", "))
            }
            (false, Table::Sales) => format!(" GROUP BY {}", dim_names.join(", ")),
        };
        format!(
            "SELECT {} FROM {from_sql}{where_sql}{group}",
            select.join(", ")
        )
    };
    let body = match tables.as_slice() {
        [Table::Pages] if conversion.is_some() => {
            // The share of everyone in the range under the filters that do
            // not name the event (a filter that names it among others counts
            // whole); for the group's rate, of those with the group's other
            // dimensions. Everyone: the visits, from `visits_daily`, which
            // knows every other dimension and filter a pages query may have
            // (each visit has a page view or an event, so these are the
            // visits `pages_daily` counts, read from a few rows a day
            // instead of merging every name's estimate).
            let i = conversion.expect("checked");
            let others: Vec<usize> = match chosen[i].0 {
                "group_conversion_rate" => (0..dims.len())
                    .filter(|k| !names_an_event(dims[*k]))
                    .collect(),
                _ => Vec::new(),
            };
            let select: Vec<String> = others
                .iter()
                .map(|k| {
                    let col = column(dims[*k], Table::Visits, Rollup::Daily)
                        .expect("a pages query's other dimensions are the channel and days");
                    format!("{col} AS d{k}")
                })
                .chain(["toFloat64(sum(visits)) AS everyone".to_string()])
                .collect();
            let conds = scoped(
                site,
                DAYS.to_string(),
                without_events(&filters)?
                    .iter()
                    .map(|f| f.sql(Table::Visits, Rollup::Daily)),
            );
            let names: Vec<String> = others.iter().map(|k| format!("d{k}")).collect();
            let (group, join, using) = match names.is_empty() {
                true => (String::new(), "CROSS JOIN", String::new()),
                false => (
                    format!(" GROUP BY {}", names.join(", ")),
                    "LEFT JOIN",
                    format!(" USING ({})", names.join(", ")),
                ),
            };
            let columns: Vec<String> = dim_names
                .iter()
                .cloned()
                .chain((0..chosen.len()).map(|j| match j == i {
                    true => format!("round(100 * converted / greatest(everyone, 1), 2) AS m{j}"),
                    false => format!("m{j}"),
                }))
                .collect();
            format!(
                "SELECT {} FROM ({}) AS g {join} (SELECT {} FROM {DATABASE}.visits_daily WHERE {}{group}) AS t{using}",
                columns.join(", "),
                sub(Table::Pages),
                select.join(", "),
                conds.join(" AND "),
            )
        }
        [one] => sub(*one),
        _ => {
            let join = match dim_names.is_empty() {
                true => "CROSS JOIN".to_string(),
                false => "FULL OUTER JOIN".to_string(),
            };
            let using = match dim_names.is_empty() {
                true => String::new(),
                false => format!(" USING ({})", dim_names.join(", ")),
            };
            let columns: Vec<String> = dim_names
                .iter()
                .cloned()
                .chain((0..chosen.len()).map(|i| format!("m{i}")))
                .chain(converted_to.is_some().then(|| "s_rows".into()))
                .collect();
            format!(
                "SELECT {} FROM ({}) AS v {join} ({}) AS s{using}",
                columns.join(", "),
                sub(Table::Visits),
                sub(Table::Sales)
            )
        }
    };
    let sql = format!("SELECT * FROM ({body}) ORDER BY {order} LIMIT {limit} OFFSET {offset}");
    // The days and currencies of the query's sales that have no rate.
    let converted = match converted_to {
        None => None,
        Some(_) if !chosen.iter().any(|m| PER_CURRENCY.contains(&m.0)) => {
            return invalid(format!(
                "include: converted_to applies to {}, which this query does not ask",
                PER_CURRENCY.join(" and ")
            ));
        }
        Some(c) => {
            let missing = format!(
                "SELECT toString(d) AS date, toString(c) AS currency FROM \
                 (SELECT DISTINCT date AS d, currency AS c FROM {} WHERE {} AND {NO_RATE}) \
                 ORDER BY date, currency LIMIT {}",
                sales_with_rates(),
                sales_conds().join(" AND "),
                MAX_MISSING_RATES + 1
            );
            Some((c, missing))
        }
    };
    Ok(Plan {
        sql,
        params,
        metrics,
        dimensions,
        from,
        to,
        total_rows,
        time_labels,
        converted,
    })
}

/// A rollup's days of the range.
const DAYS: &str = "date BETWEEN {from:Date} AND {to:Date}";

/// A rollup's conditions: the organizer's rows (when the query is one
/// organizer's), the rollup's own, then the filters'.
fn scoped(site: Option<&str>, own: String, tested: impl Iterator<Item = String>) -> Vec<String> {
    site.map(|_| "organizer_id = {organizer:String}".to_string())
        .into_iter()
        .chain([own])
        .chain(tested)
        .collect()
}

/// The filters that hold for a conversion rate's divisor: those that do not
/// name the event, the members of `and`s taken one by one. One that names it
/// with other dimensions under `or` or `not` cannot be split: refused.
fn without_events(filters: &[Cond]) -> Result<Vec<&Cond>, StatsError> {
    let mut kept = Vec::new();
    for f in filters {
        match f {
            Cond::All(list) => kept.extend(without_events(list)?),
            f if f.all(&|d| !names_an_event(d)) => kept.push(f),
            f if f.all(&names_an_event) => {}
            _ => {
                return invalid(
                    "filters: with a conversion rate, event:goal or event:name may join other \
                     dimensions through \"and\" only (the rate's divisor keeps the others)",
                );
            }
        }
    }
    Ok(kept)
}

/// The metrics `pages_daily` answers.
const PAGE_METRICS: &str = "visitors, visits, pageviews, events";

/// `page` or `name` when the query's dimensions or filters name
/// `event:page` or `event:name`: `pages_daily` answers it, and nothing else
/// may (a page view's page is not its visit's).
fn pages_kind(q: &serde_json::Map<String, Value>) -> Result<Option<&'static str>, StatsError> {
    /// The dimensions a filter tests; malformed ones are refused later.
    fn tested<'a>(f: &'a Value, out: &mut Vec<&'a str>) {
        let Some(parts) = f.as_array() else { return };
        match (parts.first().and_then(Value::as_str), parts.get(1)) {
            (Some("and" | "or"), Some(Value::Array(inner))) => {
                inner.iter().for_each(|g| tested(g, out))
            }
            (Some("not"), Some(g)) => tested(g, out),
            (_, Some(Value::String(d))) => out.push(d),
            _ => {}
        }
    }
    let mut names: Vec<&str> = Vec::new();
    if let Some(Value::Array(dims)) = q.get("dimensions") {
        names.extend(dims.iter().filter_map(Value::as_str));
    }
    if let Some(Value::Array(filters)) = q.get("filters") {
        filters.iter().for_each(|f| tested(f, &mut names));
    }
    let page = names.contains(&"event:page");
    let name = names.contains(&"event:name") || names.contains(&"event:goal");
    match (page, name) {
        (true, true) => invalid(
            "dimensions and filters: event:page and event:name (or event:goal) cannot be combined: \
             a page is a page view's, a name any event's",
        ),
        (true, false) => Ok(Some("page")),
        (false, true) => Ok(Some("name")),
        (false, false) => Ok(None),
    }
}

fn strings(v: Option<&Value>, field: &str) -> Result<Vec<String>, StatsError> {
    let Some(Value::Array(list)) = v else {
        return invalid(format!("{field}: a list of names"));
    };
    list.iter()
        .map(|x| match x.as_str() {
            Some(s) => Ok(s.to_string()),
            None => invalid(format!("{field}: {x} is not a name")),
        })
        .collect()
}

fn metric(name: &str) -> Result<&'static Metric, StatsError> {
    if let Some(m) = METRICS.iter().find(|m| m.0 == name) {
        return Ok(m);
    }
    if NOT_YET.contains(&name) {
        return invalid(format!("metrics: {name:?} is not answered yet"));
    }
    invalid(format!(
        "metrics: unknown metric {:?}; known: {}",
        cut(name),
        METRICS.iter().map(|m| m.0).collect::<Vec<_>>().join(", ")
    ))
}

/// A dimension that every aggregate in `tables` knows.
fn dimension(name: &str, field: &str, tables: &[Table]) -> Result<&'static Dimension, StatsError> {
    let known = DIMENSIONS
        .iter()
        .map(|d| d.0)
        .collect::<Vec<_>>()
        .join(", ");
    let Some(d) = DIMENSIONS.iter().find(|d| d.0 == name) else {
        if name.starts_with("event:") || name.starts_with("visit:") {
            return invalid(format!(
                "{field}: {:?} is not answered yet; known: {known}",
                cut(name)
            ));
        }
        return invalid(format!(
            "{field}: unknown dimension {:?}; known: {known}",
            cut(name)
        ));
    };
    for t in tables {
        if expression(d, *t).is_none() {
            let (these, kind) = match t {
                Table::Visits => (
                    "visitors, visits, pageviews, views_per_visit, bounce_rate, visit_duration, events",
                    "visit",
                ),
                Table::Sales => ("tickets, orders, revenue, average_order_value", "ticketing"),
                Table::Pages => {
                    return invalid(format!(
                        "{field}: {name} cannot be combined with event:page or event:name, \
                         which are counted by day and channel only"
                    ));
                }
            };
            return invalid(format!(
                "{field}: {name} does not apply to the {kind} metrics ({these})"
            ));
        }
    }
    Ok(d)
}

/// A name from a client, shortened for a message.
fn cut(s: &str) -> String {
    match s.chars().count() > 64 {
        true => format!("{}…", s.chars().take(64).collect::<String>()),
        false => s.to_string(),
    }
}

fn date_range(v: Option<&Value>, today: NaiveDate) -> Result<(NaiveDate, NaiveDate), StatsError> {
    let days = |n: i64| (today - Duration::days(n - 1), today);
    let (from, to) = match v {
        Some(Value::String(s)) => match s.as_str() {
            "day" => days(1),
            "7d" => days(7),
            "28d" => days(28),
            "30d" => days(30),
            "91d" => days(91),
            "month" => (today.with_day(1).unwrap(), today),
            "6mo" => (months_back(today, 5), today),
            "12mo" => (months_back(today, 11), today),
            "year" => (NaiveDate::from_ymd_opt(today.year(), 1, 1).unwrap(), today),
            "all" => days(MAX_DAYS),
            other => {
                return invalid(format!(
                    "date_range: {:?} is none of day, 7d, 28d, 30d, 91d, month, 6mo, 12mo, year, all, or [from, to]",
                    cut(other)
                ));
            }
        },
        Some(Value::Array(pair)) if pair.len() == 2 => {
            let day = |v: &Value| {
                v.as_str().and_then(|s| {
                    NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d").ok()
                })
            };
            match (day(&pair[0]), day(&pair[1])) {
                (Some(a), Some(b)) => (a, b),
                _ => return invalid("date_range: [from, to] as ISO 8601 dates (2026-01-31)"),
            }
        }
        None => {
            return invalid("date_range: required (\"7d\", or [\"2026-01-01\", \"2026-01-31\"])");
        }
        _ => return invalid("date_range: a name (\"7d\") or [from, to]"),
    };
    if to < from {
        return invalid(format!("date_range: {to} is before {from}"));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return invalid(format!("date_range: at most {MAX_DAYS} days"));
    }
    Ok((from, to))
}

fn months_back(today: NaiveDate, n: u32) -> NaiveDate {
    let first = today.with_day(1).unwrap();
    first
        .checked_sub_months(chrono::Months::new(n))
        .unwrap_or(first)
}

/// A checked filter; its values are bound parameters.
#[derive(Debug)]
enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    /// The dimension, the operator (`is`, `contains`, `matches`), negated,
    /// its values' parameter names, and whether case counts (Plausible's
    /// `{"case_sensitive": false}` modifier says it does not).
    Test(&'static Dimension, &'static str, bool, Vec<String>, bool),
}

/// Whether `visitors` must read only each visit's latest row: when it is
/// grouped or filtered by the exit page. The other dimensions of a visit
/// change between its writes only when a late row comes before its first
/// (its start, its entry page) or its first page view comes after a write
/// (its origin, its country): until the engine collapses the two rows,
/// seconds to minutes, such a visitor counts under both values, an error
/// well inside the estimate's own (about 1.6 %), for a read 4 to 5 times
/// cheaper.
fn needs_last(chosen: &[&Metric], dims: &[&Dimension], filters: &[Cond]) -> bool {
    let unchanging = |d: &Dimension| d.0 != "visit:exit_page";
    chosen.iter().any(|m| m.0 == "visitors")
        && !(dims.iter().all(|d| unchanging(d)) && filters.iter().all(|f| f.all(&unchanging)))
}

impl Cond {
    /// Whether every dimension it tests is `ok`.
    fn all(&self, ok: &dyn Fn(&Dimension) -> bool) -> bool {
        match self {
            Cond::All(list) | Cond::Any(list) => list.iter().all(|c| c.all(ok)),
            Cond::Not(c) => c.all(ok),
            Cond::Test(dim, ..) => ok(dim),
        }
    }

    fn sql(&self, table: Table, rollup: Rollup) -> String {
        let join = |list: &[Cond], sep: &str| {
            let parts: Vec<String> = list.iter().map(|c| c.sql(table, rollup)).collect();
            format!("({})", parts.join(sep))
        };
        match self {
            Cond::All(list) => join(list, " AND "),
            Cond::Any(list) => join(list, " OR "),
            Cond::Not(c) => format!("NOT ({})", c.sql(table, rollup)),
            Cond::Test(dim, op, negated, names, case) => {
                let column = column(dim, table, rollup).expect("checked for every table");
                let each: Vec<String> = names
                    .iter()
                    .map(|name| match (*op, case) {
                        ("is", true) => format!("{column} = {{{name}:String}}"),
                        ("is", false) => {
                            format!("lowerUTF8({column}) = lowerUTF8({{{name}:String}})")
                        }
                        ("contains", true) => {
                            format!("position({column}, {{{name}:String}}) > 0")
                        }
                        ("contains", false) => {
                            format!("positionCaseInsensitiveUTF8({column}, {{{name}:String}}) > 0")
                        }
                        (_, true) => format!("match({column}, {{{name}:String}})"),
                        (_, false) => format!("match({column}, concat('(?i)', {{{name}:String}}))"),
                    })
                    .collect();
                let any = format!("({})", each.join(" OR "));
                match negated {
                    true => format!("NOT {any}"),
                    false => any,
                }
            }
        }
    }
}

/// A filter checked, its values bound as parameters.
fn filter(
    f: &Value,
    tables: &[Table],
    params: &mut Vec<(String, String)>,
    count: &mut usize,
) -> Result<Cond, StatsError> {
    *count += 1;
    if *count > MAX_FILTERS {
        return invalid(format!("filters: at most {MAX_FILTERS}"));
    }
    let Some(parts) = f.as_array().filter(|p| !p.is_empty()) else {
        return invalid(format!(
            "filters: {} is not a filter ([operator, dimension, values])",
            cut(&f.to_string())
        ));
    };
    let op = parts[0].as_str().unwrap_or("");
    match op {
        "and" | "or" => {
            let Some(Value::Array(inner)) = parts.get(1).filter(|_| parts.len() == 2) else {
                return invalid(format!("filters: {op:?} takes a list of filters"));
            };
            if inner.is_empty() {
                return invalid(format!("filters: {op:?} takes at least one filter"));
            }
            let list = inner
                .iter()
                .map(|g| filter(g, tables, params, count))
                .collect::<Result<_, _>>()?;
            Ok(match op {
                "and" => Cond::All(list),
                _ => Cond::Any(list),
            })
        }
        "not" => match parts.get(1).filter(|_| parts.len() == 2) {
            Some(g) => Ok(Cond::Not(Box::new(filter(g, tables, params, count)?))),
            None => invalid("filters: \"not\" takes one filter"),
        },
        "is" | "is_not" | "contains" | "contains_not" | "matches" | "matches_not" => {
            let Some(dim) = parts.get(1).and_then(Value::as_str) else {
                return invalid(format!("filters: {op:?} takes a dimension name"));
            };
            let d = dimension(dim, "filters", tables)?;
            if dim.starts_with("time:") {
                return invalid(format!("filters: {dim} cannot be filtered; use date_range"));
            }
            let Some(Value::Array(values)) = parts.get(2).filter(|_| parts.len() <= 4) else {
                return invalid(format!("filters: {op:?} on {dim} takes a list of values"));
            };
            if values.is_empty() || values.len() > MAX_VALUES {
                return invalid(format!("filters: {dim} takes 1 to {MAX_VALUES} values"));
            }
            let mut names = Vec::new();
            for v in values {
                let Some(text) = v.as_str() else {
                    return invalid(format!(
                        "filters: {dim}'s values are text, not {}",
                        cut(&v.to_string())
                    ));
                };
                if text.chars().count() > MAX_VALUE_LEN {
                    return invalid(format!(
                        "filters: a value of {dim} is longer than {MAX_VALUE_LEN} characters"
                    ));
                }
                let name = format!("f{}", params.len());
                params.push((name.clone(), text.to_string()));
                names.push(name);
            }
            let base = op.trim_end_matches("_not");
            let base = ["is", "contains", "matches"]
                .into_iter()
                .find(|b| *b == base)
                .expect("one of the three");
            let case = match parts.get(3) {
                None => true,
                Some(Value::Object(m))
                    if m.keys().all(|k| k == "case_sensitive")
                        && m.values().all(Value::is_boolean) =>
                {
                    m.get("case_sensitive")
                        .and_then(Value::as_bool)
                        .unwrap_or(true)
                }
                Some(other) => {
                    return invalid(format!(
                        "filters: {} is not a modifier; {op:?} on {dim} takes {{\"case_sensitive\": false}}",
                        cut(&other.to_string())
                    ));
                }
            };
            Ok(Cond::Test(d, base, op.ends_with("_not"), names, case))
        }
        "has_done" | "has_not_done" => invalid(format!(
            "filters: {op:?} is not answered yet (a visit's events are not kept with it)"
        )),
        other => invalid(format!(
            "filters: unknown operator {:?}; known: is, is_not, contains, contains_not, matches, matches_not, and, or, not",
            cut(other)
        )),
    }
}

fn order_by(
    v: Option<&Value>,
    metrics: &[String],
    dimensions: &[String],
) -> Result<String, StatsError> {
    let position = |name: &str| {
        metrics
            .iter()
            .position(|m| m == name)
            .map(|i| format!("m{i}"))
            .or_else(|| {
                dimensions
                    .iter()
                    .position(|d| d == name)
                    .map(|i| format!("d{i}"))
            })
    };
    let mut keys = Vec::new();
    match v {
        None => {
            // Plausible's default: time ascending, else the first metric
            // descending; then the dimensions, so pages are stable.
            if let Some(i) = dimensions.iter().position(|d| d.starts_with("time:")) {
                keys.push(format!("d{i} ASC"));
            } else if let Some(i) = metrics
                .iter()
                .position(|m| !PER_CURRENCY.contains(&m.as_str()))
            {
                keys.push(format!("m{i} DESC"));
            }
        }
        Some(Value::Array(list)) => {
            for item in list {
                let pair = item.as_array().filter(|p| p.len() == 2);
                let (Some(name), Some(dir)) = (
                    pair.and_then(|p| p[0].as_str()),
                    pair.and_then(|p| p[1].as_str()),
                ) else {
                    return invalid("order_by: a list of [name, \"asc\" | \"desc\"]");
                };
                if PER_CURRENCY.contains(&name) {
                    return invalid(format!(
                        "order_by: {name} is per currency and has no one order; order by tickets or orders"
                    ));
                }
                let Some(col) = position(name) else {
                    return invalid(format!(
                        "order_by: {:?} is not among the query's metrics or dimensions",
                        cut(name)
                    ));
                };
                let dir = match dir {
                    "asc" => "ASC",
                    "desc" => "DESC",
                    other => {
                        return invalid(format!(
                            "order_by: {:?} is neither asc nor desc",
                            cut(other)
                        ));
                    }
                };
                keys.push(format!("{col} {dir}"));
            }
        }
        Some(_) => return invalid("order_by: a list of [name, \"asc\" | \"desc\"]"),
    }
    keys.extend((0..dimensions.len()).map(|i| format!("d{i}")));
    if keys.is_empty() {
        // One row, one order.
        keys.push("tuple()".to_string());
    }
    Ok(keys.join(", "))
}

fn pagination(v: Option<&Value>) -> Result<(u64, u64), StatsError> {
    let Some(v) = v else {
        return Ok((MAX_LIMIT, 0));
    };
    let Some(p) = v.as_object() else {
        return invalid("pagination: {\"limit\": n, \"offset\": n}");
    };
    let get = |k: &str, default: u64| match p.get(k) {
        None => Ok(default),
        Some(x) => x.as_u64().ok_or_else(|| {
            StatsError::Invalid(format!("pagination: {k} is a whole number, not {x}"))
        }),
    };
    let limit = get("limit", MAX_LIMIT)?;
    if limit == 0 || limit > MAX_LIMIT {
        return invalid(format!("pagination: limit is 1 to {MAX_LIMIT}"));
    }
    let offset = get("offset", 0)?;
    if offset > 1_000_000 {
        return invalid("pagination: offset is at most 1000000");
    }
    Ok((limit, offset))
}

/// `include`: whether to count every row (`total_rows`) and to list every
/// time bucket of the range (`time_labels`).
///
/// Ours besides: `converted_to`, a currency revenue is converted into with
/// the exchange rates an admin loaded (`ops::rates`).
fn include(v: Option<&Value>) -> Result<(bool, bool, Option<String>), StatsError> {
    let Some(v) = v else {
        return Ok((false, false, None));
    };
    let Some(o) = v.as_object() else {
        return invalid("include: an object");
    };
    let (mut total_rows, mut labels, mut converted) = (false, false, None);
    for (k, x) in o {
        match (k.as_str(), x.as_bool()) {
            ("total_rows", Some(b)) => total_rows = b,
            ("time_labels", Some(b)) => labels = b,
            ("imports", Some(_)) => {}
            ("converted_to", _) => {
                let code = x.as_str().and_then(crate::ops::rates::currency);
                let Some(code) = code else {
                    return invalid(format!(
                        "include: converted_to: a three-letter currency code such as EUR, got {}",
                        cut(&x.to_string())
                    ));
                };
                converted = Some(code);
            }
            _ => return invalid(format!("include: {:?} is not supported", cut(k))),
        }
    }
    Ok((total_rows, labels, converted))
}

/// `attribution_daily` with each row's rate into `{base}` (0 where none
/// was loaded), for revenue converted.
fn sales_with_rates() -> String {
    format!(
        "(SELECT a.*, r.latest AS r_rate FROM {DATABASE}.attribution_daily AS a \
         LEFT JOIN (SELECT date, currency, argMax(rate, loaded_at) AS latest \
         FROM {DATABASE}.exchange_rates WHERE base = {{base:String}} AND {} \
         GROUP BY date, currency) AS r ON r.date = a.date AND r.currency = a.currency)",
        crate::ops::rates::IN_FORCE
    )
}

/// A sale's rows with revenue in another currency than `{base}` and no rate
/// for their day (none loaded: 0, or NULL where the engine is set to join
/// with NULLs); and a row's revenue in `{base}`.
macro_rules! no_rate {
    () => {
        "currency != {base:String} AND revenue != 0 AND ifNull(r_rate, 0) = 0"
    };
}
macro_rules! in_base {
    () => {
        "toFloat64(revenue) * if(currency = {base:String}, 1, toFloat64(ifNull(r_rate, 0)))"
    };
}
const NO_RATE: &str = no_rate!();

/// Revenue converted into `{base}`, or NULL when a row of it has no rate:
/// a sum that leaves some out would read as the whole.
const CONVERTED: &str = concat!(
    "if(countIf(",
    no_rate!(),
    ") > 0, NULL, round(sum(",
    in_base!(),
    "), 2))"
);

/// The average order converted into `{base}`, NULL likewise.
const CONVERTED_AVERAGE: &str = concat!(
    "if(countIf(",
    no_rate!(),
    ") > 0, NULL, round(sum(",
    in_base!(),
    ") / greatest(sum(orders), 1), 2))"
);

/// Every bucket of `time:*` from `from` to `to`, spelt as the dimension's
/// values are (so a client can fill the ones with no row).
fn time_labels(dim: &str, from: NaiveDate, to: NaiveDate) -> Vec<String> {
    let days = from.iter_days().take_while(|d| *d <= to);
    match dim {
        "time:hour" => days
            .flat_map(|d| (0..24).map(move |h| format!("{d} {h:02}:00:00")))
            .collect(),
        "time:week" => {
            let mut weeks: Vec<String> = days
                .map(|d| d.week(chrono::Weekday::Mon).first_day().to_string())
                .collect();
            weeks.dedup();
            weeks
        }
        "time:month" => {
            let mut months: Vec<String> = days
                .map(|d| format!("{}-{:02}-01", d.year(), d.month()))
                .collect();
            months.dedup();
            months
        }
        _ => days.map(|d| d.to_string()).collect(),
    }
}

impl Plan {
    /// Reads visits as open for `window` after their latest line
    /// ([`crate::config::VisitSettings::open_window`] of the server's
    /// settings; the defaults' until this is called).
    pub fn open_within(mut self, window: std::time::Duration) -> Plan {
        if let Some(p) = self.params.iter_mut().find(|(k, _)| k == "open_ms") {
            p.1 = window.as_millis().to_string();
        }
        self
    }
}

/// Runs a checked query: Plausible's `results`, `meta` and `query`.
pub async fn run(storage: &dyn Storage, plan: &Plan) -> Result<Value, StatsError> {
    let started = std::time::Instant::now();
    let out = storage
        .query_readonly_with(&plan.sql, &plan.params, "JSON")
        .await?;
    let parsed: Value = serde_json::from_slice(&out)
        .map_err(|e| StatsError::Invalid(format!("the engine's answer could not be read: {e}")))?;
    let rows_read = parsed["statistics"]["rows_read"].as_u64().unwrap_or(0);
    let mut currencies = std::collections::BTreeSet::new();
    let results: Vec<Value> = parsed["data"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let dims: Vec<Value> = (0..plan.dimensions.len())
                        .map(|i| r[format!("d{i}")].clone())
                        .collect();
                    let metrics: Vec<Value> = plan
                        .metrics
                        .iter()
                        .enumerate()
                        .map(|(i, name)| {
                            let v = &r[format!("m{i}")];
                            match (PER_CURRENCY.contains(&name.as_str()), &plan.converted) {
                                // Converted: one amount, or null without every rate.
                                (true, Some((c, _))) => {
                                    let sales = crate::storage::json_number(&r["s_rows"]) > 0.0;
                                    match (v.is_null(), sales) {
                                        // No sale in the group (the visits' side of a join).
                                        (true, false) => json!({}),
                                        (true, true) => Value::Null,
                                        (false, _) => {
                                            json!({c: number(crate::storage::json_number(v))})
                                        }
                                    }
                                }
                                (true, None) => per_currency(v, &mut currencies),
                                (false, _) => number(crate::storage::json_number(v)),
                            }
                        })
                        .collect();
                    json!({"dimensions": dims, "metrics": metrics})
                })
                .collect()
        })
        .unwrap_or_default();
    let mut meta = json!({
        "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
        "rows_read": rows_read,
        "warnings": [],
    });
    if currencies.len() > 1 {
        let list: Vec<&str> = currencies.iter().map(String::as_str).collect();
        meta["warnings"] = json!([format!(
            "revenue is in several currencies ({}): each figure is per currency, never summed across them; the currency dimension gives each its own row",
            list.join(", ")
        )]);
    }
    if let Some((c, missing_sql)) = &plan.converted {
        meta["converted_to"] = json!(c);
        let missing = crate::storage::json_rows_with(storage, missing_sql, &plan.params).await?;
        if !missing.is_empty() {
            let listed = &missing[..missing.len().min(MAX_MISSING_RATES)];
            let named: Vec<String> = listed
                .iter()
                .map(|r| {
                    format!(
                        "{} on {}",
                        r["currency"].as_str().unwrap_or(""),
                        r["date"].as_str().unwrap_or("")
                    )
                })
                .collect();
            let more = match missing.len() > MAX_MISSING_RATES {
                true => ", and more",
                false => "",
            };
            meta["missing_rates"] = json!(listed);
            meta["warnings"] = json!([format!(
                "no exchange rate into {c} was loaded for {}{more}: revenue that needs one is null, never converted at a guessed rate (PUT /admin/exchange-rates?base={c})",
                named.join(", ")
            )]);
        }
    }
    if let Some(labels) = &plan.time_labels {
        meta["time_labels"] = json!(labels);
    }
    if plan.total_rows {
        let count_sql = format!("SELECT count() AS n FROM ({})", strip_paging(&plan.sql));
        let rows = crate::storage::json_rows_with(storage, &count_sql, &plan.params).await?;
        meta["total_rows"] = json!(
            rows.first()
                .map(|r| crate::storage::json_number(&r["n"]))
                .unwrap_or(0.0) as u64
        );
    }
    Ok(json!({
        "results": results,
        "meta": meta,
        "query": {
            "metrics": plan.metrics,
            "dimensions": plan.dimensions,
            "date_range": [format!("{}T00:00:00Z", plan.from), format!("{}T23:59:59Z", plan.to)],
        },
    }))
}

/// A whole number as an integer, else as it is.
fn number(x: f64) -> Value {
    match x.fract() == 0.0 && x.abs() < 9e15 {
        true => json!(x as i64),
        false => json!(x),
    }
}

/// A per-currency map, amounts as numbers; notes its currencies.
fn per_currency(v: &Value, seen: &mut std::collections::BTreeSet<String>) -> Value {
    let mut out = serde_json::Map::new();
    for (currency, amount) in v.as_object().into_iter().flatten() {
        let amount = crate::storage::json_number(amount);
        if amount == 0.0 && currency.is_empty() {
            continue;
        }
        seen.insert(currency.clone());
        out.insert(currency.clone(), number((amount * 100.0).round() / 100.0));
    }
    Value::Object(out)
}

/// The statement without its ORDER BY and paging: what total_rows counts.
fn strip_paging(sql: &str) -> &str {
    sql.rfind(" ORDER BY ").map(|i| &sql[..i]).unwrap_or(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 4).unwrap()
    }

    fn err(q: Value) -> String {
        plan(&q, Some("org-a"), today()).unwrap_err().to_string()
    }

    /// `q` for org-a over the last 7 days.
    fn ask(mut q: Value) -> Result<Plan, StatsError> {
        q["site_id"] = json!("org-a");
        q["date_range"] = json!("7d");
        plan(&q, Some("org-a"), today())
    }

    #[test]
    fn a_plausible_query_becomes_one_statement_with_its_values_bound() {
        let q = json!({"site_id": "org-a", "metrics": ["visitors", "bounce_rate"], "date_range": "7d",
                       "dimensions": ["visit:source"],
                       "filters": [["is", "visit:utm_campaign", ["spring'; DROP TABLE x --"]],
                                   ["or", [["contains", "visit:entry_page", ["/e/"]], ["not", ["is", "visit:country", ["DE"]]]]]]});
        let p = plan(&q, Some("org-a"), today()).unwrap();
        assert!(!p.sql.contains("DROP"), "{}", p.sql);
        assert!(
            p.params
                .iter()
                .any(|(_, v)| v == "spring'; DROP TABLE x --")
        );
        assert_eq!(p.from, NaiveDate::from_ymd_opt(2026, 11, 28).unwrap());
        assert!(p.sql.contains("ORDER BY m0 DESC, d0"), "{}", p.sql);
    }

    #[test]
    fn only_visitors_by_exit_page_reads_each_visits_latest_row() {
        let sql = |q: Value| ask(q).unwrap().sql;
        // From the facets, with the open visits' latest lines.
        let exit = json!({"metrics": ["visitors"], "dimensions": ["visit:exit_page", "time:day"],
                          "filters": [["is_not", "visit:channel", ["direct"]]]});
        let plan = ask(exit).unwrap();
        assert!(
            plan.sql.contains("visit_facets_daily UNION ALL"),
            "{}",
            plan.sql
        );
        assert!(plan.sql.contains("PREWHERE version >= toUInt64(toUnixTimestamp64Milli(now64(3))) - {open_ms:UInt64} \
                                   WHERE organizer_id = {organizer:String} AND date BETWEEN {from:Date}"));
        // Visitors from the closed visits' facet and the open ones, the
        // sums from `exit_page`'s.
        assert!(
            plan.sql.contains(&format!(
                "toFloat64(least({EXITS_VISITORS}, sum(visits))) AS m0"
            )),
            "{}",
            plan.sql
        );
        assert!(plan.sql.contains(&format!("{EXITS} AND date BETWEEN")));
        let open = |p: &Plan| {
            p.params
                .iter()
                .find(|(k, _)| k == "open_ms")
                .unwrap()
                .1
                .clone()
        };
        // Idle up to the timeout (30 minutes) and 5 more, written up to
        // 10 s after, and 5 minutes of slack.
        assert_eq!(open(&plan), "2410000");
        let plan = plan.open_within(std::time::Duration::from_secs(3600));
        assert_eq!(open(&plan), "3600000");
        let filtered = json!({"metrics": ["visits", "visitors"],
                              "filters": [["not", ["is", "visit:exit_page", ["/"]]]]});
        assert!(sql(filtered).contains("visit_facets_daily UNION ALL"));
        // With another page or device dimension: every visit's latest row.
        let both =
            json!({"metrics": ["visitors"], "dimensions": ["visit:exit_page", "visit:browser"]});
        let both = sql(both);
        assert!(both.contains("FROM bilten_analytics.visits FINAL WHERE organizer_id = {organizer:String} AND date BETWEEN {from:Date}"), "{both}");
        assert!(!both.contains("visit_facets_daily"));
        for (cheap, reads) in [
            (
                json!({"metrics": ["visits", "pageviews"], "dimensions": ["visit:exit_page"]}),
                "visit_facets_daily WHERE organizer_id = {organizer:String} AND facet = 'exit_page'",
            ),
            (
                json!({"metrics": ["visitors", "bounce_rate"], "dimensions": ["visit:entry_page", "time:day"],
                       "filters": [["contains", "visit:entry_page", ["/e/"]]]}),
                "facet = 'entry_page'",
            ),
            (
                json!({"metrics": ["visitors"], "dimensions": ["visit:browser"]}),
                "facet = 'browser'",
            ),
            (
                json!({"metrics": ["visits"], "dimensions": ["visit:entry_page"],
                       "filters": [["is", "visit:source", ["Google"]]]}),
                "visits WHERE",
            ),
            (
                json!({"metrics": ["visits", "bounce_rate"], "dimensions": ["visit:entry_page"],
                       "filters": [["is_not", "visit:channel", ["direct"]]]}),
                "facet = 'entry_page' AND date BETWEEN {from:Date} AND {to:Date} AND NOT (channel = {f3:String})",
            ),
            (
                json!({"metrics": ["visits"], "dimensions": ["visit:entry_page", "visit:os"]}),
                "visits WHERE",
            ),
            (
                json!({"metrics": ["visits"], "dimensions": ["visit:device", "time:hour"]}),
                "visits WHERE",
            ),
            (
                json!({"metrics": ["visitors"], "dimensions": ["visit:source"]}),
                "visits_daily",
            ),
            (
                json!({"metrics": ["visitors", "bounce_rate"]}),
                "visits_daily",
            ),
        ] {
            let text = sql(cheap.clone());
            assert!(!text.contains("FINAL"), "{cheap}: {text}");
            assert!(text.contains(reads), "{cheap}: {text}");
        }
    }

    #[test]
    fn time_labels_are_every_bucket_of_the_range_as_the_dimension_spells_it() {
        let labels = |dim: &str, range: Value| {
            let q = json!({"site_id": "org-a", "metrics": ["visits"], "date_range": range,
                           "dimensions": [dim], "include": {"time_labels": true}});
            plan(&q, Some("org-a"), today())
                .unwrap()
                .time_labels
                .unwrap()
        };
        let days = labels("time:day", json!(["2026-11-29", "2026-12-02"]));
        assert_eq!(
            days,
            ["2026-11-29", "2026-11-30", "2026-12-01", "2026-12-02"]
        );
        // Sunday to Monday: two weeks, each named by its Monday.
        let weeks = labels("time:week", json!(["2026-11-29", "2026-12-02"]));
        assert_eq!(weeks, ["2026-11-23", "2026-11-30"]);
        let months = labels("time:month", json!("91d"));
        assert_eq!(
            months,
            ["2026-09-01", "2026-10-01", "2026-11-01", "2026-12-01"]
        );
        let hours = labels("time:hour", json!("day"));
        assert_eq!(hours.len(), 24);
        assert_eq!(hours[13], "2026-12-04 13:00:00");
        let q = json!({"site_id": "org-a", "metrics": ["visits"], "date_range": "7d",
                       "include": {"time_labels": true}});
        assert!(err(q).contains("time_labels needs a time dimension"));
    }

    #[test]
    fn queries_naming_a_page_or_an_event_name_read_pages_daily_alone() {
        let p = ask(
            json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"],
                           "filters": [["is_not", "visit:channel", ["direct"]]]}),
        )
        .unwrap();
        assert!(
            p.sql.contains(
                "FROM bilten_analytics.pages_daily WHERE organizer_id = {organizer:String} \
                 AND kind = 'page' AND date BETWEEN"
            ),
            "{}",
            p.sql
        );
        // A filter alone is enough, however deep.
        let p = ask(json!({"metrics": ["events"], "dimensions": ["time:week"],
                           "filters": [["or", [["not", ["is", "event:name", ["purchase"]]]]]]}))
        .unwrap();
        assert!(p.sql.contains("kind = 'name'"), "{}", p.sql);
        assert!(!p.sql.contains("visits"), "{}", p.sql);
        let refused = |q: Value| ask(q).unwrap_err().to_string();
        let e = refused(json!({"metrics": ["bounce_rate"], "dimensions": ["event:page"]}));
        assert!(
            e.contains("metrics: bounce_rate does not apply to event:page"),
            "{e}"
        );
        let e = refused(json!({"metrics": ["revenue"], "filters": [["is", "event:name", ["x"]]]}));
        assert!(e.contains("revenue does not apply"), "{e}");
        let e =
            refused(json!({"metrics": ["visits"], "dimensions": ["event:page", "visit:source"]}));
        assert!(
            e.contains("visit:source cannot be combined with event:page"),
            "{e}"
        );
        let e = refused(json!({"metrics": ["visits"], "dimensions": ["event:page", "time:hour"]}));
        assert!(e.contains("time:hour cannot be combined"), "{e}");
        let e = refused(json!({"metrics": ["visits"], "dimensions": ["event:page", "event:name"]}));
        assert!(e.contains("cannot be combined"), "{e}");
        // Conversion: each group's visits that sent the event, of everyone
        // (with the same other dimensions, for the group's rate) under the
        // filters that do not name the event.
        let p = ask(
            json!({"metrics": ["conversion_rate"], "dimensions": ["time:day"],
                           "filters": [["is", "event:goal", ["purchase"]]]}),
        )
        .unwrap();
        let total = p.sql.split("CROSS JOIN").nth(1).unwrap();
        assert!(!total.contains("GROUP BY"), "{total}");
        // Everyone: the visits, summed in `visits_daily`.
        assert!(
            total.contains("sum(visits)) AS everyone FROM bilten_analytics.visits_daily WHERE"),
            "{total}"
        );
        let p = ask(json!({"metrics": ["group_conversion_rate"], "dimensions": ["time:day"],
                           "filters": [["is", "event:name", ["purchase"]], ["is", "visit:channel", ["email"]]]}))
        .unwrap();
        assert!(
            p.sql
                .contains("round(100 * converted / greatest(everyone, 1), 2) AS m0"),
            "{}",
            p.sql
        );
        let total = p.sql.split("LEFT JOIN").nth(1).unwrap();
        assert!(
            total.contains("channel = {f") && !total.contains("value ="),
            "{total}"
        );
        assert!(total.contains("GROUP BY d0) AS t USING (d0)"), "{total}");
        let e = refused(json!({"metrics": ["conversion_rate"], "dimensions": ["event:page"]}));
        assert!(e.contains("applies to event:goal or event:name"), "{e}");
        // The divisor keeps the members of an `and` that do not name the
        // event; one that names it under `or` with others is refused.
        let p = ask(json!({"metrics": ["conversion_rate"], "filters": [
            ["and", [["is", "event:name", ["purchase"]], ["is", "visit:channel", ["search"]]]]]}))
        .unwrap();
        let total = p.sql.split("CROSS JOIN").nth(1).unwrap();
        assert!(
            total.contains("channel = {f") && !total.contains("value ="),
            "{total}"
        );
        let e = refused(json!({"metrics": ["conversion_rate"], "filters": [
            ["or", [["is", "event:name", ["purchase"]], ["is", "visit:channel", ["search"]]]]]}));
        assert!(e.contains("through \"and\" only"), "{e}");
        let e = refused(
            json!({"metrics": ["conversion_rate", "group_conversion_rate"],
                               "dimensions": ["event:goal"]}),
        );
        assert!(e.contains("not both"), "{e}");
        // Plausible's modifier: case does not count.
        let p = ask(json!({"metrics": ["visits"], "filters": [
            ["contains", "visit:entry_page", ["Blog"], {"case_sensitive": false}],
            ["is", "visit:source", ["google"], {"case_sensitive": false}],
            ["matches", "visit:utm_campaign", ["^spring"], {"case_sensitive": false}],
            ["is", "visit:country", ["DE"], {"case_sensitive": true}]]}))
        .unwrap();
        for part in [
            "positionCaseInsensitiveUTF8(entry_page, {f",
            "lowerUTF8(source) = lowerUTF8({f",
            "match(utm_campaign, concat('(?i)', {f",
            "country = {f",
        ] {
            assert!(p.sql.contains(part), "{part}: {}", p.sql);
        }
        let e = refused(json!({"metrics": ["visits"],
                               "filters": [["is", "visit:source", ["x"], {"case": "no"}]]}));
        assert!(e.contains("is not a modifier"), "{e}");
        // A value that spells a dimension is only a value.
        let p = ask(
            json!({"metrics": ["visits"], "filters": [["is", "visit:source", ["event:page"]]]}),
        )
        .unwrap();
        assert!(p.sql.contains("visits_daily"), "{}", p.sql);
    }

    #[test]
    fn refusals_name_the_field_at_fault() {
        let base = |k: &str, v: Value| {
            let mut q = json!({"site_id": "org-a", "metrics": ["visits"], "date_range": "7d"});
            q[k] = v;
            q
        };
        assert!(err(base("site_id", json!("org-b"))).contains("reads organizer \"org-a\" only"));
        assert!(
            err(base("metrics", json!(["visits", "nope"]))).contains("unknown metric \"nope\"")
        );
        assert!(err(base("metrics", json!(["time_on_page"]))).contains("not answered yet"));
        assert!(
            err(base("metrics", json!(["conversion_rate"])))
                .contains("conversion_rate needs event:goal (or event:name)")
        );
        assert!(err(base("order_by", json!([["revenue", "desc"]]))).contains("per currency"));
        assert!(err(base("dimensions", json!(["visit:nope"]))).contains("dimensions"));
        let many: Vec<String> = (0..100).map(|i| format!("d{i}")).collect();
        assert!(err(base("dimensions", json!(many))).contains("at most 8"));
        assert!(
            err(base("date_range", json!(["2016-01-01", "2026-01-01"])))
                .contains("at most 731 days")
        );
        assert!(
            err(base("filters", json!([["like", "visit:source", ["x"]]])))
                .contains("unknown operator \"like\"")
        );
        assert!(
            err(base(
                "filters",
                json!([["is", "visit:source", ["x".repeat(10_000)]]])
            ))
            .contains("longer than 1000")
        );
        assert!(
            err(base("filters", json!([["is", "visit:source", [1]]]))).contains("values are text")
        );
        assert!(err(base("order_by", json!([["visitors", "desc"]]))).contains("order_by"));
        assert!(err(base("pagination", json!({"limit": 0}))).contains("pagination"));
        assert!(err(base("sql", json!("SELECT 1"))).contains("unknown field \"sql\""));
        // Deep nesting stops at the filter count.
        let mut deep = json!(["is", "visit:source", ["x"]]);
        for _ in 0..200 {
            deep = json!(["not", deep]);
        }
        assert!(err(base("filters", json!([deep]))).contains("at most 64"));
    }
}
