-- Rows storage refused as invalid, with the reason, so nothing is lost
-- silently and the pipeline never blocks on a bad row.
CREATE TABLE IF NOT EXISTS bilten_analytics.dead_letter
(
    received_at DateTime64(3, 'UTC') DEFAULT now64(3),
    source_table LowCardinality(String),
    reason String,
    row String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (source_table, received_at)
TTL toDateTime(received_at) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 1000;
