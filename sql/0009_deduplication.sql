-- A retried batch must be the same batch all the way down. Every insert
-- carries insert_deduplication_token (from the write-ahead log) and
-- deduplicate_blocks_in_dependent_materialized_views = 1; these windows make
-- the tables, and the tables behind the views, remember recent tokens.
-- 10 000 blocks is hours of traffic at 1000-row batches.
ALTER TABLE bilten_analytics.events MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE bilten_analytics.page_views MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE bilten_analytics.ticket_sales MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE bilten_analytics.metrics_daily MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE bilten_analytics.events_hourly MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE bilten_analytics.event_performance MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE bilten_analytics.user_funnel MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE bilten_analytics.realtime_dashboard MODIFY SETTING non_replicated_deduplication_window = 10000;
