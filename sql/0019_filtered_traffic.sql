-- What the plugin chain filtered out, made visible: events a plugin's
-- verdict dropped (bots, internal traffic, …), counted per day (the day
-- they arrived), organizer, table and plugin. The chain writes one row per
-- batch and organizer through the write-ahead log and the batcher, with the
-- same deduplication tokens as events; merges add the rows up.
-- `reason`: the contract's drop verdict carries none yet, so it is 'drop'.
CREATE TABLE IF NOT EXISTS bilten_analytics.filtered_traffic
(
    date Date,
    organizer_id String,
    source_table LowCardinality(String),
    plugin LowCardinality(String),
    reason LowCardinality(String),
    events UInt64
)
ENGINE = SummingMergeTree(events)
PARTITION BY toYYYYMM(date)
ORDER BY (organizer_id, date, source_table, plugin, reason)
TTL date + INTERVAL 2 YEAR
SETTINGS non_replicated_deduplication_window = 10000;
