-- The plugin chain's outputs. Rows come through the write-ahead log and the
-- batcher like events do, with the same deduplication tokens.

-- Events a plugin rejected: what the client was told, and the event.
CREATE TABLE IF NOT EXISTS bilten_analytics.rejected_events
(
    received_at DateTime64(3, 'UTC'),
    source_table LowCardinality(String),
    plugin LowCardinality(String),
    code LowCardinality(String),
    field String,
    message String,
    event_id UUID,
    event String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (source_table, plugin, received_at)
TTL toDateTime(received_at) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- Batches a fail_closed plugin could not judge (it faulted, or its breaker
-- is open). `row` is the row as it would have been stored, so a batch can be
-- put back once the plugin is fixed:
--   INSERT INTO bilten_analytics.events
--   SELECT * FROM format(JSONEachRow, (SELECT arrayStringConcat(groupArray(row), '\n')
--       FROM bilten_analytics.plugin_quarantine WHERE source_table = 'events'));
CREATE TABLE IF NOT EXISTS bilten_analytics.plugin_quarantine
(
    received_at DateTime64(3, 'UTC'),
    source_table LowCardinality(String),
    plugin LowCardinality(String),
    fault LowCardinality(String),
    detail String,
    event_id UUID,
    row String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (source_table, plugin, received_at)
SETTINGS non_replicated_deduplication_window = 10000;

-- Events that skipped a fail_open plugin that faulted: tagged, not lost.
ALTER TABLE bilten_analytics.events ADD COLUMN IF NOT EXISTS plugins_skipped Array(LowCardinality(String));
ALTER TABLE bilten_analytics.page_views ADD COLUMN IF NOT EXISTS plugins_skipped Array(LowCardinality(String));
ALTER TABLE bilten_analytics.ticket_sales ADD COLUMN IF NOT EXISTS plugins_skipped Array(LowCardinality(String));
