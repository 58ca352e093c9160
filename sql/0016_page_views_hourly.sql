-- Page views per hour and organizer, for /dashboard's traffic panel: a
-- projection, so every part of page_views carries its own hourly counts,
-- written with the part (never ahead of it or twice) and used by any query
-- that groups page views by organizer and hour. The last statement builds
-- it for the parts stored before this migration. A lightweight
-- `DELETE FROM page_views` (a user's erasure, say) rebuilds the projection
-- of the parts it touches instead of being refused.
ALTER TABLE bilten_analytics.page_views MODIFY SETTING lightweight_mutation_projection_mode = 'rebuild';

ALTER TABLE bilten_analytics.page_views ADD PROJECTION IF NOT EXISTS hourly
(
    SELECT organizer_id, toStartOfHour(timestamp), count()
    GROUP BY organizer_id, toStartOfHour(timestamp)
);

ALTER TABLE bilten_analytics.page_views MATERIALIZE PROJECTION hourly;
