-- Main event tracking table: page views, clicks, funnel steps, any tracked action.
-- Ordered for queries that filter by organizer and event type; one partition a month.
CREATE TABLE IF NOT EXISTS bilten_analytics.events
(
    id UUID,
    timestamp DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC') DEFAULT now64(3),
    event_type LowCardinality(String),
    event_name String,
    organizer_id String,
    user_id String,
    session_id String,
    -- The platform's ticketed event this action concerns (e.g. evt-789), if any.
    event_id String,
    properties String CODEC(ZSTD(3)),
    user_agent String CODEC(ZSTD(3)),
    ip String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (organizer_id, event_type, timestamp);
