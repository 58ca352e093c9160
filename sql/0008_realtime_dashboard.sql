-- Real-time metrics in 5-minute intervals. Kept a short time: it is for "now".
CREATE TABLE IF NOT EXISTS bilten_analytics.realtime_dashboard
(
    interval_start DateTime('UTC'),
    organizer_id String,
    event_type LowCardinality(String),
    events SimpleAggregateFunction(sum, UInt64),
    unique_users AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toDate(interval_start)
ORDER BY (interval_start, organizer_id, event_type)
TTL interval_start + INTERVAL 7 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.realtime_dashboard_from_events
TO bilten_analytics.realtime_dashboard AS
SELECT
    toStartOfFiveMinutes(timestamp) AS interval_start,
    organizer_id,
    event_type,
    count() AS events,
    uniqState(user_id) AS unique_users
FROM bilten_analytics.events
GROUP BY interval_start, organizer_id, event_type;

CREATE VIEW IF NOT EXISTS bilten_analytics.realtime_dashboard_mv AS
SELECT
    interval_start,
    organizer_id,
    event_type,
    sum(events) AS events,
    uniqMerge(unique_users) AS unique_users
FROM bilten_analytics.realtime_dashboard
GROUP BY interval_start, organizer_id, event_type;
