-- Conversion funnel: users reaching each step, per organizer, ticketed event and day.
-- The steps, in order: page_view → view_event → add_to_cart → checkout → purchase.
CREATE TABLE IF NOT EXISTS bilten_analytics.user_funnel
(
    date Date,
    organizer_id String,
    event_id String,
    step LowCardinality(String),
    events SimpleAggregateFunction(sum, UInt64),
    users AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(date)
ORDER BY (organizer_id, event_id, date, step);

CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.user_funnel_from_events
TO bilten_analytics.user_funnel AS
SELECT
    toDate(timestamp) AS date,
    organizer_id,
    event_id,
    event_type AS step,
    count() AS events,
    uniqState(user_id) AS users
FROM bilten_analytics.events
WHERE event_type IN ('page_view', 'view_event', 'add_to_cart', 'checkout', 'purchase')
GROUP BY date, organizer_id, event_id, step;

CREATE VIEW IF NOT EXISTS bilten_analytics.user_funnel_mv AS
SELECT
    date,
    organizer_id,
    event_id,
    step,
    indexOf(['page_view', 'view_event', 'add_to_cart', 'checkout', 'purchase'], step) AS step_order,
    sum(events) AS events,
    uniqMerge(users) AS users
FROM bilten_analytics.user_funnel
GROUP BY date, organizer_id, event_id, step;
