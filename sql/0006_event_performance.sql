-- Per ticketed event and day: how many looked, how many bought, what it earned.
CREATE TABLE IF NOT EXISTS bilten_analytics.event_performance
(
    date Date,
    organizer_id String,
    event_id String,
    interactions SimpleAggregateFunction(sum, UInt64),
    unique_visitors AggregateFunction(uniq, String),
    page_views SimpleAggregateFunction(sum, UInt64),
    transactions SimpleAggregateFunction(sum, UInt64),
    tickets_sold SimpleAggregateFunction(sum, UInt64),
    revenue SimpleAggregateFunction(sum, Decimal(38, 2)),
    buyers AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(date)
ORDER BY (organizer_id, event_id, date);

CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.event_performance_from_events
TO bilten_analytics.event_performance AS
SELECT
    toDate(timestamp) AS date,
    organizer_id,
    event_id,
    count() AS interactions,
    uniqState(user_id) AS unique_visitors
FROM bilten_analytics.events
WHERE event_id != ''
GROUP BY date, organizer_id, event_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.event_performance_from_page_views
TO bilten_analytics.event_performance AS
SELECT
    toDate(timestamp) AS date,
    organizer_id,
    event_id,
    count() AS page_views
FROM bilten_analytics.page_views
WHERE event_id != ''
GROUP BY date, organizer_id, event_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.event_performance_from_ticket_sales
TO bilten_analytics.event_performance AS
SELECT
    toDate(timestamp) AS date,
    organizer_id,
    event_id,
    count() AS transactions,
    sum(toUInt64(quantity)) AS tickets_sold,
    sum(toDecimal128(price * quantity, 2)) AS revenue,
    uniqState(user_id) AS buyers
FROM bilten_analytics.ticket_sales
GROUP BY date, organizer_id, event_id;

CREATE VIEW IF NOT EXISTS bilten_analytics.event_performance_mv AS
SELECT
    date,
    organizer_id,
    event_id,
    sum(interactions) AS interactions,
    uniqMerge(unique_visitors) AS unique_visitors,
    sum(page_views) AS page_views,
    sum(transactions) AS transactions,
    sum(tickets_sold) AS tickets_sold,
    sum(revenue) AS revenue,
    uniqMerge(buyers) AS buyers,
    if(unique_visitors = 0, 0, round(buyers / unique_visitors * 100, 2)) AS conversion_rate
FROM bilten_analytics.event_performance
GROUP BY date, organizer_id, event_id;
