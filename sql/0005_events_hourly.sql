-- Hourly event aggregations per organizer and event type.
CREATE TABLE IF NOT EXISTS bilten_analytics.events_hourly
(
    hour DateTime('UTC'),
    organizer_id String,
    event_type LowCardinality(String),
    events SimpleAggregateFunction(sum, UInt64),
    unique_users AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (organizer_id, event_type, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.events_hourly_from_events
TO bilten_analytics.events_hourly AS
SELECT
    toStartOfHour(timestamp) AS hour,
    organizer_id,
    event_type,
    count() AS events,
    uniqState(user_id) AS unique_users
FROM bilten_analytics.events
GROUP BY hour, organizer_id, event_type;

CREATE VIEW IF NOT EXISTS bilten_analytics.events_hourly_mv AS
SELECT
    hour,
    organizer_id,
    event_type,
    sum(events) AS events,
    uniqMerge(unique_users) AS unique_users
FROM bilten_analytics.events_hourly
GROUP BY hour, organizer_id, event_type;
