-- What a plugin with `keep_dropped_as` dropped, kept instead of discarded
-- (bots, internal traffic: "show me what the filter removed"), with its
-- traffic class. Nothing reads it into a figure: the dashboard, the views
-- and the Stats API count the raw tables only. `row` is the row as it
-- would have been stored, after the plugins that follow the one that
-- dropped it (the privacy plugin truncates its address), so a row found to
-- be a person after all can be put back:
--   INSERT INTO bilten_analytics.page_views
--   SELECT * FROM format(JSONEachRow, (SELECT arrayStringConcat(groupArray(row), '\n')
--       FROM bilten_analytics.filtered_events
--       WHERE source_table = 'page_views' AND event_id = '…'));
-- Counted with the rest in `filtered_traffic`, under the reason `kept`.
CREATE TABLE IF NOT EXISTS bilten_analytics.filtered_events
(
    received_at DateTime64(3, 'UTC'),
    organizer_id String,
    source_table LowCardinality(String),
    plugin LowCardinality(String),
    traffic_class LowCardinality(String),
    event_id UUID,
    row String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (organizer_id, traffic_class, received_at)
TTL toDateTime(received_at) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 10000;
