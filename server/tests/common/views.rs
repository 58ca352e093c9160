//! Each dashboard view, and the same aggregation computed from the raw tables.
//! The two must return identical rows.

/// Revenue per currency from raw sales, as the views keep it (0018).
const BY_CURRENCY: &str = "sumMap(map(toString(currency), toDecimal128(price * quantity, 2)))";
/// No revenue, in the same type.
const NO_REVENUE: &str = "CAST(map(), 'Map(String, Decimal(38, 2))')";

pub const FUNNEL: &str = "['page_view', 'view_event', 'add_to_cart', 'checkout', 'purchase']";

pub fn pairs() -> Vec<(&'static str, String, String)> {
    vec![
        (
            "events_hourly_mv",
            "SELECT hour, organizer_id, event_type, events, unique_users FROM bilten_analytics.events_hourly_mv ORDER BY hour, organizer_id, event_type".into(),
            "SELECT toDateTime(toStartOfHour(timestamp), 'UTC') AS hour, organizer_id, event_type, count() AS events, uniq(user_id) AS unique_users \
             FROM bilten_analytics.events GROUP BY hour, organizer_id, event_type ORDER BY hour, organizer_id, event_type".into(),
        ),
        (
            "organizer_daily_metrics_mv",
            "SELECT date, organizer_id, events, unique_users, page_views, ticket_sales, tickets_sold, revenue \
             FROM bilten_analytics.organizer_daily_metrics_mv ORDER BY date, organizer_id".into(),
            format!("SELECT date, organizer_id, sum(e) AS events, sum(u) AS unique_users, sum(pv) AS page_views, sum(ts) AS ticket_sales, \
                    sum(q) AS tickets_sold, sumMap(r) AS revenue FROM ( \
               SELECT toDate(timestamp) AS date, organizer_id, count() AS e, uniq(user_id) AS u, 0 AS pv, 0 AS ts, 0 AS q, {NO_REVENUE} AS r \
               FROM bilten_analytics.events GROUP BY date, organizer_id \
               UNION ALL SELECT toDate(timestamp) AS date, organizer_id, 0, 0, count(), 0, 0, {NO_REVENUE} \
               FROM bilten_analytics.page_views GROUP BY date, organizer_id \
               UNION ALL SELECT toDate(timestamp) AS date, organizer_id, 0, 0, 0, count(), sum(toUInt64(quantity)), {BY_CURRENCY} \
               FROM bilten_analytics.ticket_sales GROUP BY date, organizer_id \
             ) GROUP BY date, organizer_id ORDER BY date, organizer_id"),
        ),
        (
            "event_performance_mv",
            "SELECT date, organizer_id, event_id, interactions, unique_visitors, page_views, transactions, tickets_sold, revenue, buyers, conversion_rate \
             FROM bilten_analytics.event_performance_mv ORDER BY date, organizer_id, event_id".into(),
            format!("SELECT date, organizer_id, event_id, sum(i) AS interactions, sum(uv) AS unique_visitors, sum(pv) AS page_views, sum(t) AS transactions, \
                    sum(q) AS tickets_sold, sumMap(r) AS revenue, sum(b) AS buyers, \
                    if(unique_visitors = 0, 0, round(buyers / unique_visitors * 100, 2)) AS conversion_rate FROM ( \
               SELECT toDate(timestamp) AS date, organizer_id, event_id, count() AS i, uniq(user_id) AS uv, 0 AS pv, 0 AS t, 0 AS q, {NO_REVENUE} AS r, 0 AS b \
               FROM bilten_analytics.events WHERE event_id != '' GROUP BY date, organizer_id, event_id \
               UNION ALL SELECT toDate(timestamp) AS date, organizer_id, event_id, 0, 0, count(), 0, 0, {NO_REVENUE}, 0 \
               FROM bilten_analytics.page_views WHERE event_id != '' GROUP BY date, organizer_id, event_id \
               UNION ALL SELECT toDate(timestamp) AS date, organizer_id, event_id, 0, 0, 0, count(), sum(toUInt64(quantity)), \
                    {BY_CURRENCY}, uniq(user_id) \
               FROM bilten_analytics.ticket_sales GROUP BY date, organizer_id, event_id \
             ) GROUP BY date, organizer_id, event_id ORDER BY date, organizer_id, event_id"),
        ),
        (
            "user_funnel_mv",
            "SELECT date, organizer_id, event_id, step, step_order, events, users FROM bilten_analytics.user_funnel_mv \
             ORDER BY date, organizer_id, event_id, step".into(),
            format!(
                "SELECT toDate(timestamp) AS date, organizer_id, event_id, event_type AS step, indexOf({FUNNEL}, step) AS step_order, \
                        count() AS events, uniq(user_id) AS users FROM bilten_analytics.events WHERE event_type IN {FUNNEL} \
                 GROUP BY date, organizer_id, event_id, step ORDER BY date, organizer_id, event_id, step"
            ),
        ),
        (
            "realtime_dashboard_mv",
            // The realtime table keeps 7 days (TTL); compare the last day.
            "SELECT interval_start, organizer_id, event_type, events, unique_users FROM bilten_analytics.realtime_dashboard_mv \
             WHERE interval_start >= now() - INTERVAL 1 DAY ORDER BY interval_start, organizer_id, event_type".into(),
            // Page views count as they start (sql/0023), as `page_view`.
            "SELECT toDateTime(toStartOfFiveMinutes(timestamp), 'UTC') AS interval_start, organizer_id, event_type, count() AS events, \
                    uniq(user_id) AS unique_users FROM ( \
                 SELECT timestamp, organizer_id, event_type, user_id FROM bilten_analytics.events \
                 UNION ALL SELECT timestamp, organizer_id, 'page_view', user_id FROM bilten_analytics.page_views) \
             GROUP BY interval_start, organizer_id, event_type HAVING interval_start >= now() - INTERVAL 1 DAY ORDER BY interval_start, organizer_id, event_type".into(),
        ),
    ]
}

/// Asserts two result sets are equal, naming the first row that differs
/// rather than printing thousands of rows.
pub fn assert_same<T: PartialEq + std::fmt::Debug>(view: &str, from_view: &[T], from_raw: &[T]) {
    assert!(!from_view.is_empty(), "{view} is empty");
    if let Some(i) =
        (0..from_view.len().max(from_raw.len())).find(|&i| from_view.get(i) != from_raw.get(i))
    {
        panic!(
            "{view} differs from the raw aggregation at row {i} of {}/{}: view {:?}, raw {:?}",
            from_view.len(),
            from_raw.len(),
            from_view.get(i),
            from_raw.get(i)
        );
    }
}
