-- Detailed page view analytics: URLs, referrers, sessions and time on page.
CREATE TABLE IF NOT EXISTS bilten_analytics.page_views
(
    id UUID,
    timestamp DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC') DEFAULT now64(3),
    organizer_id String,
    user_id String,
    session_id String,
    event_id String,
    url String CODEC(ZSTD(3)),
    referrer String CODEC(ZSTD(3)),
    duration_ms UInt32,
    user_agent String CODEC(ZSTD(3)),
    ip String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (organizer_id, event_id, timestamp);
