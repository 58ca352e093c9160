-- Codecs chosen by measured bytes per event (BENCHMARKS.md, issue 10): the
-- ids of users and sessions are high-entropy text that LZ4 barely shrinks,
-- and a time on page is a small number in a four-byte column. New parts use
-- these codecs; existing parts take them when they are merged.
ALTER TABLE bilten_analytics.events MODIFY COLUMN session_id String CODEC(ZSTD(3));
ALTER TABLE bilten_analytics.events MODIFY COLUMN user_id String CODEC(ZSTD(3));
ALTER TABLE bilten_analytics.page_views MODIFY COLUMN session_id String CODEC(ZSTD(3));
ALTER TABLE bilten_analytics.page_views MODIFY COLUMN user_id String CODEC(ZSTD(3));
ALTER TABLE bilten_analytics.page_views MODIFY COLUMN duration_ms UInt32 CODEC(T64, ZSTD(3));
