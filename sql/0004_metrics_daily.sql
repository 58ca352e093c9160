-- Pre-aggregated daily metrics per organizer, fed by materialized views from
-- the three raw tables. Rows hold partial aggregates until merges combine
-- them; read it through organizer_daily_metrics_mv, which finalizes them.
CREATE TABLE IF NOT EXISTS bilten_analytics.metrics_daily
(
    date Date,
    organizer_id String,
    events SimpleAggregateFunction(sum, UInt64),
    unique_users AggregateFunction(uniq, String),
    page_views SimpleAggregateFunction(sum, UInt64),
    ticket_sales SimpleAggregateFunction(sum, UInt64),
    tickets_sold SimpleAggregateFunction(sum, UInt64),
    revenue SimpleAggregateFunction(sum, Decimal(38, 2))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(date)
ORDER BY (organizer_id, date);

CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.metrics_daily_from_events
TO bilten_analytics.metrics_daily AS
SELECT
    toDate(timestamp) AS date,
    organizer_id,
    count() AS events,
    uniqState(user_id) AS unique_users
FROM bilten_analytics.events
GROUP BY date, organizer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.metrics_daily_from_page_views
TO bilten_analytics.metrics_daily AS
SELECT
    toDate(timestamp) AS date,
    organizer_id,
    count() AS page_views
FROM bilten_analytics.page_views
GROUP BY date, organizer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.metrics_daily_from_ticket_sales
TO bilten_analytics.metrics_daily AS
SELECT
    toDate(timestamp) AS date,
    organizer_id,
    count() AS ticket_sales,
    sum(toUInt64(quantity)) AS tickets_sold,
    sum(toDecimal128(price * quantity, 2)) AS revenue
FROM bilten_analytics.ticket_sales
GROUP BY date, organizer_id;

-- Daily organizer performance, finalized: the seed's dashboard query reads this.
CREATE VIEW IF NOT EXISTS bilten_analytics.organizer_daily_metrics_mv AS
SELECT
    date,
    organizer_id,
    sum(events) AS events,
    uniqMerge(unique_users) AS unique_users,
    sum(page_views) AS page_views,
    sum(ticket_sales) AS ticket_sales,
    sum(tickets_sold) AS tickets_sold,
    sum(revenue) AS revenue
FROM bilten_analytics.metrics_daily
GROUP BY date, organizer_id;
